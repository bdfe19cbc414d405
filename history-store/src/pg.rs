//! The clustered backend: rows in PostgreSQL, images in an S3-compatible object store.
//!
//! The promise is the same as the embedded store's: an entry becomes visible (its row commits)
//! only after all three of its objects were written; deletion removes the row first and the
//! objects after, so a crash anywhere leaves only objects without a row, which
//! [`PgHistory::sweep`] removes. Any number of processes may share one database and bucket.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use pg_pool::tokio_postgres::Row;
use pg_pool::tokio_postgres::types::ToSql;
use pg_pool::{Client, PgPool};

use crate::backend::HistoryBackend;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::prepare::{Prepared, prepare};
use crate::rows;
use crate::store::{COLUMNS, RawRow, StoreConfig, SweepReport};
use crate::types::{
    Category, Counts, Cursor, DayCount, Entry, EntryId, ImageData, ImageType, Kind, NewEntry, Page,
    Source, UserId,
};

/// The name under which the schema version is kept in `schema_versions`.
pub const COMPONENT: &str = "history";

const MIGRATIONS: &[&str] = &["
CREATE TABLE entries (
    id               TEXT PRIMARY KEY,
    owner            BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    category         TEXT NOT NULL
                     CHECK (category IN ('no_face', 'all_masked', 'none_masked', 'some_masked')),
    faces            BIGINT NOT NULL,
    masked           BIGINT NOT NULL,
    unmasked         BIGINT NOT NULL,
    source_kind      TEXT NOT NULL CHECK (source_kind IN ('file', 'url')),
    source_url       TEXT,
    file_name        TEXT,
    result_json      TEXT NOT NULL,
    original_type    TEXT NOT NULL,
    original_bytes   BIGINT NOT NULL,
    original_sha256  TEXT NOT NULL,
    annotated_type   TEXT NOT NULL,
    annotated_bytes  BIGINT NOT NULL,
    annotated_sha256 TEXT NOT NULL,
    thumb_type       TEXT NOT NULL,
    thumb_bytes      BIGINT NOT NULL,
    thumb_sha256     TEXT NOT NULL
);
CREATE INDEX entries_owner_time ON entries (owner, created_at DESC, id DESC);
CREATE INDEX entries_owner_category_time ON entries (owner, category, created_at DESC, id DESC);
CREATE INDEX entries_time ON entries (created_at);
"];

const DELETE_BATCH: i64 = 256;

/// Where the images go: an S3-compatible object store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The service's URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (any value for servers that ignore it).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// A key prefix inside the bucket (empty for none), so deployments can share a bucket.
    pub prefix: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    fn build(&self) -> Result<Arc<dyn ObjectStore>> {
        let bad = |field, reason: String| Error::InvalidConfig { field, reason };
        if self.bucket.is_empty() {
            return Err(bad("s3_bucket", "must be set".into()));
        }
        let allow_http = self.endpoint.starts_with("http://");
        if !allow_http && !self.endpoint.starts_with("https://") {
            return Err(bad(
                "s3_endpoint",
                format!("{:?} is not an http:// or https:// URL", self.endpoint),
            ));
        }
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            // `with_client_options` replaces every client option, so `allow_http` goes in here
            // (the builder's own `with_allow_http` before it would be lost).
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(Duration::from_secs(60))
                    .with_connect_timeout(Duration::from_secs(5)),
            )
            .build()
            .map_err(|e| bad("s3_endpoint", e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// Detection history in PostgreSQL with images in an S3-compatible object store.
///
/// Object keys are `PREFIX/files/<2 hex>/<id>-<kind>.<ext>`, built only from generated ids.
/// Its operations are those of [`HistoryBackend`] (bring the trait into scope), with
/// [`Error::ObjectStore`] and [`Error::Postgres`] as the storage failures and
/// [`Error::MissingFile`] naming the object key; [`PgHistory::sweep`] is its own.
/// Cheap to clone, `Send + Sync`; methods block (call them from `spawn_blocking`).
#[derive(Debug, Clone)]
pub struct PgHistory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pg: PgPool,
    objects: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
}

fn pg_err(e: pg_pool::Error) -> Error {
    Error::from(e)
}

fn during(op: &'static str) -> impl FnOnce(pg_pool::tokio_postgres::Error) -> Error {
    move |e| Error::Postgres(pg_pool::Error::during(op)(e))
}

fn object_err(op: &'static str, key: &ObjectPath) -> impl FnOnce(object_store::Error) -> Error {
    let key = key.to_string();
    move |source| Error::ObjectStore { op, key, source }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn raw_row(row: &Row) -> RawRow {
    RawRow {
        id: row.get(0),
        owner: row.get(1),
        created_at: row.get(2),
        category: row.get(3),
        faces: row.get(4),
        masked: row.get(5),
        unmasked: row.get(6),
        source_kind: row.get(7),
        source_url: row.get(8),
        file_name: row.get(9),
        result_json: row.get(10),
        images: [
            (row.get(11), row.get(12), row.get(13)),
            (row.get(14), row.get(15), row.get(16)),
            (row.get(17), row.get(18), row.get(19)),
        ],
    }
}

async fn insert_row(client: &Client, p: &Prepared) -> Result<()> {
    let [(o, _), (a, _), (t, _)] = &p.images;
    let (source_kind, source_url) = match &p.source {
        Source::File => ("file", None),
        Source::Url(url) => ("url", Some(url.as_str())),
    };
    let values: [&(dyn ToSql + Sync); 20] = [
        &p.id.as_str(),
        &p.owner.0,
        &p.created_at_ms,
        &p.category.as_str(),
        &i64::from(p.faces),
        &i64::from(p.masked),
        &i64::from(p.unmasked),
        &source_kind,
        &source_url,
        &p.file_name,
        &p.result_json,
        &o.image_type.as_str(),
        &to_i64(o.bytes),
        &o.sha256,
        &a.image_type.as_str(),
        &to_i64(a.bytes),
        &a.sha256,
        &t.image_type.as_str(),
        &to_i64(t.bytes),
        &t.sha256,
    ];
    client
        .execute(
            &format!(
                "INSERT INTO entries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ),
            &values,
        )
        .await
        .map_err(during("insert entry"))?;
    Ok(())
}

impl PgHistory {
    /// Uses the database behind `pg` (migrating it under the cluster-wide lock) and the bucket
    /// `s3` describes, with the system clock. Checks that the bucket answers.
    ///
    /// Errors: [`Error::InvalidConfig`]; [`Error::Postgres`]; [`Error::ObjectStore`] if the
    /// bucket cannot be listed.
    pub fn open(pg: PgPool, s3: &S3Config, config: StoreConfig) -> Result<PgHistory> {
        Self::open_with_clock(pg, s3, config, Arc::new(SystemClock))
    }

    /// Like [`PgHistory::open`], with the time taken from `clock`.
    pub fn open_with_clock(
        pg: PgPool,
        s3: &S3Config,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<PgHistory> {
        config.validate()?;
        let objects = s3.build()?;
        pg.migrate(COMPONENT, MIGRATIONS).map_err(pg_err)?;
        let prefix = ObjectPath::from(s3.prefix.trim_matches('/'));
        let history = PgHistory {
            inner: Arc::new(Inner {
                pg,
                objects,
                prefix,
                config,
                clock,
            }),
        };
        history.ping()?;
        Ok(history)
    }

    /// The configuration in use.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    fn key(&self, id: &EntryId, kind: Kind, image_type: ImageType) -> ObjectPath {
        self.files_prefix()
            .child(&id.as_str()[..2])
            .child(format!("{id}-{kind}.{}", image_type.extension()))
    }

    fn files_prefix(&self) -> ObjectPath {
        if self.inner.prefix.as_ref().is_empty() {
            ObjectPath::from("files")
        } else {
            self.inner.prefix.child("files")
        }
    }

    fn block_on<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.inner.pg.block_on(future).map_err(pg_err)?
    }

    fn run<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.inner.pg.run(op, work)
    }

    /// Deletes, in batches, the rows matching `filter` (a condition over `$1`) and then their
    /// objects: each batch's rows are gone before its objects go.
    fn delete_where(
        &self,
        filter: &'static str,
        args: Vec<Box<dyn ToSql + Sync + Send>>,
    ) -> Result<usize> {
        let args = Arc::new(args);
        let mut total = 0;
        loop {
            let args = args.clone();
            let batch = self.run("delete", move |client| async move {
                let rows = client
                    .query(
                        &format!(
                            "DELETE FROM entries WHERE id IN (
                                 SELECT id FROM entries WHERE {filter} LIMIT {DELETE_BATCH}
                                 FOR UPDATE SKIP LOCKED)
                             RETURNING id, original_type, annotated_type, thumb_type"
                        ),
                        &args
                            .iter()
                            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                            .collect::<Vec<_>>(),
                    )
                    .await
                    .map_err(during("delete entries"))?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            [
                                r.get::<_, String>(1),
                                r.get::<_, String>(2),
                                r.get::<_, String>(3),
                            ],
                        )
                    })
                    .collect::<Vec<_>>())
            })?;
            let mut keys = Vec::new();
            for (id, types) in &batch {
                let Some((id, images)) = rows::images_of(id, types) else {
                    continue;
                };
                for (kind, ty) in images {
                    keys.push(self.key(&id, kind, ty));
                }
            }
            let objects = self.inner.objects.clone();
            self.block_on(async move {
                let mut first_error = None;
                for key in &keys {
                    match objects.delete(key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => {
                            first_error.get_or_insert(object_err("delete", key)(e));
                        }
                    }
                }
                // The rows are gone; objects left behind are collected by the next sweep.
                first_error.map_or(Ok(()), Err)
            })?;
            total += batch.len();
            if (batch.len() as i64) < DELETE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Removes objects under the files prefix that no row refers to and that are older than
    /// `grace` (an upload on another instance writes its objects a moment before its row).
    /// Objects' ages come from the object store's timestamps, measured against this store's
    /// clock, so the sweep expects a clock that tells the real time.
    /// Keys this crate would not generate are left alone.
    pub fn sweep(&self, grace: Duration) -> Result<SweepReport> {
        let objects = self.inner.objects.clone();
        let prefix = self.files_prefix();
        let now_ms = self.inner.clock.now_ms();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let candidates = self.block_on(async move {
            let mut listing = objects.list(Some(&prefix));
            let mut found = Vec::new();
            while let Some(item) = listing.next().await {
                let meta = item.map_err(object_err("list", &prefix))?;
                if meta.last_modified.timestamp_millis() > now_ms.saturating_sub(grace_ms) {
                    continue;
                }
                let id = meta.location.filename().and_then(rows::entry_of_name);
                if let Some(id) = id {
                    found.push((id, meta.location, meta.size));
                }
            }
            Ok(found)
        })?;
        if candidates.is_empty() {
            return Ok(SweepReport::default());
        }
        let ids: Vec<String> = candidates.iter().map(|(id, _, _)| id.to_string()).collect();
        let existing: std::collections::HashSet<String> =
            self.run("sweep", move |client| async move {
                let rows = client
                    .query("SELECT id FROM entries WHERE id = ANY($1)", &[&ids])
                    .await
                    .map_err(during("sweep"))?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })?;
        let orphans: Vec<(ObjectPath, u64)> = candidates
            .into_iter()
            .filter(|(id, _, _)| !existing.contains(id.as_str()))
            .map(|(_, key, size)| (key, size))
            .collect();
        let objects = self.inner.objects.clone();
        self.block_on(async move {
            let mut report = SweepReport::default();
            for (key, size) in orphans {
                match objects.delete(&key).await {
                    Ok(()) => {
                        report.removed_files += 1;
                        report.removed_bytes += size;
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(object_err("delete", &key)(e)),
                }
            }
            Ok(report)
        })
    }

    /// The keys under the files prefix, relative to it (tests look for orphans with it).
    #[doc(hidden)]
    pub fn list_raw(&self) -> Result<Vec<String>> {
        let objects = self.inner.objects.clone();
        let prefix = self.files_prefix();
        self.block_on(async move {
            let mut listing = objects.list(Some(&prefix));
            let mut keys = Vec::new();
            while let Some(item) = listing.next().await {
                let meta = item.map_err(object_err("list", &prefix))?;
                let key = meta.location.to_string();
                keys.push(
                    key.strip_prefix(&format!("{prefix}/"))
                        .unwrap_or(&key)
                        .to_string(),
                );
            }
            Ok(keys)
        })
    }

    /// Writes an object under the files prefix (tests make orphans with it).
    #[doc(hidden)]
    pub fn put_raw(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let key = ObjectPath::from(format!("{}/{relative}", self.files_prefix()));
        let objects = self.inner.objects.clone();
        self.block_on(async move {
            objects
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(object_err("put", &key))?;
            Ok(())
        })
    }
}

impl HistoryBackend for PgHistory {
    // Stores the three images as objects, then commits the row. On failure the objects
    // written are deleted (what a crash leaves is removed by [`PgHistory::sweep`]).
    //
    // Errors: as [`crate::HistoryStore::record`], with [`Error::ObjectStore`] and
    // [`Error::Postgres`] as the storage failures.
    fn record(&self, entry: NewEntry) -> Result<Entry> {
        let mut prepared = prepare(
            entry,
            &self.inner.config.limits(),
            self.inner.clock.now_ms(),
        )?;
        let puts: Vec<(ObjectPath, Vec<u8>)> = Kind::ALL
            .into_iter()
            .zip(prepared.images.iter_mut())
            .map(|(kind, (meta, bytes))| {
                (
                    self.key(&prepared.id, kind, meta.image_type),
                    std::mem::take(bytes),
                )
            })
            .collect();
        let keys: Vec<ObjectPath> = puts.iter().map(|(key, _)| key.clone()).collect();
        let objects = self.inner.objects.clone();
        let mut stored = self.block_on(async move {
            let writes = puts.into_iter().map(|(key, bytes)| {
                let objects = objects.clone();
                async move {
                    objects
                        .put(&key, PutPayload::from(bytes))
                        .await
                        .map(|_| ())
                        .map_err(object_err("put", &key))
                }
            });
            futures_util::future::join_all(writes)
                .await
                .into_iter()
                .collect::<Result<Vec<()>>>()
                .map(|_| ())
        });
        let prepared = Arc::new(prepared);
        if stored.is_ok() {
            let p = prepared.clone();
            stored = self.run("insert entry", move |client| async move {
                insert_row(&client, &p).await
            });
        }
        if let Err(e) = stored {
            let objects = self.inner.objects.clone();
            let _ = self.block_on(async move {
                for key in &keys {
                    let _ = objects.delete(key).await;
                }
                Ok(())
            });
            return Err(e);
        }
        let prepared = Arc::try_unwrap(prepared)
            .map_err(|_| Error::Postgres(pg_pool::Error::Runtime("entry still shared".into())))?;
        Ok(prepared.into_entry())
    }

    fn list(
        &self,
        owner: UserId,
        category: Option<Category>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, self.inner.config.max_page_size);
        let category = category.map(|c| c.as_str().to_owned());
        let after = after.map(|c| (c.created_at_ms, c.id.as_str().to_owned()));
        let rows = self.run("list", move |client| async move {
            let mut sql = format!("SELECT {COLUMNS} FROM entries WHERE owner = $1");
            let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(owner.0)];
            if let Some(c) = category {
                args.push(Box::new(c));
                sql.push_str(&format!(" AND category = ${}", args.len()));
            }
            if let Some((at, id)) = after {
                args.push(Box::new(at));
                args.push(Box::new(id));
                sql.push_str(&format!(
                    " AND (created_at, id) < (${}, ${})",
                    args.len() - 1,
                    args.len()
                ));
            }
            // One extra row tells whether another page exists.
            args.push(Box::new(limit as i64 + 1));
            sql.push_str(&format!(
                " ORDER BY created_at DESC, id DESC LIMIT ${}",
                args.len()
            ));
            let refs: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client.query(&sql, &refs).await.map_err(during("list"))?;
            Ok(rows.iter().map(raw_row).collect::<Vec<_>>())
        })?;
        let more = rows.len() > limit;
        let entries = rows
            .into_iter()
            .take(limit)
            .map(RawRow::into_entry)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            entries.last().map(Entry::cursor)
        } else {
            None
        };
        Ok(Page { entries, next })
    }

    fn counts(&self, owner: UserId) -> Result<Counts> {
        let rows = self.run("counts", move |client| async move {
            let rows = client
                .query(
                    "SELECT category, count(*) FROM entries WHERE owner = $1 GROUP BY category",
                    &[&owner.0],
                )
                .await
                .map_err(during("counts"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>())
        })?;
        rows::counts(owner, rows)
    }

    fn get(&self, owner: UserId, id: &EntryId) -> Result<Entry> {
        let id = id.as_str().to_owned();
        let row = self.run("get", move |client| async move {
            let row = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM entries WHERE id = $1 AND owner = $2"),
                    &[&id, &owner.0],
                )
                .await
                .map_err(during("get"))?;
            Ok(row.as_ref().map(raw_row))
        })?;
        row.ok_or(Error::NotFound)?.into_entry()
    }

    fn read_image(&self, owner: UserId, id: &EntryId, kind: Kind) -> Result<ImageData> {
        let entry = self.get(owner, id)?;
        let image_type = entry.image(kind).image_type;
        let key = self.key(id, kind, image_type);
        let objects = self.inner.objects.clone();
        let id = id.to_string();
        self.block_on(async move {
            match objects.get(&key).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(object_err("read", &key))?;
                    Ok(ImageData {
                        bytes: bytes.to_vec(),
                        image_type,
                    })
                }
                Err(object_store::Error::NotFound { .. }) => Err(Error::MissingFile {
                    id,
                    kind,
                    path: key.to_string().into(),
                }),
                Err(e) => Err(object_err("get", &key)(e)),
            }
        })
    }

    fn delete(&self, owner: UserId, id: &EntryId) -> Result<bool> {
        let n = self.delete_where(
            "id = $1 AND owner = $2",
            vec![Box::new(id.as_str().to_owned()), Box::new(owner.0)],
        )?;
        Ok(n > 0)
    }

    fn delete_user(&self, owner: UserId) -> Result<usize> {
        self.delete_where("owner = $1", vec![Box::new(owner.0)])
    }

    fn purge_older_than(&self, age: Duration) -> Result<usize> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = self.inner.clock.now_ms().saturating_sub(age_ms);
        self.delete_where("created_at < $1", vec![Box::new(cutoff)])
    }

    fn bytes_used(&self, owner: UserId) -> Result<u64> {
        let total: i64 = self.run("bytes used", move |client| async move {
            Ok(client
                .query_one(
                    "SELECT COALESCE(SUM(original_bytes + annotated_bytes + thumb_bytes), 0)::BIGINT
                     FROM entries WHERE owner = $1",
                    &[&owner.0],
                )
                .await
                .map_err(during("bytes used"))?
                .get(0))
        })?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    fn daily_counts(
        &self,
        owner: Option<UserId>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayCount>> {
        let rows = self.run("daily counts", move |client| async move {
            let rows = client
                .query(
                    "SELECT div(created_at, 86400000)::BIGINT AS day, category, count(*)
                     FROM entries
                     WHERE created_at >= $1 AND created_at < $2
                       AND ($3::BIGINT IS NULL OR owner = $3)
                     GROUP BY day, category ORDER BY day",
                    &[&from_ms, &to_ms, &owner.map(|o| o.0)],
                )
                .await
                .map_err(during("daily counts"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2),
                    )
                })
                .collect::<Vec<_>>())
        })?;
        rows::day_counts(rows)
    }

    // Checks that the database answers and the bucket can be listed.
    fn ping(&self) -> Result<()> {
        self.run("ping", |client| async move {
            client
                .query_one("SELECT count(*) FROM entries WHERE false", &[])
                .await
                .map_err(during("ping"))?;
            Ok(())
        })?;
        let objects = self.inner.objects.clone();
        let prefix = self.files_prefix();
        self.block_on(async move {
            let mut listing = objects.list(Some(&prefix));
            match listing.next().await {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(object_err("list", &prefix)(e)),
            }
        })
    }
}

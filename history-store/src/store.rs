//! The SQLite + local-files backend.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, params_from_iter};

use crate::backend::HistoryBackend;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result, db, io};
use crate::prepare::{PrepareLimits, Prepared, prepare};
use crate::rows;
use crate::types::{
    Category, Counts, Cursor, DayCount, Entry, EntryId, ImageData, ImageMeta, ImageType, Kind,
    NewEntry, Page, Source, UserId,
};

/// Settings for [`HistoryStore`]. `Default` gives sensible production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Longest side of thumbnails, in pixels (16..=4096). Default 320.
    pub thumbnail_size: u32,
    /// JPEG quality of thumbnails (1..=100). Default 80.
    pub thumbnail_quality: u8,
    /// Largest accepted original or annotated image, in bytes. Default 25 MiB.
    pub max_image_bytes: u64,
    /// Largest annotated image, in pixels, that will be decoded for the thumbnail. Default 40 M.
    pub max_pixels: u64,
    /// Largest page [`HistoryStore::list`] returns. Default 100.
    pub max_page_size: usize,
    /// Idle read-only SQLite connections kept for queries (at least 1). Default 4.
    pub read_connections: usize,
    /// How long a statement waits for a lock held by another connection. Default 5 s.
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            thumbnail_size: 320,
            thumbnail_quality: 80,
            max_image_bytes: 25 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_page_size: 100,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// Checks every field; [`Error::InvalidConfig`] names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.into(),
            })
        };
        if !(16..=4096).contains(&self.thumbnail_size) {
            return bad("thumbnail_size", "must be between 16 and 4096");
        }
        if !(1..=100).contains(&self.thumbnail_quality) {
            return bad("thumbnail_quality", "must be between 1 and 100");
        }
        if self.max_image_bytes == 0 {
            return bad("max_image_bytes", "must be positive");
        }
        if self.max_pixels == 0 {
            return bad("max_pixels", "must be positive");
        }
        if self.max_page_size == 0 {
            return bad("max_page_size", "must be positive");
        }
        if self.read_connections == 0 {
            return bad("read_connections", "must be at least 1");
        }
        Ok(())
    }

    pub(crate) fn limits(&self) -> PrepareLimits {
        PrepareLimits {
            max_image_bytes: self.max_image_bytes,
            thumbnail_size: self.thumbnail_size,
            thumbnail_quality: self.thumbnail_quality,
            max_pixels: self.max_pixels,
        }
    }
}

/// What [`HistoryStore::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files removed (temporary files and images without a row).
    pub removed_files: usize,
    /// Their total size.
    pub removed_bytes: u64,
}

/// Points inside `record` and `delete` where a test can inject a failure or a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    TempFilesWritten,
    Renamed(Kind),
    FilesSynced,
    RowInserted,
    Committed,
    DeleteCommitted,
}

#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    /// Return an I/O error from the step, as a full disk would.
    Fail,
    /// Abort the process on the spot, as a crash or `kill -9` would.
    Abort,
}

const DB_FILE: &str = "history.sqlite3";
const FILES_DIR: &str = "files";
const TMP_DIR: &str = "tmp";
const DELETE_BATCH: i64 = 256;

/// Ordered schema migrations; each runs in its own transaction and bumps `user_version`.
const MIGRATIONS: &[&str] = &["
CREATE TABLE entries (
    id               TEXT PRIMARY KEY NOT NULL,
    owner            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    category         TEXT NOT NULL
                     CHECK (category IN ('no_face', 'all_masked', 'none_masked', 'some_masked')),
    faces            INTEGER NOT NULL,
    masked           INTEGER NOT NULL,
    unmasked         INTEGER NOT NULL,
    source_kind      TEXT NOT NULL CHECK (source_kind IN ('file', 'url')),
    source_url       TEXT,
    file_name        TEXT,
    result_json      TEXT NOT NULL,
    original_type    TEXT NOT NULL,
    original_bytes   INTEGER NOT NULL,
    original_sha256  TEXT NOT NULL,
    annotated_type   TEXT NOT NULL,
    annotated_bytes  INTEGER NOT NULL,
    annotated_sha256 TEXT NOT NULL,
    thumb_type       TEXT NOT NULL,
    thumb_bytes      INTEGER NOT NULL,
    thumb_sha256     TEXT NOT NULL
) STRICT;
CREATE INDEX entries_owner_time ON entries (owner, created_at DESC, id DESC);
CREATE INDEX entries_owner_category_time ON entries (owner, category, created_at DESC, id DESC);
CREATE INDEX entries_time ON entries (created_at);
"];

pub(crate) const COLUMNS: &str = "id, owner, created_at, category, faces, masked, unmasked, source_kind, \
    source_url, file_name, result_json, original_type, original_bytes, original_sha256, \
    annotated_type, annotated_bytes, annotated_sha256, thumb_type, thumb_bytes, thumb_sha256";

/// Detection history in SQLite (WAL) with image files under one data directory.
///
/// Layout: `DATA/history.sqlite3`, images at `DATA/files/<2 hex>/<id>-<kind>.<ext>`, and
/// in-flight writes in `DATA/tmp/`. Every path is built from a generated [`EntryId`] and a fixed
/// kind and extension, so nothing a user sends can name a file.
///
/// Cheap to clone (an `Arc` inside), `Send + Sync`; methods block, so call them from
/// `spawn_blocking` in async code. One process should own a data directory: the startup sweep
/// assumes no other process is half-way through a `record`.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    files: PathBuf,
    tmp: PathBuf,
    db_path: PathBuf,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// `record` holds it shared from its first file write to its commit; `sweep` holds it
    /// exclusively, so the sweep never mistakes an in-flight write for an orphan.
    files_lock: RwLock<()>,
    #[cfg(test)]
    fault: Mutex<Option<(Step, FaultAction)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: SQLite rolls back the open
    // transaction when the `Transaction` guard drops during unwinding.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create_new(path).map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes a rename durable; only POSIX systems can open a directory for it.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A row as a database returns it, before parsing into typed values.
pub(crate) struct RawRow {
    pub(crate) id: String,
    pub(crate) owner: i64,
    pub(crate) created_at: i64,
    pub(crate) category: String,
    pub(crate) faces: i64,
    pub(crate) masked: i64,
    pub(crate) unmasked: i64,
    pub(crate) source_kind: String,
    pub(crate) source_url: Option<String>,
    pub(crate) file_name: Option<String>,
    pub(crate) result_json: String,
    pub(crate) images: [(String, i64, String); 3],
}

impl RawRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: row.get(0)?,
            owner: row.get(1)?,
            created_at: row.get(2)?,
            category: row.get(3)?,
            faces: row.get(4)?,
            masked: row.get(5)?,
            unmasked: row.get(6)?,
            source_kind: row.get(7)?,
            source_url: row.get(8)?,
            file_name: row.get(9)?,
            result_json: row.get(10)?,
            images: [
                (row.get(11)?, row.get(12)?, row.get(13)?),
                (row.get(14)?, row.get(15)?, row.get(16)?),
                (row.get(17)?, row.get(18)?, row.get(19)?),
            ],
        })
    }

    pub(crate) fn into_entry(self) -> Result<Entry> {
        let id = self.id;
        let corrupt = |detail: String| Error::Corrupt {
            id: id.clone(),
            detail,
        };
        let count = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| corrupt(format!("{what} count {v} out of range")))
        };
        let source = match (self.source_kind.as_str(), self.source_url) {
            ("file", _) => Source::File,
            ("url", Some(url)) => Source::Url(url),
            (kind, _) => return Err(corrupt(format!("bad source {kind:?}"))),
        };
        let [o, a, t] = self.images;
        let image = |(ty, bytes, sha256): (String, i64, String)| -> Result<ImageMeta> {
            Ok(ImageMeta {
                image_type: ImageType::parse_stored(&ty)
                    .ok_or_else(|| corrupt(format!("bad image type {ty:?}")))?,
                bytes: u64::try_from(bytes).map_err(|_| corrupt(format!("bad size {bytes}")))?,
                sha256,
            })
        };
        Ok(Entry {
            id: id.parse().map_err(|_| corrupt("bad id".into()))?,
            owner: UserId(self.owner),
            created_at_ms: self.created_at,
            category: self
                .category
                .parse()
                .map_err(|_| corrupt("bad category".into()))?,
            faces: count(self.faces, "faces")?,
            masked: count(self.masked, "masked")?,
            unmasked: count(self.unmasked, "unmasked")?,
            source,
            file_name: self.file_name,
            result: serde_json::from_str(&self.result_json)
                .map_err(|e| corrupt(format!("result JSON: {e}")))?,
            original: image(o)?,
            annotated: image(a)?,
            thumb: image(t)?,
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("read schema version"))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(Error::SchemaTooNew {
            found: version,
            supported,
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction().map_err(db("begin migration"))?;
        tx.execute_batch(sql).map_err(db("migrate"))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(db("set schema version"))?;
        tx.commit().map_err(db("commit migration"))?;
    }
    Ok(())
}

impl HistoryStore {
    /// Opens (creating if needed) the store in `data_dir` with the system clock, migrates the
    /// schema, and sweeps orphaned files left by a crash.
    ///
    /// Errors: [`Error::InvalidConfig`]; [`Error::Io`] if the directory cannot be created;
    /// [`Error::Database`] if SQLite cannot open it; [`Error::SchemaTooNew`] if a newer version
    /// of this crate created the database.
    pub fn open(data_dir: impl AsRef<Path>, config: StoreConfig) -> Result<HistoryStore> {
        Self::open_with_clock(data_dir, config, Arc::new(SystemClock))
    }

    /// Like [`HistoryStore::open`], with the time taken from `clock` (tests, simulations).
    pub fn open_with_clock(
        data_dir: impl AsRef<Path>,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<HistoryStore> {
        config.validate()?;
        let dir = data_dir.as_ref();
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let root = dir.canonicalize().map_err(io("resolve", dir))?;
        let files = root.join(FILES_DIR);
        let tmp = root.join(TMP_DIR);
        for d in [&files, &tmp] {
            fs::create_dir_all(d).map_err(io("create directory", d))?;
        }
        let db_path = root.join(DB_FILE);
        let mut writer = Connection::open(&db_path).map_err(db("open database"))?;
        writer
            .busy_timeout(config.busy_timeout)
            .map_err(db("set busy timeout"))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::InvalidConfig {
                field: "data_dir",
                reason: format!("SQLite refused WAL mode (got {mode}); is it on a network share?"),
            });
        }
        // FULL: a committed entry survives power loss, not only a process crash.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db("set synchronous"))?;
        migrate(&mut writer)?;
        sync_dir(&root)?;

        let store = HistoryStore {
            inner: Arc::new(Inner {
                root,
                files,
                tmp,
                db_path,
                config,
                clock,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                files_lock: RwLock::new(()),
                #[cfg(test)]
                fault: Mutex::new(None),
            }),
        };
        store.sweep()?;
        Ok(store)
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.inner.root
    }

    /// The configuration in use.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    #[cfg(test)]
    pub(crate) fn inject_fault(&self, fault: Option<(Step, FaultAction)>) {
        *lock(&self.inner.fault) = fault;
    }

    fn checkpoint(&self, step: Step) -> Result<()> {
        #[cfg(test)]
        if let Some((at, action)) = *lock(&self.inner.fault)
            && at == step
        {
            match action {
                FaultAction::Fail => {
                    return Err(Error::Io {
                        op: "injected fault",
                        path: self.inner.root.clone(),
                        source: std::io::Error::other(format!("{step:?}")),
                    });
                }
                FaultAction::Abort => std::process::abort(),
            }
        }
        let _ = step;
        Ok(())
    }

    fn shard_dir(&self, id: &EntryId) -> PathBuf {
        // Ids are validated hex, so the first two characters are a safe directory name.
        self.inner.files.join(&id.as_str()[..2])
    }

    fn file_path(&self, id: &EntryId, kind: Kind, image_type: ImageType) -> PathBuf {
        self.shard_dir(id)
            .join(format!("{id}-{kind}.{}", image_type.extension()))
    }

    fn open_reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.inner.db_path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db("open read connection"))?;
        conn.busy_timeout(self.inner.config.busy_timeout)
            .map_err(db("set busy timeout"))?;
        Ok(conn)
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.inner.readers).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        let mut pool = lock(&self.inner.readers);
        if pool.len() < self.inner.config.read_connections {
            pool.push(conn);
        }
        out
    }

    /// Stores a detection: both images, a JPEG thumbnail of the annotated image, and the row.
    ///
    /// Files are written under temporary names, fsynced, renamed into place and the directory
    /// fsynced before the row commits, so a crash at any point leaves either the complete entry
    /// or nothing visible (leftover files are removed by the next [`HistoryStore::sweep`]).
    ///
    /// Errors: [`Error::ImageTooLarge`], [`Error::UnsupportedImage`] (unknown format, or an
    /// annotated image that is not PNG/JPEG), [`Error::Decode`], [`Error::InvalidInput`] (URL too
    /// long) reject the input; [`Error::Io`] and [`Error::Database`] are storage failures. On any
    /// error nothing is stored.
    pub fn record(&self, entry: NewEntry) -> Result<Entry> {
        let prepared = prepare(
            entry,
            &self.inner.config.limits(),
            self.inner.clock.now_ms(),
        )?;
        let guard = self
            .inner
            .files_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut written = Vec::new();
        if let Err(e) = self.write_and_commit(&prepared, &mut written) {
            for path in &written {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
        drop(guard);
        // A fault here only matters as a crash: the entry is complete.
        let _ = self.checkpoint(Step::Committed);
        Ok(prepared.into_entry())
    }

    /// Writes the files and commits the row; `written` collects every path created, for cleanup.
    fn write_and_commit(&self, p: &Prepared, written: &mut Vec<PathBuf>) -> Result<()> {
        let mut temps = Vec::with_capacity(3);
        for (kind, (_, bytes)) in Kind::ALL.into_iter().zip(&p.images) {
            let tmp = self.inner.tmp.join(format!("{}-{kind}.tmp", p.id));
            written.push(tmp.clone());
            write_synced(&tmp, bytes)?;
            temps.push(tmp);
        }
        self.checkpoint(Step::TempFilesWritten)?;

        let shard = self.shard_dir(&p.id);
        if !shard.is_dir() {
            fs::create_dir_all(&shard).map_err(io("create directory", &shard))?;
            sync_dir(&self.inner.files)?;
        }
        for ((kind, (meta, _)), tmp) in Kind::ALL.into_iter().zip(&p.images).zip(&temps) {
            let path = self.file_path(&p.id, kind, meta.image_type);
            written.push(path.clone());
            fs::rename(tmp, &path).map_err(io("rename", tmp))?;
            self.checkpoint(Step::Renamed(kind))?;
        }
        sync_dir(&shard)?;
        self.checkpoint(Step::FilesSynced)?;

        let [(o, _), (a, _), (t, _)] = &p.images;
        let (source_kind, source_url) = match &p.source {
            Source::File => ("file", None),
            Source::Url(url) => ("url", Some(url.as_str())),
        };
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction().map_err(db("begin record"))?;
        tx.execute(
            &format!(
                "INSERT INTO entries ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
            ),
            params![
                p.id.as_str(),
                p.owner.0,
                p.created_at_ms,
                p.category.as_str(),
                i64::from(p.faces),
                i64::from(p.masked),
                i64::from(p.unmasked),
                source_kind,
                source_url,
                p.file_name,
                p.result_json,
                o.image_type.as_str(),
                to_i64(o.bytes),
                o.sha256,
                a.image_type.as_str(),
                to_i64(a.bytes),
                a.sha256,
                t.image_type.as_str(),
                to_i64(t.bytes),
                t.sha256,
            ],
        )
        .map_err(db("insert entry"))?;
        self.checkpoint(Step::RowInserted)?;
        tx.commit().map_err(db("commit entry"))
    }

    /// The owner's entries, newest first (ties by id, descending), optionally only one category,
    /// continuing after `after` (a cursor from a previous [`Page::next`]). `limit` is clamped to
    /// `1..=max_page_size`.
    ///
    /// Errors: [`Error::Database`]; [`Error::Corrupt`] if a row does not parse.
    pub fn list(
        &self,
        owner: UserId,
        category: Option<Category>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, self.inner.config.max_page_size);
        let mut sql = format!("SELECT {COLUMNS} FROM entries WHERE owner = ?");
        let mut args = vec![Value::Integer(owner.0)];
        if let Some(c) = category {
            sql.push_str(" AND category = ?");
            args.push(Value::Text(c.as_str().into()));
        }
        if let Some(cursor) = after {
            sql.push_str(" AND (created_at, id) < (?, ?)");
            args.push(Value::Integer(cursor.created_at_ms));
            args.push(Value::Text(cursor.id.as_str().into()));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        // One extra row tells whether another page exists.
        args.push(Value::Integer(limit as i64 + 1));
        let rows = self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(db("prepare list"))?;
            let rows = stmt
                .query_map(params_from_iter(args), RawRow::from_row)
                .map_err(db("list"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("list"))?;
            Ok(rows)
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

    /// Entries per UTC day and category recorded in `[from_ms, to_ms)`, of one owner or (with
    /// `None`) of everyone, ordered by day. Days are counted from the Unix epoch.
    ///
    /// Errors: [`Error::Database`]; [`Error::Corrupt`] for an unknown stored category.
    pub fn daily_counts(
        &self,
        owner: Option<UserId>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayCount>> {
        let mut sql = String::from(
            "SELECT created_at / 86400000 AS day, category, COUNT(*) FROM entries \
             WHERE created_at >= ? AND created_at < ?",
        );
        let mut args = vec![Value::Integer(from_ms), Value::Integer(to_ms)];
        if let Some(owner) = owner {
            sql.push_str(" AND owner = ?");
            args.push(Value::Integer(owner.0));
        }
        sql.push_str(" GROUP BY day, category ORDER BY day");
        let rows = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(db("prepare daily counts"))?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db("daily counts"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("daily counts"))?;
            Ok(rows)
        })?;
        rows::day_counts(rows)
    }

    /// Number of the owner's entries per category.
    ///
    /// Errors: [`Error::Database`]; [`Error::Corrupt`] for an unknown stored category.
    pub fn counts(&self, owner: UserId) -> Result<Counts> {
        let rows = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT category, COUNT(*) FROM entries WHERE owner = ? GROUP BY category",
                )
                .map_err(db("prepare counts"))?;
            let rows = stmt
                .query_map([owner.0], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db("counts"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("counts"))?;
            Ok(rows)
        })?;
        rows::counts(owner, rows)
    }

    /// One entry. [`Error::NotFound`] unless it exists and belongs to `owner`.
    pub fn get(&self, owner: UserId, id: &EntryId) -> Result<Entry> {
        let row = self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM entries WHERE id = ? AND owner = ?"
                ))
                .map_err(db("prepare get"))?;
            stmt.query_row(params![id.as_str(), owner.0], RawRow::from_row)
                .optional()
                .map_err(db("get"))
        })?;
        row.ok_or(Error::NotFound)?.into_entry()
    }

    /// Where one of an entry's images is on disk, and its format (for serving the file directly).
    ///
    /// Errors: [`Error::NotFound`] as for [`HistoryStore::get`]; [`Error::MissingFile`] if the
    /// row exists but the file does not.
    pub fn image_path(
        &self,
        owner: UserId,
        id: &EntryId,
        kind: Kind,
    ) -> Result<(PathBuf, ImageType)> {
        let entry = self.get(owner, id)?;
        let image_type = entry.image(kind).image_type;
        let path = self.file_path(id, kind, image_type);
        if !path.is_file() {
            return Err(Error::MissingFile {
                id: id.to_string(),
                kind,
                path,
            });
        }
        Ok((path, image_type))
    }

    /// The bytes of one of an entry's images.
    ///
    /// Errors: as [`HistoryStore::image_path`], plus [`Error::Io`] if the file cannot be read.
    pub fn read_image(&self, owner: UserId, id: &EntryId, kind: Kind) -> Result<ImageData> {
        let entry = self.get(owner, id)?;
        let image_type = entry.image(kind).image_type;
        let path = self.file_path(id, kind, image_type);
        match fs::read(&path) {
            Ok(bytes) => Ok(ImageData { bytes, image_type }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::MissingFile {
                id: id.to_string(),
                kind,
                path,
            }),
            Err(e) => Err(Error::Io {
                op: "read",
                path,
                source: e,
            }),
        }
    }

    /// Deletes rows matching `filter` (an SQL condition over `params`) in batches: each batch's
    /// rows commit as deleted before their files go, so a crash leaves only orphan files.
    fn delete_where(&self, filter: &str, args: &[Value]) -> Result<usize> {
        let mut total = 0;
        loop {
            let batch = {
                let mut conn = lock(&self.inner.writer);
                let tx = conn.transaction().map_err(db("begin delete"))?;
                let batch = {
                    let mut select = tx
                        .prepare_cached(&format!(
                            "SELECT id, original_type, annotated_type, thumb_type FROM entries \
                             WHERE {filter} LIMIT {DELETE_BATCH}"
                        ))
                        .map_err(db("prepare delete"))?;
                    let batch = select
                        .query_map(params_from_iter(args), |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                [
                                    r.get::<_, String>(1)?,
                                    r.get::<_, String>(2)?,
                                    r.get::<_, String>(3)?,
                                ],
                            ))
                        })
                        .map_err(db("select for delete"))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(db("select for delete"))?;
                    let mut delete = tx
                        .prepare_cached("DELETE FROM entries WHERE id = ?")
                        .map_err(db("prepare delete"))?;
                    for (id, _) in &batch {
                        delete.execute([id]).map_err(db("delete entry"))?;
                    }
                    batch
                };
                tx.commit().map_err(db("commit delete"))?;
                batch
            };
            self.checkpoint(Step::DeleteCommitted)?;
            let mut first_error = None;
            for (id, types) in &batch {
                let Some((id, images)) = rows::images_of(id, types) else {
                    continue;
                };
                for (kind, ty) in images {
                    if let Err(e) = remove_if_exists(&self.file_path(&id, kind, ty)) {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                // The rows are gone; the files left behind are collected by the next sweep.
                return Err(e);
            }
            total += batch.len();
            if (batch.len() as i64) < DELETE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Deletes one entry and its files. `Ok(false)` if `owner` had no such entry (already
    /// deleted, never existed, or someone else's: nothing happens then).
    ///
    /// Errors: [`Error::Database`]; [`Error::Io`] if a file could not be removed (the entry is
    /// gone regardless; the sweep removes the file later).
    pub fn delete(&self, owner: UserId, id: &EntryId) -> Result<bool> {
        let n = self.delete_where(
            "id = ?1 AND owner = ?2",
            &[Value::Text(id.as_str().into()), Value::Integer(owner.0)],
        )?;
        Ok(n > 0)
    }

    /// Deletes every entry and file of `owner`, for account deletion. Idempotent; returns how
    /// many entries were removed. Errors as for [`HistoryStore::delete`].
    pub fn delete_user(&self, owner: UserId) -> Result<usize> {
        self.delete_where("owner = ?1", &[Value::Integer(owner.0)])
    }

    /// Deletes every entry (of every owner) recorded more than `age` before the clock's now.
    /// Returns how many went. Errors as for [`HistoryStore::delete`].
    pub fn purge_older_than(&self, age: Duration) -> Result<usize> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = self.inner.clock.now_ms().saturating_sub(age_ms);
        self.delete_where("created_at < ?1", &[Value::Integer(cutoff)])
    }

    /// Checks that the database answers and the data directory is there, for health checks.
    /// Errors: `Database` or `Io`.
    pub fn ping(&self) -> Result<()> {
        self.with_reader(|conn| {
            conn.query_row("SELECT count(*) FROM entries WHERE 0", [], |_| Ok(()))
                .map_err(db("ping"))
        })?;
        std::fs::metadata(self.data_dir()).map_err(|source| Error::Io {
            op: "stat",
            path: self.data_dir().to_path_buf(),
            source,
        })?;
        Ok(())
    }

    /// Bytes of image data (original, annotated, thumbnail) the owner's entries occupy.
    pub fn bytes_used(&self, owner: UserId) -> Result<u64> {
        let total: i64 = self.with_reader(|conn| {
            conn.prepare_cached(
                "SELECT COALESCE(SUM(original_bytes + annotated_bytes + thumb_bytes), 0) \
                 FROM entries WHERE owner = ?",
            )
            .and_then(|mut s| s.query_row([owner.0], |r| r.get(0)))
            .map_err(db("bytes used"))
        })?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// Removes files no committed row refers to: everything in `tmp/`, and images whose entry
    /// does not exist (left by a crash during `record` or `delete`). Runs at `open`; safe to
    /// call any time, as it waits for in-flight `record`s of this process.
    ///
    /// Files in `files/` whose names this crate would not generate are left alone.
    pub fn sweep(&self) -> Result<SweepReport> {
        let _exclusive = self
            .inner
            .files_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = SweepReport::default();
        fn remove(path: &Path, report: &mut SweepReport) -> Result<()> {
            let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if remove_if_exists(path)? {
                report.removed_files += 1;
                report.removed_bytes += size;
            }
            Ok(())
        }
        let tmp = &self.inner.tmp;
        for item in fs::read_dir(tmp).map_err(io("list", tmp))? {
            let item = item.map_err(io("list", tmp))?;
            if item
                .file_type()
                .map_err(io("stat", &item.path()))?
                .is_file()
            {
                remove(&item.path(), &mut report)?;
            }
        }
        let files = &self.inner.files;
        for shard in fs::read_dir(files).map_err(io("list", files))? {
            let shard = shard.map_err(io("list", files))?.path();
            if !shard.is_dir() {
                continue;
            }
            let mut candidates = Vec::new();
            for item in fs::read_dir(&shard).map_err(io("list", &shard))? {
                let path = item.map_err(io("list", &shard))?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(rows::entry_of_name);
                if let Some(id) = id {
                    candidates.push((id, path));
                }
            }
            let orphans = self.with_reader(|conn| {
                let mut exists = conn
                    .prepare_cached("SELECT 1 FROM entries WHERE id = ?")
                    .map_err(db("prepare sweep"))?;
                let mut orphans = Vec::new();
                for (id, path) in candidates {
                    if !exists.exists([id.as_str()]).map_err(db("sweep"))? {
                        orphans.push(path);
                    }
                }
                Ok(orphans)
            })?;
            for path in orphans {
                remove(&path, &mut report)?;
            }
        }
        Ok(report)
    }
}

impl HistoryBackend for HistoryStore {
    fn record(&self, entry: NewEntry) -> Result<Entry> {
        HistoryStore::record(self, entry)
    }

    fn list(
        &self,
        owner: UserId,
        category: Option<Category>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        HistoryStore::list(self, owner, category, after, limit)
    }

    fn counts(&self, owner: UserId) -> Result<Counts> {
        HistoryStore::counts(self, owner)
    }

    fn get(&self, owner: UserId, id: &EntryId) -> Result<Entry> {
        HistoryStore::get(self, owner, id)
    }

    fn read_image(&self, owner: UserId, id: &EntryId, kind: Kind) -> Result<ImageData> {
        HistoryStore::read_image(self, owner, id, kind)
    }

    fn delete(&self, owner: UserId, id: &EntryId) -> Result<bool> {
        HistoryStore::delete(self, owner, id)
    }

    fn delete_user(&self, owner: UserId) -> Result<usize> {
        HistoryStore::delete_user(self, owner)
    }

    fn purge_older_than(&self, age: Duration) -> Result<usize> {
        HistoryStore::purge_older_than(self, age)
    }

    fn bytes_used(&self, owner: UserId) -> Result<u64> {
        HistoryStore::bytes_used(self, owner)
    }

    fn daily_counts(
        &self,
        owner: Option<UserId>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DayCount>> {
        HistoryStore::daily_counts(self, owner, from_ms, to_ms)
    }

    fn ping(&self) -> Result<()> {
        HistoryStore::ping(self)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

//! End-to-end behaviour of the history backends on real photos, real storage and real threads,
//! run once per backend: the `sqlite` module on `HistoryStore` (SQLite + files in a temporary
//! directory), the `postgres` module on `PgHistory` (a fresh database of the PostgreSQL server
//! named by `MASK_TEST_POSTGRES`, and its own key prefix in the S3 bucket named by
//! `MASK_TEST_S3_*`; `make test` starts both through `webapp/test_support/services.py`; without
//! them those tests print SKIPPED and return). `sqlite_only` and `postgres_only` hold what only
//! one backend has: files and paths on disk, the SQLite file's schema; the object sweep, several
//! instances on one database, the PostgreSQL schema, an unreachable object store.

// Helpers outside `#[test]` functions panic on purpose: a failed fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use history_store::{
    Category, Clock, Cursor, DayCount, Entry, Error, HistoryBackend, HistoryStore, ImageType, Kind,
    ManualClock, NewEntry, PgHistory, PgPool, S3Config, Source, StoreConfig, SystemClock, UserId,
};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The repository's test photos (see `fixtures/README.md`).
const PHOTOS: &str = "../fixtures/photos";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

// ---- backends and fixtures ------------------------------------------------------------------

/// The storage a fixture runs on.
enum Backend {
    Sqlite,
    /// The server's URL (any database; each fixture creates its own) and the bucket (each
    /// fixture uses its own prefix in it).
    Postgres {
        url: String,
        s3: S3Config,
    },
}

impl Backend {
    fn postgres() -> Option<Backend> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(url) = var("MASK_TEST_POSTGRES") else {
            eprintln!(
                "SKIPPED: MASK_TEST_POSTGRES is not set (make test starts a PostgreSQL server \
                 and an S3 server through webapp/test_support/services.py)"
            );
            return None;
        };
        let mut s3 = Vec::new();
        for name in [
            "MASK_TEST_S3_ENDPOINT",
            "MASK_TEST_S3_BUCKET",
            "MASK_TEST_S3_REGION",
            "MASK_TEST_S3_ACCESS_KEY",
            "MASK_TEST_S3_SECRET_KEY",
        ] {
            match var(name) {
                Some(value) => s3.push(value),
                None => {
                    eprintln!(
                        "SKIPPED: MASK_TEST_POSTGRES is set but {name} is not (services.py \
                         exports both the PostgreSQL and the S3 settings)"
                    );
                    return None;
                }
            }
        }
        let [endpoint, bucket, region, access_key_id, secret_access_key] =
            <[String; 5]>::try_from(s3).unwrap();
        Some(Backend::Postgres {
            url,
            s3: S3Config {
                endpoint,
                bucket,
                region,
                access_key_id,
                secret_access_key,
                prefix: String::new(),
            },
        })
    }
}

/// Runs each named behaviour test once per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(b) = super::Backend::postgres() { super::$name(&b) }
            })*
        }
    };
}

/// Where one fixture's data lives, and how to look at it behind the store's back.
enum Place {
    Sqlite(TempDir),
    Postgres {
        /// The fixture's own database.
        url: String,
        pool: PgPool,
        /// With the fixture's own prefix.
        s3: S3Config,
        /// A client of the bucket independent of the store's.
        objects: Arc<dyn ObjectStore>,
    },
}

/// Either backend; dereferences to the trait every behaviour test goes through.
#[derive(Clone)]
enum Store {
    Sqlite(HistoryStore),
    Postgres(PgHistory),
}

impl Deref for Store {
    type Target = dyn HistoryBackend;

    fn deref(&self) -> &Self::Target {
        match self {
            Store::Sqlite(s) => s,
            Store::Postgres(s) => s,
        }
    }
}

impl Store {
    fn as_backend(&self) -> Arc<dyn HistoryBackend> {
        match self {
            Store::Sqlite(s) => Arc::new(s.clone()),
            Store::Postgres(s) => Arc::new(s.clone()),
        }
    }

    fn sqlite(&self) -> &HistoryStore {
        match self {
            Store::Sqlite(s) => s,
            Store::Postgres(_) => panic!("a SQLite-only check on the PostgreSQL backend"),
        }
    }

    fn postgres(&self) -> &PgHistory {
        match self {
            Store::Postgres(s) => s,
            Store::Sqlite(_) => panic!("a PostgreSQL-only check on the SQLite backend"),
        }
    }
}

struct Fixture {
    place: Place,
    clock: Arc<dyn Clock>,
    store: Store,
}

/// A fixture with the default configuration and the system clock.
fn fixture(b: &Backend) -> Fixture {
    fixture_with(b, StoreConfig::default(), Arc::new(SystemClock))
}

fn fixture_with(b: &Backend, config: StoreConfig, clock: Arc<dyn Clock>) -> Fixture {
    let place = new_place(b);
    let store = open_on(&place, config, clock.clone()).unwrap();
    Fixture {
        place,
        clock,
        store,
    }
}

/// Empty storage of backend `b`: a temporary directory, or a new database and prefix.
fn new_place(b: &Backend) -> Place {
    match b {
        Backend::Sqlite => Place::Sqlite(tempfile::tempdir().unwrap()),
        Backend::Postgres { url, s3 } => {
            let (name, url, pool) = fresh_database(url);
            let s3 = S3Config {
                prefix: name,
                ..s3.clone()
            };
            let objects = bucket(&s3);
            Place::Postgres {
                url,
                pool,
                s3,
                objects,
            }
        }
    }
}

/// A store on `place` (as another process or a restart would open it).
fn open_on(
    place: &Place,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
) -> history_store::Result<Store> {
    match place {
        Place::Sqlite(dir) => {
            HistoryStore::open_with_clock(dir.path(), config, clock).map(Store::Sqlite)
        }
        Place::Postgres { pool, s3, .. } => {
            PgHistory::open_with_clock(pool.clone(), s3, config, clock).map(Store::Postgres)
        }
    }
}

/// A new database on the server at `url`: its name, its URL and a pool connected to it.
fn fresh_database(url: &str) -> (String, String, PgPool) {
    let url = pg_pool::testing::scratch_database(url, "history").unwrap();
    let name = url.rsplit_once('/').unwrap().1.to_string();
    let pool = PgPool::connect(&url, 8).unwrap();
    (name, url, pool)
}

/// A client of the bucket `s3` names, configured as the store configures its own.
fn bucket(s3: &S3Config) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&s3.endpoint)
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(s3.endpoint.starts_with("http://"))
            .build()
            .unwrap(),
    )
}

impl Fixture {
    /// The same data under a newly opened store (the old one is dropped first, as at a
    /// restart).
    fn reopened(self, config: StoreConfig) -> Fixture {
        let Fixture {
            place,
            clock,
            store,
        } = self;
        drop(store);
        let store = open_on(&place, config, clock.clone()).unwrap();
        Fixture {
            place,
            clock,
            store,
        }
    }
}

/// Every image the fixture's storage holds, as a path relative to the data directory (files
/// under `files/` and `tmp/`) or a key relative to the fixture's prefix, with its size.
fn stored(f: &Fixture) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = match &f.place {
        Place::Sqlite(_) => {
            let root = f.store.sqlite().data_dir();
            let mut files = files_under(&root.join("files"));
            files.extend(files_under(&root.join("tmp")));
            files
                .into_iter()
                .map(|p| {
                    let size = p.metadata().unwrap().len();
                    let relative = p.strip_prefix(root).unwrap();
                    let parts: Vec<_> = relative
                        .components()
                        .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                        .collect();
                    (parts.join("/"), size)
                })
                .collect()
        }
        Place::Postgres {
            pool, s3, objects, ..
        } => {
            let objects = objects.clone();
            let prefix = ObjectPath::from(s3.prefix.as_str());
            let listed = pool
                .block_on(async move {
                    objects
                        .list(Some(&prefix))
                        .collect::<Vec<object_store::Result<object_store::ObjectMeta>>>()
                        .await
                })
                .unwrap();
            listed
                .into_iter()
                .map(|meta| {
                    let meta = meta.unwrap();
                    let key = meta.location.to_string();
                    let relative = key
                        .strip_prefix(&format!("{}/", s3.prefix))
                        .unwrap_or_else(|| panic!("{key} is outside the fixture's prefix"))
                        .to_owned();
                    (relative, meta.size)
                })
                .collect()
        }
    };
    out.sort();
    out
}

/// The stored images' relative paths or keys (see [`stored`]).
fn stored_images(f: &Fixture) -> Vec<String> {
    stored(f).into_iter().map(|(name, _)| name).collect()
}

/// The stored images' total size.
fn stored_bytes(f: &Fixture) -> u64 {
    stored(f).into_iter().map(|(_, size)| size).sum()
}

/// Removes one stored image behind the store's back (`relative` as [`stored`] names it).
fn remove_stored(f: &Fixture, relative: &str) {
    match &f.place {
        Place::Sqlite(_) => {
            std::fs::remove_file(f.store.sqlite().data_dir().join(relative)).unwrap();
        }
        Place::Postgres {
            pool, s3, objects, ..
        } => {
            let objects = objects.clone();
            let key = ObjectPath::from(format!("{}/{relative}", s3.prefix));
            pool.block_on(async move { objects.delete(&key).await })
                .unwrap()
                .unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path))
        } else {
            out.push(path)
        }
    }
    out
}

// ---- inputs ---------------------------------------------------------------------------------

/// The `n`-th test photo (in name order, wrapping around): distinct real photos for small `n`.
fn photo(n: usize) -> Vec<u8> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(PHOTOS)
        .expect("fixtures/photos (cwd = crate dir)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    names.sort();
    std::fs::read(&names[n % names.len()]).unwrap()
}

/// The photo re-encoded as JPEG, as the detector's annotated output may be.
fn photo_jpeg(n: usize) -> Vec<u8> {
    let image = image::load_from_memory(&photo(n)).unwrap().to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image)
        .unwrap();
    out
}

fn entry(owner: i64, n: usize, category: Category) -> NewEntry {
    let (masked, unmasked) = match category {
        Category::NoFace => (0, 0),
        Category::AllMasked => (2, 0),
        Category::NoneMasked => (0, 3),
        _ => (1, 1),
    };
    NewEntry {
        owner: UserId(owner),
        original: photo(n),
        annotated: photo(n),
        result: serde_json::json!({"image": n, "faces": masked + unmasked}),
        faces: masked + unmasked,
        masked,
        unmasked,
        category,
        source: Source::File,
        file_name: Some(format!("maksssksksss{n}.png")),
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A real photo shrunk to 16 pixels, as PNG: quick to store many of.
fn tiny_png() -> Vec<u8> {
    let img = image::load_from_memory(&photo(1))
        .unwrap()
        .thumbnail(16, 16)
        .to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// File names a browser or an attacker may send.
fn hostile_file_names() -> Vec<String> {
    vec![
        "../../../../etc/passwd".into(),
        "..\\..\\windows\\system32\\config".into(),
        "/tmp/absolute.png".into(),
        "%2e%2e%2fescape.png".into(),
        "name\nwith\r\nnewlines.png".into(),
        "x\u{202e}gnp.exe".into(),
        "é".repeat(300),
    ]
}

/// Records one entry per hostile file name and checks each comes back as data, truncated.
fn record_hostile_file_names(store: &dyn HistoryBackend) -> usize {
    let names = hostile_file_names();
    for (i, name) in names.iter().enumerate() {
        let mut e = entry(1, i, Category::NoFace);
        e.file_name = Some(name.clone());
        let stored = store.record(e).unwrap();
        let expected: String = name
            .chars()
            .take(history_store::MAX_FILE_NAME_CHARS)
            .collect();
        assert_eq!(stored.file_name.as_deref(), Some(expected.as_str()));
        assert_eq!(
            store.get(UserId(1), &stored.id).unwrap().file_name,
            Some(expected)
        );
    }
    names.len()
}

/// Walks a listing page by page, passing the cursor through its string form as a URL would.
fn walk(
    store: &dyn HistoryBackend,
    owner: UserId,
    category: Option<Category>,
    limit: usize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.as_deref().map(|s| s.parse::<Cursor>().unwrap());
        let page = store.list(owner, category, cursor.as_ref(), limit).unwrap();
        assert!(page.entries.len() <= limit);
        out.extend(page.entries);
        match page.next {
            Some(c) => after = Some(c.to_string()),
            None => return out,
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---- behaviour of every backend -------------------------------------------------------------

on_every_backend!(
    record_stores_images_thumbnail_and_row_and_survives_reopen,
    small_images_are_not_upscaled_in_thumbnails,
    concurrent_records_from_several_threads_all_land,
    pagination_is_newest_first_and_complete_across_equal_timestamps,
    owners_cannot_see_read_or_delete_each_others_entries,
    hostile_file_names_are_stored_as_data_and_never_become_paths,
    deleting_removes_rows_and_files_and_is_idempotent,
    delete_user_handles_more_than_one_batch,
    retention_purges_only_old_entries_with_their_files,
    bad_inputs_are_refused_and_store_nothing,
    open_refuses_bad_config,
    usable_through_the_backend_trait_object,
    daily_counts_group_by_utc_day_and_category_per_owner_or_for_everyone,
    an_image_removed_behind_the_stores_back_is_a_missing_file,
);

fn record_stores_images_thumbnail_and_row_and_survives_reopen(b: &Backend) {
    let f = fixture(b);
    let store = &f.store;
    let original = photo(0);
    let annotated = photo_jpeg(0);
    let result = serde_json::json!({"faces": [{"label": "without_mask", "score": 0.91, "box": [1, 2, 3, 4]}]});
    let url = "https://example.com/a%20b.png?x=1".to_string();
    let entry = store
        .record(NewEntry {
            owner: UserId(42),
            original: original.clone(),
            annotated: annotated.clone(),
            result: result.clone(),
            faces: 1,
            masked: 0,
            unmasked: 1,
            category: Category::NoneMasked,
            source: Source::Url(url.clone()),
            file_name: None,
        })
        .unwrap();

    assert_eq!(entry.result, result);
    assert_eq!(entry.source, Source::Url(url));
    assert_eq!(entry.original.image_type, ImageType::Png);
    assert_eq!(entry.original.bytes, original.len() as u64);
    assert_eq!(entry.original.sha256, sha256(&original));
    assert_eq!(entry.annotated.image_type, ImageType::Jpeg);
    assert_eq!(entry.thumb.image_type, ImageType::Jpeg);
    assert_eq!(store.bytes_used(UserId(42)).unwrap(), entry.total_bytes());
    assert_eq!(store.get(UserId(42), &entry.id).unwrap(), entry);

    let got = store
        .read_image(UserId(42), &entry.id, Kind::Original)
        .unwrap();
    assert_eq!(got.bytes, original);
    assert_eq!(got.image_type.content_type(), "image/png");
    let got = store
        .read_image(UserId(42), &entry.id, Kind::Annotated)
        .unwrap();
    assert_eq!(got.bytes, annotated);
    assert_eq!(got.image_type, ImageType::Jpeg);

    let thumb = store
        .read_image(UserId(42), &entry.id, Kind::Thumb)
        .unwrap();
    assert_eq!(thumb.image_type.content_type(), "image/jpeg");
    assert_eq!(sha256(&thumb.bytes), entry.thumb.sha256);
    let decoded =
        image::load_from_memory_with_format(&thumb.bytes, image::ImageFormat::Jpeg).unwrap();
    // 512x366 fits into 320x320 keeping its aspect ratio.
    assert_eq!(decoded.width(), 320);
    assert!(
        (228..=229).contains(&decoded.height()),
        "{}",
        decoded.height()
    );

    let reopened = f.reopened(StoreConfig::default());
    assert_eq!(reopened.store.get(UserId(42), &entry.id).unwrap(), entry);
    assert_eq!(
        stored_images(&reopened).len(),
        3,
        "opening (and, for SQLite, its sweep) must keep committed files"
    );
    assert_eq!(stored_bytes(&reopened), entry.total_bytes());
}

fn small_images_are_not_upscaled_in_thumbnails(b: &Backend) {
    let config = StoreConfig {
        thumbnail_size: 600,
        ..StoreConfig::default()
    };
    let f = fixture_with(b, config, Arc::new(SystemClock));
    let e = f.store.record(entry(1, 1, Category::NoFace)).unwrap();
    let thumb = f.store.read_image(UserId(1), &e.id, Kind::Thumb).unwrap();
    let decoded = image::load_from_memory(&thumb.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (400, 156));
}

fn concurrent_records_from_several_threads_all_land(b: &Backend) {
    let f = fixture(b);
    let threads = 8;
    let per_thread = 5;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = f.store.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..per_thread {
                    let category = Category::ALL[(t + i) % 4];
                    let e = store
                        .record(entry((t % 2) as i64, (t * per_thread + i) % 20, category))
                        .unwrap();
                    // Readers run while other threads write.
                    assert_eq!(store.get(e.owner, &e.id).unwrap().id, e.id);
                    ids.push(e.id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        threads * per_thread
    );

    let mut listed = HashSet::new();
    for owner in [0, 1] {
        let counts = f.store.counts(UserId(owner)).unwrap();
        assert_eq!(counts.total(), (threads * per_thread / 2) as u64);
        let mut after: Option<Cursor> = None;
        loop {
            let page = f
                .store
                .list(UserId(owner), None, after.as_ref(), 7)
                .unwrap();
            listed.extend(page.entries.into_iter().map(|e| e.id));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
    }
    assert_eq!(listed, ids.into_iter().collect::<HashSet<_>>());
    assert_eq!(
        stored_images(&f).len(),
        threads * per_thread * 3,
        "no temp files left"
    );
}

fn pagination_is_newest_first_and_complete_across_equal_timestamps(b: &Backend) {
    let clock = Arc::new(ManualClock::new(1_000));
    let f = fixture_with(b, StoreConfig::default(), clock.clone());
    let store = &*f.store;
    let mut recorded = Vec::new();
    for i in 0..13 {
        recorded.push(store.record(entry(1, i, Category::ALL[i % 4])).unwrap());
    }
    clock.set_ms(3_000);
    for i in 13..18 {
        recorded.push(store.record(entry(1, i, Category::ALL[i % 4])).unwrap());
    }
    clock.set_ms(2_000); // the clock went back: order follows timestamps, not insertion
    for i in 18..22 {
        recorded.push(store.record(entry(1, i, Category::ALL[i % 4])).unwrap());
    }

    for limit in [1, 4, 5, 13, 100] {
        let listed = walk(store, UserId(1), None, limit);
        assert_eq!(listed.len(), recorded.len(), "limit {limit}");
        let keys: Vec<_> = listed
            .iter()
            .map(|e| (e.created_at_ms, e.id.clone()))
            .collect();
        let mut expected: Vec<_> = recorded
            .iter()
            .map(|e| (e.created_at_ms, e.id.clone()))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        assert_eq!(keys, expected, "limit {limit}");
    }
    assert_eq!(walk(store, UserId(1), None, 100)[0].created_at_ms, 3_000);

    for category in Category::ALL {
        let listed = walk(store, UserId(1), Some(category), 2);
        assert!(listed.iter().all(|e| e.category == category));
        let expected = recorded.iter().filter(|e| e.category == category).count();
        assert_eq!(listed.len(), expected);
        assert_eq!(
            store.counts(UserId(1)).unwrap().get(category),
            expected as u64
        );
    }

    let page = store.list(UserId(1), None, None, 22).unwrap();
    assert_eq!(
        page.next, None,
        "an exactly full last page has no next cursor"
    );
    let clamped = store.list(UserId(1), None, None, 0).unwrap();
    assert_eq!(clamped.entries.len(), 1);
    let config = StoreConfig {
        max_page_size: 3,
        ..StoreConfig::default()
    };
    let f = f.reopened(config);
    assert_eq!(
        f.store
            .list(UserId(1), None, None, 1000)
            .unwrap()
            .entries
            .len(),
        3
    );
}

fn owners_cannot_see_read_or_delete_each_others_entries(b: &Backend) {
    let f = fixture(b);
    let store = &f.store;
    let (alice, bob) = (UserId(1), UserId(2));
    let a = store.record(entry(1, 3, Category::AllMasked)).unwrap();
    let b = store.record(entry(2, 4, Category::NoneMasked)).unwrap();

    assert!(matches!(store.get(bob, &a.id), Err(Error::NotFound)));
    for kind in Kind::ALL {
        assert!(matches!(
            store.read_image(bob, &a.id, kind),
            Err(Error::NotFound)
        ));
    }
    // Someone else's id and a made-up one are indistinguishable.
    let made_up = "0123456789abcdef0123456789abcdef".parse().unwrap();
    assert!(matches!(store.get(bob, &made_up), Err(Error::NotFound)));
    for kind in Kind::ALL {
        assert!(matches!(
            store.read_image(bob, &made_up, kind),
            Err(Error::NotFound)
        ));
    }

    assert!(!store.delete(bob, &a.id).unwrap());
    assert_eq!(store.delete_user(bob).unwrap(), 1);
    assert_eq!(store.get(alice, &a.id).unwrap(), a);
    assert_eq!(store.list(bob, None, None, 10).unwrap().entries, vec![]);
    assert_eq!(store.counts(bob).unwrap().total(), 0);
    assert_eq!(store.bytes_used(bob).unwrap(), 0);
    assert_eq!(
        store.list(alice, None, None, 10).unwrap().entries,
        vec![a.clone()]
    );
    assert!(matches!(store.get(alice, &b.id), Err(Error::NotFound)));
    assert_eq!(stored_images(&f).len(), 3);
}

fn hostile_file_names_are_stored_as_data_and_never_become_paths(b: &Backend) {
    let f = fixture(b);
    let n = record_hostile_file_names(&*f.store);
    let images = stored_images(&f);
    assert_eq!(images.len(), n * 3);
    for image in images {
        let parts: Vec<&str> = image.split('/').collect();
        assert_eq!(parts.len(), 3, "{image:?}");
        assert_eq!(parts[0], "files", "{image:?}");
        assert!(
            parts[1..].iter().all(|part| part
                .chars()
                .all(|c| c.is_ascii_hexdigit() || "-.".contains(c) || c.is_ascii_lowercase())),
            "{image:?}"
        );
    }
    // Ids from a URL are parsed before they reach the store.
    assert!(matches!(
        "../files".parse::<history_store::EntryId>(),
        Err(Error::InvalidEntryId { .. })
    ));
}

fn deleting_removes_rows_and_files_and_is_idempotent(b: &Backend) {
    let f = fixture(b);
    let store = &f.store;
    let owner = UserId(5);
    let entries: Vec<_> = (0..4)
        .map(|i| store.record(entry(5, i, Category::SomeMasked)).unwrap())
        .collect();
    let other = store.record(entry(6, 9, Category::NoFace)).unwrap();

    assert_eq!(
        stored_bytes(&f),
        store.bytes_used(owner).unwrap() + other.total_bytes()
    );

    let first = &entries[0];
    let images_of = |id: &str| {
        stored_images(&f)
            .into_iter()
            .filter(|name| name.contains(id))
            .count()
    };
    assert_eq!(images_of(first.id.as_str()), 3);
    assert!(store.delete(owner, &first.id).unwrap());
    assert_eq!(images_of(first.id.as_str()), 0);
    assert!(!store.delete(owner, &first.id).unwrap());
    assert!(matches!(store.get(owner, &first.id), Err(Error::NotFound)));
    assert!(matches!(
        store.read_image(owner, &first.id, Kind::Original),
        Err(Error::NotFound)
    ));
    assert_eq!(store.counts(owner).unwrap().some_masked, 3);

    assert_eq!(store.delete_user(owner).unwrap(), 3);
    assert_eq!(store.delete_user(owner).unwrap(), 0);
    assert_eq!(store.bytes_used(owner).unwrap(), 0);
    assert_eq!(store.counts(owner).unwrap().total(), 0);
    let left = stored_images(&f);
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|p| p.contains(other.id.as_str())));
    assert_eq!(stored_bytes(&f), other.total_bytes());
}

fn delete_user_handles_more_than_one_batch(b: &Backend) {
    let f = fixture(b);
    // Small images keep this fast; more than the internal batch of 256 rows.
    let tiny = tiny_png();
    for _ in 0..300 {
        let mut e = entry(3, 0, Category::NoFace);
        e.original = tiny.clone();
        e.annotated = tiny.clone();
        f.store.record(e).unwrap();
    }
    let kept = f.store.record(entry(4, 1, Category::NoFace)).unwrap();
    assert_eq!(f.store.delete_user(UserId(3)).unwrap(), 300);
    assert_eq!(f.store.counts(UserId(3)).unwrap().total(), 0);
    let left = stored_images(&f);
    assert_eq!(left.len(), 3, "only the other owner's images are left");
    assert!(left.iter().all(|p| p.contains(kept.id.as_str())));
}

fn retention_purges_only_old_entries_with_their_files(b: &Backend) {
    let clock = Arc::new(ManualClock::new(0));
    let f = fixture_with(b, StoreConfig::default(), clock.clone());
    let store = &f.store;
    let fifteen_days = Duration::from_secs(15 * 24 * 3600);
    let old_a = store.record(entry(1, 0, Category::NoFace)).unwrap();
    clock.set_ms(10 * DAY_MS);
    let old_b = store.record(entry(2, 1, Category::NoFace)).unwrap();
    clock.set_ms(20 * DAY_MS);
    let young = store.record(entry(1, 2, Category::NoFace)).unwrap();
    clock.set_ms(30 * DAY_MS);

    assert_eq!(
        store
            .purge_older_than(Duration::from_secs(25 * 24 * 3600))
            .unwrap(),
        1
    );
    assert!(matches!(
        store.get(UserId(1), &old_a.id),
        Err(Error::NotFound)
    ));
    assert_eq!(store.purge_older_than(fifteen_days).unwrap(), 1);
    assert!(matches!(
        store.get(UserId(2), &old_b.id),
        Err(Error::NotFound)
    ));
    assert_eq!(store.purge_older_than(fifteen_days).unwrap(), 0);
    assert_eq!(store.get(UserId(1), &young.id).unwrap(), young);
    let left = stored_images(&f);
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|p| p.contains(young.id.as_str())));
}

fn bad_inputs_are_refused_and_store_nothing(b: &Backend) {
    let config = StoreConfig {
        max_image_bytes: 400_000,
        ..StoreConfig::default()
    };
    let f = fixture_with(b, config, Arc::new(SystemClock));
    let store = &f.store;

    let mut e = entry(1, 0, Category::NoFace);
    e.original = b"<html>not an image</html>".to_vec();
    assert!(matches!(
        store.record(e),
        Err(Error::UnsupportedImage {
            kind: Kind::Original,
            ..
        })
    ));

    let mut e = entry(1, 0, Category::NoFace);
    // A real photo, small enough to pass the size limit, in a format the annotated image may not use.
    let img = image::load_from_memory(&photo(0))
        .unwrap()
        .thumbnail(200, 200);
    let mut bmp = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bmp, image::ImageFormat::Bmp).unwrap();
    e.annotated = bmp.into_inner();
    assert!(matches!(
        store.record(e),
        Err(Error::UnsupportedImage {
            kind: Kind::Annotated,
            ..
        })
    ));

    let mut e = entry(1, 0, Category::NoFace);
    let mut png = photo(0);
    png.truncate(png.len() / 2);
    e.annotated = png;
    assert!(matches!(
        store.record(e),
        Err(Error::Decode {
            kind: Kind::Annotated,
            ..
        })
    ));

    let mut e = entry(1, 0, Category::NoFace);
    e.original = vec![0; 400_001];
    assert!(matches!(
        store.record(e),
        Err(Error::ImageTooLarge {
            size: 400_001,
            limit: 400_000,
            ..
        })
    ));

    let mut e = entry(1, 0, Category::NoFace);
    e.source = Source::Url(format!(
        "https://x/{}",
        "a".repeat(history_store::MAX_URL_BYTES)
    ));
    assert!(matches!(
        store.record(e),
        Err(Error::InvalidInput {
            field: "source url",
            ..
        })
    ));

    assert_eq!(store.counts(UserId(1)).unwrap().total(), 0);
    assert!(stored_images(&f).is_empty());
}

fn open_refuses_bad_config(b: &Backend) {
    let place = new_place(b);
    let bad = StoreConfig {
        thumbnail_quality: 0,
        ..StoreConfig::default()
    };
    assert!(matches!(
        open_on(&place, bad, Arc::new(SystemClock)),
        Err(Error::InvalidConfig {
            field: "thumbnail_quality",
            ..
        })
    ));
    let bad = StoreConfig {
        max_page_size: 0,
        ..StoreConfig::default()
    };
    assert!(matches!(
        open_on(&place, bad, Arc::new(SystemClock)),
        Err(Error::InvalidConfig {
            field: "max_page_size",
            ..
        })
    ));
    open_on(&place, StoreConfig::default(), Arc::new(SystemClock)).unwrap();
}

fn usable_through_the_backend_trait_object(b: &Backend) {
    let f = fixture(b);
    let backend: Arc<dyn HistoryBackend> = f.store.as_backend();
    backend.ping().unwrap();
    let e = backend.record(entry(9, 5, Category::AllMasked)).unwrap();
    assert_eq!(
        backend.get(UserId(9), &e.id).unwrap().category,
        Category::AllMasked
    );
    assert_eq!(
        backend
            .read_image(UserId(9), &e.id, Kind::Thumb)
            .unwrap()
            .image_type,
        ImageType::Jpeg
    );
    assert_eq!(backend.bytes_used(UserId(9)).unwrap(), e.total_bytes());
    assert!(backend.delete(UserId(9), &e.id).unwrap());
    assert_eq!(backend.counts(UserId(9)).unwrap().total(), 0);
}

fn daily_counts_group_by_utc_day_and_category_per_owner_or_for_everyone(b: &Backend) {
    let clock = Arc::new(ManualClock::new(3 * DAY_MS));
    let f = fixture_with(b, StoreConfig::default(), clock.clone());
    let store = &f.store;
    store.record(entry(1, 0, Category::AllMasked)).unwrap();
    store.record(entry(1, 1, Category::AllMasked)).unwrap();
    store.record(entry(2, 2, Category::NoFace)).unwrap();
    clock.set_ms(4 * DAY_MS + 1000);
    store.record(entry(1, 3, Category::SomeMasked)).unwrap();
    clock.set_ms(9 * DAY_MS);
    store.record(entry(1, 4, Category::NoFace)).unwrap();

    let mine = store
        .daily_counts(Some(UserId(1)), 3 * DAY_MS, 5 * DAY_MS)
        .unwrap();
    assert_eq!(
        mine,
        vec![
            DayCount {
                day: 3,
                category: Category::AllMasked,
                count: 2
            },
            DayCount {
                day: 4,
                category: Category::SomeMasked,
                count: 1
            },
        ]
    );
    let everyone = store.daily_counts(None, 0, 10 * DAY_MS).unwrap();
    let total: u64 = everyone.iter().map(|d| d.count).sum();
    assert_eq!(total, 5);
    assert!(everyone.contains(&DayCount {
        day: 3,
        category: Category::NoFace,
        count: 1
    }));
    assert!(everyone.windows(2).all(|w| w[0].day <= w[1].day));
    // The range's end is exclusive.
    assert!(store.daily_counts(None, 0, 3 * DAY_MS).unwrap().is_empty());
}

fn an_image_removed_behind_the_stores_back_is_a_missing_file(b: &Backend) {
    let f = fixture(b);
    let e = f.store.record(entry(7, 2, Category::NoFace)).unwrap();
    let annotated = stored_images(&f)
        .into_iter()
        .find(|name| name.contains(&format!("{}-annotated", e.id)))
        .unwrap();
    remove_stored(&f, &annotated);
    match f.store.read_image(UserId(7), &e.id, Kind::Annotated) {
        Err(Error::MissingFile { id, kind, path }) => {
            assert_eq!(id, e.id.as_str());
            assert_eq!(kind, Kind::Annotated);
            assert!(
                path.to_string_lossy().ends_with(&annotated),
                "{path:?} names {annotated}"
            );
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // The other images and the row are untouched; deleting the entry still works.
    assert_eq!(
        f.store
            .read_image(UserId(7), &e.id, Kind::Original)
            .unwrap()
            .bytes,
        photo(2)
    );
    assert!(f.store.delete(UserId(7), &e.id).unwrap());
    assert!(stored_images(&f).is_empty());
}

// ---- SQLite only: files on disk, the database file ------------------------------------------

mod sqlite_only {
    use super::*;

    #[test]
    fn image_path_names_the_file_inside_the_data_dir_for_its_owner_only() {
        let f = fixture(&Backend::Sqlite);
        let store = f.store.sqlite();
        let annotated = photo_jpeg(0);
        let mut new = entry(42, 0, Category::NoneMasked);
        new.annotated = annotated.clone();
        let e = store.record(new).unwrap();

        let (path, ty) = store
            .image_path(UserId(42), &e.id, Kind::Annotated)
            .unwrap();
        assert_eq!(ty, ImageType::Jpeg);
        assert!(path.starts_with(store.data_dir()));
        assert_eq!(std::fs::read(&path).unwrap(), annotated);

        for kind in Kind::ALL {
            assert!(matches!(
                store.image_path(UserId(2), &e.id, kind),
                Err(Error::NotFound)
            ));
        }

        let paths: Vec<_> = Kind::ALL
            .iter()
            .map(|k| store.image_path(UserId(42), &e.id, *k).unwrap().0)
            .collect();
        assert!(paths.iter().all(|p| p.exists()));
        assert!(store.delete(UserId(42), &e.id).unwrap());
        assert!(paths.iter().all(|p| !p.exists()));
    }

    #[test]
    fn hostile_file_names_write_nothing_outside_the_data_dir() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("data");
        let store = HistoryStore::open(&data, StoreConfig::default()).unwrap();
        let n = record_hostile_file_names(&store);
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            1,
            "nothing written beside the data dir"
        );
        let files = files_under(&store.data_dir().join("files"));
        assert_eq!(files.len(), n * 3);
        assert!(files_under(&store.data_dir().join("tmp")).is_empty());
        for f in files {
            let canonical = f.canonicalize().unwrap();
            assert!(
                canonical.starts_with(store.data_dir().join("files")),
                "{canonical:?}"
            );
        }
    }

    #[test]
    fn database_is_in_wal_mode_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(HistoryStore::open(dir.path(), StoreConfig::default()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join("history.sqlite3")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            HistoryStore::open(dir.path(), StoreConfig::default()),
            Err(Error::SchemaTooNew {
                found: 99,
                supported: 1
            })
        ));
    }
}

// ---- PostgreSQL only: the object sweep, several instances, its schema, an unreachable S3 ----

mod postgres_only {
    use super::*;

    /// A fixture on PostgreSQL, or `None` (after printing SKIPPED) without the servers.
    fn pg_fixture(clock: Arc<dyn Clock>) -> Option<Fixture> {
        let b = Backend::postgres()?;
        Some(fixture_with(&b, StoreConfig::default(), clock))
    }

    #[test]
    fn sweep_removes_objects_without_a_row_after_the_grace_period() {
        // The sweep compares the objects' times (the server's wall clock) with the store's
        // clock, so this one reads the real time and is moved past it.
        let clock = Arc::new(ManualClock::new(now_ms()));
        let Some(f) = pg_fixture(clock.clone()) else {
            return;
        };
        let pg = f.store.postgres();
        let e = pg.record(entry(1, 0, Category::AllMasked)).unwrap();
        let orphan_id = format!("ab{}", &"0123456789abcdef".repeat(2)[..30]);
        let orphan = format!("ab/{orphan_id}-original.png");
        let orphan_bytes = photo(1);
        pg.put_raw(&orphan, orphan_bytes.clone()).unwrap();
        // Keys the store would never generate are not its to remove.
        pg.put_raw("ab/notes.txt", b"kept".to_vec()).unwrap();
        pg.put_raw("zz/not-an-id-original.png", b"kept".to_vec())
            .unwrap();
        assert_eq!(stored_images(&f).len(), 6);

        // A fresh orphan may be an upload in flight on another instance.
        let report = pg.sweep(Duration::from_secs(3600)).unwrap();
        assert_eq!(report.removed_files, 0);
        assert_eq!(stored_images(&f).len(), 6);

        clock.set_ms(now_ms() + 60_000);
        let report = pg.sweep(Duration::from_secs(10)).unwrap();
        assert_eq!(report.removed_files, 1);
        assert_eq!(report.removed_bytes, orphan_bytes.len() as u64);
        let left = stored_images(&f);
        assert_eq!(left.len(), 5, "{left:?}");
        assert!(!left.contains(&format!("files/{orphan}")));
        assert_eq!(
            left.iter()
                .filter(|name| name.contains(e.id.as_str()))
                .count(),
            3,
            "a recorded entry's objects are kept: {left:?}"
        );
        assert!(left.contains(&"files/ab/notes.txt".to_owned()));
        assert!(left.contains(&"files/zz/not-an-id-original.png".to_owned()));
        assert_eq!(pg.get(UserId(1), &e.id).unwrap(), e);
        for kind in Kind::ALL {
            pg.read_image(UserId(1), &e.id, kind).unwrap();
        }

        // Nothing more to do the second time.
        assert_eq!(pg.sweep(Duration::ZERO).unwrap().removed_files, 0);
    }

    #[test]
    fn sweep_stays_inside_its_own_prefix() {
        let clock = Arc::new(ManualClock::new(now_ms()));
        let Some(mine) = pg_fixture(clock.clone()) else {
            return;
        };
        let Some(theirs) = pg_fixture(clock.clone()) else {
            return;
        };
        // An entry of the other deployment is a row-less object as far as `mine` can tell.
        let e = theirs.store.record(entry(1, 0, Category::NoFace)).unwrap();
        clock.set_ms(now_ms() + 60_000);
        let report = mine.store.postgres().sweep(Duration::ZERO).unwrap();
        assert_eq!(report.removed_files, 0);
        assert_eq!(stored_images(&theirs).len(), 3);
        assert_eq!(
            theirs
                .store
                .read_image(UserId(1), &e.id, Kind::Original)
                .unwrap()
                .bytes,
            photo(0)
        );
    }

    #[test]
    fn instances_on_one_database_and_prefix_share_entries_and_deletions() {
        let Some(f) = pg_fixture(Arc::new(SystemClock)) else {
            return;
        };
        let Place::Postgres { url, s3, .. } = &f.place else {
            unreachable!()
        };
        let other =
            PgHistory::open(PgPool::connect(url, 4).unwrap(), s3, StoreConfig::default()).unwrap();
        let one = f.store.postgres();

        let a = one.record(entry(1, 0, Category::AllMasked)).unwrap();
        let b = other.record(entry(1, 1, Category::NoFace)).unwrap();
        for store in [one, &other] {
            assert_eq!(store.get(UserId(1), &a.id).unwrap(), a);
            assert_eq!(store.get(UserId(1), &b.id).unwrap(), b);
            assert_eq!(store.counts(UserId(1)).unwrap().total(), 2);
            assert_eq!(
                store.bytes_used(UserId(1)).unwrap(),
                a.total_bytes() + b.total_bytes()
            );
            assert_eq!(
                store
                    .read_image(UserId(1), &a.id, Kind::Original)
                    .unwrap()
                    .bytes,
                photo(0)
            );
            assert_eq!(
                store
                    .read_image(UserId(1), &b.id, Kind::Original)
                    .unwrap()
                    .bytes,
                photo(1)
            );
        }

        assert!(other.delete(UserId(1), &a.id).unwrap());
        assert!(matches!(one.get(UserId(1), &a.id), Err(Error::NotFound)));
        assert!(matches!(
            one.read_image(UserId(1), &a.id, Kind::Thumb),
            Err(Error::NotFound)
        ));
        assert!(!one.delete(UserId(1), &a.id).unwrap());
        assert!(one.delete(UserId(1), &b.id).unwrap());
        assert!(matches!(other.get(UserId(1), &b.id), Err(Error::NotFound)));
        assert_eq!(
            other.list(UserId(1), None, None, 10).unwrap().entries,
            vec![]
        );
        assert!(stored_images(&f).is_empty());
    }

    #[test]
    fn instances_recording_and_deleting_at_once_keep_rows_and_objects_in_step() {
        let Some(f) = pg_fixture(Arc::new(SystemClock)) else {
            return;
        };
        let Place::Postgres { url, s3, .. } = &f.place else {
            unreachable!()
        };
        let instances: Vec<PgHistory> = (0..3)
            .map(|_| {
                PgHistory::open(PgPool::connect(url, 4).unwrap(), s3, StoreConfig::default())
                    .unwrap()
            })
            .collect();
        let tiny = tiny_png();
        let handles: Vec<_> = instances
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let store = store.clone();
                let tiny = tiny.clone();
                std::thread::spawn(move || {
                    let mut deleted = 0;
                    for n in 0..10 {
                        let mut e = entry(1, 0, Category::NoFace);
                        e.original = tiny.clone();
                        e.annotated = tiny.clone();
                        let e = store.record(e).unwrap();
                        // `false` when the other instance's `delete_user` got there first.
                        if (n + i) % 2 == 0 && store.delete(UserId(1), &e.id).unwrap() {
                            deleted += 1;
                        }
                    }
                    deleted
                })
            })
            .collect();
        // Meanwhile another instance deletes the user's whole history, again and again.
        let mut deleted = 0;
        for _ in 0..5 {
            deleted += f.store.delete_user(UserId(1)).unwrap();
        }
        for h in handles {
            deleted += h.join().unwrap();
        }
        deleted += f.store.delete_user(UserId(1)).unwrap();
        assert_eq!(deleted, 30, "every entry is deleted exactly once");
        assert_eq!(f.store.counts(UserId(1)).unwrap().total(), 0);
        assert!(stored_images(&f).is_empty(), "{:?}", stored_images(&f));
    }

    /// Every message of an error and its sources, one per line.
    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out.push('\n');
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }

    #[test]
    fn a_row_that_fails_to_commit_leaves_no_objects() {
        let Some(f) = pg_fixture(Arc::new(SystemClock)) else {
            return;
        };
        let Place::Postgres { pool, .. } = &f.place else {
            unreachable!()
        };
        let kept = f.store.record(entry(1, 0, Category::NoFace)).unwrap();
        // Every new row now violates a constraint; reads still work.
        pool.run("refuse inserts", |client| async move {
            client
                .batch_execute("ALTER TABLE entries ADD CONSTRAINT refuse CHECK (false) NOT VALID")
                .await?;
            Ok::<_, pg_pool::Error>(())
        })
        .unwrap();
        let failed = f.store.record(entry(1, 1, Category::AllMasked));
        assert!(matches!(failed, Err(Error::Postgres(_))), "{failed:?}");
        assert_eq!(f.store.counts(UserId(1)).unwrap().total(), 1);
        let left = stored_images(&f);
        assert_eq!(
            left.len(),
            3,
            "the failed entry's objects are removed: {left:?}"
        );
        assert!(left.iter().all(|p| p.contains(kept.id.as_str())));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let Some(f) = pg_fixture(Arc::new(SystemClock)) else {
            return;
        };
        let Place::Postgres { pool, s3, .. } = &f.place else {
            unreachable!()
        };
        pool.run("bump the schema", |client| async move {
            client
                .execute(
                    "UPDATE schema_versions SET version = version + 1 WHERE component = 'history'",
                    &[],
                )
                .await?;
            Ok::<_, pg_pool::Error>(())
        })
        .unwrap();
        let opened = PgHistory::open(pool.clone(), s3, StoreConfig::default());
        assert!(
            matches!(
                opened,
                Err(Error::SchemaTooNew {
                    found: 2,
                    supported: 1
                })
            ),
            "{opened:?}"
        );
    }

    #[test]
    fn an_unreachable_or_misconfigured_object_store_fails_open_quickly() {
        let Some(Backend::Postgres { url, s3 }) = Backend::postgres() else {
            return;
        };
        let (_, _, pool) = fresh_database(&url);
        // Nothing listens on port 1 of the loopback interface.
        let unreachable = S3Config {
            endpoint: "http://127.0.0.1:1".into(),
            prefix: "unreachable".into(),
            ..s3.clone()
        };
        let started = Instant::now();
        let opened = PgHistory::open(pool.clone(), &unreachable, StoreConfig::default());
        let took = started.elapsed();
        eprintln!("open with an unreachable S3 endpoint failed after {took:?}: {opened:?}");
        match opened {
            Err(e @ Error::ObjectStore { op: "list", .. }) => {
                assert!(e.to_string().contains("object store"), "{e}");
                // The cause is the refused connection, not (say) a client that refuses http.
                let chain = error_chain(&e);
                assert!(chain.contains("127.0.0.1:1"), "{chain}");
                assert!(chain.contains("Connection refused"), "{chain}");
            }
            other => panic!("expected an object store error, got {other:?}"),
        }
        assert!(took < Duration::from_secs(20), "open took {took:?}");

        let not_http = S3Config {
            endpoint: "ftp://127.0.0.1:1".into(),
            ..s3.clone()
        };
        assert!(matches!(
            PgHistory::open(pool.clone(), &not_http, StoreConfig::default()),
            Err(Error::InvalidConfig {
                field: "s3_endpoint",
                ..
            })
        ));
        let no_bucket = S3Config {
            bucket: String::new(),
            ..s3.clone()
        };
        assert!(matches!(
            PgHistory::open(pool.clone(), &no_bucket, StoreConfig::default()),
            Err(Error::InvalidConfig {
                field: "s3_bucket",
                ..
            })
        ));
        let missing_bucket = S3Config {
            bucket: "no-such-bucket".into(),
            ..s3.clone()
        };
        assert!(matches!(
            PgHistory::open(pool.clone(), &missing_bucket, StoreConfig::default()),
            Err(Error::ObjectStore { .. })
        ));
        let wrong_secret = S3Config {
            secret_access_key: "wrong".into(),
            ..s3
        };
        assert!(matches!(
            PgHistory::open(pool, &wrong_secret, StoreConfig::default()),
            Err(Error::ObjectStore { .. })
        ));
    }
}

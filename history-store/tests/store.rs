//! End-to-end tests of the SQLite + files store on real photos, real files and real threads.

// Helpers outside `#[test]` functions panic on purpose: a failed fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use history_store::{
    Category, Cursor, DayCount, Error, HistoryBackend, HistoryStore, ImageType, Kind, ManualClock,
    NewEntry, Source, StoreConfig, UserId,
};
use sha2::{Digest, Sha256};

/// The repository's test photos (see `fixtures/README.md`).
const PHOTOS: &str = "../fixtures/photos";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

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

fn image_files(store: &HistoryStore) -> Vec<PathBuf> {
    let mut files = files_under(&store.data_dir().join("files"));
    files.extend(files_under(&store.data_dir().join("tmp")));
    files
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn record_stores_images_thumbnail_and_row_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
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

    let got = store
        .read_image(UserId(42), &entry.id, Kind::Original)
        .unwrap();
    assert_eq!(got.bytes, original);
    assert_eq!(got.image_type.content_type(), "image/png");
    assert_eq!(
        store
            .read_image(UserId(42), &entry.id, Kind::Annotated)
            .unwrap()
            .bytes,
        annotated
    );

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

    let (path, ty) = store
        .image_path(UserId(42), &entry.id, Kind::Annotated)
        .unwrap();
    assert_eq!(ty, ImageType::Jpeg);
    assert!(path.starts_with(store.data_dir()));
    assert_eq!(std::fs::read(&path).unwrap(), annotated);

    drop(store);
    let reopened = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(reopened.get(UserId(42), &entry.id).unwrap(), entry);
    assert_eq!(
        image_files(&reopened).len(),
        3,
        "the sweep must keep committed files"
    );
}

#[test]
fn small_images_are_not_upscaled_in_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        thumbnail_size: 600,
        ..StoreConfig::default()
    };
    let store = HistoryStore::open(dir.path(), config).unwrap();
    let e = store.record(entry(1, 1, Category::NoFace)).unwrap();
    let thumb = store.read_image(UserId(1), &e.id, Kind::Thumb).unwrap();
    let decoded = image::load_from_memory(&thumb.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (400, 156));
}

#[test]
fn concurrent_records_from_several_threads_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    let threads = 8;
    let per_thread = 5;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
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
        let counts = store.counts(UserId(owner)).unwrap();
        assert_eq!(counts.total(), (threads * per_thread / 2) as u64);
        let mut after: Option<Cursor> = None;
        loop {
            let page = store.list(UserId(owner), None, after.as_ref(), 7).unwrap();
            listed.extend(page.entries.into_iter().map(|e| e.id));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
    }
    assert_eq!(listed, ids.into_iter().collect::<HashSet<_>>());
    assert_eq!(
        image_files(&store).len(),
        threads * per_thread * 3,
        "no temp files left"
    );
}

/// Walks a listing page by page, passing the cursor through its string form as a URL would.
fn walk(
    store: &HistoryStore,
    owner: UserId,
    category: Option<Category>,
    limit: usize,
) -> Vec<history_store::Entry> {
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

#[test]
fn pagination_is_newest_first_and_complete_across_equal_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store =
        HistoryStore::open_with_clock(dir.path(), StoreConfig::default(), clock.clone()).unwrap();
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
        let listed = walk(&store, UserId(1), None, limit);
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
    assert_eq!(walk(&store, UserId(1), None, 100)[0].created_at_ms, 3_000);

    for category in Category::ALL {
        let listed = walk(&store, UserId(1), Some(category), 2);
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
    drop(store);
    let store = HistoryStore::open_with_clock(dir.path(), config, clock).unwrap();
    assert_eq!(
        store
            .list(UserId(1), None, None, 1000)
            .unwrap()
            .entries
            .len(),
        3
    );
}

#[test]
fn owners_cannot_see_read_or_delete_each_others_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    let (alice, bob) = (UserId(1), UserId(2));
    let a = store.record(entry(1, 3, Category::AllMasked)).unwrap();
    let b = store.record(entry(2, 4, Category::NoneMasked)).unwrap();

    assert!(matches!(store.get(bob, &a.id), Err(Error::NotFound)));
    for kind in Kind::ALL {
        assert!(matches!(
            store.read_image(bob, &a.id, kind),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            store.image_path(bob, &a.id, kind),
            Err(Error::NotFound)
        ));
    }
    // Someone else's id and a made-up one are indistinguishable.
    let made_up = "0123456789abcdef0123456789abcdef".parse().unwrap();
    assert!(matches!(store.get(bob, &made_up), Err(Error::NotFound)));

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
    assert_eq!(image_files(&store).len(), 3);
}

#[test]
fn hostile_file_names_are_stored_as_data_and_never_become_paths() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let store = HistoryStore::open(&data, StoreConfig::default()).unwrap();
    let long = "é".repeat(300);
    let names = [
        "../../../../etc/passwd",
        "..\\..\\windows\\system32\\config",
        "/tmp/absolute.png",
        "%2e%2e%2fescape.png",
        "name\nwith\r\nnewlines.png",
        "x\u{202e}gnp.exe",
        long.as_str(),
    ];
    for (i, name) in names.iter().enumerate() {
        let mut e = entry(1, i, Category::NoFace);
        e.file_name = Some(name.to_string());
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
    assert_eq!(
        std::fs::read_dir(parent.path()).unwrap().count(),
        1,
        "nothing written beside the data dir"
    );
    let files = image_files(&store);
    assert_eq!(files.len(), names.len() * 3);
    for f in files {
        let canonical = f.canonicalize().unwrap();
        assert!(
            canonical.starts_with(store.data_dir().join("files")),
            "{canonical:?}"
        );
        let file_name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            file_name
                .chars()
                .all(|c| c.is_ascii_hexdigit() || "-.".contains(c) || c.is_ascii_lowercase())
        );
    }
    // Ids from a URL are parsed before they reach the store.
    assert!(matches!(
        "../files".parse::<history_store::EntryId>(),
        Err(Error::InvalidEntryId { .. })
    ));
}

#[test]
fn deleting_removes_rows_and_files_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    let owner = UserId(5);
    let entries: Vec<_> = (0..4)
        .map(|i| store.record(entry(5, i, Category::SomeMasked)).unwrap())
        .collect();
    let other = store.record(entry(6, 9, Category::NoFace)).unwrap();

    let on_disk: u64 = image_files(&store)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert_eq!(
        on_disk,
        store.bytes_used(owner).unwrap() + other.total_bytes()
    );

    let first = &entries[0];
    let paths: Vec<_> = Kind::ALL
        .iter()
        .map(|k| store.image_path(owner, &first.id, *k).unwrap().0)
        .collect();
    assert!(paths.iter().all(|p| p.exists()));
    assert!(store.delete(owner, &first.id).unwrap());
    assert!(paths.iter().all(|p| !p.exists()));
    assert!(!store.delete(owner, &first.id).unwrap());
    assert!(matches!(store.get(owner, &first.id), Err(Error::NotFound)));
    assert_eq!(store.counts(owner).unwrap().some_masked, 3);

    assert_eq!(store.delete_user(owner).unwrap(), 3);
    assert_eq!(store.delete_user(owner).unwrap(), 0);
    assert_eq!(store.bytes_used(owner).unwrap(), 0);
    assert_eq!(store.counts(owner).unwrap().total(), 0);
    let left = image_files(&store);
    assert_eq!(left.len(), 3);
    assert!(
        left.iter()
            .all(|p| p.to_string_lossy().contains(other.id.as_str()))
    );
}

#[test]
fn delete_user_handles_more_than_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    // Small images keep this fast; more than the internal batch of 256 rows.
    let tiny = {
        let img = image::load_from_memory(&photo(1))
            .unwrap()
            .thumbnail(16, 16)
            .to_rgb8();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    for _ in 0..300 {
        let mut e = entry(3, 0, Category::NoFace);
        e.original = tiny.clone();
        e.annotated = tiny.clone();
        store.record(e).unwrap();
    }
    assert_eq!(store.delete_user(UserId(3)).unwrap(), 300);
    assert!(image_files(&store).is_empty());
}

#[test]
fn retention_purges_only_old_entries_with_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let store =
        HistoryStore::open_with_clock(dir.path(), StoreConfig::default(), clock.clone()).unwrap();
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
    assert_eq!(image_files(&store).len(), 3);
}

#[test]
fn bad_inputs_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_image_bytes: 400_000,
        ..StoreConfig::default()
    };
    let store = HistoryStore::open(dir.path(), config).unwrap();

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
    assert!(image_files(&store).is_empty());
}

#[test]
fn open_refuses_bad_config_and_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let bad = StoreConfig {
        thumbnail_quality: 0,
        ..StoreConfig::default()
    };
    assert!(matches!(
        HistoryStore::open(dir.path(), bad),
        Err(Error::InvalidConfig {
            field: "thumbnail_quality",
            ..
        })
    ));
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

#[test]
fn usable_through_the_backend_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn HistoryBackend> =
        Arc::new(HistoryStore::open(dir.path(), StoreConfig::default()).unwrap());
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

#[test]
fn daily_counts_group_by_utc_day_and_category_per_owner_or_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(3 * DAY_MS));
    let store =
        HistoryStore::open_with_clock(dir.path(), StoreConfig::default(), clock.clone()).unwrap();
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

//! Failure injection and crash simulation for `record` and `delete`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;

const PHOTO: &str = "../fixtures/photos/maksssksksss0.png";
const CRASH_DIR_ENV: &str = "HISTORY_STORE_CRASH_DIR";
const CRASH_STEP_ENV: &str = "HISTORY_STORE_CRASH_STEP";

const RECORD_STEPS: [Step; 6] = [
    Step::TempFilesWritten,
    Step::Renamed(Kind::Original),
    Step::Renamed(Kind::Annotated),
    Step::Renamed(Kind::Thumb),
    Step::FilesSynced,
    Step::RowInserted,
];

fn all_steps() -> Vec<Step> {
    let mut steps = RECORD_STEPS.to_vec();
    steps.push(Step::Committed);
    steps.push(Step::DeleteCommitted);
    steps
}

fn new_entry(owner: i64) -> NewEntry {
    let photo = std::fs::read(PHOTO).expect("test photo (run from the crate directory)");
    NewEntry {
        owner: UserId(owner),
        original: photo.clone(),
        annotated: photo,
        result: serde_json::json!({"faces": []}),
        faces: 0,
        masked: 0,
        unmasked: 0,
        category: Category::NoFace,
        source: Source::File,
        file_name: Some("photo.png".into()),
    }
}

/// Every file under `files/` and `tmp/` (the database files are not counted).
fn stored_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                walk(&path, out)
            } else {
                out.push(path)
            }
        }
    }
    let mut out = Vec::new();
    for sub in [FILES_DIR, TMP_DIR] {
        walk(&root.join(sub), &mut out);
    }
    out
}

#[test]
fn a_failure_after_each_record_step_leaves_nothing_behind() {
    for step in RECORD_STEPS {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
        store.inject_fault(Some((step, FaultAction::Fail)));
        let err = store.record(new_entry(1)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Io {
                    op: "injected fault",
                    ..
                }
            ),
            "{step:?}: {err:?}"
        );
        assert!(
            store
                .list(UserId(1), None, None, 10)
                .unwrap()
                .entries
                .is_empty(),
            "{step:?}"
        );
        assert_eq!(store.counts(UserId(1)).unwrap().total(), 0);
        // Cleaned up on the spot, not only by the next sweep.
        assert_eq!(
            stored_files(store.data_dir()),
            Vec::<PathBuf>::new(),
            "{step:?}"
        );
        assert_eq!(store.sweep().unwrap(), SweepReport::default());

        store.inject_fault(None);
        let entry = store.record(new_entry(1)).unwrap();
        assert_eq!(store.get(UserId(1), &entry.id).unwrap(), entry);
        assert_eq!(stored_files(store.data_dir()).len(), 3);
    }
}

#[test]
fn a_failure_between_row_delete_and_file_removal_leaves_only_orphans_the_sweep_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    let entry = store.record(new_entry(1)).unwrap();
    store.inject_fault(Some((Step::DeleteCommitted, FaultAction::Fail)));
    assert!(store.delete(UserId(1), &entry.id).is_err());
    assert!(matches!(
        store.get(UserId(1), &entry.id),
        Err(Error::NotFound)
    ));
    assert_eq!(stored_files(store.data_dir()).len(), 3);
    let report = store.sweep().unwrap();
    assert_eq!(report.removed_files, 3);
    assert_eq!(report.removed_bytes, entry.total_bytes());
    assert!(stored_files(store.data_dir()).is_empty());
}

#[test]
fn sweep_keeps_committed_files_and_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
    let entry = store.record(new_entry(1)).unwrap();
    let stranger = store.data_dir().join(FILES_DIR).join("README.txt");
    std::fs::write(&stranger, "not ours").unwrap();
    assert_eq!(store.sweep().unwrap(), SweepReport::default());
    assert!(stranger.exists());
    for kind in Kind::ALL {
        assert_eq!(
            store
                .read_image(UserId(1), &entry.id, kind)
                .unwrap()
                .bytes
                .len() as u64,
            entry.image(kind).bytes
        );
    }
}

/// Runs only as the child of `a_crash_at_any_step_leaves_a_complete_entry_or_nothing`: records
/// (or deletes) with an abort injected at the step named in the environment.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(step)) = (std::env::var(CRASH_DIR_ENV), std::env::var(CRASH_STEP_ENV)) else {
        return;
    };
    let step = all_steps()[step.parse::<usize>().unwrap()];
    let store = HistoryStore::open(&dir, StoreConfig::default()).unwrap();
    if step == Step::DeleteCommitted {
        let entry = store.record(new_entry(7)).unwrap();
        store.inject_fault(Some((step, FaultAction::Abort)));
        store.delete(UserId(7), &entry.id).unwrap();
    } else {
        store.inject_fault(Some((step, FaultAction::Abort)));
        store.record(new_entry(7)).unwrap();
    }
    // Reaching this line means the abort did not happen; the parent sees a clean exit and fails.
}

#[test]
fn a_crash_at_any_step_leaves_a_complete_entry_or_nothing() {
    let exe = std::env::current_exe().unwrap();
    for (index, step) in all_steps().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(&exe)
            .args([
                "store::tests::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_STEP_ENV, index.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "{step:?}: the child was supposed to crash"
        );
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            // SIGABRT from the injected abort, not a panic on the way there.
            assert_eq!(status.signal(), Some(6), "{step:?}: {status:?}");
        }
        let debris = stored_files(dir.path()).len();
        assert!(
            debris > 0,
            "{step:?}: the crash should have left files to sweep"
        );

        let store = HistoryStore::open(dir.path(), StoreConfig::default()).unwrap();
        let page = store.list(UserId(7), None, None, 10).unwrap();
        let files = stored_files(store.data_dir());
        if step == Step::Committed {
            assert_eq!(page.entries.len(), 1, "{step:?}");
            let entry = &page.entries[0];
            assert_eq!(files.len(), 3);
            for kind in Kind::ALL {
                let data = store.read_image(UserId(7), &entry.id, kind).unwrap();
                assert_eq!(
                    hex::encode(Sha256::digest(&data.bytes)),
                    entry.image(kind).sha256
                );
            }
        } else {
            assert!(page.entries.is_empty(), "{step:?}: partial entry visible");
            assert_eq!(
                files,
                Vec::<PathBuf>::new(),
                "{step:?}: orphans survived the sweep"
            );
            assert_eq!(store.bytes_used(UserId(7)).unwrap(), 0);
        }
    }
}

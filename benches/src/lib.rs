//! Benchmarks of the mask-detect workspace (see `benches/`). This library part only holds what
//! the benchmark programs share: where the workspace and its test photos are.
//!
//! Each program that runs the detector calls [`allocator::keep_freed_memory`] first, so that it
//! measures with the allocator and settings `mask-web` runs with.

use std::path::PathBuf;

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The repository's test photos, `fixtures/photos` (see `fixtures/README.md`).
pub fn photos_dir() -> PathBuf {
    workspace_root().join("fixtures/photos")
}

/// One of the test photos, by file name (e.g. `maksssksksss0.png`).
pub fn photo(name: &str) -> PathBuf {
    photos_dir().join(name)
}

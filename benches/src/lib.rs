//! Benchmarks of the mask-detect workspace (see `benches/`). This library part only holds what
//! the benchmark programs share: where the models and the evaluation photos are.
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

/// A photo of the shared evaluation set, by file name (e.g. `maksssksksss0.png`).
pub fn eval_image(name: &str) -> PathBuf {
    workspace_root()
        .join("../shared/eval/kaggle853/images")
        .join(name)
}

//! Benchmarks of the mask-detect workspace (see `benches/`). This library part only holds what
//! the benchmark programs share: where the models and the evaluation photos are, and the
//! allocator.

use std::path::PathBuf;

/// Every program of this crate links this library, so they all measure with the allocator
/// `mask-web` uses (ARCHITECTURE.md, Invariants): with the C library's allocator every tract run
/// pays the page faults of its large activations again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

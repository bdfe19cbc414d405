//! Benchmarks of the mask-detect workspace (see `benches/`). This library part only holds what
//! the benchmark programs share: where the models and the evaluation photos are, and the
//! allocator.

use std::path::PathBuf;

/// Every program of this crate links this library, so they all measure with the allocator
/// `mask-web` uses (ARCHITECTURE.md, Invariants): with the C library's allocator every tract run
/// pays the page faults of its large activations again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep the memory mimalloc frees mapped for reuse instead of returning it to the kernel after a
/// second of disuse (mimalloc's default purge delay): a detection frees and reallocates the same
/// large activations on every run, and returning them made each run fault them in and zero them
/// again. `stage_times` over three photos: 22,000-27,000 page faults and 0.44-0.94 s of kernel
/// time with the default, ~700 and 0.21-0.34 s with this, and 2-16% more images per second with
/// both cores busy (PERFORMANCE.md). Peak memory is unchanged; memory is not handed back after
/// a burst.
pub fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h), which
    // libmimalloc-sys 0.1.49 builds but does not name.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it takes no pointer
    // and may be called at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

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

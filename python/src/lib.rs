//! Python bindings for the `mask-detect` crate: the native part of the `mask_detect` package.
//!
//! This crate is a thin frontend. It converts Python values into the detector's inputs, calls
//! `mask_detect::Detector` with the GIL released, and converts the results back:
//!
//! - `detector::PyDetector` (`mask_detect.Detector`) loads the models once and is shared freely
//!   between Python threads;
//! - `types::PyDetection` / `types::PyFace` (`mask_detect.Detection` / `Face`) wrap the Rust
//!   serde types, so `to_dict()` / `to_json()` are the crate's JSON schema by construction;
//! - `error::Failure` is the one place where Rust errors become Python exceptions
//!   (`mask_detect.ImageError` for bad input, `mask_detect.ModelError` for everything else).
//!
//! The exception classes and the packaged models directory (`mask_detect.MODELS_DIR`) are defined
//! by the Python half, `mask_detect/__init__.py`; the native module is
//! `mask_detect._mask_detect`. Build it with `maturin develop` (see `README.md`).

use pyo3::prelude::*;

mod config;
mod detector;
mod error;
mod input;
mod types;

/// The allocator `mask-web` uses, for the Rust side of the module only (Python keeps its own):
/// tract allocates each activation afresh on every run, and the C library's allocator returns the
/// large ones to the kernel each time, so every detection pays page faults again (PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep the memory mimalloc frees mapped for reuse instead of returning it to the kernel after a
/// second of disuse (mimalloc's default purge delay): a detection frees and reallocates the same
/// large activations on every run, and returning them made each run fault them in and zero them
/// again. `stage_times` over three photos: 22,000-27,000 page faults and 0.44-0.94 s of kernel
/// time with the default, ~700 and 0.21-0.34 s with this, and 2-16% more images per second with
/// both cores busy (PERFORMANCE.md). Peak memory is unchanged; memory is not handed back after
/// a burst.
fn keep_freed_memory() {
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

/// The native module `mask_detect._mask_detect`; `mask_detect/__init__.py` re-exports it.
#[pymodule]
#[pyo3(name = "_mask_detect")]
fn mask_detect_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_freed_memory();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CONFIG_KEYS", config::KEYS.to_vec())?;
    m.add_class::<detector::PyDetector>()?;
    m.add_class::<types::PyDetection>()?;
    m.add_class::<types::PyFace>()?;
    Ok(())
}

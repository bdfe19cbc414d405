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

/// The native module `mask_detect._mask_detect`; `mask_detect/__init__.py` re-exports it.
#[pymodule]
#[pyo3(name = "_mask_detect")]
fn mask_detect_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    allocator::keep_freed_memory();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CONFIG_KEYS", config::KEYS.to_vec())?;
    m.add_class::<detector::PyDetector>()?;
    m.add_class::<types::PyDetection>()?;
    m.add_class::<types::PyFace>()?;
    Ok(())
}

//! The one place where failures become Python exceptions.

use std::any::Any;
use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

/// Anything that can go wrong while the GIL is released. Converted to a Python exception by
/// `From<Failure> for PyErr` once the GIL is held again.
#[derive(Debug)]
pub enum Failure {
    /// The detector refused the input or failed (model, configuration, inference).
    Detect(mask_detect::Error),
    /// An image file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image does not fit the request (e.g. not the size of the detection to draw).
    Mismatch(String),
    /// A panic inside the detector, caught so that it never reaches Python as `PanicException`.
    Panic(String),
}

impl From<mask_detect::Error> for Failure {
    fn from(e: mask_detect::Error) -> Self {
        Failure::Detect(e)
    }
}

impl Failure {
    /// Build the failure for a caught panic payload.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Failure {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Failure::Panic(message)
    }
}

/// Which class of the Python hierarchy (defined in `mask_detect/__init__.py`) an error maps to.
fn class_for(e: &mask_detect::Error) -> &'static str {
    if e.is_input_error() {
        "ImageError"
    } else if matches!(e, mask_detect::Error::Config(_)) {
        "ConfigError"
    } else {
        "ModelError"
    }
}

/// Instantiate `mask_detect.<class>(message)`. The classes live in the Python half of the package
/// so they can have two bases (e.g. `ImageError(Error, ValueError)`).
fn package_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("mask_detect")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // Only possible if the package itself is broken; keep the message anyway.
        Err(_) => PyRuntimeError::new_err(message),
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        Python::attach(|py| match failure {
            Failure::Detect(e) => package_error(py, class_for(&e), e.to_string()),
            Failure::Read { path, source } => {
                let name = path.display().to_string();
                match source.raw_os_error() {
                    // OSError(errno, strerror, filename) picks the subclass itself
                    // (FileNotFoundError, PermissionError, IsADirectoryError...).
                    Some(code) => PyOSError::new_err((code, source.to_string(), name)),
                    None => PyOSError::new_err(format!("cannot read {name}: {source}")),
                }
            }
            Failure::Mismatch(message) => package_error(py, "ImageError", message),
            Failure::Panic(message) => package_error(
                py,
                "ModelError",
                format!("internal error in the detector: {message}"),
            ),
        })
    }
}

/// Run `f` with the GIL released, catching any panic.
pub fn without_gil<T, F>(py: Python<'_>, f: F) -> Result<T, Failure>
where
    T: Send,
    F: FnOnce() -> Result<T, Failure> + Send,
{
    py.detach(|| catch(f))
}

/// Run `f`, turning a panic into [`Failure::Panic`].
pub fn catch<T, F>(f: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure>,
{
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(Failure::from_panic(payload)))
}

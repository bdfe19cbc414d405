//! Python image arguments: a path, bytes, or a numpy `uint8` array.

use std::path::PathBuf;

use mask_detect::image::{DynamicImage, GrayImage, RgbImage};
use mask_detect::{Config, decode_image};
use numpy::prelude::*;
use numpy::{PyArrayDyn, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::error::Failure;

/// An image argument converted while the GIL is held; owns its data so that decoding and
/// inference can run without the GIL (and on other threads).
pub enum Input {
    /// Encoded bytes (any format `mask_detect::decode_image` sniffs).
    Bytes(Vec<u8>),
    /// A file to read, then decode.
    Path(PathBuf),
    /// Pixels from a numpy array.
    Pixels(DynamicImage),
}

const EXPECTED: &str = "a path (str or os.PathLike), bytes, or a numpy uint8 array";

impl Input {
    /// Convert a Python argument. Wrong types raise `TypeError`, wrong array shapes `ValueError`,
    /// each naming what was received.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Input> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Input::Bytes(b.as_bytes().to_vec()));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Input::Bytes(b.to_vec()));
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
            return Ok(Input::Path(obj.extract::<PathBuf>()?));
        }
        if is_ndarray(obj)? {
            return pixels(obj.cast::<PyUntypedArray>()?).map(Input::Pixels);
        }
        Err(PyTypeError::new_err(format!(
            "image must be {EXPECTED}; got {}",
            obj.get_type().name()?
        )))
    }

    /// Decode (or read and decode) the image. Runs without the GIL.
    pub fn load(self, config: &Config) -> Result<DynamicImage, Failure> {
        match self {
            Input::Bytes(bytes) => Ok(decode_image(&bytes, config)?),
            Input::Path(path) => match std::fs::read(&path) {
                Ok(bytes) => Ok(decode_image(&bytes, config)?),
                Err(source) => Err(Failure::Read { path, source }),
            },
            Input::Pixels(image) => Ok(image),
        }
    }
}

/// Whether `obj` is a numpy array, without importing numpy: rust-numpy's type check loads the
/// numpy C API and would panic where numpy is not installed (it is only needed for array input).
fn is_ndarray(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = obj.py();
    let numpy_loaded = py.import("sys")?.getattr("modules")?.contains("numpy")?;
    Ok(numpy_loaded && obj.is_instance_of::<PyUntypedArray>())
}

/// Copy an `HxWx3` (RGB) or `HxW` (gray) `uint8` array into an image.
fn pixels(array: &Bound<'_, PyUntypedArray>) -> PyResult<DynamicImage> {
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<u8>(array.py())) {
        return Err(PyTypeError::new_err(format!(
            "image array must have dtype uint8, got {}",
            dtype.str()?
        )));
    }
    let shape = array.shape().to_vec();
    let shape_ok = matches!(shape.as_slice(), [_, _] | [_, _, 3]);
    if !shape_ok {
        return Err(PyValueError::new_err(format!(
            "image array must have shape (height, width, 3) for RGB or (height, width) for gray, got {shape:?}"
        )));
    }
    let (height, width) = (shape[0], shape[1]);
    if height == 0 || width == 0 {
        return Err(PyValueError::new_err(format!(
            "image array has no pixels: shape {shape:?}"
        )));
    }
    let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(PyValueError::new_err(format!(
            "image array is too large: shape {shape:?}"
        )));
    };
    let typed = array.cast::<PyArrayDyn<u8>>()?.readonly();
    // `iter()` walks in logical (C) order whatever the strides, so slices and transposes work.
    let data: Vec<u8> = match typed.as_slice() {
        Ok(slice) => slice.to_vec(),
        Err(_) => typed.as_array().iter().copied().collect(),
    };
    let image = if shape.len() == 2 {
        GrayImage::from_raw(w, h, data).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| {
        PyValueError::new_err(format!(
            "image array data does not match its shape {shape:?}"
        ))
    })
}

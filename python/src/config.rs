//! `Detector(**config)` keywords <-> `mask_detect::Config` fields.

use std::sync::Arc;

use mask_detect::{Config, FaceVerifier, LinearHead, MaskHead, Preset, Verifier};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::types::short;

/// A `Config` field type that a Python keyword can set and `Detector.config` can show.
trait Value: Sized {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self>;
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
}

impl Value for f32 {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // Ranges (and NaN) are checked by `Config::validate`, which names the field.
        Ok(obj.extract::<f64>()? as f32)
    }
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(short(*self).into_pyobject(py)?.into_any())
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
                obj.extract::<$t>()
            }
            fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                Ok(self.into_pyobject(py)?.into_any())
            }
        }
    )*};
}
int_value!(u32, u64, usize);

/// `mask_head`: `"trained"` (our head, the default), `"shipped"` (the model's own softmax) or the
/// path (`str` or `os.PathLike`) of a head JSON file such as `tools/train_head.py` writes.
/// `Detector.config` shows `"trained"`, `"shipped"` or `"custom"`.
impl Value for MaskHead {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(name) = obj.extract::<String>() {
            match name.as_str() {
                "trained" => return Ok(MaskHead::Trained),
                "shipped" => return Ok(MaskHead::Shipped),
                _ => {}
            }
        }
        let path: std::path::PathBuf = obj.extract().map_err(|_| {
            PyTypeError::new_err(
                "expected \"trained\", \"shipped\" or the path of a head JSON file",
            )
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            PyTypeError::new_err(format!(
                "expected \"trained\", \"shipped\" or the path of a head JSON file; {}: {e}",
                path.display()
            ))
        })?;
        let head = LinearHead::from_json(&text)
            .map_err(|e| PyTypeError::new_err(format!("{}: {e}", path.display())))?;
        Ok(MaskHead::Custom(Arc::new(head)))
    }
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let name = match self {
            MaskHead::Trained => "trained",
            MaskHead::Shipped => "shipped",
            _ => "custom",
        };
        Ok(name.into_pyobject(py)?.into_any())
    }
}

/// `preset`: `"fast"` (the default) or `"accurate"`; `Detector.config` shows the same names.
impl Value for Preset {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let name: String = obj
            .extract()
            .map_err(|_| PyTypeError::new_err("expected \"fast\" or \"accurate\""))?;
        name.parse::<Preset>()
            .map_err(|e| PyTypeError::new_err(e.to_string()))
    }
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.as_str().into_pyobject(py)?.into_any())
    }
}

/// `verifier`: `"trained"` (our fitted face verifier, the default) or the path (`str` or
/// `os.PathLike`) of a verifier JSON file such as `tools/train_verifier.py` writes.
/// `Detector.config` shows `"trained"` or `"custom"`.
impl Value for Verifier {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if obj.extract::<String>().is_ok_and(|n| n == "trained") {
            return Ok(Verifier::Trained);
        }
        let expected = "expected \"trained\" or the path of a verifier JSON file";
        let path: std::path::PathBuf = obj.extract().map_err(|_| PyTypeError::new_err(expected))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PyTypeError::new_err(format!("{expected}; {}: {e}", path.display())))?;
        let verifier = FaceVerifier::from_json(&text)
            .map_err(|e| PyTypeError::new_err(format!("{}: {e}", path.display())))?;
        Ok(Verifier::Custom(Arc::new(verifier)))
    }
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let name = match self {
            Verifier::Trained => "trained",
            _ => "custom",
        };
        Ok(name.into_pyobject(py)?.into_any())
    }
}

/// One line per `Config` field exposed to Python: the keyword is the field name. Fields added to
/// `Config` later keep their Rust default until they are listed here.
macro_rules! fields {
    ($($name:ident),* $(,)?) => {
        /// The accepted keywords, in `Config` order.
        pub const KEYS: &[&str] = &[$(stringify!($name)),*];

        fn set(config: &mut Config, key: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
            match key {
                $(stringify!($name) => {
                    config.$name = Value::from_py(value).map_err(|e| {
                        PyTypeError::new_err(format!(
                            "config keyword {}: {}", stringify!($name), e.value(value.py())
                        ))
                    })?;
                })*
                _ => return Ok(false),
            }
            Ok(true)
        }

        /// The configuration as a `dict` keyed like the keywords.
        pub fn to_dict<'py>(py: Python<'py>, config: &Config) -> PyResult<Bound<'py, PyDict>> {
            let dict = PyDict::new(py);
            $(dict.set_item(stringify!($name), config.$name.to_py(py)?)?;)*
            Ok(dict)
        }
    };
}

fields!(
    preset,
    input_long_side,
    face_threshold,
    large_long_side,
    candidate_threshold,
    verifier,
    verifier_threshold,
    nms_iou,
    min_face_size,
    crop_margin,
    mask_head,
    mask_threshold,
    uncertain_face_size,
    uncertain_margin,
    max_pixels,
    max_side,
    max_decode_alloc,
    plan_cache_size,
);

/// `Config::default()` with the keywords applied. An unknown keyword or a value of the wrong type
/// is a `TypeError`, as for any Python function; ranges are checked later by the detector.
pub fn from_kwargs(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let mut config = Config::default();
    for (key, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = key.extract()?;
        if !set(&mut config, &key, &value)? {
            return Err(PyTypeError::new_err(format!(
                "Detector() got an unexpected keyword argument '{key}'; config keywords are: {}",
                KEYS.join(", ")
            )));
        }
    }
    Ok(config)
}

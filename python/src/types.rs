//! `mask_detect.Detection` and `mask_detect.Face`: read-only views of the Rust serde types.

use mask_detect::{Detection, Face};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// An `f32` as the `f64` with the same shortest decimal form, so `face.score` prints `0.93` like
/// the JSON does (serde_json writes `f32` in its shortest form), not `0.9300000071525574`.
pub fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The schema string of a serde unit enum value (`"no_mask"`, `"small_face"`...).
fn schema_str<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => e.to_string(),
    }
}

/// `json.loads(text)`.
fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

fn to_json_string<T: serde::Serialize>(value: &T, pretty: bool) -> PyResult<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map_err(|e| PyValueError::new_err(e.to_string()))
}

/// One face found in the image.
///
/// Attributes mirror the JSON schema: ``box`` is ``(x1, y1, x2, y2)`` in pixels of the image as
/// displayed (EXIF orientation applied), x to the right, y down; ``score`` the face detector's
/// confidence in [0, 1]; ``landmarks`` five ``(x, y)`` points (left eye, right eye, nose, left and
/// right mouth corner); ``mask_probability`` in [0, 1]; ``label`` ``"mask"`` or ``"no_mask"``;
/// ``uncertain`` / ``uncertain_reason`` (``"small_face"``, ``"near_threshold"`` or ``None``).
#[pyclass(frozen, eq, module = "mask_detect", name = "Face")]
#[derive(Clone, PartialEq)]
pub struct PyFace {
    inner: Face,
}

#[pymethods]
impl PyFace {
    /// ``(x1, y1, x2, y2)`` in pixels.
    #[getter(r#box)]
    fn bbox(&self) -> (f64, f64, f64, f64) {
        let [x1, y1, x2, y2] = self.inner.bbox.map(short);
        (x1, y1, x2, y2)
    }

    /// Face detector confidence in [0, 1].
    #[getter]
    fn score(&self) -> f64 {
        short(self.inner.score)
    }

    /// Five ``(x, y)`` points: left eye, right eye, nose, left and right mouth corner.
    #[getter]
    fn landmarks(&self) -> Vec<(f64, f64)> {
        self.inner
            .landmarks
            .iter()
            .map(|[x, y]| (short(*x), short(*y)))
            .collect()
    }

    /// Probability in [0, 1] that the face wears a mask.
    #[getter]
    fn mask_probability(&self) -> f64 {
        short(self.inner.mask_probability)
    }

    /// ``"mask"`` when ``mask_probability`` reaches the detector's ``mask_threshold``, else
    /// ``"no_mask"``.
    #[getter]
    fn label(&self) -> String {
        schema_str(&self.inner.label)
    }

    /// True when the label should not be trusted blindly; see ``uncertain_reason``.
    #[getter]
    fn uncertain(&self) -> bool {
        self.inner.uncertain
    }

    /// ``"small_face"``, ``"near_threshold"``, or ``None`` when the face is certain.
    #[getter]
    fn uncertain_reason(&self) -> Option<String> {
        self.inner.uncertain_reason.as_ref().map(schema_str)
    }

    /// The face as the JSON schema's ``dict``.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, &to_json_string(&self.inner, false)?)
    }

    fn __repr__(&self) -> String {
        let [x1, y1, x2, y2] = self.inner.bbox;
        format!(
            "Face(box=({x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}), score={:.3}, label='{}', mask_probability={:.3}, uncertain={})",
            self.inner.score,
            self.label(),
            self.inner.mask_probability,
            if self.inner.uncertain {
                "True"
            } else {
                "False"
            },
        )
    }
}

/// Everything found in one image, as returned by ``Detector.detect``.
///
/// ``faces`` are highest score first; ``category`` is ``"no_face"``, ``"all_masked"``,
/// ``"none_masked"`` or ``"some_masked"``; ``width`` / ``height`` are those of the image as
/// displayed. ``to_dict()`` / ``to_json()`` give exactly the JSON schema of the Rust crate and the
/// web API; ``Detection.from_dict`` / ``from_json`` read it back.
#[pyclass(frozen, eq, module = "mask_detect", name = "Detection")]
#[derive(Clone, PartialEq)]
pub struct PyDetection {
    inner: Detection,
}

impl From<Detection> for PyDetection {
    fn from(inner: Detection) -> Self {
        PyDetection { inner }
    }
}

impl PyDetection {
    /// The Rust value, e.g. for `annotate`.
    pub fn detection(&self) -> &Detection {
        &self.inner
    }
}

#[pymethods]
impl PyDetection {
    /// The faces, highest detector score first.
    #[getter]
    fn faces(&self) -> Vec<PyFace> {
        self.inner
            .faces
            .iter()
            .map(|f| PyFace { inner: f.clone() })
            .collect()
    }

    /// ``"no_face"``, ``"all_masked"``, ``"none_masked"`` or ``"some_masked"``.
    #[getter]
    fn category(&self) -> String {
        schema_str(&self.inner.category)
    }

    /// Number of faces.
    #[getter]
    fn num_faces(&self) -> usize {
        self.inner.num_faces
    }

    /// Faces labelled ``"mask"``.
    #[getter]
    fn num_masked(&self) -> usize {
        self.inner.num_masked
    }

    /// Faces labelled ``"no_mask"``.
    #[getter]
    fn num_unmasked(&self) -> usize {
        self.inner.num_unmasked
    }

    /// Image width in pixels (as displayed, EXIF orientation applied).
    #[getter]
    fn width(&self) -> u32 {
        self.inner.width
    }

    /// Image height in pixels (as displayed, EXIF orientation applied).
    #[getter]
    fn height(&self) -> u32 {
        self.inner.height
    }

    /// The detection as the JSON schema's ``dict`` (made from ``to_json()``, so the two agree).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, &to_json_string(&self.inner, false)?)
    }

    /// The detection as JSON text, exactly as the web API returns it; ``pretty=True`` indents it.
    #[pyo3(signature = (pretty = false))]
    fn to_json(&self, pretty: bool) -> PyResult<String> {
        to_json_string(&self.inner, pretty)
    }

    /// Read a detection from the JSON schema's text. Raises ``ValueError`` naming what does not
    /// match the schema.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<PyDetection> {
        serde_json::from_str::<Detection>(text)
            .map(PyDetection::from)
            .map_err(|e| PyValueError::new_err(format!("not a detection: {e}")))
    }

    /// Read a detection from a ``dict`` in the JSON schema (e.g. one from ``to_dict()``).
    /// Raises ``ValueError`` naming what does not match the schema.
    #[staticmethod]
    fn from_dict(py: Python<'_>, data: &Bound<'_, PyDict>) -> PyResult<PyDetection> {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (data,))?
            .extract()?;
        PyDetection::from_json(&text)
    }

    fn __repr__(&self) -> String {
        format!(
            "Detection(category='{}', num_faces={}, num_masked={}, num_unmasked={}, width={}, height={})",
            self.category(),
            self.inner.num_faces,
            self.inner.num_masked,
            self.inner.num_unmasked,
            self.inner.width,
            self.inner.height
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keeps_the_shortest_decimal_form() {
        assert_eq!(short(0.93), 0.93);
        assert_eq!(short(105.0), 105.0);
        assert_ne!(f64::from(0.93f32), 0.93);
    }
}

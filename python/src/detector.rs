//! `mask_detect.Detector`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mask_detect::{Detection, Detector};
use numpy::ndarray::Array3;
use numpy::{IntoPyArray, PyArray3};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config;
use crate::error::{Failure, catch, without_gil};
use crate::input::Input;
use crate::types::PyDetection;

/// Face-mask detector: finds every face in a photo and says whether it wears a mask.
///
/// ``Detector(models_dir=None, **config)`` loads the two ONNX models once; with no
/// ``models_dir`` it uses the models packaged inside the wheel (``mask_detect.MODELS_DIR``).
/// Keyword arguments set the detector's configuration (see ``mask_detect.CONFIG_KEYS`` and the
/// ``config`` property for their defaults), e.g. ``Detector(mask_threshold=0.6)``; an unknown
/// keyword raises ``TypeError``, an out-of-range value ``ConfigError``, a missing or corrupt model
/// ``ModelError``.
///
/// A detector is thread-safe and releases the GIL while it works, so one instance can serve many
/// Python threads in parallel; ``detect_many`` runs a batch on several native threads.
///
/// Images are given as a path (``str`` or ``os.PathLike``), encoded ``bytes`` (JPEG, PNG, WebP,
/// BMP, GIF, TIFF; the format is sniffed from the content), or a numpy ``uint8`` array of shape
/// ``(H, W, 3)`` (RGB) or ``(H, W)`` (gray).
#[pyclass(frozen, module = "mask_detect", name = "Detector")]
pub struct PyDetector {
    inner: Arc<Detector>,
    models_dir: PathBuf,
}

/// `mask_detect.MODELS_DIR`, set by the package's `__init__.py` next to the native module.
fn packaged_models_dir(py: Python<'_>) -> PyResult<PathBuf> {
    py.import("mask_detect")?.getattr("MODELS_DIR")?.extract()
}

#[pymethods]
impl PyDetector {
    #[new]
    #[pyo3(signature = (models_dir = None, **config))]
    fn new(
        py: Python<'_>,
        models_dir: Option<PathBuf>,
        config: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = config::from_kwargs(config)?;
        let models_dir = match models_dir {
            Some(dir) => dir,
            None => packaged_models_dir(py)?,
        };
        let dir = models_dir.clone();
        let detector = without_gil(py, move || Ok(Detector::from_dir(&dir, config)?))?;
        Ok(PyDetector {
            inner: Arc::new(detector),
            models_dir,
        })
    }

    /// The directory the models were loaded from.
    #[getter]
    fn models_dir(&self) -> PathBuf {
        self.models_dir.clone()
    }

    /// The configuration in effect, as a ``dict`` keyed like the constructor's keywords.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        config::to_dict(py, self.inner.config())
    }

    /// Find the faces in ``image`` and classify each; returns a ``Detection``.
    ///
    /// Raises ``ImageError`` for bytes or files that are not a supported image (or exceed the
    /// size limits), ``OSError`` (e.g. ``FileNotFoundError``) for unreadable paths,
    /// ``TypeError`` / ``ValueError`` for arguments of the wrong type, dtype or shape, and
    /// ``ModelError`` if inference fails. The GIL is released while the image is read, decoded
    /// and analysed.
    fn detect(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<PyDetection> {
        let input = Input::from_py(image)?;
        let detector = &*self.inner;
        let detection = without_gil(py, || detect_one(detector, input))?;
        Ok(detection.into())
    }

    /// Detect on every image of ``images`` (any iterable of the inputs ``detect`` accepts) on
    /// ``threads`` native threads (default: one per CPU, at most one per image), with the GIL
    /// released. Returns the ``Detection`` objects in input order.
    ///
    /// The first failure (in input order) is raised, as ``detect`` would raise it; with
    /// ``return_exceptions=True`` failures are returned in place of their detection instead.
    #[pyo3(signature = (images, threads = None, return_exceptions = false))]
    fn detect_many(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        threads: Option<usize>,
        return_exceptions: bool,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let inputs = images
            .try_iter()?
            .map(|item| Input::from_py(&item?))
            .collect::<PyResult<Vec<Input>>>()?;
        let threads = match threads {
            Some(0) => return Err(PyValueError::new_err("threads must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let detector = &*self.inner;
        let results = py.detach(|| detect_parallel(detector, inputs, threads));
        results
            .into_iter()
            .map(|result| match result {
                Ok(detection) => Ok(Py::new(py, PyDetection::from(detection))?.into_any()),
                Err(failure) if return_exceptions => {
                    Ok(PyErr::from(failure).into_value(py).into_any())
                }
                Err(failure) => Err(failure.into()),
            })
            .collect()
    }

    /// Draw ``detection`` onto a copy of ``image`` (the same image it was detected on): a green
    /// box for a mask, red for none, with the probability. Returns a numpy ``uint8`` array of
    /// shape ``(H, W, 3)``, RGB.
    ///
    /// Raises the same errors as ``detect`` for the image, and ``ImageError`` if the image's size
    /// is not the detection's ``width`` x ``height``.
    fn annotate<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        detection: &PyDetection,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let input = Input::from_py(image)?;
        let detection = detection.detection().clone();
        let config = self.inner.config();
        let rgb = without_gil(py, move || {
            let image = input.load(config)?;
            if (image.width(), image.height()) != (detection.width, detection.height) {
                return Err(Failure::Mismatch(format!(
                    "the detection is for a {}x{} image, this image is {}x{}",
                    detection.width,
                    detection.height,
                    image.width(),
                    image.height()
                )));
            }
            Ok(mask_detect::annotate(&image, &detection))
        })?;
        // rust-numpy panics if numpy cannot be imported; make that an ImportError instead.
        py.import("numpy")?;
        let (width, height) = rgb.dimensions();
        let array = Array3::from_shape_vec((height as usize, width as usize, 3), rgb.into_raw())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!("Detector(models_dir='{}')", self.models_dir.display())
    }
}

fn detect_one(detector: &Detector, input: Input) -> Result<Detection, Failure> {
    let image = input.load(detector.config())?;
    Ok(detector.detect(&image)?)
}

/// Run the inputs on `threads` scoped threads pulling from one queue; results in input order.
fn detect_parallel(
    detector: &Detector,
    inputs: Vec<Input>,
    threads: usize,
) -> Vec<Result<Detection, Failure>> {
    let count = inputs.len();
    let queue = Mutex::new(inputs.into_iter().enumerate());
    let next = || queue.lock().ok().and_then(|mut q| q.next());
    let mut results: Vec<Option<Result<Detection, Failure>>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(count))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some((index, input)) = next() {
                        done.push((index, catch(|| detect_one(detector, input))));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // Workers catch every panic per image, so joining cannot fail; if it somehow does,
            // the affected slots stay empty and are reported below.
            for (index, result) in worker.join().unwrap_or_default() {
                results[index] = Some(result);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Failure::Panic("worker thread failed".into()))))
        .collect()
}

//! Find every face in a photo and say whether it wears a mask.
//!
//! `mask-detect` is a two-stage detector on [tract](https://crates.io/crates/tract-onnx) and
//! [image](https://crates.io/crates/image):
//!
//! 1. **Faces**: CenterFace (`centerface.onnx`) on the image scaled to
//!    [`Config::input_long_side`] and padded to multiples of 32 (RGB, 0..255, no mean subtraction,
//!    as its authors feed it); heatmap threshold, `exp(scale) * 4` box sizes, offsets, stride 4,
//!    five landmarks, then non-maximum suppression.
//! 2. **Masks**: each face is cropped from the full-resolution image (grown by
//!    [`Config::crop_margin`]), resized to 224x224, scaled to [-1, 1] and run through a MobileNetV2
//!    (`mask_classifier.onnx`), batched. The mask probability comes from our own head by default
//!    ([`MaskHead::Trained`]): a logistic regression on the network's 1280-d pooled features, fitted
//!    on the evaluation set's `train` split by `tools/train_head.py` and embedded from
//!    `heads/mask_head.json` (see `MODEL_CARD.md`). [`MaskHead::Shipped`] uses the network's own
//!    softmax instead.
//!
//! That is the [`Preset::Fast`] detector, the default. [`Preset::Accurate`] ([`Config::preset`])
//! runs CenterFace three times (at [`Config::input_long_side`], on the image mirrored, and at
//! [`Config::large_long_side`]), keeps every box above the low [`Config::candidate_threshold`],
//! merges the overlapping ones into [`Candidate`]s, classifies each as above, and lets a second
//! fitted logistic regression, the face verifier (`heads/face_verifier.json`, fitted by
//! `tools/train_verifier.py`, see `MODEL_CARD.md`), decide from the three scores, the boxes'
//! agreement and the classifier's pooled features which candidates are faces. It finds more of
//! the small faces at about three times the cost (`ACCURACY.md` in the workspace).
//!
//! A [`Detector`] is built once (models parsed, plans optimised lazily per input shape and cached)
//! and is `Send + Sync`: share it between threads in an `Arc`; inference takes no lock.
//!
//! ```
//! use mask_detect::{Category, Config, Detector};
//!
//! let detector = Detector::from_dir("../models", Config::default())?;
//! let bytes = std::fs::read("../fixtures/photos/maksssksksss0.png")?;
//! let detection = detector.detect_bytes(&bytes)?;
//! assert!(detection.num_faces > 0);
//! assert_ne!(detection.category, Category::NoFace);
//! println!("{}", serde_json::to_string(&detection)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The JSON schema
//!
//! [`Detection`] serialises (serde) to the one schema used by the web API, the Python module and
//! the `detect` example:
//!
//! ```json
//! {
//!   "width": 512, "height": 366,
//!   "faces": [
//!     {"box": [79.2, 105.0, 109.8, 142.3], "score": 0.93,
//!      "landmarks": [[88.1, 118.0], [101.5, 118.2], [95.0, 126.4], [89.0, 133.1], [100.7, 133.3]],
//!      "mask_probability": 0.12, "label": "no_mask",
//!      "uncertain": false, "uncertain_reason": null}
//!   ],
//!   "category": "none_masked", "num_faces": 1, "num_masked": 0, "num_unmasked": 1
//! }
//! ```
//!
//! - `box`: `[x1, y1, x2, y2]` in pixels of the image as oriented by its EXIF tag (what a person
//!   sees), x to the right, y down. `score`: face detector confidence in [0, 1].
//! - `landmarks`: left eye, right eye, nose, left and right mouth corner, `[x, y]` each.
//! - `mask_probability`: in [0, 1]; `label` is `mask` when it is at least
//!   [`Config::mask_threshold`], else `no_mask`.
//! - `uncertain` / `uncertain_reason`: `small_face` (narrower than
//!   [`Config::uncertain_face_size`]) or `near_threshold` (probability within
//!   [`Config::uncertain_margin`] of the threshold); `null` when certain.
//! - `category`: `no_face`, `all_masked`, `none_masked` or `some_masked`; counts as named.
//!
//! # Errors and limits
//!
//! Every fallible call returns [`Error`]. Untrusted bytes are decoded by [`decode_image`]: the format
//! is sniffed from content, dimensions are checked against [`Config::max_pixels`] and
//! [`Config::max_side`] before decoding, and allocations are capped, so a decompression bomb is an
//! [`Error::TooLarge`], never an out-of-memory. No input makes the library panic.
#![deny(missing_docs)]

mod annotate;
mod classify;
mod config;
mod decode;
mod depthwise;
mod detection;
mod error;
mod face;
mod gemm_conv;
mod head;
mod kernel_op;
mod plan;
mod resize;
mod rewrite;
mod verifier;

use std::path::Path;
use std::sync::Arc;

use image::{DynamicImage, RgbImage};

/// The `image` crate this library is built on, re-exported so callers use the same version.
pub use image;

pub use annotate::annotate;
pub use classify::{CROP_SIZE, Classified, crop_face};
pub use config::{Config, ParsePresetError, Preset};
pub use decode::decode_image;
pub use detection::{Category, Detection, Face, Label, UncertainReason, UnknownCategory};
pub use error::{Error, Result};
pub use face::{RawFace, iou, nms};
pub use head::{HEAD_FORMAT, LinearHead, MaskHead};
pub use verifier::{Candidate, FaceVerifier, SIGNALS, VERIFIER_FORMAT, Verifier, signals};

/// The tract model `Detector` runs for an ONNX model and one concrete f32 input shape, after
/// every rewrite and optimisation this crate applies. For profiling tools (the `benches` crate's
/// `node_profile` times it node by node); detection itself never needs it.
///
/// `shape` is the ONNX file's input layout, `[batch, channels, height, width]`; the returned
/// model takes the same values channel-last, `[batch, height, width, channels]`.
///
/// # Errors
///
/// [`Error::ModelInvalid`] if tract cannot parse or optimise the model for `shape`.
pub fn optimised_model(onnx: &[u8], shape: &[usize]) -> Result<tract_onnx::prelude::TypedModel> {
    use tract_onnx::prelude::Framework;
    let invalid = |e: tract_onnx::prelude::TractError| Error::ModelInvalid {
        name: "model".to_string(),
        message: format!("{e:#}"),
    };
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .map_err(invalid)?;
    plan::optimise(model, shape).map_err(invalid)
}

/// File name of the face detector inside a models directory.
pub const FACE_MODEL_FILE: &str = "centerface.onnx";
/// File name of the mask classifier inside a models directory.
pub const MASK_MODEL_FILE: &str = "mask_classifier.onnx";

/// The two-stage face-mask detector. Build once, share between threads.
pub struct Detector {
    faces: face::FaceModel,
    masks: classify::MaskModel,
    /// The resolved [`Config::mask_head`]: `None` for the shipped softmax.
    head: Option<Arc<LinearHead>>,
    /// The resolved [`Config::verifier`] for [`Preset::Accurate`]; `None` for [`Preset::Fast`].
    verifier: Option<Arc<FaceVerifier>>,
    config: Config,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Load `centerface.onnx` and `mask_classifier.onnx` from a models directory (as written by
    /// `make models`). A missing or unreadable file is [`Error::ModelRead`] naming it; a corrupt
    /// one is [`Error::ModelInvalid`].
    pub fn from_dir(dir: impl AsRef<Path>, config: Config) -> Result<Detector> {
        let dir = dir.as_ref();
        Detector::from_paths(dir.join(FACE_MODEL_FILE), dir.join(MASK_MODEL_FILE), config)
    }

    /// Load the two models from explicit paths.
    pub fn from_paths(
        face_model: impl AsRef<Path>,
        mask_model: impl AsRef<Path>,
        config: Config,
    ) -> Result<Detector> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::ModelRead {
                path: p.to_path_buf(),
                source,
            })
        };
        let (fp, mp) = (face_model.as_ref(), mask_model.as_ref());
        let face_bytes = read(fp)?;
        let mask_bytes = read(mp)?;
        Detector::build(
            &fp.display().to_string(),
            &face_bytes,
            &mp.display().to_string(),
            &mask_bytes,
            config,
        )
    }

    /// Build from the two ONNX files' bytes (e.g. embedded in a binary).
    pub fn from_bytes(face_model: &[u8], mask_model: &[u8], config: Config) -> Result<Detector> {
        Detector::build(
            FACE_MODEL_FILE,
            face_model,
            MASK_MODEL_FILE,
            mask_model,
            config,
        )
    }

    fn build(
        face_name: &str,
        face_bytes: &[u8],
        mask_name: &str,
        mask_bytes: &[u8],
        config: Config,
    ) -> Result<Detector> {
        config.validate()?;
        let head = match &config.mask_head {
            MaskHead::Trained => Some(LinearHead::embedded()?),
            MaskHead::Shipped => None,
            MaskHead::Custom(h) => Some(h.clone()),
        };
        let verifier = match (config.preset, &config.verifier) {
            (Preset::Fast, _) => None,
            (Preset::Accurate, Verifier::Trained) => Some(FaceVerifier::embedded()?),
            (Preset::Accurate, Verifier::Custom(v)) => Some(v.clone()),
        };
        let detector = Detector {
            faces: face::FaceModel::load(face_name, face_bytes, &config)?,
            masks: classify::MaskModel::load(mask_name, mask_bytes)?,
            head,
            verifier,
            config,
        };
        // Make the single-face classifier plan now: it proves the file is a runnable classifier
        // (with the features our head needs) at startup rather than on the first request.
        let blank = detector
            .classify_crops(&[RgbImage::new(CROP_SIZE, CROP_SIZE)])
            .map_err(|e| match e {
                Error::Inference(message) => Error::ModelInvalid {
                    name: mask_name.to_string(),
                    message,
                },
                e => e,
            })?;
        // Likewise a verifier that reads more or fewer features than the classifier gives.
        if let (Some(v), Some(c)) = (&detector.verifier, blank.first())
            && v.features() > 0
            && v.features() != c.features.len()
        {
            return Err(Error::ModelInvalid {
                name: "face verifier".into(),
                message: format!(
                    "it reads {} features, {mask_name} gives {}",
                    v.features(),
                    c.features.len()
                ),
            });
        }
        Ok(detector)
    }

    /// The configuration this detector runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decode untrusted bytes with this detector's limits, then detect. See [`decode_image`].
    pub fn detect_bytes(&self, bytes: &[u8]) -> Result<Detection> {
        let image = decode_image(bytes, &self.config)?;
        self.detect(&image)
    }

    /// The RGB8 image the models see for `image`: grayscale expanded, transparency composited
    /// over white. [`Error::TooLarge`] when it exceeds the configured limits. Use it with
    /// [`Detector::detect_faces`] and [`crop_face`] to reproduce what [`Detector::detect`] does
    /// stage by stage (e.g. to extract training features exactly as inference crops faces).
    pub fn rgb_image(&self, image: &DynamicImage) -> Result<RgbImage> {
        to_rgb(image, &self.config)
    }

    /// Find the faces in an already decoded image and classify each.
    ///
    /// Both presets take this one path: the candidates of [`Detector::detect_candidates`], each
    /// cropped and classified; in [`Preset::Accurate`] the verifier then keeps the candidates it
    /// calls faces, its probability becoming the face's `score`.
    pub fn detect(&self, image: &DynamicImage) -> Result<Detection> {
        let rgb = to_rgb(image, &self.config)?;
        let candidates = self.detect_candidates(&rgb)?;
        let crops: Vec<RgbImage> = candidates
            .iter()
            .map(|c| crop_face(&rgb, &c.face.bbox, self.config.crop_margin))
            .collect::<Result<_>>()?;
        let classified = self.classify_crops(&crops)?;
        let mut faces = Vec::with_capacity(candidates.len());
        for (candidate, c) in candidates.into_iter().zip(classified) {
            let verified = match &self.verifier {
                None => None,
                Some(verifier) => {
                    let s = signals(&candidate, rgb.width(), rgb.height(), c.softmax_probability);
                    let p = verifier.probability(&s, &c.features)?;
                    if p < self.config.verifier_threshold {
                        continue;
                    }
                    Some(p)
                }
            };
            let mut raw = candidate.face;
            if let Some(p) = verified {
                raw.score = p;
            }
            faces.push(self.face(raw, c.mask_probability));
        }
        // Fast: already in CenterFace's score order; accurate: now in the verifier's.
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(Detection::new(rgb.width(), rgb.height(), faces))
    }

    /// Stage one alone: the faces CenterFace finds in an RGB image at
    /// [`Config::input_long_side`] scoring above [`Config::face_threshold`], best first (the
    /// fast preset's faces, whatever the preset).
    pub fn detect_faces(&self, image: &RgbImage) -> Result<Vec<RawFace>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::Decode("image has no pixels".into()));
        }
        let c = &self.config;
        self.faces
            .detect(image, c.input_long_side, c.face_threshold, false, c)
    }

    /// Stage one of the configured preset: in [`Preset::Fast`] the faces of
    /// [`Detector::detect_faces`], one candidate each; in [`Preset::Accurate`] every box scoring
    /// above [`Config::candidate_threshold`] at [`Config::input_long_side`], mirrored, and at
    /// [`Config::large_long_side`], overlapping boxes merged. Best score first.
    pub fn detect_candidates(&self, image: &RgbImage) -> Result<Vec<Candidate>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::Decode("image has no pixels".into()));
        }
        let c = &self.config;
        let runs = match c.preset {
            Preset::Fast => [
                self.faces
                    .detect(image, c.input_long_side, c.face_threshold, false, c)?,
                Vec::new(),
                Vec::new(),
            ],
            Preset::Accurate => {
                let t = c.candidate_threshold;
                [
                    self.faces.detect(image, c.input_long_side, t, false, c)?,
                    self.faces.detect(image, c.input_long_side, t, true, c)?,
                    self.faces.detect(image, c.large_long_side, t, false, c)?,
                ]
            }
        };
        Ok(verifier::merge(runs, c.nms_iou))
    }

    /// Stage two alone: classify 224x224 face crops (see [`crop_face`]), in batches, with the
    /// configured head. [`Error::Inference`] when a crop is not 224x224.
    pub fn classify_crops(&self, crops: &[RgbImage]) -> Result<Vec<Classified>> {
        let mut classified = self.masks.classify(crops)?;
        if let Some(head) = &self.head {
            for c in &mut classified {
                c.mask_probability = head.probability(&c.features)?;
            }
        }
        Ok(classified)
    }

    fn face(&self, raw: RawFace, mask_probability: f32) -> Face {
        let c = &self.config;
        let label = if mask_probability >= c.mask_threshold {
            Label::Mask
        } else {
            Label::NoMask
        };
        let width = raw.bbox[2] - raw.bbox[0];
        let uncertain_reason = if width < c.uncertain_face_size {
            Some(UncertainReason::SmallFace)
        } else if (mask_probability - c.mask_threshold).abs() < c.uncertain_margin {
            Some(UncertainReason::NearThreshold)
        } else {
            None
        };
        Face {
            bbox: raw.bbox,
            score: raw.score,
            landmarks: raw.landmarks,
            mask_probability,
            label,
            uncertain: uncertain_reason.is_some(),
            uncertain_reason,
        }
    }
}

/// RGB8 for the models: grayscale expanded, transparency composited over white (a transparent
/// PNG's hidden colour values are arbitrary and would otherwise leak into the result).
fn to_rgb(image: &DynamicImage, config: &Config) -> Result<RgbImage> {
    decode::check_dimensions(image.width(), image.height(), config)?;
    if !image.color().has_alpha() {
        return Ok(image.to_rgb8());
    }
    let rgba = image.to_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = src[3] as u32;
        for c in 0..3 {
            dst[c] = ((src[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Detector>();
    }

    #[test]
    fn alpha_is_composited_over_white() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            2,
            2,
            image::Rgba([0, 0, 0, 0]),
        ));
        let rgb = to_rgb(&img, &Config::default()).unwrap();
        assert_eq!(rgb.get_pixel(0, 0), &image::Rgb([255, 255, 255]));
    }
}

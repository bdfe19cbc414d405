//! Detector configuration.

use crate::{Error, MaskHead, Result};

/// Settings of a [`crate::Detector`]. `Default` gives the values measured best on the evaluation
/// set's `train` split; [`Config::validate`] is called by the detector's constructors.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The face detector sees the image scaled so that its longer side is this many pixels
    /// (then padded to multiples of 32). Small photos are scaled up: faces in them are small too.
    pub input_long_side: u32,
    /// Minimum CenterFace heatmap score for a face.
    pub face_threshold: f32,
    /// Non-maximum suppression IoU: overlapping boxes above it are merged into the best one.
    pub nms_iou: f32,
    /// Faces narrower than this (pixels, in the original image) are dropped.
    pub min_face_size: f32,
    /// Fraction of the box size added on every side of a face before it is cropped for the
    /// mask classifier.
    pub crop_margin: f32,
    /// Which head gives the mask probability: our trained head (default) or the shipped softmax.
    pub mask_head: MaskHead,
    /// A face is `mask` when its mask probability is at least this. Both heads put their decision
    /// boundary at 0.5 (ours has the threshold chosen by cross-validation folded in).
    pub mask_threshold: f32,
    /// Faces narrower than this (pixels) are flagged `uncertain` (`small_face`): too few pixels for
    /// the classifier to judge.
    pub uncertain_face_size: f32,
    /// Faces whose mask probability is within this distance of `mask_threshold` are flagged
    /// `uncertain` (`near_threshold`).
    pub uncertain_margin: f32,
    /// Largest accepted image, in pixels (width x height), checked before decoding.
    pub max_pixels: u64,
    /// Largest accepted image side, in pixels, checked before decoding.
    pub max_side: u32,
    /// Largest allocation the image decoder may make, in bytes.
    pub max_decode_alloc: u64,
    /// How many runnable face-detector plans (one per input shape) are kept.
    pub plan_cache_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Chosen on the train split (`tune_detector`, MODEL_CARD.md): the best face recall at
            // precision >= 0.90. 800 px finds more of the small faces than 640 at 1.6x the cost;
            // 960 adds little more. A minimum face width only lost recall.
            input_long_side: 800,
            face_threshold: 0.45,
            nms_iou: 0.3,
            min_face_size: 0.0,
            // Some context around the face (straps, chin) helps; our head was fitted on crops
            // with this margin, so change the two together.
            crop_margin: 0.2,
            mask_head: MaskHead::Trained,
            mask_threshold: 0.5,
            // Below 12 px wide the head's cross-validated balanced accuracy drops from ~0.95 to
            // ~0.83 (MODEL_CARD.md): such faces are flagged rather than trusted.
            uncertain_face_size: 12.0,
            uncertain_margin: 0.1,
            max_pixels: 50_000_000,
            max_side: 20_000,
            max_decode_alloc: 512 * 1024 * 1024,
            plan_cache_size: 16,
        }
    }
}

impl Config {
    /// Check every value is in its range; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be in [0, 1], got {v}")))
            }
        };
        unit("face_threshold", self.face_threshold)?;
        unit("nms_iou", self.nms_iou)?;
        unit("mask_threshold", self.mask_threshold)?;
        unit("uncertain_margin", self.uncertain_margin)?;
        if !(32..=4096).contains(&self.input_long_side) {
            return Err(Error::Config(format!(
                "input_long_side must be in [32, 4096], got {}",
                self.input_long_side
            )));
        }
        if !(0.0..=2.0).contains(&self.crop_margin) {
            return Err(Error::Config(format!(
                "crop_margin must be in [0, 2], got {}",
                self.crop_margin
            )));
        }
        if !(self.min_face_size >= 0.0 && self.uncertain_face_size >= 0.0) {
            return Err(Error::Config(
                "min_face_size and uncertain_face_size must be >= 0".into(),
            ));
        }
        if self.max_pixels == 0 || self.max_side == 0 || self.max_decode_alloc == 0 {
            return Err(Error::Config(
                "max_pixels, max_side and max_decode_alloc must be > 0".into(),
            ));
        }
        if self.plan_cache_size == 0 {
            return Err(Error::Config("plan_cache_size must be > 0".into()));
        }
        Ok(())
    }
}

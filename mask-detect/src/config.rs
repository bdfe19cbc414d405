//! Detector configuration.

use serde::{Deserialize, Serialize};

use crate::{Error, MaskHead, Result, Verifier};

/// How hard the detector looks for faces: one CenterFace run, or three and a verifier.
///
/// Serialises (serde), parses ([`std::str::FromStr`]) and displays as its lower-case name,
/// `fast` or `accurate`, so it can be a configuration file's or a command line's value as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Preset {
    /// CenterFace once, on the image scaled to [`Config::input_long_side`]; a face is every box
    /// scoring above [`Config::face_threshold`]. The default.
    #[default]
    Fast,
    /// CenterFace three times: at [`Config::input_long_side`], on the same image mirrored, and at
    /// [`Config::large_long_side`]. Every box scoring above [`Config::candidate_threshold`] in
    /// any of them is a candidate; overlapping candidates are merged into one, each is classified,
    /// and the face verifier ([`Config::verifier`]) decides from the three scores, the boxes'
    /// agreement and the classifier's features which candidates are faces. Finds more of the
    /// small and unusual faces, at about three times the cost of `Fast` (ACCURACY.md).
    Accurate,
}

impl Preset {
    /// Both presets, `fast` first.
    pub const ALL: [Preset; 2] = [Preset::Fast, Preset::Accurate];

    /// The preset's name: `fast` or `accurate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Fast => "fast",
            Preset::Accurate => "accurate",
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Preset`] from a string other than `fast` or `accurate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {0:?} (expected \"fast\" or \"accurate\")")]
pub struct ParsePresetError(pub String);

impl std::str::FromStr for Preset {
    type Err = ParsePresetError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParsePresetError(s.to_string()))
    }
}

/// Settings of a [`crate::Detector`]. `Default` gives the values measured best on the evaluation
/// set's `train` split; [`Config::validate`] is called by the detector's constructors.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One CenterFace run ([`Preset::Fast`], the default) or three and a verifier
    /// ([`Preset::Accurate`]).
    pub preset: Preset,
    /// The face detector sees the image scaled so that its longer side is this many pixels
    /// (then padded to multiples of 32). Small photos are scaled up: faces in them are small too.
    pub input_long_side: u32,
    /// Minimum CenterFace heatmap score for a face ([`Preset::Fast`]).
    pub face_threshold: f32,
    /// [`Preset::Accurate`]: the longer side of the image in CenterFace's third run, in pixels.
    pub large_long_side: u32,
    /// [`Preset::Accurate`]: minimum CenterFace score, in any of its three runs, for a box to
    /// become a candidate that the verifier judges. The verifier was fitted on candidates above
    /// this score: change the two together.
    pub candidate_threshold: f32,
    /// [`Preset::Accurate`]: the head that decides which candidates are faces, our fitted one by
    /// default.
    pub verifier: Verifier,
    /// [`Preset::Accurate`]: a candidate is a face when the verifier's probability is at least
    /// this. The verifier's own threshold, chosen by cross-validation, is folded in so that 0.5
    /// is its decision boundary; higher trades recall for precision.
    pub verifier_threshold: f32,
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
    /// How many runnable face-detector plans (one per input shape) are kept per CenterFace input
    /// size: this many in [`Preset::Fast`], twice as many in [`Preset::Accurate`] (two sizes).
    pub plan_cache_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            preset: Preset::Fast,
            // Chosen on the train split (`tune_detector`, MODEL_CARD.md): the best face recall at
            // precision >= 0.90. 800 px finds more of the small faces than 640 at 1.6x the cost;
            // 960 adds little more. A minimum face width only lost recall.
            input_long_side: 800,
            face_threshold: 0.45,
            // The settings the embedded verifier was fitted with (MODEL_CARD.md).
            large_long_side: crate::verifier::LARGE_LONG_SIDE,
            candidate_threshold: crate::verifier::CANDIDATE_THRESHOLD,
            verifier: Verifier::Trained,
            verifier_threshold: 0.5,
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
        unit("candidate_threshold", self.candidate_threshold)?;
        unit("verifier_threshold", self.verifier_threshold)?;
        unit("nms_iou", self.nms_iou)?;
        unit("mask_threshold", self.mask_threshold)?;
        unit("uncertain_margin", self.uncertain_margin)?;
        if !(32..=4096).contains(&self.input_long_side) {
            return Err(Error::Config(format!(
                "input_long_side must be in [32, 4096], got {}",
                self.input_long_side
            )));
        }
        if !(32..=4096).contains(&self.large_long_side) {
            return Err(Error::Config(format!(
                "large_long_side must be in [32, 4096], got {}",
                self.large_long_side
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_display_and_serialise_as_lower_case_names() {
        for p in Preset::ALL {
            assert_eq!(p.to_string().parse::<Preset>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
            assert_eq!(
                serde_json::from_str::<Preset>(&format!("\"{p}\"")).unwrap(),
                p
            );
        }
        assert_eq!("fast".parse::<Preset>(), Ok(Preset::Fast));
        assert_eq!("accurate".parse::<Preset>(), Ok(Preset::Accurate));
        let err = "Accurate".parse::<Preset>().unwrap_err();
        assert_eq!(err, ParsePresetError("Accurate".into()));
        assert!(err.to_string().contains("\"Accurate\""));
        assert!(serde_json::from_str::<Preset>("\"slow\"").is_err());
        assert_eq!(Config::default().preset, Preset::Fast);
    }

    #[test]
    fn accurate_settings_are_validated() {
        let bad = [
            Config {
                candidate_threshold: 1.5,
                ..Config::default()
            },
            Config {
                verifier_threshold: -0.1,
                ..Config::default()
            },
            Config {
                large_long_side: 8,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(Error::Config(_))), "{c:?}");
        }
        let accurate = Config {
            preset: Preset::Accurate,
            ..Config::default()
        };
        assert!(accurate.validate().is_ok());
    }
}

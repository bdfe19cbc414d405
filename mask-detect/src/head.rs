//! Our mask classifier head: logistic regression on the backbone's 1280-d pooled features.
//!
//! The shipped MobileNetV2's own softmax head calls barely half of the masked faces of real
//! photos "mask", while its pooled features separate the two classes well. `tools/train_head.py`
//! fits a standardised logistic regression on those features (train split of the evaluation set
//! only, faces cropped exactly as [`crate::Detector`] crops them) and writes it as a small JSON
//! file, `heads/mask_head.json`, which is embedded here. See `MODEL_CARD.md` in the crate.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::{Error, Result};

/// The head trained by `tools/train_head.py`, embedded at build time.
const EMBEDDED_JSON: &str = include_str!("../heads/mask_head.json");
/// The name the embedded head goes by in error messages.
const EMBEDDED_NAME: &str = "heads/mask_head.json (embedded)";
/// The only file format this crate reads.
pub const HEAD_FORMAT: &str = "mask-detect-linear-head/1";

/// Which head turns a face crop's features into its mask probability.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum MaskHead {
    /// Our logistic-regression head, `heads/mask_head.json`, embedded in the crate (the default).
    #[default]
    Trained,
    /// The softmax head shipped inside `mask_classifier.onnx`, as its authors trained it.
    Shipped,
    /// Another head in the same format, e.g. one just rebuilt by `tools/train_head.py` (see
    /// [`LinearHead::from_json`]).
    Custom(Arc<LinearHead>),
}

/// A standardised logistic regression on the classifier's pooled features.
///
/// `probability(x) = sigmoid(coef . ((x - mean) / scale) + intercept - logit(threshold))`: the
/// decision threshold chosen by cross-validation is folded in, so a probability of 0.5 is the
/// head's decision boundary, just as for the shipped softmax, and
/// [`crate::Config::mask_threshold`] keeps its meaning for both heads.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    mean: Vec<f32>,
    scale: Vec<f32>,
    coef: Vec<f32>,
    intercept: f64,
    threshold: f64,
}

#[derive(Deserialize)]
struct HeadFile {
    format: String,
    mean: Vec<f32>,
    scale: Vec<f32>,
    coef: Vec<f32>,
    intercept: f64,
    threshold: f64,
}

impl LinearHead {
    /// Read a head from the JSON written by `tools/train_head.py` (extra fields such as the
    /// provenance are ignored). [`Error::ModelInvalid`] when it is not valid JSON of that format,
    /// the vectors differ in length, a number is not finite, a scale is not positive or the
    /// threshold is not strictly between 0 and 1.
    pub fn from_json(text: &str) -> Result<LinearHead> {
        LinearHead::parse("mask head JSON", text)
    }

    /// The head embedded in the crate (`heads/mask_head.json`), parsed once.
    pub fn embedded() -> Result<Arc<LinearHead>> {
        static HEAD: OnceLock<std::result::Result<Arc<LinearHead>, String>> = OnceLock::new();
        HEAD.get_or_init(|| {
            LinearHead::parse(EMBEDDED_NAME, EMBEDDED_JSON)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| Error::ModelInvalid {
            name: EMBEDDED_NAME.into(),
            message,
        })
    }

    fn parse(name: &str, text: &str) -> Result<LinearHead> {
        let invalid = |message: String| Error::ModelInvalid {
            name: name.to_string(),
            message,
        };
        let f: HeadFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if f.format != HEAD_FORMAT {
            return Err(invalid(format!(
                "format is {:?}, expected {HEAD_FORMAT:?}",
                f.format
            )));
        }
        let n = f.coef.len();
        if n == 0 || f.mean.len() != n || f.scale.len() != n {
            return Err(invalid(format!(
                "mean, scale and coef must have one equal, non-zero length; got {}, {}, {n}",
                f.mean.len(),
                f.scale.len()
            )));
        }
        let finite = f.mean.iter().chain(&f.coef).all(|v| v.is_finite());
        if !finite || !f.intercept.is_finite() || f.scale.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(invalid(
                "every number must be finite and every scale positive".into(),
            ));
        }
        if !(f.threshold > 0.0 && f.threshold < 1.0) {
            return Err(invalid(format!(
                "threshold must be in (0, 1), got {}",
                f.threshold
            )));
        }
        Ok(LinearHead {
            mean: f.mean,
            scale: f.scale,
            coef: f.coef,
            intercept: f.intercept,
            threshold: f.threshold,
        })
    }

    /// Length of the feature vector the head expects (1280 for MobileNetV2).
    pub fn dim(&self) -> usize {
        self.coef.len()
    }

    /// The probability threshold chosen by cross-validation on the raw logistic output; it is
    /// folded into [`LinearHead::probability`], which is 0.5 there.
    pub fn threshold(&self) -> f32 {
        self.threshold as f32
    }

    /// Mask probability of one crop's pooled features. [`Error::Inference`] when `features` does
    /// not have [`LinearHead::dim`] values (the classifier model has no `features` output, or a
    /// different backbone).
    pub fn probability(&self, features: &[f32]) -> Result<f32> {
        if features.len() != self.dim() {
            return Err(Error::Inference(format!(
                "the mask head needs {} features, the classifier gave {}",
                self.dim(),
                features.len()
            )));
        }
        let mut z = self.intercept - (self.threshold / (1.0 - self.threshold)).ln();
        for (((x, m), s), c) in features
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.coef)
        {
            z += f64::from(*c) * (f64::from(*x) - f64::from(*m)) / f64::from(*s);
        }
        Ok((1.0 / (1.0 + (-z).exp())) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_json(threshold: f64) -> String {
        format!(
            r#"{{"format": "{HEAD_FORMAT}", "mean": [1.0, 0.0], "scale": [2.0, 1.0],
                "coef": [1.0, -1.0], "intercept": 0.5, "threshold": {threshold}, "provenance": {{}}}}"#
        )
    }

    #[test]
    fn probability_is_the_standardised_logistic_with_the_threshold_folded_in() {
        let h = LinearHead::from_json(&head_json(0.5)).unwrap();
        // z = 1 * (3 - 1) / 2 - 1 * 2 / 1 + 0.5 = -0.5
        let p = h.probability(&[3.0, 2.0]).unwrap();
        assert!((p - 1.0 / (1.0 + 0.5f32.exp())).abs() < 1e-6, "{p}");
        // At the raw threshold the folded probability is exactly one half.
        let h = LinearHead::from_json(&head_json(0.3)).unwrap();
        let raw_03 = (0.3f64 / 0.7).ln(); // z giving a raw probability of 0.3
        let x1 = 1.0 + 2.0 * (raw_03 - 0.5); // second feature 0
        let p = h.probability(&[x1 as f32, 0.0]).unwrap();
        assert!((p - 0.5).abs() < 1e-5, "{p}");
    }

    #[test]
    fn wrong_feature_length_is_an_error_not_a_panic() {
        let h = LinearHead::from_json(&head_json(0.5)).unwrap();
        assert!(matches!(h.probability(&[1.0]), Err(Error::Inference(_))));
        assert!(matches!(h.probability(&[]), Err(Error::Inference(_))));
    }

    #[test]
    fn malformed_heads_are_rejected_with_a_reason() {
        for bad in [
            "not json".to_string(),
            head_json(0.0),
            head_json(1.0),
            head_json(0.5).replace(HEAD_FORMAT, "other/1"),
            head_json(0.5).replace("[2.0, 1.0]", "[2.0, 0.0]"),
            head_json(0.5).replace("[1.0, -1.0]", "[1.0]"),
        ] {
            assert!(
                matches!(LinearHead::from_json(&bad), Err(Error::ModelInvalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_embedded_head_parses_and_has_1280_features() {
        let h = LinearHead::embedded().unwrap();
        assert_eq!(h.dim(), 1280);
        assert!(h.threshold() > 0.0 && h.threshold() < 1.0);
    }
}

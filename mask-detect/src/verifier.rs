//! The face verifier of [`crate::Preset::Accurate`]: which merged candidates are faces.
//!
//! CenterFace scores many real faces (small, turned, half hidden) below the threshold that keeps
//! its false positives rare. The accurate preset keeps every box above a low score from three
//! runs (the configured size, the same image mirrored, a larger size), merges the overlapping
//! ones into [`Candidate`]s, classifies each crop with the MobileNetV2 as usual, and then asks a
//! logistic regression whether it is a face: from the three scores, how well the runs' boxes
//! agree, the box's size and shape, and the MobileNetV2's pooled features (which know a face
//! from a wall). `tools/train_verifier.py` fits it on the evaluation set's `train` split only and
//! writes `heads/face_verifier.json`, embedded here; provenance in `MODEL_CARD.md`.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::{Error, RawFace, Result, iou};

/// The verifier fitted by `tools/train_verifier.py`, embedded at build time.
const EMBEDDED_JSON: &str = include_str!("../heads/face_verifier.json");
/// The name the embedded verifier goes by in error messages.
const EMBEDDED_NAME: &str = "heads/face_verifier.json (embedded)";
/// The only verifier file format this crate reads.
pub const VERIFIER_FORMAT: &str = "mask-detect-face-verifier/1";

/// The third run's long side the embedded verifier was fitted with ([`crate::Config`]'s default).
pub(crate) const LARGE_LONG_SIDE: u32 = 1120;
/// The candidate score the embedded verifier was fitted with ([`crate::Config`]'s default).
pub(crate) const CANDIDATE_THRESHOLD: f32 = 0.2;

/// The CenterFace runs of the accurate preset, in the order of [`Candidate::scores`].
pub(crate) const VIEWS: usize = 3;

/// Which verifier decides, in [`crate::Preset::Accurate`], which candidates are faces.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Verifier {
    /// Our fitted verifier, `heads/face_verifier.json`, embedded in the crate (the default).
    #[default]
    Trained,
    /// Another verifier in the same format, e.g. one just rebuilt by `tools/train_verifier.py`
    /// (see [`FaceVerifier::from_json`]).
    Custom(Arc<FaceVerifier>),
}

/// One face candidate of the accurate preset: the boxes of CenterFace's runs that overlap (IoU at
/// least [`crate::Config::nms_iou`]), merged. In the fast preset every face is a candidate seen
/// by the one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The best-scoring box of the group, with its score and landmarks.
    pub face: RawFace,
    /// The best score of each run: the configured size, mirrored, the larger size; `None` where
    /// that run found no box of the group (or the preset has no such run).
    pub scores: [Option<f32>; VIEWS],
    /// The box with that score, per run.
    pub boxes: [Option<[f32; 4]>; VIEWS],
}

/// Merge the runs' faces (each list already free of overlaps by non-maximum suppression, `runs[i]`
/// being the run of [`Candidate::scores`]`[i]`) into candidates, best score first: a face joins
/// the first candidate, in that order, whose box overlaps it by IoU at least `iou_threshold`.
/// With one run this keeps every face, in order.
pub(crate) fn merge(runs: [Vec<RawFace>; VIEWS], iou_threshold: f32) -> Vec<Candidate> {
    let mut all: Vec<(usize, RawFace)> = runs
        .into_iter()
        .enumerate()
        .flat_map(|(v, faces)| faces.into_iter().map(move |f| (v, f)))
        .collect();
    // Stable: equal scores stay in run order.
    all.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let mut out: Vec<Candidate> = Vec::new();
    for (v, face) in all {
        if let Some(c) = out
            .iter_mut()
            .find(|c| iou(&c.face.bbox, &face.bbox) >= iou_threshold)
        {
            if c.scores[v].is_none() {
                c.scores[v] = Some(face.score);
                c.boxes[v] = Some(face.bbox);
            }
            continue;
        }
        let mut scores = [None; VIEWS];
        let mut boxes = [None; VIEWS];
        scores[v] = Some(face.score);
        boxes[v] = Some(face.bbox);
        out.push(Candidate {
            face,
            scores,
            boxes,
        });
    }
    out
}

/// The names of the signals a verifier may use besides the 1280 pooled features, in the order
/// [`signals`] computes them. A verifier file lists the ones it uses by name.
pub const SIGNALS: [&str; 13] = [
    "score_base",
    "score_flip",
    "score_large",
    "score_max",
    "score_mean",
    "views",
    "log_width",
    "log_aspect",
    "log_rel_width",
    "iou_base_flip",
    "iou_base_large",
    "iou_flip_large",
    "softmax",
];

/// The verifier's signals of one candidate (see [`SIGNALS`]) in an image of `width x height`
/// pixels, given the shipped softmax's mask probability of its crop.
pub fn signals(
    candidate: &Candidate,
    width: u32,
    height: u32,
    softmax: f32,
) -> [f32; SIGNALS.len()] {
    let s = candidate.scores.map(|s| s.unwrap_or(0.0));
    let present = candidate.scores.iter().filter(|s| s.is_some()).count() as f32;
    let b = &candidate.face.bbox;
    let bw = (b[2] - b[0]).max(1.0);
    let bh = (b[3] - b[1]).max(1.0);
    let agree = |i: usize, j: usize| match (&candidate.boxes[i], &candidate.boxes[j]) {
        (Some(a), Some(b)) => iou(a, b),
        _ => 0.0,
    };
    [
        s[0],
        s[1],
        s[2],
        s.iter().copied().fold(0.0, f32::max),
        s.iter().sum::<f32>() / VIEWS as f32,
        present,
        bw.ln(),
        (bh / bw).ln(),
        (bw / width.max(height).max(1) as f32).ln(),
        agree(0, 1),
        agree(0, 2),
        agree(1, 2),
        softmax,
    ]
}

/// A standardised logistic regression deciding whether a candidate is a face.
///
/// `probability = sigmoid(coef . ((x - mean) / scale) + intercept - logit(threshold))`, `x`
/// being the verifier's signals (those it names, in its order) followed, when it uses them, by
/// the classifier's 1280 pooled features. The threshold chosen by cross-validation is folded in,
/// so 0.5 is the decision boundary ([`crate::Config::verifier_threshold`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceVerifier {
    /// Index into [`SIGNALS`] of each signal used, in the file's order.
    signals: Vec<usize>,
    /// Number of pooled features used after the signals (0 or the backbone's 1280).
    features: usize,
    mean: Vec<f32>,
    scale: Vec<f32>,
    coef: Vec<f32>,
    intercept: f64,
    threshold: f64,
}

#[derive(Deserialize)]
struct VerifierFile {
    format: String,
    signals: Vec<String>,
    features: usize,
    mean: Vec<f32>,
    scale: Vec<f32>,
    coef: Vec<f32>,
    intercept: f64,
    threshold: f64,
}

impl FaceVerifier {
    /// Read a verifier from the JSON written by `tools/train_verifier.py` (extra fields such as
    /// the provenance are ignored). [`Error::ModelInvalid`] when it is not valid JSON of that
    /// format, names a signal this crate does not compute, its vectors' lengths differ from the
    /// signals plus features, a number is not finite, a scale is not positive or the threshold
    /// is not strictly between 0 and 1.
    pub fn from_json(text: &str) -> Result<FaceVerifier> {
        FaceVerifier::parse("face verifier JSON", text)
    }

    /// The verifier embedded in the crate (`heads/face_verifier.json`), parsed once.
    pub fn embedded() -> Result<Arc<FaceVerifier>> {
        static VERIFIER: OnceLock<std::result::Result<Arc<FaceVerifier>, String>> = OnceLock::new();
        VERIFIER
            .get_or_init(|| {
                FaceVerifier::parse(EMBEDDED_NAME, EMBEDDED_JSON)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|message| Error::ModelInvalid {
                name: EMBEDDED_NAME.into(),
                message,
            })
    }

    fn parse(name: &str, text: &str) -> Result<FaceVerifier> {
        let invalid = |message: String| Error::ModelInvalid {
            name: name.to_string(),
            message,
        };
        let f: VerifierFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if f.format != VERIFIER_FORMAT {
            return Err(invalid(format!(
                "format is {:?}, expected {VERIFIER_FORMAT:?}",
                f.format
            )));
        }
        let signals = f
            .signals
            .iter()
            .map(|s| {
                SIGNALS
                    .iter()
                    .position(|k| k == s)
                    .ok_or_else(|| invalid(format!("unknown signal {s:?}")))
            })
            .collect::<Result<Vec<usize>>>()?;
        let n = signals.len() + f.features;
        if n == 0 || f.coef.len() != n || f.mean.len() != n || f.scale.len() != n {
            return Err(invalid(format!(
                "mean, scale and coef must each have one value per signal and feature ({n}); got {}, {}, {}",
                f.mean.len(),
                f.scale.len(),
                f.coef.len()
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
        Ok(FaceVerifier {
            signals,
            features: f.features,
            mean: f.mean,
            scale: f.scale,
            coef: f.coef,
            intercept: f.intercept,
            threshold: f.threshold,
        })
    }

    /// How many pooled features the verifier reads after its signals (0 or 1280).
    pub fn features(&self) -> usize {
        self.features
    }

    /// The probability threshold chosen by cross-validation on the raw logistic output; it is
    /// folded into [`FaceVerifier::probability`], which is 0.5 there.
    pub fn threshold(&self) -> f32 {
        self.threshold as f32
    }

    /// The probability that a candidate is a face, from all of its [`signals`] and its crop's
    /// pooled features. [`Error::Inference`] when the verifier reads features and `features` does
    /// not have as many.
    pub fn probability(&self, signals: &[f32; SIGNALS.len()], features: &[f32]) -> Result<f32> {
        if self.features > 0 && features.len() != self.features {
            return Err(Error::Inference(format!(
                "the face verifier needs {} features, the classifier gave {}",
                self.features,
                features.len()
            )));
        }
        let x = self
            .signals
            .iter()
            .map(|&i| signals[i])
            .chain(features.iter().take(self.features).copied());
        let mut z = self.intercept - (self.threshold / (1.0 - self.threshold)).ln();
        for (((x, m), s), c) in x.zip(&self.mean).zip(&self.scale).zip(&self.coef) {
            z += f64::from(*c) * (f64::from(x) - f64::from(*m)) / f64::from(*s);
        }
        Ok((1.0 / (1.0 + (-z).exp())) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(bbox: [f32; 4], score: f32) -> RawFace {
        RawFace {
            bbox,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    fn verifier_json(signals: &str, features: usize, n: usize, threshold: f64) -> String {
        let v = |x: f32| format!("[{}]", vec![x.to_string(); n].join(", "));
        format!(
            r#"{{"format": "{VERIFIER_FORMAT}", "signals": {signals}, "features": {features},
                "mean": {}, "scale": {}, "coef": {}, "intercept": 0.25, "threshold": {threshold},
                "provenance": {{}}}}"#,
            v(0.5),
            v(2.0),
            v(1.0)
        )
    }

    #[test]
    fn merge_groups_overlapping_boxes_of_the_runs_and_keeps_the_best_box() {
        let runs = [
            vec![
                face([0.0, 0.0, 10.0, 10.0], 0.6),
                face([50.0, 0.0, 60.0, 10.0], 0.2),
            ],
            vec![face([1.0, 0.0, 11.0, 10.0], 0.8)],
            vec![face([100.0, 0.0, 110.0, 10.0], 0.3)],
        ];
        let c = merge(runs, 0.3);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].face.score, 0.8);
        assert_eq!(c[0].scores, [Some(0.6), Some(0.8), None]);
        assert_eq!(c[0].boxes[0], Some([0.0, 0.0, 10.0, 10.0]));
        assert_eq!(c[1].scores, [None, None, Some(0.3)]);
        assert_eq!(c[2].scores, [Some(0.2), None, None]);
        let s = signals(&c[0], 200, 100, 0.9);
        assert_eq!(s[3], 0.8); // score_max
        assert_eq!(s[5], 2.0); // views
        assert!((s[9] - 9.0 / 11.0).abs() < 1e-6); // iou_base_flip
        assert_eq!(s[10], 0.0);
        assert_eq!(s[12], 0.9);
    }

    #[test]
    fn merge_of_one_run_keeps_every_face_in_order() {
        let faces = vec![
            face([0.0, 0.0, 10.0, 10.0], 0.9),
            face([20.0, 0.0, 30.0, 10.0], 0.5),
        ];
        let c = merge([faces.clone(), Vec::new(), Vec::new()], 0.3);
        let kept: Vec<RawFace> = c.into_iter().map(|c| c.face).collect();
        assert_eq!(kept, faces);
    }

    #[test]
    fn probability_uses_the_named_signals_and_folds_the_threshold_in() {
        let v = FaceVerifier::from_json(&verifier_json(r#"["score_max", "views"]"#, 0, 2, 0.5))
            .unwrap();
        let mut s = [0.0; SIGNALS.len()];
        s[3] = 0.9;
        s[5] = 2.0;
        // z = (0.9 - 0.5) / 2 + (2 - 0.5) / 2 + 0.25 = 1.2
        let p = v.probability(&s, &[]).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.2f32).exp())).abs() < 1e-6, "{p}");
        let v = FaceVerifier::from_json(&verifier_json(r#"["score_max", "views"]"#, 0, 2, 0.2))
            .unwrap();
        let folded = v.probability(&s, &[]).unwrap();
        assert!(
            folded > p,
            "a lower threshold raises the folded probability"
        );
    }

    #[test]
    fn a_verifier_with_features_checks_their_number() {
        let v = FaceVerifier::from_json(&verifier_json(r#"["softmax"]"#, 3, 4, 0.5)).unwrap();
        let s = [0.0; SIGNALS.len()];
        assert!(v.probability(&s, &[1.0, 2.0, 3.0]).is_ok());
        assert!(matches!(
            v.probability(&s, &[1.0]),
            Err(Error::Inference(_))
        ));
    }

    #[test]
    fn malformed_verifiers_are_typed_errors() {
        for bad in [
            "not json".to_string(),
            "{}".to_string(),
            verifier_json(r#"["score_max"]"#, 0, 1, 0.0),
            verifier_json(r#"["score_max"]"#, 0, 1, 1.0),
            verifier_json(r#"["no_such_signal"]"#, 0, 1, 0.5),
            verifier_json(r#"["score_max"]"#, 0, 2, 0.5),
            verifier_json(r#"["score_max"]"#, 2, 2, 0.5),
            verifier_json("[]", 0, 0, 0.5),
            verifier_json(r#"["score_max"]"#, 0, 1, 0.5).replace(VERIFIER_FORMAT, "other/1"),
            verifier_json(r#"["score_max"]"#, 0, 1, 0.5).replace("[2]", "[0]"),
        ] {
            assert!(
                matches!(
                    FaceVerifier::from_json(&bad),
                    Err(Error::ModelInvalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_embedded_verifier_parses() {
        let v = FaceVerifier::embedded().unwrap();
        assert!(v.threshold() > 0.0 && v.threshold() < 1.0);
        assert!(v.features() == 0 || v.features() == 1280);
    }
}

//! Stage two: the MobileNetV2 mask classifier on each face crop.

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::plan::{PlanCache, run, tensor};
use crate::resize::resize_region;
use crate::{Error, Result};

/// Side of the square classifier input.
pub const CROP_SIZE: u32 = 224;
/// Batch sizes with a prepared plan: a run of `n` faces is split into these (largest first), so
/// every plan has a concrete shape. Only 1: tract runs a batch of 8 crops several times slower
/// per face than one crop at a time (`stage_times`; PERFORMANCE.md), so faces are classified one
/// by one.
const BATCHES: [usize; 1] = [1];

/// What the classifier says about one face crop.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Probability of `mask` from the configured head ([`crate::Config::mask_head`]): our trained
    /// head by default, whose decision boundary is 0.5.
    pub mask_probability: f32,
    /// The shipped softmax's probability of `mask` (index 0 of the model's output), whatever head
    /// is configured.
    pub softmax_probability: f32,
    /// The backbone's 1280-d pooled features (used to fit our own classifier head).
    pub features: Vec<f32>,
}

pub(crate) struct MaskModel {
    plans: PlanCache,
}

impl MaskModel {
    pub(crate) fn load(name: &str, bytes: &[u8]) -> Result<MaskModel> {
        Ok(MaskModel {
            plans: PlanCache::load(name, bytes, BATCHES.len())?,
        })
    }

    /// Classify already prepared 224x224 crops, in batches.
    pub(crate) fn classify(&self, crops: &[RgbImage]) -> Result<Vec<Classified>> {
        let mut out = Vec::with_capacity(crops.len());
        let mut rest = crops;
        while !rest.is_empty() {
            let n = BATCHES.into_iter().find(|&b| b <= rest.len()).unwrap_or(1);
            let (batch, tail) = rest.split_at(n);
            out.extend(self.run_batch(batch)?);
            rest = tail;
        }
        Ok(out)
    }

    fn run_batch(&self, crops: &[RgbImage]) -> Result<Vec<Classified>> {
        let side = CROP_SIZE as usize;
        // Channel-last, as the plan takes it: the crops' pixels in order, scaled to [-1, 1].
        let mut data = Vec::with_capacity(crops.len() * side * side * 3);
        for crop in crops {
            if crop.dimensions() != (CROP_SIZE, CROP_SIZE) {
                return Err(Error::Inference(format!(
                    "crop is {:?}, expected {CROP_SIZE}x{CROP_SIZE}",
                    crop.dimensions()
                )));
            }
            data.extend(crop.as_raw().iter().map(|&p| f32::from(p) / 127.5 - 1.0));
        }
        let input = tensor([crops.len(), side, side, 3], data)?;
        let plan = self.plans.plan(&[crops.len(), 3, side, side])?;
        let outputs = run(&plan, input)?;
        let probs = outputs
            .first()
            .ok_or_else(|| Error::Inference("classifier gave no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| Error::Inference(e.to_string()))?;
        let features = outputs
            .get(1)
            .map(|f| f.to_plain_array_view::<f32>().map(|v| v.to_owned()))
            .transpose()
            .map_err(|e| Error::Inference(e.to_string()))?;
        (0..crops.len())
            .map(|b| {
                let feats = features
                    .as_ref()
                    .map(|f| {
                        f.index_axis(tract_ndarray::Axis(0), b)
                            .iter()
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Classified {
                    mask_probability: probs[[b, 0]],
                    softmax_probability: probs[[b, 0]],
                    features: feats,
                })
            })
            .collect()
    }
}

/// Cut a face out of `image` for the classifier: the box grown by `margin` (a fraction of its
/// size on every side), clipped to the image, resized to 224x224. [`Error::Inference`] for an
/// image without pixels.
pub fn crop_face(image: &RgbImage, bbox: &[f32; 4], margin: f32) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::Inference(
            "cannot crop a face from an image without pixels".into(),
        ));
    }
    let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let x1 = (bbox[0] - bw * margin).floor().clamp(0.0, (w - 1) as f32) as u32;
    let y1 = (bbox[1] - bh * margin).floor().clamp(0.0, (h - 1) as f32) as u32;
    let x2 = (bbox[2] + bw * margin)
        .ceil()
        .clamp((x1 + 1) as f32, w as f32) as u32;
    let y2 = (bbox[3] + bh * margin)
        .ceil()
        .clamp((y1 + 1) as f32, h as f32) as u32;
    resize_region(image, [x1, y1, x2 - x1, y2 - y1], CROP_SIZE, CROP_SIZE)
}

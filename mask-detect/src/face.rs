//! Stage one: CenterFace face detection.

use image::RgbImage;

use crate::plan::{PlanCache, run, tensor};
use crate::resize::resize_region;
use crate::{Config, Error, Preset, Result};

/// A face as the detector sees it, before classification. Coordinates are in the original image.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFace {
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Heatmap score.
    pub score: f32,
    /// Five `[x, y]` landmarks.
    pub landmarks: [[f32; 2]; 5],
}

pub(crate) struct FaceModel {
    plans: PlanCache,
}

impl FaceModel {
    pub(crate) fn load(name: &str, bytes: &[u8], config: &Config) -> Result<FaceModel> {
        // Plans per input size: the accurate preset runs CenterFace at two sizes (the mirrored
        // run shares the first one's shapes), and each size's photos of the usual aspect ratios
        // must fit, or every photo would wait for its plans to be optimised again.
        let sizes = match config.preset {
            Preset::Fast => 1,
            Preset::Accurate => 2,
        };
        Ok(FaceModel {
            plans: PlanCache::load(name, bytes, config.plan_cache_size.saturating_mul(sizes))?,
        })
    }

    /// Find faces in an RGB image, as CenterFace sees it scaled to `long_side` (and mirrored left
    /// to right when `flip`), scoring above `threshold`; boxes and landmarks are in the original
    /// image's coordinates either way (a mirrored face's left eye is still its left eye).
    pub(crate) fn detect(
        &self,
        image: &RgbImage,
        long_side: u32,
        threshold: f32,
        flip: bool,
        config: &Config,
    ) -> Result<Vec<RawFace>> {
        let (w, h) = image.dimensions();
        let scale = long_side as f32 / w.max(h) as f32;
        let nw = ((w as f32 * scale).round() as u32).max(1);
        let nh = ((h as f32 * scale).round() as u32).max(1);
        let cw = nw.div_ceil(32) * 32;
        let ch = nh.div_ceil(32) * 32;
        let resized = resize_region(image, [0, 0, w, h], nw, nh)?;
        // The model wants RGB 0..255, unscaled; the plan takes it channel-last, so each resized
        // row goes in as it is, converted. The padding right and below stays zero.
        let (cw, ch, nw) = (cw as usize, ch as usize, nw as usize);
        let mut data = vec![0f32; ch * cw * 3];
        for (row, pixels) in data
            .chunks_exact_mut(cw * 3)
            .zip(resized.as_raw().chunks_exact(nw * 3))
        {
            if flip {
                for (v, p) in row.chunks_exact_mut(3).zip(pixels.chunks_exact(3).rev()) {
                    for (v, &p) in v.iter_mut().zip(p) {
                        *v = f32::from(p);
                    }
                }
            } else {
                for (v, &p) in row.iter_mut().zip(pixels) {
                    *v = f32::from(p);
                }
            }
        }
        let input = tensor([1, ch, cw, 3], data)?;
        let plan = self.plans.plan(&[1, 3, ch, cw])?;
        let outputs = run(&plan, input)?;
        if outputs.len() < 4 {
            return Err(Error::Inference(format!(
                "face model gave {} outputs, expected 4",
                outputs.len()
            )));
        }
        let view = |i: usize| {
            outputs[i]
                .to_plain_array_view::<f32>()
                .map_err(|e| Error::Inference(e.to_string()))
        };
        let (heat, sizes, offsets, marks) = (view(0)?, view(1)?, view(2)?, view(3)?);
        let (gh, gw) = (heat.shape()[2], heat.shape()[3]);
        let mut faces = Vec::new();
        for cy in 0..gh {
            for cx in 0..gw {
                let score = heat[[0, 0, cy, cx]];
                if score <= threshold {
                    continue;
                }
                let s0 = sizes[[0, 0, cy, cx]].exp() * 4.0;
                let s1 = sizes[[0, 1, cy, cx]].exp() * 4.0;
                let o0 = offsets[[0, 0, cy, cx]];
                let o1 = offsets[[0, 1, cy, cx]];
                let mut x1 = ((cx as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).clamp(0.0, nw as f32);
                let y1 = ((cy as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).clamp(0.0, nh as f32);
                let mut x2 = (x1 + s1).min(nw as f32);
                let y2 = (y1 + s0).min(nh as f32);
                let mut landmarks = [[0f32; 2]; 5];
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    let lx = marks[[0, 2 * j + 1, cy, cx]] * s1 + x1;
                    let ly = marks[[0, 2 * j, cy, cx]] * s0 + y1;
                    *lm = [lx, ly];
                }
                if flip {
                    // Back from the mirrored image: x -> nw - x, and the left and right
                    // landmarks (eyes, mouth corners) trade places.
                    (x1, x2) = (nw as f32 - x2, nw as f32 - x1);
                    for lm in &mut landmarks {
                        lm[0] = nw as f32 - lm[0];
                    }
                    landmarks.swap(0, 1);
                    landmarks.swap(3, 4);
                }
                for lm in &mut landmarks {
                    *lm = [lm[0] / scale, lm[1] / scale];
                }
                let bbox = [
                    (x1 / scale).min(w as f32),
                    (y1 / scale).min(h as f32),
                    (x2 / scale).min(w as f32),
                    (y2 / scale).min(h as f32),
                ];
                if bbox[2] - bbox[0] < config.min_face_size.max(1.0) || bbox[3] <= bbox[1] {
                    continue;
                }
                faces.push(RawFace {
                    bbox,
                    score,
                    landmarks,
                });
            }
        }
        Ok(nms(faces, config.nms_iou))
    }
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression: keep the best-scoring box, drop every box overlapping it with
/// IoU >= `threshold`, repeat. The result is sorted by descending score.
pub fn nms(mut faces: Vec<RawFace>, threshold: f32) -> Vec<RawFace> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawFace> = Vec::with_capacity(faces.len());
    for face in faces {
        if kept.iter().all(|k| iou(&k.bbox, &face.bbox) < threshold) {
            kept.push(face);
        }
    }
    kept
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

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_disjoint() {
        let faces = vec![
            face([0.0, 0.0, 10.0, 10.0], 0.6),
            face([1.0, 1.0, 11.0, 11.0], 0.9),
            face([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        let kept = nms(faces, 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.7);
    }
}

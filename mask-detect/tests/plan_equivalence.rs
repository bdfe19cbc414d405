//! The plans `Detector` runs compute what tract's own pipeline computes from the same ONNX
//! files: the convolutions taken out of tract (`GemmConv`, `DepthwisePointwise`,
//! `ExpandDepthwiseProject` nodes) and the channel-last rewrite change the speed, not the
//! numbers. Real models on a real photo.

// Test helpers panic on broken fixtures: that is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mask_detect::image::imageops::FilterType;
use tract_onnx::prelude::*;

const PHOTO: &str = "../fixtures/photos/maksssksksss0.png";

/// `shape` (NCHW) filled from the photo, resized, with `scale(v)` applied to each 0..255 value.
fn photo_input(shape: [usize; 4], scale: impl Fn(f32) -> f32) -> Tensor {
    let [_, _, h, w] = shape;
    let img = mask_detect::image::open(PHOTO)
        .expect("eval photo")
        .resize_exact(w as u32, h as u32, FilterType::Triangle)
        .to_rgb8();
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = scale(f32::from(p[c]));
        }
    }
    Tensor::from_shape(&shape, &data).unwrap()
}

fn tract_reference(path: &str, shape: &[usize]) -> Arc<TypedRunnableModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract's own plan")
}

/// Run both plans on `input` and compare every output: the largest difference must be within
/// `tolerance` of the output's largest magnitude.
fn assert_same_outputs(path: &str, input: Tensor) {
    let shape = input.shape().to_vec();
    let ours = mask_detect::optimised_model(&std::fs::read(path).unwrap(), &shape).unwrap();
    let count = |name: &str| ours.nodes().iter().filter(|n| n.op.name() == name).count();
    // Both models are MobileNetV2 blocks: more than ten must have become fused blocks, and no
    // depthwise convolution may be left to tract.
    let blocks = count("ExpandDepthwiseProject");
    assert!(blocks >= 10, "{path}: only {blocks} fused blocks");
    assert_eq!(count("DepthWiseConv"), 0, "{path}: tract depthwise left");
    let ours = ours.into_runnable().unwrap();
    let reference = tract_reference(path, &shape);
    // Ours takes the input channel-last.
    let got = ours
        .run(tvec!(input.moved_axis(1, 3).unwrap().into()))
        .unwrap();
    let want = reference.run(tvec!(input.into())).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{path} output {i}");
        let g = g.to_plain_array_view::<f32>().unwrap();
        let w = w.to_plain_array_view::<f32>().unwrap();
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = g
            .iter()
            .zip(w.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0, "{path} output {i} is all zeros");
        assert!(
            diff <= 1e-3 * scale,
            "{path} output {i}: largest difference {diff}, largest value {scale}"
        );
    }
}

#[test]
fn centerface_plan_matches_tract() {
    // 320x224 (multiples of 32, as `detect` pads): every layout of the model, small enough to
    // run fast in a debug test build.
    assert_same_outputs(
        "../models/centerface.onnx",
        photo_input([1, 3, 224, 320], |v| v),
    );
}

#[test]
fn classifier_plan_matches_tract() {
    assert_same_outputs(
        "../models/mask_classifier.onnx",
        photo_input([1, 3, 224, 224], |v| v / 127.5 - 1.0),
    );
}

#[test]
fn classifier_batch_plan_matches_tract() {
    // A batch of 8 keeps the batch axis through the 1x1 convolutions (`NIHW,OI->NOHW`).
    let one = photo_input([1, 3, 224, 224], |v| v / 127.5 - 1.0);
    let eight = Tensor::stack_tensors(0, &[&one; 8]).unwrap();
    assert_same_outputs("../models/mask_classifier.onnx", eight);
}

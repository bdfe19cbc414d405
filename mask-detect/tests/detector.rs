//! The detector on real labelled photos, with the real models: the repository's test photos
//! (`fixtures/photos`), and for the recall test the full evaluation set beside the repository
//! (`../shared/eval`) when it is there.

// Test helpers panic on broken fixtures: that is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use mask_detect::image::{DynamicImage, ImageFormat, Rgb};
use mask_detect::{
    Category, Config, Detection, Detector, Error, FaceVerifier, HEAD_FORMAT, Label, LinearHead,
    MaskHead, Preset, VERIFIER_FORMAT, Verifier, annotate, iou,
};
use serde_json::Value;

/// The repository's test photos and their labels (see `fixtures/README.md`).
const FIXTURES: &str = "../fixtures/photos";
/// The full labelled evaluation set, beside the repository (not part of it).
const EVAL: &str = "../../shared/eval";

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        Detector::from_dir("../models", Config::default())
            .expect("models missing: run `make models` first")
    })
}

fn accurate() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        let config = Config {
            preset: Preset::Accurate,
            ..Config::default()
        };
        Detector::from_dir("../models", config).expect("models missing: run `make models` first")
    })
}

struct Labelled {
    image: String,
    split: String,
    faces: Vec<([f32; 4], String)>,
}

/// The labels of the test photos.
fn manifest() -> Vec<Labelled> {
    read_manifest(FIXTURES)
}

/// The labels in `dir/manifest.jsonl`; each `image` is a path relative to `dir`.
fn read_manifest(dir: &str) -> Vec<Labelled> {
    let text = std::fs::read_to_string(format!("{dir}/manifest.jsonl")).expect("manifest");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Labelled {
                image: v["image"].as_str().unwrap().to_string(),
                split: v["split"].as_str().unwrap().to_string(),
                faces: v["faces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        let b: Vec<f32> = f["box"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap() as f32)
                            .collect();
                        (
                            [b[0], b[1], b[2], b[3]],
                            f["label"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A test photo, by file name.
fn read(image: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{image}")).unwrap()
}

/// Says on the terminal that a test did not run, and why. Written to stderr directly, not with
/// `eprintln!`, which the test harness captures and shows only for failing tests.
fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {reason}");
}

/// Test-split images whose every face is large (>= `min_px` wide) and labelled `label`.
fn clear_images(label: &str, min_px: f32, n: usize) -> Vec<Labelled> {
    manifest()
        .into_iter()
        .filter(|m| {
            m.split == "test"
                && !m.faces.is_empty()
                && m.faces
                    .iter()
                    .all(|(b, l)| l == label && b[2] - b[0] >= min_px)
        })
        .take(n)
        .collect()
}

#[test]
fn finds_the_labelled_faces_of_a_real_photo() {
    // maksssksksss0: three faces, two without a mask and one with.
    let d = detector().detect_bytes(&read("maksssksksss0.png")).unwrap();
    assert_eq!((d.width, d.height), (512, 366));
    let truth = &manifest()[0];
    assert_eq!(truth.image, "maksssksksss0.png");
    for (b, _) in &truth.faces {
        let best = d.faces.iter().map(|f| iou(&f.bbox, b)).fold(0.0, f32::max);
        assert!(
            best >= 0.4,
            "labelled face {b:?} not found; got {:?}",
            d.faces
        );
    }
    assert_eq!(d.num_faces, d.faces.len());
    assert_eq!(d.num_masked + d.num_unmasked, d.num_faces);
}

#[test]
fn recall_on_clear_faces_of_the_test_split() {
    // Recall needs many faces: the first 60 photos of the full set's test split.
    if !std::path::Path::new(EVAL).join("manifest.jsonl").is_file() {
        skip(&format!(
            "recall_on_clear_faces_of_the_test_split: the evaluation set {EVAL} (from mask-detect/) \
             is absent; put ../shared/eval beside the repository to run it"
        ));
        return;
    }
    let mut found = 0;
    let mut total = 0;
    for m in read_manifest(EVAL)
        .iter()
        .filter(|m| m.split == "test")
        .take(60)
    {
        let bytes = std::fs::read(format!("{EVAL}/{}", m.image)).unwrap();
        let d = detector().detect_bytes(&bytes).unwrap();
        for (b, _) in m.faces.iter().filter(|(b, _)| b[2] - b[0] >= 24.0) {
            total += 1;
            if d.faces.iter().any(|f| iou(&f.bbox, b) >= 0.4) {
                found += 1;
            }
        }
    }
    assert!(total > 50, "too few faces to judge: {total}");
    let recall = found as f64 / total as f64;
    assert!(
        recall >= 0.85,
        "recall on faces >= 24 px: {recall:.3} ({found}/{total})"
    );
}

#[test]
fn unmasked_faces_are_called_no_mask_and_categorised() {
    let images = clear_images("no_mask", 40.0, 8);
    assert!(
        images.len() >= 4,
        "need clear no-mask photos, got {}",
        images.len()
    );
    let mut right = 0;
    for m in &images {
        let d = detector().detect_bytes(&read(&m.image)).unwrap();
        if d.category == Category::NoneMasked {
            right += 1;
        }
    }
    assert!(
        right * 4 >= images.len() * 3,
        "{right}/{} none_masked",
        images.len()
    );
}

#[test]
fn masked_faces_score_higher_than_unmasked_faces() {
    let mean_prob = |label: &str| {
        let images = clear_images(label, 40.0, 8);
        let probs: Vec<f32> = images
            .iter()
            .flat_map(|m| {
                let d = detector().detect_bytes(&read(&m.image)).unwrap();
                let faces = m.faces.clone();
                d.faces
                    .into_iter()
                    .filter(move |f| faces.iter().any(|(b, _)| iou(&f.bbox, b) >= 0.4))
                    .map(|f| f.mask_probability)
            })
            .collect();
        assert!(probs.len() >= 4, "too few {label} faces matched");
        probs.iter().sum::<f32>() / probs.len() as f32
    };
    let (masked, unmasked) = (mean_prob("mask"), mean_prob("no_mask"));
    assert!(
        masked > unmasked + 0.2,
        "mask {masked:.3} vs no_mask {unmasked:.3}"
    );
}

#[test]
fn a_photo_without_people_has_no_face() {
    // A flat grey picture and a smooth gradient: nothing face-like.
    let grey = DynamicImage::ImageRgb8(mask_detect::image::RgbImage::from_pixel(
        320,
        240,
        Rgb([128, 128, 128]),
    ));
    let d = detector().detect(&grey).unwrap();
    assert_eq!(d.category, Category::NoFace);
    assert_eq!(d.num_faces, 0);
}

#[test]
fn json_schema_has_the_documented_fields() {
    let d = detector().detect_bytes(&read("maksssksksss0.png")).unwrap();
    let v = serde_json::to_value(&d).unwrap();
    for key in [
        "width",
        "height",
        "faces",
        "category",
        "num_faces",
        "num_masked",
        "num_unmasked",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let face = &v["faces"][0];
    assert_eq!(face["box"].as_array().unwrap().len(), 4);
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
    assert!(matches!(face["label"].as_str(), Some("mask" | "no_mask")));
    assert!(face["uncertain"].is_boolean());
    assert!(face.get("uncertain_reason").is_some());
    let back: Detection = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn grayscale_and_alpha_images_are_accepted() {
    let img = mask_detect::decode_image(&read("maksssksksss0.png"), &Config::default()).unwrap();
    let gray = detector()
        .detect(&DynamicImage::ImageLuma8(img.to_luma8()))
        .unwrap();
    let rgba = detector()
        .detect(&DynamicImage::ImageRgba8(img.to_rgba8()))
        .unwrap();
    assert!(gray.num_faces >= 2, "gray: {}", gray.num_faces);
    assert!(rgba.num_faces >= 2, "rgba: {}", rgba.num_faces);
}

/// Encode `image` as JPEG with an EXIF APP1 segment holding only `Orientation = orientation`.
fn jpeg_with_orientation(image: &DynamicImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .unwrap();
    // TIFF header (big endian), one IFD with one SHORT entry: tag 0x0112 Orientation.
    let mut tiff = vec![
        b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1,
    ];
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let upright =
        mask_detect::decode_image(&read("maksssksksss0.png"), &Config::default()).unwrap();
    // Stored rotated 90 degrees anticlockwise; orientation 6 tells viewers to turn it clockwise.
    let stored = upright.rotate270();
    let bytes = jpeg_with_orientation(&stored, 6);
    let decoded = mask_detect::decode_image(&bytes, &Config::default()).unwrap();
    assert_eq!(
        (decoded.width(), decoded.height()),
        (upright.width(), upright.height())
    );
    let d = detector().detect_bytes(&bytes).unwrap();
    let reference = detector().detect(&upright).unwrap();
    assert!(d.num_faces >= 2);
    for f in &reference.faces {
        let best = d
            .faces
            .iter()
            .map(|g| iou(&g.bbox, &f.bbox))
            .fold(0.0, f32::max);
        assert!(best > 0.5, "face {:?} lost after EXIF rotation", f.bbox);
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let d = detector();
    assert!(matches!(d.detect_bytes(b""), Err(Error::EmptyInput)));
    assert!(matches!(
        d.detect_bytes(b"this is not an image at all"),
        Err(Error::UnsupportedFormat)
    ));
    let png = read("maksssksksss0.png");
    let truncated = &png[..png.len() / 2];
    assert!(matches!(d.detect_bytes(truncated), Err(Error::Decode(_))));
    let mut corrupt = png.clone();
    for b in corrupt.iter_mut().skip(100).step_by(7) {
        *b ^= 0x5a;
    }
    let e = d.detect_bytes(&corrupt).unwrap_err();
    assert!(e.is_input_error(), "{e:?}");
}

#[test]
fn huge_declared_dimensions_fail_before_decoding() {
    // A BMP header declaring 50000 x 50000 pixels, 24 bit, with no pixel data behind it.
    let (w, h) = (50_000u32, 50_000u32);
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32).to_le_bytes()); // file size (a lie; never read that far)
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend_from_slice(&w.to_le_bytes());
    bmp.extend_from_slice(&h.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    match detector().detect_bytes(&bmp) {
        Err(Error::TooLarge { width, height, .. }) => assert_eq!((width, height), (w, h)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn missing_and_corrupt_models_are_named() {
    let dir = std::env::temp_dir().join(format!("mask-detect-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = Detector::from_dir(&dir, Config::default()).unwrap_err();
    assert!(
        matches!(&e, Error::ModelRead { path, .. } if path.ends_with("centerface.onnx")),
        "{e}"
    );
    std::fs::write(dir.join("centerface.onnx"), b"not a model").unwrap();
    std::fs::copy(
        "../models/mask_classifier.onnx",
        dir.join("mask_classifier.onnx"),
    )
    .unwrap();
    let e = Detector::from_dir(&dir, Config::default()).unwrap_err();
    assert!(
        matches!(&e, Error::ModelInvalid { name, .. } if name.contains("centerface.onnx")),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn annotate_draws_coloured_boxes_on_a_copy() {
    let img = mask_detect::decode_image(&read("maksssksksss0.png"), &Config::default()).unwrap();
    let d = detector().detect(&img).unwrap();
    let out = annotate(&img, &d);
    assert_eq!(out.dimensions(), (img.width(), img.height()));
    for f in &d.faces {
        // The box is drawn on rounded pixel edges, at least one pixel thick, inside the box.
        let (x, y) = ((f.bbox[0] + f.bbox[2]) / 2.0, f.bbox[3].round() - 1.0);
        let p = out.get_pixel(x as u32, y as u32);
        let want = if f.label == Label::Mask {
            Rgb([0, 200, 0])
        } else {
            Rgb([220, 0, 0])
        };
        assert_eq!(*p, want, "bottom edge of {:?}", f.bbox);
    }
}

#[test]
fn shared_between_threads_gives_the_same_answers() {
    let det: &'static Detector = detector();
    let images: Vec<Arc<Vec<u8>>> = manifest()
        .iter()
        .filter(|m| m.split == "test")
        .take(4)
        .map(|m| Arc::new(read(&m.image)))
        .collect();
    let serial: Vec<Detection> = images
        .iter()
        .map(|b| det.detect_bytes(b).unwrap())
        .collect();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let images = images.clone();
            std::thread::spawn(move || {
                images
                    .iter()
                    .map(|b| det.detect_bytes(b).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), serial);
    }
}

#[test]
fn the_default_detector_uses_our_trained_head() {
    assert_eq!(Config::default().mask_head, MaskHead::Trained);
    // Clear masked faces of the test split: the shipped softmax calls many of them no_mask; our
    // head must call nearly all of them mask.
    let images = clear_images("mask", 40.0, 8);
    assert!(
        images.len() >= 4,
        "need clear masked photos, got {}",
        images.len()
    );
    let (mut masked, mut total) = (0, 0);
    for m in &images {
        let d = detector().detect_bytes(&read(&m.image)).unwrap();
        for f in d
            .faces
            .iter()
            .filter(|f| m.faces.iter().any(|(b, _)| iou(&f.bbox, b) >= 0.4))
        {
            total += 1;
            masked += usize::from(f.label == Label::Mask);
        }
    }
    assert!(total >= 4, "too few masked faces matched: {total}");
    assert!(
        masked * 10 >= total * 9,
        "{masked}/{total} clear masked faces labelled mask"
    );
}

#[test]
fn the_shipped_head_gives_the_softmax_and_ours_differs() {
    let shipped = Detector::from_dir(
        "../models",
        Config {
            mask_head: MaskHead::Shipped,
            ..Config::default()
        },
    )
    .unwrap();
    let img = mask_detect::decode_image(&read("maksssksksss0.png"), &Config::default()).unwrap();
    let rgb = shipped.rgb_image(&img).unwrap();
    let faces = shipped.detect_faces(&rgb).unwrap();
    let crops: Vec<_> = faces
        .iter()
        .map(|f| mask_detect::crop_face(&rgb, &f.bbox, shipped.config().crop_margin).unwrap())
        .collect();
    let a = shipped.classify_crops(&crops).unwrap();
    let b = detector().classify_crops(&crops).unwrap();
    assert!(!a.is_empty());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.mask_probability, a.softmax_probability);
        assert_eq!(a.softmax_probability, b.softmax_probability);
        assert_eq!(a.features.len(), 1280);
        assert_eq!(a.features, b.features);
    }
    assert!(
        a.iter()
            .zip(&b)
            .any(|(a, b)| a.mask_probability != b.mask_probability)
    );
    // The full pipeline gives exactly the stage-by-stage result.
    let d = detector().detect(&img).unwrap();
    let probs: Vec<f32> = d.faces.iter().map(|f| f.mask_probability).collect();
    let staged: Vec<f32> = b.iter().map(|c| c.mask_probability).collect();
    assert_eq!(probs, staged);
}

#[test]
fn a_custom_head_is_used_and_a_bad_one_is_refused() {
    let text = std::fs::read_to_string("heads/mask_head.json").unwrap();
    let head = Arc::new(LinearHead::from_json(&text).unwrap());
    let custom = Detector::from_dir(
        "../models",
        Config {
            mask_head: MaskHead::Custom(head),
            ..Config::default()
        },
    )
    .unwrap();
    let bytes = read("maksssksksss0.png");
    assert_eq!(
        custom.detect_bytes(&bytes).unwrap(),
        detector().detect_bytes(&bytes).unwrap()
    );
    // A head for a different feature length cannot run on this classifier: refused at startup.
    let small = format!(
        r#"{{"format": "{HEAD_FORMAT}", "mean": [0.0], "scale": [1.0], "coef": [1.0], "intercept": 0.0, "threshold": 0.5}}"#
    );
    let e = Detector::from_dir(
        "../models",
        Config {
            mask_head: MaskHead::Custom(Arc::new(LinearHead::from_json(&small).unwrap())),
            ..Config::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::ModelInvalid { .. }), "{e}");
}

/// Labelled faces of `m` matched by `d`'s faces, with the referee's greedy IoU >= 0.4 matching.
fn matched(m: &Labelled, d: &Detection) -> usize {
    let mut pairs: Vec<(f32, usize, usize)> = m
        .faces
        .iter()
        .enumerate()
        .flat_map(|(i, (b, _))| {
            d.faces
                .iter()
                .enumerate()
                .map(move |(j, f)| (iou(b, &f.bbox), i, j))
        })
        .filter(|p| p.0 >= 0.4)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut gi, mut dj) = (vec![false; m.faces.len()], vec![false; d.faces.len()]);
    for (_, i, j) in pairs {
        if !gi[i] && !dj[j] {
            gi[i] = true;
            dj[j] = true;
        }
    }
    gi.into_iter().filter(|&g| g).count()
}

#[test]
fn the_accurate_preset_finds_more_of_the_small_faces() {
    // Test-split photos crowded with faces narrower than 16 px.
    let images: Vec<Labelled> = manifest()
        .into_iter()
        .filter(|m| {
            m.split == "test" && m.faces.iter().filter(|(b, _)| b[2] - b[0] < 16.0).count() >= 9
        })
        .collect();
    assert!(images.len() >= 4, "{} photos", images.len());
    let (mut fast, mut acc, mut total) = (0, 0, 0);
    for m in &images {
        let bytes = read(&m.image);
        let f = detector().detect_bytes(&bytes).unwrap();
        let a = accurate().detect_bytes(&bytes).unwrap();
        fast += matched(m, &f);
        acc += matched(m, &a);
        total += m.faces.len();
        assert_eq!(a.num_faces, a.faces.len());
        assert!(a.faces.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(a.faces.iter().all(|f| (0.5..=1.0).contains(&f.score)));
    }
    assert!(
        acc > fast,
        "accurate matched {acc} of {total} labelled faces, fast {fast}"
    );
}

#[test]
fn the_fast_preset_keeps_every_face_of_stage_one() {
    let rgb = detector()
        .rgb_image(&mask_detect::image::load_from_memory(&read("maksssksksss0.png")).unwrap())
        .unwrap();
    let raw = detector().detect_faces(&rgb).unwrap();
    let candidates = detector().detect_candidates(&rgb).unwrap();
    assert_eq!(
        candidates
            .iter()
            .map(|c| c.face.clone())
            .collect::<Vec<_>>(),
        raw
    );
    assert!(
        candidates
            .iter()
            .all(|c| c.scores[1].is_none() && c.scores[2].is_none())
    );
    let d = detector()
        .detect(&mask_detect::image::DynamicImage::ImageRgb8(rgb))
        .unwrap();
    assert_eq!(
        d.faces.iter().map(|f| f.bbox).collect::<Vec<_>>(),
        raw.iter().map(|f| f.bbox).collect::<Vec<_>>()
    );
}

#[test]
fn accurate_candidates_come_from_three_runs_and_include_the_fast_faces() {
    let rgb = accurate()
        .rgb_image(&mask_detect::image::load_from_memory(&read("maksssksksss0.png")).unwrap())
        .unwrap();
    let candidates = accurate().detect_candidates(&rgb).unwrap();
    for f in detector().detect_faces(&rgb).unwrap() {
        assert!(
            candidates.iter().any(|c| iou(&c.face.bbox, &f.bbox) >= 0.3),
            "fast face {f:?} is no candidate"
        );
    }
    for v in 0..3 {
        assert!(
            candidates.iter().any(|c| c.scores[v].is_some()),
            "run {v} found nothing"
        );
    }
    // The mirrored run maps its boxes back: it agrees with the plain run on the same faces.
    assert!(
        candidates.iter().any(|c| {
            matches!((c.boxes[0], c.boxes[1]), (Some(a), Some(b)) if iou(&a, &b) > 0.6)
        })
    );
}

#[test]
fn a_custom_verifier_is_used_and_a_bad_one_is_refused() {
    let with = |v: FaceVerifier| {
        Detector::from_dir(
            "../models",
            Config {
                preset: Preset::Accurate,
                verifier: Verifier::Custom(Arc::new(v)),
                ..Config::default()
            },
        )
    };
    // A verifier that takes every candidate: the detection is every candidate.
    let everything = format!(
        r#"{{"format": "{VERIFIER_FORMAT}", "signals": ["views"], "features": 0, "mean": [0.0],
            "scale": [1.0], "coef": [100.0], "intercept": 0.0, "threshold": 0.5}}"#
    );
    let all = with(FaceVerifier::from_json(&everything).unwrap()).unwrap();
    let bytes = read("maksssksksss0.png");
    let rgb = all
        .rgb_image(&mask_detect::image::load_from_memory(&bytes).unwrap())
        .unwrap();
    let n = all.detect_candidates(&rgb).unwrap().len();
    assert_eq!(all.detect_bytes(&bytes).unwrap().num_faces, n);
    assert!(n > accurate().detect_bytes(&bytes).unwrap().num_faces);
    // The embedded verifier's own file is the trained verifier.
    let text = std::fs::read_to_string("heads/face_verifier.json").unwrap();
    let same = with(FaceVerifier::from_json(&text).unwrap()).unwrap();
    assert_eq!(
        same.detect_bytes(&bytes).unwrap(),
        accurate().detect_bytes(&bytes).unwrap()
    );
    // One reading 3 features cannot run on this classifier's 1280: refused at startup.
    let short = format!(
        r#"{{"format": "{VERIFIER_FORMAT}", "signals": [], "features": 3, "mean": [0, 0, 0],
            "scale": [1, 1, 1], "coef": [1, 1, 1], "intercept": 0.0, "threshold": 0.5}}"#
    );
    let e = with(FaceVerifier::from_json(&short).unwrap()).unwrap_err();
    assert!(matches!(e, Error::ModelInvalid { .. }), "{e}");
    let e = FaceVerifier::from_json(r#"{"format": "mask-detect-face-verifier/1"}"#).unwrap_err();
    assert!(matches!(e, Error::ModelInvalid { .. }), "{e}");
}

//! Criterion benchmarks of the detector: face detection alone, mask classification alone (1 and
//! 8 faces) and the whole `detect` on real photos of different sizes, all single-threaded.
//!
//! Run with `cargo bench --profile dev --workspace --bench detector`: the workspace's one profile
//! and its feature set, so it reuses `make build` (`-p benches` alone would resolve other
//! dependency features and compile them again).

// A benchmark is a frontend: a missing model or photo should stop it at once, loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use mask_detect::image::{RgbImage, imageops};
use mask_detect::{Config, Detector, crop_face, decode_image};

fn load(name: &str) -> mask_detect::image::DynamicImage {
    let bytes = std::fs::read(benches::photo(name)).expect("test photo in fixtures/photos");
    decode_image(&bytes, &Config::default()).expect("decodable photo")
}

fn benches(c: &mut Criterion) {
    allocator::keep_freed_memory();
    let detector = Detector::from_dir(benches::workspace_root().join("models"), Config::default())
        .expect("models (run `make models`)");
    // Photos of different sizes: 400x156, 512x366, and one upscaled to a phone-like 1600x1143.
    let small = load("maksssksksss1.png");
    let medium = load("maksssksksss0.png");
    let large = medium.resize(1600, 1600, imageops::FilterType::Triangle);

    let rgb640: RgbImage =
        imageops::resize(&medium.to_rgb8(), 640, 480, imageops::FilterType::Triangle);
    c.bench_function("faces/640x480", |b| {
        b.iter(|| detector.detect_faces(&rgb640).unwrap())
    });

    let faces = detector.detect_faces(&medium.to_rgb8()).unwrap();
    let crop = crop_face(&medium.to_rgb8(), &faces[0].bbox, 0.0).unwrap();
    let one = vec![crop.clone()];
    let eight = vec![crop; 8];
    c.bench_function("classify/1", |b| {
        b.iter(|| detector.classify_crops(&one).unwrap())
    });
    c.bench_function("classify/8", |b| {
        b.iter(|| detector.classify_crops(&eight).unwrap())
    });

    for (name, img) in [
        ("400x156", &small),
        ("512x366", &medium),
        ("1600x1143", &large),
    ] {
        c.bench_function(&format!("detect/{name}"), |b| {
            b.iter(|| detector.detect(img).unwrap())
        });
    }
}

criterion_group! {
    name = detector;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(detector);

//! Per-stage wall-clock timings of our detector, printed as JSON for `benches/compare.py`, which
//! runs the same stages in onnxruntime and alternates with this program.
//!
//! ```text
//! stage_times [--reps N] [--models DIR] IMAGE...
//! ```
//!
//! Stages (each warmed up once, then timed `N` times with `std::time::Instant`):
//! `detect_faces_640x480` (the first image resized to 640x480), `classify_b1` and `classify_b8`
//! (the first face of the first image, once and eight times), `detect/<file>` (the whole `detect`
//! on each decoded image) and `throughput_2_threads` (one `Detector` shared by two threads, each
//! running `detect` over every image `N` times; images per second). Medians are in milliseconds.

// A benchmark frontend: a missing model or photo should stop it at once, loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use mask_detect::image::{DynamicImage, imageops};
use mask_detect::{Config, Detector, crop_face, decode_image};
use serde_json::{Value, json};

fn main() {
    allocator::keep_freed_memory();
    let mut reps = 5usize;
    let mut models = benches::workspace_root().join("models");
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--models" => models = args.next().map(PathBuf::from).expect("--models DIR"),
            "-h" | "--help" => {
                println!("usage: stage_times [--reps N] [--models DIR] IMAGE...");
                return;
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    assert!(!paths.is_empty(), "give at least one image path");
    assert!(reps > 0, "--reps must be positive");

    let start = Instant::now();
    let detector = Detector::from_dir(&models, Config::default()).expect("models load");
    let load_ms = ms(start);
    let images: Vec<(String, DynamicImage)> = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (
                name,
                decode_image(&bytes, detector.config()).expect("decodable photo"),
            )
        })
        .collect();

    let mut stages = serde_json::Map::new();
    let first = images[0].1.to_rgb8();
    let rgb640 = imageops::resize(&first, 640, 480, imageops::FilterType::Triangle);
    let samples = time(reps, || {
        detector.detect_faces(&rgb640).expect("detect_faces");
    });
    stages.insert("detect_faces_640x480".into(), stage(samples));

    let faces = detector.detect_faces(&first).expect("detect_faces");
    let bbox = faces.first().expect("a face in the first image").bbox;
    let crop = crop_face(&first, &bbox, detector.config().crop_margin).expect("crop");
    for n in [1usize, 8] {
        let crops = vec![crop.clone(); n];
        let samples = time(reps, || {
            detector.classify_crops(&crops).expect("classify_crops");
        });
        stages.insert(format!("classify_b{n}"), stage(samples));
    }

    let mut detect_medians = Vec::new();
    let mut num_faces = serde_json::Map::new();
    for (name, image) in &images {
        let found = detector.detect(image).expect("detect").num_faces;
        num_faces.insert(name.clone(), json!(found));
        let samples = time(reps, || {
            detector.detect(image).expect("detect");
        });
        detect_medians.push(median(&samples));
        stages.insert(format!("detect/{name}"), stage(samples));
    }

    // Plans for every image shape exist now (made above), so this measures steady state.
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..reps {
                    for (_, image) in &images {
                        detector.detect(image).expect("detect");
                    }
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let done = 2 * reps * images.len();

    let out = json!({
        "reps": reps,
        "load_ms": load_ms,
        "stages": stages,
        "detect_median_of_image_medians_ms": median(&detect_medians),
        "num_faces": num_faces,
        "throughput_2_threads": {"images": done, "seconds": wall, "images_per_s": done as f64 / wall},
        "vm_hwm_kb": vm_hwm_kb(),
    });
    println!("{out}");
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// One warm-up call (it builds the plan for the shape), then `reps` timed calls, in ms.
fn time(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            ms(start)
        })
        .collect()
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn stage(samples: Vec<f64>) -> Value {
    json!({"median_ms": median(&samples), "samples_ms": samples})
}

/// Peak resident set size of this process (Linux `VmHWM`), if readable.
fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

//! `candidates`: the training data of the accurate preset's face verifier.
//!
//! ```text
//! candidates [--split train|test|all] [--out DIR] [DETECTOR OPTIONS]
//! ```
//!
//! For every image of `../shared/eval/manifest.jsonl` in the split it runs stage one of the
//! accurate preset (whatever `--preset` says): CenterFace at `--long-side`, mirrored, and at
//! `--large-long-side`, every box above `--candidate-threshold`, overlapping boxes merged
//! ([`mask_detect::Detector::detect_candidates`]). Each candidate is cropped and classified
//! exactly as [`mask_detect::Detector::detect`] does, and matched to the labelled faces with the
//! referee's greedy IoU >= 0.4 matching over all of the image's candidates. It writes:
//!
//! - `DIR/candidates.jsonl`: one line per candidate, `{"image", "split", "box", "signals" (the
//!   values of `mask_detect::SIGNALS`, in that order), "mask_probability" (our head),
//!   "face": the index of the labelled face it matches or null}`;
//! - `DIR/features.npy`: float32 `[candidates, 1280]`, the pooled features of each crop, in
//!   `candidates.jsonl` order.
//!
//! `tools/train_verifier.py` fits the verifier on these files.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::ProgressBar;
use mask_detect::{Detector, Preset, crop_face, decode_image, signals};

use examples::{DetectorArgs, for_each_parallel, greedy_match, write_npy};

#[derive(Parser)]
#[command(
    version,
    about = "Dump the accurate preset's face candidates, their signals and features"
)]
struct Args {
    /// The evaluation set's directory (holds manifest.jsonl).
    #[arg(long, default_value = "../shared/eval")]
    eval: PathBuf,
    /// Which split: train, test or all.
    #[arg(long, default_value = "train")]
    split: String,
    /// Output directory.
    #[arg(long, default_value = "target/candidates")]
    out: PathBuf,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(serde::Deserialize)]
struct ManifestLine {
    image: String,
    split: String,
    faces: Vec<ManifestFace>,
}

#[derive(serde::Deserialize)]
struct ManifestFace {
    #[serde(rename = "box")]
    bbox: [f64; 4],
}

#[derive(serde::Serialize)]
struct Row {
    image: String,
    split: String,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    signals: Vec<f32>,
    mask_probability: f32,
    face: Option<usize>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("candidates: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    let mut config = args.detector.config()?;
    config.preset = Preset::Accurate;
    allocator::keep_freed_memory();
    let detector = Detector::from_dir(&args.detector.models, config)
        .map_err(|e| format!("{e} (run `make models` to fetch the models)"))?;
    let manifest = args.eval.join("manifest.jsonl");
    let file = std::fs::File::open(&manifest)
        .map_err(|e| format!("cannot open {}: {e}", manifest.display()))?;
    let mut entries = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let entry: ManifestLine =
            serde_json::from_str(&line).map_err(|e| format!("{}: {e}", manifest.display()))?;
        if args.split == "all" || entry.split == args.split {
            entries.push(entry);
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let rows_path = args.out.join("candidates.jsonl");
    let mut rows_out = std::fs::File::create(&rows_path)
        .map(BufWriter::new)
        .map_err(|e| format!("cannot write {}: {e}", rows_path.display()))?;
    let mut features: Vec<f32> = Vec::new();
    let (mut nrows, mut dim) = (0usize, 0usize);
    let bar = ProgressBar::new(entries.len() as u64);
    let mut result = Ok(());
    for_each_parallel(
        &entries,
        args.detector.jobs(),
        |entry| process(&detector, &args, entry),
        |r| {
            bar.inc(1);
            match r {
                Ok(rows) => {
                    for (row, f) in rows {
                        let line = serde_json::to_string(&row).unwrap_or_default();
                        if let Err(e) = writeln!(rows_out, "{line}") {
                            result = Err(e.to_string());
                        }
                        dim = f.len();
                        features.extend_from_slice(&f);
                        nrows += 1;
                    }
                }
                Err(e) => result = Err(e),
            }
        },
    );
    bar.finish_and_clear();
    result?;
    rows_out.flush().map_err(|e| e.to_string())?;
    let npy = args.out.join("features.npy");
    write_npy(&npy, &features, nrows, dim)?;
    eprintln!(
        "{} images, {nrows} candidates -> {}, {}",
        entries.len(),
        rows_path.display(),
        npy.display()
    );
    Ok(())
}

fn process(
    detector: &Detector,
    args: &Args,
    entry: &ManifestLine,
) -> Result<Vec<(Row, Vec<f32>)>, String> {
    let path = args.eval.join(&entry.image);
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| fail(&e))?;
    let image = decode_image(&bytes, detector.config()).map_err(|e| fail(&e))?;
    let rgb = detector.rgb_image(&image).map_err(|e| fail(&e))?;
    let candidates = detector.detect_candidates(&rgb).map_err(|e| fail(&e))?;
    let crops = candidates
        .iter()
        .map(|c| crop_face(&rgb, &c.face.bbox, detector.config().crop_margin))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    let classified = detector.classify_crops(&crops).map_err(|e| fail(&e))?;
    let truth: Vec<[f64; 4]> = entry.faces.iter().map(|f| f.bbox).collect();
    let found: Vec<[f64; 4]> = candidates
        .iter()
        .map(|c| c.face.bbox.map(f64::from))
        .collect();
    let mut face = vec![None; candidates.len()];
    for (gi, di) in greedy_match(&truth, &found, 0.4) {
        face[di] = Some(gi);
    }
    Ok(candidates
        .iter()
        .zip(classified)
        .zip(face)
        .map(|((c, cls), face)| {
            let s = signals(c, rgb.width(), rgb.height(), cls.softmax_probability);
            let row = Row {
                image: entry.image.clone(),
                split: entry.split.clone(),
                bbox: c.face.bbox,
                signals: s.to_vec(),
                mask_probability: cls.mask_probability,
                face,
            };
            (row, cls.features)
        })
        .collect())
}

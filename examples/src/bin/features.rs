//! `features`: the training data of our mask classifier head, cropped exactly as inference crops.
//!
//! ```text
//! features [--split all|train|test] [--out DIR] [--margins 0,0.15] [--no-features] [DETECTOR OPTIONS]
//! ```
//!
//! For every image of `../shared/eval/manifest.jsonl` in the split it runs the face detector (with
//! the detector options given; pass a low `--face-threshold` to sweep thresholds later) and writes:
//!
//! - `DIR/detections.jsonl`: `{"image", "split", "faces": [{"box", "score"}]}`, every raw face;
//! - `DIR/faces.jsonl`: one line per face crop, `{"image", "split", "source": "gt"|"det",
//!   "label", "box", "width", "score", "shipped": [p per margin]}`: every labelled box (`gt`), and
//!   every detector box scoring at least `--match-threshold` matched to a labelled box by greedy
//!   IoU >= 0.4 (`det`, carrying that box's label);
//! - `DIR/features-m{MARGIN}.npy`: float32 `[rows, 1280]`, the backbone's pooled features of each
//!   row's crop ([`mask_detect::crop_face`] with that margin), in `faces.jsonl` order.
//!
//! `tools/train_head.py` fits the head on these files.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::ProgressBar;
use mask_detect::{Detector, RawFace, crop_face, decode_image};

use examples::{DetectorArgs, for_each_parallel, greedy_match, write_npy};

#[derive(Parser)]
#[command(
    version,
    about = "Extract the classifier's pooled features of every labelled face"
)]
struct Args {
    /// The evaluation set's directory (holds manifest.jsonl).
    #[arg(long, default_value = examples::EVAL_DIR)]
    eval: PathBuf,
    /// Which split: train, test or all.
    #[arg(long, default_value = "all")]
    split: String,
    /// Output directory.
    #[arg(long, default_value = "target/features")]
    out: PathBuf,
    /// Crop margins to extract features for, comma separated (default: the configured margin).
    #[arg(long, value_delimiter = ',')]
    margins: Vec<f32>,
    /// Detector score a detector box needs to become a `det` training row.
    #[arg(long, default_value_t = 0.5)]
    match_threshold: f32,
    /// Only write detections.jsonl (for tuning the face detector).
    #[arg(long)]
    no_features: bool,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(serde::Deserialize)]
struct ManifestLine {
    image: String,
    split: String,
    faces: Vec<ManifestFace>,
}

#[derive(serde::Deserialize, Clone)]
struct ManifestFace {
    #[serde(rename = "box")]
    bbox: [f32; 4],
    label: String,
}

#[derive(serde::Serialize)]
struct Row {
    image: String,
    split: String,
    source: &'static str,
    label: String,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    width: f32,
    score: Option<f32>,
    shipped: Vec<f32>,
}

struct ImageResult {
    detections: serde_json::Value,
    rows: Vec<Row>,
    /// Per margin, per row: 1280 features.
    features: Vec<Vec<Vec<f32>>>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("features: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    let manifest = examples::eval_manifest(&args.eval)?;
    let detector = args.detector.detector()?;
    let margins = if args.margins.is_empty() {
        vec![detector.config().crop_margin]
    } else {
        args.margins.clone()
    };
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
    let create = |name: &str| {
        let p = args.out.join(name);
        std::fs::File::create(&p)
            .map(BufWriter::new)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    let mut det_out = create("detections.jsonl")?;
    let mut rows_out = if args.no_features {
        None
    } else {
        Some(create("faces.jsonl")?)
    };
    let mut features: Vec<Vec<f32>> = vec![Vec::new(); margins.len()];
    let mut nrows = 0usize;
    let bar = ProgressBar::new(entries.len() as u64);
    let mut result = Ok(());
    for_each_parallel(
        &entries,
        args.detector.jobs(),
        |entry| process(&detector, &args, &margins, entry),
        |r| {
            bar.inc(1);
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            let _ = writeln!(det_out, "{}", r.detections);
            if let Some(out) = rows_out.as_mut() {
                for row in &r.rows {
                    let _ = writeln!(out, "{}", serde_json::to_string(row).unwrap_or_default());
                }
            }
            nrows += r.rows.len();
            for (all, per_margin) in features.iter_mut().zip(r.features) {
                for f in per_margin {
                    all.extend_from_slice(&f);
                }
            }
        },
    );
    bar.finish_and_clear();
    result?;
    det_out.flush().map_err(|e| e.to_string())?;
    if let Some(mut out) = rows_out {
        out.flush().map_err(|e| e.to_string())?;
        for (m, data) in margins.iter().zip(&features) {
            let dim = data.len().checked_div(nrows).unwrap_or(0);
            let path = args.out.join(format!("features-m{m}.npy"));
            write_npy(&path, data, nrows, dim)?;
            eprintln!("{}: {nrows} x {dim}", path.display());
        }
    }
    eprintln!(
        "{} images -> {}",
        entries.len(),
        args.out.join("detections.jsonl").display()
    );
    Ok(())
}

fn process(
    detector: &Detector,
    args: &Args,
    margins: &[f32],
    entry: &ManifestLine,
) -> Result<ImageResult, String> {
    let path = args.eval.join(&entry.image);
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| fail(&e))?;
    let image = decode_image(&bytes, detector.config()).map_err(|e| fail(&e))?;
    let rgb = detector.rgb_image(&image).map_err(|e| fail(&e))?;
    let raw = detector.detect_faces(&rgb).map_err(|e| fail(&e))?;
    let detections = serde_json::json!({
        "image": entry.image,
        "split": entry.split,
        "faces": raw.iter().map(|f| serde_json::json!({"box": f.bbox, "score": f.score})).collect::<Vec<_>>(),
    });
    if args.no_features {
        return Ok(ImageResult {
            detections,
            rows: Vec::new(),
            features: Vec::new(),
        });
    }
    let mut boxes: Vec<([f32; 4], &'static str, String, Option<f32>)> = entry
        .faces
        .iter()
        .map(|f| (f.bbox, "gt", f.label.clone(), None))
        .collect();
    let strong: Vec<&RawFace> = raw
        .iter()
        .filter(|f| f.score >= args.match_threshold)
        .collect();
    let truth: Vec<[f64; 4]> = entry.faces.iter().map(|f| f.bbox.map(f64::from)).collect();
    let found: Vec<[f64; 4]> = strong.iter().map(|f| f.bbox.map(f64::from)).collect();
    for (gi, di) in greedy_match(&truth, &found, 0.4) {
        let d = strong[di];
        boxes.push((d.bbox, "det", entry.faces[gi].label.clone(), Some(d.score)));
    }
    let mut per_margin = Vec::with_capacity(margins.len());
    let mut shipped = vec![Vec::new(); boxes.len()];
    for &m in margins {
        let crops = boxes
            .iter()
            .map(|b| crop_face(&rgb, &b.0, m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        let classified = detector.classify_crops(&crops).map_err(|e| fail(&e))?;
        for (s, c) in shipped.iter_mut().zip(&classified) {
            s.push(c.softmax_probability);
        }
        per_margin.push(classified.into_iter().map(|c| c.features).collect());
    }
    let rows = boxes
        .into_iter()
        .zip(shipped)
        .map(|((bbox, source, label, score), shipped)| Row {
            image: entry.image.clone(),
            split: entry.split.clone(),
            source,
            label,
            bbox,
            width: bbox[2] - bbox[0],
            score,
            shipped,
        })
        .collect();
    Ok(ImageResult {
        detections,
        rows,
        features: per_margin,
    })
}

//! `tune_detector`: choose the face detector's settings on the `train` split.
//!
//! ```text
//! tune_detector [--split train] [--min-precision 0.9] DIR...
//! ```
//!
//! Each `DIR` holds a `detections.jsonl` written by
//! `features --no-features --face-threshold 0.2 --long-side N --out DIR` (every face scoring above
//! a low threshold, after non-maximum suppression). For every face threshold and minimum face
//! width in a grid this prints face recall and precision on the split, matched like the referee
//! (greedy, IoU at least 0.4), and per directory the setting with the best recall at a precision of
//! at least `--min-precision`. Raising the threshold after NMS keeps exactly the faces NMS at that
//! threshold keeps; the width filter is applied after NMS here (before it in the detector), a
//! negligible difference that `evaluate` checks.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use examples::greedy_match;

#[derive(Parser)]
#[command(
    version,
    about = "Sweep face threshold and minimum face size on saved detections"
)]
struct Args {
    /// Directories holding detections.jsonl.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// The evaluation set's directory (holds manifest.jsonl).
    #[arg(long, default_value = examples::EVAL_DIR)]
    eval: PathBuf,
    /// Split to tune on.
    #[arg(long, default_value = "train")]
    split: String,
    /// Precision the chosen setting must reach.
    #[arg(long, default_value_t = 0.9)]
    min_precision: f64,
    /// Print every grid point, not only the best per directory.
    #[arg(long)]
    all: bool,
}

#[derive(serde::Deserialize)]
struct Line {
    image: String,
    #[serde(default)]
    split: String,
    faces: Vec<Face>,
}

#[derive(serde::Deserialize)]
struct Face {
    #[serde(rename = "box")]
    bbox: [f64; 4],
    #[serde(default)]
    score: f64,
}

fn read(path: &PathBuf) -> Result<Vec<Line>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .map(|l| {
            let l = l.map_err(|e| e.to_string())?;
            serde_json::from_str(&l).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tune_detector: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    let truth: std::collections::HashMap<String, Vec<[f64; 4]>> =
        read(&examples::eval_manifest(&args.eval)?)?
            .into_iter()
            .filter(|l| l.split == args.split)
            .map(|l| (l.image, l.faces.into_iter().map(|f| f.bbox).collect()))
            .collect();
    let thresholds: Vec<f64> = (20..=80).map(|i| f64::from(i) * 0.01).collect();
    let min_sizes: [f64; 7] = [0.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0];
    println!("| detections | face threshold | min width | recall | precision |");
    println!("|---|---|---|---|---|");
    for dir in &args.dirs {
        let lines = read(&dir.join("detections.jsonl"))?;
        let lines: Vec<&Line> = lines
            .iter()
            .filter(|l| truth.contains_key(&l.image))
            .collect();
        if lines.len() != truth.len() {
            return Err(format!(
                "{}: {} of the {} {} images",
                dir.display(),
                lines.len(),
                truth.len(),
                args.split
            ));
        }
        let mut best: Option<(f64, f64, f64, f64)> = None;
        for &t in &thresholds {
            for &m in &min_sizes {
                let (mut tp, mut fp, mut gt) = (0usize, 0usize, 0usize);
                for l in &lines {
                    let g = &truth[&l.image];
                    let found: Vec<[f64; 4]> = l
                        .faces
                        .iter()
                        .filter(|f| f.score > t && f.bbox[2] - f.bbox[0] >= m.max(1.0))
                        .map(|f| f.bbox)
                        .collect();
                    let n = greedy_match(g, &found, 0.4).len();
                    tp += n;
                    fp += found.len() - n;
                    gt += g.len();
                }
                let recall = tp as f64 / gt.max(1) as f64;
                let precision = tp as f64 / (tp + fp).max(1) as f64;
                if args.all {
                    println!(
                        "| {} | {t:.2} | {m} | {recall:.4} | {precision:.4} |",
                        dir.display()
                    );
                }
                if precision >= args.min_precision && best.is_none_or(|b| recall > b.2) {
                    best = Some((t, m, recall, precision));
                }
            }
        }
        match best {
            Some((t, m, r, p)) => println!(
                "| {} best | {t:.2} | {m} | {r:.4} | {p:.4} |",
                dir.display()
            ),
            None => println!(
                "| {} | - | - | no setting reaches the precision | - |",
                dir.display()
            ),
        }
    }
    Ok(())
}

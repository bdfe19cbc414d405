//! `evaluate`: run the detector over the labelled evaluation set and print the referee's score.
//!
//! Reads `../shared/eval/manifest.jsonl`, runs the detector on every image of the chosen split,
//! writes the predictions to `target/eval/predictions-SPLIT.jsonl`, and runs
//! `../shared/eval/score.py` on them, printing its JSON summary.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use indicatif::ProgressBar;

use examples::{DetectorArgs, detect_all};

#[derive(Parser)]
#[command(
    version,
    about = "Score the detector on the labelled evaluation set with its referee"
)]
struct Args {
    /// The evaluation set's directory (holds manifest.jsonl and score.py).
    #[arg(long, default_value = "../shared/eval")]
    eval: PathBuf,
    /// Which split to score: train, test or all.
    #[arg(long, default_value = "test")]
    split: String,
    /// Python interpreter that runs score.py.
    #[arg(long, default_value = "python3")]
    python: String,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(serde::Deserialize)]
struct ManifestLine {
    image: String,
    split: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("evaluate: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args = Args::parse();
    let detector = args.detector.detector()?;
    let manifest = args.eval.join("manifest.jsonl");
    let file = std::fs::File::open(&manifest)
        .map_err(|e| format!("cannot open {}: {e}", manifest.display()))?;
    let mut files = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let entry: ManifestLine =
            serde_json::from_str(&line).map_err(|e| format!("{}: {e}", manifest.display()))?;
        if args.split == "all" || entry.split == args.split {
            files.push(args.eval.join(entry.image));
        }
    }
    if files.is_empty() {
        return Err(format!("no images in split {:?}", args.split));
    }
    let out_dir = PathBuf::from("target/eval");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let predictions = out_dir.join(format!("predictions-{}.jsonl", args.split));
    let mut out = std::fs::File::create(&predictions)
        .map_err(|e| format!("cannot write {}: {e}", predictions.display()))?;
    let bar = ProgressBar::new(files.len() as u64);
    let mut failures = 0;
    detect_all(&detector, &files, args.detector.jobs(), |path, result| {
        bar.inc(1);
        match result {
            Ok((_, d)) => {
                let mut line = serde_json::to_value(&d).unwrap_or_default();
                line["image"] = path.display().to_string().into();
                let _ = writeln!(out, "{line}");
            }
            Err(e) => {
                failures += 1;
                bar.suspend(|| eprintln!("evaluate: {}: {e}", path.display()));
            }
        }
    });
    bar.finish_and_clear();
    drop(out);
    let mut cmd = Command::new(&args.python);
    cmd.arg(args.eval.join("score.py"))
        .arg(&manifest)
        .arg(&predictions);
    if args.split != "all" {
        cmd.args(["--split", &args.split]);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", args.python))?;
    println!("predictions: {}", predictions.display());
    Ok(if status.success() && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

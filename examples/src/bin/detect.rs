//! `detect`: find faces and masks in images, one JSON line per image.
//!
//! ```text
//! detect [OPTIONS] PATH...
//! ```
//! Each line is the detector's schema plus `"image"`, the path; the lines can be scored as a
//! `predictions.jsonl` by `../shared/eval/score.py`. Unreadable files are reported on stderr and
//! skipped; the exit status is then 1.

use std::path::PathBuf;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use examples::{DetectorArgs, detect_all, expand_paths};

#[derive(Parser)]
#[command(
    version,
    about = "Find faces and say whether each wears a mask; prints one JSON line per image"
)]
struct Args {
    /// Image files or directories (searched recursively for images).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write an annotated copy of each image (PNG) into this directory.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    #[command(flatten)]
    detector: DetectorArgs,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    image: String,
    #[serde(flatten)]
    detection: &'a mask_detect::Detection,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let detector = match args.detector.detector() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("detect: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (files, mut errors) = expand_paths(&args.paths);
    for e in &errors {
        eprintln!("detect: {e}");
    }
    if let Some(dir) = &args.annotate
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("detect: cannot create {}: {e}", dir.display());
        return std::process::ExitCode::from(2);
    }
    let bar = if files.len() > 3 {
        ProgressBar::new(files.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} eta {eta}") {
        bar.set_style(style);
    }
    detect_all(&detector, &files, args.detector.jobs(), |path, result| {
        bar.inc(1);
        match result {
            Ok((image, detection)) => {
                let line = Line {
                    image: path.display().to_string(),
                    detection: &detection,
                };
                match serde_json::to_string(&line) {
                    Ok(s) => bar.suspend(|| println!("{s}")),
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
                if let Some(dir) = &args.annotate {
                    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                    let out = dir.join(format!("{stem}.annotated.png"));
                    let saved = mask_detect::annotate(&image, &detection)
                        .save(&out)
                        .map_err(|e| format!("cannot write {}: {e}", out.display()));
                    if let Err(e) = saved {
                        bar.suspend(|| eprintln!("detect: {}: {e}", path.display()));
                        errors.push(e);
                    }
                }
            }
            Err(e) => {
                bar.suspend(|| eprintln!("detect: {}: {e}", path.display()));
                errors.push(e);
            }
        }
    });
    bar.finish_and_clear();
    if errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("detect: {} file(s) failed", errors.len());
        std::process::ExitCode::FAILURE
    }
}

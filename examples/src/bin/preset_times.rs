//! `preset_times`: time per photo of the `fast` and `accurate` presets, side by side in one run.
//!
//! ```text
//! preset_times [--split test] [--limit N] [--warmup 1] [DETECTOR OPTIONS]
//! ```
//!
//! Loads one detector per preset (the other options apply to both), reads the split's photos of
//! `../shared/eval/manifest.jsonl` into memory, runs both detectors over them `--warmup` times
//! untimed (each detector makes its plans, one per input shape, on first use), then times
//! `detect_bytes` (decode and detect, what the web app calls) on every photo, on one thread,
//! the two presets alternating photo by photo (and which goes first alternating too), so that
//! other load on the machine falls on both alike. Prints each preset's mean and median time per
//! photo and the ratio accurate / fast of the means, as text and as one JSON line.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mask_detect::{Detector, Preset};

use examples::DetectorArgs;

#[derive(Parser)]
#[command(
    version,
    about = "Time per photo of the fast and accurate presets, side by side"
)]
struct Args {
    /// The evaluation set's directory (holds manifest.jsonl).
    #[arg(long, default_value = "../shared/eval")]
    eval: PathBuf,
    /// Which split's photos: train, test or all.
    #[arg(long, default_value = "test")]
    split: String,
    /// Time only the first N photos of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Untimed passes over the photos before the timed one.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("preset_times: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    allocator::keep_freed_memory();
    let detectors = Preset::ALL
        .into_iter()
        .map(|preset| {
            let mut config = args.detector.config()?;
            config.preset = preset;
            Detector::from_dir(&args.detector.models, config)
                .map_err(|e| format!("{e} (run `make models` to fetch the models)"))
        })
        .collect::<Result<Vec<Detector>, String>>()?;
    let manifest = args.eval.join("manifest.jsonl");
    let file = std::fs::File::open(&manifest)
        .map_err(|e| format!("cannot open {}: {e}", manifest.display()))?;
    let mut photos = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let entry: ManifestLine =
            serde_json::from_str(&line).map_err(|e| format!("{}: {e}", manifest.display()))?;
        if args.split == "all" || entry.split == args.split {
            let path = args.eval.join(&entry.image);
            photos.push(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        }
        if args.limit.is_some_and(|n| photos.len() >= n) {
            break;
        }
    }
    if photos.is_empty() {
        return Err(format!("no photos in split {:?}", args.split));
    }
    let mut times = [Vec::new(), Vec::new()];
    for pass in 0..=args.warmup {
        for (i, bytes) in photos.iter().enumerate() {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for d in order {
                let start = Instant::now();
                detectors[d]
                    .detect_bytes(bytes)
                    .map_err(|e| format!("photo {i}: {e}"))?;
                if pass == args.warmup {
                    times[d].push(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let stats = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        (t.iter().sum::<f64>() / t.len() as f64, t[t.len() / 2])
    };
    let (fast_mean, fast_median) = stats(&mut times[0]);
    let (acc_mean, acc_median) = stats(&mut times[1]);
    println!(
        "{} photos of split {}, one thread, presets alternating",
        photos.len(),
        args.split
    );
    println!("fast:     mean {fast_mean:.1} ms, median {fast_median:.1} ms per photo");
    println!("accurate: mean {acc_mean:.1} ms, median {acc_median:.1} ms per photo");
    println!("ratio accurate / fast (means): {:.2}", acc_mean / fast_mean);
    println!(
        "{}",
        serde_json::json!({
            "photos": photos.len(),
            "split": args.split,
            "fast_ms_mean": (fast_mean * 10.0).round() / 10.0,
            "fast_ms_median": (fast_median * 10.0).round() / 10.0,
            "accurate_ms_mean": (acc_mean * 10.0).round() / 10.0,
            "accurate_ms_median": (acc_median * 10.0).round() / 10.0,
            "ratio_mean": (acc_mean / fast_mean * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

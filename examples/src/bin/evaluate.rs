//! `evaluate`: run the detector over the labelled evaluation set and print the referee's score.
//!
//! ```text
//! evaluate [--split train,test] [--preset fast|accurate] [DETECTOR OPTIONS]
//! ```
//!
//! Reads `../shared/eval/manifest.jsonl`, runs the detector once on every image of the chosen
//! splits, writes the predictions to `target/eval/predictions-SPLIT.jsonl`, and for each split:
//!
//! 1. runs the referee, `../shared/eval/score.py --split SPLIT`, and prints its JSON line;
//! 2. prints the same metrics per face-size bucket (labelled box width < 16, 16-32, 32-64, >= 64
//!    pixels), computed here with the referee's greedy IoU >= 0.4 matching: a bucket holds the
//!    labelled faces of that width, the detections matched to them, and the unmatched detections
//!    of that width (false positives);
//! 3. prints a confusion matrix: labelled class (and false positives) against predicted label
//!    (and missed).
//!
//! `--split all` scores all images as one set. The exit status is 1 when any image failed or the
//! referee did not run cleanly.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use indicatif::ProgressBar;
use mask_detect::{Detection, Label};

use examples::{DetectorArgs, detect_all, eval_manifest, greedy_match};

#[derive(Parser)]
#[command(
    version,
    about = "Score the detector on the labelled evaluation set with its referee"
)]
struct Args {
    /// The evaluation set's directory (holds manifest.jsonl and score.py).
    #[arg(long, default_value = examples::EVAL_DIR)]
    eval: PathBuf,
    /// Splits to score, comma separated: train, test, or all (every image as one set).
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    split: Vec<String>,
    /// Python interpreter that runs score.py.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where the predictions files go.
    #[arg(long, default_value = "target/eval")]
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
    label: String,
}

/// Face-size buckets by box width in pixels: `[lo, hi)`.
const BUCKETS: [(f64, f64, &str); 4] = [
    (0.0, 16.0, "< 16 px"),
    (16.0, 32.0, "16-32 px"),
    (32.0, 64.0, "32-64 px"),
    (64.0, f64::INFINITY, ">= 64 px"),
];
const GT_LABELS: [&str; 3] = ["mask", "no_mask", "incorrect"];

#[derive(Default, Clone, Copy)]
struct Tally {
    gt: usize,
    matched: usize,
    false_pos: usize,
    /// `[correct, total]` for mask and no_mask faces matched.
    mask: [usize; 2],
    no_mask: [usize; 2],
    uncertain: usize,
}

impl Tally {
    fn ratio(a: usize, b: usize) -> String {
        if b == 0 {
            "-".into()
        } else {
            format!("{:.3}", a as f64 / b as f64)
        }
    }

    fn row(&self, name: &str) -> String {
        let (m, n) = (self.mask, self.no_mask);
        let balanced = match (m[1], n[1]) {
            (0, 0) => "-".to_string(),
            (0, _) => Tally::ratio(n[0], n[1]),
            (_, 0) => Tally::ratio(m[0], m[1]),
            _ => format!(
                "{:.3}",
                (m[0] as f64 / m[1] as f64 + n[0] as f64 / n[1] as f64) / 2.0
            ),
        };
        format!(
            "| {name} | {} | {} | {} | {} | {} ({}) | {} ({}) | {balanced} | {} |",
            self.gt,
            Tally::ratio(self.matched, self.gt),
            Tally::ratio(self.matched, self.matched + self.false_pos),
            self.false_pos,
            Tally::ratio(m[0], m[1]),
            m[1],
            Tally::ratio(n[0], n[1]),
            n[1],
            self.uncertain,
        )
    }
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
    for s in &args.split {
        if !["train", "test", "all"].contains(&s.as_str()) {
            return Err(format!("unknown split {s:?} (train, test or all)"));
        }
    }
    let manifest_path = eval_manifest(&args.eval)?;
    let detector = args.detector.detector()?;
    let file = std::fs::File::open(&manifest_path)
        .map_err(|e| format!("cannot open {}: {e}", manifest_path.display()))?;
    let mut manifest = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let entry: ManifestLine =
            serde_json::from_str(&line).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        if args.split.iter().any(|s| s == "all" || *s == entry.split) {
            manifest.push(entry);
        }
    }
    if manifest.is_empty() {
        return Err(format!("no images in split {:?}", args.split));
    }
    let files: Vec<PathBuf> = manifest.iter().map(|m| args.eval.join(&m.image)).collect();
    let c = detector.config();
    println!(
        "detector: preset {}, input_long_side {}, face_threshold {}, min_face_size {}, crop_margin {}, mask_head {:?}, uncertain_face_size {}",
        c.preset,
        c.input_long_side,
        c.face_threshold,
        c.min_face_size,
        c.crop_margin,
        match &c.mask_head {
            mask_detect::MaskHead::Custom(_) => "custom".to_string(),
            h => format!("{h:?}"),
        },
        c.uncertain_face_size
    );
    if c.preset == mask_detect::Preset::Accurate {
        println!(
            "accurate: large_long_side {}, candidate_threshold {}, verifier {}, verifier_threshold {}",
            c.large_long_side,
            c.candidate_threshold,
            match &c.verifier {
                mask_detect::Verifier::Trained => "trained",
                _ => "custom",
            },
            c.verifier_threshold
        );
    }
    let bar = ProgressBar::new(files.len() as u64);
    let mut detections: Vec<Option<Detection>> = Vec::with_capacity(files.len());
    let mut failures = 0;
    detect_all(&detector, &files, args.detector.jobs(), |path, result| {
        bar.inc(1);
        match result {
            Ok((_, d)) => detections.push(Some(d)),
            Err(e) => {
                failures += 1;
                detections.push(None);
                bar.suspend(|| eprintln!("evaluate: {}: {e}", path.display()));
            }
        }
    });
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut referee_ok = true;
    for split in &args.split {
        let chosen: Vec<usize> = (0..manifest.len())
            .filter(|&i| split == "all" || manifest[i].split == *split)
            .collect();
        let predictions = args.out.join(format!("predictions-{split}.jsonl"));
        let mut out = std::fs::File::create(&predictions)
            .map_err(|e| format!("cannot write {}: {e}", predictions.display()))?;
        for &i in &chosen {
            if let Some(d) = &detections[i] {
                let mut line = serde_json::to_value(d).map_err(|e| e.to_string())?;
                line["image"] = files[i].display().to_string().into();
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
            }
        }
        drop(out);
        println!("\n## split {split} ({} images)\n", chosen.len());
        let mut cmd = Command::new(&args.python);
        cmd.arg(args.eval.join("score.py"))
            .arg(&manifest_path)
            .arg(&predictions);
        if split != "all" {
            cmd.args(["--split", split]);
        }
        let output = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", args.python))?;
        referee_ok &= output.status.success();
        println!(
            "referee: {}",
            String::from_utf8_lossy(&output.stdout).trim_end()
        );
        if !output.stderr.is_empty() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim_end());
        }
        println!("predictions: {}\n", predictions.display());
        let (buckets, total, confusion) = tally(&manifest, &detections, &chosen);
        println!(
            "| face width | faces | recall | precision | false pos. | mask acc. (n) | no-mask acc. (n) | balanced | uncertain |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (t, (_, _, name)) in buckets.iter().zip(BUCKETS) {
            println!("{}", t.row(name));
        }
        println!("{}", total.row("all"));
        println!("\nconfusion (rows: labelled class, columns: prediction)\n");
        println!("| labelled \\ predicted | mask | no_mask | missed |");
        println!("|---|---|---|---|");
        for (name, row) in &confusion {
            println!("| {name} | {} | {} | {} |", row[0], row[1], row[2]);
        }
    }
    Ok(if referee_ok && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

type Confusion = Vec<(&'static str, [usize; 3])>;

/// Per-bucket and overall tallies, and the confusion matrix, over the images `chosen`.
fn tally(
    manifest: &[ManifestLine],
    detections: &[Option<Detection>],
    chosen: &[usize],
) -> ([Tally; 4], Tally, Confusion) {
    let mut buckets = [Tally::default(); 4];
    let mut total = Tally::default();
    let mut confusion: BTreeMap<&'static str, [usize; 3]> = BTreeMap::new();
    let bucket_of = |w: f64| BUCKETS.iter().position(|(lo, hi, _)| w >= *lo && w < *hi);
    for &i in chosen {
        let truth = &manifest[i].faces;
        let empty = Vec::new();
        let found = detections[i].as_ref().map_or(&empty, |d| &d.faces);
        let boxes: Vec<[f64; 4]> = found.iter().map(|f| f.bbox.map(f64::from)).collect();
        let truth_boxes: Vec<[f64; 4]> = truth.iter().map(|g| g.bbox).collect();
        let matched = greedy_match(&truth_boxes, &boxes, 0.4);
        let mut used = vec![false; found.len()];
        for (gi, g) in truth.iter().enumerate() {
            let b = bucket_of(g.bbox[2] - g.bbox[0]);
            let label = GT_LABELS
                .into_iter()
                .find(|l| *l == g.label)
                .unwrap_or("other");
            let row = confusion.entry(label).or_default();
            for t in b
                .map(|b| &mut buckets[b])
                .into_iter()
                .chain(std::iter::once(&mut total))
            {
                t.gt += 1;
            }
            let Some(&(_, j)) = matched.iter().find(|(a, _)| *a == gi) else {
                row[2] += 1;
                continue;
            };
            used[j] = true;
            let f = &found[j];
            let pred_mask = f.label == Label::Mask;
            row[if pred_mask { 0 } else { 1 }] += 1;
            for t in b
                .map(|b| &mut buckets[b])
                .into_iter()
                .chain(std::iter::once(&mut total))
            {
                t.matched += 1;
                t.uncertain += usize::from(f.uncertain);
                match g.label.as_str() {
                    "mask" => {
                        t.mask[1] += 1;
                        t.mask[0] += usize::from(pred_mask);
                    }
                    "no_mask" => {
                        t.no_mask[1] += 1;
                        t.no_mask[0] += usize::from(!pred_mask);
                    }
                    _ => {}
                }
            }
        }
        for (j, f) in found.iter().enumerate().filter(|(j, _)| !used[*j]) {
            let row = confusion.entry("(no face: false positive)").or_default();
            row[if f.label == Label::Mask { 0 } else { 1 }] += 1;
            let b = bucket_of(f64::from(f.width()));
            for t in b
                .map(|b| &mut buckets[b])
                .into_iter()
                .chain(std::iter::once(&mut total))
            {
                t.false_pos += 1;
                t.uncertain += usize::from(found[j].uncertain);
            }
        }
    }
    let order = [
        "mask",
        "no_mask",
        "incorrect",
        "other",
        "(no face: false positive)",
    ];
    let confusion = order
        .into_iter()
        .filter_map(|k| confusion.get(k).map(|v| (k, *v)))
        .collect();
    (buckets, total, confusion)
}

//! Shared plumbing of the example programs: building a [`mask_detect::Config`] from command-line
//! options, finding image files, and running a detector over many files on several threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use mask_detect::image::DynamicImage;
use mask_detect::{
    Config, Detection, Detector, FaceVerifier, LinearHead, MaskHead, Preset, Verifier, decode_image,
};

/// Detector options shared by the example programs.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectorArgs {
    /// Directory holding centerface.onnx and mask_classifier.onnx (made by `make models`).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// `fast` (one CenterFace run, the default) or `accurate` (three runs and the face verifier,
    /// about three times the cost; ACCURACY.md).
    #[arg(long, value_name = "fast|accurate")]
    pub preset: Option<Preset>,
    /// Longer side of the image as the face detector sees it, in pixels.
    #[arg(long)]
    pub long_side: Option<u32>,
    /// Minimum face detector score.
    #[arg(long)]
    pub face_threshold: Option<f32>,
    /// Mask probability at or above which a face counts as masked.
    #[arg(long)]
    pub mask_threshold: Option<f32>,
    /// Drop faces narrower than this many pixels.
    #[arg(long)]
    pub min_face_size: Option<f32>,
    /// Grow each face box by this fraction per side before classifying it.
    #[arg(long)]
    pub crop_margin: Option<f32>,
    /// Flag faces narrower than this many pixels `uncertain` (`small_face`).
    #[arg(long)]
    pub uncertain_face_size: Option<f32>,
    /// Mask classifier head: `trained` (ours, the default), `shipped` (the model's own softmax),
    /// or the path of a head JSON written by `tools/train_head.py`.
    #[arg(long, value_name = "trained|shipped|FILE")]
    pub mask_head: Option<String>,
    /// Accurate preset: the face verifier, `trained` (ours, the default) or the path of a
    /// verifier JSON written by `tools/train_verifier.py`.
    #[arg(long, value_name = "trained|FILE")]
    pub verifier: Option<String>,
    /// Accurate preset: longer side of the image in CenterFace's third, larger run.
    #[arg(long)]
    pub large_long_side: Option<u32>,
    /// Accurate preset: minimum CenterFace score in any run for a box to become a candidate.
    #[arg(long)]
    pub candidate_threshold: Option<f32>,
    /// Accurate preset: verifier probability at or above which a candidate is a face.
    #[arg(long)]
    pub verifier_threshold: Option<f32>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

impl DetectorArgs {
    /// The detector configuration: defaults overridden by the options given. Fails only when
    /// `--mask-head` names a file that cannot be read or is not a head.
    pub fn config(&self) -> Result<Config, String> {
        let mut c = Config::default();
        match self.mask_head.as_deref() {
            None | Some("trained") => c.mask_head = MaskHead::Trained,
            Some("shipped") => c.mask_head = MaskHead::Shipped,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read mask head {path}: {e}"))?;
                let head = LinearHead::from_json(&text).map_err(|e| format!("{path}: {e}"))?;
                c.mask_head = MaskHead::Custom(Arc::new(head));
            }
        }
        match self.verifier.as_deref() {
            None | Some("trained") => c.verifier = Verifier::Trained,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read verifier {path}: {e}"))?;
                let v = FaceVerifier::from_json(&text).map_err(|e| format!("{path}: {e}"))?;
                c.verifier = Verifier::Custom(Arc::new(v));
            }
        }
        if let Some(v) = self.preset {
            c.preset = v;
        }
        if let Some(v) = self.large_long_side {
            c.large_long_side = v;
        }
        if let Some(v) = self.candidate_threshold {
            c.candidate_threshold = v;
        }
        if let Some(v) = self.verifier_threshold {
            c.verifier_threshold = v;
        }
        if let Some(v) = self.uncertain_face_size {
            c.uncertain_face_size = v;
        }
        if let Some(v) = self.long_side {
            c.input_long_side = v;
        }
        if let Some(v) = self.face_threshold {
            c.face_threshold = v;
        }
        if let Some(v) = self.mask_threshold {
            c.mask_threshold = v;
        }
        if let Some(v) = self.min_face_size {
            c.min_face_size = v;
        }
        if let Some(v) = self.crop_margin {
            c.crop_margin = v;
        }
        Ok(c)
    }

    /// Load the detector, with an error message that says what to do.
    pub fn detector(&self) -> Result<Detector, String> {
        allocator::keep_freed_memory();
        Detector::from_dir(&self.models, self.config()?)
            .map_err(|e| format!("{e} (run `make models` to fetch the models)"))
    }

    /// Worker threads to use.
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Where the labelled evaluation set is by default: beside the repository, read from its root.
pub const EVAL_DIR: &str = "../shared/eval";

/// The path of `manifest.jsonl` in the labelled evaluation set at `eval_dir`, or, when it is not
/// there, an error that says where it was looked for and what to do. The set is not part of the
/// repository (tests and benchmarks use the photos in `fixtures/photos`); accuracy needs all of it.
pub fn eval_manifest(eval_dir: &Path) -> Result<PathBuf, String> {
    let manifest = eval_dir.join("manifest.jsonl");
    if manifest.is_file() {
        return Ok(manifest);
    }
    Err(format!(
        "the labelled evaluation set is not at {dir} ({file} is missing). It is not part of this \
         repository: put it beside the repository as {EVAL_DIR} (run from the repository's root; \
         see ../shared/README.md and fixtures/README.md) or give its directory with --eval DIR",
        dir = eval_dir.display(),
        file = manifest.display(),
    ))
}

/// Expand the command line's paths: files as given, directories walked recursively for files with
/// an image extension, sorted. Paths that do not exist are returned as errors.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files, &mut errors);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            errors.push(format!("{}: no such file or directory", p.display()));
        }
    }
    (files, errors)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return errors.push(format!("{}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, files, errors);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(p);
        }
    }
}

/// Run `detector` over `files` on `jobs` threads; `each` is called on the calling thread, in file
/// order, with every file's decoded image and detection (or the error message) as soon as it and
/// all files before it are done.
pub fn detect_all(
    detector: &Detector,
    files: &[PathBuf],
    jobs: usize,
    mut each: impl FnMut(&Path, Result<(DynamicImage, Detection), String>),
) {
    let work = |path: &PathBuf| {
        let image = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode_image(&b, detector.config()).map_err(|e| e.to_string()))?;
        let detection = detector.detect(&image).map_err(|e| e.to_string())?;
        Ok((image, detection))
    };
    // Results arrive in file order, so the n-th result belongs to the n-th file.
    let mut n = 0;
    for_each_parallel(files, jobs, work, |result| {
        each(&files[n], result);
        n += 1;
    });
}

/// Map `work` over `items` on `jobs` threads; `each` gets the results on the calling thread, in
/// item order, as soon as a result and all results before it are ready.
pub fn for_each_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut each: impl FnMut(R),
) {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(items.len()).max(1) {
            let tx = tx.clone();
            let (next, work) = (&next, &work);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if tx.send((i, work(item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                each(r);
                want += 1;
            }
        }
    });
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes, in f64 like the referee.
pub fn iou64(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// The referee's (`score.py`) matching of labelled boxes `truth` to predicted boxes `found`: all
/// pairs by descending (IoU, truth index, found index), each box used at most once, IoU at least
/// `min_iou`. Returns `(truth, found)` index pairs sorted by truth index.
pub fn greedy_match(truth: &[[f64; 4]], found: &[[f64; 4]], min_iou: f64) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(f64, usize, usize)> = truth
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            found
                .iter()
                .enumerate()
                .map(move |(j, f)| (iou64(t, f), i, j))
        })
        .filter(|p| p.0 >= min_iou)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    let (mut ti, mut fj) = (vec![false; truth.len()], vec![false; found.len()]);
    let mut out = Vec::new();
    for (_, i, j) in pairs {
        if !ti[i] && !fj[j] {
            ti[i] = true;
            fj[j] = true;
            out.push((i, j));
        }
    }
    out.sort_unstable();
    out
}

/// A float32 little-endian `.npy` file (format 1.0) of shape `[rows, cols]`.
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<(), String> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_match_prefers_the_best_overlap_and_uses_each_box_once() {
        let truth = [[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]];
        let found = [
            [1.0, 1.0, 11.0, 11.0],
            [0.0, 0.0, 10.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        assert_eq!(greedy_match(&truth, &found, 0.4), vec![(0, 1)]);
        assert!(greedy_match(&truth, &found, 1.1).is_empty());
    }
}

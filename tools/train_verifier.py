#!/usr/bin/env python3
"""Fit the accurate preset's face verifier: a standardised logistic regression deciding which of
CenterFace's merged candidates are faces.

Input: the files written by the `candidates` example (every candidate of the accurate preset's
three CenterFace runs, cropped and classified exactly as the Rust detector does, see
examples/src/bin/candidates.rs):

    cargo run -p examples --bin candidates -- --split train --out target/candidates/train
    .venv/bin/python tools/train_verifier.py --candidates target/candidates/train \\
        --out mask-detect/heads/face_verifier.json

Only the manifest's `train` split is used, for fitting and for every choice: the signal set,
the L2 strength C and the decision threshold are chosen by 5-fold cross-validation grouped by
image, scoring out-of-fold predictions the way the referee (../shared/eval/score.py) scores a
detector: greedy IoU >= 0.4 matching of the kept candidates to the labelled faces, per image.
The threshold is the one with the best recall at a cross-validated precision of at least
--min-precision; the signal set and C are those whose threshold gives the best recall.

numpy only (the project's pinned tools/requirements.txt): the regression is fitted by Newton's
method with an L2 penalty (intercept unpenalised) on standardised inputs. Deterministic: fixed
fold assignment (seeded), a fixed number of Newton steps or convergence, numbers written rounded
to 6 significant digits, and single-threaded BLAS, so the same candidates rebuild the same file
byte for byte.
"""
import os

# Single-threaded BLAS: multi-threaded reductions may sum in a different order run to run.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

FORMAT = "mask-detect-face-verifier/1"
SEED = 20241204
FOLDS = 5
FEATURES = 1280
IOU = 0.4
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
# Signal sets compared by cross-validation (names as mask_detect::SIGNALS).
SCORES = ["score_base", "score_flip", "score_large", "score_max", "score_mean", "views"]
GEOMETRY = ["log_width", "log_aspect", "log_rel_width", "iou_base_flip", "iou_base_large",
            "iou_flip_large"]
SIGNAL_SETS = {
    "scores": (SCORES, False),
    "scores+geometry": (SCORES + GEOMETRY, False),
    "scores+geometry+features": (SCORES + GEOMETRY + ["softmax"], True),
}
C_GRID = [0.001, 0.003, 0.01, 0.03]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(dirname, manifest_path):
    rows = [json.loads(line) for line in open(os.path.join(dirname, "candidates.jsonl"))]
    feat_path = os.path.join(dirname, "features.npy")
    feats = np.load(feat_path).astype(np.float64)
    if feats.shape[0] != len(rows):
        sys.exit(f"{feat_path}: {feats.shape[0]} rows but candidates.jsonl has {len(rows)}")
    manifest = {}
    for line in open(manifest_path):
        r = json.loads(line)
        if r["split"] == "train":
            manifest[r["image"]] = r
    keep = [i for i, r in enumerate(rows) if r["split"] == "train"]
    rows = [rows[i] for i in keep]
    return rows, feats[keep], manifest, feat_path


def signal_names(_dirname):
    """The SIGNALS order the candidates were written in (the Rust crate's), from its source."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mask-detect", "src", "verifier.rs")
    text = open(src).read()
    block = text[text.index("pub const SIGNALS"):]
    block = block[block.index("[", block.index("=")) + 1: block.index("];")]
    return [s.strip().strip('"') for s in block.split(",") if s.strip()]


def design(rows, feats, all_names, names, use_features):
    idx = [all_names.index(n) for n in names]
    sig = np.array([[r["signals"][i] for i in idx] for r in rows], dtype=np.float64)
    return np.hstack([sig, feats]) if use_features else sig


def standardise(x):
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def fit(x, y, c, steps=30):
    """L2-penalised logistic regression on standardised x by Newton's method. Penalty
    1/(2C) |w|^2 per the scikit-learn convention (loss summed over rows)."""
    mean, scale = standardise(x)
    z = (x - mean) / scale
    n, d = z.shape
    a = np.hstack([z, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, 1.0 / c)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + reg * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])


def predict(model, x):
    mean, scale, coef, intercept = model
    return 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ coef + intercept)))


def folds(rows):
    images = sorted({r["image"] for r in rows})
    order = np.random.RandomState(SEED).permutation(len(images))
    fold_of = {images[i]: k % FOLDS for k, i in enumerate(order)}
    return np.array([fold_of[r["image"]] for r in rows])


def iou(a, b):
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    iw, ih = max(0.0, ix2 - ix1), max(0.0, iy2 - iy1)
    inter = iw * ih
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def category(labels):
    if not labels:
        return "no_face"
    m = sum(1 for lab in labels if lab == "mask")
    return "all_masked" if m == len(labels) else "none_masked" if m == 0 else "some_masked"


class Referee:
    """score.py's metrics for any subset of the candidates, per image; pairs precomputed."""

    def __init__(self, rows, manifest):
        by_image = {}
        for i, r in enumerate(rows):
            by_image.setdefault(r["image"], []).append(i)
        self.images = []
        for image, g in manifest.items():
            cand = by_image.get(image, [])
            gf = g["faces"]
            pairs = sorted(((iou(f["box"], rows[j]["box"]), i, j) for i, f in enumerate(gf) for j in cand),
                           reverse=True)
            pairs = [p for p in pairs if p[0] >= IOU]
            self.images.append((gf, cand, pairs))
        self.mask = np.array([r["mask_probability"] >= 0.5 for r in rows])

    def score(self, keep):
        tp = fp = fn = 0
        cls = {"mask": [0, 0], "no_mask": [0, 0]}
        cat_ok = cat_n = 0
        for gf, cand, pairs in self.images:
            kept = [j for j in cand if keep[j]]
            used, gm = set(), {}
            for _, i, j in pairs:
                if not keep[j] or i in gm or j in used:
                    continue
                gm[i] = j
                used.add(j)
            for i, f in enumerate(gf):
                if i in gm:
                    tp += 1
                    if f["label"] in cls:
                        cls[f["label"]][1] += 1
                        pred = "mask" if self.mask[gm[i]] else "no_mask"
                        cls[f["label"]][0] += int(pred == f["label"])
                else:
                    fn += 1
            fp += len(kept) - len(used)
            if not any(f["label"] == "incorrect" for f in gf):
                cat_n += 1
                pred = [("mask" if self.mask[j] else "no_mask") for j in kept]
                cat_ok += int(category([f["label"] for f in gf]) == category(pred))
        acc = [v[0] / v[1] for v in cls.values() if v[1]]
        return {"recall": tp / max(1, tp + fn), "precision": tp / max(1, tp + fp),
                "balanced_acc": sum(acc) / max(1, len(acc)), "category_acc": cat_ok / max(1, cat_n),
                "faces": tp + fn, "kept": tp + fp}


def best_threshold(referee, p, min_precision):
    """The threshold with the best recall at precision >= min_precision (ties: the higher
    threshold), and the metrics at every threshold."""
    curve = [(float(t), referee.score(p >= t)) for t in THRESHOLDS]
    ok = [(m["recall"], t, m) for t, m in curve if m["precision"] >= min_precision]
    if not ok:
        return None, curve
    recall, t, m = max(ok, key=lambda e: (e[0], e[1]))
    return (t, m), curve


def r4(v):
    return round(float(v), 4)


def sig(v, digits=6):
    return float(f"{float(v):.{digits}g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default="target/candidates/train", help="directory written by the candidates example")
    ap.add_argument("--manifest", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "eval", "manifest.jsonl"))
    ap.add_argument("--min-precision", type=float, default=0.91, help="cross-validated precision the threshold must keep")
    ap.add_argument("--sets", default=",".join(SIGNAL_SETS), help="signal sets to compare, comma separated")
    ap.add_argument("--c", default=",".join(str(c) for c in C_GRID), help="C values to compare, comma separated")
    ap.add_argument("--min-score", type=float, default=0.0,
                    help="use only candidates whose best CenterFace score is at least this (approximates a higher "
                         "Config::candidate_threshold without a new dump; the shipped verifier is fitted on a dump made "
                         "at its own threshold)")
    ap.add_argument("--out", default="mask-detect/heads/face_verifier.json")
    ap.add_argument("--report", help="also write the cross-validation curves as JSON here")
    args = ap.parse_args()
    if not os.path.isfile(args.manifest):
        sys.exit(f"no labelled set at {args.manifest}: put ../shared/eval beside the repository "
                 "(see ../shared/README.md) or pass --manifest")
    if not os.path.isdir(args.candidates):
        sys.exit(f"no candidates in {args.candidates}: run the candidates example first (mask-detect/MODEL_CARD.md)")

    rows, feats, manifest, feat_path = load(args.candidates, args.manifest)
    all_names = signal_names(args.candidates)
    if args.min_score > 0:
        k = [i for i, r in enumerate(rows) if r["signals"][all_names.index("score_max")] >= args.min_score]
        rows, feats = [rows[i] for i in k], feats[k]
    if len(rows[0]["signals"]) != len(all_names):
        sys.exit(f"candidates have {len(rows[0]['signals'])} signals, verifier.rs names {len(all_names)}")
    y = np.array([1.0 if r["face"] is not None else 0.0 for r in rows])
    fold = folds(rows)
    referee = Referee(rows, manifest)
    upper = referee.score(np.ones(len(rows), dtype=bool))
    print(f"{len(manifest)} train images, {len(rows)} candidates, {int(y.sum())} matched; "
          f"all candidates kept: recall {upper['recall']:.4f} precision {upper['precision']:.4f}", flush=True)

    results = []
    best = None
    for set_name in args.sets.split(","):
        names, use_features = SIGNAL_SETS[set_name]
        x = design(rows, feats, all_names, names, use_features)
        for c in [float(v) for v in args.c.split(",")]:
            oof = np.zeros(len(rows))
            for k in range(FOLDS):
                tr = fold != k
                oof[~tr] = predict(fit(x[tr], y[tr], c), x[~tr])
            chosen, curve = best_threshold(referee, oof, args.min_precision)
            entry = {"signals": set_name, "C": c,
                     "threshold": chosen and chosen[0],
                     "cv": chosen and {k: r4(v) if isinstance(v, float) else v for k, v in chosen[1].items()}}
            results.append(entry)
            print(json.dumps(entry), flush=True)
            if chosen and (best is None or chosen[1]["recall"] > best[2][1]["recall"] + 1e-9):
                best = (set_name, c, chosen, curve)
    if best is None:
        sys.exit(f"no setting reaches a cross-validated precision of {args.min_precision}")
    set_name, c, (threshold, cv_metrics), curve = best
    names, use_features = SIGNAL_SETS[set_name]
    print(f"chosen: {set_name}, C={c}, threshold {threshold}: {cv_metrics}", flush=True)

    x = design(rows, feats, all_names, names, use_features)
    mean, scale, coef, intercept = fit(x, y, c)
    verifier = {
        "format": FORMAT,
        "description": "Standardised logistic regression deciding whether a merged CenterFace candidate of the "
                       "accurate preset is a face: p = sigmoid(coef . ((x - mean) / scale) + intercept), x the "
                       "named signals then (features > 0) mask_classifier.onnx's pooled features of the crop; a "
                       "face when p >= threshold (the crate folds the threshold in so 0.5 is the boundary).",
        "signals": names,
        "features": FEATURES if use_features else 0,
        "threshold": threshold,
        "intercept": sig(intercept),
        "mean": [sig(v) for v in mean],
        "scale": [sig(v) for v in scale],
        "coef": [sig(v) for v in coef],
        "provenance": {
            "data": "../shared/eval/manifest.jsonl (kaggle853, andrewmvd Face Mask Detection, CC0 1.0)",
            "manifest_sha256": sha256(args.manifest),
            "split": "train only (images whose number is not a multiple of 5); test used for the report only",
            "candidates": {"rows": len(rows), "matched": int(y.sum()), "images": len(manifest),
                           "all_kept": {k: r4(v) if isinstance(v, float) else v for k, v in upper.items()}},
            "target": "1 when the candidate is matched to a labelled face by the referee's greedy IoU >= 0.4 "
                      "matching over all of the image's candidates",
            "method": {"model": "L2 logistic regression (Newton, numpy), intercept unpenalised", "C": c,
                       "cv": f"{FOLDS}-fold grouped by image, seed {SEED}",
                       "threshold": f"best out-of-fold referee recall at precision >= {args.min_precision}"},
            "command": (f".venv/bin/python tools/train_verifier.py --candidates {args.candidates} "
                        f"--min-precision {args.min_precision:g} --sets {args.sets} --c {args.c} "
                        + (f"--min-score {args.min_score:g} " if args.min_score > 0 else "") +
                        f"--out mask-detect/heads/face_verifier.json"),
            "features_sha256": sha256(feat_path),
            "versions": {"python": sys.version.split()[0], "numpy": np.__version__},
            "cv_train": {k: r4(v) if isinstance(v, float) else v for k, v in cv_metrics.items()},
            "compared": results,
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(verifier, f, indent=1)
        f.write("\n")
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"compared": results, "curve": [(t, {k: r4(v) if isinstance(v, float) else v
                                                            for k, v in m.items()}) for t, m in curve]}, f, indent=1)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

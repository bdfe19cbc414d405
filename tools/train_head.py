#!/usr/bin/env python3
"""Fit our mask classifier head: standardised logistic regression on MobileNetV2's pooled features.

Input: the files written by the `features` example (faces cropped exactly as the Rust detector crops
them, see examples/src/bin/features.rs):

    cargo run -p examples --bin features -- --split all --face-threshold 0.2 \
        --match-threshold 0.4 --margins 0,0.15,0.3 --out target/features/ls640
    .venv/bin/python tools/train_head.py --features target/features/ls640 \
        --out mask-detect/heads/mask_head.json

Only rows of the manifest's `train` split are used for fitting and for every choice (C, the mask
threshold, and with --explore the crop margin, the training rows and the treatment of `incorrect`).
Choices are made by 5-fold cross-validation grouped by image. Rows of the `test` split are scored
once at the end for the report; nothing is chosen on them.

Deterministic: fixed fold assignment (seeded), lbfgs, single-threaded BLAS, and the written numbers
rounded to 6 significant digits, so the same features rebuild the same file byte for byte.
"""
import os

# Single-threaded BLAS: multi-threaded reductions may sum in a different order run to run.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

SEED = 20240604
# The labelled evaluation set beside the repository (not part of it); its sha256 goes into the head.
MANIFEST = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "eval", "manifest.jsonl"))
FOLDS = 5
C_GRID = [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1]
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
WIDTH_BUCKETS = [(0, 16, "<16"), (16, 32, "16-32"), (32, 64, "32-64"), (64, 1e9, ">64")]
FORMAT = "mask-detect-linear-head/1"


def load(dirname, margin):
    rows = [json.loads(line) for line in open(os.path.join(dirname, "faces.jsonl"))]
    path = os.path.join(dirname, f"features-m{fmt_margin(margin)}.npy")
    x = np.load(path).astype(np.float64)
    if len(rows) != x.shape[0]:
        sys.exit(f"{path}: {x.shape[0]} rows but faces.jsonl has {len(rows)}")
    margins = available_margins(dirname)
    k = margins.index(margin)
    shipped = np.array([r["shipped"][k] for r in rows])
    return rows, x, shipped, path


def fmt_margin(m):
    # Rust's `{}` of an f32: 0 -> "0", 0.15 -> "0.15".
    return ("%g" % m)


def available_margins(dirname):
    out = []
    for name in os.listdir(dirname):
        if name.startswith("features-m") and name.endswith(".npy"):
            out.append(float(name[len("features-m"):-len(".npy")]))
    # faces.jsonl's `shipped` is in the order of --margins, which the commands give ascending.
    return sorted(out)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def targets(rows, incorrect):
    """1 = mask, 0 = not masked; None = not used for training."""
    out = []
    for r in rows:
        lab = r["label"]
        if lab == "mask":
            out.append(1)
        elif lab == "no_mask":
            out.append(0)
        elif incorrect == "no_mask":
            out.append(0)
        else:
            out.append(None)
    return out


def fit(x, y, c):
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, class_weight="balanced", solver="lbfgs", max_iter=5000, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(x), y)
    return scaler, model


def predict(scaler, model, x):
    return model.predict_proba(scaler.transform(x))[:, 1]


def folds(rows, y):
    """Fold index per row: 5 folds grouped by image, stratified on the image's mask share."""
    images = sorted({r["image"] for r in rows})
    index = {im: i for i, im in enumerate(images)}
    groups = np.array([index[r["image"]] for r in rows])
    strat = np.array([1 if v == 1 else 0 for v in y])
    out = np.zeros(len(rows), dtype=int)
    skf = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    for k, (_, test) in enumerate(skf.split(np.zeros(len(rows)), strat, groups)):
        out[test] = k
    return out


def balanced(p, labels, threshold):
    """Mean of mask and no-mask accuracy (the referee's balanced accuracy) on rows labelled so."""
    m = labels == "mask"
    n = labels == "no_mask"
    acc_m = float(np.mean(p[m] >= threshold)) if m.any() else float("nan")
    acc_n = float(np.mean(p[n] < threshold)) if n.any() else float("nan")
    return (acc_m + acc_n) / 2, acc_m, acc_n


def best_threshold(p, labels):
    """The threshold with the best balanced accuracy averaged over a +-0.05 window (a plateau,
    not a spike)."""
    scores = np.array([balanced(p, labels, t)[0] for t in THRESHOLDS])
    smooth = np.array([scores[max(0, i - 5): i + 6].mean() for i in range(len(scores))])
    i = int(np.argmax(smooth))
    return float(THRESHOLDS[i]), float(scores[i])


def cross_validate(rows, x, y, fold, train_sources, c):
    """Out-of-fold probabilities for every row (rows without a target too)."""
    oof = np.zeros(len(rows))
    use = np.array([t is not None and r["source"] in train_sources for r, t in zip(rows, y)])
    yy = np.array([t if t is not None else -1 for t in y])
    for k in range(FOLDS):
        tr = use & (fold != k)
        scaler, model = fit(x[tr], yy[tr], c)
        te = fold == k
        oof[te] = predict(scaler, model, x[te])
    return oof


def evaluate_rows(rows, p, threshold, shipped=None):
    """Accuracy on detector boxes (what the referee scores) and on labelled boxes, per width."""
    labels = np.array([r["label"] for r in rows])
    src = np.array([r["source"] for r in rows])
    width = np.array([r["width"] for r in rows])
    out = {}
    for source in ("det", "gt"):
        s = src == source
        bal, am, an = balanced(p[s], labels[s], threshold)
        entry = {"balanced_acc": r4(bal), "mask_acc": r4(am), "no_mask_acc": r4(an),
                 "faces": int(np.sum(s & np.isin(labels, ["mask", "no_mask"])))}
        inc = s & (labels == "incorrect")
        if inc.any():
            entry["incorrect_called_no_mask"] = r4(float(np.mean(p[inc] < threshold)))
        if shipped is not None:
            sb, sm, sn = balanced(shipped[s], labels[s], 0.5)
            entry["shipped_softmax"] = {"balanced_acc": r4(sb), "mask_acc": r4(sm), "no_mask_acc": r4(sn)}
        buckets = {}
        for lo, hi, name in WIDTH_BUCKETS:
            b = s & (width >= lo) & (width < hi)
            bb, bm, bn = balanced(p[b], labels[b], threshold)
            buckets[name] = {"faces": int(np.sum(b & np.isin(labels, ["mask", "no_mask"]))),
                             "balanced_acc": r4(bb), "mask_acc": r4(bm), "no_mask_acc": r4(bn)}
        entry["by_width"] = buckets
        out[source] = entry
    return out


def r4(v):
    return None if v != v else round(float(v), 4)


def sig(v, digits=6):
    return float(f"{float(v):.{digits}g}")


def explore(args):
    """Compare crop margins, training rows and `incorrect` treatments by grouped CV on train."""
    print("margin  rows    incorrect  best_C  cv_balanced(det)  threshold", flush=True)
    results = []
    for margin in available_margins(args.features):
        rows, x, _, _ = load(args.features, margin)
        keep = [i for i, r in enumerate(rows) if r["split"] == "train"]
        rows = [rows[i] for i in keep]
        x = x[keep]
        labels = np.array([r["label"] for r in rows])
        is_det = np.array([r["source"] == "det" for r in rows])
        for sources in (("gt",), ("gt", "det")):
            for incorrect in ("no_mask", "drop"):
                y = targets(rows, incorrect)
                fold = folds(rows, y)
                best = None
                for c in C_GRID:
                    oof = cross_validate(rows, x, y, fold, sources, c)
                    t, bal = best_threshold(oof[is_det], labels[is_det])
                    if best is None or bal > best[1] + 1e-9:
                        best = (c, bal, t)
                print(f"{margin:<7} {'+'.join(sources):<7} {incorrect:<10} {best[0]:<7} {best[1]:.4f}            {best[2]}",
                      flush=True)
                results.append({"margin": margin, "rows": "+".join(sources), "incorrect": incorrect,
                                "C": best[0], "cv_balanced_acc_det": r4(best[1]), "threshold": best[2]})
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="target/features/ls640", help="directory written by the features example")
    ap.add_argument("--margin", type=float, default=0.2, help="crop margin whose features to fit (Config::crop_margin)")
    ap.add_argument("--rows", default="gt+det", choices=["gt", "gt+det"], help="training rows: labelled boxes, or also matched detector boxes")
    ap.add_argument("--incorrect", default="drop", choices=["no_mask", "drop"], help="treat `incorrect` (mask below the nose) as unmasked, or leave it out")
    ap.add_argument("--out", default="mask-detect/heads/mask_head.json")
    ap.add_argument("--explore", action="store_true", help="first compare margins, rows and `incorrect` treatments (slow)")
    ap.add_argument("--report", help="also write the full metrics as JSON here")
    args = ap.parse_args()
    if not os.path.isfile(MANIFEST):
        sys.exit(f"train_head: the labelled evaluation set is not at {os.path.dirname(MANIFEST)} "
                 "(manifest.jsonl missing). It is not part of this repository: put it beside the "
                 "repository as ../shared/eval (see ../shared/README.md); the features it fits on "
                 "come from it too.")

    exploration = explore(args) if args.explore else None

    rows_all, x_all, shipped_all, feat_path = load(args.features, args.margin)
    train = np.array([r["split"] == "train" for r in rows_all])
    test = np.array([r["split"] == "test" for r in rows_all])
    rows = [r for r, t in zip(rows_all, train) if t]
    x = x_all[train]
    labels = np.array([r["label"] for r in rows])
    is_det = np.array([r["source"] == "det" for r in rows])
    sources = tuple(args.rows.split("+"))
    y = targets(rows, args.incorrect)
    fold = folds(rows, y)

    # C by grouped CV; among the Cs within 0.002 of the best, the strongest regularisation (smaller
    # C generalises better to photos unlike these).
    cv = []
    for c in C_GRID:
        oof = cross_validate(rows, x, y, fold, sources, c)
        t, bal = best_threshold(oof[is_det], labels[is_det])
        cv.append((c, bal, t, oof))
        print(f"C={c:<7} cv balanced accuracy on detector boxes {bal:.4f} at threshold {t}", flush=True)
    top = max(b for _, b, _, _ in cv)
    c, bal, threshold, oof = next(e for e in cv if e[1] >= top - 0.002)
    print(f"chosen C={c}, threshold={threshold} (cv balanced {bal:.4f})", flush=True)
    cv_metrics = evaluate_rows(rows, oof, threshold, shipped_all[train])

    yy = np.array([t if t is not None else -1 for t in y])
    use = np.array([t is not None and r["source"] in sources for r, t in zip(rows, y)])
    scaler, model = fit(x[use], yy[use], c)

    test_rows = [r for r, t in zip(rows_all, test) if t]
    test_metrics = None
    if test_rows:
        p_test = predict(scaler, model, x_all[test])
        test_metrics = evaluate_rows(test_rows, p_test, threshold, shipped_all[test])

    head = {
        "format": FORMAT,
        "description": "Standardised logistic regression on mask_classifier.onnx's 1280-d pooled features "
                       "(`features` output). p = sigmoid(coef . ((x - mean) / scale) + intercept); a face is "
                       "masked when p >= threshold (the crate folds the threshold in so 0.5 is the boundary).",
        "threshold": threshold,
        "intercept": sig(model.intercept_[0]),
        "mean": [sig(v) for v in scaler.mean_],
        "scale": [sig(v) for v in scaler.scale_],
        "coef": [sig(v) for v in model.coef_[0]],
        "provenance": {
            "data": "../shared/eval/manifest.jsonl (kaggle853, andrewmvd Face Mask Detection, CC0 1.0)",
            "manifest_sha256": sha256(MANIFEST),
            "split": "train only (images whose number is not a multiple of 5); test used for the report only",
            "training_rows": {"labelled_boxes": int(np.sum(use & ~is_det)), "detector_boxes": int(np.sum(use & is_det)),
                              "rows": args.rows, "incorrect": args.incorrect},
            "crop": f"mask_detect::crop_face with margin {args.margin} (Config::crop_margin), 224x224",
            "method": {"model": "StandardScaler + LogisticRegression(lbfgs, class_weight=balanced)", "C": c,
                       "C_grid": C_GRID, "cv": f"{FOLDS}-fold StratifiedGroupKFold by image, seed {SEED}",
                       "threshold": "max balanced accuracy (smoothed over +-0.05) of out-of-fold probabilities on detector boxes"},
            # The effective settings, not argv: the same inputs give the same file byte for byte.
            "command": (f".venv/bin/python tools/train_head.py --features {args.features} --margin {args.margin:g} "
                        f"--rows {args.rows} --incorrect {args.incorrect} --out mask-detect/heads/mask_head.json"),
            "features_sha256": sha256(feat_path),
            "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__},
            "metrics": {"cv_train": cv_metrics, "test": test_metrics},
        },
    }
    if exploration is not None:
        head["provenance"]["exploration"] = exploration
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(head, f, indent=1)
        f.write("\n")
    print(json.dumps({"cv_train": cv_metrics, "test": test_metrics}, indent=1))
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"cv": [(c_, b_, t_) for c_, b_, t_, _ in cv], "cv_train": cv_metrics, "test": test_metrics,
                       "exploration": exploration}, f, indent=1)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

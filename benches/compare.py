#!/usr/bin/env python3
"""Side-by-side timings: our `mask-detect` (tract) against onnxruntime on the same models and photos.

Runs `target/debug/stage_times` (`make build` makes it: `cargo build --workspace --all-targets`)
and the same stages in onnxruntime, alternating round by round so both see the same
machine load, and prints per-stage medians (ms), the ratio ours/onnxruntime and images per second
with two threads. `--bin` runs another build of `stage_times` instead (to compare builds).

    .venv/bin/python benches/compare.py --reps 5 [--rounds 3] [IMAGE ...]

Peak RSS of the Rust process is its own VmHWM.

Both sides use one thread per inference for the stage timings (tract: no multithreaded executor;
onnxruntime: intra_op_num_threads=1, inter_op_num_threads=1); RAYON_NUM_THREADS and
OMP_NUM_THREADS are set to 1 for the Rust process. For images per second with both cores busy, ours
shares one Detector between two threads; onnxruntime gets the faster of two sessions in two threads
(intra_op=1 each) and one session with intra_op=2.

The onnxruntime pipeline mirrors `Detector::detect` with `Config::default()`: long side scaled to
800 (bilinear), padded to multiples of 32, NCHW float32 RGB 0..255 into CenterFace (after removing
the initializers that the file also lists as graph inputs, which otherwise stop constant folding),
heatmap > 0.45, boxes, NMS at IoU 0.3, each face cropped with a 20% margin and resized to 224x224,
scaled to [-1, 1], one classifier batch (its fastest), then our linear head
(`mask-detect/heads/mask_head.json`) on the pooled features.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "fixtures" / "photos"
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "stage_times"
THREAD_ENV = {"RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def centerface_bytes(path):
    """CenterFace without initializer-inputs, and with a free input shape (the file says 10x3x32x32)."""
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    for inp in [i for i in graph.input if i.name in inits]:
        graph.input.remove(inp)
    for value in [graph.input[0], *graph.output]:
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if i != 1:
                d.dim_param = f"{value.name}_{i}"
    return model.SerializeToString()


class OrtPipeline:
    def __init__(self, face_model, mask_model, intra, head=ROOT / "mask-detect" / "heads" / "mask_head.json"):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        cpu = ["CPUExecutionProvider"]
        self.faces = ort.InferenceSession(face_model, opts, providers=cpu)
        self.masks = ort.InferenceSession(str(mask_model), opts, providers=cpu)
        h = json.loads(Path(head).read_text())
        self.head = {k: np.asarray(h[k], np.float32) for k in ("mean", "scale", "coef")}
        self.head_bias = h["intercept"] - np.log(h["threshold"] / (1 - h["threshold"]))

    def detect_faces(self, rgb, long_side=800, threshold=0.45, nms_iou=0.3):
        h, w = rgb.shape[:2]
        scale = long_side / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        cw, ch = -(-nw // 32) * 32, -(-nh // 32) * 32
        resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        x = np.zeros((1, 3, ch, cw), np.float32)
        x[0, :, :nh, :nw] = resized.transpose(2, 0, 1)
        heat, sizes, offsets, marks = self.faces.run(None, {"input.1": x})
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        scores = heat[0, 0, ys, xs]
        s0 = np.exp(sizes[0, 0, ys, xs]) * 4
        s1 = np.exp(sizes[0, 1, ys, xs]) * 4
        x1 = np.clip((xs + offsets[0, 1, ys, xs] + 0.5) * 4 - s1 / 2, 0, nw)
        y1 = np.clip((ys + offsets[0, 0, ys, xs] + 0.5) * 4 - s0 / 2, 0, nh)
        boxes = np.stack([x1, y1, np.minimum(x1 + s1, nw), np.minimum(y1 + s0, nh)], 1) / scale
        lms = np.stack([marks[0, 1::2, ys, xs] * s1[:, None] + x1[:, None],
                        marks[0, 0::2, ys, xs] * s0[:, None] + y1[:, None]], 2) / scale
        return nms(boxes, scores, lms, nms_iou)

    def classify(self, crops):
        x = np.stack([c.transpose(2, 0, 1) for c in crops]).astype(np.float32) / 127.5 - 1.0
        _, features = self.masks.run(None, {"input": x})
        z = ((features - self.head["mean"]) / self.head["scale"]) @ self.head["coef"] + self.head_bias
        return 1 / (1 + np.exp(-z))

    def detect(self, rgb):
        faces = self.detect_faces(rgb)
        crops = [crop_face(rgb, box) for box, _, _ in faces]
        return self.classify(crops) if crops else None


def nms(boxes, scores, lms, iou):
    order = np.argsort(-scores)
    keep = []
    for i in order:
        b = boxes[i]
        if all(box_iou(b, boxes[j]) <= iou for j in keep):
            keep.append(i)
    return [(boxes[i], scores[i], lms[i]) for i in keep]


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_face(rgb, box, margin=0.2):
    h, w = rgb.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1 = int(min(max(np.floor(box[0] - bw * margin), 0), w - 1))
    y1 = int(min(max(np.floor(box[1] - bh * margin), 0), h - 1))
    x2 = int(min(max(np.ceil(box[2] + bw * margin), x1 + 1), w))
    y2 = int(min(max(np.ceil(box[3] + bh * margin), y1 + 1), h))
    crop = Image.fromarray(rgb[y1:y2, x1:x2])
    return np.asarray(crop.resize((224, 224), Image.BILINEAR))


def timed(reps, f):
    f()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def ort_round(pipe, images, reps):
    """One round of the onnxruntime stages; returns {stage: [ms, ...]} like stage_times."""
    stages = {}
    first = images[0][1]
    rgb640 = np.asarray(Image.fromarray(first).resize((640, 480), Image.BILINEAR))
    stages["detect_faces_640x480"] = timed(reps, lambda: pipe.detect_faces(rgb640))
    x640 = np.zeros((1, 3, 480, 640), np.float32)
    x640[0] = rgb640.transpose(2, 0, 1)
    stages["ort_run_only/detect_faces_640x480"] = timed(
        reps, lambda: pipe.faces.run(None, {"input.1": x640}))
    crop = crop_face(first, pipe.detect_faces(first)[0][0])
    for n in (1, 8):
        stages[f"classify_b{n}"] = timed(reps, lambda n=n: pipe.classify([crop] * n))
    for name, rgb in images:
        stages[f"detect/{name}"] = timed(reps, lambda rgb=rgb: pipe.detect(rgb))
    return stages


def ort_throughput(face_model, mask_model, images, reps):
    """Images per second with both cores busy, as the better of the two onnxruntime set-ups."""
    def loop(pipe):
        for _ in range(reps):
            for _, rgb in images:
                pipe.detect(rgb)

    pipes = [OrtPipeline(face_model, mask_model, 1) for _ in range(2)]
    loop(pipes[0])
    loop(pipes[1])  # warm-up
    t = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(p,)) for p in pipes]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    two_sessions = 2 * reps * len(images) / (time.perf_counter() - t)

    pipe = OrtPipeline(face_model, mask_model, 2)
    loop(pipe)
    t = time.perf_counter()
    loop(pipe)
    loop(pipe)
    intra2 = 2 * reps * len(images) / (time.perf_counter() - t)
    return {"2_sessions_2_threads": two_sessions, "1_session_intra_op_2": intra2}


def main():
    ort.set_default_logger_severity(3)  # the classifier's unused-initializer warnings are noise
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timed runs per stage per round and side")
    ap.add_argument("--rounds", type=int, default=3, help="alternations ours/onnxruntime")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--json", type=Path, help="also write all samples here")
    ap.add_argument("--bin", type=Path, default=BIN,
                    help="our stage_times binary (default: the test build's)")
    ap.add_argument("images", nargs="*", type=Path,
                    default=[PHOTOS / f"maksssksksss{i}.png" for i in range(3)],
                    help="photos (default: maksssksksss0-2 of fixtures/photos)")
    args = ap.parse_args()
    if not args.bin.exists():
        sys.exit(f"{args.bin} missing: run `make build` (cargo build --workspace --all-targets)")

    face_model = centerface_bytes(args.models / "centerface.onnx")
    mask_model = args.models / "mask_classifier.onnx"
    pipe = OrtPipeline(face_model, mask_model, 1)
    images = [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in args.images]
    env = {**os.environ, **THREAD_ENV}
    cmd = [str(args.bin), "--reps", str(args.reps), "--models", str(args.models),
           *map(str, args.images)]

    ours, theirs = {}, {}
    ours_tp, ort_tp, rust_hwm = [], [], []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: ours", file=sys.stderr, flush=True)
        out = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                        text=True).stdout)
        for k, v in out["stages"].items():
            ours.setdefault(k, []).extend(v["samples_ms"])
        ours_tp.append(out["throughput_2_threads"]["images_per_s"])
        rust_hwm.append(out["vm_hwm_kb"])
        print(f"round {r + 1}/{args.rounds}: onnxruntime", file=sys.stderr, flush=True)
        for k, v in ort_round(pipe, images, args.reps).items():
            theirs.setdefault(k, []).extend(v)
        ort_tp.append(ort_throughput(face_model, mask_model, images, args.reps))

    med = statistics.median
    rows = [("detector 640x480", "detect_faces_640x480"),
            ("classifier batch 1", "classify_b1"),
            ("classifier batch 8", "classify_b8")]
    rows += [(f"detect {n} ({rgb.shape[1]}x{rgb.shape[0]})", f"detect/{n}") for n, rgb in images]
    print(f"\nthreads per inference: 1 both sides; env {THREAD_ENV}; onnxruntime {ort.__version__}; "
          f"{args.rounds} rounds x {args.reps} reps, medians of all samples")
    print(f"{'stage':<36} {'ours ms':>9} {'ort ms':>9} {'ours/ort':>9}")
    ratios = []
    for label, key in rows:
        a, b = med(ours[key]), med(theirs[key])
        if key.startswith("detect/"):
            ratios.append(a / b)
        print(f"{label:<36} {a:9.1f} {b:9.1f} {a / b:9.2f}")
    print(f"{'whole image, median of ratios':<36} {'':>9} {'':>9} {med(ratios):9.2f}")
    run_only = med(theirs["ort_run_only/detect_faces_640x480"])
    print(f"(onnxruntime session.run alone on 1x3x480x640: {run_only:.1f} ms)")
    ort_best = {k: med(t[k] for t in ort_tp) for k in ort_tp[0]}
    best = max(ort_best, key=ort_best.get)
    a, b = med(ours_tp), ort_best[best]
    print(f"{'images/s, 2 threads':<36} {a:9.2f} {b:9.2f} {b / a:9.2f}  (time ratio ours/ort; "
          f"ort best = {best}; all: " + ", ".join(f"{k} {v:.2f}" for k, v in ort_best.items()) + ")")
    # VmHWM as the Rust process reports it: ru_maxrss of children would also count the forked copy
    # of this Python process before exec.
    print(f"peak RSS of the Rust process (VmHWM, max over rounds): {max(rust_hwm) / 1024:.0f} MiB; "
          f"this Python process with onnxruntime (ru_maxrss): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"ours": ours, "ort": theirs, "ours_images_per_s": ours_tp,
                                         "ort_images_per_s": ort_tp, "rust_vm_hwm_kb": rust_hwm}))


if __name__ == "__main__":
    main()

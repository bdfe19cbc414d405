#!/usr/bin/env python3
"""onnxruntime's side of `node_profile`: where onnxruntime spends its time in one of our models.

    .venv/bin/python benches/ort_node_profile.py [--reps 5] [--top 12] MODEL.onnx D0,D1,D2,D3

One thread (intra_op=1, inter_op=1), CPUExecutionProvider, default graph optimisations. For
CenterFace the initializers that the file also lists as graph inputs are removed first, as
`compare.py` does. Prints the median wall time of a run, then onnxruntime's own profiler
(`SessionOptions.enable_profiling`) summed per operator and its slowest nodes (median kernel
times over the timed runs, in ms).
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import centerface_bytes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("model", type=Path)
    ap.add_argument("shape")
    args = ap.parse_args()
    shape = [int(d) for d in args.shape.split(",")]
    ort.set_default_logger_severity(3)
    model = centerface_bytes(args.model) if "centerface" in args.model.name else str(args.model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, np.float32) * 255}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    profile = session.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)
    per_node = collections.defaultdict(list)
    op_of = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"] / 1000)
            op_of[e["name"]] = (e["args"].get("op_name"), e["args"].get("output_type_shape"))
    medians = {name: statistics.median(v) for name, v in per_node.items()}
    per_op = collections.defaultdict(float)
    for name, ms in medians.items():
        per_op[op_of[name][0]] += ms
    print(f"{args.model} {shape}: whole run median {statistics.median(times):.2f} ms, "
          f"sum of kernel medians {sum(medians.values()):.2f} ms, {len(medians)} nodes")
    print("\nper operator:")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"  {ms:8.2f} ms  {op}")
    print(f"\ntop {args.top} nodes:")
    for name, ms in sorted(medians.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {ms:8.2f} ms  {name.removesuffix('_kernel_time')} {op_of[name][0]} -> {op_of[name][1]}")


if __name__ == "__main__":
    main()

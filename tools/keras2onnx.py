"""Convert the shipped Keras 2.2.4 MobileNetV2 mask classifier (HDF5) to ONNX.

Written with h5py + numpy + onnx only: Keras 3 cannot read this file and TensorFlow is not needed.
The converter understands exactly the layer types that appear in the file and refuses anything else,
so a different model fails loudly instead of converting wrongly.

Layout decisions (each checked against `keras_reference.py`, a plain numpy forward pass):
- Input is NCHW `[N, 3, 224, 224]`, RGB scaled to [-1, 1]; the batch dimension is symbolic (`N`).
- Keras `ZeroPadding2D(((0, 1), (0, 1)))` pads bottom/right only; it becomes an ONNX `Pad`.
- `padding="same"` at stride 1 is symmetric `(k - 1) / 2`; stride-2 layers in this file are `valid`
  after an explicit `ZeroPadding2D`, so asymmetric "same" padding never has to be guessed.
- BatchNormalization keeps Keras' epsilon (1e-3 here), not ONNX's default 1e-5.
- After the layer-by-layer translation, two inference-only rewrites (`simplify`) leave fewer and
  cheaper nodes for the runtime: every BatchNormalization that follows a Conv is folded into that
  Conv's weights and bias (computed in float64), and every zero `Pad` that feeds a Conv becomes
  that Conv's own (asymmetric) `pads`. Folded, the graph has no Mul/Add pairs left that a
  channel-last plan could not fuse (PERFORMANCE.md).
- DepthwiseConv2D kernels `(kh, kw, C, 1)` become `(C, 1, kh, kw)` with `group = C`.
- `ReLU(max_value=6)` is `Clip(0, 6)`; Dense kernels are `(in, out)`, so `Gemm` needs no transpose.
- Every node gets a unique, non-empty name (tract refuses duplicates).

Outputs: `probabilities` `[N, 2]` (softmax: index 0 = mask, 1 = without mask) and `features`
`[N, 1280]`, the pooled backbone features (the `flatten` output), used to train our own head.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class ConversionError(Exception):
    """The Keras file holds something this converter does not understand."""


def _weights(f: h5py.File, layer: str) -> dict[str, np.ndarray]:
    """Return the named weight arrays of one layer (keys like 'kernel', 'bias', 'gamma')."""
    group = f["model_weights"][layer]
    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            key = name.split("/")[-1].split(":")[0]
            out[key] = np.asarray(obj, dtype=np.float32)

    group.visititems(visit)
    return out


def _inputs(layer: dict) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return []
    return [n[0] for n in nodes[0]]


def convert(model_path: Path, out_path: Path) -> None:
    """Convert `model_path` (Keras HDF5) to an ONNX file at `out_path`."""
    with h5py.File(model_path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        nodes: list[onnx.NodeProto] = []
        inits: list[onnx.TensorProto] = []
        names: set[str] = set()
        # Keras layer name -> ONNX tensor name holding that layer's output.
        tensor: dict[str, str] = {}

        def node(op: str, inputs: list[str], name: str, **attrs) -> str:
            if name in names or not name:
                raise ConversionError(f"duplicate or empty node name {name!r}")
            names.add(name)
            nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
            return name

        def init(name: str, array: np.ndarray) -> str:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            return name

        input_name = None
        for layer in layers:
            kind = layer["class_name"]
            cfg = layer["config"]
            name = cfg["name"]
            ins = [tensor[i] for i in _inputs(layer)]
            if kind == "InputLayer":
                input_name = "input"
                tensor[name] = input_name
                continue
            if kind == "ZeroPadding2D":
                (top, bottom), (left, right) = cfg["padding"]
                pads = init(f"{name}/pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
                tensor[name] = node("Pad", [ins[0], pads], name, mode="constant")
            elif kind in ("Conv2D", "DepthwiseConv2D"):
                w = _weights(f, name)
                kh, kw = cfg["kernel_size"]
                if cfg["padding"] == "same":
                    if cfg["strides"] != [1, 1]:
                        raise ConversionError(f"{name}: 'same' padding with stride {cfg['strides']}")
                    pads = [(kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2]
                elif cfg["padding"] == "valid":
                    pads = [0, 0, 0, 0]
                else:
                    raise ConversionError(f"{name}: padding {cfg['padding']!r}")
                if kind == "Conv2D":
                    kernel = w["kernel"].transpose(3, 2, 0, 1)  # (kh,kw,in,out) -> (out,in,kh,kw)
                    group = 1
                else:
                    k = w["depthwise_kernel"]  # (kh,kw,C,1)
                    if k.shape[3] != 1:
                        raise ConversionError(f"{name}: depth multiplier {k.shape[3]}")
                    kernel = k.transpose(2, 3, 0, 1)  # -> (C,1,kh,kw)
                    group = kernel.shape[0]
                conv_in = [ins[0], init(f"{name}/W", kernel)]
                if cfg.get("use_bias"):
                    conv_in.append(init(f"{name}/B", w["bias"]))
                out = node("Conv", conv_in, name, kernel_shape=[kh, kw], strides=cfg["strides"],
                           pads=pads, group=group, dilations=cfg.get("dilation_rate", [1, 1]))
                act = cfg.get("activation", "linear")
                if act != "linear":
                    raise ConversionError(f"{name}: fused activation {act!r}")
                tensor[name] = out
            elif kind == "BatchNormalization":
                w = _weights(f, name)
                if cfg.get("axis") not in ([3], 3, -1, [-1]):
                    raise ConversionError(f"{name}: axis {cfg.get('axis')}")
                channels = w["moving_mean"].shape[0]
                gamma = w.get("gamma", np.ones(channels, np.float32))
                beta = w.get("beta", np.zeros(channels, np.float32))
                tensor[name] = node(
                    "BatchNormalization",
                    [ins[0], init(f"{name}/gamma", gamma), init(f"{name}/beta", beta),
                     init(f"{name}/mean", w["moving_mean"]), init(f"{name}/var", w["moving_variance"])],
                    name, epsilon=float(cfg["epsilon"]))
            elif kind == "ReLU":
                if cfg.get("negative_slope", 0.0) != 0.0 or cfg.get("threshold", 0.0) != 0.0:
                    raise ConversionError(f"{name}: leaky/thresholded ReLU")
                max_value = cfg.get("max_value")
                if max_value is None:
                    tensor[name] = node("Relu", [ins[0]], name)
                else:
                    lo = init(f"{name}/min", np.array(0.0, np.float32))
                    hi = init(f"{name}/max", np.array(max_value, np.float32))
                    tensor[name] = node("Clip", [ins[0], lo, hi], name)
            elif kind == "Add":
                tensor[name] = node("Add", ins, name)
            elif kind == "AveragePooling2D":
                if cfg["padding"] != "valid":
                    raise ConversionError(f"{name}: padding {cfg['padding']!r}")
                tensor[name] = node("AveragePool", [ins[0]], name, kernel_shape=cfg["pool_size"],
                                    strides=cfg["strides"])
            elif kind == "Flatten":
                # NCHW vs NHWC flatten order only differs when H*W > 1; here the pool leaves 1x1.
                tensor[name] = node("Flatten", [ins[0]], name, axis=1)
            elif kind == "Dropout":
                tensor[name] = ins[0]  # inference: identity
            elif kind == "Dense":
                w = _weights(f, name)
                gemm = node("Gemm", [ins[0], init(f"{name}/W", w["kernel"]), init(f"{name}/B", w["bias"])],
                            f"{name}/gemm")
                act = cfg["activation"]
                if act == "relu":
                    tensor[name] = node("Relu", [gemm], name)
                elif act == "softmax":
                    tensor[name] = node("Softmax", [gemm], name, axis=-1)
                elif act == "linear":
                    tensor[name] = gemm
                else:
                    raise ConversionError(f"{name}: activation {act!r}")
            else:
                raise ConversionError(f"unsupported layer {kind} ({name})")

        if "flatten" not in tensor:
            raise ConversionError("no 'flatten' layer: not the expected MobileNetV2 head")
        last = layers[-1]["config"]["name"]
        nodes.append(helper.make_node("Identity", [tensor[last]], ["probabilities"], name="probabilities_out"))
        nodes.append(helper.make_node("Identity", [tensor["flatten"]], ["features"], name="features_out"))
        graph = helper.make_graph(
            nodes,
            "mask_classifier_mobilenetv2",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, 224, 224])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
             helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1280])],
            inits,
        )
    simplify(graph)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mask-detect tools/keras2onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out_path)


def simplify(graph: onnx.GraphProto) -> None:
    """Fold BatchNormalization into the preceding Conv and zero Pads into the following Conv.

    Only folds where the Conv (for BN) or the Pad (for pads) has exactly one consumer, so no other
    node sees a changed tensor. Graph outputs are never folded away."""
    inits = {t.name: t for t in graph.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    outputs = {o.name for o in graph.output}

    def consumers(tensor: str) -> list[onnx.NodeProto]:
        return [n for n in graph.node if tensor in n.input]

    def set_init(name: str, array: np.ndarray) -> None:
        arrays[name] = array
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))

    def attr(node: onnx.NodeProto, key: str):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == key), None)

    producers = {out: n for n in graph.node for out in n.output}
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.output[0] in outputs:
            continue
        if len(consumers(conv.output[0])) != 1:
            continue
        gamma, beta, mean, var = (arrays[i].astype(np.float64) for i in bn.input[1:5])
        eps = attr(bn, "epsilon")
        scale = gamma / np.sqrt(var + (1e-5 if eps is None else eps))
        w_name = conv.input[1]
        w = arrays[w_name].astype(np.float64)
        set_init(w_name, (w * scale[:, None, None, None]).astype(np.float32))
        if len(conv.input) > 2:
            b = arrays[conv.input[2]].astype(np.float64)
            b_name = conv.input[2]
        else:
            b = np.zeros_like(scale)
            b_name = f"{conv.name}/B"
            graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), b_name))
            inits[b_name] = graph.initializer[-1]
            conv.input.append(b_name)
        set_init(b_name, ((b - mean) * scale + beta).astype(np.float32))
        # The Conv now produces what the BN produced.
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        for name in bn.input[1:5]:
            if not consumers(name):
                graph.initializer.remove(inits.pop(name))

    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        users = consumers(pad.output[0])
        if len(users) != 1 or users[0].op_type != "Conv" or pad.output[0] in outputs:
            continue
        if attr(pad, "mode") not in (None, b"constant", "constant") or len(pad.input) > 2:
            continue
        p = arrays[pad.input[1]]  # [n0, c0, h0, w0, n1, c1, h1, w1]
        if p[0] or p[1] or p[4] or p[5]:
            continue
        conv = users[0]
        old = list(attr(conv, "pads") or [0, 0, 0, 0])
        new = [old[0] + int(p[2]), old[1] + int(p[3]), old[2] + int(p[6]), old[3] + int(p[7])]
        for a in conv.attribute:
            if a.name == "pads":
                a.CopyFrom(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        if not consumers(pad.input[1]):
            graph.initializer.remove(inits.pop(pad.input[1]))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: keras2onnx.py MODEL.h5 OUT.onnx")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))

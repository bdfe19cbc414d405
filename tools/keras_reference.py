"""An independent numpy forward pass of the Keras mask classifier, read straight from the HDF5 file.

Used only to prove `keras2onnx.py` right: it works in Keras' own NHWC layout with Keras' own
semantics (no ONNX involved), so a layout or padding mistake in the converter shows up as a mismatch.
"""

from __future__ import annotations

import json

import h5py
import numpy as np


def _w(f, layer):
    out = {}
    f["model_weights"][layer].visititems(
        lambda n, o: out.__setitem__(n.split("/")[-1].split(":")[0], np.asarray(o, np.float64))
        if isinstance(o, h5py.Dataset) else None)
    return out


def _conv(x, k, stride, same):
    """x: (N,H,W,Cin), k: (kh,kw,Cin,Cout); Keras 'same' at stride 1 or 'valid'."""
    kh, kw = k.shape[:2]
    if same:
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, k.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out += patch @ k[i, j]
    return out


def _depthwise(x, k, stride, same):
    """k: (kh,kw,C,1)."""
    kh, kw = k.shape[:2]
    if same:
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :] * k[i, j, :, 0]
    return out


def forward(model_path, x_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the Keras model on `x_nhwc` (N,224,224,3 in [-1,1]); return (probabilities, features)."""
    with h5py.File(model_path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        vals = {}
        for layer in layers:
            kind, cfg = layer["class_name"], layer["config"]
            name = cfg["name"]
            ins = [vals[n[0]] for n in (layer["inbound_nodes"][0] if layer["inbound_nodes"] else [])]
            if kind == "InputLayer":
                y = x_nhwc.astype(np.float64)
            elif kind == "ZeroPadding2D":
                (t, b), (l, r) = cfg["padding"]
                y = np.pad(ins[0], ((0, 0), (t, b), (l, r), (0, 0)))
            elif kind == "Conv2D":
                w = _w(f, name)
                y = _conv(ins[0], w["kernel"], cfg["strides"][0], cfg["padding"] == "same")
                if cfg["use_bias"]:
                    y = y + w["bias"]
            elif kind == "DepthwiseConv2D":
                w = _w(f, name)
                y = _depthwise(ins[0], w["depthwise_kernel"], cfg["strides"][0], cfg["padding"] == "same")
                if cfg["use_bias"]:
                    y = y + w["bias"]
            elif kind == "BatchNormalization":
                w = _w(f, name)
                y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
                y = y * w["gamma"] + w["beta"]
            elif kind == "ReLU":
                y = np.maximum(ins[0], 0)
                if cfg.get("max_value") is not None:
                    y = np.minimum(y, cfg["max_value"])
            elif kind == "Add":
                y = ins[0] + ins[1]
            elif kind == "AveragePooling2D":
                p = cfg["pool_size"][0]
                n, h, w_, c = ins[0].shape
                y = ins[0][:, :h // p * p, :w_ // p * p].reshape(n, h // p, p, w_ // p, p, c).mean(axis=(2, 4))
            elif kind == "Flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif kind == "Dropout":
                y = ins[0]
            elif kind == "Dense":
                w = _w(f, name)
                y = ins[0] @ w["kernel"] + w["bias"]
                if cfg["activation"] == "relu":
                    y = np.maximum(y, 0)
                elif cfg["activation"] == "softmax":
                    e = np.exp(y - y.max(axis=-1, keepdims=True))
                    y = e / e.sum(axis=-1, keepdims=True)
            else:
                raise ValueError(f"reference does not know {kind}")
            vals[name] = y
        return vals[layers[-1]["config"]["name"]], vals["flatten"]

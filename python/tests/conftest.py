"""Shared fixtures: real photos from the evaluation set and one detector per test session."""

import json
from pathlib import Path

import pytest

import mask_detect

HERE = Path(__file__).resolve().parent
EVAL = HERE / ".." / ".." / ".." / "shared" / "eval"
IMAGES = EVAL / "kaggle853" / "images"


def photo(number: int) -> Path:
    """Path of ``maksssksksss<number>.png`` from the evaluation set."""
    path = IMAGES / f"maksssksksss{number}.png"
    if not path.is_file():
        pytest.skip(f"evaluation photo missing: {path}")
    return path


@pytest.fixture(scope="session")
def manifest():
    """Ground truth of the evaluation set, keyed by file name."""
    with open(EVAL / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {Path(r["image"]).name: r for r in rows}


@pytest.fixture(scope="session")
def detector():
    """The detector on the packaged models, shared by the tests (it is thread-safe)."""
    return mask_detect.Detector()

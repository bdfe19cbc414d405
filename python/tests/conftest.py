"""Shared fixtures: the test photos (fixtures/photos) and one detector per test session."""

import json
from pathlib import Path

import pytest

import mask_detect

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent.parent / "fixtures" / "photos"


def photo(number: int) -> Path:
    """Path of ``maksssksksss<number>.png`` among the test photos."""
    path = PHOTOS / f"maksssksksss{number}.png"
    if not path.is_file():
        pytest.fail(f"test photo missing: {path}")
    return path


@pytest.fixture(scope="session")
def manifest():
    """Labels of the test photos, keyed by file name."""
    with open(PHOTOS / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {Path(r["image"]).name: r for r in rows}


@pytest.fixture(scope="session")
def detector():
    """The detector on the packaged models, shared by the tests (it is thread-safe)."""
    return mask_detect.Detector()

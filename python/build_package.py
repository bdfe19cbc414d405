#!/usr/bin/env python3
"""Copy the models into the Python package before maturin builds it.

The wheel carries the ONNX models, their licences and MODELS.md in ``mask_detect/models/`` so that
``pip install`` of the wheel is all a user needs. That directory is generated (and git-ignored):
this script fills it from the project's ``models/`` directory (made by ``make models``).

Usage: python3 python/build_package.py [--models DIR]
"""

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_MODELS = HERE / "mask_detect" / "models"
PATTERNS = ("*.onnx", "LICENSE.*", "MODELS.md", "models.json")
REQUIRED = ("centerface.onnx", "mask_classifier.onnx")


def package_models(source: Path, dest: Path = PACKAGE_MODELS) -> list:
    """Replace ``dest`` with the model files of ``source``; return the names copied."""
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)} in {source}: run `make models` first"
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    copied = []
    for pattern in PATTERNS:
        for path in sorted(source.glob(pattern)):
            if path.is_file():
                shutil.copy2(path, dest / path.name)
                copied.append(path.name)
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=HERE.parent / "models",
        help="directory holding the models (default: the project's models/)",
    )
    args = parser.parse_args(argv)
    copied = package_models(args.models.resolve())
    print(f"packaged {len(copied)} files into {PACKAGE_MODELS}: {', '.join(copied)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

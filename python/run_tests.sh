#!/usr/bin/env bash
# Build the Python module into the project venv and run its tests (called by `make test`).
#   python/run_tests.sh [pytest args...]
# Environment: VENV (default: <repo>/.venv), MASK_DETECT_WHEEL (a prebuilt wheel for the wheel test).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${VENV:-$root/.venv}"

export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"

"$venv/bin/python" "$here/build_package.py"
# The dev profile (dependencies at opt-level 3), the same profile the wheel test builds with.
# maturin builds this package alone; through workspace-hack it resolves the same dependency
# features as the workspace build (make build), so it reuses that build and compiles only pyo3,
# numpy and the module again (with pyo3's extension-module feature).
(cd "$here" && maturin develop --profile dev)
cd "$here"
exec "$venv/bin/python" -m pytest -q tests "$@"

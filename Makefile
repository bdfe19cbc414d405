# The project's entry points. `make run` and `make test` are the README's quick start.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON := $(CURDIR)/.venv/bin/python
export MASK_TEST_PYTHON := $(PYTHON)
export CARGO_TERM_COLOR := never
# Where cargo puts the build (CARGO_TARGET_DIR if set, as cargo itself does).
TARGET := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET)/debug

.PHONY: run build test models venv lint rust-test python-test load-smoke load cluster-test audit system-deps

## Fetch (if missing), verify and convert the models into ./models.
models:
	python3 tools/fetch_models.py

## The project's Python virtual environment (pinned tools/requirements.txt).
venv:
	python3 tools/fetch_models.py --venv

## What the tests need beyond Rust and Python: Chromium (page tests), PostgreSQL, nginx and the
# Garage S3 server (clustered backends).
system-deps:
	bash tools/install_system_deps.sh

## Build and start the web app with the embedded default configuration (data in ./data).
run: models build
	$(BIN)/mask-web

## The one build of the workspace: every library, program, test and benchmark, with the features
# that `cargo test --workspace --all-targets` turns on (the same units, so `rust-test` compiles
# nothing more). `run`, `load` and the Python module's build reuse it too; `cargo run -p webapp`
# would resolve features for one package and compile tract and ~100 other crates a second time.
build:
	cargo build --workspace --all-targets

## Every test of every crate and of the Python tools, plus fmt and clippy.
test: models venv system-deps lint rust-test python-test load-smoke cluster-test

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 tools/check_licenses.py
	python3 tools/check_features.py

# With a throwaway PostgreSQL and Garage S3 server, so the PostgreSQL halves of the backend
# suites run (without them they print SKIPPED).
rust-test:
	python3 webapp/test_support/services.py -- cargo test --workspace --all-targets
	cargo test --workspace --doc

python-test:
	cd tools && $(PYTHON) -m pytest -q
	bash python/run_tests.sh
	cd webapp/browser_tests && $(PYTHON) -m pytest -q
	cd webapp/fault_tests && $(PYTHON) -m pytest -q
	cd webapp/security_tests && $(PYTHON) -m pytest -q

## A short load run: must hold every promise of benches/src/bin/load.rs (about 30 s).
load-smoke: build
	$(BIN)/load --levels 2,32 --seconds 5

## Two instances on PostgreSQL and Garage behind nginx: the API, shared sessions and throttling,
# kill -9 of an instance under load (about 2 minutes).
cluster-test: build
	cd webapp/cluster_tests && $(PYTHON) -m pytest -q -s

## The full load measurement of PERFORMANCE.md (about 2 minutes).
load: build
	$(BIN)/load --levels 1,2,4,8,32 --seconds 20 --json $(TARGET)/load.json

## Licences of every crate (offline), then RustSec advisories where the database is reachable.
audit:
	python3 tools/check_licenses.py
	bash tools/audit.sh

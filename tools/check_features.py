#!/usr/bin/env python3
"""Check that builds of one package reuse the workspace build's dependencies.

Cargo turns on dependency features for the packages it is asked to build. `make test` builds the
whole workspace (`cargo test --workspace --all-targets`); maturin builds the Python module alone
(`cargo rustc -p mask-detect-python --features extension-module`), and `cargo run -p examples`
builds the examples alone. A dependency that gets fewer features in a one-package build is
compiled a second time, with everything that depends on it (tract included, minutes on two cores).
The `workspace-hack` crate lists such dependencies with the workspace's features; this script
compares the feature sets that `cargo tree` resolves and names any dependency that differs, with
the features to add there. Run by `make lint` (after a build: it reads the local registry).
"""

import subprocess
import sys

# One-package builds that must reuse the workspace build, as cargo arguments.
SINGLE_PACKAGE_BUILDS = [
    ["-p", "mask-detect-python", "--features", "extension-module"],
    ["-p", "examples"],
]
# Built with `extension-module` only by maturin, on purpose: a second copy of these few crates
# (the feature changes how they link), not of their dependencies.
OWN_BUILD = {"pyo3", "pyo3-ffi", "pyo3-build-config", "mask-detect-python"}


def resolved(args):
    """{(package, version): {frozenset(features), ...}} as `cargo tree` resolves them for args."""
    out = subprocess.run(
        ["cargo", "tree", "--offline", "--prefix", "none", "-f", "{p}|{f}", *args],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"cargo tree {' '.join(args)} failed:\n{out.stderr}")
    found = {}
    for line in filter(None, out.stdout.splitlines()):
        package, _, features = line.partition("|")
        name, version = package.split()[:2]
        features = features.removesuffix(" (*)").strip()
        found.setdefault((name, version), set()).add(frozenset(filter(None, features.split(","))))
    return found


def main():
    workspace = resolved(["--workspace", "-e", "normal,build,dev"])
    problems = []
    for args in SINGLE_PACKAGE_BUILDS:
        for (name, version), feature_sets in sorted(resolved([*args, "-e", "normal,build"]).items()):
            if name in OWN_BUILD:
                continue
            for features in feature_sets - workspace.get((name, version), set()):
                wanted = sorted(max(workspace.get((name, version), {frozenset()}), key=len))
                problems.append(
                    f"{name} {version}: `cargo build {' '.join(args)}` turns on "
                    f"[{', '.join(sorted(features))}], the workspace build [{', '.join(wanted)}]"
                )
    if problems:
        print("Dependencies that a one-package build would compile a second time:")
        for p in problems:
            print(f"  {p}")
        print("Add them to workspace-hack/Cargo.toml with the workspace's features.")
        return 1
    print(f"one-package builds reuse the workspace's dependencies ({len(SINGLE_PACKAGE_BUILDS)} checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

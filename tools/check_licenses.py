#!/usr/bin/env python3
"""Check that every crate in Cargo.lock is under a licence this MIT project may ship with.

Reads `cargo metadata --locked` (offline: the registry index is already local after a build) and
evaluates each crate's SPDX `license` expression (OR, AND, WITH, parentheses, and the legacy
`A/B` form) against ALLOWED. Exits non-zero and names the crates otherwise, or when a crate has
no licence field at all. Run by `make lint`.
"""

import json
import re
import subprocess
import sys

# Permissive licences compatible with distributing the project under MIT.
ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "Unicode-3.0", "0BSD", "CDLA-Permissive-2.0", "BSL-1.0", "Unlicense",
}


def allowed(expression: str) -> bool:
    """Evaluate an SPDX expression: true when some choice of OR branches uses only ALLOWED."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expression.replace("/", " OR "))
    pos = 0

    def parse_or():
        nonlocal pos
        value = parse_and()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            value = parse_and() or value
        return value

    def parse_and():
        nonlocal pos
        value = parse_term()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            value = parse_term() and value
        return value

    def parse_term():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"truncated licence expression {expression!r}")
        if tokens[pos] == "(":
            pos += 1
            value = parse_or()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError(f"unbalanced licence expression {expression!r}")
            pos += 1
            return value
        name = tokens[pos]
        pos += 1
        if pos < len(tokens) and tokens[pos] == "WITH":
            name = f"{name} WITH {tokens[pos + 1]}"
            pos += 2
        return name in ALLOWED

    value = parse_or()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r} in licence expression {expression!r}")
    return value


def main() -> int:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True, capture_output=True, text=True,
    ).stdout
    packages = json.loads(out)["packages"]
    bad = []
    for p in packages:
        expr = p.get("license")
        try:
            ok = bool(expr) and allowed(expr)
        except ValueError as e:
            ok, expr = False, str(e)
        if not ok:
            bad.append(f"{p['name']} {p['version']}: {expr or 'no license field'}")
    if bad:
        print("crates under licences not in tools/check_licenses.py ALLOWED:", *bad, sep="\n  ")
        return 1
    print(f"licences ok: {len(packages)} crates, all under {', '.join(sorted(ALLOWED))} (or a choice of them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

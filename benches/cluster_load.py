#!/usr/bin/env python3
"""Uploads/s through nginx with two mask-web instances against one, on this machine, in one run.

Starts the topology of `make cluster-test` (throwaway PostgreSQL and Garage, two instances,
nginx with deploy/nginx-mask-web.conf), runs the load tool through nginx at the given
concurrency with both instances, stops one instance and runs it again, and prints both rows and
the ratio as its last line. Build first (`make build`).

    .venv/bin/python benches/cluster_load.py [--clients 8] [--seconds 20]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "webapp" / "cluster_tests"))
sys.path.insert(0, str(ROOT / "webapp" / "test_support"))
from conftest import Cluster  # noqa: E402
from test_cluster import LOAD  # noqa: E402


def run_load(url, clients, seconds, pids, user, out):
    subprocess.run(
        [str(LOAD), "--url", url, "--levels", str(clients), "--seconds", str(seconds),
         "--photos", "6", "--user", user, "--pids", ",".join(map(str, pids)),
         "--json", str(out)],
        check=True)
    return json.loads(out.read_text())["levels"][0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=int, default=20)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mask-cluster-load-"))
    cluster = Cluster(work)
    try:
        a, b = cluster.instances
        two = run_load(cluster.nginx.url, args.clients, args.seconds,
                       [a.proc.pid, b.proc.pid], "twoinstances", work / "two.json")
        b.stop()
        one = run_load(cluster.nginx.url, args.clients, args.seconds, [a.proc.pid],
                       "oneinstance", work / "one.json")
    finally:
        cluster.stop()
    print(f"\n{'instances':>9} {'201/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'peak MiB':>9}  statuses")
    for n, row in ((2, two), (1, one)):
        print(f"{n:>9} {row['created_per_s']:>7.2f} {row['p50_ms']:>7.0f} {row['p95_ms']:>7.0f} "
              f"{row['peak_rss_mib']:>9}  {row['statuses']}")
    print(f"two instances / one instance, uploads/s through nginx at {args.clients} clients: "
          f"{two['created_per_s'] / one['created_per_s']:.2f}")


if __name__ == "__main__":
    main()

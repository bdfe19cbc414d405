"""Throwaway servers for the tests of the clustered backends: a PostgreSQL cluster (Debian's
postgresql, `initdb` and `pg_ctl` run as the `postgres` user when we are root) and a Garage
S3 server (`cargo install garage`), each on a free port of 127.0.0.1 with its data in a temporary
directory, stopped and removed afterwards.

As a program it starts both, exports where they are and runs a command:

    python3 webapp/test_support/services.py -- cargo test --workspace --all-targets

The command sees MASK_TEST_POSTGRES (a URL whose database may be replaced: every test creates its
own), MASK_TEST_S3_ENDPOINT, MASK_TEST_S3_REGION, MASK_TEST_S3_BUCKET, MASK_TEST_S3_ACCESS_KEY
and MASK_TEST_S3_SECRET_KEY. Standard library only.
"""

import contextlib
import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout, what, alive=lambda: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited during startup")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {timeout} s")


def find_program(name, patterns=()):
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    cargo_bin = Path.home() / ".cargo" / "bin" / name
    if cargo_bin.is_file():
        return str(cargo_bin)
    raise RuntimeError(f"{name} not found: run `bash tools/install_system_deps.sh`")


class Postgres:
    """A PostgreSQL cluster in a temporary directory. `url(db)` gives a connection URL."""

    def __init__(self):
        self.initdb = find_program("initdb", ["/usr/lib/postgresql/*/bin/initdb"])
        self.pg_ctl = find_program("pg_ctl", ["/usr/lib/postgresql/*/bin/pg_ctl"])
        self.psql = find_program("psql", ["/usr/lib/postgresql/*/bin/psql"])
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mask-pg-"))
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0

    def _run(self, args, **kw):
        if self.as_postgres:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self):
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--no-sync"])
        options = (f"-p {self.port} -c listen_addresses={HOST} -k {self.dir} -c fsync=off "
                   "-c max_connections=200")
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options,
                   "-w", "-t", "60", "start"])
        return self

    def url(self, database="postgres"):
        return f"postgres://postgres@{HOST}:{self.port}/{database}"

    def create_database(self, name):
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, statement, database="postgres"):
        out = subprocess.run(
            [self.psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", statement,
             self.url(database)],
            check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        with contextlib.suppress(Exception):
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


class Garage:
    """A one-node Garage cluster with one bucket and one key allowed to use it."""

    REGION = "garage"

    def __init__(self, bucket="mask-test"):
        self.binary = find_program("garage")
        self.dir = Path(tempfile.mkdtemp(prefix="mask-s3-"))
        self.s3_port, self.rpc_port, self.admin_port = free_port(), free_port(), free_port()
        self.bucket = bucket
        self.config = self.dir / "garage.toml"
        self.process = None
        self.key_id = self.secret = None

    @property
    def endpoint(self):
        return f"http://{HOST}:{self.s3_port}"

    def garage(self, *args):
        out = subprocess.run([self.binary, "-c", str(self.config), *args], check=True,
                             capture_output=True, text=True, timeout=60)
        return out.stdout

    def start(self):
        rpc_secret = secrets.token_hex(32)
        self.config.write_text(f"""
metadata_dir = "{self.dir}/meta"
data_dir = "{self.dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "{HOST}:{self.rpc_port}"
rpc_public_addr = "{HOST}:{self.rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{self.REGION}"
api_bind_addr = "{HOST}:{self.s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "{HOST}:{self.admin_port}"
""")
        self.config.chmod(0o600)
        log = open(self.dir / "log", "wb")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config), "server"],
                                        stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "RUST_LOG": "warn"})
        alive = lambda: self.process.poll() is None  # noqa: E731
        wait_for_port(self.rpc_port, 60, "garage", alive)
        node = self._node_id()
        self.garage("layout", "assign", "-z", "dc1", "-c", "1G", node)
        self.garage("layout", "apply", "--version", "1")
        wait_for_port(self.s3_port, 60, "garage S3 API", alive)
        created = self.garage("key", "create", "mask-test-key")
        self.key_id = re.search(r"Key ID:\s*(\S+)", created).group(1)
        self.secret = re.search(r"Secret key:\s*(\S+)", created).group(1)
        self.garage("bucket", "create", self.bucket)
        self.garage("bucket", "allow", "--read", "--write", "--owner", self.bucket,
                    "--key", "mask-test-key")
        self._wait_for_bucket()
        return self

    def _node_id(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                out = self.garage("node", "id", "-q")
                return out.strip().split("@")[0]
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _wait_for_bucket(self):
        # Any answer from the S3 API (even 403 to an unsigned request) means it serves.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=2)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("garage S3 API did not answer")

    def env(self, prefix="MASK_TEST_S3_"):
        return {
            f"{prefix}ENDPOINT": self.endpoint,
            f"{prefix}REGION": self.REGION,
            f"{prefix}BUCKET": self.bucket,
            f"{prefix}ACCESS_KEY": self.key_id,
            f"{prefix}SECRET_KEY": self.secret,
        }

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(*services):
    started = []
    try:
        for service in services:
            started.append(service.start())
        yield started
    finally:
        for service in reversed(started or services):
            service.stop()


def main(argv):
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: services.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    t0 = time.monotonic()
    pg, s3 = Postgres(), Garage()
    with running(pg, s3):
        env = {**os.environ, "MASK_TEST_POSTGRES": pg.url(), **s3.env()}
        print(f"services: PostgreSQL on {HOST}:{pg.port}, Garage S3 on {s3.endpoint} "
              f"(started in {time.monotonic() - t0:.1f} s)", flush=True)
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

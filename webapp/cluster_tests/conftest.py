"""The clustered deployment on this machine: a throwaway PostgreSQL cluster, a Garage S3 server,
two `mask-web` instances sharing them, and nginx in front with the repository's
`deploy/nginx-mask-web.conf` (its listen and upstream addresses replaced by free ports).

Everything listens on 127.0.0.1; clients that must look distinct connect from 127.0.0.2 and
127.0.0.3 (the instances trust only nginx at 127.0.0.1). Every process is stopped at the end.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from mask_web_process import (  # noqa: E402
    BINARY,
    HOST,
    ROOT,
    MaskWebProcess,
    base_env,
    free_port,
    multipart,
    smallest_photos,
)
from services import Garage, Postgres, find_program, wait_for_port  # noqa: E402

ADMIN_PASSWORD = "cluster-admin-password-1"
NGINX_SITE = ROOT / "deploy" / "nginx-mask-web.conf"
TIMEOUT = 60


class Instance(MaskWebProcess):
    """One `mask-web` of the cluster; `restart()` starts it again on the same port."""

    def __init__(self, name, workdir, storage_env):
        self.name = name
        self.workdir = Path(workdir)
        self.storage_env = storage_env
        self._start(free_port())

    def _start(self, port):
        data = self.workdir / self.name
        data.mkdir(parents=True, exist_ok=True)
        env = base_env(data, port, ADMIN_PASSWORD)
        env.update(self.storage_env)
        super().__init__(data, self.workdir / f"{self.name}.log", env, self.workdir, port)

    def wait_ready(self, timeout=120):
        def ready():
            return get_status(self.url + "/healthz") == 200

        self.wait_until(ready, timeout, 0.2)

    def restart(self):
        self.log.close()
        self._start(self.port)
        self.wait_ready()


class Nginx:
    def __init__(self, workdir, upstreams):
        self.binary = find_program("nginx", ["/usr/sbin/nginx"])
        self.dir = Path(workdir) / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        site = NGINX_SITE.read_text()
        # The repository's file, with this test's addresses.
        lines = [f"    server {HOST}:{p} max_fails=1 fail_timeout=5s;" for p in upstreams]
        site, n = re.subn(r"(?m)^    server 127\.0\.0\.1:500\d .*\n", "", site)
        assert n == 2, "deploy/nginx-mask-web.conf: expected two upstream server lines"
        site = site.replace("    keepalive 32;", "\n".join(lines) + "\n    keepalive 32;")
        site = site.replace("listen 127.0.0.1:8080;", f"listen {HOST}:{self.port};")
        (self.dir / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(f"""{user}daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$upstream_addr $status';
    access_log {self.dir}/access.log upstream;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    include {self.dir}/site.conf;
}}
""")
        self.proc = None

    def start(self):
        conf = str(self.dir / "nginx.conf")
        check = subprocess.run([self.binary, "-t", "-c", conf, "-p", str(self.dir)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([self.binary, "-c", conf, "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 30, "nginx", lambda: self.proc.poll() is None)
        return self

    def upstreams_used(self):
        """The instance each logged request went to, in order (after a failover: both)."""
        log = self.dir / "access.log"
        if not log.is_file():
            return []
        return [part for line in log.read_text().splitlines()
                for part in line.split(" ")[0].split(",")]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.pg = Postgres().start()
        self.s3 = Garage().start()
        database = "mask_cluster"
        self.pg.create_database(database)
        s3 = self.s3.env("")
        self.storage_env = {
            "MASK_WEB_DATABASE_URL": self.pg.url(database),
            "MASK_WEB_DATABASE_POOL_SIZE": "8",
            "MASK_WEB_S3_ENDPOINT": s3["ENDPOINT"],
            "MASK_WEB_S3_REGION": s3["REGION"],
            "MASK_WEB_S3_BUCKET": s3["BUCKET"],
            "MASK_WEB_S3_ACCESS_KEY_ID": s3["ACCESS_KEY"],
            "MASK_WEB_S3_SECRET_ACCESS_KEY": s3["SECRET_KEY"],
            "MASK_WEB_TRUSTED_PROXIES": "127.0.0.1/32",
            # The load tool's clients all connect from 127.0.0.1: lift the per-address share of
            # the detection pool so the load measures the pool (security_tests cover the share).
            "MASK_WEB_DETECT_PER_CLIENT": "1000",
            "MASK_WEB_PUBLIC_URL": "http://mask.test",
        }
        # Started together, as a deployment would: migrations and the administrator race.
        self.instances = [Instance(n, self.workdir, self.storage_env) for n in ("a", "b")]
        for i in self.instances:
            i.wait_ready()
        self.nginx = Nginx(self.workdir, [i.port for i in self.instances]).start()

    def stop(self):
        for part in (self.nginx, *self.instances):
            try:
                part.stop()
            except Exception:  # noqa: BLE001 (stop everything, whatever fails)
                pass
        self.s3.stop()
        self.pg.stop()


@pytest.fixture(scope="session")
def cluster():
    if not BINARY.is_file():
        pytest.fail(f"mask-web missing at {BINARY}: run `make build` first")
    workdir = Path(tempfile.mkdtemp(prefix="mask-cluster-"))
    c = Cluster(workdir)
    try:
        yield c
    finally:
        c.stop()
        if os.environ.get("MASK_KEEP_CLUSTER_LOGS"):
            print(f"cluster logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class Http:
    """A tiny HTTP client with a cookie jar that connects from a chosen loopback address."""

    def __init__(self, base, source="127.0.0.1"):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.source = u.hostname, u.port, source
        self.cookies = {}

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT,
                                          source_address=(self.source, 0))
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            for k, v in r.getheaders():
                if k.lower() == "set-cookie":
                    name, _, rest = v.partition("=")
                    value = rest.split(";", 1)[0]
                    if value and "max-age=0" not in v.lower():
                        self.cookies[name] = value
                    else:
                        self.cookies.pop(name, None)
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        finally:
            conn.close()

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post_form(self, path, fields, headers=None):
        body = urllib.parse.urlencode(fields).encode()
        h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self.request("POST", path, body, h)

    def login(self, username, password, headers=None):
        status, _, page = self.get("/login", headers)
        assert status == 200, status
        csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
        return self.post_form("/login", {"username": username, "password": password,
                                         "csrf_token": csrf}, headers)


def get_status(url):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.request("GET", u.path or "/")
        return conn.getresponse().status
    finally:
        conn.close()


def api_register(base, username, password, source="127.0.0.1"):
    status, _, body = Http(base, source).post_form(
        "/api/register", {"username": username, "password": password})
    return status, json.loads(body or b"null")


def api_upload(base, username, password, photo, source="127.0.0.1"):
    body, ctype = multipart({"username": username, "password": password},
                            [("file", photo.name, photo.read_bytes(), "image/png")])
    status, _, raw = Http(base, source).request("POST", "/api/upload", body,
                                                 {"Content-Type": ctype})
    return status, json.loads(raw or b"null")


__all__ = ["Http", "api_register", "api_upload", "get_status", "multipart", "smallest_photos"]

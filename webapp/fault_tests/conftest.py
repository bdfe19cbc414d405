"""Shared helpers for the fault tests: start/stop `mask-web`, register, upload.

Everything talks only to 127.0.0.1, every request has a timeout, and every server a test
starts is stopped by the test (fixtures kill by the process id they started)."""

import json
import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from mask_web_process import (  # noqa: E402,F401 (BINARY, require_binary: for the tests)
    BINARY,
    MODELS,
    PHOTOS,
    ROOT,
    MaskWebProcess,
    base_env,
    free_port,
    require_binary,
    smallest_photos,
)
from mask_web_process import multipart as multipart_body  # noqa: E402

ADMIN_PASSWORD = "fault-test-admin-pw-1"
USER = "faultuser"
PASSWORD = "fault-test-user-pw-1"
REQUEST_TIMEOUT = 60


def server_env(data_dir, port, models_dir=MODELS):
    return base_env(data_dir, port, ADMIN_PASSWORD, models_dir)


class Server(MaskWebProcess):
    """One `mask-web` process (started, not yet ready: see `wait_ready`); output goes to a log
    file in the test's temp dir; it runs in the data directory's parent."""

    def __init__(self, data_dir, log_path, port=None, models_dir=MODELS, extra_env=None):
        data_dir = Path(data_dir)
        port = port or free_port()
        env = server_env(data_dir, port, models_dir)
        env.update(extra_env or {})
        super().__init__(data_dir, log_path, env, data_dir.parent, port)

    def wait_ready(self, timeout=90):
        def ready():
            with urllib.request.urlopen(self.url + "/api/openapi.json", timeout=5) as r:
                return r.status == 200

        self.wait_until(ready, timeout, 0.2)


def request(url, data=None, headers=None, timeout=REQUEST_TIMEOUT):
    """(status, parsed JSON or None, raw body). HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return status, parsed, body


def register(server, username=USER, password=PASSWORD):
    data = urllib.parse.urlencode({"username": username, "password": password}).encode()
    status, body, raw = request(
        server.url + "/api/register", data, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 201, f"register: {status} {raw[:300]!r}"
    assert body and body.get("success") is True, body


def multipart(fields, file_name, file_bytes, content_type="image/png"):
    return multipart_body(fields, [("file", file_name, file_bytes, content_type)])


def upload(server, image_path, username=USER, password=PASSWORD, timeout=REQUEST_TIMEOUT):
    image_path = Path(image_path)
    body, ctype = multipart({"username": username, "password": password}, image_path.name, image_path.read_bytes())
    return request(server.url + "/api/upload", body, {"Content-Type": ctype}, timeout=timeout)


def small_images(n):
    """The n smallest real photos (fast to detect), deterministic."""
    return smallest_photos(n)


def integrity(db_path):
    db_path = Path(db_path)
    assert db_path.is_file(), f"database {db_path} missing"
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def history_ids(db_path):
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0]: row for row in con.execute(
            "SELECT id, original_type, original_bytes, annotated_type, annotated_bytes, thumb_type, thumb_bytes FROM entries"
        )}
    finally:
        con.close()

"""Shared helpers for the fault tests: start/stop `mask-web`, register, upload.

Everything talks only to 127.0.0.1, every request has a timeout, and every server a test
starts is stopped by the test (fixtures kill by the process id they started)."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("MASK_WEB_BIN", ROOT / "target" / "debug" / "mask-web"))
MODELS = ROOT / "models"
IMAGES = ROOT.parent / "shared" / "eval" / "kaggle853" / "images"
ADMIN_PASSWORD = "fault-test-admin-pw-1"
USER = "faultuser"
PASSWORD = "fault-test-user-pw-1"
REQUEST_TIMEOUT = 60


def require_binary():
    if not BINARY.is_file() or not os.access(BINARY, os.X_OK):
        pytest.fail(f"mask-web binary missing at {BINARY}: run `cargo build -p webapp` first")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir, port, models_dir=MODELS):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASK_WEB_")}
    env.update(
        MASK_WEB_ADDR=f"127.0.0.1:{port}",
        MASK_WEB_DATA_DIR=str(data_dir),
        MASK_WEB_MODELS_DIR=str(models_dir),
        MASK_WEB_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MASK_WEB_DETECT_WORKERS="2",
        RUST_LOG="warn",
    )
    return env


class Server:
    """One `mask-web` process; output goes to a log file in the test's temp dir."""

    def __init__(self, data_dir, log_path, port=None, models_dir=MODELS, extra_env=None):
        require_binary()
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        env = server_env(self.data_dir, self.port, models_dir)
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [str(BINARY)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir.parent),
        )

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mask-web exited with {self.proc.returncode} during startup:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/api/openapi.json", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"mask-web not ready within {timeout}s:\n{self.output()}")

    def kill9(self):
        """SIGKILL, by the process id this object started."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()


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
    boundary = "----faulttest" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + file_bytes
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(server, image_path, username=USER, password=PASSWORD, timeout=REQUEST_TIMEOUT):
    image_path = Path(image_path)
    body, ctype = multipart({"username": username, "password": password}, image_path.name, image_path.read_bytes())
    return request(server.url + "/api/upload", body, {"Content-Type": ctype}, timeout=timeout)


def small_images(n):
    """The n smallest real photos (fast to detect), deterministic."""
    if not IMAGES.is_dir():
        pytest.fail(f"photo directory {IMAGES} missing")
    files = sorted(IMAGES.glob("*.png"), key=lambda p: (p.stat().st_size, p.name))
    assert len(files) >= n, f"only {len(files)} photos in {IMAGES}"
    return files[:n]


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

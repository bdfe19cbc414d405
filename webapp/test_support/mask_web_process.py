"""What the Python test suites (`fault_tests`, `security_tests`, `browser_tests`) share: one
`mask-web` process, the test photos, multipart bodies.

The server listens on 127.0.0.1 only, writes its output to a log file, and is stopped by the
process id it started: SIGINT first, SIGKILL after 15 s. Each suite subclasses `MaskWebProcess`
(or uses it as is) with its own environment, readiness probe and helpers.
"""

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The build's mask-web: MASK_WEB_BIN, else where cargo puts it (CARGO_TARGET_DIR, as the Makefile).
BINARY = Path(
    os.environ.get("MASK_WEB_BIN")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug" / "mask-web"
)
MODELS = ROOT / "models"
HOST = "127.0.0.1"
# The photos inside the repository (CC0; see fixtures/README.md).
PHOTOS = ROOT / "fixtures" / "photos"


def require_binary():
    if not BINARY.is_file() or not os.access(BINARY, os.X_OK):
        pytest.fail(f"mask-web binary missing at {BINARY}: run `make build` first")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def smallest_photos(n):
    """The n smallest test photos (fastest to detect), deterministic."""
    if not PHOTOS.is_dir():
        pytest.fail(f"photo directory {PHOTOS} missing")
    files = sorted(PHOTOS.glob("*.png"), key=lambda p: (p.stat().st_size, p.name))
    if len(files) < n:
        pytest.fail(f"only {len(files)} photos in {PHOTOS}")
    return files[:n]


def multipart(fields, files=()):
    """A multipart/form-data body and its content type. `fields` maps names to str (or is a
    list of pairs); `files` is (name, file name, bytes, content type) with the file name as str
    or raw bytes."""
    boundary = "----masktest" + uuid.uuid4().hex
    items = fields.items() if isinstance(fields, dict) else fields
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in items
    ]
    for name, file_name, data, ctype in files:
        raw_name = file_name if isinstance(file_name, bytes) else file_name.encode()
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="'.encode()
            + raw_name
            + f'"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def base_env(data_dir, port, admin_password, models_dir=MODELS):
    """The caller's environment without any MASK_WEB_* setting, plus the ones every suite needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASK_WEB_")}
    env.update(
        MASK_WEB_ADDR=f"{HOST}:{port}",
        MASK_WEB_DATA_DIR=str(data_dir),
        MASK_WEB_MODELS_DIR=str(models_dir),
        MASK_WEB_ADMIN_PASSWORD=admin_password,
        MASK_WEB_DETECT_WORKERS="2",
        RUST_LOG="warn",
    )
    return env


class MaskWebProcess:
    """A started `mask-web`: `url`, `port`, `data_dir`, `proc`, `log_path`."""

    def __init__(self, data_dir, log_path, env, cwd, port):
        require_binary()
        self.data_dir = Path(data_dir)
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BINARY)], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(cwd)
        )

    def output(self):
        """Everything the server has written so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready, timeout, interval):
        """Poll `ready()` (True once the server answers) until it holds; fail the test if the
        process exits first or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mask-web exited with {self.proc.returncode} during startup:\n{self.output()}")
            try:
                if ready():
                    return
            except OSError:  # not listening yet (urllib's URLError is an OSError too)
                pass
            time.sleep(interval)
        self.stop()
        pytest.fail(f"mask-web not ready within {timeout}s:\n{self.output()}")

    def kill9(self):
        """SIGKILL, by the process id this object started."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        """SIGINT and wait for a graceful exit; SIGKILL after 15 s. Closes the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()

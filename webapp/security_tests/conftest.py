"""Shared helpers for the security suite: start/stop `mask-web`, an HTTP client with a cookie
jar, multipart bodies, the mail outbox, and loopback listeners that count connections.

Everything talks only to 127.0.0.1, every request has a timeout, and every server a test
starts is stopped by the fixture that started it (by its own process id). A server whose log
shows a panic fails the tests that used it."""

import email
import email.policy
import http.client
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from mask_web_process import (  # noqa: E402,F401 (PHOTOS, smallest_photos, multipart: for the tests)
    HOST,
    PHOTOS,
    ROOT,
    MaskWebProcess,
    base_env,
    free_port,
    multipart,
    smallest_photos,
)


ADMIN = "admin"
ADMIN_PASSWORD = "security-suite-admin-pw-1"
# A known token key, so tests can forge tokens signed with the real key (expired, wrong claims).
SECRET = "security-suite-token-secret-0123456789abcdef"
TIMEOUT = 30
# No test may run longer than this (the slowest, the stalled-connection test, needs ~35 s).
TEST_TIME_LIMIT = 120

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


class Server(MaskWebProcess):
    """One `mask-web` process on 127.0.0.1 with its own data dir under `base_dir`, started and
    ready; extra keyword arguments are environment settings."""

    def __init__(self, base_dir, **env):
        base_dir = Path(base_dir)
        port = free_port()
        environment = base_env(base_dir / "data", port, ADMIN_PASSWORD)
        environment.update(MASK_WEB_SECRET=SECRET)
        environment.update(env)
        super().__init__(base_dir / "data", base_dir / "server.log", environment, base_dir, port)
        self.wait_ready()

    def wait_ready(self, timeout=60):
        self.wait_until(lambda: Client(self).get("/healthz", timeout=5).status == 200, timeout, 0.1)

    def assert_healthy(self):
        assert self.proc.poll() is None, f"mask-web died ({self.proc.returncode}):\n{self.output()[-3000:]}"
        r = Client(self).get("/healthz", timeout=10)
        assert r.status == 200, f"/healthz answered {r.status}: {r.text[:300]}"

    def vm_hwm_kib(self):
        """Peak resident memory of the server process so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        pytest.fail("no VmHWM in /proc/PID/status")

    def outbox(self):
        """Every message in the outbox, oldest first, as email.message.EmailMessage."""
        box = self.data_dir / "outbox"
        if not box.is_dir():
            return []
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(box.glob("*.eml"))
        ]

    def wait_for_mail(self, to, count, timeout=10):
        """The `count`-th message to `to` (1-based), waiting for the mailer to write it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.outbox() if to.lower() in str(m["To"]).lower()]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.05)
        pytest.fail(f"message #{count} to {to} not in the outbox; have {[str(m['To']) for m in self.outbox()]}")

    def stop(self):
        super().stop()
        panics = [line for line in self.output().splitlines() if "panicked" in line]
        assert not panics, "mask-web panicked:\n" + "\n".join(panics)


def settled_outbox(server, admin):
    """The outbox once every message queued before this call has been written: the
    administrator sends a test message to a fresh address and it is waited for (the mailer
    writes messages in the background). The sentinel itself is left out."""
    sentinel = f"sentinel-{uuid.uuid4().hex[:12]}@example.com"
    r = admin.post_form("/admin/mail/test", {"csrf_token": admin.csrf("/admin/mail"), "to": sentinel})
    assert r.status == 303, f"test email: {r.status} {r.text[:300]}"
    server.wait_for_mail(sentinel, 1)
    return [m for m in server.outbox() if "sentinel-" not in str(m["To"])]


def mail_text(message):
    return message.get_body(preferencelist=("plain",)).get_content()


def reset_link(message):
    """The /password/reset link of a reset or invitation message, as a path with its query."""
    m = re.search(r"https?://[^/\s]+(/password/reset\?token=[A-Za-z0-9_.\-]+)", mail_text(message))
    assert m, f"no reset link in:\n{mail_text(message)}"
    return m.group(1)


@pytest.fixture(autouse=True)
def time_limit(request):
    """Fail a test that runs longer than TEST_TIME_LIMIT, whatever it is blocked in."""

    def expired(signum, frame):
        pytest.fail(f"{request.node.nodeid} ran longer than {TEST_TIME_LIMIT}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server per test module (modules count login failures on their own server)."""
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of the test's own: for tests that use up the login throttle."""
    s = Server(tmp_path)
    yield s
    s.stop()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self):
        return self.headers.get("Location")

    def set_cookies(self):
        return self.headers.get_all("Set-Cookie") or []

    def csrf(self):
        m = CSRF_RE.search(self.text)
        assert m, f"no csrf_token in the page ({self.status}): {self.text[:500]}"
        return m.group(1)


class Client:
    """A browser-like client: one cookie jar, no redirects followed, a timeout on everything."""

    def __init__(self, server):
        self.server = server
        self.cookies = {}

    def request(self, method, path, body=None, headers=None, timeout=TIMEOUT):
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if self.cookies and "Cookie" not in h:
                h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            response = Response(r.status, r.headers, r.read())
        finally:
            conn.close()
        for c in response.set_cookies():
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in c.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_form(self, path, fields, **kw):
        body = urlencode(fields)
        return self.request(
            "POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}, **kw
        )

    def post_multipart(self, path, fields, files=(), **kw):
        body, ctype = multipart(fields, files)
        return self.request("POST", path, body=body, headers={"Content-Type": ctype}, **kw)

    def csrf(self, page=None):
        """The CSRF token the forms of `page` carry (the session's once logged in)."""
        page = page or ("/upload" if "mask_session" in self.cookies else "/login")
        r = self.get(page)
        assert r.status == 200, f"GET {page}: {r.status}"
        return r.csrf()

    def login(self, username, password):
        token = self.csrf("/login")
        return self.post_form("/login", {"csrf_token": token, "username": username, "password": password})

    def upload(self, file_name, data, content_type="image/png"):
        token = self.csrf("/upload")
        return self.post_multipart(
            "/upload", {"csrf_token": token}, [("file", file_name, data, content_type)], timeout=60
        )


def urlencode(fields):
    return urllib.parse.urlencode(fields if isinstance(fields, list) else list(fields.items())).encode()


def register(server, username, password, email=None):
    """A user through the open `POST /api/register` (the default setting)."""
    fields = {"username": username, "password": password}
    if email:
        fields["email"] = email
    r = Client(server).post_form("/api/register", fields)
    assert r.status == 201, f"register {username}: {r.status} {r.text[:300]}"


def logged_in(server, username, password):
    c = Client(server)
    r = c.login(username, password)
    assert r.status == 303, f"login {username}: {r.status} {r.text[:300]}"
    assert "mask_session" in c.cookies
    return c


def admin_client(server):
    return logged_in(server, ADMIN, ADMIN_PASSWORD)


def is_logged_in(client):
    """True when `/` greets the client instead of redirecting to the login page."""
    return client.get("/").status == 200


def history_count(client):
    """How many entries the client's history shows under All."""
    m = re.search(r'id="tab-all">All \((\d+)\)', client.get("/history").text)
    assert m, "no All tab on the history page"
    return int(m.group(1))


def raw_exchange(port, data, timeout=TIMEOUT):
    """Send raw bytes, read until the server closes (or `timeout`). Returns (status or None,
    response bytes, seconds). A server that answers early and closes while we still send
    (413 on a huge body) is fine: the answer is read after the failed send."""
    start = time.monotonic()
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
    return (int(m.group(1)) if m else None), out, time.monotonic() - start


@pytest.fixture(scope="session")
def photo():
    """The bytes of the smallest photo."""
    return smallest_photos(1)[0].read_bytes()


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections. With `reply`, it answers each
    connection with those bytes (e.g. a redirect); otherwise it closes at once."""

    def __init__(self, reply=None):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.hits += 1
            with conn:
                if self.reply:
                    conn.settimeout(2)
                    try:
                        conn.recv(65536)
                        conn.sendall(self.reply)
                    except OSError:
                        pass

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

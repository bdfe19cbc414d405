"""SMTP server down while the web app sends an invitation and a password reset: both web requests
still succeed, the delivery log shows the failed attempt and the coming retry, and when the SMTP
server comes up within the retry window (the mailer's default: a second attempt 15 s after the
first) both messages arrive, with their links, and the log says "sent (attempts: 2)".

The SMTP server is tools/smtp_server.py (aiosmtpd) on 127.0.0.1, on a port that nothing listens on
until the test starts it."""

import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from conftest import ADMIN_PASSWORD, REQUEST_TIMEOUT, ROOT, Server, free_port

INVITEE = "invitee@example.com"
ADMIN_EMAIL = "admin@localhost.localdomain"  # the default administrator address
RETRY_WINDOW = 15  # seconds to the mailer's second attempt (RetryPolicy::default)


class Browser:
    """Cookies, CSRF tokens from forms, urlencoded posts; redirects are followed."""

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path):
        with self.opener.open(self.base + path, timeout=REQUEST_TIMEOUT) as r:
            return r.status, r.read().decode()

    def post(self, path, fields):
        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST")
        with self.opener.open(req, timeout=REQUEST_TIMEOUT) as r:
            return r.status, r.read().decode()

    def csrf(self, path):
        _, html = self.get(path)
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert m, f"no csrf_token on {path}"
        return m.group(1)


def mail_log(browser):
    _, html = browser.get("/admin/mail")
    return html


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_smtp_down_then_back_within_the_retry_window_loses_nothing(tmp_path):
    smtp_port = free_port()
    server = Server(
        tmp_path / "data",
        tmp_path / "server.log",
        extra_env={
            "MASK_WEB_SMTP_HOST": "127.0.0.1",
            "MASK_WEB_SMTP_PORT": str(smtp_port),
            "MASK_WEB_SMTP_SECURITY": "none",
        },
    )
    smtp = None
    try:
        server.wait_ready()
        admin = Browser(server.url)
        status, _ = admin.post("/login", {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": admin.csrf("/login")})
        assert status == 200

        # Both requests succeed although nothing listens on the SMTP port.
        started = time.monotonic()
        status, html = admin.post(
            "/admin/users/new",
            {"username": "invitee", "email": INVITEE, "role": "user", "csrf_token": admin.csrf("/admin/users/new")},
        )
        assert status == 200 and "invitee" in html, html[:500]
        anonymous = Browser(server.url)
        status, html = anonymous.post("/password/forgot", {"email": ADMIN_EMAIL, "csrf_token": anonymous.csrf("/password/forgot")})
        assert status == 200, html[:500]

        # The log shows the failure and that a retry is coming, for both messages.
        log = wait_for(
            lambda: (h := mail_log(admin)).count("retrying after attempt 1") >= 2 and h,
            10,
            "two 'retrying after attempt 1' rows in the delivery log",
        )
        assert INVITEE in log and ADMIN_EMAIL in log
        assert time.monotonic() - started < RETRY_WINDOW, "too slow to start the SMTP server in the window"

        # The SMTP server comes back before the second attempt.
        maildir = tmp_path / "maildir"
        smtp = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "smtp_server.py"), "--port", str(smtp_port), "--maildir", str(maildir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert smtp.stdout.readline().startswith("LISTENING 127.0.0.1:"), "smtp_server.py did not start"

        messages = wait_for(
            lambda: (m := sorted(maildir.glob("*.json"))) and len(m) >= 2 and m,
            RETRY_WINDOW * 3,
            "both messages at the SMTP server",
        )
        received = {tuple(j["rcpt_tos"]): j for j in (json.loads(p.read_text()) for p in messages)}
        assert set(received) == {(INVITEE,), (ADMIN_EMAIL,)}, received.keys()
        for message in received.values():
            assert "/password/reset?token=" in message["text"], message["text"][:500]
        log = wait_for(lambda: (h := mail_log(admin)).count("sent (attempts: 2)") >= 2 and h, 10, "two 'sent (attempts: 2)' rows")
        assert "failed after" not in log
    finally:
        if smtp is not None:
            smtp.terminate()
            smtp.wait(timeout=10)
        server.stop()

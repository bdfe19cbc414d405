"""Oversized input: huge headers, many headers, a huge URL and 1 MB form fields get a 4xx (or
the connection closed) quickly, never a 500 or a hang, and the server answers normally after.

Limits in play: the request head is capped in size and header count (webapp/src/server.rs,
431), urlencoded forms at 16 KiB (413), multipart text fields at 8 KiB (400)."""

import pytest

from conftest import Client, logged_in, multipart, raw_exchange, register

USER, PASSWORD = "otto", "oversize-user-pw-1"
MIB = 1024 * 1024
QUICK = 10  # seconds: a refusal must not wait for anything


def request_bytes(method, path, headers=(), body=b""):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def assert_refused_quickly(server, status, elapsed, what, allowed):
    assert elapsed < QUICK, f"{what}: took {elapsed:.1f}s"
    assert status is None or status in allowed, f"{what}: answered {status}"
    server.assert_healthy()


@pytest.mark.parametrize("header", ["X-Padding", "Cookie", "User-Agent"])
def test_100kb_header_is_refused(server, header):
    data = request_bytes("GET", "/healthz", [(header, "a" * 100_000)])
    status, _, elapsed = raw_exchange(server.port, data, timeout=QUICK + 5)
    assert_refused_quickly(server, status, elapsed, f"100 KB {header}", allowed=(400, 413, 431))


def test_1mb_header_is_refused(server):
    data = request_bytes("GET", "/healthz", [("X-Padding", "a" * MIB)])
    status, _, elapsed = raw_exchange(server.port, data, timeout=QUICK + 5)
    assert_refused_quickly(server, status, elapsed, "1 MB header", allowed=(400, 413, 431))


def test_too_many_headers_are_refused(server):
    data = request_bytes("GET", "/healthz", [(f"X-H{i}", "v") for i in range(500)])
    status, _, elapsed = raw_exchange(server.port, data, timeout=QUICK + 5)
    assert status is not None, "closed without an answer"
    assert_refused_quickly(server, status, elapsed, "500 headers", allowed=(400, 431))


def test_huge_url_is_refused(server):
    for path in ["/login?next=/" + "a" * 100_000, "/" + "a/" * 50_000, "/password/reset?token=" + "A" * 100_000]:
        status, _, elapsed = raw_exchange(server.port, request_bytes("GET", path), timeout=QUICK + 5)
        what = f"{len(path)}-byte URL {path[:20]}"
        assert_refused_quickly(server, status, elapsed, what, allowed=(400, 404, 414, 431))


BIG = "a" * MIB
# Urlencoded forms are refused from their Content-Length (413); multipart text fields while
# reading (400 "field is too long", or 413).
URLENCODED_ROUTES = ["login", "login-password", "forgot", "password-change", "api-register-form"]
MULTIPART_ROUTES = ["api-register-multipart", "api-upload-multipart", "upload-url-field"]


@pytest.fixture(scope="module")
def user(server):
    register(server, USER, PASSWORD)
    return logged_in(server, USER, PASSWORD)


def big_field_request(user, route):
    """(path, headers, body, allowed statuses) of a form to `route` with a 1 MB field."""
    anon = Client(user.server).csrf("/login")
    anon_cookie = [("Cookie", f"mask_csrf={anon}")]
    session = [("Cookie", "; ".join(f"{k}={v}" for k, v in user.cookies.items()))]
    token = user.csrf()
    if route in URLENCODED_ROUTES:
        path, cookie, fields = {
            "login": ("/login", anon_cookie, {"csrf_token": anon, "username": BIG, "password": "x"}),
            "login-password": ("/login", anon_cookie, {"csrf_token": anon, "username": USER, "password": BIG}),
            "forgot": ("/password/forgot", anon_cookie, {"csrf_token": anon, "email": BIG + "@example.com"}),
            "password-change": ("/password/change", session, {"csrf_token": token, "old_password": BIG}),
            "api-register-form": ("/api/register", [], {"username": BIG, "password": "oversize-pw-123"}),
        }[route]
        body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
        return path, [("Content-Type", "application/x-www-form-urlencoded")] + cookie, body, (413,)
    a_file = [("file", "x.png", b"x", "image/png")]
    path, cookie, fields, files = {
        "api-register-multipart": ("/api/register", [], {"username": BIG, "password": "oversize-pw-123"}, []),
        "api-upload-multipart": ("/api/upload", [], {"username": USER, "password": BIG}, a_file),
        "upload-url-field": ("/upload", session, {"csrf_token": token, "url": BIG}, []),
    }[route]
    body, ctype = multipart(fields, files)
    return path, [("Content-Type", ctype)] + cookie, body, (400, 413)


@pytest.mark.parametrize("route", URLENCODED_ROUTES + MULTIPART_ROUTES)
def test_1mb_form_field_is_refused(server, user, route):
    path, headers, body, allowed = big_field_request(user, route)
    status, out, elapsed = raw_exchange(server.port, request_bytes("POST", path, headers, body), timeout=QUICK + 5)
    assert status is not None, f"{route}: closed without an answer"
    assert_refused_quickly(server, status, elapsed, route, allowed)
    reason = out.split(b"\r\n\r\n", 1)[-1].lower()
    assert any(w in reason for w in (b"too large", b"too long")), f"{route}: unclear message {out[-300:]!r}"
    # The refused request was no login failure and changed nothing: the user still logs in.
    logged_in(server, USER, PASSWORD)

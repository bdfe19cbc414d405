"""The private-address guard of URL uploads (MASK_WEB_ALLOW_PRIVATE_URLS off, the default):
every spelling of a loopback target (literal, localhost, IPv4-mapped IPv6, decimal, hex,
octal and short forms, 0.0.0.0) is refused with 400 "URL refused" before any connection, a
redirector on loopback is refused at the first hop so its target is never reached, and non-http
schemes get 400 "not a valid http or https URL". Through the upload form and the API.

Every URL here points at 127.0.0.1 in some form, at a listener the test opened, so a broken
guard could only ever reach this machine; each listener must see 0 connections."""

import json

import pytest

from conftest import Client, Listener, Server, logged_in, multipart, register

USER, PASSWORD = "gus", "guard-user-password-1"
REFUSED = "URL refused"
INVALID = "not a valid http or https URL"

LOOPBACK_FORMS = {
    "literal": "http://127.0.0.1:{port}/x.png",
    "https-literal": "https://127.0.0.1:{port}/x.png",
    "localhost": "http://localhost:{port}/x.png",
    "localhost-upper": "HTTP://LOCALHOST:{port}/x.png",
    "ipv4-mapped-ipv6": "http://[::ffff:127.0.0.1]:{port}/x.png",
    "ipv4-mapped-ipv6-hex": "http://[::ffff:7f00:1]:{port}/x.png",
    "decimal": "http://2130706433:{port}/x.png",
    "hex": "http://0x7f000001:{port}/x.png",
    "octal": "http://0177.0.0.1:{port}/x.png",
    "short": "http://127.1:{port}/x.png",
    "unspecified": "http://0.0.0.0:{port}/x.png",
    "userinfo": "http://user:pw@127.0.0.1:{port}/x.png",
    "padded": "  http://127.0.0.1:{port}/x.png  ",
}
SCHEMES = {
    "file": "file:///etc/passwd",
    "file-host": "file://127.0.0.1/etc/passwd",
    "gopher": "gopher://127.0.0.1:{port}/_GET%20/x.png",
    "ftp": "ftp://127.0.0.1:{port}/x.png",
    "data": "data:image/png;base64,iVBORw0KGgo=",
    "javascript": "javascript:alert(1)",
    "relative": "/etc/passwd",
    "scheme-relative": "//127.0.0.1:{port}/x.png",
}
ROUTES = ["/upload", "/api/upload"]


@pytest.fixture(scope="module")
def user(server):
    register(server, USER, PASSWORD)
    return logged_in(server, USER, PASSWORD)


@pytest.fixture
def target():
    with Listener() as listener:
        yield listener
        assert listener.hits == 0, f"the guard let {listener.hits} connection(s) through"


def submit(server, user, route, url):
    """(status, message) of a URL upload through the form or the API (the form capitalises
    the message)."""
    if route == "/upload":
        r = user.post_multipart("/upload", {"csrf_token": user.csrf(), "url": url})
        return r.status, r.text
    body, ctype = multipart({"username": USER, "password": PASSWORD, "url": url})
    r = Client(server).request("POST", "/api/upload", body=body, headers={"Content-Type": ctype})
    return r.status, json.loads(r.body)["error"]["message"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("form", list(LOOPBACK_FORMS))
def test_loopback_targets_are_refused_before_connecting(server, user, target, route, form):
    url = LOOPBACK_FORMS[form].format(port=target.port)
    status, message = submit(server, user, route, url)
    assert status == 400, f"{url}: {status} {message[:300]}"
    assert REFUSED.lower() in message.lower(), f"{url}: {message[:500]}"


@pytest.mark.parametrize("route", ROUTES)
def test_redirect_from_loopback_is_refused_at_the_first_hop(server, user, target, route):
    redirect = f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/x.png\r\nContent-Length: 0\r\n\r\n"
    with Listener(reply=redirect.encode()) as redirector:
        status, message = submit(server, user, route, f"http://127.0.0.1:{redirector.port}/go")
        assert redirector.hits == 0, "the redirector was contacted"
    assert status == 400 and REFUSED.lower() in message.lower(), (status, message[:300])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_non_http_schemes_are_refused(server, user, target, route, scheme):
    url = SCHEMES[scheme].format(port=target.port)
    status, message = submit(server, user, route, url)
    assert status == 400, f"{url}: {status} {message[:300]}"
    assert INVALID.lower() in message.lower(), f"{url}: {message[:500]}"


def test_control_with_the_guard_off_the_listener_sees_the_fetch(tmp_path):
    """The control: with private URLs allowed (a test-only setting) the same kind of URL does
    reach the listener, so the zero counts above mean the guard stopped the request."""
    server = Server(tmp_path, MASK_WEB_ALLOW_PRIVATE_URLS="true")
    try:
        register(server, USER, PASSWORD)
        user = logged_in(server, USER, PASSWORD)
        with Listener() as listener:
            status, message = submit(server, user, "/upload", f"http://127.0.0.1:{listener.port}/x.png")
            assert listener.hits >= 1, listener.hits
        assert status == 400 and "unreachable" in message.lower(), (status, message[:300])
    finally:
        server.stop()

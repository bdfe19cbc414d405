"""Stored and reflected XSS: markup in upload file names, email addresses, user names, test-mail
addresses and query strings comes back only in escaped form on every page that shows it
(result, history, admin users list, new-user form, mail log, login, error pages), never as raw
markup. HTML pages carry a Content-Security-Policy without inline script and
X-Content-Type-Options: nosniff."""

import html
import json
import re
import urllib.parse

import pytest

from conftest import Client, admin_client, logged_in, multipart, register

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
QUOTE = "o'neil"
PAYLOADS = {"script": SCRIPT, "img": IMG, "quote": QUOTE}
USER, PASSWORD = "xena", "xss-user-password-1"


def assert_escaped(text, payload, where):
    """The payload is shown, but only escaped: raw markup would be live in the page."""
    assert payload not in text, f"{where}: raw {payload!r} in the page"
    assert payload in html.unescape(text), f"{where}: {payload!r} not shown at all"


def assert_absent(text, payload, where):
    assert payload not in text, f"{where}: raw {payload!r} in the page"


def quoted_filename(name):
    """A file name as a browser puts it in a multipart header (quotes backslash-escaped)."""
    return name.replace("\\", "\\\\").replace('"', '\\"')


@pytest.fixture(scope="module")
def user(server):
    register(server, USER, PASSWORD)
    return logged_in(server, USER, PASSWORD)


@pytest.fixture(scope="module")
def uploads(server, user, photo):
    """Entry id by payload name: three through the upload form, one through the API."""
    ids = {}
    for key, payload in PAYLOADS.items():
        r = user.upload(quoted_filename(f"{payload}.png"), photo)
        assert r.status == 303, r.text[:300]
        ids[key] = r.location.rsplit("/", 1)[1]
    fields = {"username": USER, "password": PASSWORD}
    body, ctype = multipart(fields, [("file", f"api{SCRIPT}.png", photo, "image/png")])
    r = Client(server).request("POST", "/api/upload", body=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status == 201, r.text[:300]
    ids["api"] = json.loads(r.body)["payload"]["id"]
    return ids


@pytest.mark.parametrize("key", list(PAYLOADS))
def test_file_name_is_escaped_on_result_and_history(user, uploads, key):
    payload = PAYLOADS[key]
    assert_escaped(user.get(f"/results/{uploads[key]}").text, payload, "result page")
    assert_escaped(user.get("/history").text, payload, "history")


def test_file_name_from_the_api_is_escaped(user, uploads):
    assert_escaped(user.get(f"/results/{uploads['api']}").text, f"api{SCRIPT}", "result page")
    assert_escaped(user.get("/history").text, f"api{SCRIPT}", "history")


@pytest.mark.parametrize("key", ["script", "img"])
def test_markup_user_names_are_refused_and_echoed_escaped(server, key):
    admin = admin_client(server)
    payload = PAYLOADS[key]
    fields = {"csrf_token": admin.csrf(), "username": payload, "email": f"n{key}@example.com"}
    r = admin.post_form("/admin/users/new", fields)
    assert r.status == 400, r.text[:300]
    assert_escaped(r.text, payload, "new-user form")
    r = Client(server).post_form("/api/register", {"username": payload, "password": "xss-register-pw-1"})
    assert r.status == 400, r.status
    assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert_absent(admin.get("/admin/users").text, payload, "users list")


@pytest.mark.parametrize("key", ["script", "img"])
def test_markup_email_addresses_are_refused_and_echoed_escaped(server, key):
    admin = admin_client(server)
    address = f"{PAYLOADS[key]}@example.com"
    r = admin.post_form("/admin/users/new", {"csrf_token": admin.csrf(), "username": f"mail{key}", "email": address})
    assert r.status == 400, r.text[:300]
    assert_escaped(r.text, address, "new-user form")
    r = admin.post_form("/admin/mail/test", {"csrf_token": admin.csrf(), "to": address})
    assert r.status == 400, r.text[:300]
    assert_escaped(r.text, address, "test-mail error page")
    for page in ["/admin/users", "/admin/mail"]:
        assert_absent(admin.get(page).text, PAYLOADS[key], page)


def test_quote_in_an_email_address_is_escaped_in_users_list_and_mail_log(server):
    admin = admin_client(server)
    invitee = f"{QUOTE}@example.com"
    r = admin.post_form("/admin/users/new", {"csrf_token": admin.csrf(), "username": "oneil", "email": invitee})
    assert r.status == 303, r.text[:300]
    tested = f"x{QUOTE}@example.com"
    assert admin.post_form("/admin/mail/test", {"csrf_token": admin.csrf(), "to": tested}).status == 303
    server.wait_for_mail(invitee, 1)
    server.wait_for_mail(tested, 1)
    assert_escaped(admin.get("/admin/users").text, invitee, "users list")
    log = admin.get("/admin/mail").text
    assert_escaped(log, invitee, "mail log")
    assert_escaped(log, tested, "mail log")


@pytest.mark.parametrize("key", list(PAYLOADS))
def test_reflected_query_and_form_values_are_escaped(server, user, key):
    payload = PAYLOADS[key]
    q = urllib.parse.quote(payload)
    c = Client(server)
    # `next` is only followed when local, normalised as a URL path: markup in it comes back in
    # the form percent-encoded (and escaped), never raw, and still names the same path.
    page = c.get(f"/login?next=/{q}").text
    assert_absent(page, payload, "login form next")
    echoed = re.search(r'name="next" value="([^"]*)"', page)
    assert echoed, "login form has no next field"
    assert urllib.parse.unquote(html.unescape(echoed.group(1))) == "/" + payload
    r = c.post_form("/login", {"csrf_token": c.csrf(), "username": f"u{payload}", "password": "wrong-password"})
    assert r.status == 401
    assert_escaped(r.text, f"u{payload}", "login error page")
    r = user.get(f"/history?tab={q}")
    assert r.status == 400
    assert_escaped(r.text, payload, "history error page")
    assert_absent(c.get(f"/password/reset?token={q}").text, payload, "reset page")
    assert_absent(c.get(f"/{q}").text, payload, "404 page")


HTML_PAGES_ANON = ["/login", "/password/forgot", "/password/reset?token=x", "/no-such-page"]
HTML_PAGES_USER = ["/", "/upload", "/history", "/password/change", "/results/" + "0" * 32]
HTML_PAGES_ADMIN = ["/admin/users", "/admin/users/new", "/admin/mail"]


def assert_security_headers(r, page):
    csp = r.headers.get("Content-Security-Policy")
    assert csp, f"{page}: no Content-Security-Policy"
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";")}
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, f"{page}: {csp}"
    assert "script-src" in directives or "default-src" in directives, f"{page}: {csp}"
    assert directives.get("object-src") == "object-src 'none'", f"{page}: {csp}"
    assert r.headers.get("X-Content-Type-Options") == "nosniff", f"{page}: no nosniff"
    assert r.headers.get("Content-Type", "").startswith("text/html"), f"{page}: {r.headers.get('Content-Type')}"


@pytest.mark.parametrize("page", HTML_PAGES_ANON + HTML_PAGES_USER + HTML_PAGES_ADMIN)
def test_html_pages_carry_csp_and_nosniff(server, user, page):
    if page in HTML_PAGES_ANON:
        c = Client(server)
    elif page in HTML_PAGES_USER:
        c = user
    else:
        c = admin_client(server)
    assert_security_headers(c.get(page), page)


def test_images_carry_nosniff_and_an_image_type(user, uploads):
    r = user.get(f"/images/{uploads['script']}/original")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("image/")
    assert r.headers["X-Content-Type-Options"] == "nosniff"

"""Sessions: no fixation (every login issues a new session id; an id planted before login, or
the one in use before a second login, is not valid after), logout ends the session on the
server (replaying the cookie is not logged in), a password change ends the user's other
sessions, and the cookie carries HttpOnly and SameSite."""

import re

import pytest

from conftest import Client, is_logged_in, logged_in, register

USER, PASSWORD = "sid", "session-user-pw-1"


@pytest.fixture(scope="module", autouse=True)
def user(server):
    register(server, USER, PASSWORD)


def replay(server, session_id):
    """A new client that only has this session cookie."""
    c = Client(server)
    c.cookies["mask_session"] = session_id
    return c


def test_planted_session_id_is_replaced_at_login(server):
    planted = "ab" * 32  # well-formed, chosen by an attacker before the victim logs in
    c = Client(server)
    c.cookies["mask_session"] = planted
    r = c.login(USER, PASSWORD)
    assert r.status == 303, r.text[:300]
    issued = c.cookies["mask_session"]
    assert issued != planted
    assert re.fullmatch(r"[0-9a-f]{64}", issued), issued
    assert not is_logged_in(replay(server, planted)), "the planted id is logged in"
    assert is_logged_in(replay(server, issued))


def test_second_login_replaces_and_ends_the_previous_session(server):
    c = logged_in(server, USER, PASSWORD)
    first = c.cookies["mask_session"]
    # Logged in, the login form takes the session's token.
    r = c.post_form("/login", {"csrf_token": c.csrf(), "username": USER, "password": PASSWORD})
    assert r.status == 303, r.text[:300]
    second = c.cookies["mask_session"]
    assert second != first
    assert not is_logged_in(replay(server, first)), "the pre-login session is still valid"
    assert is_logged_in(replay(server, second))


def test_logout_ends_the_session_on_the_server(server):
    c = logged_in(server, USER, PASSWORD)
    sid = c.cookies["mask_session"]
    token = c.csrf()
    r = c.post_form("/logout", {"csrf_token": token})
    assert r.status == 303 and r.location.startswith("/login")
    assert any(s.startswith("mask_session=;") and "Max-Age=0" in s for s in r.set_cookies()), r.set_cookies()
    stale = replay(server, sid)
    assert not is_logged_in(stale), "the cookie still works after logout"
    # Nor does it work for a form with the old session's token.
    new = "x-new-pw-123"
    fields = {"csrf_token": token, "old_password": PASSWORD, "new_password": new, "confirm_password": new}
    r = stale.post_form("/password/change", fields)
    assert r.status == 303 and r.location.startswith("/login"), (r.status, r.location)
    logged_in(server, USER, PASSWORD)


def test_password_change_ends_the_other_sessions(server):
    other = logged_in(server, USER, PASSWORD)
    c = logged_in(server, USER, PASSWORD)
    new = "session-user-pw-2"
    r = c.post_form(
        "/password/change",
        {"csrf_token": c.csrf(), "old_password": PASSWORD, "new_password": new, "confirm_password": new},
    )
    assert r.status == 200, r.text[:300]
    assert is_logged_in(c), "the session that changed the password ended"
    assert not is_logged_in(other), "another session survived the password change"
    r = c.post_form(
        "/password/change",
        {"csrf_token": c.csrf(), "old_password": new, "new_password": PASSWORD, "confirm_password": PASSWORD},
    )
    assert r.status == 200, r.text[:300]


def test_session_cookie_is_httponly_samesite_and_not_in_the_page(server):
    c = Client(server)
    r = c.login(USER, PASSWORD)
    cookie = next(s for s in r.set_cookies() if s.startswith("mask_session="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes, cookie
    assert "samesite=lax" in cookie.lower() or "samesite=strict" in cookie.lower(), cookie
    sid = c.cookies["mask_session"]
    for page in ["/", "/upload", "/history", "/password/change"]:
        assert sid not in c.get(page).text, f"{page} shows the session id"

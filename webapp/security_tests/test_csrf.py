"""CSRF: every POST form route refuses a request without the right token with 403, and the
refused request has no effect.

Forms shown before login (login, forgot, reset) use a double-submit cookie (`mask_csrf`); forms
of a logged-in user use the session's own token. Each route is tried with the token missing, a
random token, a real token issued to someone else, and per kind one more: for anonymous forms a
token sent without its cookie, for logged-in forms the anonymous cookie's token (valid before
login, not after)."""

import re
import secrets

import pytest

from conftest import (
    Client,
    admin_client,
    history_count,
    is_logged_in,
    logged_in,
    register,
    reset_link,
    settled_outbox,
)

VICTIM, VICTIM_PASSWORD, VICTIM_EMAIL = "vic", "victim-password-1", "vic@example.com"
RESETEE, RESETEE_PASSWORD, RESETEE_EMAIL = "rhea", "resetee-password-1", "rhea@example.com"
MALLORY, MALLORY_PASSWORD = "mal", "mallory-password-1"
TARGET, TARGET_EMAIL = "target", "target@example.com"

ANON_ROUTES = ["login", "forgot", "reset"]
SESSION_ROUTES = [
    "logout",
    "password-change",
    "admin-user-new",
    "admin-user-delete",
    "admin-resend-invite",
    "admin-mail-test",
    "upload",
    "history-delete",
]
ANON_VARIANTS = ["missing", "random", "foreign", "cookieless"]
SESSION_VARIANTS = ["missing", "random", "foreign", "anonymous-token"]


class World:
    """The users, tokens and entries the routes act on, made once for the module."""

    def __init__(self, server):
        self.server = server
        register(server, VICTIM, VICTIM_PASSWORD, VICTIM_EMAIL)
        register(server, RESETEE, RESETEE_PASSWORD, RESETEE_EMAIL)
        register(server, MALLORY, MALLORY_PASSWORD)
        self.admin = admin_client(server)
        # Tokens really issued to someone else: another visitor's cookie, another session's.
        self.foreign_anon = Client(server).csrf("/login")
        self.foreign_session = logged_in(server, MALLORY, MALLORY_PASSWORD).csrf("/upload")
        # A user for the admin actions, invited once.
        r = self.admin.post_form(
            "/admin/users/new",
            {"csrf_token": self.admin.csrf("/admin/users/new"), "username": TARGET, "email": TARGET_EMAIL},
        )
        assert r.status == 303, r.text[:300]
        server.wait_for_mail(TARGET_EMAIL, 1)
        self.target_id = self.user_id(TARGET)
        # A reset link for the reset route.
        anon = Client(server)
        r = anon.post_form("/password/forgot", {"csrf_token": anon.csrf("/password/forgot"), "email": RESETEE_EMAIL})
        assert r.status == 200, r.text[:300]
        self.reset_path = reset_link(server.wait_for_mail(RESETEE_EMAIL, 1))
        self.reset_token = self.reset_path.split("token=", 1)[1]

    def user_id(self, username):
        page = self.admin.get("/admin/users").text
        m = re.search(
            rf"<td>{re.escape(username)}</td>.*?/admin/users/(\d+)/resend-invite", page, re.DOTALL
        )
        assert m, f"{username} not in the users list"
        return int(m.group(1))

    def users_list(self):
        return self.admin.get("/admin/users").text

    def mails_to(self, address):
        """Messages to `address`, once everything queued so far has been written."""
        return [m for m in settled_outbox(self.server, self.admin) if address.lower() in str(m["To"]).lower()]

    def victim(self):
        return logged_in(self.server, VICTIM, VICTIM_PASSWORD)


@pytest.fixture(scope="module")
def world(server):
    return World(server)


@pytest.fixture(scope="module")
def victim_entry(world, photo):
    """An upload of the victim's, for the history-delete route."""
    r = world.victim().upload("mine.png", photo)
    assert r.status == 303, r.text[:300]
    return r.location.rsplit("/", 1)[1]


def bad_token(variant, client, world):
    """The csrf_token field for a variant (possibly none), adjusting the client's cookies."""
    if variant == "missing":
        return {}
    if variant == "random":
        return {"csrf_token": secrets.token_hex(32)}
    if variant == "foreign":
        return {"csrf_token": world.foreign_anon if "mask_session" not in client.cookies else world.foreign_session}
    if variant == "cookieless":
        token = client.cookies.pop("mask_csrf")
        return {"csrf_token": token}
    if variant == "anonymous-token":
        return {"csrf_token": client.cookies["mask_csrf"]}
    raise AssertionError(variant)


def assert_forbidden(r, route, variant):
    assert r.status == 403, f"{route} with {variant} token: {r.status} {r.text[:300]}"
    assert "CSRF" in r.text, f"{route}: 403 without saying why: {r.text[:300]}"


def anon_client(world, page):
    c = Client(world.server)
    c.csrf(page)  # sets this visitor's own mask_csrf cookie
    return c


@pytest.mark.parametrize("variant", ANON_VARIANTS)
@pytest.mark.parametrize("route", ANON_ROUTES)
def test_anonymous_form_refuses_bad_csrf_without_effect(world, route, variant):
    if route == "login":
        c = anon_client(world, "/login")
        fields = {"username": VICTIM, "password": VICTIM_PASSWORD, **bad_token(variant, c, world)}
        assert_forbidden(c.post_form("/login", fields), route, variant)
        assert "mask_session" not in c.cookies, "a session cookie was set"
        assert not is_logged_in(c)
    elif route == "forgot":
        before = len(world.mails_to(VICTIM_EMAIL))
        c = anon_client(world, "/password/forgot")
        fields = {"email": VICTIM_EMAIL, **bad_token(variant, c, world)}
        assert_forbidden(c.post_form("/password/forgot", fields), route, variant)
        assert len(world.mails_to(VICTIM_EMAIL)) == before, "a reset email was sent"
    else:
        c = anon_client(world, world.reset_path)
        new = "csrf-reset-new-pw-1"
        fields = {"token": world.reset_token, "new_password": new, "confirm_password": new}
        fields.update(bad_token(variant, c, world))
        assert_forbidden(c.post_form("/password/reset", fields), route, variant)
        assert Client(world.server).get(world.reset_path).status == 200, "the token was used up"
        logged_in(world.server, RESETEE, RESETEE_PASSWORD)  # the password is unchanged


@pytest.mark.parametrize("variant", SESSION_VARIANTS)
@pytest.mark.parametrize("route", SESSION_ROUTES)
def test_logged_in_form_refuses_bad_csrf_without_effect(world, victim_entry, photo, route, variant):
    if route.startswith("admin"):
        # The admin client logs in afresh, with an anonymous cookie from the login page.
        c = admin_client(world.server)
    else:
        c = world.victim()
    token = bad_token(variant, c, world)
    if route == "logout":
        assert_forbidden(c.post_form("/logout", token), route, variant)
        assert is_logged_in(c), "the session ended"
    elif route == "password-change":
        new = "csrf-changed-pw-1"
        fields = {"old_password": VICTIM_PASSWORD, "new_password": new, "confirm_password": new, **token}
        assert_forbidden(c.post_form("/password/change", fields), route, variant)
        logged_in(world.server, VICTIM, VICTIM_PASSWORD)  # the old password still works
    elif route == "admin-user-new":
        name = f"csrfnew{variant.replace('-', '')}"
        fields = {"username": name, "email": f"{name}@example.com", "role": "admin", **token}
        assert_forbidden(c.post_form("/admin/users/new", fields), route, variant)
        assert f"<td>{name}</td>" not in world.users_list(), "the user was created"
    elif route == "admin-user-delete":
        assert_forbidden(c.post_form(f"/admin/users/{world.target_id}/delete", token), route, variant)
        assert world.user_id(TARGET) == world.target_id, "the user was deleted"
    elif route == "admin-resend-invite":
        before = len(world.mails_to(TARGET_EMAIL))
        assert_forbidden(c.post_form(f"/admin/users/{world.target_id}/resend-invite", token), route, variant)
        assert len(world.mails_to(TARGET_EMAIL)) == before, "an invitation was sent"
    elif route == "admin-mail-test":
        to = f"csrf-{variant}@example.com"
        assert_forbidden(c.post_form("/admin/mail/test", {"to": to, **token}), route, variant)
        assert world.mails_to(to) == [], "the test email was sent"
        assert to not in c.get("/admin/mail").text
    elif route == "upload":
        before = history_count(c)
        r = c.post_multipart("/upload", token, [("file", "csrf.png", photo, "image/png")], timeout=60)
        assert_forbidden(r, route, variant)
        assert history_count(c) == before, "the upload was recorded"
    else:
        assert_forbidden(c.post_form(f"/history/{victim_entry}/delete", token), route, variant)
        assert c.get(f"/results/{victim_entry}").status == 200, "the entry was deleted"


def test_the_same_requests_with_the_right_token_take_effect(world, victim_entry, photo):
    """The control: with the right token each route does what the refused requests did not,
    so the effect checks above can see an effect. Runs last: it changes passwords, deletes."""
    c = anon_client(world, "/login")
    r = c.post_form("/login", {"csrf_token": c.cookies["mask_csrf"], "username": VICTIM, "password": VICTIM_PASSWORD})
    assert r.status == 303 and is_logged_in(c)

    before = len(world.mails_to(VICTIM_EMAIL))
    a = anon_client(world, "/password/forgot")
    assert a.post_form("/password/forgot", {"csrf_token": a.cookies["mask_csrf"], "email": VICTIM_EMAIL}).status == 200
    assert len(world.mails_to(VICTIM_EMAIL)) == before + 1

    a = anon_client(world, world.reset_path)
    new = "csrf-reset-new-pw-1"
    fields = {"token": world.reset_token, "new_password": new, "confirm_password": new}
    fields["csrf_token"] = a.cookies["mask_csrf"]
    assert a.post_form("/password/reset", fields).status == 303
    assert Client(world.server).get(world.reset_path).status == 400
    logged_in(world.server, RESETEE, new)

    count = history_count(c)
    assert c.upload("ok.png", photo).status == 303
    assert history_count(c) == count + 1
    assert c.post_form(f"/history/{victim_entry}/delete", {"csrf_token": c.csrf()}).status == 303
    assert c.get(f"/results/{victim_entry}").status == 404

    new = "csrf-changed-pw-1"
    fields = {"csrf_token": c.csrf(), "old_password": VICTIM_PASSWORD, "new_password": new, "confirm_password": new}
    assert c.post_form("/password/change", fields).status == 200
    logged_in(world.server, VICTIM, new)

    admin = world.admin
    fields = {"csrf_token": admin.csrf(), "username": "csrfcontrol", "email": "csrfcontrol@example.com"}
    assert admin.post_form("/admin/users/new", fields).status == 303
    assert "<td>csrfcontrol</td>" in world.users_list()
    before = len(world.mails_to(TARGET_EMAIL))
    assert admin.post_form(f"/admin/users/{world.target_id}/resend-invite", {"csrf_token": admin.csrf()}).status == 303
    assert len(world.mails_to(TARGET_EMAIL)) == before + 1
    assert admin.post_form("/admin/mail/test", {"csrf_token": admin.csrf(), "to": "csrf-ok@example.com"}).status == 303
    assert len(world.mails_to("csrf-ok@example.com")) == 1
    assert admin.post_form(f"/admin/users/{world.target_id}/delete", {"csrf_token": admin.csrf()}).status == 303
    assert f"<td>{TARGET}</td>" not in world.users_list()

    assert c.post_form("/logout", {"csrf_token": c.csrf()}).status == 303
    assert not is_logged_in(c)

"""Access control: another user, or the administrator, cannot see a user's result page or
images, nor delete the entry (404, the same answer as for an entry that does not exist); an
anonymous visitor gets 404 for the images and the login page for the rest; the entry is still
there for its owner afterwards. A non-administrator cannot use the administration pages or
their forms (403, no effect)."""

import pytest

from conftest import Client, admin_client, logged_in, register, settled_outbox

OWNER, OWNER_PASSWORD = "olga", "owner-password-1"
OTHER, OTHER_PASSWORD = "oscar", "other-password-1"
KINDS = ["original", "annotated", "thumb"]


@pytest.fixture(scope="module")
def entry(server, photo):
    register(server, OWNER, OWNER_PASSWORD)
    register(server, OTHER, OTHER_PASSWORD)
    owner = logged_in(server, OWNER, OWNER_PASSWORD)
    r = owner.upload("private.png", photo)
    assert r.status == 303, r.text[:300]
    return r.location.rsplit("/", 1)[1]


def intruder(server, who):
    return logged_in(server, OTHER, OTHER_PASSWORD) if who == "other-user" else admin_client(server)


def assert_owner_still_has(server, entry):
    owner = logged_in(server, OWNER, OWNER_PASSWORD)
    assert owner.get(f"/results/{entry}").status == 200
    for kind in KINDS:
        r = owner.get(f"/images/{entry}/{kind}")
        assert r.status == 200 and r.headers["Content-Type"].startswith("image/"), (kind, r.status)
    assert entry in owner.get("/history").text


@pytest.mark.parametrize("who", ["other-user", "admin"])
def test_other_users_get_404_for_result_images_and_delete(server, entry, who):
    c = intruder(server, who)
    missing = "0" * 32
    assert c.get(f"/results/{entry}").status == 404
    # The same answer as for an entry that does not exist: nothing to tell them apart.
    assert c.get(f"/results/{entry}").body == c.get(f"/results/{missing}").body
    for kind in KINDS:
        assert c.get(f"/images/{entry}/{kind}").status == 404, kind
    r = c.post_form(f"/history/{entry}/delete", {"csrf_token": c.csrf()})
    assert r.status == 404, r.text[:300]
    assert entry not in c.get("/history").text
    assert_owner_still_has(server, entry)


def test_anonymous_visitor_gets_nothing(server, entry):
    c = Client(server)
    r = c.get(f"/results/{entry}")
    assert r.status == 303 and r.location.startswith("/login"), (r.status, r.location)
    for kind in KINDS:
        r = c.get(f"/images/{entry}/{kind}")
        assert r.status == 404 and not r.headers["Content-Type"].startswith("image/"), kind
    r = c.post_form(f"/history/{entry}/delete", {"csrf_token": c.csrf("/login")})
    assert r.status == 303 and r.location.startswith("/login"), (r.status, r.location)
    assert_owner_still_has(server, entry)


@pytest.mark.parametrize("page", ["/admin/users", "/admin/users/new", "/admin/mail"])
def test_admin_pages_refuse_a_user(server, entry, page):
    assert intruder(server, "other-user").get(page).status == 403


def test_admin_forms_refuse_a_user_without_effect(server, entry):
    c = logged_in(server, OTHER, OTHER_PASSWORD)
    token = c.csrf()
    admin = admin_client(server)
    users_before = admin.get("/admin/users").text
    mail_before = len(settled_outbox(server, admin))
    fields = {"csrf_token": token, "username": "sneaky", "email": "sneaky@example.com", "role": "admin"}
    r = c.post_form("/admin/users/new", fields)
    assert r.status == 403
    for action in ["delete", "resend-invite"]:
        assert c.post_form(f"/admin/users/1/{action}", {"csrf_token": token}).status == 403, action
    assert c.post_form("/admin/mail/test", {"csrf_token": token, "to": "sneaky@example.com"}).status == 403
    assert "sneaky" not in admin.get("/admin/users").text
    assert admin.get("/admin/users").text.count("<tr>") == users_before.count("<tr>")
    assert len(settled_outbox(server, admin)) == mail_before
    admin_client(server)  # the administrator (user 1) is still there and can log in

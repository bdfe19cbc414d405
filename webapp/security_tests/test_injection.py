"""SQL metacharacters and NUL bytes in user names, passwords, email addresses and the query
parameters that select rows (history tab and cursor, users page): each gets a clear 4xx or
normal handling, never a 500, and the databases still work afterwards (logins, listings,
SQLite integrity).

Login failures here stay under the per-address throttle (20 in 15 minutes) of this module's
server, so every answer is the real one, not a 429."""

import json
import sqlite3
import urllib.parse

import pytest

from conftest import ADMIN, ADMIN_PASSWORD, Client, admin_client, logged_in, multipart, register

SQL = [
    "' OR 1=1 --",
    "' OR '1'='1",
    "admin' --",
    '"; DROP TABLE users; --',
    "'); DELETE FROM sessions; --",
    "x\x00' OR 1=1 --",
]
IDS = ["or-1-1", "or-quoted", "comment", "drop-table", "delete-sessions", "nul"]
USER, PASSWORD = "quinn", "injection-user-pw-1"


@pytest.fixture(scope="module", autouse=True)
def user(server):
    register(server, USER, PASSWORD)


@pytest.mark.parametrize("value", SQL, ids=IDS)
def test_login_with_metacharacters_in_the_user_name_is_refused(server, value):
    c = Client(server)
    r = c.login(value, "whatever-password")
    assert r.status == 401, f"{r.status} {r.text[:300]}"
    assert "mask_session" not in c.cookies


@pytest.mark.parametrize("value", SQL[:3], ids=IDS[:3])
def test_login_with_metacharacters_in_the_password_is_refused(server, value):
    # Three failures for one user name: below its throttle of five.
    c = Client(server)
    assert c.login(USER, value).status == 401
    assert "mask_session" not in c.cookies


@pytest.mark.parametrize("value", SQL, ids=IDS)
def test_registration_with_metacharacters_in_user_name_or_email(server, value):
    c = Client(server)
    r = c.post_form("/api/register", {"username": value, "password": "register-pw-123"})
    assert r.status == 400, f"username: {r.status} {r.text[:300]}"
    assert json.loads(r.body)["success"] is False
    fields = {"username": "emailprobe", "password": "register-pw-123", "email": f"{value}@example.com"}
    r = c.post_form("/api/register", fields)
    assert r.status == 400, f"email: {r.status} {r.text[:300]}"


@pytest.mark.parametrize("value", SQL[:4], ids=IDS[:4])
def test_metacharacters_are_a_valid_password_and_stored_as_given(server, value):
    name = f"pw{IDS[SQL.index(value)].replace('-', '')}"
    register(server, name, f"{value}-long-enough")
    logged_in(server, name, f"{value}-long-enough")


@pytest.mark.parametrize("value", SQL, ids=IDS)
def test_admin_forms_with_metacharacters(server, value):
    admin = admin_client(server)
    for username, address in [(value, "meta@example.com"), ("metauser", f"{value}@example.com")]:
        fields = {"csrf_token": admin.csrf(), "username": username, "email": address}
        r = admin.post_form("/admin/users/new", fields)
        assert r.status == 400, f"{username} {address}: {r.status}"
    r = admin.post_form("/admin/mail/test", {"csrf_token": admin.csrf(), "to": value})
    assert r.status == 400, f"mail test: {r.status}"


@pytest.mark.parametrize("value", SQL, ids=IDS)
def test_forgot_password_with_metacharacters(server, value):
    c = Client(server)
    r = c.post_form("/password/forgot", {"csrf_token": c.csrf("/password/forgot"), "email": f"{value}@example.com"})
    # The same answer as for an unknown address.
    assert r.status == 200 and "Check your email" in r.text, f"{r.status} {r.text[:300]}"


@pytest.mark.parametrize("value", SQL, ids=IDS)
def test_row_selecting_query_parameters_with_metacharacters(server, value):
    c = logged_in(server, USER, PASSWORD)
    q = urllib.parse.quote(value)
    for path in [f"/history?tab={q}", f"/history?after={q}", f"/history?tab=all&after={q}"]:
        assert c.get(path).status == 400, path
    admin = admin_client(server)
    r = admin.get(f"/admin/users?page={q}")
    assert r.status == 200 and f"<td>{ADMIN}</td>" in r.text, r.status
    for path in [f"/results/{q}", f"/images/{q}/original"]:
        assert c.get(path).status == 404, path


@pytest.mark.parametrize("value", SQL[:2], ids=IDS[:2])
def test_api_upload_with_metacharacters_in_the_credentials(server, value, photo):
    body, ctype = multipart({"username": value, "password": value}, [("file", "x.png", photo, "image/png")])
    r = Client(server).request("POST", "/api/upload", body=body, headers={"Content-Type": ctype})
    assert r.status == 401, f"{r.status} {r.text[:300]}"


def test_databases_still_work_afterwards(server):
    """Runs last in this module: every account made above is intact and logins work."""
    admin = logged_in(server, ADMIN, ADMIN_PASSWORD)
    users = admin.get("/admin/users").text
    for name in [ADMIN, USER, "pworquoted"]:
        assert f"<td>{name}</td>" in users, name
    logged_in(server, USER, PASSWORD)
    assert logged_in(server, USER, PASSWORD).get("/history").status == 200
    server.assert_healthy()
    for db in [server.data_dir / "accounts.sqlite", server.data_dir / "history" / "history.sqlite3"]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], db
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
        assert tables, f"{db} has no tables"
    con = sqlite3.connect(f"file:{server.data_dir / 'accounts.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        assert con.execute("SELECT count(*) FROM users").fetchone()[0] >= 6
    finally:
        con.close()

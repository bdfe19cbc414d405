"""Two `mask-web` instances on one PostgreSQL database and one Garage bucket, behind nginx.

Run by `make cluster-test` (part of `make test`); see conftest.py for the topology."""

import json
import os
import re
import subprocess
import time

from conftest import (
    ROOT,
    Http,
    api_register,
    api_upload,
    get_status,
    multipart,
    smallest_photos,
)

LOAD = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "load"


def test_api_contract_through_nginx(cluster):
    base = cluster.nginx.url
    photo = smallest_photos(1)[0]
    status, body = api_register(base, "apiuser", "api-user-password-1")
    assert (status, body["success"]) == (201, True), body
    status, body = api_register(base, "APIUSER", "another-password-2")
    assert status == 409 and body["success"] is False, body

    status, body = api_upload(base, "apiuser", "api-user-password-1", photo)
    assert status == 201, body
    payload = body["payload"]
    assert re.fullmatch(r"[0-9a-f]{32}", payload["id"]), payload
    assert isinstance(payload["faces"], list) and payload["category"], payload

    status, body = api_upload(base, "apiuser", "wrong password", photo)
    assert status == 401 and body["success"] is False, body
    status, _, raw = Http(base).request("POST", "/api/upload", b"not multipart",
                                        {"Content-Type": "text/plain"})
    assert 400 <= status < 500, (status, raw)

    # The stored result and its images, read back through a session on whichever instance.
    web = Http(base)
    status, _, _ = web.login("apiuser", "api-user-password-1")
    assert status == 303
    for path, kind in [(f"/results/{payload['id']}", "text/html"),
                       (f"/images/{payload['id']}/original", "image/png"),
                       (f"/images/{payload['id']}/annotated", "image/")]:
        status, headers, data = web.get(path)
        assert status == 200 and headers["content-type"].startswith(kind), (path, status)
        assert data
    assert get_status(base + "/api/openapi.json") == 200


def test_a_login_on_one_instance_works_on_the_other(cluster):
    a, b = cluster.instances
    api_register(cluster.nginx.url, "roamer", "roamer-password-1")
    on_a = Http(a.url)
    status, _, _ = on_a.login("roamer", "roamer-password-1")
    assert status == 303
    on_b = Http(b.url)
    on_b.cookies = dict(on_a.cookies)
    status, _, page = on_b.get("/history")
    assert status == 200 and b"roamer" in page, status

    # Logging out on B ends the session on A too.
    status, _, upload_page = on_b.get("/upload")
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', upload_page).group(1).decode()
    status, _, _ = on_b.post_form("/logout", {"csrf_token": csrf})
    assert status == 303
    # A's client still presents the session cookie it got at login.
    status, headers, _ = on_a.get("/history")
    assert status == 303 and headers["location"].startswith("/login"), status


def test_login_throttling_counts_across_instances(cluster):
    a, b = cluster.instances
    api_register(cluster.nginx.url, "target", "target-password-1")
    # Five failures for one name (the default limit), alternating between the instances.
    for i in range(5):
        status, _, _ = Http((a, b)[i % 2].url).login("target", f"wrong guess {i}")
        assert status == 401, status
    # Now even the right password is refused, on both.
    for instance in (a, b):
        status, _, page = Http(instance.url).login("target", "target-password-1")
        assert status == 429 and b"Too many failed attempts" in page, status


def test_address_throttling_through_nginx_is_per_client_address(cluster):
    base = cluster.nginx.url
    # Failures from 127.0.0.2 with ever-new user names: its address limit is reached...
    refused_at = None
    for i in range(40):
        status, body = _api_login(base, f"nobody{i}", "wrong", source="127.0.0.2",
                                  forged="203.0.113.7")
        if status == 429:
            refused_at = i
            break
        assert status == 401, (status, body)
    assert refused_at is not None, "the address limit never applied through nginx"
    # ...forging X-Forwarded-For does not escape it...
    status, _ = _api_login(base, "nobodyelse", "wrong", source="127.0.0.2",
                           forged="198.51.100.1")
    assert status == 429
    # ...and another address is not affected.
    status, _ = _api_login(base, "nobodyelse", "wrong", source="127.0.0.3")
    assert status == 401


def _api_login(base, username, password, source, forged=None):
    """A credential check through `/api/upload` without a file: 401 for bad credentials."""
    http = Http(base, source)
    headers = {"X-Forwarded-For": forged} if forged else {}
    body, ctype = multipart({"username": username, "password": password})
    status, _, raw = http.request("POST", "/api/upload", body,
                                  {"Content-Type": ctype, **headers})
    return status, raw[:200]


def test_kill9_under_load_loses_no_acknowledged_upload(cluster, tmp_path):
    a, b = cluster.instances
    assert LOAD.is_file(), f"{LOAD} missing: run `make build`"
    report = tmp_path / "load.json"
    seconds = 24
    load = subprocess.Popen(
        [str(LOAD), "--url", cluster.nginx.url, "--levels", "8", "--seconds", str(seconds),
         "--photos", "6", "--user", "clusterload", "--pids", f"{a.proc.pid},{b.proc.pid}",
         "--busy-bound-ms", "60000", "--json", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    time.sleep(seconds / 3)
    a.kill9()
    killed_after = time.monotonic() - started
    out, _ = load.communicate(timeout=seconds + 240)
    print(out)
    assert load.returncode == 0, out
    result = json.loads(report.read_text())
    level = result["levels"][0]
    assert result["history_check"] == "ok", result
    assert level["bad_responses"] == 0, level
    assert result["uploads_201"] > 0, result
    statuses = level["statuses"]
    print(f"kill -9 of instance a after {killed_after:.0f} s of {seconds}: statuses {statuses}, "
          f"{result['uploads_201']} uploads acknowledged, all readable through the survivor")

    # The instance comes back and serves again, sharing everything with the other.
    a.restart()
    status, body = api_upload(a.url, "clusterload", "load-test-password-1",
                              smallest_photos(1)[0])
    assert status == 201, body
    web = Http(b.url)
    assert web.login("clusterload", "load-test-password-1")[0] == 303
    status, _, _ = web.get(f"/images/{body['payload']['id']}/annotated")
    assert status == 200
    # nginx sends requests to it again once its fail_timeout has passed.
    time.sleep(6)
    before = len(cluster.nginx.upstreams_used())
    for _ in range(10):
        assert get_status(cluster.nginx.url + "/healthz") == 200
    used = cluster.nginx.upstreams_used()[before:]
    assert f"127.0.0.1:{a.port}" in used and f"127.0.0.1:{b.port}" in used, used

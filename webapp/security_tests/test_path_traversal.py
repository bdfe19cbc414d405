"""Path traversal: upload file names with `..`, backslashes, absolute paths, encoded dots and NUL
never make the server write outside its data directory (the whole tree around the data
directory is compared before and after, and the absolute targets named must not appear), and
the client's name is never used as a path inside it. Traversal in the /images/{id}/{kind},
/results, /history and /static routes gets 404/400 and never a file's content (the token key
in the data directory and a canary file beside it are looked for in every answer)."""

import json
import os
import uuid
from pathlib import Path

import pytest

from conftest import SECRET, Client, logged_in, multipart, register

USER, PASSWORD = "tara", "traversal-user-pw-1"
TAG = uuid.uuid4().hex[:10]
CANARY = f"canary-{TAG}"
# Absolute targets: none may exist afterwards.
ABS_TMP = f"/tmp/secsuite-{TAG}-abs.png"
REL_TMP = f"secsuite-{TAG}-rel.png"
FILE_NAMES = [
    "../../etc/passwd.png",
    "..\\..\\x.png",
    ABS_TMP,
    "../" * 12 + "tmp/" + REL_TMP,
    "C:\\Windows\\System32\\drivers\\etc\\hosts.png",
    "%2e%2e%2f%2e%2e%2fencoded.png",
    "....//....//dots.png",
]
NUL_NAME = b"safe.png\x00/../../nul.png"


def tree(root):
    """Every file under `root`, relative, with its size (the server's log is left out)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.name != "server.log":
                out[str(p.relative_to(root))] = p.stat().st_size
    return out


@pytest.fixture(scope="module")
def setting(server):
    register(server, USER, PASSWORD)
    base = server.data_dir.parent
    (base / "canary.txt").write_text(CANARY)
    client = logged_in(server, USER, PASSWORD)
    return base, client


def assert_nothing_written_outside(base, before, data_dir):
    after = tree(base)
    data = str(data_dir.relative_to(base))
    new_outside = [p for p in after if p not in before and not p.startswith(data + os.sep)]
    assert not new_outside, f"files written outside the data dir: {new_outside}"
    names_inside = [p for p in after if p.startswith(data + os.sep)]
    leaked = [p for p in names_inside if any(w in p for w in ("passwd", "hosts", "encoded", "dots", TAG, ".."))]
    assert not leaked, f"a client file name became a path: {leaked}"
    for target in [ABS_TMP, f"/tmp/{REL_TMP}", "/etc/passwd.png", "/x.png", "/nul.png"]:
        assert not os.path.exists(target), f"{target} was written"


@pytest.mark.parametrize("name", FILE_NAMES)
def test_upload_file_name_cannot_escape_the_data_dir(server, setting, photo, name):
    base, client = setting
    before = tree(base)
    r = client.upload(name.replace("\\", "\\\\"), photo)
    assert r.status == 303, f"{r.status} {r.text[:300]}"
    assert client.get(r.location).status == 200
    assert_nothing_written_outside(base, before, server.data_dir)


def test_api_upload_file_name_cannot_escape_the_data_dir(server, setting, photo):
    base, _ = setting
    before = tree(base)
    name = "../" * 12 + "tmp/" + REL_TMP
    body, ctype = multipart({"username": USER, "password": PASSWORD}, [("file", name, photo, "image/png")])
    r = Client(server).request("POST", "/api/upload", body=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status == 201, f"{r.status} {r.text[:300]}"
    assert json.loads(r.body)["success"] is True
    assert_nothing_written_outside(base, before, server.data_dir)


def test_nul_in_the_file_name_is_refused_or_harmless(server, setting, photo):
    base, client = setting
    before = tree(base)
    r = client.upload(NUL_NAME, photo)
    assert r.status in (303, 400), f"{r.status} {r.text[:300]}"
    assert_nothing_written_outside(base, before, server.data_dir)


@pytest.fixture(scope="module")
def entry(setting, photo):
    _, client = setting
    r = client.upload("ok.png", photo)
    assert r.status == 303
    return r.location.rsplit("/", 1)[1]


def traversal_paths(entry):
    return [
        "/images/..%2F..%2Fsecret/original",
        f"/images/{entry}/..%2F..%2F..%2Fsecret",
        f"/images/{entry}/%2e%2e%2f%2e%2e%2f%2e%2e%2fcanary.txt",
        f"/images/{entry}/..%252F..%252Fsecret",
        f"/images/{entry}%2F..%2F..%2F..%2Fsecret/original",
        f"/images/{entry}%00/original",
        f"/images/{entry}/original%00.png",
        f"/images/{entry}/..%5C..%5Csecret",
        "/images/../../secret",
        f"/images/{entry}/../../../canary.txt",
        f"/images/{entry}/original/../../../../canary.txt",
        "/results/..%2F..%2Fsecret",
        "/results/..%2F..%2F..%2Fcanary.txt",
        "/static/..%2F..%2Fsecret",
        "/static/..%2Fsrc%2Flib.rs",
        "/static/%2e%2e/Cargo.toml",
        "/static/../../secret",
        "/..%2F..%2Fsecret",
        "/%2e%2e/%2e%2e/canary.txt",
    ]


def test_traversal_in_routes_gets_404_and_no_file(server, setting, entry):
    _, client = setting
    for path in traversal_paths(entry):
        for c in (client, Client(server)):
            r = c.get(path)
            to_login = r.status == 303 and r.location.startswith("/login?") and c is not client
            assert r.status in (400, 404) or to_login, f"{path}: {r.status} {r.location}"
            for needle in (SECRET, CANARY, "[package]", "pub fn routes"):
                assert needle not in r.text, f"{path}: the answer contains {needle!r}"
    r = client.post_form("/history/..%2F..%2Fsecret/delete", {"csrf_token": client.csrf()})
    assert r.status in (400, 404), r.status
    assert client.get(f"/images/{entry}/original").status == 200

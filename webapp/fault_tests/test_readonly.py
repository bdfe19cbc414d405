"""Unwritable storage during uploads (issue 12, Faults, third item): an upload fails with a 5xx
JSON error carrying a message, nothing half-written stays behind, the database stays
consistent, and once storage is writable again uploads succeed.

Two injections, at the two stages of a write (temp files, then rename into `files/<shard>/`):
- not root: `chmod 0555` on `history/tmp`, then recursively on `history/files`;
- root (chmod does not stop root): `history/tmp` replaced by a regular file, then every
  possible shard directory `history/files/00`..`ff` pre-empted by a regular file, so the
  temp files get written and the rename stage fails."""

import os
import shutil
import re

import pytest

from conftest import Server, history_ids, integrity, register, small_images, upload

IS_ROOT = os.geteuid() == 0


def chmod_tree(path, mode):
    for dirpath, dirnames, _ in os.walk(path):
        os.chmod(dirpath, mode)


def assert_clean_failure(server, image, hist, rows_before, what):
    status, body, raw = upload(server, image)
    print(f"{what}: {status} {raw[:300]!r}")
    assert 500 <= status <= 599, f"{what}: expected a 5xx, got {status} {raw[:300]!r}"
    assert body is not None, f"{what}: error body is not JSON: {raw[:300]!r}"
    assert body.get("success") is False, body
    err = body.get("error") or {}
    assert err.get("code") == status, body
    assert isinstance(err.get("message"), str) and err["message"].strip(), f"{what}: no error message: {body}"
    # Nothing recorded, nothing half-written.
    assert history_ids(hist / "history.sqlite3").keys() == rows_before, f"{what}: a row was committed"
    assert integrity(hist / "history.sqlite3") == [("ok",)]
    return err["message"]


def test_unwritable_storage_gives_5xx_and_stays_consistent(tmp_path):
    data = tmp_path / "data"
    hist = data / "history"
    server = Server(data, tmp_path / "server.log")
    image = small_images(1)[0]
    try:
        server.wait_ready()
        register(server)
        rows_before = set(history_ids(hist / "history.sqlite3"))
        files_before = sorted(p for p in (hist / "files").rglob("*"))

        # Stage 1: temp files cannot be created.
        tmp_dir = hist / "tmp"
        if IS_ROOT:
            shutil.rmtree(tmp_dir)
            tmp_dir.write_bytes(b"not a directory")
        else:
            os.chmod(tmp_dir, 0o555)
        try:
            msg1 = assert_clean_failure(server, image, hist, rows_before, "tmp unwritable")
            assert sorted(p for p in (hist / "files").rglob("*")) == files_before, "files appeared"
        finally:
            if IS_ROOT:
                tmp_dir.unlink()
                tmp_dir.mkdir()
            else:
                os.chmod(tmp_dir, 0o755)

        # Stage 2: temp files are written, moving them into files/ fails; they must be removed.
        files_dir = hist / "files"
        blockers = []
        if IS_ROOT:
            for n in range(256):
                shard = files_dir / f"{n:02x}"
                if not shard.exists():
                    shard.write_bytes(b"blocker")
                    blockers.append(shard)
            assert len(blockers) == 256, "shard directories existed before the first upload"
        else:
            chmod_tree(files_dir, 0o555)
        try:
            msg2 = assert_clean_failure(server, image, hist, rows_before, "files unwritable")
            left = list(tmp_dir.iterdir())
            assert not left, f"temp files left behind after a failed rename: {left}"
        finally:
            if IS_ROOT:
                for b in blockers:
                    b.unlink()
            else:
                chmod_tree(files_dir, 0o755)

        # Restored: uploads work again, and the entry is complete.
        status, body, raw = upload(server, image)
        assert status == 201, f"upload after restoring storage: {status} {raw[:300]!r}"
        entry_id = body["payload"]["id"]
        rows = history_ids(hist / "history.sqlite3")
        assert set(rows) == rows_before | {entry_id}
        written = sorted(p.name for p in (files_dir / entry_id[:2]).iterdir())
        assert len(written) == 3 and all(n.startswith(entry_id + "-") for n in written), written
        assert not list(tmp_dir.iterdir())
        assert integrity(hist / "history.sqlite3") == [("ok",)]
        assert integrity(data / "accounts.sqlite") == [("ok",)]
        # The real cause reaches the server log even though the client gets a short message.
        log = server.output()
        print(f"client messages: {msg1!r} / {msg2!r}")
        assert log.count("storage unavailable") >= 2, f"the failures were not logged:\n{log}"
    finally:
        server.stop()


def test_storage_failure_log_names_the_os_error(tmp_path):
    data = tmp_path / "data"
    tmp_dir = data / "history" / "tmp"
    server = Server(data, tmp_path / "server.log")
    try:
        server.wait_ready()
        register(server)
        if IS_ROOT:
            shutil.rmtree(tmp_dir)
            tmp_dir.write_bytes(b"not a directory")
            cause = re.compile(r"Not a directory|os error 20")
        else:
            os.chmod(tmp_dir, 0o555)
            cause = re.compile(r"Permission denied|os error 13")
        status, _, raw = upload(server, small_images(1)[0])
        assert 500 <= status <= 599, f"{status} {raw[:200]!r}"
        log = server.output()
        line = next((l for l in log.splitlines() if "storage unavailable" in l), None)
        assert line is not None, f"the failure was not logged:\n{log}"
        assert cause.search(line), f"the logged failure does not name the OS error: {line}"
    finally:
        if not IS_ROOT and tmp_dir.is_dir():
            os.chmod(tmp_dir, 0o755)
        server.stop()

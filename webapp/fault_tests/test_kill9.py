"""`kill -9` in the middle of a stream of uploads, then restart on the same data directory.

Checks (issue 12, Faults, first item):
- both SQLite databases pass `PRAGMA integrity_check`;
- every upload acknowledged with 201 before the kill is a committed row, owned by the uploader;
- nothing half-written is visible: every row has its three image files, non-empty, of the
  recorded size, decodable;
- the startup sweep removed every orphan: `history/tmp` is empty and every image file under
  `history/files` belongs to a row;
- the restarted server accepts uploads again.
Bounded: at most MAX_REQUESTS uploads, all to 127.0.0.1."""

import sqlite3
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

from conftest import (
    PASSWORD,
    USER,
    Server,
    history_ids,
    integrity,
    register,
    small_images,
    upload,
)

MAX_REQUESTS = 60
THREADS = 2
KILL_AFTER_ACKS = 4  # kill once this many uploads were acknowledged (requests still in flight)
KILL_DEADLINE_S = 30  # ... or at the latest after this long


def image_files(files_dir):
    return sorted(p for p in Path(files_dir).rglob("*") if p.is_file())


def test_kill9_during_uploads_loses_no_acknowledged_upload(tmp_path):
    data = tmp_path / "data"
    server = Server(data, tmp_path / "server1.log")
    try:
        server.wait_ready()
        register(server)

        images = small_images(8)
        acked, failures = [], []
        lock = threading.Lock()
        stop = threading.Event()
        killed = threading.Event()
        after_kill = []
        sent = [0]

        def worker(offset):
            i = offset
            while not stop.is_set():
                with lock:
                    if sent[0] >= MAX_REQUESTS:
                        return
                    sent[0] += 1
                try:
                    status, body, raw = upload(server, images[i % len(images)], timeout=30)
                except OSError as e:  # the kill: connection reset / refused
                    with lock:
                        (after_kill if killed.is_set() else failures).append(repr(e))
                    if killed.is_set():
                        return
                    continue
                with lock:
                    if status == 201:
                        acked.append(body["payload"]["id"])
                    else:
                        failures.append(f"{status} {raw[:200]!r}")
                i += THREADS

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
        for t in threads:
            t.start()
        start = time.monotonic()
        while time.monotonic() - start < KILL_DEADLINE_S:
            with lock:
                if len(acked) >= KILL_AFTER_ACKS:
                    break
            time.sleep(0.05)
        # Let the next uploads get into flight, then SIGKILL mid-stream.
        time.sleep(0.4)
        with lock:
            acked_before_kill = list(acked)
            in_flight = sent[0] - len(acked) - len(failures)
        killed.set()
        server.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=40)
        assert not any(t.is_alive() for t in threads), "upload threads did not stop after the kill"
        with lock:
            # A 201 can only arrive before the kill; any that raced in counts too.
            acked_ids = list(acked)
        print(f"sent={sent[0]} acked={len(acked_ids)} (at kill {len(acked_before_kill)}), "
              f"in flight at kill~{in_flight}, cut off by the kill: {after_kill}")
        assert len(acked_ids) >= KILL_AFTER_ACKS, f"too few uploads acknowledged before the kill: {failures}"
        assert server.proc.returncode == -9, f"server was not killed by SIGKILL: {server.proc.returncode}"
        assert not failures, f"uploads failed before the kill: {failures}"
    finally:
        server.stop()

    # What the kill left behind, plus planted debris of the kinds a crash leaves (a temp file of
    # an in-flight write, image files renamed into place whose row never committed), so the
    # startup sweep is exercised even when the kill landed outside the write window.
    hist = data / "history"
    left_tmp = sorted(p.name for p in (hist / "tmp").iterdir())
    print(f"left by the kill in tmp/: {left_tmp}")
    ghost = "f" * 8 + uuid.uuid4().hex[8:]  # valid id, no row
    assert ghost not in history_ids(hist / "history.sqlite3")
    (hist / "tmp" / f"{ghost}-original.tmp").write_bytes(b"half-written")
    (hist / "files" / ghost[:2]).mkdir(exist_ok=True)
    planted = [hist / "files" / ghost[:2] / f"{ghost}-{k}.{e}" for k, e in
               (("original", "png"), ("annotated", "png"), ("thumb", "jpg"))]
    for p in planted:
        p.write_bytes(b"\x89PNG orphan")
    keep = hist / "files" / ghost[:2] / "README-not-generated.txt"  # not a generated name: left alone
    keep.write_text("x")

    # Restart on the same data directory: the startup sweep runs here.
    server2 = Server(data, tmp_path / "server2.log")
    try:
        server2.wait_ready()

        hist_db = hist / "history.sqlite3"
        acc_db = data / "accounts.sqlite"
        assert integrity(acc_db) == [("ok",)]
        assert integrity(hist_db) == [("ok",)]

        rows = history_ids(hist_db)
        missing = [i for i in acked_ids if i not in rows]
        assert not missing, f"acknowledged uploads lost by the kill: {missing}"

        # Owned by the uploader.
        con = sqlite3.connect(f"file:{acc_db}?mode=ro", uri=True)
        try:
            user_cols = [r[1] for r in con.execute("PRAGMA table_info(users)")]
            assert "username" in user_cols, user_cols
            (uid,) = con.execute("SELECT id FROM users WHERE username = ?", (USER,)).fetchone()
        finally:
            con.close()
        con = sqlite3.connect(f"file:{hist_db}?mode=ro", uri=True)
        try:
            owners = dict(con.execute("SELECT id, owner FROM entries"))
        finally:
            con.close()
        assert all(owners[i] == uid for i in acked_ids), "acknowledged entries not owned by the uploader"

        # Every row complete; nothing else on disk.
        ext = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "gif": "gif", "tiff": "tiff"}
        expected = set()
        for entry_id, (_, o_type, o_bytes, a_type, a_bytes, t_type, t_bytes) in rows.items():
            for kind, typ, size in (("original", o_type, o_bytes), ("annotated", a_type, a_bytes),
                                    ("thumb", t_type, t_bytes)):
                path = hist / "files" / entry_id[:2] / f"{entry_id}-{kind}.{ext.get(typ, typ)}"
                expected.add(path)
                assert path.is_file(), f"entry {entry_id}: {kind} image missing ({path})"
                assert path.stat().st_size == size > 0, f"{path}: size {path.stat().st_size}, row says {size}"
                with Image.open(path) as im:
                    im.load()  # fully decodable, not truncated
        assert keep.is_file(), "the sweep removed a file whose name the store never generates"
        keep.unlink()
        assert not any(p.exists() for p in planted), "planted orphan images survived the startup sweep"
        on_disk = set(image_files(hist / "files"))
        orphans = on_disk - expected
        assert not orphans, f"orphan files survived the startup sweep: {sorted(orphans)}"
        leftovers = list((hist / "tmp").iterdir())
        assert not leftovers, f"temporary files survived the startup sweep: {leftovers}"

        # The restarted server works.
        status, body, raw = upload(server2, small_images(1)[0])
        assert status == 201, f"upload after restart: {status} {raw[:300]!r}"
        assert body["payload"]["id"] not in acked_ids
        print(f"rows after restart: {len(rows)}, acknowledged: {len(acked_ids)}, files: {len(on_disk)}")
    finally:
        server2.stop()
    assert integrity(data / "history" / "history.sqlite3") == [("ok",)]

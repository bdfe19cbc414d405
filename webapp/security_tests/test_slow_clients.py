"""Slow clients (slowloris): a connection that sends its request head a byte a second, one that
sends a head and then only part of the body it announced, and one that sends nothing must be
answered or closed by the server within SLOW_CLIENT_BOUND seconds; 50 such idle connections
must not stop normal requests from being served promptly; and clients that stall their upload
bodies must neither be held longer than the bound nor keep other users' uploads out.

The server's own limits (webapp/src/server.rs, web.rs, uploads.rs): 10 s for the request head,
15 s for a form body, 120 s for a whole upload body and 15 s without any byte of it; the
detection pool (workers + queue, 2 + 16 here) is entered before an upload's body is read, and
one client address holds at most 4 places (`detect_per_client`). The stalling clients of the
last test come from 127.0.0.2, another loopback address, so that the victim (127.0.0.1) is a
different client."""

import select
import socket
import time

import pytest

from conftest import HOST, Client, logged_in, register

SLOW_CLIENT_BOUND = 30
IDLE_CONNECTIONS = 50
PROMPT = 2.0
POOL_PLACES = 2 + 16  # MASK_WEB_DETECT_WORKERS (conftest) + the default detect_queue
USER, PASSWORD = "sloane", "slow-client-user-pw-1"


def connect(port, first, source=None):
    s = socket.create_connection((HOST, port), timeout=5, source_address=(source, 0) if source else None)
    if first:
        s.sendall(first)
    return s


STALLED_UPLOAD = (
    b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n--XX\r\n"
)


def stalled_connections(port):
    """name -> socket for each way of stalling; the dribbling one still has bytes to send."""
    return {
        "head sent a byte a second": connect(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
        "form body stalled after 10 of 100 bytes": connect(
            port,
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=a",
        ),
        "nothing sent": connect(port, b""),
    }


def wait_until_closed(conns, bound):
    """Seconds until the server answered or closed each connection (readable socket), dribbling
    one head byte a second on the "head" one; connections still open after `bound` are absent."""
    start = time.monotonic()
    closed_after = {}
    dribble = b"X-Slow: " + b"a" * 1000
    while len(closed_after) < len(conns) and time.monotonic() - start < bound:
        for name, s in conns.items():
            if name in closed_after:
                continue
            if select.select([s], [], [], 0)[0]:
                closed_after[name] = round(time.monotonic() - start, 1)
            elif name.startswith("head"):
                try:
                    s.send(dribble[:1])
                    dribble = dribble[1:]
                except OSError:
                    closed_after[name] = round(time.monotonic() - start, 1)
        time.sleep(1)
    return closed_after


def close_all(sockets):
    for s in sockets:
        s.close()


def test_stalled_connections_are_closed_within_the_bound(server):
    conns = stalled_connections(server.port)
    try:
        closed_after = wait_until_closed(conns, SLOW_CLIENT_BOUND)
    finally:
        close_all(conns.values())
    print(f"closed after (s): {closed_after}")
    still_open = sorted(set(conns) - set(closed_after))
    assert not still_open, f"still open after {SLOW_CLIENT_BOUND}s: {still_open} (closed: {closed_after})"


def test_stalled_upload_body_is_closed_within_the_bound(server):
    conns = {"upload body stalled": connect(server.port, STALLED_UPLOAD)}
    try:
        closed_after = wait_until_closed(conns, SLOW_CLIENT_BOUND)
    finally:
        close_all(conns.values())
    assert closed_after, f"a stalled upload body was still open after {SLOW_CLIENT_BOUND}s"


def test_idle_connections_do_not_block_a_normal_request(server):
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS // 3 + 1):
            idle.extend(stalled_connections(server.port).values())
        assert len(idle) >= IDLE_CONNECTIONS
        for path in ["/healthz", "/login", "/api/openapi.json"]:
            start = time.monotonic()
            r = Client(server).get(path, timeout=10)
            elapsed = time.monotonic() - start
            assert r.status == 200, f"{path}: {r.status}"
            assert elapsed < PROMPT, f"{path} took {elapsed:.2f}s with {len(idle)} idle connections"
        start = time.monotonic()
        assert Client(server).login("nobody", "not-the-password").status == 401
        assert time.monotonic() - start < PROMPT * 2
    finally:
        close_all(idle)


def test_stalled_uploads_do_not_keep_other_uploads_out(server, photo):
    register(server, USER, PASSWORD)
    user = logged_in(server, USER, PASSWORD)
    stalled = [connect(server.port, STALLED_UPLOAD, source="127.0.0.2") for _ in range(POOL_PLACES + 2)]
    try:
        time.sleep(0.5)
        start = time.monotonic()
        r = user.upload("normal.png", photo)
        elapsed = time.monotonic() - start
    finally:
        close_all(stalled)
    assert r.status == 303, f"a normal upload got {r.status} with {len(stalled)} stalled uploads open"
    assert elapsed < 10, f"a normal upload took {elapsed:.1f}s"

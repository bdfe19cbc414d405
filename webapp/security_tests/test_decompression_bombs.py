"""Decompression bombs: a tiny PNG whose header declares 50000x50000 pixels (2.5 gigapixels,
~7.5 GB decoded), with a deflate stream of zeros behind it, is refused through the upload form
and the API with 413 and a message naming the size, within seconds, and the server's peak
memory (VmHWM) grows by less than MAX_GROWTH_MIB while handling it."""

import json
import struct
import time
import zlib

import pytest

from conftest import Client, history_count, logged_in, multipart, register

USER, PASSWORD = "bruno", "bomb-user-password-1"
SIDE = 50_000
MAX_GROWTH_MIB = 200
QUICK = 5


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side=SIDE):
    """An RGB PNG declaring side x side pixels; its IDAT inflates to 64 MiB of zeros (the
    first rows) from about 64 KiB, so a decoder that trusts the header would allocate ~7.5 GB."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(64 * 1024 * 1024), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb():
    data = png_bomb()
    assert len(data) < 200 * 1024, len(data)
    return data


@pytest.fixture(scope="module")
def user(server):
    register(server, USER, PASSWORD)
    return logged_in(server, USER, PASSWORD)


def assert_bounded(server, send, what):
    before = server.vm_hwm_kib()
    start = time.monotonic()
    r = send()
    elapsed = time.monotonic() - start
    growth_mib = (server.vm_hwm_kib() - before) / 1024
    assert r.status == 413, f"{what}: {r.status} {r.text[:300]}"
    assert "too many pixels" in r.text and f"{SIDE}x{SIDE}" in r.text, f"{what}: unclear message {r.text[:500]}"
    assert elapsed < QUICK, f"{what}: took {elapsed:.1f}s"
    assert growth_mib < MAX_GROWTH_MIB, f"{what}: peak memory grew by {growth_mib:.0f} MiB"
    server.assert_healthy()
    return r


def test_bomb_through_the_upload_form(server, user, bomb):
    r = assert_bounded(server, lambda: user.upload("bomb.png", bomb), "/upload")
    assert 'id="upload-error"' in r.text
    assert history_count(user) == 0, "the bomb was recorded"


def test_bomb_through_the_api(server, user, bomb):
    body, ctype = multipart({"username": USER, "password": PASSWORD}, [("file", "bomb.png", bomb, "image/png")])
    r = assert_bounded(
        server,
        lambda: Client(server).request("POST", "/api/upload", body=body, headers={"Content-Type": ctype}),
        "/api/upload",
    )
    error = json.loads(r.body)
    assert error["success"] is False and error["error"]["code"] == 413, error


def test_bomb_with_a_harmless_name_and_type(server, user, bomb):
    """The format is sniffed from the bytes: calling it a JPEG changes nothing."""
    assert_bounded(server, lambda: user.upload("holiday.jpg", bomb, content_type="image/jpeg"), "/upload as jpeg")

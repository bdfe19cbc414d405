"""Multipart fuzzing of the upload routes: valid bodies for `POST /upload` (session cookie and
CSRF token) and `POST /api/upload` (credentials in the form) are mutated by a seeded generator
(SECURITY_FUZZ_SEED, printed; SECURITY_FUZZ_CASES cases, default 200, stopped after
FUZZ_SECONDS) - truncation, dropped or wrong boundaries, duplicate and missing parts, huge part
headers, missing file names, random bytes, bad content types, NUL bytes, non-UTF-8 names,
chunked framing - and every answer must come within the request timeout with a status in the
route's allowed set (never a 500), the server staying alive and healthy.

Hand-picked bodies, among them what the fuzz found, are kept as explicit regression cases in
REGRESSIONS and always run."""

import os
import random
import time

import pytest

from conftest import HOST, logged_in, raw_exchange, register, smallest_photos

USER, PASSWORD = "fuzz", "multipart-fuzz-pw-1"
FUZZ_CASES = int(os.environ.get("SECURITY_FUZZ_CASES", "200"))
FUZZ_SECONDS = 40
REQUEST_TIMEOUT = 30
# 411: a body without Content-Length (chunked) is refused before it is read.
ALLOWED = {
    "/upload": {303, 400, 403, 411, 413, 415},
    "/api/upload": {201, 400, 401, 411, 413, 415, 429},
}
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


class Part:
    def __init__(self, headers, data):
        self.headers = headers  # list of raw header lines (bytes), without CRLF
        self.data = data

    def copy(self):
        return Part(list(self.headers), self.data)


def field(name, value):
    return Part([b'Content-Disposition: form-data; name="' + name + b'"'], value)


def file_part(file_name, data, ctype=b"image/png"):
    disposition = b'Content-Disposition: form-data; name="file"; filename="' + file_name + b'"'
    return Part([disposition, b"Content-Type: " + ctype], data)


class Case:
    """A request body under construction: parts, boundary, framing, and what was done to it."""

    def __init__(self, parts, boundary=b"----fuzzboundary7MA4YWxkTrZu0gW"):
        self.parts = parts
        self.boundary = boundary
        self.content_type = b"multipart/form-data; boundary=" + boundary
        self.eol = b"\r\n"
        self.closing = True
        self.chunked = False
        self.byte_edits = []  # functions bytes -> bytes, applied after serialising
        self.steps = []

    def body(self):
        eol, out = self.eol, b""
        for p in self.parts:
            out += b"--" + self.boundary + eol + eol.join(p.headers) + eol + eol + p.data + eol
        if self.closing:
            out += b"--" + self.boundary + b"--" + eol
        for edit in self.byte_edits:
            out = edit(out)
        return out


def structural_mutations(rng):
    def duplicate(c):
        if c.parts:
            c.parts.insert(rng.randrange(len(c.parts) + 1), rng.choice(c.parts).copy())

    def drop(c):
        if c.parts:
            c.parts.pop(rng.randrange(len(c.parts)))

    def no_filename(c):
        for p in c.parts:
            p.headers = [h.split(b"; filename=")[0] for h in p.headers]

    def huge_part_header(c):
        if c.parts:
            p = rng.choice(c.parts)
            pad = b"a" * rng.choice([1024, 64 * 1024, 300 * 1024])
            p.headers.append(rng.choice([b"X-Pad: ", b"Content-Disposition: form-data; name=\"x\"; junk="]) + pad)

    def non_utf8_names(c):
        bad = rng.choice([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80" * 5])
        for p in c.parts:
            p.headers = [h.replace(b'name="', b'name="' + bad, 1) if rng.random() < 0.5 else h for h in p.headers]

    def nul_bytes(c):
        if c.parts:
            p = rng.choice(c.parts)
            target = rng.randrange(3)
            if target == 0:
                p.data = p.data[: len(p.data) // 2] + b"\x00" + p.data[len(p.data) // 2 :]
            else:
                p.headers = [h.replace(b'"', b'"\x00', 1) for h in p.headers]

    def part_content_type(c):
        if c.parts:
            p = rng.choice(c.parts)
            p.headers = [h for h in p.headers if not h.lower().startswith(b"content-type")]
            ctype = rng.choice([
                b"text/html", b"application/x-php", b"multipart/mixed; boundary=inner", b"\x01\x02", b"",
                b"image/png; charset=\xff",
            ])
            if ctype:
                p.headers.append(b"Content-Type: " + ctype)

    def no_disposition(c):
        if c.parts:
            p = rng.choice(c.parts)
            p.headers = [h for h in p.headers if not h.lower().startswith(b"content-disposition")]

    def odd_disposition(c):
        if c.parts:
            p = rng.choice(c.parts)
            p.headers[:1] = [rng.choice([
                b"Content-Disposition: form-data",
                b"Content-Disposition: attachment; name=\"file\"",
                b"Content-Disposition: form-data; name=file; filename=x.png",
                b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%e2%82%ac%00.png",
                b"Content-Disposition: form-data; name=\"file\"; filename=\"a\\\"b\\\\\"",
                b"Content-Disposition: form-data; name=\"\"; filename=\"\"",
                b"Content-Disposition: ;;;;;",
                b"Content-Disposition: form-data; name=\"" + b"n" * 10_000 + b"\"",
            ])]

    def many_parts(c):
        c.parts += [field(b"f%d" % i, b"v") for i in range(rng.choice([100, 2000]))]

    def empty_file(c):
        for p in c.parts:
            if b"filename" in b"".join(p.headers):
                p.data = b""

    def random_data(c):
        if c.parts:
            rng.choice(c.parts).data = rng.randbytes(rng.randrange(0, 4096))

    def boundary_in_data(c):
        if c.parts:
            p = rng.choice(c.parts)
            p.data += rng.choice([b"\r\n--" + c.boundary, b"\r\n--" + c.boundary + b"--", b"--" + c.boundary[:-1]])

    return [duplicate, drop, no_filename, huge_part_header, non_utf8_names, nul_bytes, part_content_type,
            no_disposition, odd_disposition, many_parts, empty_file, random_data, boundary_in_data]


def framing_mutations(rng):
    def truncate(c):
        c.byte_edits.append(lambda b: b[: rng.randrange(len(b) + 1)])

    def no_closing(c):
        c.closing = False

    def wrong_boundary(c):
        other = rng.choice([b"other", c.boundary[:-1], c.boundary + b"x", b'"' + c.boundary + b'"'])
        c.content_type = b"multipart/form-data; boundary=" + other

    def no_boundary_param(c):
        c.content_type = rng.choice(
            [b"multipart/form-data", b"multipart/form-data; boundary=", b"multipart/form-data; charset=utf-8"]
        )

    def bad_content_type(c):
        c.content_type = rng.choice([
            b"text/plain", b"application/json", b"application/x-www-form-urlencoded", b"image/png", b"", b"\xff\xfe",
            b"multipart/mixed; boundary=" + c.boundary, b"multipart/form-data; boundary=" + b"b" * 500,
        ])

    def flip_bytes(c):
        def edit(b):
            b = bytearray(b)
            for _ in range(rng.randint(1, 8)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b)
        c.byte_edits.append(edit)

    def insert_bytes(c):
        def edit(b):
            i = rng.randrange(len(b) + 1)
            return b[:i] + rng.randbytes(rng.randint(1, 64)) + b[i:]
        c.byte_edits.append(edit)

    def lf_only(c):
        c.eol = b"\n"

    def long_boundary(c):
        c.boundary = b"B" * rng.choice([71, 1000, 10_000])
        c.content_type = b"multipart/form-data; boundary=" + c.boundary

    def preamble_epilogue(c):
        c.byte_edits.append(lambda b: b"preamble junk\r\n" + b + rng.randbytes(32))

    def chunked(c):
        c.chunked = True

    return [truncate, no_closing, wrong_boundary, no_boundary_param, bad_content_type, flip_bytes,
            insert_bytes, lf_only, long_boundary, preamble_epilogue, chunked]


def request_bytes(route, case, cookie):
    body = case.body()
    head = [b"POST " + route.encode() + b" HTTP/1.1", b"Host: " + HOST.encode(), b"Connection: close",
            b"Content-Type: " + case.content_type]
    if cookie:
        head.append(b"Cookie: " + cookie.encode())
    if case.chunked:
        head.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Target:
    """The two routes, with what a valid body for each carries."""

    def __init__(self, server, photo):
        register(server, USER, PASSWORD)
        self.server = server
        self.client = logged_in(server, USER, PASSWORD)
        self.csrf = self.client.csrf()
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())
        self.photo = photo

    def valid_case(self, route, rng):
        data = rng.choices([b"not an image at all", PNG_HEAD + rng.randbytes(64), self.photo], weights=[45, 45, 10])[0]
        parts = [file_part(b"photo.png", data)]
        if route == "/upload":
            parts.insert(0, field(b"csrf_token", self.csrf.encode()))
        else:
            parts[:0] = [field(b"username", USER.encode()), field(b"password", PASSWORD.encode())]
        return Case(parts)

    def send(self, route, case):
        cookie = self.cookie if route == "/upload" else None
        return raw_exchange(self.server.port, request_bytes(route, case, cookie), timeout=REQUEST_TIMEOUT)


@pytest.fixture(scope="module")
def target(server, photo):
    return Target(server, photo)


def check(target, route, case, what):
    """Send the case; the answer's status and how long it took."""
    status, out, elapsed = target.send(route, case)
    assert status is not None, f"{what}: no answer within {REQUEST_TIMEOUT}s ({elapsed:.1f}s): a hang or a drop"
    assert status != 500, f"{what}: 500 {out[-400:]!r}"
    assert status in ALLOWED[route], f"{what}: status {status} not in {sorted(ALLOWED[route])}: {out[-400:]!r}"
    return status, elapsed


def test_multipart_fuzz(server, target):
    seed = int(os.environ.get("SECURITY_FUZZ_SEED", random.randrange(2**32)))
    print(f"multipart fuzz seed: {seed} (SECURITY_FUZZ_SEED={seed} to repeat)")
    rng = random.Random(seed)
    mutations = structural_mutations(rng) + framing_mutations(rng)
    deadline = time.monotonic() + FUZZ_SECONDS
    seen, done, slowest = {}, 0, (0.0, "")
    for i in range(FUZZ_CASES):
        if time.monotonic() > deadline:
            break
        route = rng.choice(list(ALLOWED))
        case = target.valid_case(route, rng)
        for m in rng.sample(mutations, rng.randint(1, 3)):
            m(case)
            case.steps.append(m.__name__)
        what = f"case {i} (seed {seed}) {route} {'+'.join(case.steps)}"
        status, elapsed = check(target, route, case, what)
        seen[(route, status)] = seen.get((route, status), 0) + 1
        slowest = max(slowest, (elapsed, what))
        done += 1
    print(f"multipart fuzz: {done} cases; statuses {dict(sorted(seen.items()))}")
    print(f"slowest answer {slowest[0]:.2f}s: {slowest[1]}")
    assert done >= min(FUZZ_CASES, 50), f"only {done} cases ran in {FUZZ_SECONDS}s"
    server.assert_healthy()
    assert target.client.upload("after-fuzz.png", smallest_photos(1)[0].read_bytes()).status == 303


def set_attr(name, value):
    return lambda c: setattr(c, name, value)


def long_boundary(c):
    c.boundary = b"B" * 10_000
    c.content_type = b"multipart/form-data; boundary=" + c.boundary


def nul_in_file_name(c):
    c.parts[-1].headers[0] = c.parts[-1].headers[0].replace(b"photo", b"ph\x00oto")


# (name, route, edit of a valid body carrying the real photo). The fuzz has found no 500 and no
# hang; it did find that `POST /upload` with a body that is not multipart (no boundary, another
# content type, chunked) was answered 405 "method not allowed" (fixed in error.rs::classify):
# those cases are kept here, with the likeliest troublemakers.
REGRESSIONS = [
    ("boundary only", "/upload", lambda c: c.parts.clear()),
    ("closing boundary missing", "/api/upload", set_attr("closing", False)),
    ("truncated inside the file", "/api/upload", lambda c: c.byte_edits.append(lambda b: b[: len(b) // 2])),
    ("nul in the file name", "/upload", nul_in_file_name),
    ("non-utf8 field value", "/api/upload", lambda c: setattr(c.parts[0], "data", b"\xff\xfe\xfd")),
    ("csrf field twice, second wrong", "/upload", lambda c: c.parts.insert(1, field(b"csrf_token", b"0" * 64))),
    ("file twice", "/api/upload", lambda c: c.parts.append(c.parts[-1].copy())),
    ("300 KB part header", "/upload", lambda c: c.parts[-1].headers.append(b"X-Pad: " + b"a" * 300 * 1024)),
    ("2000 small fields", "/api/upload", lambda c: c.parts.extend(field(b"f%d" % i, b"v") for i in range(2000))),
    ("LF line endings", "/upload", set_attr("eol", b"\n")),
    ("boundary of 10000 bytes", "/upload", long_boundary),
    ("random body", "/api/upload", lambda c: c.byte_edits.append(lambda b: random.Random(0).randbytes(2048))),
    ("chunked framing", "/api/upload", set_attr("chunked", True)),
    ("chunked framing, form", "/upload", set_attr("chunked", True)),
    ("no boundary parameter", "/api/upload", set_attr("content_type", b"multipart/form-data")),
    ("no boundary parameter, form", "/upload", set_attr("content_type", b"multipart/form-data")),
    ("urlencoded type, form", "/upload", set_attr("content_type", b"application/x-www-form-urlencoded")),
]


@pytest.mark.parametrize("route, edit", [r[1:] for r in REGRESSIONS], ids=[r[0] for r in REGRESSIONS])
def test_multipart_regression_case(target, route, edit):
    case = target.valid_case(route, random.Random(1))
    case.parts[-1].data = target.photo
    edit(case)
    status, _ = check(target, route, case, route)
    target.server.assert_healthy()

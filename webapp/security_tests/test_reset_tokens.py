"""Password-reset tokens (HS256 JWTs sent by email; read here from the server's outbox):
a link works once; a tampered token (any segment changed, signature dropped, claims swapped) is
refused with a clear "not valid" page; a token only ever changes its own user's password; a
token signed with the real key but expired, stale or for nobody is refused; and a fuzz of
random and mutated tokens (seeded; SECURITY_FUZZ_CASES, SECURITY_FUZZ_SEED) on GET and POST of
/password/reset always gets a clean 4xx page, never a 500 or a 200.

Expiry of an issued token after its 10-minute lifetime (not a setting) is tested in Rust with a
manual clock (part1_accounts.rs, forgot_password_link_works_once_and_not_after_expiry); here a
token signed with the server's real key (the suite sets MASK_WEB_SECRET) with a past `exp`
shows the route checks expiry."""

import base64
import hashlib
import hmac
import json
import os
import random
import time
import urllib.parse

import pytest

from conftest import SECRET, Client, Listener, logged_in, register, reset_link

RITA, RITA_PASSWORD, RITA_EMAIL = "rita", "reset-rita-pw-1", "rita@example.com"
SAM, SAM_PASSWORD, SAM_EMAIL = "sam", "reset-sam-pw-1", "sam@example.com"
NEW = "reset-new-password-1"
NOT_VALID, USED, EXPIRED = "This link is not valid.", "This link has already been used.", "This link has expired."
FUZZ_CASES = int(os.environ.get("SECURITY_FUZZ_CASES", "200"))
FUZZ_SECONDS = 30


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token):
    return json.loads(unb64(token.split(".")[1]))


def forge(claims, key=SECRET, header=None):
    """A JWT with these claims, HMAC-SHA256 signed with `key` (None: no signature)."""
    header = header or {"typ": "JWT", "alg": "HS256"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class Resets:
    """Reset links requested through the form and read from the outbox."""

    def __init__(self, server):
        self.server = server
        self.sent = {}

    def token(self, email):
        c = Client(self.server)
        r = c.post_form("/password/forgot", {"csrf_token": c.csrf("/password/forgot"), "email": email})
        assert r.status == 200, r.text[:300]
        self.sent[email] = self.sent.get(email, 0) + 1
        return reset_link(self.server.wait_for_mail(email, self.sent[email])).split("token=", 1)[1]


@pytest.fixture(scope="module")
def resets(server):
    register(server, RITA, RITA_PASSWORD, RITA_EMAIL)
    register(server, SAM, SAM_PASSWORD, SAM_EMAIL)
    return Resets(server)


def open_link(server, token):
    return Client(server).get("/password/reset?token=" + urllib.parse.quote(token, safe=""))


def use_token(server, token, password=NEW):
    c = Client(server)
    fields = {"csrf_token": c.csrf("/login"), "token": token, "new_password": password, "confirm_password": password}
    return c.post_form("/password/reset", fields)


def assert_refused(r, reason, what):
    assert r.status == 400, f"{what}: {r.status} {r.text[:300]}"
    assert reason in r.text, f"{what}: expected {reason!r} in {r.text[:600]}"
    assert "Send me a new link" in r.text


def test_reset_link_works_once(server, resets):
    token = resets.token(RITA_EMAIL)
    assert open_link(server, token).status == 200
    r = use_token(server, token)
    assert r.status == 303 and r.location == "/login?notice=password-set", (r.status, r.location)
    logged_in(server, RITA, NEW)
    assert_refused(use_token(server, token, "reset-second-use-pw-1"), USED, "second use")
    assert_refused(open_link(server, token), USED, "opening a used link")
    logged_in(server, RITA, NEW)
    r = use_token(server, resets.token(RITA_EMAIL), RITA_PASSWORD)
    assert r.status == 303


def tampered(token, how):
    header, payload, signature = token.split(".")

    def flip(segment):
        i = len(segment) // 2
        return segment[:i] + ("A" if segment[i] != "A" else "B") + segment[i + 1 :]

    claims = json.loads(unb64(payload))

    def with_claims(**changes):
        return f"{header}.{b64(json.dumps({**claims, **changes}).encode())}.{signature}"

    return {
        "header-char": f"{flip(header)}.{payload}.{signature}",
        "payload-char": f"{header}.{flip(payload)}.{signature}",
        "signature-char": f"{header}.{payload}.{flip(signature)}",
        "signature-truncated": f"{header}.{payload}.{signature[:-4]}",
        "signature-dropped": f"{header}.{payload}.",
        "signature-missing": f"{header}.{payload}",
        "payload-exp-extended": with_claims(exp=claims["exp"] + 86400),
        "payload-purpose-invite": with_claims(purpose="invite"),
        "alg-none": forge(claims, key=None, header={"typ": "JWT", "alg": "none"}),
        "wrong-key": forge(claims, key="not-the-servers-key-0123456789abcdef"),
    }[how]


TAMPERINGS = [
    "header-char",
    "payload-char",
    "signature-char",
    "signature-truncated",
    "signature-dropped",
    "signature-missing",
    "payload-exp-extended",
    "payload-purpose-invite",
    "alg-none",
    "wrong-key",
]


@pytest.mark.parametrize("how", TAMPERINGS)
def test_tampered_token_is_refused(server, resets, how):
    token = resets.token(SAM_EMAIL)
    bad = tampered(token, how)
    assert bad != token
    assert_refused(open_link(server, bad), NOT_VALID, f"GET {how}")
    assert_refused(use_token(server, bad), NOT_VALID, f"POST {how}")
    logged_in(server, SAM, SAM_PASSWORD)
    assert open_link(server, token).status == 200, "the genuine token stopped working"


def test_token_changes_only_its_own_users_password(server, resets):
    rita, sam = resets.token(RITA_EMAIL), resets.token(SAM_EMAIL)
    sam_id = claims_of(sam)["sub"]
    assert claims_of(rita)["sub"] != sam_id
    h, p, s = rita.split(".")
    spliced = {
        "rita's signature on sam's claims": f"{h}.{sam.split('.')[1]}.{s}",
        "rita's token with sam's id": f"{h}.{b64(json.dumps({**claims_of(rita), 'sub': sam_id}).encode())}.{s}",
    }
    for what, bad in spliced.items():
        assert_refused(use_token(server, bad), NOT_VALID, what)
    assert use_token(server, rita).status == 303
    logged_in(server, RITA, NEW)
    logged_in(server, SAM, SAM_PASSWORD)
    assert use_token(server, resets.token(RITA_EMAIL), RITA_PASSWORD).status == 303


def test_tokens_signed_with_the_real_key_but_wrong_claims(server, resets):
    claims = claims_of(resets.token(SAM_EMAIL))
    now = int(time.time())
    cases = {
        "expired": ({**claims, "iat": now - 3600, "exp": now - 1}, EXPIRED),
        "stale password version": ({**claims, "pwv": claims["pwv"] - 1}, USED),
        "future password version": ({**claims, "pwv": claims["pwv"] + 1}, USED),
        "no such user": ({**claims, "sub": 999_999}, NOT_VALID),
        "negative user id": ({**claims, "sub": -1}, NOT_VALID),
        "user id as text": ({**claims, "sub": str(claims["sub"])}, NOT_VALID),
        "unknown purpose": ({**claims, "purpose": "session"}, NOT_VALID),
        "missing exp": ({k: v for k, v in claims.items() if k != "exp"}, NOT_VALID),
    }
    for what, (forged_claims, reason) in cases.items():
        token = forge(forged_claims)
        assert_refused(open_link(server, token), reason, f"GET {what}")
        assert_refused(use_token(server, token), reason, f"POST {what}")
    for alg in ["HS384", "HS512"]:
        digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signing_input = f"{b64(json.dumps({'typ': 'JWT', 'alg': alg}).encode())}.{b64(json.dumps(claims).encode())}"
        token = f"{signing_input}.{b64(hmac.new(SECRET.encode(), signing_input.encode(), digest).digest())}"
        assert_refused(open_link(server, token), NOT_VALID, alg)
    logged_in(server, SAM, SAM_PASSWORD)


def fixed_token_corpus(genuine, listener_url):
    header_only = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = claims_of(genuine)
    return [
        "",
        " ",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b.c.d.e",
        "A" * 100_000,
        ".".join(["A" * 30_000] * 3),
        "тест.токен.ü",
        "\x00",
        "%00",
        "\r\nX-Injected: 1",
        "'; DROP TABLE users; --",
        base64.b64encode(os.urandom(96)).decode(),
        header_only,
        header_only + ".",
        header_only + "..",
        forge(claims, key=None, header={"alg": "none"}),
        forge(claims, key=None, header={"alg": "None", "typ": "JWT"}),
        forge(claims, key="wrong-key-wrong-key-wrong-key-wrong-key"),
        # As if `kid` chose the key file: signed with what /dev/null holds.
        forge(claims, key="", header={"alg": "HS256", "kid": "../../../../../dev/null"}),
        forge(claims, key="not-the-key", header={"alg": "HS256", "jku": listener_url, "x5u": listener_url}),
        forge(claims, key=None, header={"alg": "RS256", "jwk": {"kty": "oct", "k": b64(b"k")}}),
        json.dumps({"alg": "none"}),
        genuine + genuine,
        genuine.replace(".", ""),
        genuine + ".extra",
    ]


def mutate(rng, token):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/%&?# \x00éü€"
    kind = rng.randrange(7)
    if kind == 0 and token:
        i = rng.randrange(len(token))
        return token[:i] + rng.choice(alphabet) + token[i + 1 :]
    if kind == 1:
        i = rng.randrange(len(token) + 1)
        return token[:i] + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))) + token[i:]
    if kind == 2 and token:
        i = rng.randrange(len(token))
        return token[:i] + token[i + rng.randint(1, 40) :]
    if kind == 3:
        parts = token.split(".")
        rng.shuffle(parts)
        return ".".join(parts)
    if kind == 4:
        parts = token.split(".")
        junk = {"alg": rng.choice(["none", "HS256", "RS256", "", None]), "sub": rng.randint(-5, 5)}
        parts[rng.randrange(len(parts))] = b64(json.dumps(junk).encode())
        return ".".join(parts)
    if kind == 5:
        return b64(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    return ".".join(b64(bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))) for _ in range(rng.randint(1, 5)))


def assert_clean_refusal(r, what):
    assert r.status != 500, f"{what}: 500 {r.text[:300]}"
    assert r.status in (400, 413, 414, 431), f"{what}: {r.status} {r.text[:300]}"
    if r.status == 400:
        assert r.headers.get("Content-Type", "").startswith("text/html")
        assert any(reason in r.text for reason in (NOT_VALID, USED, EXPIRED)), f"{what}: {r.text[:600]}"


def test_token_fuzz_never_500(server, resets):
    seed = int(os.environ.get("SECURITY_FUZZ_SEED", random.randrange(2**32)))
    print(f"token fuzz seed: {seed} (SECURITY_FUZZ_SEED={seed} to repeat)")
    rng = random.Random(seed)
    genuine = resets.token(SAM_EMAIL)
    with Listener() as listener:
        corpus = fixed_token_corpus(genuine, f"http://127.0.0.1:{listener.port}/jwks.json")
        corpus += [mutate(rng, genuine) for _ in range(FUZZ_CASES)]
        c = Client(server)
        csrf = c.csrf("/login")
        deadline = time.monotonic() + FUZZ_SECONDS
        done = 0
        for i, token in enumerate(corpus):
            if token == genuine:
                continue
            if time.monotonic() > deadline:
                break
            what = f"case {i} (seed {seed}) token {token[:80]!r}"
            assert_clean_refusal(open_link(server, token), "GET " + what)
            fields = {"csrf_token": csrf, "token": token, "new_password": NEW, "confirm_password": NEW}
            assert_clean_refusal(c.post_form("/password/reset", fields), "POST " + what)
            done += 1
        assert listener.hits == 0, "a token header made the server connect to its jku/x5u URL"
    print(f"token fuzz: {done} tokens, each by GET and POST")
    assert done >= min(len(corpus) - 1, 50), f"only {done} cases ran in {FUZZ_SECONDS}s"
    # Neither the missing parameter nor the missing field is an error of ours.
    assert_clean_refusal(Client(server).get("/password/reset"), "GET without token")
    fields = {"csrf_token": csrf, "new_password": NEW, "confirm_password": NEW}
    assert_clean_refusal(c.post_form("/password/reset", fields), "POST without token")
    logged_in(server, SAM, SAM_PASSWORD)
    server.assert_healthy()

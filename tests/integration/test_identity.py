"""Identity and access control against a running gateway: API keys, users with passwords and TOTP,
PASETO v4.public tokens, RBAC with default deny, live revocation, the admin API and secrets hygiene.

Independent peers from Debian: TOTP codes come from pyotp, tokens are verified with PyNaCl (Ed25519
over PASETO's pre-authentication encoding) and forged with it, key checksums are computed with zlib.

One state directory and one gateway serve the whole module. Every secret the scenario creates is put
in SECRETS and every error body the gateway sends in ERROR_BODIES; the last test proves none of the
secrets reached the logs, the audit file, the database files or an error body.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_identity.py
WARDEN_BIN selects the binary (default: build/warden).
"""
import base64
import hashlib
import json
import os
import re
import sqlite3
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import nacl.signing
import pyotp
import pytest

from conftest import UPSTREAM_KEY, WARDEN, Gateway, Sim, chat_body

KEY_RE = re.compile(r"^wdk_([0-9A-Za-z]{12})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})$")
RECOVERY_RE = re.compile(r"^[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}$")
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MODELS = [("med-large", "llama-3.1-70b"), ("scheduler", "llama-3.1-8b"), ("embed-small", "sim-small")]
ROLES = """\
roles:
  clinician: { models: [med-large], endpoints: [chat, models], require_mfa: true }
  front-desk: { models: [scheduler], endpoints: [chat, models] }
  ops: { admin: true, require_mfa: true }
"""
REVOKE_DEADLINE = 1.0  # seconds: issue 3 requires revocation to take effect within one second

SECRETS = [("upstream api key", UPSTREAM_KEY)]  # (label, str or bytes): every secret of the scenario
ERROR_BODIES = []  # every 4xx/5xx body the gateway sent during the module
CLI_STDERR = []    # stderr of every CLI run (stdout legitimately carries keys, tokens, enrolments)


def secret(label, value):
    SECRETS.append((label, value))
    return value


# ---- helpers ----------------------------------------------------------------------------------------------

def cli(*args, input=None, code=0):
    env = dict(os.environ, WARDEN_TEST_UPSTREAM_KEY=UPSTREAM_KEY)  # -c loads the gateway's config
    r = subprocess.run([WARDEN, *map(str, args)], input=input, capture_output=True, text=True, timeout=60, env=env)
    CLI_STDERR.append(r.stderr)
    assert "runtime error:" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    assert r.returncode == code, f"warden {args} exited {r.returncode}, wanted {code}: {r.stdout} {r.stderr}"
    return r


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def pae(*pieces):
    """PASETO pre-authentication encoding: LE64(count) then LE64(len) || piece for each piece."""
    out = struct.pack("<Q", len(pieces))
    for p in pieces:
        out += struct.pack("<Q", len(p)) + p
    return out


def paserk_pid(pk):
    """PASERK k4.pid of an Ed25519 public key: BLAKE2b-264 over "k4.pid." || the k4.public PASERK."""
    h = b"k4.pid."
    d = hashlib.blake2b(h + b"k4.public." + b64url(pk).encode(), digest_size=33).digest()
    return h.decode() + b64url(d)


def sign_token(sk, claims, footer):
    m = json.dumps(claims, separators=(",", ":")).encode()
    f = json.dumps(footer, separators=(",", ":")).encode()
    sig = sk.sign(pae(b"v4.public.", m, f, b"")).signature
    return "v4.public." + b64url(m + sig) + "." + b64url(f)


def key_checksum(prefix_id_secret):
    crc = zlib.crc32(prefix_id_secret.encode()) & 0xFFFFFFFF
    out = ""
    for _ in range(6):
        crc, r = divmod(crc, 62)
        out = B62[r] + out
    return out


def iso(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def expect_error(r, status, code):
    """An OpenAI-shaped error with this status and code; returns the error object."""
    assert r.status_code == status, f"wanted {status} {code}, got {r.status_code}: {r.text}"
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert e["code"] == code, e
    assert isinstance(e["message"], str) and e["message"], e
    want_type = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(status)
    if want_type:
        assert e["type"] == want_type, e
    return e


def fresh_wrong_code(totp):
    """Six digits that are not valid for the previous, current or next time step."""
    now = time.time()
    valid = {totp.at(now + d) for d in (-60, -30, 0, 30, 60)}
    for c in ("000000", "123456", "999999", "424242", "101010"):
        if c not in valid:
            return c
    raise AssertionError("unreachable")


class Env:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.state = self.tmp / "state"
        cli("init", "--state-dir", self.state)
        self.sim = Sim(self.tmp)
        extra = (f"state_dir: {self.state}\n"
                 "auth: { mode: required, refresh_ms: 100ms, max_failures: 3, lockout_ms: 2s }\n" + ROLES)
        self.gw = Gateway(self.tmp, self.sim.port, models=MODELS, extra=extra)
        self.cfg = self.gw.config_path
        self.http = httpx.Client(timeout=15)
        self.pk = (self.state / "signing.key").read_bytes()[32:64]

    # -- HTTP
    def call(self, method, path, token=None, body=None, headers=None, admin=False):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        base = self.gw.admin_url if admin else self.gw.url
        r = self.http.request(method, base + path, json=body, headers=h)
        if r.status_code >= 400:
            ERROR_BODIES.append(r.text)
        return r

    def chat(self, token, model, **kw):
        return self.call("POST", "/v1/chat/completions", token, chat_body("hi", model=model), **kw)

    def login(self, username, password, **extra):
        return self.call("POST", "/v1/auth/token", body={"username": username, "password": password, **extra})

    def token(self, username, password, **extra):
        r = self.login(username, password, **extra)
        assert r.status_code == 200, r.text
        assert r.headers.get("cache-control") == "no-store"
        return secret(f"token of {username}", r.json()["access_token"]), r.json()

    def admin(self, method, path, token=None, body=None):
        return self.call(method, "/admin/v1" + path, token, body, admin=True)

    # -- CLI
    def key(self, name, *roles, extra=()):
        args = ["key", "create", "--name", name, "-c", self.cfg, "--quiet"]
        for r in roles:
            args += ["--role", r]
        key = cli(*args, *extra).stdout.strip()
        m = KEY_RE.match(key)
        assert m, key
        secret(f"key {name}", key)
        secret(f"key {name} secret part", m.group(2))
        # made by another process: the server picks it up at its next refresh (auth.refresh_ms)
        assert self.wait_until(lambda: self.call("GET", "/v1/models", key).status_code != 401), \
            f"key {name} not accepted within {REVOKE_DEADLINE}s of its creation"
        return key, m.group(1)

    def user(self, name, role, mfa=False):
        pw = secret(f"password of {name}", f"pw-{name}-{b64url(os.urandom(12))}")
        cli("user", "add", name, "--role", role, "-c", self.cfg, input=pw + "\n")
        time.sleep(0.3)  # the server's identity snapshot learns of the user at its next refresh (100 ms)
        if not mfa:
            return pw, None, []
        out = cli("user", "mfa", "enroll", name, "--no-qr", "-c", self.cfg).stdout
        uris = re.findall(r"otpauth://\S+", out)
        assert len(uris) == 1, out
        totp = pyotp.parse_uri(uris[0])
        assert parse_qs(urlparse(uris[0]).query)["secret"] == [totp.secret]
        raw = base64.b32decode(totp.secret + "=" * (-len(totp.secret) % 8))
        secret(f"totp secret of {name}", totp.secret)
        secret(f"totp secret of {name} (hex)", raw.hex())
        secret(f"totp secret of {name} (raw)", raw)
        codes = [l.strip() for l in out.splitlines() if RECOVERY_RE.match(l.strip())]
        assert len(codes) == 10, out
        for c in codes:
            secret(f"recovery code of {name}", c)
        return pw, totp, codes

    def wait_until(self, pred, limit=REVOKE_DEADLINE, step=0.05):
        """Polls pred every `step` s; returns the seconds it took to hold, or None after `limit`."""
        t0 = time.monotonic()
        while True:
            if pred():
                return time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                return None
            time.sleep(step)

    def events(self, wait=0.5):
        return self.gw.events(wait)

    def request_event(self, r, wait=0.5):
        rid = r.headers["x-warden-request-id"]
        deadline = time.time() + 3
        while time.time() < deadline:
            for e in self.events(wait):
                if e.get("type") == "request" and e.get("request_id") == rid:
                    return e
        raise AssertionError(f"no audit event for request {rid}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("identity"))
    yield e
    e.http.close()
    e.gw.stop()
    e.sim.stop()
    err = e.gw.stderr()
    assert "AddressSanitizer" not in err and "runtime error:" not in err, err[-4000:]


@pytest.fixture(scope="module")
def front_key(env):
    return env.key("front-app", "front-desk")


@pytest.fixture(scope="module")
def fred(env):
    """A front-desk user with a password only."""
    return env.user("fred", "front-desk")[0]


@pytest.fixture(scope="module")
def carol(env):
    """A clinician with TOTP: (password, pyotp.TOTP, recovery codes, state dict for her MFA token)."""
    pw, totp, codes = env.user("carol", "clinician", mfa=True)
    return pw, totp, codes, {}


@pytest.fixture(scope="module")
def ops_token(env):
    """An MFA token of an ops (admin) user."""
    pw, totp, _ = env.user("olga", "ops", mfa=True)
    tok, body = env.token("olga", pw, totp=totp.now())
    assert body["mfa"] is True
    return tok


def rejected(env, token, model="scheduler"):
    return lambda: env.chat(token, model).status_code == 401


# ---- API keys and RBAC ------------------------------------------------------------------------------------

def test_missing_authorization_is_401_with_challenge(env):
    r = env.chat(None, "scheduler")
    e = expect_error(r, 401, "missing_api_key")
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    assert "Authorization" in e["message"]
    # the listing needs a credential too
    expect_error(env.call("GET", "/v1/models"), 401, "missing_api_key")


def test_bad_keys_are_401_invalid_api_key(env, front_key):
    key, kid = front_key
    prefix = f"wdk_{kid}_"
    other_secret = "".join(B62[(B62.index(c) + 7) % 62] for c in key[len(prefix):len(prefix) + 43])
    wrong = prefix + other_secret + key_checksum(prefix + other_secret)  # real id, valid checksum, wrong secret
    assert KEY_RE.match(wrong) and wrong != key
    last = key[-1]
    flipped = key[:-1] + ("A" if last != "A" else "B")  # one checksum character changed
    unknown_id = "wdk_" + "Z" * 12 + "_" + other_secret
    unknown_id += key_checksum(unknown_id)
    for bad in (wrong, flipped, unknown_id, "wdk_short", "sk-proj-0123456789abcdef", key[:-1], key + "x",
                "v4.public.not-a-token"):
        r = env.chat(bad, "scheduler")
        code = "invalid_token" if bad.startswith("v4.") else "invalid_api_key"
        e = expect_error(r, 401, code)
        assert r.headers["www-authenticate"].lower().startswith("bearer")
        assert other_secret not in e["message"] and key[len(prefix):] not in e["message"]
    # the same credential under another scheme is not accepted either
    r = env.call("POST", "/v1/chat/completions", body=chat_body(model="scheduler"),
                 headers={"Authorization": f"Basic {key}"})
    expect_error(r, 401, "invalid_api_key")
    # and the real key still works
    assert env.chat(key, "scheduler").status_code == 200


def test_front_desk_key_rbac(env, front_key):
    key, kid = front_key
    r = env.chat(key, "scheduler")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]

    denied = env.chat(key, "med-large")
    e = expect_error(denied, 403, "model_not_permitted")
    assert "front-desk" in e["message"] and "med-large" in e["message"]
    ev = env.request_event(denied)
    assert ev["code"] == "model_not_permitted" and ev["rule"] == "default-deny"
    assert ev["principal"] == f"key:{kid}" and ev["roles"] == "front-desk"

    # a model that does not exist is indistinguishable from one that is not permitted
    unknown = env.chat(key, "no-such-model")
    e2 = expect_error(unknown, 403, "model_not_permitted")
    assert e2["message"].replace("no-such-model", "M") == e["message"].replace("med-large", "M")
    assert "exist" not in e2["message"]

    r = env.call("POST", "/v1/completions", key, {"model": "scheduler", "prompt": "hi"})
    e = expect_error(r, 403, "endpoint_not_permitted")
    assert "front-desk" in e["message"] and "completions" in e["message"]
    r = env.call("POST", "/v1/embeddings", key, {"model": "embed-small", "input": "hi"})
    expect_error(r, 403, "endpoint_not_permitted")

    r = env.call("GET", "/v1/models", key)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == ["scheduler"]


def test_clinician_key_needs_mfa(env):
    key, _ = env.key("clinic-app", "clinician")
    r = env.chat(key, "med-large")
    e = expect_error(r, 403, "mfa_required")
    assert "clinician" in e["message"]
    assert env.request_event(r)["rule"] == "role:clinician:require_mfa"
    # the listing is an endpoint of the same role, so it needs MFA as well
    e = expect_error(env.call("GET", "/v1/models", key), 403, "mfa_required")
    assert "clinician" in e["message"]


def test_key_revocation_is_live_within_one_second(env):
    key, kid = env.key("to-revoke", "front-desk")
    assert env.wait_until(lambda: env.chat(key, "scheduler").status_code == 200) is not None
    t0 = time.monotonic()
    cli("key", "revoke", kid, "-c", env.cfg)
    took = env.wait_until(rejected(env, key))
    elapsed = time.monotonic() - t0
    assert took is not None and elapsed < REVOKE_DEADLINE, f"revoked key still accepted after {elapsed:.2f}s"
    e = expect_error(env.chat(key, "scheduler"), 401, "invalid_api_key")
    assert kid in e["message"] and "revoked" in e["message"]


def test_key_rotation_grace(env):
    old, kid = env.key("rotating", "front-desk")
    assert env.wait_until(lambda: env.chat(old, "scheduler").status_code == 200) is not None
    new = cli("key", "rotate", kid, "--grace", "1h", "--quiet", "-c", env.cfg).stdout.strip()
    m = KEY_RE.match(new)
    assert m and m.group(1) != kid
    secret("rotated key", new)
    secret("rotated key secret part", m.group(2))
    assert env.wait_until(lambda: env.chat(new, "scheduler").status_code == 200) is not None
    time.sleep(0.3)  # several refreshes later the old key is still inside its grace period
    assert env.chat(old, "scheduler").status_code == 200
    assert env.chat(new, "med-large").status_code == 403  # same roles and scope as the old key
    # grace 0 ends the new key's predecessor at once: rotate again and the middle key dies
    newer = cli("key", "rotate", m.group(1), "--grace", "0", "--quiet", "-c", env.cfg).stdout.strip()
    secret("rotated key 2", newer)
    assert env.wait_until(rejected(env, new)) is not None
    expect_error(env.chat(new, "scheduler"), 401, "expired_api_key")
    assert env.chat(newer, "scheduler").status_code == 200


def key_json(env, kid):
    return json.loads(cli("key", "show", kid, "--json", "--state-dir", env.state).stdout)


def test_last_used_is_written_in_batches(env):
    """A request with a key sets its last-used time in memory; the database gets it at the next batched
    flush (every ~5 s), not per request, and `warden key show`/`key list` then show it."""
    key, kid = env.key("used-later", "front-desk")
    assert key_json(env, kid)["last_used_at"] is None
    t_a = time.time()
    assert env.chat(key, "scheduler").status_code == 200
    took = env.wait_until(lambda: key_json(env, kid)["last_used_at"] is not None, limit=8, step=0.1)
    assert took is not None, "last-used time never written"
    first = iso(key_json(env, kid)["last_used_at"])
    assert int(t_a) <= first <= time.time() + 1
    listed = json.loads(cli("key", "list", "--json", "--state-dir", env.state).stdout)
    assert {k["id"]: k for k in listed}[kid]["last_used_at"] == key_json(env, kid)["last_used_at"]
    assert "never" not in cli("key", "show", kid, "--state-dir", env.state).stdout.split("last used:")[1].splitlines()[0]
    # A flush just happened, so the next one is ~5 s away: a request in a later second is not written
    # at once (no per-request write) ...
    time.sleep(max(0.0, first + 1.05 - time.time()))
    t_b = time.time()
    for _ in range(5):
        assert env.chat(key, "scheduler").status_code == 200
    assert iso(key_json(env, kid)["last_used_at"]) == first, "last-used time written per request"
    # ... but by the following flush
    took = env.wait_until(lambda: iso(key_json(env, kid)["last_used_at"]) > first, limit=8, step=0.1)
    assert took is not None, "the second use was never written"
    assert took > 1.0, f"written {took:.2f}s after the request: not batched"
    assert int(t_b) <= iso(key_json(env, kid)["last_used_at"]) <= time.time() + 1


def test_short_ttl_key_expires_at_runtime(env):
    key, kid = env.key("short-lived", "front-desk", extra=("--ttl", "4s"))
    expires = iso(key_json(env, kid)["expires_at"])
    assert env.chat(key, "scheduler").status_code == 200
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    e = expect_error(env.chat(key, "scheduler"), 401, "expired_api_key")  # the same server, no restart
    assert kid in e["message"] and "expired" in e["message"]


def test_key_ip_scope_end_to_end(env):
    far, far_id = env.key("far-away", "front-desk", extra=("--ip", "10.0.0.0/8"))
    r = env.chat(far, "scheduler")
    e = expect_error(r, 403, "ip_not_permitted")
    assert "127.0.0.1" in e["message"]
    assert env.request_event(r)["rule"] == "key-scope:ips"
    near, _ = env.key("near-by", "front-desk", extra=("--ip", "10.0.0.0/8", "--ip", "127.0.0.0/8"))
    assert env.chat(near, "scheduler").status_code == 200
    # a token minted from the key keeps the key's address ranges
    tok = secret("token of far-away key", cli("token", "issue", "--key-id", far_id, "--ttl", "10m", "--quiet",
                                              "-c", env.cfg).stdout.strip())
    expect_error(env.chat(tok, "scheduler"), 403, "ip_not_permitted")


def test_key_token_dies_when_rotation_grace_ends(env):
    key, kid = env.key("rotating-with-token", "front-desk")
    tok = secret("token of rotating key", cli("token", "issue", "--key-id", kid, "--ttl", "1h", "--quiet",
                                              "-c", env.cfg).stdout.strip())
    assert env.chat(tok, "scheduler").status_code == 200
    new = secret("rotated-with-token key", cli("key", "rotate", kid, "--grace", "3s", "--quiet",
                                               "-c", env.cfg).stdout.strip())
    grace_until = iso(key_json(env, kid)["grace_until"])
    assert env.wait_until(lambda: env.chat(new, "scheduler").status_code == 200) is not None
    assert env.chat(tok, "scheduler").status_code == 200  # within the grace period
    assert env.chat(key, "scheduler").status_code == 200
    time.sleep(max(0.0, grace_until - time.time()) + 0.2)
    e = expect_error(env.chat(tok, "scheduler"), 401, "invalid_token")
    assert "no longer valid" in e["message"]
    expect_error(env.chat(key, "scheduler"), 401, "expired_api_key")
    assert env.chat(new, "scheduler").status_code == 200


def test_token_of_a_key_unknown_to_the_snapshot_is_refused(env):
    """A gateway that has not yet refreshed its snapshot (refresh_ms 60s here) cannot apply the scope of
    a key created after it; a token minted from that key is refused rather than let past the key's
    address ranges, and a token of a key it knows is scoped as usual."""
    far, far_id = env.key("known-far", "front-desk", extra=("--ip", "10.0.0.0/8"))
    near, near_id = env.key("known-near", "front-desk", extra=("--ip", "127.0.0.0/8"))
    extra = (f"state_dir: {env.state}\n"
             "auth: { mode: required, refresh_ms: 60s }\n" + ROLES)
    slow = Gateway(env.tmp, env.sim.port, models=MODELS, extra=extra)
    try:
        def chat(tok):
            r = env.http.post(slow.url + "/v1/chat/completions", json=chat_body("hi", model="scheduler"),
                              headers={"Authorization": f"Bearer {tok}"})
            if r.status_code >= 400:
                ERROR_BODIES.append(r.text)
            return r

        def issue(kid):
            out = cli("token", "issue", "--key-id", kid, "--ttl", "10m", "--quiet", "-c", env.cfg).stdout.strip()
            return secret(f"token of key {kid}", out)

        assert chat(issue(near_id)).status_code == 200
        expect_error(chat(issue(far_id)), 403, "ip_not_permitted")
        # created after the slow gateway loaded its snapshot
        _, new_id = env.key("new-far", "front-desk", extra=("--ip", "10.0.0.0/8"))
        tok = issue(new_id)
        e = expect_error(chat(tok), 401, "invalid_token")
        assert "not known" in e["message"]
        # the gateway that has refreshed applies the key's scope
        expect_error(env.chat(tok, "scheduler"), 403, "ip_not_permitted")
    finally:
        slow.stop()


# ---- login, TOTP, lockout ---------------------------------------------------------------------------------

def test_password_only_login(env, fred):
    tok, body = env.token("fred", fred)
    assert body["mfa"] is False and body["token_type"] == "Bearer"
    assert tok.startswith("v4.public.")
    assert env.chat(tok, "scheduler").status_code == 200
    expect_error(env.chat(tok, "med-large"), 403, "model_not_permitted")
    r = env.call("GET", "/v1/models", tok)
    assert [m["id"] for m in r.json()["data"]] == ["scheduler"]
    expect_error(env.login("fred", fred + "x"), 401, "invalid_credentials")
    e = expect_error(env.login("nobody", fred), 401, "invalid_credentials")
    assert "nobody" not in e["message"]  # the same answer for unknown users
    expect_error(env.call("POST", "/v1/auth/token", body={"username": "fred"}), 400, "invalid_request")


def test_mfa_login_with_pyotp(env, carol):
    pw, totp, codes, st = carol
    expect_error(env.login("carol", pw), 401, "totp_required")
    code = totp.now()
    tok, body = env.token("carol", pw, totp=code, expires_in=600)
    assert body["mfa"] is True and body["expires_in"] == 600
    st["token"] = tok
    r = env.chat(tok, "med-large")
    assert r.status_code == 200, r.text
    ev = env.request_event(r)
    assert ev["principal"] == "user:carol" and ev["mfa"] is True and ev["roles"] == "clinician"
    r = env.call("GET", "/v1/models", tok)
    assert [m["id"] for m in r.json()["data"]] == ["med-large"]
    expect_error(env.chat(tok, "scheduler"), 403, "model_not_permitted")

    # the same code again is a replay
    expect_error(env.login("carol", pw, totp=code), 401, "totp_replayed")
    expect_error(env.login("carol", pw, totp=fresh_wrong_code(totp)), 401, "invalid_totp")


def test_recovery_code_works_once(env, carol):
    pw, _, codes, _ = carol
    tok, body = env.token("carol", pw, recovery_code=codes[3])
    assert body["mfa"] is True
    assert env.chat(tok, "med-large").status_code == 200
    expect_error(env.login("carol", pw, recovery_code=codes[3]), 401, "invalid_recovery_code")
    expect_error(env.login("carol", pw, recovery_code="aaaa-bbbb-cccc"), 401, "invalid_recovery_code")
    # another unused code still works, typed as people do (case, no dashes: recovery.h canonicalises)
    typed = codes[4].upper().replace("-", "")
    tok2, _ = env.token("carol", pw, recovery_code=typed)
    assert env.chat(tok2, "med-large").status_code == 200
    expect_error(env.login("carol", pw, recovery_code=codes[4]), 401, "invalid_recovery_code")


def test_wrong_codes_lock_the_account(env):
    pw, totp, _ = env.user("lara", "clinician", mfa=True)
    for i in range(3):
        expect_error(env.login("lara", pw, totp=fresh_wrong_code(totp)), 401, "invalid_totp")
    t_locked = time.monotonic()
    r = env.login("lara", pw, totp=totp.now())
    e = expect_error(r, 429, "account_locked")
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 2, retry
    assert "locked" in e["message"]
    # a wrong password while locked gets the same answer (no oracle) and an unknown field changes nothing
    r2 = env.login("lara", "wrong-password-123", totp=totp.now())
    expect_error(r2, 429, "account_locked")
    assert "retry-after" in r2.headers
    # the lock ends by itself
    time.sleep(max(0.0, retry + 0.2 - (time.monotonic() - t_locked)))
    tok, body = env.token("lara", pw, totp=totp.now())
    assert body["mfa"] is True
    assert env.chat(tok, "med-large").status_code == 200


def db_user(env, name):
    """(failed_count, locked_until) straight from warden.db (WAL mode: a reader beside the gateway is fine)."""
    con = sqlite3.connect(f"file:{env.state / 'warden.db'}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT failed_count, locked_until FROM users WHERE name = ?", (name,)).fetchone()
    finally:
        con.close()


def parallel_logins(env, name, password, n):
    """n logins released together from n threads (each its own connection); returns the responses."""
    go = threading.Barrier(n)

    def one(_):
        with httpx.Client(timeout=30) as c:
            go.wait()
            r = c.post(env.gw.url + "/v1/auth/token", json={"username": name, "password": password})
        if r.status_code >= 400:
            ERROR_BODIES.append(r.text)
        return r

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def test_parallel_wrong_passwords_all_count(env):
    """The argon2id checks run in parallel on the thread pool; every failure must still be counted, so
    max_failures wrong guesses sent at once lock the account (the count is incremented in the database,
    not written back from a value read before the slow check)."""
    pw, _, _ = env.user("petra", "front-desk")
    # one fewer than max_failures (3): counted, not locked
    rs = parallel_logins(env, "petra", "wrong-password-1", 2)
    assert [r.status_code for r in rs] == [401, 401], [r.text for r in rs]
    assert db_user(env, "petra") == (2, 0)
    # a success resets the count
    env.token("petra", pw)
    assert db_user(env, "petra") == (0, 0)
    # max_failures + 2 at once: every guess answered 401 is counted, and the account locks
    n = 5
    t0 = time.time()
    rs = parallel_logins(env, "petra", "wrong-password-2", n)
    codes = [r.json()["error"]["code"] for r in rs]
    # a guess that reads the user after the lock is in place is refused before any check and not counted
    assert set(codes) <= {"invalid_credentials", "account_locked"}, codes
    wrong = codes.count("invalid_credentials")
    assert wrong >= 3, codes
    failed, until = db_user(env, "petra")
    assert failed == wrong, f"{wrong} wrong guesses answered 401 but {failed} counted"
    # the lock grows from 2 s at the third failure, doubling with each further one
    assert 2 << (wrong - 3) <= until - int(t0) <= (2 << (wrong - 3)) + 4, (until, t0, wrong)
    r = env.login("petra", pw)
    expect_error(r, 429, "account_locked")
    assert int(r.headers["retry-after"]) >= 1


def test_lockout_backoff_grows(env):
    """After the first lock ends, the next failure locks again for twice as long (lockout_ms 2s)."""
    pw, _, _ = env.user("bruno", "front-desk")
    for _ in range(2):
        expect_error(env.login("bruno", "wrong-password-3"), 401, "invalid_credentials")
    t1 = int(time.time())
    expect_error(env.login("bruno", "wrong-password-3"), 401, "invalid_credentials")  # the third: locks
    _, until1 = db_user(env, "bruno")
    r = env.login("bruno", pw)
    expect_error(r, 429, "account_locked")
    assert 1 <= int(r.headers["retry-after"]) <= 2
    time.sleep(max(0.0, until1 - time.time()) + 0.1)
    t2 = int(time.time())
    expect_error(env.login("bruno", "wrong-password-3"), 401, "invalid_credentials")  # the fourth
    _, until2 = db_user(env, "bruno")
    r = env.login("bruno", pw)
    expect_error(r, 429, "account_locked")
    assert int(r.headers["retry-after"]) >= 2
    first, second = until1 - t1, until2 - t2  # each within a second or two of the lock it records
    assert 2 <= first <= 3 and 4 <= second <= 5, (first, second)
    assert second > first
    assert db_user(env, "bruno")[0] == 4


# ---- tokens ---------------------------------------------------------------------------------------------

def test_token_verifies_with_pynacl(env, carol):
    pw, totp, _, st = carol
    tok = st.get("token")
    if tok is None:  # run alone: mint one now
        tok, _ = env.token("carol", pw, totp=totp.now(), expires_in=600)
    assert tok.startswith("v4.public.")
    parts = tok.split(".")
    assert len(parts) == 4
    body, footer = b64url_decode(parts[2]), b64url_decode(parts[3])
    m, sig = body[:-64], body[-64:]
    nacl.signing.VerifyKey(env.pk).verify(pae(b"v4.public.", m, footer, b""), sig)
    f = json.loads(footer)
    assert f == {"kid": paserk_pid(env.pk)}
    c = json.loads(m)
    assert c["iss"] == "warden" and c["sub"] == "user:carol"
    assert c["roles"] == ["clinician"] and c["mfa"] is True
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", c["jti"])
    now = time.time()
    assert iso(c["exp"]) - iso(c["iat"]) == 600
    assert abs(iso(c["exp"]) - (now + 600)) < 30
    assert "models" not in c


def test_tampered_and_forged_tokens(env, fred):
    tok, _ = env.token("fred", fred)
    assert env.chat(tok, "scheduler").status_code == 200
    head, mid, foot = tok[:10], tok.split(".")[2], tok.split(".")[3]
    # flip one character inside the payload part (not the last, whose low bits may be padding)
    i = 20
    flipped = mid[:i] + ("A" if mid[i] != "A" else "B") + mid[i + 1:]
    expect_error(env.chat(head + flipped + "." + foot, "scheduler"), 401, "invalid_token")
    # a different footer breaks the signature too
    expect_error(env.chat(head + mid + "." + b64url(b'{"kid":"x"}'), "scheduler"), 401, "invalid_token")
    # a token signed by another Ed25519 key under warden's kid, with otherwise perfect claims
    claims = json.loads(b64url_decode(mid)[:-64])
    claims["roles"] = ["clinician"]
    claims["mfa"] = True
    forged = sign_token(nacl.signing.SigningKey.generate(), claims, {"kid": paserk_pid(env.pk)})
    expect_error(env.chat(forged, "med-large"), 401, "invalid_token")
    # ... and with the real claims, unchanged
    forged2 = sign_token(nacl.signing.SigningKey.generate(), json.loads(b64url_decode(mid)[:-64]),
                         {"kid": paserk_pid(env.pk)})
    expect_error(env.chat(forged2, "scheduler"), 401, "invalid_token")
    # v4.local and other purposes are not accepted as bearer tokens
    expect_error(env.chat("v4.local." + mid, "scheduler"), 401, "invalid_api_key")


def test_expired_token(env, fred):
    tok, body = env.token("fred", fred, expires_in=2)
    assert body["expires_in"] == 2
    assert env.chat(tok, "scheduler").status_code == 200  # verified and cached while valid
    time.sleep(3)
    e = expect_error(env.chat(tok, "scheduler"), 401, "expired_token")
    assert "expired" in e["message"]
    expect_error(env.login("fred", fred, expires_in=0), 400, "invalid_request")
    expect_error(env.login("fred", fred, expires_in=30 * 86400), 400, "invalid_request")


def test_revoked_token_within_one_second(env, fred):
    tok, _ = env.token("fred", fred)
    assert env.chat(tok, "scheduler").status_code == 200
    jti = json.loads(b64url_decode(tok.split(".")[2])[:-64])["jti"]
    t0 = time.monotonic()
    cli("token", "revoke", jti, "-c", env.cfg)
    assert env.wait_until(rejected(env, tok)) is not None
    assert time.monotonic() - t0 < REVOKE_DEADLINE
    e = expect_error(env.chat(tok, "scheduler"), 401, "invalid_token")
    assert "revoked" in e["message"]


def test_token_issued_from_key_is_scoped_and_dies_with_key(env):
    key, kid = env.key("dev-key", "front-desk")
    tok = cli("token", "issue", "--key-id", kid, "--ttl", "1h", "--models", "scheduler", "--quiet",
              "-c", env.cfg).stdout.strip()
    secret("token issued from key", tok)
    c = json.loads(b64url_decode(tok.split(".")[2])[:-64])
    assert c["sub"] == f"key:{kid}" and c["models"] == ["scheduler"] and c["mfa"] is False
    assert env.chat(tok, "scheduler").status_code == 200
    e = expect_error(env.chat(tok, "med-large"), 403, "model_not_permitted")
    assert "scoped" in e["message"]  # the token's own scope decided, before any role
    # a scope may narrow the key's roles, never widen them
    r = cli("token", "issue", "--key-id", kid, "--ttl", "10m", "--models", "embed-small", "--quiet",
            "-c", env.cfg, code=2)
    assert r.stdout == "" and "never widen" in r.stderr
    # the key itself is unaffected by its token's scope
    assert env.chat(key, "scheduler").status_code == 200
    # revoking the key kills its tokens
    t0 = time.monotonic()
    cli("key", "revoke", kid, "-c", env.cfg)
    assert env.wait_until(rejected(env, tok)) is not None
    assert time.monotonic() - t0 < REVOKE_DEADLINE
    expect_error(env.chat(tok, "scheduler"), 401, "invalid_token")


def test_user_tokens_die_when_user_disabled_by_cli(env):
    pw, _, _ = env.user("erin", "front-desk")
    tok, _ = env.token("erin", pw)
    assert env.chat(tok, "scheduler").status_code == 200
    t0 = time.monotonic()
    cli("user", "disable", "erin", "-c", env.cfg)
    assert env.wait_until(rejected(env, tok)) is not None
    assert time.monotonic() - t0 < REVOKE_DEADLINE
    e = expect_error(env.chat(tok, "scheduler"), 401, "invalid_token")
    assert "disabled" in e["message"]
    expect_error(env.login("erin", pw), 401, "invalid_credentials")


# ---- admin API --------------------------------------------------------------------------------------------

KEY_FIELDS = {"id", "name", "roles", "models", "ips", "limits", "created_at", "expires_at", "revoked_at", "grace_until",
              "last_used_at"}


def no_secret_in(text):
    for label, v in SECRETS:
        if isinstance(v, str):
            assert v not in text, f"{label} leaked"


def test_admin_whoami_and_lists(env, ops_token, front_key):
    r = env.admin("GET", "/whoami", ops_token)
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["principal"] == "user:olga" and w["roles"] == ["ops"] and w["mfa"] is True and w["admin"] is True

    r = env.admin("GET", "/keys", ops_token)
    assert r.status_code == 200, r.text
    keys = r.json()["keys"]
    assert front_key[1] in {k["id"] for k in keys}
    for k in keys:
        assert set(k) == KEY_FIELDS, k
    no_secret_in(r.text)
    assert not re.search(r"wdk_[0-9A-Za-z]{12}_", r.text)
    assert not re.search(r"[0-9a-f]{64}", r.text)  # no hex digests either

    r = env.admin("GET", "/users", ops_token)
    assert r.status_code == 200, r.text
    users = {u["name"]: u for u in r.json()["users"]}
    assert users["olga"]["mfa"] is True
    for u in users.values():
        assert set(u) == {"name", "roles", "mfa", "locked_until", "disabled_at"}, u
    no_secret_in(r.text)


def test_admin_key_create_and_revoke(env, ops_token):
    r = env.admin("POST", "/keys", ops_token, {"name": "api-made", "roles": ["front-desk"], "ttl": "1h"})
    assert r.status_code == 201, r.text
    body = r.json()
    m = KEY_RE.match(body["key"])
    assert m and m.group(1) == body["id"]
    key = secret("admin-created key", body["key"])
    secret("admin-created key secret part", m.group(2))
    assert abs(iso(body["expires_at"]) - (time.time() + 3600)) < 30
    r = env.chat(key, "scheduler")
    assert r.status_code == 200, r.text  # immediately, no refresh interval to wait for
    assert key not in env.admin("GET", "/keys", ops_token).text  # the key is returned once
    expect_error(env.chat(key, "med-large"), 403, "model_not_permitted")

    # bad input is refused and creates nothing
    expect_error(env.admin("POST", "/keys", ops_token, {"name": "x", "roles": ["superuser"]}), 400,
                 "invalid_request")
    expect_error(env.admin("POST", "/keys", ops_token, {"name": "x"}), 400, "invalid_request")

    t0 = time.monotonic()
    r = env.admin("POST", f"/keys/{body['id']}/revoke", ops_token)
    assert r.status_code == 200 and r.json()["revoked"] is True, r.text
    assert env.wait_until(rejected(env, key)) is not None
    assert time.monotonic() - t0 < REVOKE_DEADLINE
    expect_error(env.chat(key, "scheduler"), 401, "invalid_api_key")
    expect_error(env.admin("POST", f"/keys/{body['id']}/revoke", ops_token), 404, "not_found")


def test_admin_rotate_and_token_revoke_and_user_disable(env, ops_token):
    old, kid = env.key("api-rot", "front-desk")
    r = env.admin("POST", f"/keys/{kid}/rotate", ops_token, {"grace": "1h"})
    assert r.status_code == 201, r.text
    new = secret("admin-rotated key", r.json()["key"])
    assert r.json()["old_id"] == kid
    assert env.chat(new, "scheduler").status_code == 200
    assert env.chat(old, "scheduler").status_code == 200  # within grace

    pw, _, _ = env.user("dan", "front-desk")
    t1, _ = env.token("dan", pw)
    t2, _ = env.token("dan", pw)
    assert env.chat(t1, "scheduler").status_code == 200 and env.chat(t2, "scheduler").status_code == 200
    jti = json.loads(b64url_decode(t1.split(".")[2])[:-64])["jti"]
    t0 = time.monotonic()
    r = env.admin("POST", f"/tokens/{jti}/revoke", ops_token)
    assert r.status_code == 200, r.text
    assert env.wait_until(rejected(env, t1)) is not None and time.monotonic() - t0 < REVOKE_DEADLINE
    assert env.chat(t2, "scheduler").status_code == 200  # only that token

    t0 = time.monotonic()
    r = env.admin("POST", "/users/dan/disable", ops_token)
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    assert env.wait_until(rejected(env, t2)) is not None and time.monotonic() - t0 < REVOKE_DEADLINE
    expect_error(env.chat(t2, "scheduler"), 401, "invalid_token")
    expect_error(env.login("dan", pw), 401, "invalid_credentials")
    users = {u["name"]: u for u in env.admin("GET", "/users", ops_token).json()["users"]}
    assert users["dan"]["disabled_at"]


def test_admin_api_refuses_non_admins(env, fred, front_key):
    expect_error(env.admin("GET", "/keys"), 401, "missing_token")
    expect_error(env.admin("GET", "/whoami"), 401, "missing_token")
    # an API key is not an admin credential
    expect_error(env.admin("GET", "/keys", front_key[0]), 401, "invalid_token")

    fd, _ = env.token("fred", fred)
    w = env.admin("GET", "/whoami", fd).json()
    assert w["admin"] is False and w["mfa"] is False
    e = expect_error(env.admin("GET", "/keys", fd), 403, "admin_required")
    assert "admin" in e["message"]
    expect_error(env.admin("POST", "/keys", fd, {"name": "sneaky", "roles": ["ops"]}), 403, "admin_required")

    # an ops user without a second factor: the role is right, the token is not
    pw, _, _ = env.user("oscar", "ops")
    ot, body = env.token("oscar", pw)
    assert body["mfa"] is False
    assert env.admin("GET", "/whoami", ot).json()["admin"] is False
    e = expect_error(env.admin("GET", "/keys", ot), 403, "admin_required")
    assert "multi-factor" in e["message"]
    expect_error(env.admin("POST", "/users/fred/disable", ot), 403, "admin_required")
    assert env.chat(fd, "scheduler").status_code == 200  # fred was not disabled


def test_admin_actions_are_audited(env, ops_token):
    r = env.admin("POST", "/keys", ops_token, {"name": "audited", "roles": ["front-desk"]})
    assert r.status_code == 201
    secret("audited key", r.json()["key"])
    kid = r.json()["id"]
    assert env.admin("POST", f"/keys/{kid}/revoke", ops_token).status_code == 200
    deadline = time.time() + 3
    while True:
        admin = [e for e in env.events(0.2) if e.get("type") == "admin"]
        ours = [e for e in admin if e.get("target") == kid and e.get("actor") == "user:olga"]
        if len(ours) >= 2 or time.time() > deadline:
            break
    assert {(e["action"], e["outcome"]) for e in ours} >= {("key.create", "ok"), ("key.revoke", "ok")}, admin
    assert any(e["action"] == "admin.auth" and e["outcome"] == "failed" for e in admin), admin


def state_admin_log(env):
    p = env.state / "audit" / "admin.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def test_admin_reads_and_refusals_are_recorded(env, ops_token):
    """The admin API records its reads and refused actions, not only its changes, in the state
    directory's admin log (whatever the audit sink), naming the actor, and never a secret."""
    before = len(state_admin_log(env))
    assert env.admin("GET", "/whoami", ops_token).status_code == 200
    assert env.admin("GET", "/keys", ops_token).status_code == 200
    assert env.admin("GET", "/users", ops_token).status_code == 200
    expect_error(env.admin("POST", "/keys", ops_token, {"name": "refused", "roles": ["superuser"]}), 400,
                 "invalid_request")
    r = env.admin("POST", "/keys", ops_token, {"name": "twice-rotated", "roles": ["front-desk"]})
    assert r.status_code == 201
    secret("twice-rotated key", r.json()["key"])
    kid = r.json()["id"]
    r = env.admin("POST", f"/keys/{kid}/rotate", ops_token, {"grace": "1h"})
    assert r.status_code == 201
    secret("twice-rotated key 2", r.json()["key"])
    expect_error(env.admin("POST", f"/keys/{kid}/rotate", ops_token, {"grace": "1h"}), 409, "not_active")
    expect_error(env.admin("POST", f"/keys/{kid}/rotate", ops_token, {"grace": "1y"}), 400, "invalid_request")
    expect_error(env.admin("GET", "/keys"), 401, "missing_token")
    # the CLI's changes land in the same file
    cli("key", "revoke", kid, "--state-dir", env.state)
    events = state_admin_log(env)[before:]
    got = [(e["actor"], e["action"], e["target"], e["outcome"], e.get("detail")) for e in events]
    want = [("user:olga", "admin.whoami", "user:olga", "ok", "admin"),
            ("user:olga", "key.list", "-", "ok"),
            ("user:olga", "user.list", "-", "ok"),
            ("user:olga", "key.create", "-", "failed", "invalid_request: roles"),
            ("user:olga", "key.create", kid, "ok", None),
            ("user:olga", "key.rotate", kid, "ok"),
            ("user:olga", "key.rotate", kid, "failed", "not_active"),
            ("user:olga", "key.rotate", kid, "failed", "invalid_request: grace")]
    assert len(got) == len(want) + 1, got
    assert got[-1][0].startswith("cli:") and got[-1][1:4] == ("key.revoke", kid, "ok"), got
    for g, w in zip(got, want):
        assert g[:len(w)] == w, (g, w)
    assert re.fullmatch(r"\d+ keys", got[1][4]) and re.fullmatch(r"\d+ users", got[2][4]), got
    assert all(e["type"] == "admin" and e["ts"].endswith("Z") for e in events)
    text = (env.state / "audit" / "admin.jsonl").read_text()
    assert ops_token not in text
    # a refused authentication is in the configured sink, not in the fsync'd admin log
    assert not [e for e in events if e["action"] == "admin.auth"], events
    deadline = time.time() + 3
    while not [e for e in env.events(0.2) if e.get("action") == "admin.auth" and e.get("detail") == "missing_token"]:
        assert time.time() < deadline, "the refused authentication is missing from the audit sink"
    for label, v in SECRETS:
        if isinstance(v, str):
            assert v not in text, label


# ---- secrets hygiene --------------------------------------------------------------------------------------

def test_secrets_never_leak(env, front_key, fred, carol, ops_token):
    """Runs last: none of the secrets created above appear in any log, event, database file or error body."""
    labels = " ".join(l for l, _ in SECRETS)
    for kind in ("key", "password", "totp secret", "recovery code", "token"):
        assert kind in labels, f"no {kind} was collected"
    assert ERROR_BODIES, "no error bodies were collected"

    def haystacks():
        yield "warden stdout", env.gw.out_path.read_bytes()
        yield "warden stderr", env.gw.err_path.read_bytes()
        yield "audit file", env.gw.audit_path.read_bytes()
        for p in sorted(env.state.glob("warden.db*")):
            yield p.name, p.read_bytes()
        for p in sorted((env.state / "audit").glob("*")):
            yield f"state audit/{p.name}", p.read_bytes()
        yield "error bodies", "\n".join(ERROR_BODIES).encode()
        yield "CLI stderr", "\n".join(CLI_STDERR).encode()

    def check(stage):
        found = []
        for where, data in haystacks():
            for label, v in SECRETS:
                needles = [v] if isinstance(v, bytes) else [v.encode()]
                if isinstance(v, str) and RECOVERY_RE.match(v):
                    needles.append(v.replace("-", "").encode())
                if any(n in data for n in needles):
                    found.append(f"{label} in {where} ({stage})")
        assert not found, found

    assert env.gw.audit_path.stat().st_size > 0
    check("while running")
    env.gw.stop()  # shutdown checkpoints the WAL and flushes every log
    check("after shutdown")

"""Operator CLI for identity: warden init, key, user, token.

Independent checks: tokens are verified with PyNaCl (Ed25519 over PASETO's PAE) and TOTP enrolment URIs
with pyotp; the database file (and its WAL) is read as bytes to prove no secret is stored in the clear.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_cli_identity.py
WARDEN_BIN selects the binary (default: build/warden).
"""
import base64
import json
import os
import re
import sqlite3
import stat
import struct
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import nacl.exceptions
import nacl.signing
import pyotp
import pytest

ROOT = Path(__file__).resolve().parents[2]
WARDEN = os.environ.get("WARDEN_BIN", str(ROOT / "build" / "warden"))
KEY_RE = re.compile(r"^wdk_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}$")
RECOVERY_RE = re.compile(r"^[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}$")
PASSWORD = "correct horse battery staple 42"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WARDEN_STATE_DIR", "WARDEN_MASTER_KEY_FILE")}
    env.update(extra)
    return env


def run(*args, input=None, env=None):
    r = subprocess.run([WARDEN, *map(str, args)], input=input, capture_output=True, text=True,
                       env=env or clean_env(), timeout=60)
    assert "runtime error:" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    return r


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.returncode == 0, f"{args} exited {r.returncode}: {r.stderr}"
    return r


def fails(code, *args, **kw):
    """The command exits with `code` and explains itself in exactly one stderr line."""
    r = run(*args, **kw)
    assert r.returncode == code, f"{args} exited {r.returncode}, wanted {code}: {r.stdout} {r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"want one error line, got: {r.stderr!r}"
    assert lines[0].startswith("warden"), lines[0]
    return lines[0]


def db_bytes(state):
    """Everything SQLite has on disk for the state directory: the database and its WAL/SHM files."""
    return b"".join(p.read_bytes() for p in sorted(Path(state).glob("warden.db*")))


def key_list(state):
    return json.loads(ok("key", "list", "--json", "--state-dir", state).stdout)


def iso(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    ok("init", "--state-dir", d)
    return d


CONFIG = """\
listen: 127.0.0.1:18080
state_dir: {state}
upstreams:
  - {{ name: sim, url: http://127.0.0.1:18000/v1 }}
models:
  - {{ name: gpt-4o-mini, upstream: sim }}
  - {{ name: med-large, upstream: sim }}
  - {{ name: med-small, upstream: sim }}
roles:
  admin: {{ admin: true }}
  clinician: {{ models: [med-*], endpoints: [chat], require_mfa: true }}
  front-desk: {{ models: [gpt-4o-mini], endpoints: [chat] }}
auth: {{ token_max_ttl_ms: 2h }}
audit: {{ file: {audit} }}
"""


@pytest.fixture
def configured(tmp_path):
    """(config path, state dir, audit file) for a config with roles, models and an audit file."""
    d = tmp_path / "cstate"
    audit = tmp_path / "audit.jsonl"
    cfg = tmp_path / "warden.yaml"
    cfg.write_text(CONFIG.format(state=d, audit=audit))
    ok("init", "-c", cfg)
    return cfg, d, audit


def audit_events(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


# ---- init --------------------------------------------------------------------------------------------------

def test_init_creates_private_state_and_is_idempotent(tmp_path):
    d = tmp_path / "st"
    r = ok("init", "--state-dir", d)
    assert "warden user add" in r.stdout and "warden key create" in r.stdout  # tells the next steps
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("master.key", "signing.key", "warden.db"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    assert (d / "master.key").stat().st_size == 32
    assert (d / "signing.key").stat().st_size == 64
    master, signing = (d / "master.key").read_bytes(), (d / "signing.key").read_bytes()
    ok("key", "create", "--name", "x", "--role", "r", "--state-dir", d)  # the database gets a WAL
    for p in d.glob("warden.db*"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name

    r = ok("init", "--state-dir", d)
    assert "already initialised, nothing changed" in r.stdout
    assert (d / "master.key").read_bytes() == master
    assert (d / "signing.key").read_bytes() == signing
    assert len(key_list(d)) == 1


def test_init_state_dir_from_env_and_none_is_usage_error(tmp_path):
    d = tmp_path / "envstate"
    ok("init", env=clean_env(WARDEN_STATE_DIR=str(d)))
    assert (d / "warden.db").exists()
    assert "state directory" in fails(2, "init")
    assert "state directory" in fails(2, "key", "list")


def test_commands_on_uninitialised_dir_fail(tmp_path):
    line = fails(1, "key", "list", "--state-dir", tmp_path / "nope")
    assert "warden init" in line
    assert not (tmp_path / "nope").exists()


def test_init_refuses_group_readable_dir(tmp_path):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    assert "chmod 700" in fails(1, "init", "--state-dir", d)
    assert not (d / "master.key").exists()


# ---- keys --------------------------------------------------------------------------------------------------

def test_key_create_quiet_prints_exactly_the_key(state):
    r = ok("key", "create", "--name", "billing", "--role", "front-desk", "--ttl", "30d", "--quiet",
           "--state-dir", state)
    assert KEY_RE.match(r.stdout.strip()), r.stdout
    assert r.stdout.count("\n") == 1 and r.stderr == ""
    key = r.stdout.strip()
    keys = key_list(state)
    assert [k["id"] for k in keys] == [key[4:16]]
    k = keys[0]
    assert k["name"] == "billing" and k["roles"] == ["front-desk"] and k["status"] == "active"
    assert 29 * 86400 < iso(k["expires_at"]) - iso(k["created_at"]) <= 30 * 86400
    assert k["models"] is None and k["ips"] is None


def test_key_create_default_output_has_key_alone_on_stdout(state):
    r = ok("key", "create", "--name", "n", "--role", "a", "--role", "b", "--models", "m1,m2", "--ip", "10.0.0.0/8",
           "--ip", "2001:db8::/32", "--state-dir", state)
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and KEY_RE.match(lines[0])
    kid = lines[0][4:16]
    assert kid in r.stderr and "only this once" in r.stderr
    k = json.loads(ok("key", "show", kid, "--json", "--state-dir", state).stdout)
    assert k["roles"] == ["a", "b"] and k["models"] == ["m1", "m2"] and k["ips"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert k["expires_at"] is None


def test_key_lifecycle_and_secret_hygiene(state):
    key1 = ok("key", "create", "--name", "app", "--role", "front-desk", "--ttl", "7d", "--quiet",
              "--state-dir", state).stdout.strip()
    id1 = key1[4:16]

    listing = ok("key", "list", "--state-dir", state).stdout
    assert id1 in listing and "app" in listing and "active" in listing
    shown = ok("key", "show", id1, "--state-dir", state).stdout
    assert id1 in shown and "front-desk" in shown

    r = ok("key", "rotate", id1, "--grace", "1h", "--state-dir", state)
    key2 = r.stdout.strip()
    assert KEY_RE.match(key2) and key2 != key1
    id2 = key2[4:16]
    keys = {k["id"]: k for k in key_list(state)}
    old, new = keys[id1], keys[id2]
    assert old["status"] == "rotated" and old["rotated_to"] == id2
    assert 3500 < iso(old["grace_until"]) - datetime.now(timezone.utc).timestamp() <= 3600
    # same name, roles, scope and the same absolute expiry: rotation never extends a key's life
    assert (new["name"], new["roles"], new["models"], new["ips"], new["expires_at"]) == \
           (old["name"], old["roles"], old["models"], old["ips"], old["expires_at"])
    assert new["status"] == "active"
    assert "grace until" in ok("key", "list", "--state-dir", state).stdout
    assert "only an active key" in fails(1, "key", "rotate", id1, "--state-dir", state)

    ok("key", "revoke", id2, "--state-dir", state)
    assert {k["id"]: k for k in key_list(state)}[id2]["status"] == "revoked"
    assert "already revoked" in fails(1, "key", "revoke", id2, "--state-dir", state)
    assert "only an active key" in fails(1, "key", "rotate", id2, "--state-dir", state)

    outputs = "".join(ok(*a, "--state-dir", state).stdout for a in
                      (("key", "list"), ("key", "list", "--json"), ("key", "show", id1), ("key", "show", id1, "--json"),
                       ("key", "show", id2, "--json")))
    raw = db_bytes(state)
    for key in (key1, key2):
        secret = key[17:]
        assert key not in outputs and secret not in outputs
        assert key.encode() not in raw and secret.encode() not in raw
        assert secret[:20].encode() not in raw


def test_key_rotate_grace_zero_ends_old_key_now(state):
    key = ok("key", "create", "--name", "z", "--role", "r", "--quiet", "--state-dir", state).stdout.strip()
    ok("key", "rotate", key[4:16], "--grace", "0", "--state-dir", state)
    old = {k["id"]: k for k in key_list(state)}[key[4:16]]
    assert old["status"] == "rotated"
    assert iso(old["grace_until"]) <= datetime.now(timezone.utc).timestamp()


@pytest.mark.parametrize("args,code,needle", [
    (("key", "create", "--name", "x", "--role", "nurse"), 2, "unknown role 'nurse'"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--ttl", "3x"), 2, "--ttl"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--ttl", "-5d"), 2, "--ttl"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--ip", "10.0.0.300/8"), 2, "--ip"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--ip", "10.0.0.1/8"), 2, "--ip"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--models", "med-large"), 2, "never widen"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--models", "nope"), 2, "no model configured"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--models", "a,,b"), 2, "empty item"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--role", "front-desk"), 2, "twice"),
    (("key", "create", "--role", "front-desk"), 2, "--name"),
    (("key", "create", "--name", "x"), 2, "--role"),
    (("key", "create", "--name", "x", "--role", "front-desk", "--bogus"), 2, "unknown option"),
    (("key", "revoke", "AAAAAAAAAAAA"), 1, "no key with id"),
    (("key", "show", "AAAAAAAAAAAA"), 1, "no key with id"),
    (("key", "rotate", "AAAAAAAAAAAA"), 1, "no key with id"),
    (("key", "revoke", "not-an-id"), 2, "not a key id"),
    (("key", "rotate", "AAAAAAAAAAAA", "--grace", "40d"), 2, "--grace"),
    (("key", "frobnicate"), 2, "unknown command"),
    (("token", "issue", "--key-id", "AAAAAAAAAAAA", "--ttl", "1h"), 1, "no key with id"),
    (("token", "issue", "--key-id", "AAAAAAAAAAAA", "--ttl", "soon"), 2, "--ttl"),
    (("token", "revoke", "bad jti!"), 2, "not a token id"),
    (("token", "revoke", "abc", "--until", "2001-01-01T00:00:00Z"), 2, "in the past"),
    (("user", "add", "bad name", "--role", "front-desk"), 2, "invalid user name"),
    (("user", "add", "eve", "--role", "nurse"), 2, "unknown role"),
    (("user", "disable", "nobody"), 1, "no user named nobody"),
    (("user", "mfa", "enroll", "nobody"), 1, "no user named nobody"),
])
def test_bad_input_fails_cleanly_and_changes_nothing(configured, args, code, needle):
    cfg, d, audit = configured
    existing = ok("key", "create", "--name", "keep", "--role", "front-desk", "--quiet", "-c", cfg).stdout.strip()
    before_keys = key_list(d)
    before_users = ok("user", "list", "--json", "-c", cfg).stdout
    before_audit = audit.read_text()
    line = fails(code, *args, "-c", cfg, input=PASSWORD + "\n")
    assert needle in line
    assert key_list(d) == before_keys
    assert ok("user", "list", "--json", "-c", cfg).stdout == before_users
    assert existing not in line
    if code == 2:
        assert audit.read_text() == before_audit  # invalid input is not an action


def test_config_scoped_key_with_pattern_and_audit(configured):
    cfg, d, audit = configured
    key = ok("key", "create", "--name", "ward", "--role", "clinician", "--models", "med-l*", "--quiet",
             "-c", cfg).stdout.strip()
    kid = key[4:16]
    ok("key", "rotate", kid, "-c", cfg)
    ok("key", "revoke", kid, "-c", cfg)
    events = [e for e in audit_events(audit) if e["action"].startswith("key.")]
    assert [(e["action"], e["target"], e["outcome"]) for e in events] == [
        ("key.create", kid, "ok"), ("key.rotate", kid, "ok"), ("key.revoke", kid, "ok")]
    for e in events:
        assert e["type"] == "admin" and e["actor"].startswith("cli:") and e["ts"].endswith("Z")
    text = audit.read_text()
    assert key not in text and key[17:] not in text
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    # and in the state directory's own admin log, with or without -c
    assert [(e["action"], e["target"]) for e in admin_log(d) if e["action"].startswith("key.")] == [
        ("key.create", kid), ("key.rotate", kid), ("key.revoke", kid)]


def admin_log(state):
    return audit_events(Path(state) / "audit" / "admin.jsonl")


def test_every_change_is_recorded_in_the_state_dir_without_config(state):
    """With --state-dir alone (no -c, so no audit sink) every change still appends a JSON line to
    state_dir/audit/admin.jsonl (0600) naming actor, action and public id, and holding no secret."""
    log = Path(state) / "audit" / "admin.jsonl"
    assert [(e["action"], e["outcome"]) for e in admin_log(state)] == [("state.init", "ok")]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    key = ok("key", "create", "--name", "app", "--role", "r", "--quiet", "--state-dir", state).stdout.strip()
    kid = key[4:16]
    rotated = ok("key", "rotate", kid, "--grace", "1h", "--quiet", "--state-dir", state).stdout.strip()
    kid2 = rotated[4:16]
    token = ok("token", "issue", "--key-id", kid2, "--ttl", "10m", "--quiet", "--state-dir", state).stdout.strip()
    jti = json.loads(b64url_decode(token.split(".")[2])[:-64])["jti"]
    ok("token", "revoke", jti, "--state-dir", state)
    ok("key", "revoke", kid2, "--state-dir", state)
    fails(1, "key", "revoke", kid2, "--state-dir", state)  # a refused change is recorded too
    ok("user", "add", "nina", "--role", "r", "--state-dir", state, input=PASSWORD + "\n")
    ok("user", "passwd", "nina", "--state-dir", state, input=PASSWORD + " changed\n")
    enrol = ok("user", "mfa", "enroll", "nina", "--no-qr", "--state-dir", state).stdout
    uri, codes = parse_enrolment(enrol)
    ok("user", "disable", "nina", "--state-dir", state)
    # reads are not changes
    for args in (("key", "list"), ("key", "show", kid), ("user", "list")):
        ok(*args, "--state-dir", state)

    events = admin_log(state)
    got = [(e["action"], e["target"], e["outcome"]) for e in events]
    assert got == [("state.init", str(state), "ok"),
                   ("key.create", kid, "ok"), ("key.rotate", kid, "ok"), ("token.issue", kid2, "ok"),
                   ("token.revoke", jti, "ok"), ("key.revoke", kid2, "ok"), ("key.revoke", kid2, "failed"),
                   ("user.add", "nina", "ok"), ("user.passwd", "nina", "ok"), ("user.mfa.enroll", "nina", "ok"),
                   ("user.disable", "nina", "ok")], got
    for e in events:
        assert e["type"] == "admin" and e["actor"].startswith("cli:") and e["ts"].endswith("Z"), e
    text = log.read_text()
    totp = pyotp.parse_uri(uri)
    for s in (key, key[17:], rotated, rotated[17:], token, PASSWORD, totp.secret, *codes):
        assert s not in text
    # the same file also takes the events when a config with its own audit file is used (see
    # test_config_scoped_key_with_pattern_and_audit): it is the state directory's record either way


def test_change_refused_when_admin_log_cannot_be_written(state):
    log = Path(state) / "audit" / "admin.jsonl"
    log.unlink()
    log.symlink_to(Path(state) / "elsewhere")  # never followed
    line = fails(1, "key", "create", "--name", "x", "--role", "r", "--state-dir", state)
    assert "admin log" in line
    assert key_list(state) == []
    assert not (Path(state) / "elsewhere").exists()


# ---- users ---------------------------------------------------------------------------------------------

def test_user_add_from_stdin_and_lifecycle(state):
    r = ok("user", "add", "alice", "--role", "clinician", "--role", "admin", "--state-dir", state,
           input=PASSWORD + "\n")
    assert "alice" in r.stdout
    users = json.loads(ok("user", "list", "--json", "--state-dir", state).stdout)
    assert [(u["name"], u["roles"], u["mfa"], u["disabled"], u["locked_until"]) for u in users] == \
           [("alice", ["clinician", "admin"], False, False, None)]
    table = ok("user", "list", "--state-dir", state).stdout
    assert "alice" in table and "clinician,admin" in table

    raw = db_bytes(state)
    assert PASSWORD.encode() not in raw
    con = sqlite3.connect(state / "warden.db")
    (pw_hash,) = con.execute("SELECT pw_hash FROM users WHERE name = 'alice'").fetchone()
    con.close()
    assert pw_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    assert "already exists" in fails(1, "user", "add", "alice", "--role", "x", "--state-dir", state,
                                     input=PASSWORD + "\n")
    new_pw = "another long passphrase!"
    ok("user", "passwd", "alice", "--state-dir", state, input=new_pw + "\n")
    con = sqlite3.connect(state / "warden.db")
    (pw_hash2,) = con.execute("SELECT pw_hash FROM users WHERE name = 'alice'").fetchone()
    con.close()
    assert pw_hash2 != pw_hash and new_pw.encode() not in db_bytes(state)

    ok("user", "disable", "alice", "--state-dir", state)
    assert json.loads(ok("user", "list", "--json", "--state-dir", state).stdout)[0]["disabled"] is True
    assert "already disabled" in fails(1, "user", "disable", "alice", "--state-dir", state)
    assert "disabled" in fails(1, "user", "mfa", "enroll", "alice", "--state-dir", state)


@pytest.mark.parametrize("pw,needle", [
    ("short", "too short"),
    ("elevenchars", "too short"),
    ("", "too short"),
    ("tab\there is twelve+", "control character"),
    ("x" * 1025, "too long"),
    ("y" * 5000, "too long"),
], ids=["short", "eleven", "empty", "control", "1025", "5000"])
def test_user_add_rejects_bad_passwords(state, pw, needle):
    assert needle in fails(2, "user", "add", "bob", "--role", "r", "--state-dir", state, input=pw + "\n")
    assert json.loads(ok("user", "list", "--json", "--state-dir", state).stdout) == []


def test_user_add_without_password_and_never_from_argv(state):
    assert "no password" in fails(2, "user", "add", "bob", "--role", "r", "--state-dir", state, input="")
    # there is no option that takes a password on the command line
    assert "unknown option" in fails(2, "user", "add", "bob", "--role", "r", "--password", PASSWORD,
                                     "--state-dir", state, input=PASSWORD + "\n")
    assert json.loads(ok("user", "list", "--json", "--state-dir", state).stdout) == []


def test_twelve_unicode_characters_are_enough(state):
    ok("user", "add", "uni", "--role", "r", "--state-dir", state, input="ääääääääääää\n")


def parse_enrolment(out):
    uris = re.findall(r"otpauth://\S+", out)
    codes = [l.strip() for l in out.splitlines() if RECOVERY_RE.match(l.strip())]
    assert len(uris) == 1, out
    return uris[0], codes


def test_mfa_enroll_uri_works_with_pyotp_and_codes_are_unique(state):
    ok("user", "add", "carol", "--role", "clinician", "--state-dir", state, input=PASSWORD + "\n")
    r = ok("user", "mfa", "enroll", "carol", "--state-dir", state)
    uri, codes = parse_enrolment(r.stdout)
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert totp.issuer == "warden" and totp.name == "carol"
    assert totp.digits == 6 and totp.interval == 30
    assert len(base64.b32decode(totp.secret)) == 20
    assert re.fullmatch(r"\d{6}", totp.now()) and totp.verify(totp.now())
    assert "▀" in r.stdout or "█" in r.stdout  # the QR code is drawn
    assert len(codes) == 10 and len(set(codes)) == 10

    users = json.loads(ok("user", "list", "--json", "--state-dir", state).stdout)
    assert users[0]["mfa"] is True
    raw = db_bytes(state)
    assert base64.b32decode(totp.secret) not in raw and totp.secret.encode() not in raw
    for c in codes:
        assert c.encode() not in raw and c.replace("-", "").encode() not in raw
    con = sqlite3.connect(state / "warden.db")
    assert con.execute("SELECT count(*) FROM recovery_codes").fetchone()[0] == 10
    con.close()

    # re-enrolling replaces the secret and the codes
    uri2, codes2 = parse_enrolment(ok("user", "mfa", "enroll", "carol", "--no-qr", "--state-dir", state).stdout)
    assert pyotp.parse_uri(uri2).secret != totp.secret
    assert not set(codes) & set(codes2)
    con = sqlite3.connect(state / "warden.db")
    assert con.execute("SELECT count(*) FROM recovery_codes").fetchone()[0] == 10
    con.close()


# ---- tokens ---------------------------------------------------------------------------------------------

def pae(*pieces):
    out = struct.pack("<Q", len(pieces))
    for p in pieces:
        out += struct.pack("<Q", len(p)) + p
    return out


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_token(state, token):
    """Independent PASETO v4.public verification with PyNaCl; returns (claims, footer)."""
    assert token.startswith("v4.public.")
    parts = token.split(".")
    assert len(parts) == 4
    body, footer = b64url_decode(parts[2]), b64url_decode(parts[3])
    m, sig = body[:-64], body[-64:]
    pk = (Path(state) / "signing.key").read_bytes()[32:64]
    nacl.signing.VerifyKey(pk).verify(pae(b"v4.public.", m, footer, b""), sig)
    return json.loads(m), json.loads(footer)


def test_token_issue_verifies_with_pynacl(state):
    key = ok("key", "create", "--name", "dev", "--role", "front-desk", "--role", "clinician",
             "--models", "gpt-4o-mini,med-*", "--quiet", "--state-dir", state).stdout.strip()
    kid = key[4:16]
    r = ok("token", "issue", "--key-id", kid, "--ttl", "1h", "--models", "med-large", "--state-dir", state)
    token = r.stdout.strip()
    assert r.stdout.count("\n") == 1
    claims, footer = verify_token(state, token)
    now = datetime.now(timezone.utc).timestamp()
    assert claims["sub"] == f"key:{kid}" and claims["iss"] == "warden"
    assert claims["roles"] == ["front-desk", "clinician"] and claims["mfa"] is False
    assert claims["models"] == ["med-large"]
    assert iso(claims["exp"]) - iso(claims["iat"]) == 3600
    assert now - 60 < iso(claims["iat"]) <= now + 1
    assert footer["kid"].startswith("k4.pid.")
    assert claims["jti"] in r.stderr  # so the developer can revoke it

    # a tampered token does not verify
    body = bytearray(b64url_decode(token.split(".")[2]))
    body[5] ^= 1
    forged = "v4.public." + base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode() + "." + token.split(".")[3]
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_token(state, forged)

    # without --models the key's own scope carries over
    claims2, _ = verify_token(state, ok("token", "issue", "--key-id", kid, "--ttl", "10m", "--quiet",
                                        "--state-dir", state).stdout.strip())
    assert claims2["models"] == ["gpt-4o-mini", "med-*"]
    assert claims2["jti"] != claims["jti"]

    # never wider than the key
    assert "outside key" in fails(2, "token", "issue", "--key-id", kid, "--ttl", "1h", "--models", "other",
                                  "--state-dir", state)
    assert "outside key" in fails(2, "token", "issue", "--key-id", kid, "--ttl", "1h", "--models", "gpt-*",
                                  "--state-dir", state)
    assert "maximum token lifetime" in fails(2, "token", "issue", "--key-id", kid, "--ttl", "25h",
                                             "--state-dir", state)
    assert token not in db_bytes(state).decode("latin-1")


def test_token_never_outlives_its_key(state):
    key = ok("key", "create", "--name", "short", "--role", "r", "--ttl", "10m", "--quiet",
             "--state-dir", state).stdout.strip()
    r = ok("token", "issue", "--key-id", key[4:16], "--ttl", "1h", "--state-dir", state)
    claims, _ = verify_token(state, r.stdout.strip())
    expires = iso(key_list(state)[0]["expires_at"])
    assert iso(claims["exp"]) == expires
    assert "capped" in r.stderr
    assert "models" not in claims


def test_token_issue_with_config_limits(configured):
    cfg, d, audit = configured
    key = ok("key", "create", "--name", "dev", "--role", "clinician", "--quiet", "-c", cfg).stdout.strip()
    kid = key[4:16]
    assert "token_max_ttl_ms" in fails(2, "token", "issue", "--key-id", kid, "--ttl", "3h", "-c", cfg)
    assert "never widen" in fails(2, "token", "issue", "--key-id", kid, "--ttl", "1h", "--models", "gpt-4o-mini",
                                  "-c", cfg)
    token = ok("token", "issue", "--key-id", kid, "--ttl", "2h", "--models", "med-small", "-c", cfg).stdout.strip()
    claims, _ = verify_token(d, token)
    assert claims["models"] == ["med-small"]
    ev = [e for e in audit_events(audit) if e["action"] == "token.issue"]
    assert len(ev) == 1 and ev[0]["target"] == kid and claims["jti"] in ev[0]["detail"]
    assert token not in audit.read_text()

    ok("key", "revoke", kid, "-c", cfg)
    assert "revoked" in fails(1, "token", "issue", "--key-id", kid, "--ttl", "1h", "-c", cfg)


def test_token_revoke_records_jti(configured):
    cfg, d, audit = configured
    key = ok("key", "create", "--name", "dev", "--role", "front-desk", "--quiet", "-c", cfg).stdout.strip()
    token = ok("token", "issue", "--key-id", key[4:16], "--ttl", "1h", "-c", cfg).stdout.strip()
    claims, _ = verify_token(d, token)
    jti = claims["jti"]
    ok("token", "revoke", jti, "-c", cfg)
    ok("token", "revoke", "other-jti_1", "--until", "2h", "-c", cfg)
    ok("token", "revoke", "third", "--until", "2099-01-01T00:00:00Z", "-c", cfg)
    con = sqlite3.connect(d / "warden.db")
    rows = dict(con.execute("SELECT jti, expires_at FROM revoked_tokens").fetchall())
    con.close()
    now = datetime.now(timezone.utc).timestamp()
    assert 29 * 86400 < rows[jti] - now <= 30 * 86400  # default: kept 30 days, longer than any token lives
    assert 7100 < rows["other-jti_1"] - now <= 7200
    assert rows["third"] == iso("2099-01-01T00:00:00Z")
    # a jti is base64url, so it may start with '-' (and "--" ends options for one starting with "--")
    ok("token", "revoke", "-dash", "-c", cfg)
    ok("token", "revoke", "-c", cfg, "--", "--double")
    con = sqlite3.connect(d / "warden.db")
    rows = dict(con.execute("SELECT jti, expires_at FROM revoked_tokens").fetchall())
    con.close()
    assert "-dash" in rows and "--double" in rows
    ev = [e for e in audit_events(audit) if e["action"] == "token.revoke"]
    assert [e["target"] for e in ev] == [jti, "other-jti_1", "third", "-dash", "--double"]
    # revoking again keeps the later expiry
    ok("token", "revoke", "other-jti_1", "-c", cfg)
    con = sqlite3.connect(d / "warden.db")
    (exp,) = con.execute("SELECT expires_at FROM revoked_tokens WHERE jti = 'other-jti_1'").fetchone()
    con.close()
    assert exp > now + 29 * 86400


def test_help_and_unknown_subcommands():
    for group in ("key", "user", "token"):
        r = ok(group, "--help")
        assert "usage: warden " + group in r.stdout
        assert run(group).returncode == 2
    assert "usage: warden init" in ok("init", "--help").stdout
    r = ok("--help")
    for group in ("init", "key", "user", "token"):
        assert group in r.stdout


def tty_session(state, name, answers):
    """Runs `user add` on a pseudo-terminal, typing each answer after its prompt; returns (rc, output)."""
    import pty
    import select
    master, slave = pty.openpty()
    p = subprocess.Popen([WARDEN, "user", "add", name, "--role", "r", "--state-dir", str(state)], stdin=slave,
                         stdout=slave, stderr=slave, env=clean_env(), close_fds=True)
    os.close(slave)
    out = b""

    def pump(timeout):
        nonlocal out
        r, _, _ = select.select([master], [], [], timeout)
        if not r:
            return False
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        out += chunk
        return bool(chunk)

    for prompt, answer in answers:
        while prompt.encode() not in out:
            assert pump(10), f"no prompt {prompt!r}; got {out!r}"
        os.write(master, answer.encode() + b"\n")
        out = out.replace(prompt.encode(), b"[" + prompt.encode() + b"]", 1)
    rc = p.wait(timeout=30)
    while pump(0.2):
        pass
    os.close(master)
    return rc, out.decode(errors="replace")


def test_user_add_prompts_twice_on_a_terminal_without_echo(state):
    rc, out = tty_session(state, "ttyuser", [("new password for ttyuser: ", PASSWORD), ("repeat it: ", PASSWORD)])
    assert rc == 0, out
    assert PASSWORD not in out  # echo was off
    assert "added user ttyuser" in out
    rc, out = tty_session(state, "ttyuser2", [("new password for ttyuser2: ", PASSWORD),
                                              ("repeat it: ", PASSWORD + "x")])
    assert rc == 2 and "do not match" in out and PASSWORD not in out
    names = [u["name"] for u in json.loads(ok("user", "list", "--json", "--state-dir", state).stdout)]
    assert names == ["ttyuser"]

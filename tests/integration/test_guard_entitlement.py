"""Role entitlement and overlap resolution.

Of overlapping findings with equal scores, the one the caller acts on most strictly wins (block, then
a rewrite, then flag, then what passes): when a finding of a class the role may send (phi for a
clinician) ties with a finding of another class (pii), the pii finding wins and is acted on. Before
that, the tie went to the rule defined first and the whole span went out unchanged. These tests send
realistic text to a clinician (entitled to phi, profile clinical: pii pseudonymize) and check that
the pii value does not reach the upstream. A clearly higher-scored phi reading still wins (known gap,
xfail below).

The front-desk role (no entitlement, same actions) is the control: there the winning phi finding is
redacted, which also covers the pii value, so the value never leaks.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_guard_entitlement.py
"""
import json
import os
import subprocess

import httpx
import pytest

import conftest
from conftest import ROOT, UPSTREAM_KEY, WARDEN, Gateway, Sim

RULES = os.environ.get("WARDEN_TEST_RULES", str(ROOT / "rules"))
CHAT = "/v1/chat/completions"

SSN = "536228147"  # valid-looking SSN without dashes; also a health-plan member id in shape
# a US phone number that happens to pass the NHS mod-11 check (about 1 number in 11 does)
PHONE = "212-736-4821"
CASES = [
    # pii.us_ssn_compact (0.6 + ssn context = 0.85) ties phi.health_plan_id (0.6 + "member id" = 0.85)
    # on the same span; the tie goes to the rule defined first, and phi.yaml loads before pii.yaml
    pytest.param(f"Member ID: {SSN} (the subscriber's SSN)", SSN, id="ssn-as-member-id"),
    # the same with phi.medical_record_number ("patient id"), as where the SSN was the patient id
    pytest.param(f"Patient ID (SSN): {SSN}", SSN, id="ssn-as-patient-id"),
    # pii.phone_nanp (0.6 + phone = 0.85) loses to phi.nhs_number (0.7 + patient = 0.95) on score: a
    # known gap (ranking the action above the score would pseudonymize "NHS number 943 476 5919" as a
    # phone number for clinicians instead, see test_guard.py)
    pytest.param(f"Patient phone: {PHONE}", PHONE, id="us-phone-as-nhs-number"),
]


def cli(*args):
    env = dict(os.environ, WARDEN_TEST_UPSTREAM_KEY=UPSTREAM_KEY)
    r = subprocess.run([WARDEN, *map(str, args)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, f"warden {args} exited {r.returncode}: {r.stdout} {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    orig = conftest.wait_port  # compiling the full rule set takes seconds on a loaded machine
    conftest.wait_port = lambda port, proc=None, timeout=10.0: orig(port, proc, max(timeout, 60.0))
    tmp = tmp_path_factory.mktemp("entgw")
    state = tmp / "state"
    cli("init", "--state-dir", state)
    keys = {role: cli("key", "create", "--name", role, "--role", role, "--quiet", "--state-dir", state).strip()
            for role in ("clinician", "front-desk")}
    extra = (
        f"state_dir: {state}\n"
        "auth: { mode: required }\n"
        "roles:\n"
        "  clinician: { models: [gpt-4o-mini], endpoints: [chat], data_classes: [phi], guard: clinical }\n"
        "  front-desk: { models: [gpt-4o-mini], endpoints: [chat], guard: clinical }\n"
        f"guard: {{ rules_dir: {RULES} }}\n"
        "guard_profiles:\n"
        "  clinical: { input: { phi: redact, pii: pseudonymize, secrets: block } }\n")
    s = Sim(tmp, "--echo-headers")
    g = Gateway(tmp, s.port, extra=extra)
    try:
        yield g, keys
    finally:
        g.stop()
        s.stop()
        conftest.wait_port = orig


def upstream_text(g, key, text):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    r = httpx.post(g.url + CHAT, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return json.loads(r.json()["sim_request"]["body"])["messages"][0]["content"], r.headers["x-warden-guard"]


@pytest.mark.parametrize("text,value", CASES)
def test_not_entitled_role_value_never_leaks(gw, text, value):
    g, keys = gw
    up, hdr = upstream_text(g, keys["front-desk"], text)
    assert value not in up, (up, hdr)
    # the winning finding is the phi one: this is what makes the entitled case leak
    assert ":redact:1" in hdr and "pseudonymize" not in hdr, hdr


ENTITLED_CASES = CASES[:2] + [pytest.param(*CASES[2].values, id=CASES[2].id, marks=pytest.mark.xfail(
    strict=True, reason="a higher-scored phi reading wins the overlap"))]


@pytest.mark.parametrize("text,value", ENTITLED_CASES)
def test_entitled_class_does_not_carry_pii_through(gw, text, value):
    g, keys = gw
    up, hdr = upstream_text(g, keys["clinician"], text)
    assert value not in up, f"pii value sent unchanged to the upstream for a role entitled to phi only: {up!r} ({hdr})"

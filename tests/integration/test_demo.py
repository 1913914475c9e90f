"""`make demo` (scripts/demo.sh): the README's first command runs to the end and shows each control
doing what its note says. Checked on the demo's own output: the statuses of the requests, the guard's
rewrites (e-mail pseudonymized and restored, card masked, secret, injection and image blocked, naming the
rule), and an access log that holds none of the values the guard acted on.

Release build only: under the sanitizers each start of the gateway compiles the rules for longer than
the demo waits for it to listen.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_demo.py
"""
import re
import subprocess

import pytest

from conftest import ROOT, WARDEN, sanitized_build

EMAIL = "bob.smith@example.com"
CARD = "4111 1111 1111 1111"
TOKEN = "ghp_R8x2kLmN4pQ7vT9wY3zA6bC1dE5fG0hJ2kL4"


@pytest.fixture(scope="module")
def demo():
    if sanitized_build():
        pytest.skip("the demo's start-up wait is sized for the release build")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), WARDEN], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = {}
    for block in re.split(r"\n(?=══ )", r.stdout):
        m = re.match(r"══ (?:\d+\. )?(.*)", block)
        if m:
            steps[m.group(1).strip()] = block
    return steps


def step(demo, prefix):
    found = [b for title, b in demo.items() if title.startswith(prefix)]
    assert len(found) == 1, f"no single step titled {prefix!r} in {list(demo)}"
    return found[0]


def test_access_controls(demo):
    assert "◀ HTTP 401" in step(demo, "No credential")
    assert "◀ HTTP 200" in step(demo, "A normal chat completion")
    assert "data: [DONE]" in step(demo, "A streamed chat completion")
    assert "◀ HTTP 403" in step(demo, "A model the key's role does not grant")
    assert "mfa_required" in step(demo, "A role that requires multi-factor")
    assert "◀ HTTP 429" in step(demo, "Rate limit")
    assert "◀ HTTP 400" in step(demo, "A malformed request")


def test_personal_data_pseudonymized_and_restored(demo):
    s = step(demo, "Personal data in a prompt")
    assert "◀ HTTP 200" in s
    assert "x-warden-guard: profile=standard; EMAIL:pseudonymize:1,CREDIT_CARD:mask:1" in s
    # the simulator echoes what it received: the card masked, the address restored by warden
    answer = re.search(r'"content": "(echo: [^"]*)"', s).group(1)
    assert answer == f"echo: Please email {EMAIL} about card ***************1111."
    assert "<EMAIL_1>" not in answer

    s = step(demo, "Personal data in a streamed answer")
    assert "x-warden-guard: profile=standard; EMAIL:pseudonymize:1" in s
    events = [line for line in s.splitlines() if line.strip().startswith("data: {")]
    text = "".join(re.findall(r'"content":"([^"]*)"', "\n".join(events)))
    assert text == f"echo: Write to {EMAIL} today."
    assert events and not any("EMAIL_1" in e for e in events)


def test_secret_and_injection_blocked(demo):
    s = step(demo, "A secret in a prompt")
    assert "◀ HTTP 400" in s and '"code": "content_blocked"' in s
    assert "blocked by rule secrets.github_pat (profile standard)" in s
    s = step(demo, "A prompt-injection attempt")
    assert "◀ HTTP 400" in s and "blocked by rule injection." in s
    s = step(demo, "An image the guard cannot read")
    assert "◀ HTTP 400" in s and "blocked by rule guard.unreadable_input (profile standard)" in s
    assert "(image_url)" in s


def test_access_log_holds_no_values(demo):
    log = step(demo, "Access log")
    assert '"guard": "EMAIL:pseudonymize:1,CREDIT_CARD:mask:1"' in log
    assert '"rule": "secrets.github_pat"' in log
    for value in (EMAIL, CARD, CARD.replace(" ", ""), TOKEN, "ghp_"):
        assert value not in log

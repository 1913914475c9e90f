"""`warden rules list|check`: a rules directory as an operator writing rules sees it.

- check: the shipped rules pass their examples (exit 0, a summary line); a directory with a wrong match
  and a wrong no_match example names both, with file and line (exit 1), while its right examples pass;
  rules that do not load, a missing directory and bad options are errors (exit 2) that say why;
- list: one row per rule with its type, class, score and context words.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_rules_cli.py
WARDEN_BIN selects the binary (default: build/warden).
"""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARDEN = os.environ.get("WARDEN_BIN", str(ROOT / "build" / "warden"))

RULES = """version: 1
rules:
  - id: t.ticket
    type: TICKET
    class: internal
    pattern: 'TCK-[0-9]{6}\\b'
    score: 0.8
    examples:
      match: ['see TCK-123456 for details', 'TCK-12345']
      no_match: ['TCK-12', 'TCK-654321']
  - id: t.badge
    type: BADGE
    class: internal
    pattern: 'BDG[0-9]{4}\\b'
    context: [badge, employee]
    context_required: true
    examples:
      match: ['badge BDG1234']
      no_match: ['BDG1234']
  - id: t.bare
    type: BARE
    class: internal
    pattern: 'zz[0-9]{3}\\b'
"""


def rules_dir(tmp_path, text=RULES):
    d = tmp_path / "r"
    d.mkdir()
    (d / "internal.yaml").write_text(text)
    return d


def run(*args, cwd=ROOT, timeout=300):
    return subprocess.run([WARDEN, "rules", *args], capture_output=True, cwd=cwd, timeout=timeout)


def test_check_shipped_rules():
    p = run("check")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.decode().splitlines()
    m = re.fullmatch(r"rules: (\d+) rules \((\d+) without examples\), (\d+) examples checked, 0 failed", lines[-1])
    assert m, lines
    assert int(m[1]) >= 200 and int(m[3]) >= 500
    assert len(lines) == 1 and p.stderr == b""


def test_check_reports_wrong_examples(tmp_path):
    d = rules_dir(tmp_path)
    p = run("check", "--rules", str(d))
    assert p.returncode == 1, p.stderr
    out = p.stdout.decode().splitlines()
    f = d / "internal.yaml"
    # 'TCK-12345' is one digit short; 'TCK-654321' is a ticket: two failures, both of t.ticket (line 3)
    assert out[0].startswith(f'{f}:3: rule t.ticket: match example "TCK-12345" gives no finding of the rule')
    assert out[1] == (f'{f}:3: rule t.ticket: no_match example "TCK-654321" gives a finding of the rule '
                      "(found: t.ticket [0,10) 0.80)")
    assert out[2] == f"{d}: 3 rules (1 without examples), 6 examples checked, 2 failed"
    assert len(out) == 3
    # the context rule's examples pass: its word is required, and present only in the match example
    assert "t.badge" not in p.stdout.decode()
    # a min-score above the ticket's score (0.8): both its match examples fail, its no_match one passes;
    # the badge (0.8 + 0.25 for its context word) still passes
    p = run("check", "--rules", str(d), "--min-score", "0.9")
    assert p.returncode == 1
    out = p.stdout.decode().splitlines()
    assert [line.split(": ")[2].split('"')[1] for line in out[:-1]] == ["see TCK-123456 for details", "TCK-12345"]
    assert out[-1] == f"{d}: 3 rules (1 without examples), 6 examples checked, 2 failed"


def test_list(tmp_path):
    d = rules_dir(tmp_path)
    p = run("list", "--rules", str(d))
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.decode().splitlines()]
    assert rows[0] == ["ID", "TYPE", "CLASS", "SCORE", "CONTEXT"]
    assert rows[1] == ["t.ticket", "TICKET", "internal", "0.80", "-"]
    assert rows[2] == ["t.badge", "BADGE", "internal", "0.80", "required:", "2", "words"]
    assert len(rows) == 4
    p = run("list")
    assert p.returncode == 0
    assert sum(1 for line in p.stdout.decode().splitlines() if line.startswith("pii.")) >= 15


def test_errors(tmp_path):
    d = rules_dir(tmp_path, RULES.replace("score: 0.8", "score: high"))
    p = run("check", "--rules", str(d))
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == f"warden rules: {d}/internal.yaml:7:12: score: expected a number, got 'high'\n"
    cases = [
        (["check", "--rules", str(tmp_path / "none")], f"rules directory '{tmp_path / 'none'}': No such file"),
        (["check", "extra"], "unexpected argument 'extra'"),
        (["lint"], "unknown command 'lint' (list or check)"),
        (["check", "--min-score", "1.5"], "--min-score '1.5': expected a number from 0 to 1"),
        (["list", "--min-score", "0.5"], "--min-score applies to check"),
        (["check", "--bogus"], "unknown option '--bogus'"),
    ]
    for args, msg in cases:
        p = run(*args)
        assert p.returncode == 2, args
        assert msg in p.stderr.decode(), (args, p.stderr)
        assert p.stdout == b""
    p = run()
    assert p.returncode == 2 and b"usage: warden rules" in p.stderr
    p = run("--help")
    assert p.returncode == 0 and b"usage: warden rules" in p.stdout

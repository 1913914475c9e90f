#!/usr/bin/python3
"""Injection-screen evaluation (make eval-guard): detection rate on labelled injection / jailbreak
prompts and false-positive rate on benign prompts, at the default threshold (0.7) and a few others.

Data sets:
  tests/eval/data/injection_set.jsonl   written for warden (see tests/eval/data/SOURCES.md): attacks in
                                        documented public categories (override, jailbreak templates,
                                        prompt extraction, delimiter tokens, indirect injection,
                                        invisible/bidi Unicode, base64/hex/rot13/URL/tag encodings,
                                        paraphrases that pattern rules are expected to miss) and
                                        hard benign negatives
  ../shared/data/dev/injection_injecguard_valid.json   InjecGuard validation sample (MIT): labelled
                                        injections (BIPIA, PINT) and benign prompts (NotInject, PINT,
                                        WildGuard)
  ../shared/data/dev/benign_prompts_wildguard.json     971 benign prompts (WildGuard)

Method: the real pipeline. A `warden serve` with a guard profile whose injection action is `flag`
(so every prompt reaches the upstream) in front of `warden sim`; each prompt is sent as one user
message and the score is read from the x-warden-guard header ("injection=flag:0.92..."), which is the
request score 1 - prod(1 - s_r) over the rules that fired. A prompt counts as detected when its score
is at or above the threshold. Only the standard library is needed (Debian's /usr/bin/python3).

--check exits 1 when the false-positive rate on the WildGuard benign set exceeds 3% at 0.7.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCORE = re.compile(r"injection=[a-z]+:([0-9.]+)")
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.9]
DEFAULT = 0.7


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Stack:
    def __init__(self, warden, rules):
        self.tmp = tempfile.mkdtemp(prefix="warden-eval-inj-")
        sp, gp, ap = free_port(), free_port(), free_port()
        self.procs = []
        self.procs.append(subprocess.Popen([warden, "sim", "--listen", f"127.0.0.1:{sp}", "--reply", "ok"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(sp, self.procs[-1])
        cfg = os.path.join(self.tmp, "warden.yaml")
        with open(cfg, "w") as f:
            f.write(f"listen: 127.0.0.1:{gp}\nadmin: {{ address: 127.0.0.1:{ap} }}\nworkers: 2\n"
                    "auth: { mode: none }\n"
                    f"upstreams:\n  - {{ name: sim, url: http://127.0.0.1:{sp}/v1, api_key_env: EVAL_KEY }}\n"
                    "models:\n  - { name: m, upstream: sim, upstream_model: sim }\n"
                    f"limits: {{ max_body_bytes: 4MiB }}\n"
                    f"guard: {{ rules_dir: {rules}, default_profile: eval }}\n"
                    "guard_profiles:\n  eval: { injection: { threshold: 0.7, action: flag } }\n")
        self.procs.append(subprocess.Popen([warden, "serve", "-c", cfg], stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.tmp, "warden.err"), "wb"),
                                           env=dict(os.environ, EVAL_KEY="k")))
        wait_port(gp, self.procs[-1])
        self.url = f"http://127.0.0.1:{gp}/v1/chat/completions"

    def score(self, text):
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                h = r.headers.get("x-warden-guard", "")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"HTTP {e.code}: {e.read()[:300]!r}")
        m = SCORE.search(h)
        return float(m.group(1)) if m else 0.0

    def close(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def load(path):
    if path.endswith(".jsonl"):
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    with open(path) as f:
        return [{"text": x["prompt"], "label": x["label"], "category": x.get("source", "-")} for x in json.load(f)]


def rates(scores, labels, thr):
    tp = sum(1 for s, l in zip(scores, labels) if l and s >= thr)
    fp = sum(1 for s, l in zip(scores, labels) if not l and s >= thr)
    pos = sum(labels)
    neg = len(labels) - pos
    return tp, pos, fp, neg


def pct(a, b):
    return f"{100.0 * a / b:5.1f}%" if b else "   n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warden", default=os.environ.get("WARDEN_BIN", os.path.join(ROOT, "build", "warden")))
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dev"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the benign FP rate exceeds 3%% at 0.7")
    ap.add_argument("--misses", action="store_true", help="list missed attacks and false positives")
    a = ap.parse_args()

    sets = [("warden injection set", os.path.join(ROOT, "tests", "eval", "data", "injection_set.jsonl"))]
    for name, fn in [("InjecGuard valid", "injection_injecguard_valid.json"),
                     ("WildGuard benign", "benign_prompts_wildguard.json")]:
        p = os.path.join(a.data, fn)
        if os.path.exists(p):
            sets.append((name, p))
        else:
            print(f"note: {p} not found, skipped", file=sys.stderr)

    stack = Stack(a.warden, a.rules)
    results = {}
    try:
        for name, path in sets:
            rows = load(path)
            with ThreadPoolExecutor(8) as ex:
                scores = list(ex.map(stack.score, [r["text"] for r in rows]))
            results[name] = (rows, scores)
    finally:
        stack.close()

    print(f"injection screen, rules {a.rules}; detected = score >= threshold (default {DEFAULT})\n")
    print(f"{'data set':24} {'n':>5} {'attacks':>7} " + " ".join(f"{'rec@' + str(t):>9} {'fp@' + str(t):>8}" for t in THRESHOLDS))
    fp_default = None
    for name, (rows, scores) in results.items():
        labels = [int(r["label"]) for r in rows]
        cols = []
        for t in THRESHOLDS:
            tp, pos, fp, neg = rates(scores, labels, t)
            cols.append(f"{pct(tp, pos):>9} {pct(fp, neg):>8}")
            if name == "WildGuard benign" and t == DEFAULT:
                fp_default = fp / neg if neg else 0.0
        print(f"{name:24} {len(rows):5d} {sum(labels):7d} " + " ".join(cols))

    print(f"\nper category at {DEFAULT} (recall for attacks, false-positive rate for benign):")
    for name, (rows, scores) in results.items():
        by = defaultdict(lambda: [0, 0])
        for r, s in zip(rows, scores):
            key = (r.get("category", "-"), int(r["label"]))
            by[key][1] += 1
            by[key][0] += s >= DEFAULT
        for (cat, lab), (hit, n) in sorted(by.items()):
            kind = "recall" if lab else "fp"
            print(f"  {name:22} {cat:32} {kind:6} {hit:4d}/{n:<4d} {pct(hit, n)}")

    if a.misses:
        for name, (rows, scores) in results.items():
            for r, s in zip(rows, scores):
                if (int(r["label"]) == 1) != (s >= DEFAULT):
                    kind = "MISS" if int(r["label"]) else "FP  "
                    print(f"{kind} {name:20} {s:.2f} {r['text'][:140]!r}")

    if fp_default is not None:
        print(f"\nWildGuard benign false-positive rate at {DEFAULT}: {100 * fp_default:.2f}% (target <= 3%)")
        if a.check and fp_default > 0.03:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

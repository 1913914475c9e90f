#!/usr/bin/python3
"""Privacy-guard evaluation (make eval-guard): per-entity precision / recall / F1 and false-positive
rates, using only the Python standard library (Debian's /usr/bin/python3).

Data sets (../shared/data/dev/ next to the repository, or --data DIR):
  pii_presidio_generated_small.json   100 synthetic sentences from presidio-research (MIT), labelled
  benign_prompts_wildguard.json       971 benign prompts (WildGuard), no personal data expected
plus a deterministic synthetic set generated here (--synthetic N, default 400) with valid identifiers
and near-misses (bad checksums), because the Presidio sample has no IBAN at all and only 2-3 emails,
IP addresses and SSNs.

Scanner: `warden scan --jsonl --field full_text` (findings grouped by record) when the binary has that
command, else the guard_eval harness (tests/eval/guard_eval.c); --cmd overrides. Either prints one JSON line
per input line: {"findings": [{"type", "start", "end", "rule", "score"}]} with byte offsets.

Matching rule: a prediction is correct when its warden type is the mapped type of a labelled span
and the two spans overlap (share at least one character). Recall counts labelled spans overlapped by
at least one prediction of the mapped type; precision counts predictions overlapping at least one
labelled span of their type. Labelled spans whose type has no warden counterpart (ADDRESS, LOCATION,
ORGANIZATION, TITLE, DOMAIN_NAME) are not scored, and a prediction that overlaps only such a span
counts as a false positive.
"""
import argparse
import json
import os
import random
import subprocess
import sys
from collections import defaultdict

# Presidio entity type -> warden type. DATE_TIME is mapped to DATE_OF_BIRTH because that is warden's
# only date detector; warden deliberately reports dates only next to a birth word, so its recall on
# generic DATE_TIME spans is expected to be low and is not a target.
MAPPING = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "US_PASSPORT": "US_PASSPORT",
    "US_ITIN": "US_ITIN",
    "US_BANK_NUMBER": "ABA_ROUTING",
    "UK_NHS": "NHS_NUMBER",
    "CRYPTO": "CRYPTO_WALLET",
    "MAC_ADDRESS": "MAC_ADDRESS",
    "DATE_TIME": "DATE_OF_BIRTH",
}
TARGETS = {"EMAIL": 0.95, "CREDIT_CARD": 0.95, "IBAN": 0.95, "US_SSN": 0.95, "IP_ADDRESS": 0.95,
           "PHONE_NUMBER": 0.95}

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def find_scanner(args):
    if args.cmd:
        return args.cmd.split()
    warden = os.path.join(ROOT, "build", "warden")
    if os.path.exists(warden):
        probe = subprocess.run([warden, "scan", "--help"], capture_output=True, text=True)
        if probe.returncode == 0 and "--jsonl" in (probe.stdout + probe.stderr):
            return [warden, "scan", "--jsonl", "--field", "full_text", "--rules", args.rules]
    for cand in (os.path.join(ROOT, "build", "tests", "unit", "guard", "guard_eval"),
                 os.path.join(ROOT, "build", "guard_eval")):
        if os.path.exists(cand):
            return [cand, "--rules", args.rules, "--field", "full_text"]
    sys.exit("eval_pii: no scanner found (build with -Dtests=true, or pass --cmd)")


def scan(cmd, texts):
    """Runs the scanner over texts; returns per text a list of findings with character offsets."""
    data = "".join(json.dumps({"full_text": t}) + "\n" for t in texts)
    p = subprocess.run(cmd, input=data.encode(), capture_output=True, cwd=ROOT)
    if p.returncode not in (0, 1):
        sys.exit("eval_pii: scanner failed (%d): %s" % (p.returncode, p.stderr.decode(errors="replace")))
    lines = p.stdout.decode().splitlines()
    if cmd[1:2] == ["scan"]:
        # warden scan prints one line per finding, {"line": N, ...} (1-based record number)
        per = [[] for _ in texts]
        for line in lines:
            f = json.loads(line)
            per[f["line"] - 1].append(f)
        lines = [json.dumps({"findings": fs}) for fs in per]
    if len(lines) != len(texts):
        sys.exit("eval_pii: scanner printed %d lines for %d inputs" % (len(lines), len(texts)))
    out = []
    for text, line in zip(texts, lines):
        obj = json.loads(line)
        if "error" in obj:
            sys.exit("eval_pii: scanner error %s on %r" % (obj["error"], text[:80]))
        # byte offsets -> character offsets
        b2c = {}
        pos = 0
        for ci, ch in enumerate(text):
            b2c[pos] = ci
            pos += len(ch.encode())
        b2c[pos] = len(text)
        fs = []
        for f in obj.get("findings", []):
            fs.append(dict(f, start=b2c.get(f["start"], f["start"]), end=b2c.get(f["end"], f["end"])))
        out.append(fs)
    return out


def overlaps(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def score(items, preds):
    """items: [(text, [(wtype or None, start, end, raw_type)])]; returns per-type tp/fp/fn + errors."""
    st = defaultdict(lambda: {"tp_r": 0, "fn": 0, "tp_p": 0, "fp": 0})
    errors = []
    for (text, gold), fs in zip(items, preds):
        for wt, s, e, raw in gold:
            if wt is None:
                continue
            hit = any(f["type"] == wt and overlaps(s, e, f["start"], f["end"]) for f in fs)
            st[wt]["tp_r" if hit else "fn"] += 1
            if not hit:
                errors.append(("FN", wt, text[s:e], text))
        for f in fs:
            ok = any(wt == f["type"] and overlaps(s, e, f["start"], f["end"]) for wt, s, e, _ in gold)
            st[f["type"]]["tp_p" if ok else "fp"] += 1
            if not ok:
                errors.append(("FP", f["type"] + " " + f["rule"], text[f["start"]:f["end"]], text))
    return st, errors


def prf(c):
    p = c["tp_p"] / (c["tp_p"] + c["fp"]) if c["tp_p"] + c["fp"] else None
    r = c["tp_r"] / (c["tp_r"] + c["fn"]) if c["tp_r"] + c["fn"] else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r else (0.0 if p is not None and r is not None else None)
    return p, r, f1


def fmt(x):
    return "   -  " if x is None else "%6.3f" % x


def report(title, st, targets=None):
    print("\n== %s" % title)
    print("%-20s %6s %6s %6s %6s %6s %6s" % ("type", "gold", "pred", "P", "R", "F1", "target"))
    fails = []
    for t in sorted(st):
        c = st[t]
        p, r, f1 = prf(c)
        tgt = ""
        if targets and t in targets:
            okay = f1 is not None and f1 >= targets[t]
            tgt = ("ok" if okay else "MISS") + " %.2f" % targets[t]
            if not okay:
                fails.append(t)
        print("%-20s %6d %6d %s %s %s  %s" % (t, c["tp_r"] + c["fn"], c["tp_p"] + c["fp"], fmt(p), fmt(r), fmt(f1), tgt))
    return fails


# ---- deterministic synthetic set ------------------------------------------------------------------

def luhn_complete(prefix, length, rnd):
    d = [int(c) for c in prefix] + [rnd.randrange(10) for _ in range(length - len(prefix) - 1)]
    for check in range(10):
        digits = d + [check]
        s = 0
        for i, v in enumerate(reversed(digits)):
            if i % 2:
                v *= 2
                v -= 9 if v > 9 else 0
            s += v
        if s % 10 == 0:
            return "".join(map(str, digits))


def iban_make(cc, bban):
    num = "".join(str(int(c, 36)) for c in bban + cc + "00")
    return cc + "%02d" % (98 - int(num) % 97) + bban


def synthetic(n, seed=20251125):
    rnd = random.Random(seed)
    first = ["Alice", "Rahul", "Mei", "Carlos", "Fatima", "Jonas", "Olga", "Kwame"]
    iban_fmt = {"DE": "8n10n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "ES": "20n", "IT": "1a10n12c",
                "BE": "12n", "CH": "5n12c", "PL": "24n", "SE": "20n", "AT": "16n", "NO": "11n"}

    def bban(spec):
        out, num = "", ""
        for ch in spec:
            if ch.isdigit():
                num += ch
                continue
            k = int(num)
            num = ""
            pool = "0123456789" if ch == "n" else ("ABCDEFGHIJKLMNOPQRSTUVWXYZ" if ch == "a" else "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            out += "".join(rnd.choice(pool) for _ in range(k))
        return out

    def card():
        pre, ln = rnd.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                              ("6011", 16), ("3530", 16), ("36", 14), ("62", 16)])
        c = luhn_complete(pre, ln, rnd)
        style = rnd.randrange(3)
        if style == 1 and ln == 16:
            c = " ".join(c[i:i + 4] for i in range(0, 16, 4))
        elif style == 2 and ln == 16:
            c = "-".join(c[i:i + 4] for i in range(0, 16, 4))
        return c

    def ssn():
        while True:
            a, g, s = rnd.randrange(1, 900), rnd.randrange(1, 100), rnd.randrange(1, 10000)
            if a != 666:
                return "%03d-%02d-%04d" % (a, g, s)

    def phone():
        a, e, l = rnd.randrange(200, 1000), rnd.randrange(200, 1000), rnd.randrange(10000)
        if a % 100 == 11 or e % 100 == 11:
            a, e = 415, 867
        return rnd.choice(["(%d) %d-%04d", "%d-%d-%04d", "+1 %d %d %04d", "%d.%d.%04d"]) % (a, e, l)

    def ipv4():
        return ".".join(str(rnd.randrange(1, 255)) for _ in range(4))

    def ipv6():
        g = ["%x" % rnd.randrange(1, 65536) for _ in range(8)]
        return rnd.choice([":".join(g), "2001:db8::" + g[0], "fe80::" + ":".join(g[:4])])

    def email():
        return "%s.%s%d@%s" % (rnd.choice(first).lower(), rnd.choice(["smith", "ng", "garcia"]), rnd.randrange(100),
                               rnd.choice(["example.com", "mail.co.uk", "uni.edu", "corp.io"]))

    def iban():
        cc = rnd.choice(sorted(iban_fmt))
        v = iban_make(cc, bban(iban_fmt[cc]))
        if rnd.randrange(2):
            v = " ".join(v[i:i + 4] for i in range(0, len(v), 4))
        return v

    gens = {"CREDIT_CARD": (card, ["Charge it to %s please.", "My card number is %s, expiry 04/27.", "%s"]),
            "US_SSN": (ssn, ["My SSN is %s.", "social security number: %s", "Employee %s record"]),
            "PHONE_NUMBER": (phone, ["Call me at %s tomorrow.", "phone: %s", "You can reach the office on %s."]),
            "IP_ADDRESS": (lambda: rnd.choice([ipv4, ipv6])(), ["Login from %s was blocked.", "server at %s", "ip=%s"]),
            "EMAIL": (email, ["Write to %s for details.", "contact: %s", "Send the invoice to <%s>."]),
            "IBAN": (iban, ["Please wire it to IBAN %s.", "Account: %s", "Transfer to %s by Friday."])}
    # near-misses that must not be reported
    negs = ["Order 4111111111111112 shipped.", "Reference 123-45-6789 is the sample.", "Version 1.2.3.4000 is out.",
            "IBAN DE89370400440532013001 was rejected.", "Call 555-0100 for a demo.", "Invoice 2024-0042-17 attached.",
            "Meet at 10:30:45 on 2024-03-12.", "The value 256.1.1.1 is not an address.", "Use std::abs and ::cafe here.",
            "Email me at john at example dot com.", "Population 8 000 000 000 people.", "ISBN 978-3-16-148410-0"]
    items = []
    types = sorted(gens)
    for i in range(n):
        if i % 8 == 7:
            items.append((rnd.choice(negs), []))
            continue
        t = types[i % len(types)]
        fn, tmpls = gens[t]
        v = fn()
        tmpl = rnd.choice(tmpls)
        text = tmpl % v
        s = text.index(v)
        items.append((text, [(t, s, s + len(v), t)]))
    return items


def obfuscated(items, seed=20261206):
    """The synthetic set with each identifier written the way a reader and a model still see it whole
    but a naive pattern does not: a zero-width space or a soft hyphen inside it, fullwidth digits, or
    no-break spaces and en dashes for its separators (near-misses get the same treatment)."""
    rnd = random.Random(seed)

    def hide(v):
        k = rnd.randrange(4)
        if k == 1 and any(c.isdigit() for c in v):
            return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in v)
        if k == 2 and (" " in v or "-" in v):
            return v.replace(" ", "\u00a0").replace("-", "\u2013")
        i = rnd.randrange(1, len(v))
        return v[:i] + ("\u00ad" if k == 3 else "\u200b") + v[i:]

    out = []
    for text, gold in items:
        if not gold:
            out.append((hide(text), []))
            continue
        (t, s, e, raw), = gold
        v = hide(text[s:e])
        out.append((text[:s] + v + text[e:], [(t, s, s + len(v), raw)]))
    return out


def secret_samples(seed=7):
    """One made-up credential per common provider format (random characters in the documented shape),
    each in a sentence; every one must be reported as a secret."""
    rnd = random.Random(seed)
    an = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def rs(n, pool=an):
        return "".join(rnd.choice(pool) for _ in range(n))
    hx, up = "0123456789abcdef", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    fake = {
        "AWS_ACCESS_KEY": "AKIA" + rs(16, up),
        "AWS_SECRET_KEY": "aws_secret_access_key = " + rs(40, an + "/+"),
        "GCP_API_KEY": "AIza" + rs(35, an + "_-"),
        "GITHUB_TOKEN": "ghp_" + rs(36),
        "GITLAB_TOKEN": "glpat-" + rs(20),
        "SLACK_TOKEN": "xoxb-%s-%s-%s" % (rs(12, "0123456789"), rs(13, "0123456789"), rs(24)),
        "SLACK_WEBHOOK": "https://hooks.slack.com/services/T%s/B%s/%s" % (rs(8, up), rs(10, up), rs(24)),
        "STRIPE_KEY": "sk_live_" + rs(24),
        "OPENAI_KEY": "sk-proj-" + rs(40) + "T3BlbkFJ" + rs(40),
        "ANTHROPIC_KEY": "sk-ant-api03-" + rs(93, an + "_-") + "AA",
        "HUGGINGFACE_TOKEN": "hf_" + rs(34),
        "SENDGRID_KEY": "SG.%s.%s" % (rs(22), rs(43)),
        "NPM_TOKEN": "npm_" + rs(36),
        "PYPI_TOKEN": "pypi-AgEIcHlwaS5vcmc" + rs(70),
        "SHOPIFY_TOKEN": "shpat_" + rs(32, hx),
        "DIGITALOCEAN_TOKEN": "dop_v1_" + rs(64, hx),
        "TELEGRAM_TOKEN": "%s:AA%s" % (rs(10, "0123456789"), rs(33)),
        "DATABRICKS_TOKEN": "dapi" + rs(32, hx),
        "VAULT_TOKEN": "hvs." + rs(90),
        "NEW_RELIC_KEY": "NRAK-" + rs(27, up),
        "PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\n" + rs(64, an + "+/") + "\n-----END RSA PRIVATE KEY-----",
        "JWT": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + rs(43, an + "_-"),
        "CONNECTION_STRING": "postgres://app:%s@db.internal:5432/main" % rs(16),
        "GENERIC_SECRET": "client_secret: \"%s\"" % rs(32),
        "PAYPAL_TOKEN": "access_token$production$%s$%s" % (rs(16, "abcdefghijklmnopqrstuvwxyz0123456789"), rs(32, hx)),
        "AGE": "AGE-SECRET-KEY-1" + rs(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
    }
    return [("Here is the config: %s -- keep it safe." % v, k) for k, v in sorted(fake.items())]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dev"))
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules"))
    ap.add_argument("--cmd", help="scanner command (reads JSONL on stdin, field full_text)")
    ap.add_argument("--synthetic", type=int, default=400)
    ap.add_argument("--errors", action="store_true", help="print every false positive / negative")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    cmd = find_scanner(args)
    print("scanner: %s" % " ".join(cmd))
    failed = []

    presidio = json.load(open(os.path.join(args.data, "pii_presidio_generated_small.json"), encoding="utf-8"))
    items = []
    for ex in presidio:
        gold = [(MAPPING.get(s["entity_type"]), s["start_position"], s["end_position"], s["entity_type"])
                for s in ex["spans"]]
        items.append((ex["full_text"], gold))
    preds = scan(cmd, [t for t, _ in items])
    st, errs = score(items, preds)
    fails = report("presidio-research generated sample (%d sentences); mapping: %s" % (
        len(items), ", ".join("%s->%s" % kv for kv in sorted(MAPPING.items()))), st, TARGETS)
    unscored = defaultdict(int)
    for _, gold in items:
        for wt, _, _, raw in gold:
            if wt is None:
                unscored[raw] += 1
    print("not scored (no warden type): %s" % ", ".join("%s %d" % kv for kv in sorted(unscored.items())))
    # a target type absent from this sample is judged on the synthetic set instead
    failed += [t for t in fails if st[t]["tp_r"] + st[t]["fn"] > 0]
    if args.errors:
        for e in errs:
            print("  %s %-28s %-30r in %r" % (e[0], e[1], e[2], e[3][:120]))

    if args.synthetic:
        syn = synthetic(args.synthetic)
        spreds = scan(cmd, [t for t, _ in syn])
        sst, serrs = score(syn, spreds)
        failed += report("synthetic set (%d sentences, 1 in 8 a near-miss that must not be reported)" % len(syn),
                         sst, TARGETS)
        if args.errors:
            for e in serrs:
                print("  %s %-28s %-30r in %r" % (e[0], e[1], e[2], e[3][:120]))

        obf = obfuscated(syn)
        ost, oerrs = score(obf, scan(cmd, [t for t, _ in obf]))
        failed += report("the synthetic set hidden (zero-width space or soft hyphen inside, fullwidth digits, "
                         "no-break spaces and en dashes)", ost, TARGETS)
        if args.errors:
            for e in oerrs:
                print("  %s %-28s %-30r in %r" % (e[0], e[1], e[2], e[3][:120]))

    samples = secret_samples()
    spr = scan(cmd, [t for t, _ in samples])
    missed = [k for (t, k), fs in zip(samples, spr)
              if not any(f.get("class", f["rule"].split(".")[0]) == "secrets" for f in fs)]
    print("\n== secret formats: %d of %d made-up credentials reported as secrets%s" % (
        len(samples) - len(missed), len(samples), (" (missed: " + ", ".join(missed) + ")") if missed else ""))
    if missed:
        failed.append("secret-formats")

    benign = json.load(open(os.path.join(args.data, "benign_prompts_wildguard.json"), encoding="utf-8"))
    texts = [b["prompt"] for b in benign]
    bpreds = scan(cmd, texts)
    any_f = sum(1 for fs in bpreds if fs)
    sec = [(t, f) for t, fs in zip(texts, bpreds) for f in fs if f.get("class", f["rule"].split(".")[0]) == "secrets"]
    sec_prompts = len({id(t) for t, _ in sec})
    bytype = defaultdict(int)
    for fs in bpreds:
        for f in fs:
            bytype[f["type"]] += 1
    print("\n== benign prompts (%d, WildGuard): findings are false positives by construction" % len(texts))
    print("prompts with any finding:    %4d  (%.2f%%)" % (any_f, 100.0 * any_f / len(texts)))
    non_person = sum(1 for fs in bpreds if any(f["type"] != "PERSON" for f in fs))
    print("prompts with a non-PERSON finding: %4d  (%.2f%%)" % (non_person, 100.0 * non_person / len(texts)))
    person = sum(1 for fs in bpreds if any(f["type"] == "PERSON" for f in fs))
    print("prompts with a PERSON finding: %4d  (%.2f%%)" % (person, 100.0 * person / len(texts)))
    print("prompts with secret finding: %4d  (%.2f%%)  target 0" % (sec_prompts, 100.0 * sec_prompts / len(texts)))
    print("findings by type: %s" % (", ".join("%s %d" % kv for kv in sorted(bytype.items())) or "none"))
    if sec_prompts:
        failed.append("benign-secrets")
    if args.errors:
        for t, fs in zip(texts, bpreds):
            for f in fs:
                print("  FP %-28s %-30r in %r" % (f["type"] + " " + f["rule"], t[f["start"]:f["end"]], t[:120]))

    print("\nresult: %s" % ("all targets met" if not failed else "targets missed: " + ", ".join(sorted(set(failed)))))
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

"""The privacy guard in the gateway (issue 4): what reaches the upstream and what comes back.

- pseudonyms: an email and a card number reach `warden sim --echo-headers` as <EMAIL_1> and
  <CREDIT_CARD_1> (the values nowhere in what the upstream received) and come back restored, streamed
  and not; a placeholder split across SSE events (by a Python upstream double written here, at every
  position, per choice) is restored exactly once with no fragment left; a finish chunk without
  content flushes held text;
- the same value gets the same placeholder, different values are numbered, per exchange;
- JSON awareness: text parts, system messages, tool call arguments, `prompt`, `input` (string and
  list) are scanned; model/role and every other byte of the body are left alone; escapes and
  unicode survive, the output is valid JSON;
- block: 400 content_blocked naming the rule and profile, nothing reaches the upstream;
- x-warden-guard and the audit event carry types, actions and counts, never values;
- a role entitled to `phi` sends health identifiers unchanged, another role has them redacted;
- mask, redact and keyed hash (stable across requests and restarts with a state dir);
- a profile's allow list: listed values (any case; numbers with any spacing; every address of a listed
  domain) reach the model and
  leave in answers (whole and streamed) as written, even where their type blocks; others are acted on.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration/test_guard.py
"""
import json
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import conftest
from conftest import ROOT, UPSTREAM_KEY, WARDEN, Gateway, Sim

RULES = os.environ.get("WARDEN_TEST_RULES", str(ROOT / "rules"))  # the shipped rule set by default
CHAT = "/v1/chat/completions"
JSON_H = {"Content-Type": "application/json"}

EMAIL = "jane.doe@example.com"
EMAIL2 = "bob.smith@corp.example.org"
EMAIL3 = "ops-team@example.net"
CARD = "4111 1111 1111 1111"  # Visa test number (Luhn-valid)
GH_PAT = "ghp_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
NHS = "943 476 5919"  # mod-11 valid
MRN = "MRN: 00123456"

BOT = "support-bot@models.example.com"  # a model name that looks like an email
PH = re.compile(r"<[A-Z0-9_]+_\d+>")

GUARD = (
    f"guard: {{ rules_dir: {RULES}, default_profile: std }}\n"
    "guard_profiles:\n"
    "  std: { input: { EMAIL: pseudonymize, CREDIT_CARD: pseudonymize, secrets: block, phi: redact } }\n"
)

GUARD_FLAG = GUARD.replace("phi: redact } }", "phi: redact }, unreadable_input: flag }")
assert GUARD_FLAG != GUARD


# ---- helpers ------------------------------------------------------------------------------------------


def post(base, path, body, headers=None, timeout=10.0):
    h = dict(JSON_H)
    h.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(base + path, content=data, headers=h, timeout=timeout)


def chat(text, stream=False, **extra):
    b = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    if stream:
        b["stream"] = True
    b.update(extra)
    return b


def stream_events(base, body, headers=None):
    """(response, [SSE payload strings]) of a streamed answer, asserting OpenAI framing."""
    h = dict(JSON_H)
    h.update(headers or {})
    with httpx.Client(timeout=10) as c:
        with c.stream("POST", base + CHAT, content=json.dumps(body), headers=h) as r:
            data = b"".join(r.iter_raw())
    text = data.decode("utf-8")
    if r.status_code != 200:
        return r, text
    assert text.endswith("\n\n"), text[-200:]
    out = []
    for ev in text.split("\n\n")[:-1]:
        assert ev.startswith("data: ") and "\n" not in ev, ev
        out.append(ev[len("data: "):])
    return r, out


def stream_content(payloads, index=0):
    """Concatenated delta content of choice `index`; also checks every payload is valid JSON."""
    parts = []
    for p in payloads:
        if p == "[DONE]":
            continue
        o = json.loads(p)
        for ch in o.get("choices", []):
            if ch.get("index", 0) == index and "delta" in ch:
                parts.append(ch["delta"].get("content") or "")
    return "".join(parts)


def cli(*args):
    env = dict(os.environ, WARDEN_TEST_UPSTREAM_KEY=UPSTREAM_KEY)
    r = subprocess.run([WARDEN, *map(str, args)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, f"warden {args} exited {r.returncode}: {r.stdout} {r.stderr}"
    return r.stdout


class Upstream:
    """An OpenAI-compatible upstream double that records every request body (bytes) and answers:
    chat streams with the SSE events in `self.events` (list of chunk dicts, then [DONE]), one SSE
    event per HTTP chunk; chat non-streamed with `self.reply` (a full completion object, default an
    answer "ok"); completions and embeddings with minimal valid objects."""

    def __init__(self):
        self.bodies = []
        self.events = []
        self.reply = None
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.bodies.append((self.path, raw))
                req = json.loads(raw)
                if req.get("stream"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    try:
                        for ev in [json.dumps(e) for e in outer.events] + ["[DONE]"]:
                            data = f"data: {ev}\n\n".encode()
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    except OSError:  # the gateway ended the stream early (a test asserts on that)
                        self.close_connection = True
                    return
                if self.path.endswith("/embeddings"):
                    out = {"object": "list", "model": req.get("model"),
                           "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                           "usage": {"prompt_tokens": 1, "total_tokens": 1}}
                elif self.path.endswith("/chat/completions"):
                    out = outer.reply or {
                        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": req.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                else:
                    out = {"id": "cmpl-up", "object": "text_completion", "created": 1, "model": req.get("model"),
                           "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self):
        with self.lock:
            return self.bodies[-1][1]

    def count(self):
        with self.lock:
            return len(self.bodies)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True, scope="module")
def patient_start():
    """Compiling the full rule set takes seconds on a loaded machine: wait longer for the listener
    than conftest's default, so a slow start is not mistaken for a failure."""
    orig = conftest.wait_port

    def wait_port(port, proc=None, timeout=10.0):
        return orig(port, proc, max(timeout, 60.0))

    conftest.wait_port = wait_port
    yield
    conftest.wait_port = orig


def stop_and_judge(*procs):
    for p in procs:
        p.stop()
    for p in procs:
        err = p.stderr()
        if "AddressSanitizer" in err or "LeakSanitizer" in err or "runtime error:" in err:
            pytest.fail("sanitizer report in warden's stderr:\n" + err[-4000:])


@pytest.fixture(scope="module")
def sim_gw(tmp_path_factory, patient_start):
    """`warden sim --echo-headers` behind a gateway with the std profile (shared by the module)."""
    tmp = tmp_path_factory.mktemp("simgw")
    s = Sim(tmp, "--echo-headers")
    g = Gateway(tmp, s.port, extra=GUARD)
    yield s, g
    stop_and_judge(g, s)


@pytest.fixture(scope="module")
def auth_gw(tmp_path_factory, patient_start):
    """Authentication on, one key per role, `warden sim --echo-headers` upstream (shared by the module):
    clinician (entitled to phi, profile clinical), front-desk (strict), hasher (mask/redact/hash),
    raw (pseudonymize without restore). Yields (sim, gateway, {role: key}, extra yaml)."""
    tmp = tmp_path_factory.mktemp("authgw")
    state = tmp / "state"
    cli("init", "--state-dir", state)
    keys = {role: cli("key", "create", "--name", role, "--role", role, "--quiet", "--state-dir", state).strip()
            for role in ("clinician", "front-desk", "hasher", "raw")}
    extra = (
        f"state_dir: {state}\n"
        "auth: { mode: required }\n"
        "roles:\n"
        "  clinician: { models: [gpt-4o-mini], endpoints: [chat], data_classes: [phi], guard: clinical }\n"
        "  front-desk: { models: [gpt-4o-mini], endpoints: [chat], guard: strict }\n"
        "  hasher: { models: [gpt-4o-mini], endpoints: [chat], guard: hashing }\n"
        "  raw: { models: [gpt-4o-mini], endpoints: [chat], guard: norestore }\n"
        f"guard: {{ rules_dir: {RULES} }}\n"
        "guard_profiles:\n"
        "  clinical: { input: { phi: redact, pii: pseudonymize, secrets: block } }\n"
        "  strict: { input: { phi: redact, pii: pseudonymize, secrets: block } }\n"
        "  hashing: { input: { CREDIT_CARD: mask, IP_ADDRESS: redact, EMAIL: hash, secrets: redact } }\n"
        "  norestore: { input: { EMAIL: pseudonymize, CREDIT_CARD: pseudonymize }, restore: false }\n")
    s = Sim(tmp, "--echo-headers")
    g = Gateway(tmp, s.port, extra=extra)
    yield s, g, keys, extra
    stop_and_judge(g, s)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def double_gw(tmp_path_factory, patient_start):
    """The Python upstream double behind a gateway with the std profile, which lets what it cannot read
    pass flagged (shared by the module)."""
    tmp = tmp_path_factory.mktemp("doublegw")
    u = Upstream()
    g = Gateway(tmp, u.port, extra=GUARD_FLAG, models=[("gpt-4o-mini", "sim-small"), ("ada-emb", "emb-small"),
                                                       (BOT, "sim-small")])
    yield u, g
    stop_and_judge(g)
    u.close()


def chunk(content=None, finish=None, index=0):
    """A chat.completion.chunk with one choice; content None leaves the member out."""
    d = {} if content is None else {"content": content}
    ch = {"index": index, "delta": d, "finish_reason": finish}
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "sim-small",
            "choices": [ch]}


def no_values(blob, *values):
    """None of the values (nor a card number without spaces) occurs in blob (str or bytes)."""
    if isinstance(blob, bytes):
        blob = blob.decode("utf-8", "replace")
    for v in values:
        assert v not in blob, f"{v!r} leaked"
        assert v.replace(" ", "") not in blob.replace(" ", ""), f"{v!r} leaked (spacing changed)"


# ---- pseudonyms through warden sim ----------------------------------------------------------------------


def test_pseudonymized_upstream_restored_answer(sim_gw):
    s, g = sim_gw
    prompt = f"please write to {EMAIL} about the card {CARD} today"
    r = post(g.url, CHAT, chat(prompt))
    assert r.status_code == 200, r.text
    seen = r.json()["sim_request"]
    up = json.loads(seen["body"])
    assert up["messages"][0]["content"] == "please write to <EMAIL_1> about the card <CREDIT_CARD_1> today"
    assert up["model"] == "sim-small" and up["messages"][0]["role"] == "user"
    no_values(json.dumps(seen), EMAIL, CARD)  # nowhere in what the upstream received (headers, body)
    # the sim echoes the prompt: the answer has the original values back, no placeholder left
    answer = r.json()["choices"][0]["message"]["content"]
    assert answer.endswith(prompt), answer
    assert not PH.search(answer)
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:1,CREDIT_CARD:pseudonymize:1"

    # streamed: the sim cuts the echo into tokens, so placeholders may arrive in pieces
    r, ev = stream_events(g.url, chat(prompt, stream=True))
    assert r.status_code == 200
    assert ev[-1] == "[DONE]"
    text = stream_content(ev)
    assert text == answer
    assert text.count(EMAIL) == 1 and text.count(CARD) == 1
    for p in ev:
        assert "<EMAIL" not in p and "<CREDIT" not in p and "_1>" not in p, p
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:1,CREDIT_CARD:pseudonymize:1"



def test_profile_without_restore_keeps_placeholders(auth_gw):
    s, g, keys, _ = auth_gw
    prompt = f"please write to {EMAIL} about the card {CARD} today"
    r = post(g.url, CHAT, chat(prompt), bearer(keys["raw"]))
    assert r.status_code == 200, r.text
    answer = r.json()["choices"][0]["message"]["content"]
    assert answer.endswith("please write to <EMAIL_1> about the card <CREDIT_CARD_1> today"), answer
    no_values(answer, EMAIL, CARD)
    r, ev = stream_events(g.url, chat(prompt, stream=True), bearer(keys["raw"]))
    assert r.status_code == 200
    text = stream_content(ev)
    assert text == answer
    no_values("".join(ev), EMAIL, CARD)


def test_same_value_same_placeholder_per_exchange(sim_gw):
    s, g = sim_gw
    body = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": f"escalate to {EMAIL2} when needed"},
        {"role": "user", "content": f"{EMAIL} and {EMAIL2}, again {EMAIL}; card {CARD} twice: {CARD}"},
    ]}
    r = post(g.url, CHAT, body)
    assert r.status_code == 200, r.text
    up = json.loads(r.json()["sim_request"]["body"])
    # numbered in document order, across messages: EMAIL2 first seen in the system message
    assert up["messages"][0]["content"] == "escalate to <EMAIL_1> when needed"
    assert up["messages"][1]["content"] == ("<EMAIL_2> and <EMAIL_1>, again <EMAIL_2>; "
                                            "card <CREDIT_CARD_1> twice: <CREDIT_CARD_1>")
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:4,CREDIT_CARD:pseudonymize:2"
    answer = r.json()["choices"][0]["message"]["content"]
    assert answer.endswith(body["messages"][1]["content"]), answer
    # a new exchange has a new vault: numbering starts again
    r = post(g.url, CHAT, chat(f"only {EMAIL2}"))
    up = json.loads(r.json()["sim_request"]["body"])
    assert up["messages"][0]["content"] == "only <EMAIL_1>"
    assert r.json()["choices"][0]["message"]["content"].endswith(f"only {EMAIL2}")


# ---- streamed restore with a controlled upstream ---------------------------------------------------------


def test_placeholder_split_across_sse_events(double_gw):
    upstream, g = double_gw
    req = chat(f"mail {EMAIL}, card {CARD}", stream=True)

    upstream.events = [chunk("Hello <EMA"), chunk("IL_1> done"), chunk(finish="stop")]
    r, ev = stream_events(g.url, req)
    assert r.status_code == 200, ev
    no_values(upstream.last(), EMAIL, CARD)
    assert b"<EMAIL_1>" in upstream.last() and b"<CREDIT_CARD_1>" in upstream.last()
    joined = "".join(ev)
    assert joined.count(EMAIL) == 1
    assert "<EMA" not in joined and "IL_1>" not in joined
    assert stream_content(ev) == f"Hello {EMAIL} done"
    # nothing is delayed longer than needed: the first event carried "Hello ", the second the email
    contents = [json.loads(p)["choices"][0]["delta"].get("content") for p in ev[:-1]]
    assert contents[0] == "Hello " and contents[1] == f"{EMAIL} done", contents
    assert ev[-1] == "[DONE]"

    # every split position of a text with two placeholders, one request per position
    text = "to <EMAIL_1>, card <CREDIT_CARD_1>."
    want = f"to {EMAIL}, card {CARD}."
    for i in range(1, len(text)):
        upstream.events = [chunk(text[:i]), chunk(text[i:]), chunk(finish="stop")]
        r, ev = stream_events(g.url, req)
        assert stream_content(ev) == want, (i, ev)
        joined = "".join(ev)
        assert joined.count(EMAIL) == 1 and joined.count(CARD) == 1, (i, ev)
        assert not re.search(r"<[A-Z_]|[A-Z]_1>|_1>", joined), (i, ev)
    # every split position at once: one character per event
    upstream.events = [chunk(c) for c in text] + [chunk(finish="stop")]
    r, ev = stream_events(g.url, req)
    assert stream_content(ev) == want
    assert "".join(ev).count(EMAIL) == 1

    # two choices interleaved: each has its own restorer
    upstream.events = [chunk("a <EMA", index=0), chunk("b <CREDIT_", index=1), chunk("IL_1>", index=0),
                       chunk("CARD_1>", index=1), chunk(finish="stop", index=0), chunk(finish="stop", index=1)]
    r, ev = stream_events(g.url, req)
    assert stream_content(ev, 0) == f"a {EMAIL}"
    assert stream_content(ev, 1) == f"b {CARD}"
    # many choices (n up to 128): each index keeps its own text, whatever the number of restorers
    upstream.events = ([chunk(f"c{i} <EMA", index=i) for i in range(12)] + [chunk("IL_1>", index=i) for i in range(12)]
                       + [chunk(finish="stop", index=i) for i in range(12)])
    r, ev = stream_events(g.url, req)
    for i in range(12):
        assert stream_content(ev, i) == f"c{i} {EMAIL}", (i, stream_content(ev, i))

    # '<' that never becomes a placeholder is released unchanged, in order
    upstream.events = [chunk("if a <"), chunk(" b and x<EMAIL_9> y <"), chunk("EMAIL_1"), chunk("> z"),
                       chunk(finish="stop")]
    r, ev = stream_events(g.url, req)
    assert stream_content(ev) == f"if a < b and x<EMAIL_9> y {EMAIL} z"


def test_finish_chunk_flushes_held_text(double_gw):
    upstream, g = double_gw
    req = chat(f"mail {EMAIL}", stream=True)
    # the finish chunk's own content completes the placeholder
    upstream.events = [chunk("x <EMAIL"), chunk("_1>!", finish="stop")]
    r, ev = stream_events(g.url, req)
    assert stream_content(ev) == f"x {EMAIL}!"
    # a finish chunk with an empty content string
    upstream.events = [chunk("y <"), chunk("", finish="length")]
    r, ev = stream_events(g.url, req)
    assert stream_content(ev) == "y <"
    # the answer ends in what looks like the start of a placeholder; the finish chunk has no content
    upstream.events = [chunk("see <EMAIL_1> or <EMAI"), chunk(finish="stop")]
    r, ev = stream_events(g.url, req)
    assert r.status_code == 200
    assert stream_content(ev) == f"see {EMAIL} or <EMAI"
    fin = [json.loads(p) for p in ev[:-1] if json.loads(p)["choices"][0].get("finish_reason")]
    assert len(fin) == 1 and fin[0]["choices"][0]["finish_reason"] == "stop"
    assert fin[0]["choices"][0]["delta"].get("content") == "<EMAI"


def tool_chunk(args_by_index, content=None, finish=None, legacy=None):
    """A chunk whose delta carries tool call argument pieces {tool index: text} (and optionally content
    or a legacy function_call's arguments)."""
    d = {} if content is None else {"content": content}
    if args_by_index:
        d["tool_calls"] = [{"index": j, "function": {"arguments": a}} for j, a in args_by_index.items()]
    if legacy is not None:
        d["function_call"] = {"arguments": legacy}
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "sim-small",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def stream_tool_args(payloads):
    """{tool index: concatenated arguments} and the concatenated legacy function_call arguments, the way
    SDKs assemble them; also checks every payload is valid JSON."""
    tools, legacy = {}, ""
    for p in payloads:
        if p == "[DONE]":
            continue
        for ch in json.loads(p).get("choices", []):
            d = ch.get("delta") or {}
            for tc in d.get("tool_calls") or []:
                tools[tc["index"]] = tools.get(tc["index"], "") + ((tc.get("function") or {}).get("arguments") or "")
            legacy += (d.get("function_call") or {}).get("arguments") or ""
    return tools, legacy


def test_streamed_tool_call_arguments_restored(double_gw):
    upstream, g = double_gw
    req = chat(f"mail {EMAIL}, card {CARD}", stream=True)
    args = '{"to": "<EMAIL_1>", "card": "<CREDIT_CARD_1>"}'
    want = json.dumps({"to": EMAIL, "card": CARD})
    # every split position of the arguments across two events
    for i in range(1, len(args)):
        upstream.events = [tool_chunk({0: args[:i]}), tool_chunk({0: args[i:]}), chunk(finish="tool_calls")]
        r, ev = stream_events(g.url, req)
        assert r.status_code == 200, ev
        tools, _ = stream_tool_args(ev)
        assert tools == {0: want}, (i, tools)
        assert "".join(ev).count(EMAIL) == 1, (i, ev)
    # one character per event, two tool calls interleaved, content and a legacy function_call beside them
    a0, a1 = '{"a": "<EMAIL_1>"}', '{"b": "<CREDIT_CARD_1>"}'
    upstream.events = ([tool_chunk({0: a0[k], 1: a1[k]}) for k in range(min(len(a0), len(a1)))]
                       + [tool_chunk({1: a1[len(a0):]}, content="see <EMAIL_1>", legacy="<EMAIL_1>")]
                       + [chunk(finish="tool_calls")])
    r, ev = stream_events(g.url, req)
    tools, legacy = stream_tool_args(ev)
    assert tools == {0: json.dumps({"a": EMAIL}), 1: json.dumps({"b": CARD})}, tools
    assert legacy == EMAIL and stream_content(ev) == f"see {EMAIL}"
    # arguments that end in what looks like the start of a placeholder: held until the choice finishes,
    # then released unchanged in the finishing event (as content is), in both tool calls, with content
    upstream.events = [tool_chunk({0: '{"x": "<EMAI', 1: '{"y": "<CRED'}, content="and <EMA", legacy="<EM"),
                       chunk(finish="length")]
    r, ev = stream_events(g.url, req)
    assert r.status_code == 200, ev
    tools, legacy = stream_tool_args(ev)
    assert tools == {0: '{"x": "<EMAI', 1: '{"y": "<CRED'}, (tools, ev)
    assert legacy == "<EM" and stream_content(ev) == "and <EMA", ev
    fin = [json.loads(p) for p in ev[:-1] if json.loads(p)["choices"][0].get("finish_reason")]
    assert len(fin) == 1 and fin[0]["choices"][0]["finish_reason"] == "length"
    # a finishing event whose delta already has members gets the held text appended after them
    upstream.events = [tool_chunk({0: '{"x": "<EMAI'}), tool_chunk({}, content="", finish="tool_calls")]
    r, ev = stream_events(g.url, req)
    assert stream_tool_args(ev)[0] == {0: '{"x": "<EMAI'}, ev


def test_non_streamed_answer_restored_in_content_and_tool_calls(double_gw):
    upstream, g = double_gw
    upstream.reply = {
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "sim-small",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls",
             "message": {"role": "assistant", "content": "writing to <EMAIL_1> (<EMAIL_1>), card <CREDIT_CARD_1>",
                         "tool_calls": [{"id": "call_<EMAIL_1>", "type": "function",
                                         "function": {"name": "send",
                                                      "arguments": "{\"to\": \"<EMAIL_1>\", \"n\": \"<EMAIL_2>\"}"}}]}},
            {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "é <EMAIL_1> 😀"}},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    r = post(g.url, CHAT, chat(f"mail {EMAIL} card {CARD}"))
    assert r.status_code == 200, r.text
    c0, c1 = r.json()["choices"]
    assert c0["message"]["content"] == f"writing to {EMAIL} ({EMAIL}), card {CARD}"
    args = json.loads(c0["message"]["tool_calls"][0]["function"]["arguments"])
    assert args == {"to": EMAIL, "n": "<EMAIL_2>"}  # unknown placeholder stays
    assert c0["message"]["tool_calls"][0]["id"] == "call_<EMAIL_1>"  # not a text field
    assert c1["message"]["content"] == f"é {EMAIL} 😀"
    upstream.reply = None


# ---- JSON awareness ---------------------------------------------------------------------------------------


def test_member_names_the_model_reads_are_scanned(double_gw):
    """Property names of a tool schema are text the model reads: one holding an address or a card is
    rewritten like any string and restored in the tool call the model makes with it. Plain identifiers
    and token ids (logit_bias) are left alone; the rest of the body is byte for byte."""
    upstream, g = double_gw
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fill the form"}],
            "tools": [{"type": "function", "function": {"name": "fill", "parameters": {
                "type": "object", "required": [EMAIL],
                "properties": {EMAIL: {"type": "string"}, f"Card {CARD}": {"type": "string"},
                               "max_len": {"type": "integer"}, "Notes": {"type": "string"}}}}}],
            "logit_bias": {"50256": -100}}
    raw = json.dumps(body).encode()
    upstream.reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "sim-small",
                      "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                          "role": "assistant", "content": None, "tool_calls": [{
                              "id": "call_1", "type": "function", "function": {
                                  "name": "fill", "arguments": '{"<EMAIL_1>": "yes"}'}}]}}]}
    r = post(g.url, CHAT, raw)
    upstream.reply = None
    assert r.status_code == 200, r.text
    assert upstream.last() == (raw.replace(b'"gpt-4o-mini"', b'"sim-small"')
                               .replace(EMAIL.encode(), b"<EMAIL_1>").replace(CARD.encode(), b"<CREDIT_CARD_1>"))
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:2,CREDIT_CARD:pseudonymize:1"
    args = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {EMAIL: "yes"}


def test_every_text_field_scanned_everything_else_byte_identical(double_gw):
    upstream, g = double_gw
    args = json.dumps({"to": EMAIL3, "cc": [EMAIL]})
    raw = (
        '{ "model" :\t"gpt-4o-mini", "temperature": 0.70, "top_p":1E0,\n'
        f' "messages": [ {{"role": "system", "content": "route to {EMAIL2} only"}},\n'
        '  {"role": "user", "name": "u1", "content": [\n'
        f'     {{"type": "text", "text": "part one {EMAIL}"}},\n'
        '     {"type": "image_url", "image_url": {"url": "https://img.example/x.png", "detail": "low"}},\n'
        f'     {{"type": "text", "text": "card {CARD} \\u00e9\\n\\"q\\" \\ud83d\\ude00"}} ]}},\n'
        '  {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",\n'
        f'     "function": {{"name": "send_mail", "arguments": {json.dumps(args)}}}}}]}},\n'
        '  {"role": "tool", "tool_call_id": "call_1", "content": "sent"},\n'
        '  {"role": "user", "content": "plain \\u00e9t\\u00e9 caf\\u00e9 \\/ \\t unchanged"} ],\n'
        ' "x_unusual": {"nested": [1, 2.50e3, -0, null, true, false, "", {}], "k\\u0065y": "v"},\n'
        ' "logit_bias": {"50256": -100}, "stream": false }'
    ).encode()
    r = post(g.url, CHAT, raw)
    assert r.status_code == 200, r.text
    got = upstream.last()
    no_values(got, EMAIL, EMAIL2, EMAIL3, CARD)
    # placeholders in document order: system, text part, text part (card), tool arguments
    expect = (raw.replace(b'"gpt-4o-mini"', b'"sim-small"', 1)
              .replace(EMAIL2.encode(), b"<EMAIL_1>")
              .replace(EMAIL.encode(), b"<EMAIL_2>")
              .replace(EMAIL3.encode(), b"<EMAIL_3>"))
    # the string with the card is rebuilt from its decoded text: compare it decoded, the rest as bytes
    card_raw = f'"card {CARD} \\u00e9\\n\\"q\\" \\ud83d\\ude00"'.encode()
    assert card_raw in expect
    head, tail = expect.split(card_raw)
    assert got.startswith(head) and got.endswith(tail), (got, expect)
    rebuilt = got[len(head):len(got) - len(tail)]
    assert json.loads(rebuilt) == "card <CREDIT_CARD_1> é\n\"q\" 😀"
    up = json.loads(got)  # valid JSON, valid UTF-8
    assert json.loads(up["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {
        "to": "<EMAIL_3>", "cc": ["<EMAIL_2>"]}
    assert [m["role"] for m in up["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert r.headers["x-warden-guard"] == ("profile=std; EMAIL:pseudonymize:4,CREDIT_CARD:pseudonymize:1; "
                                           "unreadable=image_url(flag)")

    # structural fields are never scanned: a model name that looks like an email stays; a role is
    # structural only when it is a known one (servers that accept custom roles put them in the prompt)
    body = {"model": BOT, "messages": [{"role": "user", "content": f"hi {EMAIL}"},
                                       {"role": EMAIL2, "content": "x"}, {"role": "tool", "content": "y"}]}
    r = post(g.url, CHAT, body)
    assert r.status_code == 200, r.text
    up = json.loads(upstream.last())
    assert up["model"] == "sim-small" and up["messages"][0]["content"] == "hi <EMAIL_1>"
    assert [m["role"] for m in up["messages"]] == ["user", "<EMAIL_2>", "tool"]
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:2"  # the model was not counted

    # completions: prompt as a string and as a list
    for prompt, want in [(f"x {EMAIL}", "x <EMAIL_1>"),
                         ([f"a {EMAIL}", "b", f"c {EMAIL2} {EMAIL}"], ["a <EMAIL_1>", "b", "c <EMAIL_2> <EMAIL_1>"])]:
        r = post(g.url, "/v1/completions", {"model": "gpt-4o-mini", "prompt": prompt, "max_tokens": 5})
        assert r.status_code == 200, r.text
        up = json.loads(upstream.last())
        assert up["prompt"] == want and up["max_tokens"] == 5
        no_values(upstream.last(), EMAIL, EMAIL2)
    # embeddings: input as a string and as a list
    for inp, want in [(f"card {CARD}", "card <CREDIT_CARD_1>"),
                      ([f"{EMAIL}", f"{EMAIL3} x", "clean text"], ["<EMAIL_1>", "<EMAIL_2> x", "clean text"])]:
        raw = json.dumps({"model": "ada-emb", "input": inp, "encoding_format": "float"}).encode()
        r = post(g.url, "/v1/embeddings", raw)
        assert r.status_code == 200, r.text
        up = json.loads(upstream.last())
        assert up["input"] == want and up["encoding_format"] == "float" and up["model"] == "emb-small"
        no_values(upstream.last(), EMAIL, EMAIL3, CARD)

    # a body with nothing to change is forwarded byte for byte (model aside)
    clean = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"caf\\u00e9 \\ud83d\\ude00 <EMAIL_1>"}]}'
    r = post(g.url, CHAT, clean)
    assert r.status_code == 200, r.text
    assert upstream.last() == clean.replace(b'"gpt-4o-mini"', b'"sim-small"')
    assert r.headers["x-warden-guard"] == "profile=std; clean"



@pytest.fixture(scope="module")
def unread_gw(tmp_path_factory, patient_start):
    """The upstream double behind the std profile with the default unreadable_input (block) and an
    output filter, so that a spoken answer counts as unreadable too."""
    tmp = tmp_path_factory.mktemp("unreadgw")
    u = Upstream()
    g = Gateway(tmp, u.port, extra=GUARD.replace("phi: redact } }", "phi: redact }, output: { secrets: redact } }"),
                models=[("gpt-4o-mini", "sim-small"), ("ada-emb", "emb-small")])
    yield u, g
    stop_and_judge(g)
    u.close()


def test_unreadable_input_blocked_by_default(unread_gw):
    """What reaches the model as something other than scanned text (token ids, prompt embeddings,
    image / audio / file parts, a spoken answer) is refused, naming what it was; text passes."""
    upstream, g = unread_gw
    img = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    doc = {"type": "file", "file": {"filename": "a.pdf", "file_data": "JVBERi0="}}
    text = {"type": "text", "text": "describe it"}
    blocked = [
        (CHAT, chat([text, img]), "image_url"),
        (CHAT, chat([audio, text, doc, audio]), "input_audio,file"),
        (CHAT, chat([{"type": "im\\u0061ge_url", "image_url": {"url": "https://x.example/a.png"}}]), "other_part"),
        (CHAT, chat([{"type": "Video-URL", "video_url": {"url": "https://x.example/a.mp4"}}]), "other_part"),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": [9906, 1917]}, "token_ids"),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": [[9906], [1917, 0]]}, "token_ids"),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "", "prompt_embeds": "AAAA"}, "prompt_embeds"),
        ("/v1/embeddings", {"model": "ada-emb", "input": [[1, 2, 3]]}, "token_ids"),
        (CHAT, chat("hello", modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}),
         "audio_output"),
        (CHAT, chat([img], modalities=["audio"]), "image_url,audio_output"),
        # log probabilities repeat the answer's tokens, which the output filter does not rewrite
        (CHAT, chat("hello", logprobs=True, top_logprobs=2), "logprobs"),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "a", "logprobs": 3}, "logprobs"),
    ]
    before = upstream.count()
    for path, body, kinds in blocked:
        raw = json.dumps(body).replace("\\\\u00", "\\u00")  # an escaped part type is not a plain word
        r = post(g.url, path, raw)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == "content_blocked"
        assert err["message"].startswith(
            f"blocked by rule guard.unreadable_input (profile std): the request carries what the guard cannot "
            f"read ({kinds}); "), err
        assert f"unreadable={kinds}(block)" in r.headers["x-warden-guard"]
        assert upstream.count() == before, body
    rid = r.headers["x-warden-request-id"]

    # the same shapes without anything unreadable pass
    fine = [
        (CHAT, chat([text, {"type": "input_text", "text": "more"}])),
        (CHAT, chat("hello", modalities=["text"])),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": ["a", "b"]}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "a", "prompt_embeds": None}),
        ("/v1/embeddings", {"model": "ada-emb", "input": ["x", "y"], "dimensions": 8}),
        (CHAT, chat("numbers elsewhere are not text", logit_bias={"1917": -100}, stop=["\n"])),
        (CHAT, chat("hello", logprobs=False)),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "a", "logprobs": 0}),
        # the same names inside a schema or a tool definition are not the request's own members
        (CHAT, chat("fill the form", response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": {
            "type": "object", "properties": {"logprobs": True, "prompt": {"default": [1, 2]},
                                             "modalities": {"const": ["audio"]},
                                             "content": {"examples": [[{"type": "image_url"}]]}}}}})),
        (CHAT, chat("use the tool", tools=[{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"input": {"enum": [[1, 2]]}}}}}])),
    ]
    fine.append((CHAT, chat([{"type": "t\\u0065xt", "text": "x"}])))  # escaped, still the type text
    for path, body in fine:
        r = post(g.url, path, json.dumps(body).replace("\\\\u00", "\\u00"))
        assert r.status_code == 200, (body, r.text)
        assert "unreadable" not in r.headers["x-warden-guard"]
    assert upstream.count() == before + len(fine)

    deadline = time.time() + 5
    while True:
        ev = {e.get("request_id"): e for e in g.events(wait=0.3)}.get(rid)
        if ev or time.time() > deadline:
            break
    assert ev and ev["decision"] == "block" and ev["rule"] == "guard.unreadable_input", ev
    assert "unreadable:logprobs(block)" in ev["guard"], ev


def test_unreadable_input_flagged_passes_unchanged(double_gw):
    """unreadable_input: flag lets it through byte for byte and records what passed unread."""
    upstream, g = double_gw
    raw = b'{"model":"gpt-4o-mini","prompt":[9906,[1917]],"max_tokens":2}'
    r = post(g.url, "/v1/completions", raw)
    assert r.status_code == 200, r.text
    assert upstream.last() == raw.replace(b'"gpt-4o-mini"', b'"sim-small"')
    assert r.headers["x-warden-guard"] == "profile=std; clean; unreadable=token_ids(flag)"
    # text in the same request is still scanned and rewritten
    body = chat([{"type": "text", "text": f"mail {EMAIL}"},
                 {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}])
    r = post(g.url, CHAT, body)
    assert r.status_code == 200, r.text
    no_values(upstream.last(), EMAIL)
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:1; unreadable=input_audio(flag)"
    # std filters no answers: a spoken answer or log probabilities are not unreadable to it
    r = post(g.url, CHAT, chat("hi", modalities=["text", "audio"], logprobs=True))
    assert r.status_code == 200 and r.headers["x-warden-guard"] == "profile=std; clean", r.headers


def test_hidden_and_lookalike_characters_do_not_hide_identifiers(double_gw):
    """An address with a zero-width space inside, a card in fullwidth digits with ideographic spaces,
    an address written in invisible tag characters: all reach the model pseudonymized, whole, and come
    back as they were sent."""
    upstream, g = double_gw
    zw = "jane.d\u200boe@example.com"
    card = "\uff14\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11\u3000\uff11\uff11\uff11\uff11"
    tags = "".join(chr(0xE0000 + ord(c)) for c in EMAIL2)
    upstream.reply = None
    r = post(g.url, CHAT, chat(f"mail {zw} card {card} and {tags}."))
    assert r.status_code == 200, r.text
    got = json.loads(upstream.last())["messages"][0]["content"]
    assert got == "mail <EMAIL_1> card <CREDIT_CARD_1> and <EMAIL_2>.", got
    assert r.headers["x-warden-guard"] == "profile=std; EMAIL:pseudonymize:2,CREDIT_CARD:pseudonymize:1"
    # restored as sent, invisible characters included
    upstream.reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "sim-small",
                      "choices": [{"index": 0, "finish_reason": "stop", "message": {
                          "role": "assistant", "content": "ok <EMAIL_1>, <CREDIT_CARD_1>, <EMAIL_2>"}}]}
    r = post(g.url, CHAT, chat(f"mail {zw} card {card} and {tags}."))
    upstream.reply = None
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == f"ok {zw}, {card}, {tags}"
    # look-alike characters that hide nothing change nothing
    plain = "caf\u00e9 \u2014 \u201cquoted\u201d \uff08\uff09 \u00a0ok"
    raw = json.dumps(chat(plain), ensure_ascii=False).encode()
    r = post(g.url, CHAT, raw)
    assert r.status_code == 200 and r.headers["x-warden-guard"] == "profile=std; clean"
    assert upstream.last() == raw.replace(b'"gpt-4o-mini"', b'"sim-small"')

# ---- block, header and audit ------------------------------------------------------------------------------


def test_block_names_rule_and_nothing_reaches_upstream(double_gw):
    upstream, g = double_gw
    before = upstream.count()
    ids = []
    r = post(g.url, CHAT, chat(f"deploy with {GH_PAT} and tell {EMAIL}, card {CARD}"))
    ids.append(r.headers["x-warden-request-id"])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "content_blocked"
    assert err["message"] == "blocked by rule secrets.github_pat (profile std)"
    assert upstream.count() == before
    hdr = r.headers["x-warden-guard"]
    assert hdr.startswith("profile=std; ") and "GITHUB_TOKEN:block:1" in hdr, hdr
    no_values(r.text + hdr, GH_PAT, EMAIL, CARD)
    # the secret anywhere in the body blocks: in a tool argument, streamed
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "f", "arguments": json.dumps({"token": GH_PAT})}}]},
        {"role": "user", "content": "go"}]}
    r = post(g.url, CHAT, body)
    ids.append(r.headers["x-warden-request-id"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_blocked", r.text
    assert upstream.count() == before

    # an allowed request for comparison, then the audit events
    r = post(g.url, CHAT, chat(f"tell {EMAIL} about card {CARD}"))
    ids.append(r.headers["x-warden-request-id"])
    assert r.status_code == 200
    assert upstream.count() == before + 1
    deadline = time.time() + 5
    while True:
        events = {e.get("request_id"): e for e in g.events(wait=0.3)}
        if all(i in events for i in ids) or time.time() > deadline:
            break
    b1, b2, ok = (events[i] for i in ids)
    for e in (b1, b2):
        assert e["status"] == 400 and e["decision"] == "block", e
        assert e["code"] == "content_blocked" and e["rule"] == "secrets.github_pat", e
        assert e["guard_profile"] == "std" and "GITHUB_TOKEN:block:1" in e["guard"], e
    assert ok["decision"] == "allow" and ok["guard_profile"] == "std", ok
    assert ok["guard"] == "EMAIL:pseudonymize:1,CREDIT_CARD:pseudonymize:1", ok
    audit = g.audit_path.read_text()
    no_values(audit, GH_PAT, EMAIL, CARD)
    no_values(g.stderr() + g.stdout(), GH_PAT, EMAIL, CARD)


# ---- data classes by role ---------------------------------------------------------------------------------


def test_role_entitled_to_phi_sends_health_identifiers(auth_gw):
    s, g, keys, _ = auth_gw
    clin, desk = keys["clinician"], keys["front-desk"]
    prompt = f"patient NHS number {NHS}, {MRN}, contact {EMAIL}"
    assert post(g.url, CHAT, chat(prompt)).status_code == 401

    r = post(g.url, CHAT, chat(prompt), {"Authorization": f"Bearer {clin}"})
    assert r.status_code == 200, r.text
    up = json.loads(r.json()["sim_request"]["body"])["messages"][0]["content"]
    # phi passes unchanged; the entitlement covers phi only, so the email is still pseudonymized
    assert up == f"patient NHS number {NHS}, {MRN}, contact <EMAIL_1>", up
    hdr = r.headers["x-warden-guard"]
    assert hdr.startswith("profile=clinical; ") and "EMAIL:pseudonymize:1" in hdr, hdr
    assert "NHS_NUMBER:allow:1" in hdr and "MEDICAL_RECORD_NUMBER:allow:1" in hdr, hdr
    assert r.json()["choices"][0]["message"]["content"].endswith(prompt)

    r = post(g.url, CHAT, chat(prompt), {"Authorization": f"Bearer {desk}"})
    assert r.status_code == 200, r.text
    seen = r.json()["sim_request"]
    up = json.loads(seen["body"])["messages"][0]["content"]
    assert up == "patient NHS number [NHS_NUMBER], [MEDICAL_RECORD_NUMBER], contact <EMAIL_1>", up
    no_values(json.dumps(seen), NHS, "00123456", EMAIL)
    hdr = r.headers["x-warden-guard"]
    assert hdr.startswith("profile=strict; ") and "NHS_NUMBER:redact:1" in hdr, hdr
    evs = [e for e in g.events() if e.get("status") == 200]
    assert {"clinical", "strict"} <= {e.get("guard_profile") for e in evs}, evs
    no_values(g.audit_path.read_text(), NHS, "00123456", EMAIL)


def test_decision_one_item_per_type(auth_gw):
    """Two rules of one type (a titled name, a full name) make one item in x-warden-guard and the
    event, with the count of both."""
    s, g, keys, _ = auth_gw
    r = post(g.url, CHAT, chat("Dr. Okonkwo will see Megan Payne today."), bearer(keys["front-desk"]))
    assert r.status_code == 200, r.text
    up = json.loads(r.json()["sim_request"]["body"])["messages"][0]["content"]
    assert up == "<PERSON_1> will see <PERSON_2> today.", up
    assert r.headers["x-warden-guard"] == "profile=strict; PERSON:pseudonymize:2", r.headers["x-warden-guard"]
    ev = [e for e in g.events() if e.get("guard_profile") == "strict"][-1]
    assert ev["guard"] == "PERSON:pseudonymize:2", ev


def test_single_names_after_cues_pseudonymized(auth_gw):
    """A name standing alone is found after a cue ("my name is", "patient"), and only the name is
    replaced: the cue reaches the model as written, the answer comes back with the names."""
    s, g, keys, _ = auth_gw
    prompt = "My name is Duqyaha. Patient Vestergaard was admitted; the patient Will not be seen by Paris."
    r = post(g.url, CHAT, chat(prompt), bearer(keys["front-desk"]))
    assert r.status_code == 200, r.text
    up = json.loads(r.json()["sim_request"]["body"])["messages"][0]["content"]
    assert up == ("My name is <PERSON_1>. Patient <PERSON_2> was admitted; "
                  "the patient Will not be seen by Paris."), up
    assert r.headers["x-warden-guard"] == "profile=strict; PERSON:pseudonymize:2", r.headers["x-warden-guard"]
    assert r.json()["choices"][0]["message"]["content"].endswith(prompt)


# ---- mask, redact, keyed hash -----------------------------------------------------------------------------


def test_member_names_redacted_alike_are_refused(auth_gw):
    """Two property names redacted to the same text would make the body invalid JSON (duplicate names):
    the request is refused with 400 naming why, nothing reaches the model; names that stay distinct
    (hashed) pass."""
    s, g, keys, _ = auth_gw
    auth = bearer(keys["hasher"])
    before = len([e for e in g.events() if e.get("status") == 200])

    def body(props):
        return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                    "type": "object", "properties": props}}}]}

    r = post(g.url, CHAT, body({"203.0.113.7": {}, "203.0.113.8": {}}), auth)  # IP_ADDRESS: redact
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "content_blocked" and "guard.member_names" in err["message"], err
    assert "pseudonymize" in err["message"], err
    assert len([e for e in g.events() if e.get("status") == 200]) == before
    r = post(g.url, CHAT, body({EMAIL: {}, EMAIL2: {}}), auth)  # EMAIL: hash, distinct tags
    assert r.status_code == 200, r.text
    props = json.loads(r.json()["sim_request"]["body"])["tools"][0]["function"]["parameters"]["properties"]
    assert len(props) == 2 and all(k.startswith("[EMAIL:") for k in props), props


def test_mask_redact_hash_at_upstream(auth_gw, gateway):
    s, g, keys, extra = auth_gw
    auth = bearer(keys["hasher"])
    prompt = f"card {CARD} from server 203.0.113.7 for {EMAIL} and {EMAIL2}, again {EMAIL}, key {GH_PAT}"

    def upstream_text(gw, text, headers=auth):
        r = post(gw.url, CHAT, chat(text), headers)
        assert r.status_code == 200, r.text
        seen = r.json()["sim_request"]
        no_values(json.dumps(seen), CARD, "203.0.113.7", EMAIL, EMAIL2, GH_PAT)
        return json.loads(seen["body"])["messages"][0]["content"], r

    up, r = upstream_text(g, prompt)
    m = re.fullmatch(r"card \*{15}1111 from server \[IP_ADDRESS\] for \[EMAIL:([0-9a-f]{16})\] and "
                     r"\[EMAIL:([0-9a-f]{16})\], again \[EMAIL:([0-9a-f]{16})\], key \[GITHUB_TOKEN\]", up)
    assert m, up
    h1, h2, h3 = m.groups()
    assert h1 == h3 and h1 != h2  # the same value, the same hash
    hdr = r.headers["x-warden-guard"]
    for part in ("CREDIT_CARD:mask:1", "IP_ADDRESS:redact:1", "EMAIL:hash:3", "GITHUB_TOKEN:redact:1"):
        assert part in hdr, hdr
    # nothing to restore: the answer shows what the upstream saw
    assert r.json()["choices"][0]["message"]["content"].endswith(up)

    # stable across requests, and in another process of the same deployment (same state dir)
    up2, _ = upstream_text(g, f"hello {EMAIL}")
    assert up2 == f"hello [EMAIL:{h1}]"
    g2 = gateway(s.port, extra=extra)
    up3, _ = upstream_text(g2, f"bye {EMAIL}")
    assert up3 == f"bye [EMAIL:{h1}]"


def test_hash_with_state_dir_without_auth(sim, gateway, tmp_path):
    """A configured hash action is a keyed hash whenever the deployment has a key (a state dir), not
    only when authentication is on; it must never silently become something else."""
    state = tmp_path / "state"
    cli("init", "--state-dir", state)
    s = sim("--echo-headers")
    g = gateway(s.port, extra=(
        f"state_dir: {state}\n"
        f"guard: {{ rules_dir: {RULES}, default_profile: p }}\n"
        "guard_profiles:\n"
        "  p: { input: { EMAIL: hash } }\n"))
    r = post(g.url, CHAT, chat(f"for {EMAIL}"))
    assert r.status_code == 200, r.text
    up = json.loads(r.json()["sim_request"]["body"])["messages"][0]["content"]
    assert re.fullmatch(r"for \[EMAIL:[0-9a-f]{16}\]", up), up
    assert "EMAIL:hash:1" in r.headers["x-warden-guard"]


# ---- the profile's allow list -------------------------------------------------------------------------

ALLOWED = "Support@Example.com"
OK_PAT = "ghp_" + "9876543210ZyXwVuTsRqPoNmLkJiHgFeDcBa"  # a token the profile lets through (a test fixture's)
GUARD_ALLOW = (
    f"guard: {{ rules_dir: {RULES}, default_profile: std }}\n"
    "guard_profiles:\n"
    "  std:\n"
    "    input: { EMAIL: pseudonymize, CREDIT_CARD: pseudonymize, secrets: block }\n"
    "    output: { pii: redact, financial: redact }\n"
    f"    allow: [{ALLOWED}, '4111-1111-1111-1111', {OK_PAT}, '*@corp.example']\n"
)


@pytest.fixture(scope="module")
def allow_gw(tmp_path_factory, patient_start):
    """The Python upstream double behind a gateway whose profile allows one address and one card."""
    tmp = tmp_path_factory.mktemp("allowgw")
    u = Upstream()
    g = Gateway(tmp, u.port, extra=GUARD_ALLOW)
    yield u, g
    stop_and_judge(g)
    u.close()


def test_allow_list_passes_listed_values_only(allow_gw):
    upstream, g = allow_gw
    other_card = "5555 5555 5555 4444"
    prompt = f"mail support@example.com, Ops@Corp.Example and {EMAIL}, cards {CARD} and {other_card}"
    r = post(g.url, CHAT, chat(prompt))
    assert r.status_code == 200, r.text
    sent = json.loads(upstream.last())["messages"][0]["content"]
    # the listed address (any case) and card (any spacing) reach the model as written, the others do not
    assert sent == f"mail support@example.com, Ops@Corp.Example and <EMAIL_1>, cards {CARD} and <CREDIT_CARD_1>"
    hdr = r.headers["x-warden-guard"]
    assert "EMAIL:pseudonymize:1" in hdr and "CREDIT_CARD:pseudonymize:1" in hdr, hdr
    assert "EMAIL:allow:2" in hdr and "CREDIT_CARD:allow:1" in hdr, hdr
    no_values(hdr, EMAIL, other_card)

    # answers: the output filter redacts what is not listed, whole and streamed
    answer = f"Reach us at SUPPORT@example.com, not {EMAIL2}; card {CARD}, not {other_card}."
    want = f"Reach us at SUPPORT@example.com, not [EMAIL]; card {CARD}, not [CREDIT_CARD]."
    upstream.reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "sim-small",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                   "finish_reason": "stop"}]}
    try:
        r = post(g.url, CHAT, chat("hello"))
    finally:
        upstream.reply = None
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == want
    upstream.events = [chunk(answer[i:i + 7]) for i in range(0, len(answer), 7)] + [chunk(finish="stop")]
    try:
        r, payloads = stream_events(g.url, chat("hello", stream=True))
    finally:
        upstream.events = []
    assert r.status_code == 200, payloads
    assert stream_content(payloads) == want

    # a listed value passes even where its type would block; an unlisted one still blocks
    r = post(g.url, CHAT, chat(f"deploy with {OK_PAT}"))
    assert r.status_code == 200, r.text
    assert json.loads(upstream.last())["messages"][0]["content"] == f"deploy with {OK_PAT}"
    before = upstream.count()
    r = post(g.url, CHAT, chat(f"deploy with {GH_PAT}"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_blocked"
    assert upstream.count() == before

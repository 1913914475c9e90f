"""Integration tests of the proxy path: `warden serve` in front of `warden sim` (or of a tiny Python
upstream written here when the test needs to see or control the upstream side of the wire).

What is checked: responses through the gateway equal the upstream's own answers (only `id` and
`created` normalised), the request body rewrite (model name, stream_options) preserves every other
byte, OpenAI-shaped errors, upstream failures, cancellation on client disconnect, backpressure,
the upstream keep-alive pool, and the per-request event line (without any credential in it).

Run: /usr/bin/python3 -m pytest tests/integration/test_proxy.py -q
"""
import json
import re
import select
import socket
import threading
import time

import httpx
import pytest

from conftest import UPSTREAM_KEY, chat_body, free_port

CLIENT_SECRET = "client-secret-9a7b3e5d"  # what a client sends as its own Authorization; must never travel on
JSON = {"Content-Type": "application/json"}
REQ_ID = re.compile(r"^[0-9a-f]{16}$")


# ---- fixtures and helpers --------------------------------------------------------------------------


def post(base, path, body, headers=None, timeout=10.0):
    h = dict(JSON)
    h.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(base + path, content=data, headers=h, timeout=timeout)


def stream_raw(base, path, body, headers=None, timeout=10.0):
    """Posts and returns (response, de-chunked body bytes) of a possibly streamed answer."""
    h = dict(JSON)
    h.update(headers or {})
    with httpx.Client(timeout=timeout) as c:
        with c.stream("POST", base + path, content=json.dumps(body), headers=h) as r:
            data = b"".join(r.iter_raw())
    return r, data


def sse_payloads(data):
    """The data payloads of an SSE body, asserting OpenAI framing: every event is exactly one
    `data: ...` line followed by a blank line, and nothing is left unterminated."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n\n"), f"unterminated SSE body: {text[-200:]!r}"
    out = []
    for ev in text.split("\n\n")[:-1]:
        assert ev.startswith("data: ") and "\n" not in ev, f"unexpected SSE event {ev[:200]!r}"
        out.append(ev[len("data: "):])
    return out


def norm(obj):
    """Replaces the fields that legitimately differ between two calls (id, created)."""
    if isinstance(obj, (bytes, str)):
        if obj in ("[DONE]", b"[DONE]"):
            return "[DONE]"
        obj = json.loads(obj)
    obj = dict(obj)
    if "id" in obj:
        obj["id"] = "<id>"
    if "created" in obj:
        obj["created"] = 0
    return obj


def assert_openai_error(resp, status, code, param=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    assert REQ_ID.match(resp.headers.get("x-warden-request-id", "")), resp.headers
    err = resp.json()["error"]
    assert set(resp.json()) == {"error"}
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == code, err
    assert err["param"] == param, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def content_of_stream(payloads):
    """Concatenated delta content of chat chunks (text for completions)."""
    parts = []
    for p in payloads:
        if p == "[DONE]":
            continue
        o = json.loads(p)
        for ch in o.get("choices", []):
            if "delta" in ch:
                parts.append(ch["delta"].get("content") or "")
            elif "text" in ch:
                parts.append(ch["text"] or "")
    return "".join(parts)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def dechunk(data):
    """Decodes a chunked transfer-encoded body; returns (payload, complete)."""
    out, pos = bytearray(), 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out), data[eol + 2:eol + 4] == b"\r\n"
        start = eol + 2
        if len(data) < start + size + 2:
            return bytes(out), False
        out += data[start:start + size]
        assert data[start + size:start + size + 2] == b"\r\n", "bad chunk framing"
        pos = start + size + 2


def http_request(port, path, body, extra_headers=""):
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra_headers}\r\n").encode() + data


class UpstreamDouble:
    """A minimal HTTP/1.1 upstream in a thread. It records every request (raw head, headers, body),
    counts accepted TCP connections, honours keep-alive, and in mode "slow_stream" answers stream
    requests with one SSE event every 100 ms for up to 20 s while noticing when the peer closes.
    Failure modes: "close_before_answer" reads a request and closes without a byte of answer;
    "stall_stream" sends the head and two SSE events, then nothing (the connection stays open);
    "close_idle" answers normally but closes every connection 0.2 s after its answer, without
    saying so (no `Connection: close`): what a keep-alive pool meets as a stale connection."""

    def __init__(self, mode="json"):
        self.mode = mode
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = []
        self.peer_closed_at = []   # time.monotonic() when a slow stream's peer closed
        self.stream_started = threading.Event()
        self.stopping = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=2)
        self.sock.close()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(30)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, v = line.split(":", 1)
                    headers.setdefault(k.strip().lower(), []).append(v.strip())
                n = int(headers.get("content-length", ["0"])[0])
                while len(buf) < n:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.requests.append({"method": method, "path": path, "head": head, "headers": headers,
                                          "body": body})
                try:
                    req = json.loads(body) if body else {}
                except ValueError:
                    req = {}
                stream = isinstance(req, dict) and req.get("stream") is True
                if self.mode == "close_before_answer":
                    return
                if stream and self.mode == "stall_stream":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + self._event(req.get("model"), "one ") + self._event(req.get("model"), "two "))
                    while not self.stopping and c.recv(4096):
                        pass
                    return
                if stream and self.mode == "slow_stream":
                    self._slow_stream(c, req.get("model"))
                    return
                if stream:
                    self._short_stream(c, req.get("model"))
                    continue
                out = json.dumps({"id": "chatcmpl-double", "object": "chat.completion", "created": 1,
                                  "model": req.get("model") if isinstance(req, dict) else None,
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(out) + out)
                if self.mode == "close_idle":
                    time.sleep(0.2)
                    return
        except OSError:
            return
        finally:
            c.close()

    @staticmethod
    def _event(model, text):
        ev = json.dumps({"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": 1, "model": model,
                         "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        data = f"data: {ev}\n\n".encode()
        return b"%x\r\n%s\r\n" % (len(data), data)

    def _short_stream(self, c, model):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + self._event(model, "ok") + b"%x\r\ndata: [DONE]\n\n\r\n0\r\n\r\n" % len(b"data: [DONE]\n\n"))

    def _slow_stream(self, c, model):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.stream_started.set()
        for i in range(200):
            try:
                c.sendall(self._event(model, f"t{i} "))
            except OSError:
                break
            r, _, _ = select.select([c], [], [], 0.1)
            if r:
                try:
                    d = c.recv(4096)
                except OSError:
                    d = b""
                if not d:
                    break
        else:
            return
        with self.lock:
            self.peer_closed_at.append(time.monotonic())


@pytest.fixture
def upstream_double():
    doubles = []

    def start(mode="json"):
        d = UpstreamDouble(mode)
        doubles.append(d)
        return d

    yield start
    for d in doubles:
        d.stop()


# ---- pass-through equivalence ---------------------------------------------------------------------


def test_chat_non_stream_equals_direct(sim, gateway):
    s = sim()
    g = gateway(s.port)
    text = "the quick brown fox — naïve café ☕"
    via = post(g.url, "/v1/chat/completions", chat_body(text, model="gpt-4o-mini"))
    direct = post(s.url, "/v1/chat/completions", chat_body(text, model="sim-small"))
    assert via.status_code == 200, via.text
    assert direct.status_code == 200
    assert via.headers["content-type"] == direct.headers["content-type"]
    assert REQ_ID.match(via.headers["x-warden-request-id"])
    assert via.json()["model"] == "sim-small"  # the rewrite is visible: the upstream's model name
    assert norm(via.json()) == norm(direct.json())
    # the second configured model maps to another upstream name
    via2 = post(g.url, "/v1/chat/completions", chat_body(text, model="med-large"))
    assert via2.status_code == 200 and via2.json()["model"] == "llama-3.1-70b"


def test_chat_stream_with_client_include_usage_equals_direct(sim, gateway):
    s = sim()
    g = gateway(s.port)
    text = "alpha beta gamma delta epsilon"
    so = {"stream_options": {"include_usage": True}}
    r, via = stream_raw(g.url, "/v1/chat/completions", chat_body(text, stream=True, **so))
    _, direct = stream_raw(s.url, "/v1/chat/completions", chat_body(text, model="sim-small", stream=True, **so))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert REQ_ID.match(r.headers["x-warden-request-id"])
    pv, pd = sse_payloads(via), sse_payloads(direct)
    assert pv[-1] == "[DONE]"
    assert [norm(p) for p in pv] == [norm(p) for p in pd]
    # the client asked for usage, so the usage-only chunk reaches it
    usage_chunks = [json.loads(p) for p in pv[:-1] if json.loads(p).get("choices") == []]
    assert len(usage_chunks) == 1 and usage_chunks[0]["usage"]["completion_tokens"] > 0
    full = post(s.url, "/v1/chat/completions", chat_body(text, model="sim-small")).json()
    assert content_of_stream(pv) == full["choices"][0]["message"]["content"]


def test_chat_stream_hides_usage_chunk_warden_requested(sim, gateway):
    s = sim()
    g = gateway(s.port)
    text = "one two three four"
    r, via = stream_raw(g.url, "/v1/chat/completions", chat_body(text, stream=True))
    _, direct = stream_raw(s.url, "/v1/chat/completions", chat_body(text, model="sim-small", stream=True))
    assert r.status_code == 200
    pv, pd = sse_payloads(via), sse_payloads(direct)
    assert pv[-1] == "[DONE]" and pd[-1] == "[DONE]"
    objs = [json.loads(p) for p in pv[:-1]]
    # warden asked the upstream for usage; the resulting usage-only chunk must not reach this client
    assert all(o.get("choices") != [] for o in objs), pv
    assert all(o.get("usage") is None for o in objs), pv

    # Event by event equal to the direct stream. Because warden adds include_usage upstream, the
    # upstream marks every chunk with "usage": null (as OpenAI does); that member is the one
    # tolerated difference (see report), everything else must be identical.
    def strip_null_usage(p):
        o = norm(p)
        if isinstance(o, dict) and "usage" in o and o["usage"] is None:
            del o["usage"]
        return o

    assert [strip_null_usage(p) for p in pv] == [norm(p) for p in pd]
    full = post(s.url, "/v1/chat/completions", chat_body(text, model="sim-small")).json()
    assert content_of_stream(pv) == full["choices"][0]["message"]["content"]
    assert full["choices"][0]["message"]["content"] == "echo: " + text


def test_completions_and_embeddings_pass_through(sim, gateway):
    s = sim()
    g = gateway(s.port)
    comp = {"model": "gpt-4o-mini", "prompt": "Say this is a test", "max_tokens": 7}
    via = post(g.url, "/v1/completions", comp)
    direct = post(s.url, "/v1/completions", dict(comp, model="sim-small"))
    assert via.status_code == 200 and direct.status_code == 200, via.text
    assert via.json()["model"] == "sim-small"
    assert norm(via.json()) == norm(direct.json())

    so = {"stream": True, "stream_options": {"include_usage": True}}
    r, vs = stream_raw(g.url, "/v1/completions", dict(comp, **so))
    _, ds = stream_raw(s.url, "/v1/completions", dict(comp, model="sim-small", **so))
    assert r.status_code == 200
    pv, pd = sse_payloads(vs), sse_payloads(ds)
    assert pv[-1] == "[DONE]"
    assert [norm(p) for p in pv] == [norm(p) for p in pd]

    emb = {"model": "gpt-4o-mini", "input": ["first text", "second ☃"]}
    via = post(g.url, "/v1/embeddings", emb)
    direct = post(s.url, "/v1/embeddings", dict(emb, model="sim-small"))
    assert via.status_code == 200 and direct.status_code == 200, via.text
    assert via.json()["model"] == "sim-small"
    assert len(via.json()["data"]) == 2
    assert norm(via.json()) == norm(direct.json())

    # embeddings cannot stream
    assert_openai_error(post(g.url, "/v1/embeddings", dict(emb, stream=True)), 400, "invalid_type")


def test_models_lists_exactly_configured_names(sim, gateway):
    s = sim()
    g = gateway(s.port, models=[("alpha", "sim-small"), ("beta-2", "llama-3.1-8b"), ("gamma", "sim-small")])
    r = httpx.get(g.url + "/v1/models", timeout=5)
    assert r.status_code == 200
    assert REQ_ID.match(r.headers["x-warden-request-id"])
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["alpha", "beta-2", "gamma"]
    assert all(m["object"] == "model" for m in body["data"])
    # upstream names are not client-facing model ids
    assert "sim-small" not in [m["id"] for m in body["data"]]


# ---- body rewrite ---------------------------------------------------------------------------------

# Unusual formatting, escapes, raw UTF-8, surrogate pairs, numbers in odd spellings and unknown fields:
# all of it must reach the upstream unchanged; only the model value is replaced.
ODD_BODY = (
    '{ "messages" : [ {"role":"user","content":"h\\u00e9llo \\"quoted\\" back\\\\slash \\n nl \\t tab '
    '日本語 🙂 \\ud83d\\ude00 \\/"} ],\n'
    '  "model" :\t"gpt-4o-mini" , "temperature": 0.70, "top_p":1E0,'
    ' "x_unusual": {"nested": [1, 2.50e3, -0, null, true, false, "", {}], "k\\u0065y": "v"},'
    ' "logit_bias": {"50256": -100}, "user": "\\u0000zero" }\n'
).encode("utf-8")


def test_upstream_sees_credential_and_exact_body(sim, gateway):
    s = sim("--echo-headers", "--api-key", UPSTREAM_KEY)
    g = gateway(s.port)
    r = post(g.url, "/v1/chat/completions", ODD_BODY,
             headers={"Authorization": f"Bearer {CLIENT_SECRET}", "X-Client-Thing": "zzz"})
    assert r.status_code == 200, r.text
    seen = r.json()["sim_request"]
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_SECRET not in json.dumps(seen)
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["x-warden-request-id"] == r.headers["x-warden-request-id"]
    expected = ODD_BODY.replace(b'"gpt-4o-mini"', b'"sim-small"', 1)
    assert seen["body"].encode("utf-8") == expected
    assert int(seen["headers"]["content-length"]) == len(expected)


def test_model_written_with_escapes_is_matched_and_rewritten(sim, gateway):
    s = sim("--echo-headers")
    g = gateway(s.port)
    raw = b'{"model":"gpt\\u002d4o-mini","messages":[{"role":"user","content":"x"}]}'
    r = post(g.url, "/v1/chat/completions", raw)
    assert r.status_code == 200, r.text
    assert r.json()["sim_request"]["body"].encode() == raw.replace(b'"gpt\\u002d4o-mini"', b'"sim-small"')


def single_insertion(exp, act, member):
    """True if `act` is `exp` with exactly one contiguous insertion which, stripped of whitespace and
    of one separating comma, is the JSON object member(s) `member` (a dict)."""
    k = len(act) - len(exp)
    if k <= 0:
        return False
    p = 0
    while p < len(exp) and exp[p] == act[p]:
        p += 1
    for q in range(p, -1, -1):   # the insertion may start anywhere the two still agree
        if act[:q] != exp[:q] or act[q + k:] != exp[q:]:
            continue
        text = act[q:q + k].decode().strip()
        for cand in (text.rstrip(",").strip(), text.lstrip(",").strip()):
            try:
                if json.loads("{" + cand + "}") == member:
                    return True
            except ValueError:
                pass
    return False


def test_stream_request_rewrite_adds_include_usage(upstream_double, gateway):
    up = upstream_double()
    g = gateway(up.port)
    msgs = '"messages":[{"role":"user","content":"caf\\u00e9 ☕"}]'
    cases = [
        # (client body, check(expected-with-model-rewritten, what the upstream got))
        ('{"model":"gpt-4o-mini", "stream":true, ' + msgs + ', "n":1}', "insert_top"),
        ('{"model":"gpt-4o-mini","stream":true,"stream_options":{"foo":"bar"},' + msgs + '}', "insert_inner"),
        ('{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage": false},' + msgs + '}', "flip"),
        ('{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},' + msgs + '}', "same"),
        ('{"model":"gpt-4o-mini","stream":true,"stream_options":null,' + msgs + '}', "null"),
        ('{"model":"gpt-4o-mini","stream":false,' + msgs + '}', "same"),
    ]
    for body, kind in cases:
        n = len(up.requests)
        r = post(g.url, "/v1/chat/completions", body.encode(), headers={"Authorization": f"Bearer {CLIENT_SECRET}"})
        assert r.status_code == 200, (body, r.text)
        assert len(up.requests) == n + 1
        got = up.requests[-1]
        assert got["path"] == "/v1/chat/completions"
        assert got["headers"]["authorization"] == [f"Bearer {UPSTREAM_KEY}"]
        assert CLIENT_SECRET.encode() not in got["head"] + got["body"]
        exp = body.encode().replace(b'"gpt-4o-mini"', b'"sim-small"', 1)
        act = got["body"]
        parsed = json.loads(act)
        assert parsed["model"] == "sim-small"
        if kind == "same":
            assert act == exp, (body, act)
            continue
        assert parsed["stream_options"]["include_usage"] is True, act
        if kind == "insert_top":
            assert single_insertion(exp, act, {"stream_options": {"include_usage": True}}), act
        elif kind == "insert_inner":
            assert parsed["stream_options"] == {"foo": "bar", "include_usage": True}, act
            assert single_insertion(exp, act, {"include_usage": True}), act
        elif kind == "flip":
            assert act == exp.replace(b'"include_usage": false', b'"include_usage": true'), act
        elif kind == "null":
            pre, post_ = exp.split(b'"stream_options":null')
            assert act.startswith(pre + b'"stream_options":') and act.endswith(post_), act
            assert json.loads(act[len(pre) + len(b'"stream_options":'):len(act) - len(post_)]) == \
                {"include_usage": True}, act


# ---- client errors --------------------------------------------------------------------------------

ERROR_CASES = [
    # id, method, path, body, content-type, status, code, param
    ("unknown-model", "POST", "/v1/chat/completions", b'{"model":"nope","messages":[]}', "application/json",
     404, "model_not_found", "model"),
    ("upstream-name-not-client-name", "POST", "/v1/chat/completions", b'{"model":"sim-small","messages":[]}',
     "application/json", 404, "model_not_found", "model"),
    ("missing-model", "POST", "/v1/chat/completions", b'{"messages":[]}', "application/json",
     400, "missing_model", "model"),
    ("model-not-string", "POST", "/v1/chat/completions", b'{"model":7,"messages":[]}', "application/json",
     400, "missing_model", "model"),
    ("invalid-json", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini",', "application/json",
     400, "invalid_json", None),
    ("trailing-garbage", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini"} x', "application/json",
     400, "invalid_json", None),
    ("empty-body", "POST", "/v1/chat/completions", b'', "application/json", 400, "invalid_json", None),
    ("duplicate-keys", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini","model":"med-large","messages":[]}',
     "application/json", 400, "invalid_json", None),
    ("non-object", "POST", "/v1/chat/completions", b'[{"model":"gpt-4o-mini"}]', "application/json",
     400, "invalid_json", None),
    ("string-body", "POST", "/v1/chat/completions", b'"gpt-4o-mini"', "application/json", 400, "invalid_json", None),
    ("wrong-content-type", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[]}', "text/plain",
     415, "unsupported_media_type", None),
    ("form-content-type", "POST", "/v1/embeddings", b'{"model":"gpt-4o-mini","input":"x"}',
     "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
    ("unknown-path", "POST", "/v1/chat/completion", b'{"model":"gpt-4o-mini","messages":[]}', "application/json",
     404, "unknown_url", None),
    ("unknown-path-get", "GET", "/v2/models", None, None, 404, "unknown_url", None),
    ("wrong-method", "GET", "/v1/chat/completions", None, None, 405, "method_not_allowed", None),
    ("wrong-method-models", "POST", "/v1/models", b'{}', "application/json", 405, "method_not_allowed", None),
    ("stream-string", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[],"stream":"yes"}',
     "application/json", 400, "invalid_type", None),
    ("stream-number", "POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[],"stream":1}',
     "application/json", 400, "invalid_type", None),
    ("stream-options-not-object", "POST", "/v1/chat/completions",
     b'{"model":"gpt-4o-mini","messages":[],"stream":true,"stream_options":true}', "application/json",
     400, "invalid_type", None),
]


@pytest.fixture
def error_gateway(upstream_double, gateway):
    up = upstream_double()
    return up, gateway(up.port)


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_client_errors_are_openai_shaped(error_gateway, case):
    up, g = error_gateway
    _, method, path, body, ctype, status, code, param = case
    headers = {"Content-Type": ctype} if ctype else {}
    r = httpx.request(method, g.url + path, content=body, headers=headers, timeout=5)
    err = assert_openai_error(r, status, code, param)
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert up.requests == [], "a rejected request must not reach the upstream"
    # the connection stays usable after a client error (keep-alive is not broken by a 4xx)
    ok = post(g.url, "/v1/chat/completions", chat_body("after"))
    assert ok.status_code == 200


def test_duplicate_key_holding_data_is_not_echoed(error_gateway):
    """A duplicate key is named in the 400 and the audit event only when it is a lower-case identifier;
    a key that could be personal data (an address here) is given by offset and length only."""
    up, g = error_gateway
    body = b'{"model":"gpt-4o-mini","messages":[],"metadata":{"jane.doe@example.com":1,"jane.doe@example.com":2}}'
    r = post(g.url, "/v1/chat/completions", body)
    err = assert_openai_error(r, 400, "invalid_json")
    assert "duplicate key of 20 bytes" in err["message"], err
    assert b"jane.doe" not in r.content
    assert all("jane.doe" not in json.dumps(e) for e in g.events())
    r = post(g.url, "/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[],"messages":[]}')
    assert 'duplicate key \"messages\"' in assert_openai_error(r, 400, "invalid_json")["message"]
    assert up.requests == []


# ---- upstream failures ----------------------------------------------------------------------------


def test_upstream_not_listening_is_502(gateway):
    g = gateway(free_port())
    r = post(g.url, "/v1/chat/completions", chat_body("x"))
    err = assert_openai_error(r, 502, "upstream_unavailable")
    assert err["type"] == "server_error"
    r = post(g.url, "/v1/chat/completions", chat_body("x", stream=True))
    assert_openai_error(r, 502, "upstream_unavailable")
    ev = g.events()
    assert [e["status"] for e in ev] == [502, 502]
    assert all(e["code"] == "upstream_unavailable" for e in ev)


def test_upstream_slow_is_504_on_time(sim, gateway):
    s = sim("--latency-ms", "3000")
    g = gateway(s.port, upstream_extra="timeout_ms: 500")
    t = time.monotonic()
    r = post(g.url, "/v1/chat/completions", chat_body("x"))
    took = time.monotonic() - t
    assert_openai_error(r, 504, "upstream_timeout")
    assert 0.4 <= took <= 2.0, took
    ev = g.events()
    assert ev[-1]["status"] == 504 and ev[-1]["code"] == "upstream_timeout"


def test_upstream_slow_stream_request_is_504(sim, gateway):
    # no byte of the answer yet: a streamed request gets the same 504 as a plain one, not an SSE event
    s = sim("--latency-ms", "3000")
    g = gateway(s.port, upstream_extra="timeout_ms: 500")
    r = post(g.url, "/v1/chat/completions", chat_body("x", stream=True))
    assert_openai_error(r, 504, "upstream_timeout")
    ev = g.events()
    assert ev[-1]["status"] == 504 and ev[-1]["code"] == "upstream_timeout"


def test_upstream_closes_before_answering_is_502(upstream_double, gateway):
    up = upstream_double("close_before_answer")
    g = gateway(up.port)
    for stream in (False, True):
        r = post(g.url, "/v1/chat/completions", chat_body("x", stream=stream))
        err = assert_openai_error(r, 502, "upstream_unavailable")
        assert err["type"] == "server_error"
    # each request reached the upstream once: a fresh connection that closes is not retried
    assert len(up.requests) == 2
    ev = g.events()
    assert [(e["status"], e["code"]) for e in ev] == [(502, "upstream_unavailable")] * 2


def test_upstream_stalls_mid_stream_ends_with_timeout_event(upstream_double, gateway):
    up = upstream_double("stall_stream")
    g = gateway(up.port, upstream_extra="timeout_ms: 500")
    t = time.monotonic()
    r, data = stream_raw(g.url, "/v1/chat/completions", chat_body("x", stream=True))
    took = time.monotonic() - t
    assert r.status_code == 200
    p = sse_payloads(data)
    assert "[DONE]" not in p
    assert content_of_stream(p[:2]) == "one two "
    assert len(p) == 3, p
    err = json.loads(p[2])
    assert err["error"]["code"] == "upstream_timeout" and err["error"]["type"] == "server_error"
    assert 0.4 <= took <= 3.0, took
    ev = g.events()
    assert ev[-1]["code"] == "upstream_timeout" and ev[-1]["decision"] == "error"


def test_upstream_closing_pooled_connections_costs_no_request(upstream_double, gateway):
    up = upstream_double("close_idle")
    g = gateway(up.port)
    with httpx.Client(timeout=5) as client:  # one client connection: one worker, one pool
        for i in range(3):
            r = client.post(g.url + "/v1/chat/completions", content=json.dumps(chat_body(f"s{i}")), headers=JSON)
            assert r.status_code == 200, r.text
            time.sleep(0.5)  # the upstream has closed the pooled connection by now
    # every request was answered: a pooled connection the upstream closed is dropped or, if the
    # request was already written to it, retried once on a fresh one; none reached the upstream twice
    assert len(up.requests) == 3
    assert up.accepted == 3
    assert [e["status"] for e in g.events()] == [200, 200, 200]


def test_upstream_500_passes_through(sim, gateway):
    s = sim("--error-rate", "1")
    g = gateway(s.port)
    via = post(g.url, "/v1/chat/completions", chat_body("x"))
    direct = post(s.url, "/v1/chat/completions", chat_body("x", model="sim-small"))
    assert direct.status_code == 500
    assert via.status_code == 500
    assert REQ_ID.match(via.headers["x-warden-request-id"])
    assert via.content == direct.content
    assert via.headers["content-type"] == direct.headers["content-type"]
    ev = g.events()
    assert ev[-1]["status"] == 500 and ev[-1]["decision"] == "error"


def test_upstream_disconnect_mid_stream_ends_with_error_event(sim, gateway):
    s = sim("--disconnect-after", "3")
    g = gateway(s.port)
    r, data = stream_raw(g.url, "/v1/chat/completions", chat_body("one two three four five six", stream=True))
    assert r.status_code == 200
    p = sse_payloads(data)  # also asserts the chunked body ended cleanly (httpx would raise otherwise)
    assert "[DONE]" not in p
    assert len(p) == 4, p
    for chunk in p[:3]:
        assert json.loads(chunk)["object"] == "chat.completion.chunk"
    assert content_of_stream(p[:3]).startswith("echo: ")
    err = json.loads(p[3])
    assert set(err) == {"error"}
    assert err["error"]["code"] == "upstream_disconnected"
    assert err["error"]["type"] == "server_error" and err["error"]["message"]
    ev = g.events()
    assert ev[-1]["code"] == "upstream_disconnected" and ev[-1]["decision"] == "error"
    assert ev[-1]["stream_events"] == 3


def test_upstream_rejects_gateway_credential_is_502(sim, gateway):
    s = sim("--api-key", "some-other-key")
    g = gateway(s.port)
    for stream in (False, True):
        r = post(g.url, "/v1/chat/completions", chat_body("x", stream=stream),
                 headers={"Authorization": f"Bearer {CLIENT_SECRET}"})
        err = assert_openai_error(r, 502, "upstream_auth_failed")
        assert err["type"] == "server_error"
        assert "Incorrect API key" not in r.text  # the upstream's own message is not the client's business
    ev = g.events()
    assert [e["status"] for e in ev] == [502, 502]
    assert all(e["code"] == "upstream_auth_failed" for e in ev)


# ---- cancellation, backpressure, pooling ----------------------------------------------------------


def test_client_disconnect_cancels_upstream(upstream_double, gateway):
    up = upstream_double("slow_stream")
    g = gateway(up.port)
    c = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    c.sendall(http_request(g.port, "/v1/chat/completions", chat_body("slow", stream=True)))
    buf = b""
    while b"\r\n\r\n" not in buf or b"data: " not in buf.split(b"\r\n\r\n", 1)[1]:
        d = c.recv(4096)
        assert d, buf
        buf += d
    assert buf.startswith(b"HTTP/1.1 200")
    assert up.stream_started.is_set()
    closed = time.monotonic()
    c.close()
    deadline = closed + 3
    while not up.peer_closed_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert up.peer_closed_at, "the upstream connection stayed open after the client left"
    assert up.peer_closed_at[0] - closed < 1.0, up.peer_closed_at[0] - closed
    ev = g.events()
    assert len(ev) == 1
    assert ev[0]["status"] == 499, ev[0]
    assert ev[0]["code"] == "client_closed"
    # the gateway still serves afterwards
    assert post(g.url, "/v1/chat/completions", chat_body("after")).status_code == 200


def test_slow_reader_backpressure_bounds_memory(sim, gateway):
    # ~88 MB of SSE if read at full speed: one 8000-byte "word" per event, 20000 events
    s = sim("--stream-chunks", "20000")
    g = gateway(s.port)
    word = "W" * 8000
    assert post(g.url, "/v1/chat/completions", chat_body("warm")).status_code == 200
    base = rss_kb(g.proc.pid)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    c.connect(("127.0.0.1", g.port))
    c.settimeout(10)
    c.sendall(http_request(g.port, "/v1/chat/completions", chat_body(word, stream=True)))
    got = bytearray()
    peak = base
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end:   # ~100 KB/s: far slower than the upstream produces
        got += c.recv(2048)
        time.sleep(0.02)
        peak = max(peak, rss_kb(g.proc.pid))
    assert g.alive()
    grew_mb = (peak - base) / 1024
    assert grew_mb < 30, f"warden's RSS grew by {grew_mb:.1f} MB while the client read slowly"
    # now read everything: the stream must be complete and intact
    c.settimeout(30)
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        got += d
        if got.endswith(b"\r\n0\r\n\r\n"):
            break
    c.close()
    head, body = bytes(got).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    payload, complete = dechunk(body)
    assert complete
    p = sse_payloads(payload)
    assert p[-1] == "[DONE]"
    content_events = [x for x in p[:-1] if json.loads(x)["choices"] and json.loads(x)["choices"][0]["delta"].get("content")]
    assert len(content_events) >= 20000
    text = content_of_stream(p)
    unit = "echo: " + word   # the sim repeats the reply, separated by a space
    assert (len(text) + 1) % (len(unit) + 1) == 0, len(text)
    assert text == " ".join([unit] * ((len(text) + 1) // (len(unit) + 1)))


def test_upstream_keepalive_pool_reuses_connections(upstream_double, gateway):
    up = upstream_double()
    g = gateway(up.port)
    with httpx.Client(timeout=5) as client:   # keep-alive to the gateway
        for i in range(25):
            r = client.post(g.url + "/v1/chat/completions", content=json.dumps(chat_body(f"k{i}")), headers=JSON)
            assert r.status_code == 200
    for i in range(25):                       # a new client connection each time (either worker)
        r = post(g.url, "/v1/chat/completions", chat_body(f"n{i}"))
        assert r.status_code == 200
    assert len(up.requests) == 50
    # two workers, each with its own pool: at most a couple of connections, never one per request
    assert up.accepted <= 4, f"{up.accepted} upstream connections for 50 sequential requests"

    # control: with reuse disabled the same double counts one connection per request
    up0 = upstream_double()
    g0 = gateway(up0.port, upstream_extra="max_idle: 0")
    with httpx.Client(timeout=5) as client:
        for i in range(10):
            r = client.post(g0.url + "/v1/chat/completions", content=json.dumps(chat_body(f"z{i}")), headers=JSON)
            assert r.status_code == 200
    assert up0.accepted == 10
    for gw in (g, g0):  # stop both here: conftest's teardown stops at its first failure
        gw.stop()


# ---- events ---------------------------------------------------------------------------------------


def test_events_one_line_per_request_without_secrets(sim, gateway):
    s = sim("--api-key", UPSTREAM_KEY)
    g = gateway(s.port)
    auth = {"Authorization": f"Bearer {CLIENT_SECRET}"}
    sent = []  # (request id, expectations)

    r = post(g.url, "/v1/chat/completions", chat_body("count these words"), headers=auth)
    assert r.status_code == 200
    usage = r.json()["usage"]
    sent.append((r.headers["x-warden-request-id"], dict(route="chat", model="gpt-4o-mini", upstream_model="sim-small",
                                                        status=200, stream=False, usage=usage)))
    r, data = stream_raw(g.url, "/v1/chat/completions", chat_body("count these words", stream=True), headers=auth)
    assert r.status_code == 200 and sse_payloads(data)[-1] == "[DONE]"
    sent.append((r.headers["x-warden-request-id"], dict(route="chat", model="gpt-4o-mini", upstream_model="sim-small",
                                                        status=200, stream=True, usage=usage)))
    r = post(g.url, "/v1/chat/completions", chat_body("x", model="no-such-model"), headers=auth)
    assert r.status_code == 404
    sent.append((r.headers["x-warden-request-id"], dict(route="chat", model="no-such-model", upstream_model=None,
                                                        status=404, stream=False)))
    r = post(g.url, "/v1/embeddings", {"model": "med-large", "input": "vec"}, headers=auth)
    assert r.status_code == 200
    sent.append((r.headers["x-warden-request-id"], dict(route="embeddings", model="med-large",
                                                        upstream_model="llama-3.1-70b", status=200, stream=False)))
    r = httpx.get(g.url + "/v1/models", headers=auth, timeout=5)
    assert r.status_code == 200
    sent.append((r.headers["x-warden-request-id"], dict(route="models", status=200, stream=False)))

    ev = g.events()
    assert len(ev) == len(sent), ev
    by_id = {e["request_id"]: e for e in ev}
    assert len(by_id) == len(sent), "request ids must be unique"
    for rid, exp in sent:
        e = by_id[rid]
        assert e["type"] == "request"
        assert e["client_ip"] == "127.0.0.1"
        for k, v in exp.items():
            if k == "usage":
                assert e["usage"]["prompt_tokens"] == v["prompt_tokens"], e
                assert e["usage"]["completion_tokens"] == v["completion_tokens"], e
                assert e["usage"]["reported"] is True
            else:
                assert e[k] == v, (k, e)
        for k in ("duration_us", "upstream_us", "overhead_us", "ttfb_us", "bytes_in", "bytes_out"):
            assert isinstance(e[k], int) and e[k] >= 0, (k, e)
        assert e["duration_us"] > 0 and e["bytes_in"] > 0 and e["bytes_out"] > 0
        assert e["ttfb_us"] <= e["duration_us"]
        assert abs(e["upstream_us"] + e["overhead_us"] - e["duration_us"]) <= 2, e
        if e["upstream_model"]:
            assert e["upstream"] == "sim" and e["upstream_us"] > 0
        else:
            assert e["upstream_us"] == 0
        if e["stream"]:
            assert e["stream_events"] >= 3
    g.stop()
    for where, text in (("audit file", g.audit_path.read_text()), ("stdout", g.stdout()), ("stderr", g.stderr())):
        assert UPSTREAM_KEY not in text, f"upstream credential leaked into warden's {where}"
        assert CLIENT_SECRET not in text, f"client credential leaked into warden's {where}"

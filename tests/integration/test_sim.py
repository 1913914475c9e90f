"""Integration tests for `warden sim`, the OpenAI-compatible upstream simulator.

Each test starts the real binary (build/warden, or $WARDEN_BIN) on a free loopback port, talks HTTP to
it with httpx or a raw socket, and stops it with SIGTERM, asserting a prompt exit 0.
"""

import base64
import json
import math
import os
import signal
import socket
import struct
import subprocess
import time

import httpx
import pytest

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARDEN = os.environ.get("WARDEN_BIN", os.path.join(ROOT, "build", "warden"))


class Sim:
    def __init__(self, *args):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [WARDEN, "sim", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("warden sim exited: " + self.proc.stderr.read().decode())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("warden sim did not start listening")
                time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("warden sim did not exit within 5 s of SIGTERM")
            assert rc == 0, f"exit status {rc}: {self.proc.stderr.read().decode()}"
        self.proc.stdout.close()
        self.proc.stderr.close()

    def client(self, **kw):
        return httpx.Client(base_url=self.base, timeout=10, **kw)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s


@pytest.fixture
def sim_factory():
    sims = []

    def make(*args):
        s = Sim(*args)
        sims.append(s)
        return s

    yield make
    errors = []
    for s in sims:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


def chat_body(text, **extra):
    body = {"model": "llama-3.1-8b", "messages": [{"role": "system", "content": "be brief"},
                                                  {"role": "user", "content": text}]}
    body.update(extra)
    return body


def tokens(n_bytes):
    return math.ceil(n_bytes / 4)


def sse_events(resp):
    """Returns the data payloads of a streamed response, in order."""
    events = []
    buf = b""
    for chunk in resp.iter_bytes():
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            assert ev.startswith(b"data: "), ev
            events.append(ev[len(b"data: "):].decode())
    assert buf == b"", f"unterminated event: {buf!r}"
    return events


def assert_openai_error(resp, status, code):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    return err


# ---- raw HTTP helpers ---------------------------------------------------------------------------


def read_response(sock, buf=b""):
    """Reads one Content-Length-framed response; returns (status, headers, body, leftover)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before a full head: {buf!r}"
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if status == 100:
        return status, headers, b"", buf
    n = int(headers["content-length"])
    while len(buf) < n:
        data = sock.recv(65536)
        assert data, "connection closed mid-body"
        buf += data
    return status, headers, buf[:n], buf[n:]


def read_until_close(sock):
    data = b""
    while True:
        d = sock.recv(65536)
        if not d:
            return data
        data += d


def post_raw(path, body, extra=""):
    b = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n{extra}\r\n").encode() + b


# ---- endpoints ----------------------------------------------------------------------------------


def test_healthz(sim):
    with sim.client() as c:
        r = c.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}


def test_models_list_default(sim):
    with sim.client() as c:
        r = c.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["sim-small", "llama-3.1-70b", "llama-3.1-8b"]
    assert all(m["object"] == "model" for m in body["data"])


def test_models_list_flag_and_single_model(sim_factory):
    sim = sim_factory("--models", "alpha,beta")
    with sim.client() as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["alpha", "beta"]
        assert c.get("/v1/models/beta").json()["id"] == "beta"
        assert_openai_error(c.get("/v1/models/gamma"), 404, "model_not_found")


def test_chat_echo_and_usage(sim):
    with sim.client() as c:
        r = c.post("/v1/chat/completions", json=chat_body("hello there, big world"))
    assert r.status_code == 200, r.text
    body = r.json()
    reply = "echo: hello there, big world"
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "llama-3.1-8b"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]
    prompt = tokens(len("be brief") + len("hello there, big world"))
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": tokens(len(reply)),
                             "total_tokens": prompt + tokens(len(reply))}
    assert "sim_request" not in body


def test_chat_echoes_model_and_last_user_message(sim):
    msgs = [{"role": "user", "content": "first"},
            {"role": "assistant", "content": "ignored"},
            {"role": "user", "content": [{"type": "text", "text": "part one, "},
                                         {"type": "image_url", "image_url": {"url": "http://x"}},
                                         {"type": "text", "text": "part two \u00e9\u4e2d \"q\""}]}]
    with sim.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "rewritten-model", "messages": msgs})
        assert r.json()["model"] == "rewritten-model"
        assert r.json()["choices"][0]["message"]["content"] == "echo: part one, part two \u00e9\u4e2d \"q\""
        ids = {c.post("/v1/chat/completions", json=chat_body("x")).json()["id"] for _ in range(3)}
        assert len(ids) == 3


def test_chat_fixed_reply(sim_factory, tmp_path):
    sim = sim_factory("--reply", "fixed answer")
    with sim.client() as c:
        assert c.post("/v1/chat/completions", json=chat_body("hi")).json()["choices"][0]["message"]["content"] \
            == "fixed answer"
    f = tmp_path / "reply.txt"
    f.write_text("from a file\nline two")
    sim2 = sim_factory("--reply-file", str(f))
    with sim2.client() as c:
        assert c.post("/v1/chat/completions", json=chat_body("hi")).json()["choices"][0]["message"]["content"] \
            == "from a file\nline two"


def test_chat_stream(sim):
    text = "the quick  brown fox\tjumps over\nthe lazy dog "
    with sim.client() as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(text, stream=True)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["transfer-encoding"] == "chunked"
            events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" and ch["model"] == "llama-3.1-8b" for ch in chunks)
    assert len({ch["id"] for ch in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert all("usage" not in ch for ch in chunks), "usage chunk sent without include_usage"
    deltas = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-1]]
    reply = "echo: " + text
    assert "".join(deltas) == reply
    # one word plus its following whitespace per event
    assert deltas == ["echo: ", "the ", "quick  ", "brown ", "fox\t", "jumps ", "over\n", "the ", "lazy ", "dog "]


def test_chat_stream_include_usage(sim):
    with sim.client() as c:
        with c.stream("POST", "/v1/chat/completions",
                      json=chat_body("a b c", stream=True, stream_options={"include_usage": True})) as r:
            events = sse_events(r)
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    reply = "echo: a b c"
    prompt = tokens(len("be brief") + len("a b c"))
    assert usage_chunk["usage"] == {"prompt_tokens": prompt, "completion_tokens": tokens(len(reply)),
                                    "total_tokens": prompt + tokens(len(reply))}
    others = [json.loads(e) for e in events[:-2]]
    assert all(ch["usage"] is None for ch in others)
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in others) == reply


def test_no_usage_omits_usage_everywhere(sim_factory):
    """--no-usage plays an upstream that does not count tokens: no usage object on any endpoint and no
    usage chunk (nor "usage": null fields) on a stream even when include_usage asks for one; the
    answers themselves are unchanged."""
    plain, sim = sim_factory(), sim_factory("--no-usage")
    stream_body = chat_body("a b c", stream=True, stream_options={"include_usage": True})
    for s, want_usage in ((plain, True), (sim, False)):  # the same requests against both: only usage differs
        with s.client() as c:
            r = c.post("/v1/chat/completions", json=chat_body("hello"))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "echo: hello"
            assert ("usage" in r.json()) == want_usage, r.text
            r = c.post("/v1/completions", json={"model": "m", "prompt": "Say this"})
            assert r.json()["choices"][0]["text"] == "echo: Say this"
            assert ("usage" in r.json()) == want_usage, r.text
            r = c.post("/v1/embeddings", json={"model": "e", "input": "hello"})
            assert len(r.json()["data"][0]["embedding"]) == 8
            assert ("usage" in r.json()) == want_usage, r.text
            with c.stream("POST", "/v1/chat/completions", json=stream_body) as r:
                events = sse_events(r)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]) \
            == "echo: a b c"
        if want_usage:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == tokens(11)
        else:
            assert all("usage" not in ch and ch["choices"] for ch in chunks), chunks


def test_stream_chunks_repeats_reply(sim_factory):
    sim = sim_factory("--stream-chunks", "50", "--reply", "one two three")
    with sim.client() as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body("x", stream=True)) as r:
            events = sse_events(r)
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-1]]
    assert len(contents) >= 50
    assert len(contents) == 51  # 17 repetitions of 3 words
    assert "".join(contents) == " ".join(["one two three"] * 17)


def test_stream_ten_thousand_events(sim_factory):
    sim = sim_factory("--stream-chunks", "10000", "--reply", "tok")
    with sim.client() as c:
        with c.stream("POST", "/v1/chat/completions",
                      json=chat_body("x", stream=True, stream_options={"include_usage": True})) as r:
            events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-2]]
    assert len(contents) == 10000
    full = " ".join(["tok"] * 10000)
    assert "".join(contents) == full
    assert chunks[-1]["usage"]["completion_tokens"] == tokens(len(full))


def test_stream_pacing(sim_factory):
    sim = sim_factory("--tokens-per-sec", "100", "--reply", " ".join(["w"] * 20))
    t0 = time.monotonic()
    with sim.client() as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body("x", stream=True)) as r:
            events = sse_events(r)
    elapsed = time.monotonic() - t0
    assert len(events) == 20 + 3
    assert 0.17 <= elapsed < 3, elapsed  # 20 tokens at 100/s: the 20th is due at 190 ms


def test_completions(sim):
    with sim.client() as c:
        r = c.post("/v1/completions", json={"model": "m", "prompt": "Say this"})
        body = r.json()
        assert r.status_code == 200
        assert body["id"].startswith("cmpl-")
        assert body["object"] == "text_completion"
        assert body["choices"][0]["text"] == "echo: Say this"
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] == tokens(len("echo: Say this"))
        multi = c.post("/v1/completions", json={"model": "m", "prompt": ["a", "b c"]}).json()
        assert [ch["text"] for ch in multi["choices"]] == ["echo: a", "echo: b c"]
        assert [ch["index"] for ch in multi["choices"]] == [0, 1]
        assert_openai_error(c.post("/v1/completions", json={"model": "m"}), 400, "missing_required_parameter")
        with c.stream("POST", "/v1/completions", json={"model": "m", "prompt": "one two", "stream": True}) as r:
            events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(ch["object"] == "text_completion" for ch in chunks)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == "echo: one two"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_deterministic(sim_factory):
    sim = sim_factory("--embedding-dim", "16")
    with sim.client() as c:
        a = c.post("/v1/embeddings", json={"model": "e", "input": "hello"}).json()
        b = c.post("/v1/embeddings", json={"model": "e", "input": ["hello", "other"]}).json()
        b64 = c.post("/v1/embeddings", json={"model": "e", "input": "hello", "encoding_format": "base64"}).json()
        assert_openai_error(c.post("/v1/embeddings", json={"model": "e", "input": 5}), 400, "invalid_type")
        assert_openai_error(c.post("/v1/embeddings", json={"model": "e"}), 400, "missing_required_parameter")
    va = a["data"][0]["embedding"]
    assert a["object"] == "list" and a["model"] == "e"
    assert len(va) == 16
    assert abs(sum(x * x for x in va) - 1) < 1e-4
    assert [d["index"] for d in b["data"]] == [0, 1]
    assert b["data"][0]["embedding"] == va
    assert b["data"][1]["embedding"] != va
    floats = struct.unpack("<16f", base64.b64decode(b64["data"][0]["embedding"]))
    assert all(abs(x - y) < 1e-5 for x, y in zip(floats, va))
    # same input, fresh process: same vector
    sim2 = sim_factory("--embedding-dim", "16")
    with sim2.client() as c:
        assert c.post("/v1/embeddings", json={"model": "e", "input": "hello"}).json()["data"][0]["embedding"] == va


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_path_404(sim):
    with sim.client() as c:
        assert_openai_error(c.get("/v2/nothing"), 404, "unknown_url")
        assert_openai_error(c.post("/v1/chat", json={}), 404, "unknown_url")
        assert_openai_error(c.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_bad_requests_400(sim):
    with sim.client() as c:
        for bad in [b"{not json", b"", b'{"model":"m","model":"n","messages":[]}', b"[1,2]"]:
            r = c.post("/v1/chat/completions", content=bad, headers={"content-type": "application/json"})
            err = assert_openai_error(r, 400, "invalid_json" if bad != b"[1,2]" else "invalid_type")
            assert err["type"] == "invalid_request_error"
        assert_openai_error(c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}),
                            400, "missing_required_parameter")
        assert_openai_error(c.post("/v1/chat/completions", json={"model": "m"}), 400, "missing_required_parameter")
        assert_openai_error(c.post("/v1/chat/completions", json={"model": 5, "messages": []}), 400, "invalid_type")
        assert_openai_error(c.post("/v1/chat/completions", json=chat_body("x", stream="yes")), 400, "invalid_type")
        # the connection survives application-level 400s
        assert c.post("/v1/chat/completions", json=chat_body("still ok")).status_code == 200


def test_api_key_required(sim_factory):
    sim = sim_factory("--api-key", "sk-test-123")
    with sim.client() as c:
        assert_openai_error(c.post("/v1/chat/completions", json=chat_body("x")), 401, "invalid_api_key")
        assert_openai_error(c.post("/v1/chat/completions", json=chat_body("x"),
                                   headers={"authorization": "Bearer sk-test-124"}), 401, "invalid_api_key")
        assert_openai_error(c.get("/v1/models", headers={"authorization": "sk-test-123"}), 401, "invalid_api_key")
        ok = c.post("/v1/chat/completions", json=chat_body("x"), headers={"authorization": "Bearer sk-test-123"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200


def test_error_rate_one_is_always_500(sim_factory):
    sim = sim_factory("--error-rate", "1.0")
    with sim.client() as c:
        for _ in range(5):
            err = assert_openai_error(c.post("/v1/chat/completions", json=chat_body("x")), 500, "internal_error")
            assert err["type"] == "server_error"
        assert c.get("/healthz").status_code == 200


def test_error_rate_is_seeded(sim_factory):
    def statuses(seed):
        sim = sim_factory("--error-rate", "0.5", "--seed", str(seed))
        with sim.client() as c:
            return [c.get("/v1/models").status_code for _ in range(40)]

    a, b = statuses(7), statuses(7)
    assert a == b
    assert 500 in a and 200 in a


def test_disconnect_after_ends_stream_early(sim_factory):
    sim = sim_factory("--disconnect-after", "3")
    events = []
    with sim.client() as c:
        with pytest.raises(httpx.HTTPError):
            with c.stream("POST", "/v1/chat/completions", json=chat_body("a b c d e f g h", stream=True)) as r:
                assert r.status_code == 200
                buf = b""
                for chunk in r.iter_bytes():
                    buf += chunk
                    while b"\n\n" in buf:
                        ev, buf = buf.split(b"\n\n", 1)
                        events.append(ev)
    assert len(events) == 3
    assert b"data: [DONE]" not in events


def test_latency_delays_answer(sim_factory):
    sim = sim_factory("--latency-ms", "300")
    with sim.client() as c:
        t0 = time.monotonic()
        assert c.post("/v1/chat/completions", json=chat_body("x")).status_code == 200
        assert time.monotonic() - t0 >= 0.29
        t0 = time.monotonic()
        with c.stream("POST", "/v1/chat/completions", json=chat_body("x", stream=True)) as r:
            sse_events(r)
        assert time.monotonic() - t0 >= 0.29
        t0 = time.monotonic()
        c.get("/healthz")
        assert time.monotonic() - t0 < 0.25


def test_hang_never_answers(sim_factory):
    sim = sim_factory("--hang")
    with httpx.Client(base_url=sim.base, timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/chat/completions", json=chat_body("x"))
        assert c.get("/healthz").status_code == 200


def test_echo_headers(sim_factory):
    sim = sim_factory("--echo-headers")
    raw = json.dumps(chat_body("x")).encode()
    with sim.client() as c:
        r = c.post("/v1/chat/completions", content=raw,
                   headers={"authorization": "Bearer up-key", "X-Custom": "v1", "content-type": "application/json"})
        plain = c.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    req = r.json()["sim_request"]
    assert req["authorization"] == "Bearer up-key"
    assert req["headers"]["x-custom"] == "v1"
    assert req["headers"]["content-length"] == str(len(raw))
    assert req["body"] == raw.decode()
    assert plain.json()["sim_request"]["authorization"] is None


# ---- HTTP/1.1 behaviour -------------------------------------------------------------------------


def test_pipelined_requests_answered_in_order(sim):
    chunked_body = json.dumps(chat_body("second")).encode()
    half = len(chunked_body) // 2
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % half + chunked_body[:half] + b"\r\n"
               + b"%x\r\n" % (len(chunked_body) - half) + chunked_body[half:] + b"\r\n0\r\n\r\n")
    batch = (post_raw("/v1/chat/completions", chat_body("first")) + chunked
             + b"GET /v1/models HTTP/1.1\r\nHost: sim\r\n\r\n"
             + post_raw("/v1/chat/completions", chat_body("fourth")))
    with sim.connect() as s:
        s.sendall(batch)
        buf = b""
        replies = []
        for _ in range(4):
            status, _, body, buf = read_response(s, buf)
            assert status == 200
            replies.append(json.loads(body))
        assert buf == b""
    assert replies[0]["choices"][0]["message"]["content"] == "echo: first"
    assert replies[1]["choices"][0]["message"]["content"] == "echo: second"
    assert replies[2]["object"] == "list"
    assert replies[3]["choices"][0]["message"]["content"] == "echo: fourth"


def test_request_fed_byte_by_byte(sim):
    body = json.dumps(chat_body("slow \u00e9")).encode()
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
               + b"0\r\nTrailer-X: y\r\n\r\n")
    with sim.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for raw in (post_raw("/v1/chat/completions", body), chunked):
            for i in range(len(raw)):
                s.send(raw[i:i + 1])
            status, _, rbody, buf = read_response(s, buf)
            assert status == 200
            assert json.loads(rbody)["choices"][0]["message"]["content"] == "echo: slow \u00e9"


def test_pipelined_behind_stream_and_latency(sim_factory):
    sim = sim_factory("--latency-ms", "50")
    batch = (post_raw("/v1/chat/completions", chat_body("s", stream=True))
             + post_raw("/v1/chat/completions", chat_body("after")))
    with sim.connect() as s:
        s.sendall(batch)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            d = s.recv(65536)
            assert d
            data += d
    first, second = data.split(b"0\r\n\r\nHTTP/1.1 200", 1)
    assert b"data: [DONE]" in first
    assert b"echo: after" in second


def test_keep_alive_reuse_and_connection_close(sim):
    with sim.connect() as s:
        buf = b""
        for i in range(3):
            s.sendall(post_raw("/v1/chat/completions", chat_body(f"msg {i}")))
            status, headers, body, buf = read_response(s, buf)
            assert status == 200
            assert "connection" not in headers
            assert json.loads(body)["choices"][0]["message"]["content"] == f"echo: msg {i}"
        s.sendall(post_raw("/v1/models", b"", "Connection: close\r\n").replace(b"POST", b"GET", 1))
        status, headers, body, buf = read_response(s, buf)
        assert status == 200 and headers["connection"] == "close"
        assert read_until_close(s) == b""
    # and through a pooled client: one connection serves all requests
    with sim.client(limits=httpx.Limits(max_connections=1)) as c:
        ports = set()
        for _ in range(5):
            with c.stream("GET", "/v1/models") as r:
                ports.add(r.extensions["network_stream"].get_extra_info("client_addr"))
                r.read()
        assert len(ports) == 1


def test_http10_and_expect_continue(sim):
    with sim.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = read_until_close(s)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"status":"ok"}')
    with sim.connect() as s:
        body = json.dumps(chat_body("continued")).encode()
        s.sendall(post_raw("/v1/chat/completions", b"", "Expect: 100-continue\r\n")
                  .replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        status, _, _, buf = read_response(s)
        assert status == 100
        s.sendall(body)
        status, _, rbody, _ = read_response(s, buf)
        assert status == 200
        assert json.loads(rbody)["choices"][0]["message"]["content"] == "echo: continued"


def test_http10_stream_is_close_delimited(sim):
    body = json.dumps(chat_body("a b", stream=True)).encode()
    with sim.connect() as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        data = read_until_close(s)
    head, payload = data.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower()
    assert b"connection: close" in head.lower()
    assert payload.endswith(b"data: [DONE]\n\n")


def test_malformed_request_gets_400_and_close(sim):
    for raw in [b"GARBAGE\r\n\r\n",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
        with sim.connect() as s:
            s.sendall(raw)
            data = read_until_close(s)
            assert data.startswith(b"HTTP/1.1 400"), data
            assert b"Connection: close" in data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "invalid_request_error"
    with sim.client() as c:  # still serving
        assert c.get("/healthz").status_code == 200


def test_body_limit(sim):
    with sim.connect() as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (16 * 1024 * 1024 + 1))
        data = read_until_close(s)
        assert data.startswith(b"HTTP/1.1 413")
    big = "x" * (4 * 1024 * 1024)
    with sim.client() as c:
        r = c.post("/v1/chat/completions", json=chat_body(big))
        assert r.json()["choices"][0]["message"]["content"] == "echo: " + big


def test_multiple_workers(sim_factory):
    sim = sim_factory("--workers", "2")
    with sim.client() as c:
        for i in range(20):
            assert c.post("/v1/chat/completions", json=chat_body(str(i)),
                          headers={"connection": "close"}).json()["choices"][0]["message"]["content"] == f"echo: {i}"


# ---- CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--workers", "0"],
    ["--workers", "abc"],
    ["--error-rate", "1.5"],
    ["--latency-ms", "-1"],
    ["--listen", "nohost"],
    ["--listen"],
    ["--hang=yes"],
    ["--reply", "a", "--reply-file", "/dev/null"],
    ["--seed", "1", "--seed", "2"],
    ["positional"],
])
def test_bad_cli_flags_exit_2(args):
    p = subprocess.run([WARDEN, "sim", *args], capture_output=True, timeout=10)
    assert p.returncode == 2, (args, p.stderr)
    assert b"usage: warden sim" in p.stderr


def test_help_exits_0():
    p = subprocess.run([WARDEN, "sim", "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0
    assert b"--disconnect-after" in p.stdout


def test_ready_line_and_port_in_use(sim):
    # The kernel accepts connections from listen() on, which can be before the worker threads start
    # and the ready line is printed; wait for the line (without blocking forever).
    want = f"warden sim listening on 127.0.0.1:{sim.port}".encode()
    os.set_blocking(sim.proc.stderr.fileno(), False)
    line = b""
    deadline = time.monotonic() + 5
    while want not in line and time.monotonic() < deadline:
        line += sim.proc.stderr.read() or b""
        time.sleep(0.02)
    assert want in line
    p = subprocess.run([WARDEN, "sim", "--listen", f"127.0.0.1:{sim.port}"], capture_output=True, timeout=10)
    assert p.returncode == 1
    assert b"cannot listen" in p.stderr

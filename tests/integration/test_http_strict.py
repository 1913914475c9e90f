"""Strict HTTP/1.1 handling of warden's client side, tested over raw sockets.

Every test talks to a real `warden serve` (with a `warden sim` upstream) on loopback. Malformed and
ambiguous requests (request smuggling forms) must be answered with the exact status, an OpenAI-shaped
error body, an x-warden-request-id header and `Connection: close`, and the connection must then end
with a clean FIN. Each such request is followed by a second, valid pipelined request in the same send:
exactly one response may come back, proving the bytes after a rejected head are never processed.

Run: /usr/bin/python3 -m pytest tests/integration/test_http_strict.py -q
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import Gateway, Sim, chat_body, gateway_yaml, sanitized_build

# Small limits so the limit tests stay cheap; short timeouts so the slowloris tests stay fast.
LIMITS = {
    "max_request_line": 1024,
    "max_header_bytes": 4096,
    "max_headers": 16,
    "max_body_bytes": 2048,
    "header_timeout_ms": 1000,
    "body_timeout_ms": 1000,
    "idle_timeout_ms": 1000,
}

NEXT = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n"  # the valid request pipelined after a bad one
CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
REQUEST_ID = re.compile(r"[0-9a-f]{16}")


def _open_gateway(tmp, upstream_port, **kw):
    """These tests are about HTTP, not authentication: run the gateway open (auth.mode none), unless the
    shared fixture's config already says something about auth."""
    if not re.search(r"^auth:", gateway_yaml(1, 2, 3, "/dev/null"), re.M):
        kw["extra"] = "auth: { mode: none }"
    return Gateway(tmp, upstream_port, **kw)


def _stop(g, sim, grace=3.0):
    """Stops gateway and upstream. Nothing is in flight at teardown, so a gateway still running `grace`
    seconds after SIGTERM is killed rather than waited for (the shutdown itself is tested below)."""
    if g.alive():
        g.signal(signal.SIGTERM)
        try:
            g.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            g.proc.kill()
            g.proc.wait()
    sim.stop()
    _check_sanitizers(g)


def _check_sanitizers(proc):
    err = proc.stderr()
    if "AddressSanitizer" in err or "runtime error:" in err:
        pytest.fail("sanitizer report in warden's stderr:\n" + err[-4000:])


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http_strict")
    sim = Sim(tmp)
    g = _open_gateway(tmp, sim.port, limits=LIMITS)
    yield g
    _stop(g, sim)


@pytest.fixture(scope="module")
def gw_maxconn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http_strict_maxconn")
    sim = Sim(tmp)
    g = _open_gateway(tmp, sim.port, limits={"max_connections": 5})
    time.sleep(0.3)  # let the probe connections of wait_port() be closed and uncounted
    yield g
    _stop(g, sim)


@pytest.fixture(scope="module")
def gw_slow_upstream(tmp_path_factory):
    """Same limits, but the upstream takes longer than every client-side timeout."""
    tmp = tmp_path_factory.mktemp("http_strict_slow")
    sim = Sim(tmp, "--latency-ms", "1500")
    g = _open_gateway(tmp, sim.port, limits=LIMITS)
    yield g
    _stop(g, sim)


@pytest.fixture(autouse=True)
def _gateway_survives(request):
    yield
    for name in ("gw", "gw_maxconn", "gw_slow_upstream"):
        if name in request.fixturenames:
            g = request.getfixturevalue(name)
            assert g.alive(), f"warden exited (rc {g.proc.returncode}):\n{g.stderr()[-4000:]}"


# ---- client helpers -------------------------------------------------------------------------------


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(lowercase name, value)]
        self.body = body

    def all(self, name):
        return [v for n, v in self.headers if n == name]

    def header(self, name):
        vals = self.all(name)
        assert len(vals) <= 1, f"header {name} appears {len(vals)} times: {self.headers}"
        return vals[0] if vals else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Resp {self.status} {self.headers} {self.body[:200]!r}>"


def parse_responses(data, head_only=()):
    """Splits a byte stream into responses. Returns (responses, leftover bytes of an incomplete one).
    Responses whose index is in head_only answer HEAD requests and have no body whatever they say."""
    resps = []
    i = 0
    while i < len(data):
        end = data.find(b"\r\n\r\n", i)
        if end < 0:
            break
        lines = data[i:end].split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.1 (\d{3}) ([^\r\n]*)", lines[0])
        assert m, f"malformed status line {lines[0]!r} in {data!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name), f"bad header line {line!r}"
            headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
        r = Resp(int(m.group(1)), m.group(2).decode("latin-1"), headers, b"")
        j = end + 4
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if 100 <= r.status < 200 or r.status in (204, 304) or len(resps) in head_only:
            pass
        elif te is not None:
            assert te.lower() == "chunked", te
            body = b""
            while True:
                le = data.find(b"\r\n", j)
                if le < 0:
                    return resps, data[i:]
                size = int(data[j:le], 16)
                if len(data) < le + 2 + size + 2:
                    return resps, data[i:]
                body += data[le + 2:le + 2 + size]
                assert data[le + 2 + size:le + 4 + size] == b"\r\n"
                j = le + 4 + size
                if size == 0:
                    break
            r.body = body
        elif cl is not None:
            n = int(cl)
            if len(data) < j + n:
                break
            r.body = data[j:j + n]
            j += n
        else:
            r.body = data[j:]
            j = len(data)
        resps.append(r)
        i = j
    return resps, data[i:]


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, timeout):
    """Reads until EOF, reset or timeout. Returns (bytes, how) with how in 'eof', 'reset', 'timeout'."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        s.settimeout(left)
        try:
            b = s.recv(65536)
        except socket.timeout:
            return b"".join(chunks), "timeout"
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not b:
            return b"".join(chunks), "eof"
        chunks.append(b)


def exchange(port, data, timeout=3.0):
    """Sends data at once and reads until the server closes (or timeout)."""
    s = connect(port)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may reject before reading everything; its answer is still readable
        return read_until_close(s, timeout)
    finally:
        s.close()


def read_responses(s, n, timeout=5.0, head_only=()):
    """Reads from a kept-open socket until n complete responses are in (the connection stays open)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        resps, rest = parse_responses(buf, head_only)
        if len(resps) >= n:
            assert len(resps) == n and not rest, f"more than {n} responses: {buf!r}"
            return resps
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(resps)} of {n} responses within {timeout}s: {buf!r}"
        s.settimeout(left)
        b = s.recv(65536)
        assert b, f"connection closed after {len(resps)} of {n} responses: {buf!r}"
        buf += b


def assert_still_open(s, wait=0.2):
    s.settimeout(wait)
    try:
        b = s.recv(1)
    except socket.timeout:
        return
    raise AssertionError(f"expected an open, quiet connection; recv gave {b!r}")


def assert_error(r, status):
    """An OpenAI-shaped JSON error with the exact status and a request id."""
    assert r.status == status, r
    assert REQUEST_ID.fullmatch(r.header("x-warden-request-id") or ""), r
    assert (r.header("content-type") or "").startswith("application/json"), r
    assert r.header("content-length") == str(len(r.body)), r
    doc = r.json()
    assert list(doc) == ["error"], doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    assert err["type"] == ("server_error" if status >= 500 else err["type"]), err
    return err


def assert_rejected_and_closed(port, request, status, timeout=3.0):
    """Sends request + a valid pipelined request; exactly one error response, then a clean close."""
    data, how = exchange(port, request + NEXT, timeout)
    resps, rest = parse_responses(data)
    assert not rest, f"trailing garbage after the response: {data!r}"
    assert len(resps) == 1, f"expected exactly one response, got {len(resps)}: {data!r}"
    assert b'"object":"list"' not in data, "the pipelined request after the rejected one was processed"
    err = assert_error(resps[0], status)
    assert resps[0].header("connection") == "close", resps[0]
    assert how == "eof", f"connection not closed cleanly after the {status} (ended by {how})"
    return err


def chat_json(text="hello"):
    return json.dumps(chat_body(text)).encode()


def chat_request(body, extra=b""):
    return CHAT_HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(body, sizes):
    out = b""
    pos = 0
    for n in sizes:
        out += b"%x\r\n" % n + body[pos:pos + n] + b"\r\n"
        pos += n
    assert pos == len(body)
    return out + b"0\r\n\r\n"


def padded_chat(total):
    """A valid chat body of exactly `total` bytes."""
    base = len(chat_json(""))
    body = chat_json("a" * (total - base))
    assert len(body) == total
    return body


# ---- request smuggling and malformed heads ---------------------------------------------------------

CHUNKED_HEAD = CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

BAD_HEADS = [
    # Content-Length and Transfer-Encoding together, in both orders
    ("cl-then-te", CHAT_HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-then-cl", CHAT_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    # duplicate / malformed Content-Length
    ("cl-dup-equal", CHAT_HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-dup-differ", CHAT_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list", CHAT_HEAD + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl-plus", CHAT_HEAD + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-two-numbers", CHAT_HEAD + b"Content-Length: 5 5\r\n\r\nhello", 400),
    ("cl-hex", CHAT_HEAD + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("cl-empty", CHAT_HEAD + b"Content-Length: \r\n\r\nhello", 400),
    ("cl-negative", CHAT_HEAD + b"Content-Length: -1\r\n\r\nhello", 400),
    ("cl-overflow", CHAT_HEAD + b"Content-Length: 99999999999999999999\r\n\r\nhello", 400),
    # Transfer-Encoding other than exactly one "chunked"
    ("te-gzip", CHAT_HEAD + b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 501),
    ("te-identity", CHAT_HEAD + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501),
    ("te-chunked-chunked", CHAT_HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", CHAT_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-chunked-param", CHAT_HEAD + b"Transfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n", 400),
    ("te-quoted", CHAT_HEAD + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n', 400),
    ("te-vtab", CHAT_HEAD + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("te-twice", CHAT_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-http10",
     b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # line syntax
    ("obs-fold", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("obs-fold-te", CHAT_HEAD + b"X-A: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bare-lf-everywhere", b"GET /v1/models HTTP/1.1\nHost: gw\n\n", 400),
    ("bare-lf-request-line", b"GET /v1/models HTTP/1.1\nHost: gw\r\n\r\n", 400),
    ("bare-lf-header", b"GET /v1/models HTTP/1.1\r\nHost: gw\nX-A: b\r\n\r\n", 400),
    ("bare-lf-end-of-head", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\n", 400),
    ("bare-cr-in-value", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\rb\r\n\r\n", 400),
    ("bare-cr-before-crlf", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\r\r\n\r\n", 400),
    ("space-before-colon", CHAT_HEAD + b"Content-Length : 5\r\n\r\nhello", 400),
    ("tab-before-colon", CHAT_HEAD + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400),
    ("nul-in-value", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\x1bb\r\n\r\n", 400),
    ("bad-header-name", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX(A): b\r\n\r\n", 400),
    ("non-token-method", b"GE(T /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("host-with-space", b"GET /v1/models HTTP/1.1\r\nHost: gw evil\r\n\r\n", 400),
    ("host-with-slash", b"GET /v1/models HTTP/1.1\r\nHost: gw/evil\r\n\r\n", 400),
    ("empty-header-name", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n: x\r\n\r\n", 400),
    ("header-without-colon", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A\r\n\r\n", 400),
    # request line
    ("ctl-in-target", b"GET /v1/mo\x01dels HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("nonascii-in-target", b"GET /v1/mod\xc3\xa9ls HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("del-in-target", b"GET /v1/mo\x7fdels HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("nul-in-target", b"GET /v1/models\x00 HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("tab-in-target", b"GET /v1/models\t HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("fragment-in-target", b"GET /v1/models#x HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("absolute-form", b"GET http://gw/v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("authority-form", b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n", 400),
    ("double-space", b"GET  /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("leading-space", b" GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("trailing-space-after-version", b"GET /v1/models HTTP/1.1 \r\nHost: gw\r\n\r\n", 400),
    ("lowercase-version", b"GET /v1/models http/1.1\r\nHost: gw\r\n\r\n", 400),
    ("two-leading-crlf", b"\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
    ("no-host", b"GET /v1/models HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nHost: gw\r\n\r\n", 400),
    ("two-hosts-case", b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nhOST: other\r\n\r\n", 400),
    ("http-2.0", b"GET /v1/models HTTP/2.0\r\nHost: gw\r\n\r\n", 505),
    ("http-1.2", b"GET /v1/models HTTP/1.2\r\nHost: gw\r\n\r\n", 505),
    ("http-0.9", b"GET /v1/models HTTP/0.9\r\nHost: gw\r\n\r\n", 505),
    ("expect-unknown", CHAT_HEAD + b"Expect: 200-ok\r\nContent-Length: 5\r\n\r\nhello", 417),
    # invalid chunked bodies (the head is fine)
    ("chunk-size-0x", CHUNKED_HEAD + b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", CHUNKED_HEAD + b"-1\r\na\r\n0\r\n\r\n", 400),
    ("chunk-size-leading-space", CHUNKED_HEAD + b" 5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-trailing-space", CHUNKED_HEAD + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-17-digits", CHUNKED_HEAD + b"00000000000000005\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-empty", CHUNKED_HEAD + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-bare-lf", CHUNKED_HEAD + b"5\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-no-crlf", CHUNKED_HEAD + b"5\r\nhello0\r\n\r\n", 400),
    ("chunk-data-wrong-bytes", CHUNKED_HEAD + b"5\r\nhelloXY0\r\n\r\n", 400),
    ("chunk-data-bare-lf", CHUNKED_HEAD + b"5\r\nhello\n0\r\n\r\n", 400),
    ("chunk-ext-bare-cr", CHUNKED_HEAD + b"5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-trailer-obs-fold", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400),
]


@pytest.mark.parametrize("request_bytes,status", [c[1:] for c in BAD_HEADS], ids=[c[0] for c in BAD_HEADS])
def test_rejects_ambiguous_or_malformed(gw, request_bytes, status):
    assert_rejected_and_closed(gw.port, request_bytes, status)


def test_bad_request_after_good_one_on_same_connection(gw):
    # keep-alive: the first request is answered, the malformed second one ends the connection and the
    # third is never looked at
    bad = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
    data, how = exchange(gw.port, NEXT + bad + NEXT)
    resps, rest = parse_responses(data)
    assert [r.status for r in resps] == [200, 400] and not rest, data
    assert resps[0].header("connection") is None
    assert_error(resps[1], 400)
    assert resps[1].header("connection") == "close"
    assert how == "eof"


def test_bad_request_queued_behind_upstream_request(gw):
    # the bad head is already buffered while the chat request waits for the upstream; once that is
    # answered the bad one is rejected and nothing after it is processed
    bad = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    data, how = exchange(gw.port, chat_request(chat_json("first")) + bad + NEXT)
    resps, rest = parse_responses(data)
    assert [r.status for r in resps] == [200, 400] and not rest, data
    assert resps[0].json()["choices"][0]["message"]["content"] == "echo: first"
    assert_error(resps[1], 400)
    assert how == "eof"


def test_content_length_beyond_limit_is_413_not_400(gw):
    # a well-formed number that fits 64 bits but exceeds max_body_bytes is "too large", not malformed
    err = assert_rejected_and_closed(gw.port, CHAT_HEAD + b"Content-Length: 99999999999\r\n\r\n", 413)
    assert err["code"] == "request_too_large"


# ---- limits ------------------------------------------------------------------------------------------


def test_request_line_at_limit_accepted_one_more_is_414(gw):
    # "GET " + target + " HTTP/1.1" is exactly max_request_line (1024) bytes
    target = b"/x" + b"a" * (1024 - 4 - 9 - 2)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == 1024
    s = connect(gw.port)
    try:
        s.sendall(line + b"\r\nHost: gw\r\n\r\n")
        (r,) = read_responses(s, 1)
        assert_error(r, 404)
    finally:
        s.close()
    err = assert_rejected_and_closed(gw.port, b"GET " + target + b"a HTTP/1.1\r\nHost: gw\r\n\r\n", 414)
    assert err["code"] == "uri_too_long"


def test_request_line_far_over_limit_is_414(gw):
    assert_rejected_and_closed(gw.port, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414)


def _head_of_size(total):
    head = b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Pad: \r\n\r\n"
    return head.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (total - len(head)))


def test_head_at_limit_accepted_one_more_is_431(gw):
    ok = _head_of_size(4096)
    assert len(ok) == 4096
    s = connect(gw.port)
    try:
        s.sendall(ok)
        (r,) = read_responses(s, 1)
        assert_error(r, 404)
    finally:
        s.close()
    err = assert_rejected_and_closed(gw.port, _head_of_size(4097), 431)
    assert err["code"] == "headers_too_large"


def test_headers_over_max_header_bytes_is_431(gw):
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 900) for i in range(6))
    assert_rejected_and_closed(gw.port, b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n" + many + b"\r\n", 431)


def test_too_many_headers_is_431(gw):
    def req(n):  # Host plus n-1 others
        return b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"

    s = connect(gw.port)
    try:
        s.sendall(req(16))
        (r,) = read_responses(s, 1)
        assert r.status == 200, r
    finally:
        s.close()
    assert_rejected_and_closed(gw.port, req(17), 431)


def test_body_over_limit_by_content_length_is_413_without_waiting_for_body(gw):
    s = connect(gw.port)
    try:
        t0 = time.monotonic()
        s.sendall(CHAT_HEAD + b"Content-Length: 2049\r\n\r\n")  # the body is never sent
        data, how = read_until_close(s, 3.0)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, data
    err = assert_error(resps[0], 413)
    assert err["code"] == "request_too_large"
    assert resps[0].header("connection") == "close"
    assert how == "eof"
    assert elapsed < 0.8, f"413 took {elapsed:.2f}s: the gateway waited for a body it must refuse"


def test_large_body_sent_anyway_still_gets_413(gw):
    # a client that ignores the early 413 and keeps sending must still be able to read it
    body = padded_chat(1 << 20)
    data, how = exchange(gw.port, chat_request(body), timeout=5.0)
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, data[:300]
    assert_error(resps[0], 413)
    assert how == "eof"


def test_body_at_limit_accepted(gw):
    body = padded_chat(2048)
    s = connect(gw.port)
    try:
        s.sendall(chat_request(body))
        (r,) = read_responses(s, 1)
        assert r.status == 200, r
    finally:
        s.close()


def test_body_over_limit_with_expect_continue_gets_413_and_no_100(gw):
    s = connect(gw.port)
    try:
        s.sendall(CHAT_HEAD + b"Expect: 100-continue\r\nContent-Length: 4000\r\n\r\n")
        data, how = read_until_close(s, 3.0)
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 413 "), data
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, data
    assert_error(resps[0], 413)
    assert how == "eof"


def test_chunked_body_over_limit_is_413(gw):
    body = padded_chat(3000)
    err = assert_rejected_and_closed(gw.port, CHUNKED_HEAD + chunked(body, [1000, 1000, 1000]), 413)
    assert err["code"] == "request_too_large"


def test_chunked_body_at_limit_accepted(gw):
    body = padded_chat(2048)
    s = connect(gw.port)
    try:
        s.sendall(CHUNKED_HEAD + chunked(body, [1000, 1000, 48]))
        (r,) = read_responses(s, 1)
        assert r.status == 200, r
    finally:
        s.close()


# ---- timeouts / slowloris ----------------------------------------------------------------------------


def trickle(port, upfront, payload, interval=0.2, limit=6.0):
    """Sends `upfront`, then `payload` one byte every `interval` seconds until the server answers or
    closes. Returns (bytes received, how it ended, seconds from the first trickled byte to the
    server's first reaction)."""
    s = connect(port)
    try:
        if upfront:
            s.sendall(upfront)
        t0 = time.monotonic()
        idx = 0
        while time.monotonic() - t0 < limit:
            if idx < len(payload):
                try:
                    s.sendall(payload[idx:idx + 1])
                except (BrokenPipeError, ConnectionResetError):
                    pass
                idx += 1
            r, _, _ = select.select([s], [], [], interval)
            if r:
                reacted = time.monotonic() - t0
                data, how = read_until_close(s, 2.0)
                return data, how, reacted
        return b"", "timeout", time.monotonic() - t0
    finally:
        s.close()


def _assert_timeout_close(data, how, reacted):
    assert how in ("eof", "reset"), f"connection still open after {reacted:.2f}s"
    assert 0.8 <= reacted <= 3.0, f"reaction after {reacted:.2f}s, expected ~1s"
    if data:  # a 408 is optional, but if something is said it must be a proper 408
        resps, rest = parse_responses(data)
        assert len(resps) == 1 and not rest, data
        assert_error(resps[0], 408)
        assert how == "eof"


def test_slowloris_head_cut_off_after_header_timeout(gw):
    payload = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200
    data, how, reacted = trickle(gw.port, b"", payload)
    _assert_timeout_close(data, how, reacted)


def test_slow_second_request_head_cut_off(gw):
    # the header deadline applies to each request on a keep-alive connection, not just the first
    s = connect(gw.port)
    try:
        s.sendall(NEXT)
        (r,) = read_responses(s, 1)
        assert r.status == 200
        t0 = time.monotonic()
        payload = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200
        idx = 0
        while True:
            assert time.monotonic() - t0 < 6, "slow head never cut off"
            try:
                s.sendall(payload[idx:idx + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            idx += 1
            rd, _, _ = select.select([s], [], [], 0.2)
            if rd:
                break
        reacted = time.monotonic() - t0
        data, how = read_until_close(s, 2.0)
    finally:
        s.close()
    _assert_timeout_close(data, how, reacted)


def test_slow_body_cut_off_after_body_timeout(gw):
    body = chat_json("x" * 100)
    data, how, reacted = trickle(gw.port, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), body)
    _assert_timeout_close(data, how, reacted)


def test_slow_chunked_body_cut_off_after_body_timeout(gw):
    body = chunked(chat_json("x" * 100), [10] * 12 + [len(chat_json("x" * 100)) - 120])
    data, how, reacted = trickle(gw.port, CHUNKED_HEAD, body)
    _assert_timeout_close(data, how, reacted)


def test_idle_keep_alive_connection_closed_after_idle_timeout(gw):
    s = connect(gw.port)
    try:
        s.sendall(NEXT)
        (r,) = read_responses(s, 1)
        assert r.status == 200 and r.header("connection") is None, r
        t0 = time.monotonic()
        data, how = read_until_close(s, 5.0)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert data == b"" and how == "eof", (data, how)
    assert 0.8 <= elapsed <= 3.0, f"idle connection closed after {elapsed:.2f}s, expected ~1s"


def test_silent_connection_closed_after_idle_timeout(gw):
    s = connect(gw.port)
    try:
        t0 = time.monotonic()
        data, how = read_until_close(s, 5.0)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert data == b"" and how == "eof", (data, how)
    assert 0.8 <= elapsed <= 3.0, f"silent connection closed after {elapsed:.2f}s, expected ~1s"


def test_max_connections(gw_maxconn):
    port = gw_maxconn.port
    socks = []
    try:
        for _ in range(5):
            s = connect(port)
            socks.append(s)
            s.sendall(NEXT)
            (r,) = read_responses(s, 1)
            assert r.status == 200, r
        extra = connect(port)
        try:
            t0 = time.monotonic()
            data, how = read_until_close(extra, 3.0)
            elapsed = time.monotonic() - t0
        finally:
            extra.close()
        assert data == b"" and how in ("eof", "reset"), (data, how)
        assert elapsed < 1.0, f"the 6th connection was closed only after {elapsed:.2f}s"
        for s in socks:  # the first five are unaffected
            s.sendall(NEXT)
            (r,) = read_responses(s, 1)
            assert r.status == 200, r
        socks.pop().close()  # a freed slot is usable again
        time.sleep(0.3)
        s = connect(port)
        socks.append(s)
        s.sendall(NEXT)
        (r,) = read_responses(s, 1)
        assert r.status == 200, r
    finally:
        for s in socks:
            s.close()


def _fd_count(proc):
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def test_server_closed_connections_release_their_slot(tmp_path):
    # Connections the gateway ends itself (Connection: close, HTTP/1.0, every 4xx parse error) must be
    # fully released: with max_connections 5, twenty such exchanges in a row must all be served, and
    # no file descriptors may be left behind.
    sim = Sim(tmp_path)
    g = _open_gateway(tmp_path, sim.port, limits={"max_connections": 5})
    try:
        time.sleep(0.3)
        fds = _fd_count(g)
        reqs = [
            b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            b"GET /v1/models HTTP/1.0\r\n\r\n",
            b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nHost: gw\r\n\r\n",
            b"GET /v1/models HTTP/2.0\r\nHost: gw\r\n\r\n",
        ]
        for i in range(20):
            data, how = exchange(g.port, reqs[i % len(reqs)], timeout=2.0)
            assert data.startswith(b"HTTP/1.1 "), f"exchange {i} refused after {i} server-closed connections"
            assert how == "eof"
        time.sleep(0.3)
        assert _fd_count(g) <= fds + 1, f"fds grew from {fds} to {_fd_count(g)}: closed connections leak"
    finally:
        _stop(g, sim)


def test_sigterm_after_server_closed_connections_exits_promptly(tmp_path):
    # no request is in flight, so draining has nothing to wait for
    sim = Sim(tmp_path)
    g = _open_gateway(tmp_path, sim.port, limits=LIMITS)
    try:
        exchange(g.port, b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", timeout=2.0)
        exchange(g.port, b"GET /v1/models HTTP/1.1\r\n\r\n", timeout=2.0)  # 400, closed by warden
        s = connect(g.port)  # an idle keep-alive connection is closed by the drain
        s.sendall(NEXT)
        read_responses(s, 1)
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        try:
            rc = g.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - t0
        data, how = read_until_close(s, 1.0)
        s.close()
        assert rc == 0, f"warden did not exit within 5 s of SIGTERM (rc {rc})"
        assert elapsed < 2.0, f"exit took {elapsed:.2f}s with nothing in flight"
        assert data == b"" and how == "eof", (data, how)
    finally:
        _stop(g, sim)


# ---- valid protocol features -------------------------------------------------------------------------


def test_keep_alive_several_requests_on_one_socket(gw):
    s = connect(gw.port)
    try:
        ids = set()
        for i in range(4):
            s.sendall(NEXT if i % 2 == 0 else chat_request(chat_json(f"turn {i}")))
            (r,) = read_responses(s, 1)
            assert r.status == 200, r
            assert r.header("connection") is None, r
            if i % 2:
                assert r.json()["choices"][0]["message"]["content"] == f"echo: turn {i}"
            ids.add(r.header("x-warden-request-id"))
        assert len(ids) == 4
        assert_still_open(s)
    finally:
        s.close()


def test_pipelining_three_requests_in_one_send(gw):
    reqs = NEXT + chat_request(chat_json("second")) + b"GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n"
    s = connect(gw.port)
    try:
        s.sendall(reqs)
        r1, r2, r3 = read_responses(s, 3)
        assert_still_open(s)
    finally:
        s.close()
    assert r1.status == 200 and r1.json()["object"] == "list", r1
    assert r2.status == 200 and r2.json()["choices"][0]["message"]["content"] == "echo: second", r2
    assert_error(r3, 404)
    ids = [r.header("x-warden-request-id") for r in (r1, r2, r3)]
    assert all(REQUEST_ID.fullmatch(i or "") for i in ids) and len(set(ids)) == 3, ids


def test_deep_pipelining_beyond_buffer_limit(gw):
    # 300 pipelined requests (> max_header_bytes of queued input): the gateway stops reading while busy
    # and must resume, answering every one in order
    n = 300
    reqs = b"".join(b"GET /v1/models?i=%d HTTP/1.1\r\nHost: gw\r\n\r\n" % i for i in range(n))
    assert len(reqs) > 3 * LIMITS["max_header_bytes"]
    s = connect(gw.port)
    try:
        s.sendall(reqs)
        resps = read_responses(s, n, timeout=10)
        assert_still_open(s)
    finally:
        s.close()
    assert all(r.status == 200 for r in resps)
    assert len({r.header("x-warden-request-id") for r in resps}) == n


def test_client_sending_ahead_is_not_read_ahead(gw):
    # A client that pipelines requests without reading the answers: once the answers back up
    # (limits.write_buffer_bytes), the gateway stops reading from it, so the client's sends block (TCP
    # backpressure) and warden's memory stays bounded, however much the client has queued to send.
    # When the client reads again, every request is answered.
    def rss_kb():
        with open(f"/proc/{gw.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])

    one = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n"
    block = one * (65536 // len(one))
    base = rss_kb()
    s = connect(gw.port)
    s.setblocking(False)
    sent, pend = 0, b""
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < (256 << 20):
            pend = pend or block
            try:
                n = s.send(pend)
            except BlockingIOError:
                select.select([], [s], [], 0.05)
                continue
            sent += n
            pend = pend[n:]
        grew_kb = rss_kb() - base
        # answering all of that would queue far more than the socket buffers hold: the gateway must
        # have stopped reading long before 256 MiB of requests
        assert sent < (64 << 20), f"the gateway read {sent >> 20} MiB of requests whose answers nobody read"
        if not sanitized_build():  # ASan's quarantine keeps what was freed
            assert grew_kb < 30 * 1024, f"warden's RSS grew by {grew_kb // 1024} MiB"
        # read again: the rest of the last request goes out and every request gets its answer
        want = (sent + len(pend)) // len(one)
        status = b"HTTP/1.1 200 OK\r\n"
        got, tail = 0, b""
        deadline = time.monotonic() + 30
        while got < want and time.monotonic() < deadline:
            r, w, _ = select.select([s], [s] if pend else [], [], 1)
            if w:
                pend = pend[s.send(pend):]
            if r:
                d = s.recv(1 << 20)
                assert d, f"the gateway closed the connection after {got} of {want} answers"
                data = tail + d
                got += data.count(status)
                # a status line cut by recv is completed by the next read; keep fewer bytes than a whole
                # one, so one already counted is never counted again
                tail = data[-(len(status) - 1):]
        assert got == want, (got, want)
    finally:
        s.close()


def test_slow_upstream_not_cut_by_client_timeouts(gw_slow_upstream):
    # header/body/idle timeouts (1 s) guard the client side only; a 1.5 s upstream answer is delivered,
    # and a request pipelined behind it is answered afterwards
    s = connect(gw_slow_upstream.port)
    try:
        t0 = time.monotonic()
        s.sendall(chat_request(chat_json("slow")) + NEXT)
        r1, r2 = read_responses(s, 2, timeout=6)
        elapsed = time.monotonic() - t0
        assert_still_open(s)
    finally:
        s.close()
    assert r1.status == 200 and r1.json()["choices"][0]["message"]["content"] == "echo: slow", r1
    assert r2.status == 200 and r2.json()["object"] == "list", r2
    assert elapsed >= 1.4, elapsed


def test_pipelined_requests_sent_byte_by_byte(gw):
    reqs = NEXT + chat_request(chat_json("split")) + NEXT
    s = connect(gw.port)
    try:
        for i in range(len(reqs)):
            s.sendall(reqs[i:i + 1])
        resps = read_responses(s, 3)
    finally:
        s.close()
    assert [r.status for r in resps] == [200, 200, 200]
    assert resps[1].json()["choices"][0]["message"]["content"] == "echo: split"


@pytest.mark.parametrize("conn", [b"close", b"Close", b"keep-alive, close", b"foo,  CLOSE"])
def test_connection_close_honoured(gw, conn):
    req = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: " + conn + b"\r\n\r\n"
    data, how = exchange(gw.port, req + NEXT)
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, f"a request after Connection: close was answered: {data!r}"
    assert resps[0].status == 200
    assert resps[0].header("connection") == "close"
    assert how == "eof"


def test_connection_close_on_upstream_request(gw):
    req = chat_request(chat_json("bye"), b"Connection: close\r\n")
    data, how = exchange(gw.port, req + NEXT)
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, f"a request after Connection: close was answered: {data!r}"
    assert resps[0].status == 200 and resps[0].json()["choices"][0]["message"]["content"] == "echo: bye"
    assert resps[0].header("connection") == "close"
    assert how == "eof"


def test_obs_text_in_header_value_accepted(gw):
    s = connect(gw.port)
    try:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Name: J\xc3\xbcrgen\t\x80\xff\r\n\r\n")
        (r,) = read_responses(s, 1)
    finally:
        s.close()
    assert r.status == 200, r


def test_connection_close_on_error_response(gw):
    req = b"GET /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    data, how = exchange(gw.port, req)
    (r,), rest = parse_responses(data)
    assert_error(r, 404)
    assert r.header("connection") == "close" and how == "eof"


def test_http10_request_closes_after_response(gw):
    req = b"GET /v1/models HTTP/1.0\r\n\r\n"
    data, how = exchange(gw.port, req + b"GET /v1/models HTTP/1.0\r\n\r\n")
    resps, rest = parse_responses(data)
    assert len(resps) == 1 and not rest, data
    assert resps[0].status == 200 and resps[0].json()["object"] == "list"
    assert resps[0].header("connection") == "close"
    assert how == "eof"


def test_http10_keep_alive_is_honoured(gw):
    req = b"GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    s = connect(gw.port)
    try:
        for _ in range(2):
            s.sendall(req)
            (r,) = read_responses(s, 1)
            assert r.status == 200 and r.header("connection") != "close", r
        assert_still_open(s)
    finally:
        s.close()


def test_http10_chat_with_content_length(gw):
    body = chat_json("ten")
    req = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
    data, how = exchange(gw.port, req + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    (r,), rest = parse_responses(data)
    assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == "echo: ten"
    assert how == "eof" and not rest


def test_chunked_body_with_extension_and_trailer(gw):
    body = chat_json("chunky")
    enc = (b"7;ext=1\r\n" + body[:7] + b"\r\n"
           + b"%x;a;b=\"q \\\" ;x\"\r\n" % (len(body) - 7) + body[7:] + b"\r\n"
           + b"0;last=yes\r\nX-Trailer: t1\r\nX-Other: t2\r\n\r\n")
    s = connect(gw.port)
    try:
        s.sendall(CHUNKED_HEAD + enc + NEXT)
        r, r2 = read_responses(s, 2)
        assert_still_open(s)
    finally:
        s.close()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "echo: chunky"
    assert r2.status == 200 and r2.json()["object"] == "list"


def test_chunk_size_with_16_hex_digits_accepted(gw):
    body = chat_json("sixteen")
    enc = b"%016x\r\n" % len(body) + body + b"\r\n0000000000000000\r\n\r\n"
    s = connect(gw.port)
    try:
        s.sendall(CHUNKED_HEAD + enc)
        (r,) = read_responses(s, 1)
    finally:
        s.close()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "echo: sixteen"


@pytest.mark.parametrize("te", [b"Chunked", b"CHUNKED", b"cHuNkEd", b"  chunked", b"\tchunked\t", b"chunked  "])
def test_transfer_encoding_chunked_variants_accepted(gw, te):
    body = chat_json("variant")
    head = CHAT_HEAD + b"Transfer-Encoding:" + te + b"\r\n\r\n"
    s = connect(gw.port)
    try:
        s.sendall(head + chunked(body, [len(body)]))
        (r,) = read_responses(s, 1)
        assert_still_open(s)
    finally:
        s.close()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "echo: variant"


def test_one_leading_crlf_tolerated(gw):
    s = connect(gw.port)
    try:
        s.sendall(b"\r\n" + NEXT)
        (r,) = read_responses(s, 1)
    finally:
        s.close()
    assert r.status == 200


def test_expect_100_continue(gw):
    body = chat_json("continue")
    s = connect(gw.port)
    try:
        s.sendall(CHAT_HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = b""
        deadline = time.monotonic() + 2.0
        while b"\r\n\r\n" not in interim:
            left = deadline - time.monotonic()
            assert left > 0, f"no 100 Continue before the body was sent: {interim!r}"
            s.settimeout(left)
            b = s.recv(65536)
            assert b, f"closed while waiting for 100 Continue: {interim!r}"
            interim += b
        head, _, extra = interim.partition(b"\r\n\r\n")
        assert head == b"HTTP/1.1 100 Continue", interim
        assert extra == b"", f"the final response came before the body was sent: {interim!r}"
        s.sendall(body)
        (r,) = read_responses(s, 1)
        assert_still_open(s)
    finally:
        s.close()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "echo: continue"


def test_expect_100_continue_case_insensitive_and_body_already_sent(gw):
    # a client that does not wait may send the body at once; it must still be answered exactly once
    body = chat_json("eager")
    s = connect(gw.port)
    try:
        s.sendall(CHAT_HEAD + b"Expect: 100-Continue\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        resps = []
        buf = b""
        deadline = time.monotonic() + 5
        while not any(r.status >= 200 for r in resps):
            assert time.monotonic() < deadline, buf
            s.settimeout(deadline - time.monotonic())
            b = s.recv(65536)
            assert b, buf
            buf += b
            resps, _ = parse_responses(buf)
    finally:
        s.close()
    final = [r for r in resps if r.status >= 200]
    assert len(final) == 1 and final[0].status == 200, resps
    assert all(r.status == 100 for r in resps if r.status < 200), resps


# ---- error responses: request id and OpenAI shape ----------------------------------------------------


def test_404_has_request_id_and_error_body(gw):
    data, how = exchange(gw.port, b"GET /v1/nothing-here HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    (r,), _ = parse_responses(data)
    err = assert_error(r, 404)
    assert err["type"] == "not_found_error"


def test_405_has_request_id_error_body_and_allow(gw):
    data, how = exchange(gw.port, b"DELETE /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    (r,), _ = parse_responses(data)
    err = assert_error(r, 405)
    assert err["type"] == "invalid_request_error"
    # RFC 9110 15.5.6: a 405 response MUST carry Allow with the methods the resource supports
    allow = r.header("allow")
    assert allow is not None, f"405 without an Allow header: {r}"
    assert [m.strip() for m in allow.split(",")] == ["POST"], allow


@pytest.mark.parametrize("target", [b"/v1/models", b"/v1/chat/completions", b"/nope"])
def test_head_response_has_no_body(gw, target):
    # RFC 9110 9.3.2: a response to HEAD carries no content. If one is sent, a keep-alive client reads
    # those bytes as the start of the next response (response desynchronisation).
    s = connect(gw.port)
    try:
        s.sendall(b"HEAD " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n" + NEXT)
        buf = b""
        deadline = time.monotonic() + 3
        while True:
            resps, rest = parse_responses(buf, head_only=(0,))
            if len(resps) == 2 or time.monotonic() > deadline:
                break
            rd, _, _ = select.select([s], [], [], 0.2)
            if rd:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
    finally:
        s.close()
    assert len(resps) == 2 and not rest, f"HEAD response framing is broken: {buf!r}"
    assert resps[0].status in (404, 405) and resps[0].header("x-warden-request-id"), resps[0]
    assert resps[1].status == 200 and resps[1].json()["object"] == "list", resps[1]


@pytest.mark.parametrize("req,status", [
    (b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-A: a\x00\r\n\r\n", 400),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414),
    (b"GET /v1/models HTTP/2.0\r\nHost: gw\r\n\r\n", 505),
    (CHAT_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 501),
], ids=["400", "414", "505", "501"])
def test_parse_errors_carry_request_id_and_error_code(gw, req, status):
    err = assert_rejected_and_closed(gw.port, req, status)
    expected_code = {414: "uri_too_long"}.get(status, "invalid_request")
    assert err["code"] == expected_code, err
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error"), err

"""Integration tests of warden's process lifecycle: the admin listener (health, readiness, metrics),
configuration reload on SIGHUP, graceful drain on SIGTERM, and the CLI's exit statuses.

Run: /usr/bin/python3 -m pytest tests/integration/test_lifecycle.py -q
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from conftest import UPSTREAM_KEY, WARDEN, chat_body, gateway_yaml, raw_exchange

JSON = {"Content-Type": "application/json"}


# ---- fixtures and helpers --------------------------------------------------------------------------


def post(base, path, body, timeout=10.0):
    return httpx.post(base + path, content=json.dumps(body), headers=JSON, timeout=timeout)


def sse_payloads(data):
    text = data.decode("utf-8")
    out = []
    for ev in text.split("\n\n")[:-1]:
        assert ev.startswith("data: ") and "\n" not in ev, f"unexpected SSE event {ev[:200]!r}"
        out.append(ev[len("data: "):])
    return out


def content_of(payloads):
    parts = []
    for p in payloads:
        if p == "[DONE]":
            continue
        o = json.loads(p)
        for ch in o.get("choices", []):
            parts.append(ch.get("delta", {}).get("content") or "")
    return "".join(parts)


def scrape(g):
    """The /metrics page as {(name, frozenset(labels)): value}, checking the exposition syntax."""
    r = httpx.get(g.admin_url + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"bad metrics line {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def wait_for(pred, timeout=3.0, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


class StreamClient(threading.Thread):
    """Reads one streamed chat completion in a thread: `first` is set once an event has arrived,
    `payloads` holds every data payload, `error` any transport error (e.g. the server went away)."""

    def __init__(self, base, body, timeout=30):
        super().__init__(daemon=True)
        self.base, self.body, self.timeout = base, body, timeout
        self.first = threading.Event()
        self.status = None
        self.payloads = []
        self.error = None
        self.start()

    def run(self):
        buf = b""
        try:
            with httpx.Client(timeout=self.timeout) as c:
                with c.stream("POST", self.base + "/v1/chat/completions", content=json.dumps(self.body),
                              headers=JSON) as r:
                    self.status = r.status_code
                    for chunk in r.iter_raw():
                        buf += chunk
                        while b"\n\n" in buf:
                            ev, buf = buf.split(b"\n\n", 1)
                            self.payloads += sse_payloads(ev + b"\n\n")
                            self.first.set()
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            self.error = e
        finally:
            self.first.set()


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # the handshake raced a listener being closed (each worker has its own SO_REUSEPORT socket):
        # not refused yet; the caller asks again
        return False


def words(n):
    return " ".join(f"w{i}" for i in range(n))


# ---- admin listener ------------------------------------------------------------------------------


def test_health_and_readiness(sim, gateway):
    s = sim()
    g = gateway(s.port)
    r = httpx.get(g.admin_url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(g.admin_url + "/readyz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    r = httpx.post(g.admin_url + "/healthz", timeout=5)
    assert r.status_code == 405
    r = httpx.get(g.admin_url + "/nope", timeout=5)
    assert r.status_code == 404
    # the admin endpoints live only on the admin listener
    r = httpx.get(g.url + "/metrics", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


def test_metrics_count_requests(sim, gateway):
    s = sim()
    g = gateway(s.port)
    answers = [post(g.url, "/v1/chat/completions", chat_body(f"m{i}")) for i in range(3)]
    answers += [post(g.url, "/v1/chat/completions", chat_body("x", model="absent")) for i in range(2)]
    answers.append(post(g.url, "/v1/embeddings", {"model": "gpt-4o-mini", "input": "e"}))
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 404, 200]

    def counted():
        ms = scrape(g)
        return ms if metric(ms, "warden_request_duration_seconds_count", route="chat") == 5 else None

    ms = wait_for(counted)
    assert ms, scrape(g)
    assert metric(ms, "warden_requests_total", route="chat", status="200") == 3
    assert metric(ms, "warden_requests_total", route="chat", status="404") == 2
    assert metric(ms, "warden_requests_total", route="embeddings", status="200") == 1
    assert not [k for k in ms if k[0] == "warden_requests_total" and dict(k[1]).get("route") == "completions"]
    for name, chat_count in (("warden_request_duration_seconds", 5), ("warden_gateway_overhead_seconds", 5),
                             ("warden_upstream_duration_seconds", 3)):  # rejected requests never went upstream
        assert metric(ms, name + "_count", route="chat") == chat_count, name
        assert metric(ms, name + "_count", route="embeddings") == 1, name
        assert metric(ms, name + "_sum", route="chat") > 0, name
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in ms.items()
                          if k[0] == name + "_bucket" and dict(k[1])["route"] == "chat"))
        assert len(buckets) >= 5, name
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{name} buckets are not cumulative"
        assert buckets[-1] == (float("inf"), chat_count), name
    # overhead is a part of the duration
    assert metric(ms, "warden_gateway_overhead_seconds_sum", route="chat") <= \
        metric(ms, "warden_request_duration_seconds_sum", route="chat")
    assert ("warden_active_connections", frozenset()) in ms
    # bytes: the same totals as the requests' events, and at least the bodies that went each way
    ev = g.events()
    assert len(ev) == 6
    assert metric(ms, "warden_received_bytes_total") == sum(e["bytes_in"] for e in ev)
    assert metric(ms, "warden_sent_bytes_total") == sum(e["bytes_out"] for e in ev)
    assert metric(ms, "warden_received_bytes_total") > sum(len(r.request.content) for r in answers)
    assert metric(ms, "warden_sent_bytes_total") > sum(len(r.content) for r in answers)
    assert metric(ms, "warden_config_reloads_total") == 0
    assert metric(ms, "warden_config_reload_failures_total") == 0


def test_active_connections_gauge(sim, gateway):
    s = sim()
    g = gateway(s.port)
    base = metric(scrape(g), "warden_active_connections")
    conns = [socket.create_connection(("127.0.0.1", g.port), timeout=5) for _ in range(3)]
    try:
        assert wait_for(lambda: metric(scrape(g), "warden_active_connections") == base + 3), scrape(g)
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: metric(scrape(g), "warden_active_connections") == base), scrape(g)
    # connections that warden itself ends (Connection: close) are released too
    fds = len(os.listdir(f"/proc/{g.proc.pid}/fd"))
    for _ in range(3):
        out = raw_exchange(g.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out
    assert wait_for(lambda: metric(scrape(g), "warden_active_connections") == base), scrape(g)
    # the admin connection of the last scrape may still be closing (its EOF not yet read): wait for it
    assert wait_for(lambda: len(os.listdir(f"/proc/{g.proc.pid}/fd")) <= fds), "file descriptors leaked"


# ---- reload (SIGHUP) --------------------------------------------------------------------------------


def test_reload_applies_new_models(sim, gateway):
    s = sim()
    g = gateway(s.port)
    assert post(g.url, "/v1/chat/completions", chat_body("a")).status_code == 200
    g.rewrite_config(models=[("fresh-model", "llama-3.1-8b"), ("med-large", "llama-3.1-70b")])
    g.reload()
    assert wait_for(lambda: metric(scrape(g), "warden_config_reloads_total") == 1)
    r = post(g.url, "/v1/chat/completions", chat_body("b", model="fresh-model"))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "llama-3.1-8b"
    r = post(g.url, "/v1/chat/completions", chat_body("c"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    models = httpx.get(g.url + "/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["fresh-model", "med-large"]
    assert metric(scrape(g), "warden_config_reload_failures_total") == 0
    assert g.alive()


CACHE_RULES = """version: 1
rules:
  - id: t.code
    type: PROJECT_CODE
    class: internal
    pattern: 'PRJ-[0-9]{%d}'
"""
CACHED = re.compile(r"guard: 1 rules; (\d+) databases compiled, (\d+) loaded from the cache in (\S+)")


def test_rule_cache_serves_restarts_and_reloads(sim, gateway, tmp_path):
    """The compiled rules are kept in guard.cache_dir: a restart and a reload with the same rules load
    them (none compiled), and the rules loaded so work; a changed rule is compiled on reload."""
    rules, cache = tmp_path / "rules", tmp_path / "rule-cache"
    rules.mkdir()
    (rules / "r.yaml").write_text(CACHE_RULES % 5)
    guard = (f"guard: {{ rules_dir: {rules}, cache_dir: {cache}, default_profile: p }}\n"
             "guard_profiles:\n  p: { input: { internal: block } }\n")
    s = sim()

    def logged(g, n):
        assert wait_for(lambda: len(CACHED.findall(g.stderr())) >= n, timeout=10), g.stderr()
        compiled, loaded, where = CACHED.findall(g.stderr())[n - 1]
        assert where == str(cache)
        return int(compiled), int(loaded)

    g = gateway(s.port, extra=guard)
    compiled, loaded = logged(g, 1)
    assert compiled >= 1 and loaded == 0
    g.stop()
    g = gateway(s.port, extra=guard)
    assert logged(g, 1) == (0, compiled)
    r = post(g.url, "/v1/chat/completions", chat_body("ship PRJ-12345 today"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_blocked", r.text
    assert post(g.url, "/v1/chat/completions", chat_body("ship PRJ-1234 today")).status_code == 200
    g.reload()
    assert logged(g, 2) == (0, compiled)
    (rules / "r.yaml").write_text(CACHE_RULES % 4)
    g.reload()
    assert logged(g, 3) == (compiled, 0)
    assert post(g.url, "/v1/chat/completions", chat_body("ship PRJ-1234 today")).status_code == 400
    # `warden config check` compiles as serve does, through the same cache (a deploy step can warm it)
    r = run("config", "check", str(g.config_path))
    assert r.returncode == 0 and f"guard: 1 rules; 0 databases compiled, {compiled} loaded from the cache in {cache}\n" in r.stdout
    cache.chmod(0o770)
    r = run("config", "check", str(g.config_path))
    assert r.returncode == 0 and f"guard: 1 rules; {compiled} databases compiled, 0 loaded" in r.stdout
    assert f"warning: rule cache: {cache} is not used: it is writable by group or others" in r.stderr


def test_invalid_reload_is_refused_and_old_config_serves(sim, gateway):
    s = sim()
    g = gateway(s.port)
    # an unknown key, alongside a models change that must not take effect
    g.rewrite_config(models=[("other", "sim-small")], extra="surprise_key: 1")
    g.reload()
    assert wait_for(lambda: metric(scrape(g), "warden_config_reload_failures_total") == 1), scrape(g)
    assert g.alive()
    assert post(g.url, "/v1/chat/completions", chat_body("still")).status_code == 200
    assert post(g.url, "/v1/chat/completions", chat_body("x", model="other")).status_code == 404
    name = re.escape(str(g.config_path))
    assert re.search(name + r":\d+:\d+: .*surprise_key", g.stderr()), g.stderr()

    # a change of something that cannot change at run time (workers) is refused the same way
    text = gateway_yaml(g.port, g.admin_port, g.upstream_port, g.audit_path,
                        models=[("other", "sim-small")])
    assert "workers: 2" in text
    g.config_path.write_text(text.replace("workers: 2", "workers: 1"))
    g.reload()
    assert wait_for(lambda: metric(scrape(g), "warden_config_reload_failures_total") == 2), scrape(g)
    assert post(g.url, "/v1/chat/completions", chat_body("still")).status_code == 200
    assert post(g.url, "/v1/chat/completions", chat_body("x", model="other")).status_code == 404

    # fixing the file makes the next reload succeed
    g.rewrite_config(models=[("other", "sim-small")])
    g.reload()
    assert wait_for(lambda: metric(scrape(g), "warden_config_reloads_total") == 1)
    assert post(g.url, "/v1/chat/completions", chat_body("x", model="other")).status_code == 200
    assert post(g.url, "/v1/chat/completions", chat_body("x")).status_code == 404
    assert metric(scrape(g), "warden_config_reload_failures_total") == 2
    assert g.alive()


def test_reload_does_not_disturb_stream_in_flight(sim, gateway):
    s = sim("--tokens-per-sec", "20")
    g = gateway(s.port)
    text = words(40)  # ~2 s at 20 tokens/s
    sc = StreamClient(g.url, chat_body(text, stream=True))
    assert sc.first.wait(5) and sc.error is None
    g.rewrite_config(models=[("other", "sim-small")])   # removes the stream's model
    g.reload()
    assert wait_for(lambda: metric(scrape(g), "warden_config_reloads_total") == 1)
    assert sc.is_alive(), "the stream should still be in progress during the reload"
    r = post(g.url, "/v1/chat/completions", chat_body("x"))
    assert r.status_code == 404  # new requests see the new configuration at once
    sc.join(10)
    assert not sc.is_alive() and sc.error is None, sc.error
    assert sc.status == 200
    assert sc.payloads[-1] == "[DONE]"
    assert content_of(sc.payloads) == "echo: " + text
    ev = [e for e in g.events() if e.get("stream")]
    assert len(ev) == 1 and ev[0]["status"] == 200 and ev[0]["model"] == "gpt-4o-mini"


# ---- drain (SIGTERM) --------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_stream_then_exits_0(sim, gateway):
    s = sim("--tokens-per-sec", "20")
    g = gateway(s.port)
    text = words(40)  # ~2 s
    idle = socket.create_connection(("127.0.0.1", g.port), timeout=5)   # a keep-alive connection, idle
    idle.sendall("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    sc = StreamClient(g.url, chat_body(text, stream=True))
    assert sc.first.wait(5) and sc.error is None
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    # new connections are refused soon, while the stream is still being served
    assert wait_for(lambda: refused(g.port), timeout=1.0), "the listener still accepts after SIGTERM"
    assert sc.is_alive(), "the stream ended before the listener closed"
    r = httpx.get(g.admin_url + "/readyz", timeout=2)
    assert r.status_code == 503 and r.json() == {"status": "draining"}
    # the idle keep-alive connection is closed, not kept until the end
    idle.settimeout(2)
    assert idle.recv(65536) == b""
    idle.close()
    sc.join(5)
    assert sc.error is None, sc.error
    try:
        rc = g.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("warden did not exit after its last stream completed:\n" + g.stderr())
    elapsed = time.monotonic() - t0
    assert rc == 0, g.stderr()
    assert "drained" in g.stderr()
    assert sc.payloads[-1] == "[DONE]"
    assert content_of(sc.payloads) == "echo: " + text
    assert elapsed < 5, elapsed
    ev = g.events(wait=0)
    assert [e["status"] for e in ev if e.get("stream")] == [200], "the drained stream's event must be written"


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_busy_poll_serves_and_sleeps_when_idle(sim, gateway):
    """busy_poll_us keeps a worker polling while requests come, never once they stop, and changes
    nothing that is answered; SIGTERM still drains and exits 0."""
    s = sim()
    g = gateway(s.port, extra="busy_poll_us: 5000")
    with httpx.Client(timeout=5) as c:
        for i in range(40):
            r = c.post(g.url + "/v1/chat/completions", json=chat_body(f"hello {i}"))
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == f"echo: hello {i}"
        sc = StreamClient(g.url, chat_body("a streamed answer", stream=True))
        sc.join(5)
        assert sc.error is None, sc.error
        assert content_of(sc.payloads) == "echo: a streamed answer"
        # while requests keep coming the workers poll: more CPU than the requests alone need
        t0, busy0 = time.monotonic(), cpu_ticks(g.proc.pid)
        while time.monotonic() - t0 < 1.0:
            assert c.get(g.url + "/v1/models").status_code == 200
            time.sleep(0.002)
        busy = cpu_ticks(g.proc.pid) - busy0
    # idle: after 5 ms without a read every worker sleeps again
    time.sleep(0.2)
    idle0 = cpu_ticks(g.proc.pid)
    time.sleep(1.5)
    idle = cpu_ticks(g.proc.pid) - idle0
    hz = os.sysconf("SC_CLK_TCK")
    assert idle < 0.1 * hz, f"{idle} ticks of CPU in 1.5 s idle: a worker kept polling"
    assert busy > idle, (busy, idle)
    g.signal(signal.SIGTERM)
    assert g.wait(timeout=5) == 0, g.stderr()


def test_drain_timeout_bounds_shutdown(sim, gateway):
    s = sim("--tokens-per-sec", "10")
    g = gateway(s.port, limits={"drain_timeout_ms": 500})
    sc = StreamClient(g.url, chat_body(words(100), stream=True))  # ~10 s
    assert sc.first.wait(5) and sc.error is None
    t0 = time.monotonic()
    g.signal(signal.SIGTERM)
    rc = g.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 0, g.stderr()
    assert 0.4 <= elapsed <= 2.0, elapsed
    sc.join(5)
    assert not sc.is_alive()
    assert "[DONE]" not in sc.payloads, "a stream cut by the drain deadline cannot have completed"
    assert refused(g.port)


# ---- CLI --------------------------------------------------------------------------------------------


def run(*args, env_key=True, timeout=10):
    env = dict(os.environ)
    if env_key:
        env["WARDEN_TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    else:
        env.pop("WARDEN_TEST_UPSTREAM_KEY", None)
    return subprocess.run([WARDEN, *args], capture_output=True, text=True, env=env, timeout=timeout)


def good_yaml(tmp_path, **kw):
    p = tmp_path / "good.yaml"
    p.write_text(gateway_yaml(18999, 18998, 18997, tmp_path / "audit.jsonl", **kw))
    return p


def test_config_check_good_and_bad(tmp_path):
    good = good_yaml(tmp_path)
    r = run("config", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert f"{good}: ok" in r.stdout
    assert UPSTREAM_KEY not in r.stdout + r.stderr

    bad = tmp_path / "bad.yaml"
    lines = good.read_text().splitlines()
    lines.insert(3, "limits:\n  max_conections: 10")   # a misspelt key on line 5, column 3
    bad.write_text("\n".join(lines) + "\n")
    r = run("config", "check", str(bad))
    assert r.returncode == 2
    assert re.search(re.escape(str(bad)) + r":5:3: .*max_conections", r.stderr), r.stderr
    assert r.stdout == ""

    # the credential variable must be set
    r = run("config", "check", str(good), env_key=False)
    assert r.returncode == 2
    assert re.search(re.escape(str(good)) + r":\d+:\d+: .*WARDEN_TEST_UPSTREAM_KEY", r.stderr), r.stderr

    r = run("config", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "missing.yaml" in r.stderr
    assert run("config", "check").returncode == 2
    assert run("config", "frobnicate", str(good)).returncode == 2


def test_serve_refuses_missing_or_invalid_config(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    r = run("serve", "-c", str(missing))
    assert r.returncode == 2
    assert str(missing) in r.stderr and re.search(r"cannot open|No such file", r.stderr), r.stderr

    good = good_yaml(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("workers: 2", "workers: two"))
    r = run("serve", "-c", str(bad))
    assert r.returncode == 2
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: .*workers", r.stderr), r.stderr
    assert refused(18999), "an invalid config must not start a listener"

    r = run("serve")
    assert r.returncode == 2 and "-c" in r.stderr


def test_unknown_cli_flags_exit_2(tmp_path):
    good = good_yaml(tmp_path)
    r = run("serve", "-c", str(good), "--bogus-flag")
    assert r.returncode == 2 and "--bogus-flag" in r.stderr
    assert refused(18999)
    r = run("--bogus-flag")
    assert r.returncode == 2 and "--bogus-flag" in r.stderr
    r = run("no-such-command")
    assert r.returncode == 2
    r = run("sim", "--no-such-option")
    assert r.returncode == 2

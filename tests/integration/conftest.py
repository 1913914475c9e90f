"""Shared fixtures for integration tests: real `warden serve` and `warden sim` processes on loopback.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration
WARDEN_BIN selects the binary (default: build/warden).
"""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WARDEN = os.environ.get("WARDEN_BIN", str(ROOT / "build" / "warden"))
# Every warden started by the tests (serve, scan, config check) keeps the compiled rules here and
# reuses them when the rules are the same: seconds per start saved (minutes under sanitizers). Tests
# of the cache itself pass their own directory.
os.environ.setdefault("XDG_CACHE_HOME", str(ROOT / "build" / "test-cache"))


def sanitized_build():
    """The binary under test is an AddressSanitizer build (its quarantine makes RSS meaningless)."""
    with open(WARDEN, "rb") as f:
        return b"__asan_init" in f.read()
UPSTREAM_KEY = "sim-upstream-key-4f8d1c"  # the credential warden injects; tests check it never leaks


_given_ports = set()


def free_port():
    """A port nothing listens on, never one handed out before in this run: the kernel may offer a
    port again as soon as its probe socket is closed, before the process it was meant for binds it
    (a gateway once got the same port for listen and admin)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


class Proc:
    """A child process with its output in files, stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, args, tmp, name, env=None):
        self.out_path = Path(tmp) / f"{name}.out"
        self.err_path = Path(tmp) / f"{name}.err"
        self.args = args
        self.proc = subprocess.Popen(args, stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"),
                                     stdin=subprocess.DEVNULL, env=env)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=10):
        return self.proc.wait(timeout=timeout)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")


class Sim(Proc):
    def __init__(self, tmp, *flags):
        self.port = free_port()
        super().__init__([WARDEN, "sim", "--listen", f"127.0.0.1:{self.port}", *flags], tmp, f"sim-{self.port}")
        try:
            wait_port(self.port, self.proc)
        except Exception:
            self.stop()  # never leave a half-started child behind
            raise
        self.url = f"http://127.0.0.1:{self.port}"


def gateway_yaml(port, admin_port, upstream_port, audit_path, extra="", limits=None, models=None, upstream_extra="",
                 listen_tls=None, admin_tls=None, upstream_url=None):
    """listen_tls / admin_tls: a YAML flow mapping for the listener's tls key; upstream_url replaces
    http://127.0.0.1:{upstream_port}/v1 (e.g. an https:// URL)."""
    models = models or [("gpt-4o-mini", "sim-small"), ("med-large", "llama-3.1-70b")]
    upstream_url = upstream_url or f"http://127.0.0.1:{upstream_port}/v1"
    lines = [
        f"listen: {{ address: 127.0.0.1:{port}{', tls: ' + listen_tls if listen_tls else ''} }}",
        f"admin: {{ address: 127.0.0.1:{admin_port}{', tls: ' + admin_tls if admin_tls else ''} }}",
        "workers: 2",
        "log_level: info",
    ]
    if limits:
        lines.append("limits:")
        lines += [f"  {k}: {v}" for k, v in limits.items()]
    lines += [
        "upstreams:",
        f"  - {{ name: sim, url: {upstream_url}, api_key_env: WARDEN_TEST_UPSTREAM_KEY"
        f"{', ' + upstream_extra if upstream_extra else ''} }}",
        "models:",
    ]
    lines += [f"  - {{ name: {n}, upstream: sim, upstream_model: {u} }}" for n, u in models]
    lines.append(f"audit: {{ file: {audit_path} }}")
    if "auth:" not in extra:
        lines.append("auth: { mode: none }")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


class Gateway(Proc):
    def __init__(self, tmp, upstream_port, **kw):
        self.tmp = Path(tmp)
        self.port = free_port()
        self.admin_port = free_port()
        self.upstream_port = upstream_port
        self.audit_path = self.tmp / f"audit-{self.port}.jsonl"
        self.config_path = self.tmp / f"warden-{self.port}.yaml"
        self.config_path.write_text(gateway_yaml(self.port, self.admin_port, upstream_port, self.audit_path, **kw))
        env = dict(os.environ, WARDEN_TEST_UPSTREAM_KEY=UPSTREAM_KEY)
        super().__init__([WARDEN, "serve", "-c", str(self.config_path)], tmp, f"warden-{self.port}", env=env)
        try:
            # rules compile at start (seconds under sanitizers on a busy machine)
            wait_port(self.port, self.proc, timeout=60)
            wait_port(self.admin_port, self.proc, timeout=60)
        except Exception:
            self.stop()
            raise
        self.kw = kw
        self.url = f"{'https' if kw.get('listen_tls') else 'http'}://127.0.0.1:{self.port}"
        self.admin_url = f"{'https' if kw.get('admin_tls') else 'http'}://127.0.0.1:{self.admin_port}"

    def rewrite_config(self, **kw):
        self.config_path.write_text(gateway_yaml(self.port, self.admin_port, self.upstream_port, self.audit_path, **kw))

    def reload(self):
        self.signal(signal.SIGHUP)
        time.sleep(0.3)

    def events(self, wait=0.5):
        """Audit/access events written so far (they are flushed every 200 ms)."""
        time.sleep(wait)
        if not self.audit_path.exists():
            return []
        return [json.loads(l) for l in self.audit_path.read_text().splitlines() if l.strip()]


@pytest.fixture
def sim(tmp_path):
    """Factory: sim(*flags) starts a `warden sim` with those flags."""
    procs = []

    def start(*flags):
        s = Sim(tmp_path, *flags)
        procs.append(s)
        return s

    yield start
    for p in procs:
        p.stop()
    for p in procs:
        if sanitizer_report(p):
            pytest.fail("sanitizer report in warden sim's stderr:\n" + p.stderr()[-4000:])


def sanitizer_report(p):
    return "AddressSanitizer" in p.stderr() or "LeakSanitizer" in p.stderr() or "runtime error:" in p.stderr()


@pytest.fixture
def gateway(tmp_path):
    """Factory: gateway(upstream_port, limits={...}, models=[...], extra="yaml") starts `warden serve`."""
    procs = []

    def start(upstream_port, **kw):
        g = Gateway(tmp_path, upstream_port, **kw)
        procs.append(g)
        return g

    yield start
    for p in procs:  # stop every process before judging any of them
        p.stop()
    for p in procs:
        if sanitizer_report(p):
            pytest.fail("sanitizer report in warden's stderr:\n" + p.stderr()[-4000:])


def raw_exchange(port, data, timeout=3.0, shutdown=False):
    """Sends raw bytes, returns everything received until the peer closes or `timeout` passes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def chat_body(text="hello", model="gpt-4o-mini", stream=False, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body

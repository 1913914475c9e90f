"""Integration tests of TLS: clients -> warden over TLS (listen.tls, admin.tls), warden -> upstream
over https (upstreams[].tls), and what happens when TLS is misconfigured or misused.

A throwaway CA and certificates are made with the `openssl` CLI in a temporary directory; `warden sim
--tls-cert/--tls-key` is the https upstream.

Run: /usr/bin/python3 -m pytest tests/integration/test_tls.py -q
"""
import json
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import WARDEN, chat_body, raw_exchange

JSON = {"Content-Type": "application/json"}


# ---- certificates ----------------------------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_leaf(d, name, cn, san, ca="ca"):
    """A P-256 key and a certificate signed by `ca`, with subjectAltName `san`."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=warden test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    make_leaf(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "server2", "localhost", "DNS:localhost,IP:127.0.0.1")  # same names, another key: a renewal
    make_leaf(d, "other", "other.test", "DNS:other.test")  # right CA, wrong names
    return d


def tls_block(pki, name="server", **extra):
    items = [f"cert: {pki / (name + '.pem')}", f"key: {pki / (name + '.key')}"]
    items += [f"{k}: {v}" for k, v in extra.items()]
    return "{ " + ", ".join(items) + " }"


def client(pki, **kw):
    return httpx.Client(verify=str(pki / "ca.pem"), timeout=10, **kw)


def peer_cert(port, pki):
    """The DER certificate the listener presents to a new connection."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True), t.version(), t.selected_alpn_protocol()


def handshake(port, pki, minv=None, maxv=None, seclevel0=False):
    """Tries a handshake limited to [minv, maxv]; returns the negotiated version or raises ssl.SSLError."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if seclevel0:  # OpenSSL 3 will not even offer TLS 1.0/1.1 at the default security level
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.version()


def normalize(obj):
    """A chat completion (or chunk) without the fields that differ between any two calls."""
    obj = dict(obj)
    for k in ("id", "created"):
        obj.pop(k, None)
    return obj


def stream_events(c, base, model="gpt-4o-mini", text="tell me a story"):
    out = []
    with c.stream("POST", base + "/v1/chat/completions", headers=JSON,
                  content=json.dumps(chat_body(text, model=model, stream=True))) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                p = line[len("data: "):].strip()
                out.append(p if p == "[DONE]" else normalize(json.loads(p)))
    return out


def chat(c, base, model="gpt-4o-mini", text="hello over tls"):
    return c.post(base + "/v1/chat/completions", headers=JSON, content=json.dumps(chat_body(text, model=model)))


def sim_client_ports(sim_port):
    """Client-side ports of every TCP socket to sim_port in /proc/net/tcp (established or TIME_WAIT):
    one per connection ever made recently."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if rport == sim_port:
            ports.add(lport)
        elif lport == sim_port and rport != 0:
            ports.add(rport)
    return ports


def metric(g, name):
    text = httpx.get(g.admin_url + "/metrics", timeout=5, verify=False).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# ---- client -> warden -------------------------------------------------------------------------------


def test_chat_over_tls_is_identical_to_plaintext(sim, gateway, pki):
    s = sim()
    plain = gateway(s.port)
    tls = gateway(s.port, listen_tls=tls_block(pki))
    assert tls.url.startswith("https://")
    with httpx.Client(timeout=10) as pc, client(pki) as tc:
        a, b = chat(pc, plain.url), chat(tc, tls.url)
        assert a.status_code == b.status_code == 200, b.text
        assert normalize(a.json()) == normalize(b.json())
        assert b.json()["choices"][0]["message"]["content"] == "echo: hello over tls"
        assert b.headers["x-warden-request-id"]
        ea, eb = stream_events(pc, plain.url), stream_events(tc, tls.url)
        assert ea == eb and eb[-1] == "[DONE]" and len(eb) > 3
        # keep-alive over TLS: several requests, one connection
        for _ in range(5):
            assert chat(tc, tls.url).status_code == 200
    der, version, alpn = peer_cert(tls.port, pki)
    assert version == "TLSv1.3" and alpn == "http/1.1"


def test_plaintext_http_to_tls_port_gets_400_and_close(sim, gateway, pki):
    s = sim()
    g = gateway(s.port, listen_tls=tls_block(pki))
    resp = raw_exchange(g.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:200]
    assert b"requires TLS" in resp and b"Connection: close" in resp
    body = json.loads(resp.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "invalid_request_error"
    # the port still serves TLS afterwards
    with client(pki) as c:
        assert c.get(g.url + "/v1/models").status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_old_protocol_versions_are_refused(sim, gateway, pki):
    s = sim()
    g13 = gateway(s.port, listen_tls=tls_block(pki))  # default min_version 1.3
    g12 = gateway(s.port, listen_tls=tls_block(pki, min_version='"1.2"'))
    assert handshake(g13.port, pki) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(g13.port, pki, maxv=ssl.TLSVersion.TLSv1_2)
    assert handshake(g12.port, pki, maxv=ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for port in (g13.port, g12.port):
        with pytest.raises(ssl.SSLError):
            handshake(port, pki, minv=ssl.TLSVersion.TLSv1, maxv=ssl.TLSVersion.TLSv1_1, seclevel0=True)
    # a client that offers ALPN without http/1.1 is refused, not misunderstood
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", g13.port), timeout=5) as sock:
        with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
            ctx.wrap_socket(sock, server_hostname="localhost")
    # the refused handshakes left the gateways healthy
    with client(pki) as c:
        assert c.get(g12.url + "/v1/models").status_code == 200


def test_handshake_must_finish_within_header_timeout(sim, gateway, pki):
    s = sim()
    g = gateway(s.port, listen_tls=tls_block(pki), limits={"header_timeout_ms": 500})
    t0 = time.monotonic()
    # half a ClientHello, then silence
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert sock.recv(100) == b""  # closed by warden, no reply
    assert time.monotonic() - t0 < 3
    with socket.create_connection(("127.0.0.1", g.port), timeout=5) as sock:
        assert sock.recv(100) == b""
    with client(pki) as c:
        assert c.get(g.url + "/v1/models").status_code == 200


def test_admin_listener_over_tls(sim, gateway, pki):
    s = sim()
    g = gateway(s.port, admin_tls=tls_block(pki))
    with client(pki) as c:
        assert c.get(g.admin_url + "/healthz").json() == {"status": "ok"}
        assert "warden_config_reloads_total 0" in c.get(g.admin_url + "/metrics").text
    # the admin port refuses plaintext the same way
    assert raw_exchange(g.admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400 ")


# ---- warden -> upstream ------------------------------------------------------------------------------


def tls_sim(sim, pki, *flags):
    s = sim("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), *flags)
    assert wait_for(lambda: "(TLS)" in s.stderr()), s.stderr()
    return s


def test_https_upstream_with_ca(sim, gateway, pki):
    s = tls_sim(sim, pki)
    g = gateway(s.port, upstream_url=f"https://127.0.0.1:{s.port}/v1", upstream_extra=f"tls: {{ ca: {pki / 'ca.pem'} }}")
    plain = gateway(sim().port)
    with httpx.Client(timeout=10) as c:
        r = chat(c, g.url)
        assert r.status_code == 200, r.text
        assert normalize(r.json()) == normalize(chat(c, plain.url).json())
        assert stream_events(c, g.url) == stream_events(c, plain.url)
        # keep-alive pooling over TLS: sequential requests reuse one connection per worker
        before = sim_client_ports(s.port)
        for _ in range(12):
            assert chat(c, g.url).status_code == 200
        new = sim_client_ports(s.port) - before
        assert len(new) <= 2, f"{len(new)} new upstream connections for 12 sequential requests"


def test_https_upstream_by_name_with_server_name(sim, gateway, pki):
    s = tls_sim(sim, pki)
    # connect to localhost; the certificate names localhost
    g = gateway(s.port, upstream_url=f"https://localhost:{s.port}/v1", upstream_extra=f"tls: {{ ca: {pki / 'ca.pem'} }}")
    with httpx.Client(timeout=10) as c:
        assert chat(c, g.url).status_code == 200


def test_https_upstream_without_ca_is_502_naming_verification(sim, gateway, pki):
    s = tls_sim(sim, pki)
    g = gateway(s.port, upstream_url=f"https://127.0.0.1:{s.port}/v1")  # system store: our CA is not in it
    with httpx.Client(timeout=10) as c:
        t0 = time.monotonic()
        r = chat(c, g.url)
        assert time.monotonic() - t0 < 5
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "upstream_unavailable"
        assert "certificate verify failed" in err["message"], err
        assert "unable to get local issuer certificate" in err["message"], err
        # a streamed request fails the same way (before any byte of the answer)
        r = c.post(g.url + "/v1/chat/completions", headers=JSON, content=json.dumps(chat_body("x", stream=True)))
        assert r.status_code == 502 and "certificate verify failed" in r.text
    assert wait_for(lambda: metric(g, 'warden_upstream_errors_total{kind="upstream TLS error"}') == 2)


def test_https_upstream_name_mismatch_is_refused(sim, gateway, pki):
    s = tls_sim(sim, pki)
    g = gateway(s.port, upstream_url=f"https://127.0.0.1:{s.port}/v1",
                upstream_extra=f"tls: {{ ca: {pki / 'ca.pem'}, server_name: other.test }}")
    with httpx.Client(timeout=10) as c:
        r = chat(c, g.url)
        assert r.status_code == 502
        assert "hostname mismatch (expected 'other.test')" in r.json()["error"]["message"]
    # a certificate from the right CA for another name, reached by IP address
    o = sim("--tls-cert", str(pki / "other.pem"), "--tls-key", str(pki / "other.key"))
    g2 = gateway(o.port, upstream_url=f"https://127.0.0.1:{o.port}/v1", upstream_extra=f"tls: {{ ca: {pki / 'ca.pem'} }}")
    with httpx.Client(timeout=10) as c:
        r = chat(c, g2.url)
        assert r.status_code == 502
        assert "IP address mismatch (expected '127.0.0.1')" in r.json()["error"]["message"]


def test_https_to_a_plaintext_upstream_is_502_with_a_hint(sim, gateway):
    s = sim()  # plain HTTP
    g = gateway(s.port, upstream_url=f"https://127.0.0.1:{s.port}/v1")
    with httpx.Client(timeout=10) as c:
        r = chat(c, g.url)
        assert r.status_code == 502
        assert "plain HTTP rather than TLS" in r.json()["error"]["message"], r.text


def test_verify_false_works_and_warns_loudly(sim, gateway, pki):
    s = tls_sim(sim, pki)
    g = gateway(s.port, upstream_url=f"https://127.0.0.1:{s.port}/v1", upstream_extra="tls: { verify: false }")
    with httpx.Client(timeout=10) as c:
        assert chat(c, g.url).status_code == 200
    assert "INSECURE: upstream 'sim'" in g.stderr() and "tls.verify: false" in g.stderr()


def test_tls_on_both_sides(sim, gateway, pki):
    s = tls_sim(sim, pki)
    g = gateway(s.port, listen_tls=tls_block(pki), upstream_url=f"https://localhost:{s.port}/v1",
                upstream_extra=f"tls: {{ ca: {pki / 'ca.pem'} }}")
    with client(pki) as c:
        assert chat(c, g.url).json()["choices"][0]["message"]["content"] == "echo: hello over tls"
        ev = stream_events(c, g.url)
        assert ev[-1] == "[DONE]"


# ---- configuration and reload --------------------------------------------------------------------------


def config_check(path):
    return subprocess.run([WARDEN, "config", "check", str(path)], capture_output=True, text=True, timeout=30)


def test_config_check_reports_bad_tls_files(tmp_path, pki):
    base = ("listen: {{ address: 127.0.0.1:18999, tls: {tls} }}\n"
            "upstreams:\n  - {{ name: s, url: {url} }}\n"
            "models:\n  - {{ name: m, upstream: s }}\nauth: {{ mode: none }}\n")
    cfg = tmp_path / "w.yaml"
    cases = [
        (tls_block(pki).replace("server.key", "other.key"), "http://127.0.0.1:1",
         "listen.tls.key: the private key in", "does not match the certificate"),
        ("{ cert: missing.pem, key: missing.key }", "http://127.0.0.1:1",
         f"listen.tls.cert: {tmp_path / 'missing.pem'}: cannot open: No such file or directory", ""),
        (tls_block(pki), "https://127.0.0.1:1, tls: { ca: nope.pem }", "upstreams[0].tls.ca: ", "nope.pem: cannot open"),
        (tls_block(pki), "http://127.0.0.1:1, tls: { verify: false }", "only to https:// upstreams", ""),
    ]
    for tls, url, want, want2 in cases:
        cfg.write_text(base.format(tls=tls, url=url))
        r = config_check(cfg)
        assert r.returncode == 2, r.stdout
        line = r.stderr.strip()
        assert line.startswith(f"{cfg}:"), line
        assert want in line and want2 in line, line
    # junk where the certificate should be
    (tmp_path / "junk.pem").write_text("hello\n")
    cfg.write_text(base.format(tls=f"{{ cert: junk.pem, key: {pki / 'server.key'} }}", url="http://127.0.0.1:1"))
    r = config_check(cfg)
    assert r.returncode == 2 and "no certificate (-----BEGIN CERTIFICATE-----) found in" in r.stderr, r.stderr
    # and a good one says so, with TLS in the summary
    cfg.write_text(base.format(tls=tls_block(pki), url="http://127.0.0.1:1"))
    r = config_check(cfg)
    assert r.returncode == 0, r.stderr
    assert "(TLS 1.3+)" in r.stdout


def test_serve_refuses_to_start_with_a_bad_key(tmp_path, pki):
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"listen: {{ address: 127.0.0.1:18998, tls: {tls_block(pki).replace('server.key', 'other.key')} }}\n"
                   "upstreams:\n  - { name: s, url: http://127.0.0.1:1 }\n"
                   "models:\n  - { name: m, upstream: s }\nauth: { mode: none }\n")
    r = subprocess.run([WARDEN, "serve", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "does not match" in r.stderr


def test_sighup_with_bad_cert_keeps_serving_then_new_cert_applies(sim, gateway, pki, tmp_path):
    # the gateway's own copies, so the test can break and renew them
    for n in ("cert.pem", "cert.key"):
        src = pki / ("server.pem" if n.endswith(".pem") else "server.key")
        (tmp_path / n).write_bytes(src.read_bytes())
    block = f"{{ cert: {tmp_path / 'cert.pem'}, key: {tmp_path / 'cert.key'} }}"
    s = sim()
    g = gateway(s.port, listen_tls=block)
    first, _, _ = peer_cert(g.port, pki)
    with client(pki) as c:
        assert chat(c, g.url).status_code == 200  # this connection stays open across the reloads

        # a key that does not match: refused, the old certificate keeps serving
        (tmp_path / "cert.key").write_bytes((pki / "other.key").read_bytes())
        g.signal(signal.SIGHUP)
        assert wait_for(lambda: metric(g, "warden_config_reload_failures_total") == 1)
        assert "does not match the certificate" in g.stderr()
        assert peer_cert(g.port, pki)[0] == first
        assert chat(c, g.url).status_code == 200

        # garbage in the certificate file: refused too
        (tmp_path / "cert.pem").write_text("not a certificate\n")
        g.signal(signal.SIGHUP)
        assert wait_for(lambda: metric(g, "warden_config_reload_failures_total") == 2)
        assert peer_cert(g.port, pki)[0] == first

        # a renewed pair: new connections get it, the open one keeps working
        (tmp_path / "cert.pem").write_bytes((pki / "server2.pem").read_bytes())
        (tmp_path / "cert.key").write_bytes((pki / "server2.key").read_bytes())
        g.signal(signal.SIGHUP)
        assert wait_for(lambda: metric(g, "warden_config_reloads_total") == 1)
        assert wait_for(lambda: peer_cert(g.port, pki)[0] != first)
        assert peer_cert(g.port, pki)[0] == ssl.PEM_cert_to_DER_cert((pki / "server2.pem").read_text())
        assert chat(c, g.url).status_code == 200
        with client(pki) as c2:
            assert chat(c2, g.url).status_code == 200


def test_sighup_cannot_turn_tls_off(sim, gateway, pki):
    s = sim()
    g = gateway(s.port, listen_tls=tls_block(pki))
    g.rewrite_config()  # same file without listen.tls
    g.signal(signal.SIGHUP)
    assert wait_for(lambda: metric(g, "warden_config_reload_failures_total") == 1)
    assert "TLS on the listen listener cannot be turned off on reload" in g.stderr()
    with client(pki) as c:
        assert chat(c, g.url).status_code == 200

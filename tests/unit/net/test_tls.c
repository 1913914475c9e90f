/* Unit tests for net/tls: a client and a server wd_tls_t talk to each other in memory (the bytes one
 * produces are fed to the other), so the handshake, data, failures and their messages are checked
 * without sockets. Certificates are made at test time (certgen.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "net/tls.h"
#include "../certgen.h"

static char dir[64], p_ca[128], p_cert[128], p_key[128], p_other_ca[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/wd-test-tlsnet-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(p_ca, sizeof p_ca, "%s/ca.pem", dir);
    snprintf(p_cert, sizeof p_cert, "%s/server.pem", dir);
    snprintf(p_key, sizeof p_key, "%s/server.key", dir);
    snprintf(p_other_ca, sizeof p_other_ca, "%s/other-ca.pem", dir);
    certgen_t ca = certgen_make("test CA", NULL, NULL, -60, 86400);
    certgen_t other = certgen_make("another CA", NULL, NULL, -60, 86400);
    certgen_t leaf = certgen_make("localhost", &ca, "DNS:localhost,DNS:*.svc.test,IP:127.0.0.1", -60, 86400);
    certgen_write(&ca, p_ca, NULL);
    certgen_write(&other, p_other_ca, NULL);
    certgen_write(&leaf, p_cert, p_key);
    certgen_free(&ca);
    certgen_free(&other);
    certgen_free(&leaf);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(p_ca);
    unlink(p_cert);
    unlink(p_key);
    unlink(p_other_ca);
    rmdir(dir);
    return 0;
}

/* Moves everything `from` has to send into `to`. Returns the number of bytes moved. */
static size_t pass(wd_tls_t *from, wd_tls_t *to)
{
    char buf[4096];
    size_t total = 0, n;
    while ((n = wd_tls_take(from, buf, sizeof buf)) > 0) {
        assert_int_equal(wd_tls_feed(to, buf, n), WD_OK);
        total += n;
    }
    return total;
}

/* Runs the handshake to its end (or failure). Returns the client's final handshake status. */
static int run_handshake(wd_tls_t *cl, wd_tls_t *sv, wd_buf_t *sv_in)
{
    int rc = wd_tls_handshake(cl);
    for (int i = 0; i < 20 && rc == WD_EAGAIN; i++) {
        pass(cl, sv);
        int s = wd_tls_read(sv, sv_in);
        pass(sv, cl);
        rc = wd_tls_handshake(cl);
        if (s != WD_OK) {
            if (rc == WD_EAGAIN) rc = WD_EINVAL;
            break;
        }
    }
    return rc;
}

typedef struct {
    SSL_CTX *sctx, *cctx;
    wd_tls_t cl, sv;
    wd_buf_t cin, sin;
} pair_t;

static void pair_open(pair_t *p, const char *ca, bool verify, const char *host)
{
    char err[512];
    memset(p, 0, sizeof *p);
    p->sctx = wd_tls_server_ctx(p_cert, p_key, WD_TLS_V13, err, sizeof err);
    if (!p->sctx) fail_msg("%s", err);
    p->cctx = wd_tls_client_ctx(ca, verify, err, sizeof err);
    if (!p->cctx) fail_msg("%s", err);
    assert_int_equal(wd_tls_init_server(&p->sv, p->sctx), WD_OK);
    assert_int_equal(wd_tls_init_client(&p->cl, p->cctx, host, verify), WD_OK);
    wd_buf_init(&p->cin, 0);
    wd_buf_init(&p->sin, 0);
}

static void pair_close(pair_t *p)
{
    wd_tls_free(&p->cl);
    wd_tls_free(&p->sv);
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
    wd_buf_free(&p->cin);
    wd_buf_free(&p->sin);
}

static void test_handshake_and_data(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, p_ca, true, "localhost");
    assert_false(wd_tls_established(&p.cl));
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    assert_true(wd_tls_established(&p.cl));
    assert_string_equal(wd_tls_version(&p.cl), "TLSv1.3");
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(p.cl.ssl, &alpn, &alen);
    assert_int_equal(alen, 8);
    assert_memory_equal(alpn, "http/1.1", 8);

    /* client -> server, server -> client, large enough for several records */
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
    assert_int_equal(wd_tls_write(&p.cl, "GET / HTTP/1.1\r\n\r\n", 18), WD_OK);
    pass(&p.cl, &p.sv);
    assert_int_equal(wd_tls_read(&p.sv, &p.sin), WD_OK);
    pass(&p.sv, &p.cl); /* session tickets */
    assert_int_equal(p.sin.len, 18);
    assert_memory_equal(p.sin.data, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(wd_tls_write(&p.sv, big, sizeof big), WD_OK);
    pass(&p.sv, &p.cl);
    assert_int_equal(wd_tls_read(&p.cl, &p.cin), WD_OK);
    assert_int_equal(p.cin.len, sizeof big);
    assert_memory_equal(p.cin.data, big, sizeof big);

    /* close_notify reads as end of stream */
    wd_tls_close_notify(&p.sv);
    assert_true(wd_tls_pending(&p.sv) > 0);
    pass(&p.sv, &p.cl);
    assert_int_equal(wd_tls_read(&p.cl, &p.cin), WD_TLS_EOF);
    pair_close(&p);
}

static void test_read_respects_the_buffer_limit(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, p_ca, true, "127.0.0.1");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    char msg[40000];
    memset(msg, 'x', sizeof msg);
    assert_int_equal(wd_tls_write(&p.cl, msg, sizeof msg), WD_OK);
    pass(&p.cl, &p.sv);
    wd_buf_t small;
    wd_buf_init(&small, 10000);
    assert_int_equal(wd_tls_read(&p.sv, &small), WD_E2BIG);
    assert_int_equal(small.len, 10000);
    size_t got = 0;
    while (got + small.len < sizeof msg) { /* consume and come back for the rest */
        got += small.len;
        wd_buf_reset(&small);
        int rc = wd_tls_read(&p.sv, &small);
        assert_true(rc == WD_E2BIG || rc == WD_OK);
    }
    assert_int_equal(got + small.len, sizeof msg);
    wd_buf_free(&small);
    pair_close(&p);
}

static void test_verification_failures_are_named(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, p_other_ca, true, "localhost"); /* trusts another CA */
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_EINVAL);
    assert_string_equal(p.cl.err, "certificate verify failed: unable to get local issuer certificate");
    assert_false(wd_tls_established(&p.cl));
    assert_int_equal(wd_tls_write(&p.cl, "x", 1), WD_EINVAL);
    pair_close(&p);

    pair_open(&p, p_ca, true, "api.example.com");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_EINVAL);
    assert_string_equal(p.cl.err, "certificate verify failed: hostname mismatch (expected 'api.example.com')");
    pair_close(&p);

    pair_open(&p, p_ca, true, "10.1.2.3");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_EINVAL);
    assert_string_equal(p.cl.err, "certificate verify failed: IP address mismatch (expected '10.1.2.3')");
    pair_close(&p);

    /* a wildcard covers one label, not two, and never a partial one */
    pair_open(&p, p_ca, true, "api.svc.test");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    pair_close(&p);
    pair_open(&p, p_ca, true, "a.b.svc.test");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_EINVAL);
    pair_close(&p);

    /* verify off: anything goes (the config warns) */
    pair_open(&p, NULL, false, "api.example.com");
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    pair_close(&p);
}

static void test_version_floor(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, p_ca, true, "localhost");
    wd_tls_free(&p.cl);
    SSL_CTX_set_max_proto_version(p.cctx, TLS1_2_VERSION); /* a TLS 1.2-only client */
    assert_int_equal(wd_tls_init_client(&p.cl, p.cctx, "localhost", true), WD_OK);
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_EINVAL);
    assert_true(p.sv.failed);
    assert_non_null(strstr(p.sv.err, "unsupported protocol"));
    pair_close(&p);

    char err[512];
    SSL_CTX *s12 = wd_tls_server_ctx(p_cert, p_key, WD_TLS_V12, err, sizeof err);
    assert_non_null(s12);
    pair_open(&p, p_ca, true, "localhost");
    wd_tls_free(&p.cl);
    wd_tls_free(&p.sv);
    SSL_CTX_set_max_proto_version(p.cctx, TLS1_2_VERSION);
    assert_int_equal(wd_tls_init_server(&p.sv, s12), WD_OK);
    assert_int_equal(wd_tls_init_client(&p.cl, p.cctx, "localhost", true), WD_OK);
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    assert_string_equal(wd_tls_version(&p.sv), "TLSv1.2");
    pair_close(&p);
    SSL_CTX_free(s12);
}

static void test_plaintext_http_is_recognised(void **state)
{
    (void)state;
    char err[512];
    SSL_CTX *ctx = wd_tls_server_ctx(p_cert, p_key, WD_TLS_V13, err, sizeof err);
    assert_non_null(ctx);
    wd_tls_t t;
    assert_int_equal(wd_tls_init_server(&t, ctx), WD_OK);
    wd_buf_t in;
    wd_buf_init(&in, 0);
    const char req[] = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    wd_tls_feed(&t, req, sizeof req - 1);
    assert_int_equal(wd_tls_read(&t, &in), WD_EINVAL);
    assert_true(wd_tls_got_http(&t));
    assert_int_equal(in.len, 0);
    wd_tls_free(&t);

    /* random bytes are a failure, but not "http" */
    assert_int_equal(wd_tls_init_server(&t, ctx), WD_OK);
    wd_tls_feed(&t, "\x16\x03\x01\xff\xff garbage garbage", 20);
    assert_int_equal(wd_tls_read(&t, &in), WD_EINVAL);
    assert_false(wd_tls_got_http(&t));
    assert_true(t.err[0] != '\0');
    wd_tls_free(&t);
    wd_buf_free(&in);
    SSL_CTX_free(ctx);
}

static SSL_SESSION *saved;
static bool save_session(void *ud, SSL_SESSION *s)
{
    (void)ud;
    if (saved) SSL_SESSION_free(saved);
    saved = s;
    return true;
}

static void test_session_resumption(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, p_ca, true, "localhost");
    p.cl.on_session = save_session;
    assert_int_equal(run_handshake(&p.cl, &p.sv, &p.sin), WD_OK);
    assert_int_equal(wd_tls_write(&p.cl, "ping", 4), WD_OK);
    pass(&p.cl, &p.sv);
    assert_int_equal(wd_tls_read(&p.sv, &p.sin), WD_OK);
    pass(&p.sv, &p.cl); /* the server's tickets */
    assert_int_equal(wd_tls_read(&p.cl, &p.cin), WD_OK);
    assert_non_null(saved);
    assert_false(SSL_session_reused(p.cl.ssl));

    /* a second connection with the same contexts resumes */
    wd_tls_t cl2, sv2;
    wd_buf_t in2;
    wd_buf_init(&in2, 0);
    assert_int_equal(wd_tls_init_server(&sv2, p.sctx), WD_OK);
    assert_int_equal(wd_tls_init_client(&cl2, p.cctx, "localhost", true), WD_OK);
    SSL_set_session(cl2.ssl, saved);
    assert_int_equal(run_handshake(&cl2, &sv2, &in2), WD_OK);
    assert_true(SSL_session_reused(cl2.ssl));
    wd_tls_free(&cl2);
    wd_tls_free(&sv2);
    wd_buf_free(&in2);
    SSL_SESSION_free(saved);
    saved = NULL;
    pair_close(&p);
}

static void test_context_errors(void **state)
{
    (void)state;
    char err[512];
    assert_null(wd_tls_server_ctx("/nonexistent.pem", p_key, WD_TLS_V13, err, sizeof err));
    assert_string_equal(err, "/nonexistent.pem: cannot open: No such file or directory");
    assert_int_equal(wd_tls_server_ctx_bad_file(), 0);
    assert_null(wd_tls_server_ctx(p_cert, p_ca, WD_TLS_V13, err, sizeof err));
    assert_int_equal(wd_tls_server_ctx_bad_file(), 1);
    assert_non_null(strstr(err, "no private key"));
    assert_null(wd_tls_client_ctx(p_key, true, err, sizeof err));
    assert_non_null(strstr(err, "no CA certificate (-----BEGIN CERTIFICATE-----) found in"));
    assert_null(wd_tls_client_ctx(dir, true, err, sizeof err));
    assert_non_null(strstr(err, ": not a regular file"));
    /* an empty file and one past the 1 MiB PEM limit are refused by name */
    char p_odd[160];
    snprintf(p_odd, sizeof p_odd, "%s/odd.pem", dir);
    FILE *f = fopen(p_odd, "w");
    assert_non_null(f);
    fclose(f);
    assert_null(wd_tls_client_ctx(p_odd, true, err, sizeof err));
    assert_non_null(strstr(err, "odd.pem: empty file"));
    assert_int_equal(truncate(p_odd, (1 << 20) + 1), 0);
    assert_null(wd_tls_client_ctx(p_odd, true, err, sizeof err));
    assert_non_null(strstr(err, "odd.pem: file too large (1048577 bytes; the limit is 1048576)"));
    unlink(p_odd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_read_respects_the_buffer_limit),
        cmocka_unit_test(test_verification_failures_are_named),
        cmocka_unit_test(test_version_floor),
        cmocka_unit_test(test_plaintext_http_is_recognised),
        cmocka_unit_test(test_session_resumption),
        cmocka_unit_test(test_context_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests for the strict HTTP/1.1 head parser: accepted forms, every smuggling-relevant rejection
 * with its status, incremental feeding and response framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"

static wd_http_msg_t msg;
static wd_http_error_t err;

/* Moves a view from the heap copy back onto the caller's string (offsets, not cross-object arithmetic). */
static void rebase(wd_str_t *v, const char *copy, size_t n, const char *s)
{
    if (!v->p) return;
    assert_true(v->p >= copy && v->p + v->len <= copy + n);
    v->p = s + (v->p - copy);
}

/* Parses from an exactly sized heap copy so ASan catches any read past len. */
static int parse_req_lim(const char *s, size_t n, const wd_http_limits_t *lim)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    err.status = 0;
    err.reason = NULL;
    int rc = wd_http_parse_request(copy, n, lim, &msg, &err);
    /* views must point into the copy; rebase them onto s so callers can inspect after free */
    if (rc == WD_OK) {
        assert_true(msg.head_len <= n);
        rebase(&msg.method_str, copy, n, s);
        rebase(&msg.target, copy, n, s);
        rebase(&msg.path, copy, n, s);
        for (size_t i = 0; i < msg.nheaders; i++) {
            rebase(&msg.headers[i].name, copy, n, s);
            rebase(&msg.headers[i].value, copy, n, s);
        }
    }
    if (rc == WD_EINVAL) assert_non_null(err.reason);
    free(copy);
    return rc;
}

static int parse_req(const char *s) { return parse_req_lim(s, strlen(s), NULL); }

static int parse_resp(const char *s)
{
    size_t n = strlen(s);
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    err.status = 0;
    err.reason = NULL;
    int rc = wd_http_parse_response(copy, n, NULL, &msg, &err);
    if (rc == WD_OK) {
        assert_true(msg.head_len <= n);
        rebase(&msg.reason, copy, n, s);
        for (size_t i = 0; i < msg.nheaders; i++) {
            rebase(&msg.headers[i].name, copy, n, s);
            rebase(&msg.headers[i].value, copy, n, s);
        }
    }
    free(copy);
    return rc;
}

static void assert_view(wd_str_t v, const char *z)
{
    if (v.len != strlen(z) || memcmp(v.p, z, v.len) != 0) {
        print_error("view '%.*s' != '%s'\n", (int)v.len, v.p ? v.p : "", z);
        fail();
    }
}

/* Asserts rejection with the given status; prints the input on failure. */
static void reject_req(const char *s, int status)
{
    int rc = parse_req(s);
    if (rc != WD_EINVAL || err.status != status) {
        print_error("input %s: rc=%d status=%d (want %d) reason=%s\n", s, rc, err.status, status,
                    err.reason ? err.reason : "-");
        fail();
    }
}

static void test_simple_get(void **state)
{
    (void)state;
    const char *r = "GET /v1/models?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nAccept:   */*  \r\n"
                    "X-Empty:\r\nX-Tab:\tv a l\t\r\n\r\n";
    assert_int_equal(parse_req(r), WD_OK);
    assert_int_equal(msg.method, WD_HTTP_GET);
    assert_view(msg.method_str, "GET");
    assert_view(msg.target, "/v1/models?x=1&y=%20");
    assert_view(msg.path, "/v1/models");
    assert_int_equal(msg.version_minor, 1);
    assert_int_equal(msg.nheaders, 4);
    assert_view(msg.headers[0].name, "Host");
    assert_view(msg.headers[0].value, "example.com");
    assert_view(msg.headers[1].value, "*/*");
    assert_view(msg.headers[2].value, "");
    assert_view(msg.headers[3].value, "v a l");
    assert_int_equal(msg.head_len, strlen(r));
    assert_int_equal(msg.content_length, -1);
    assert_false(msg.chunked);
    assert_true(msg.keep_alive);
    assert_false(msg.expect_continue);
    assert_false(msg.upgrade);
    const wd_http_header_t *h = wd_http_header(&msg, "accept");
    assert_non_null(h);
    assert_view(h->value, "*/*");
    assert_null(wd_http_header(&msg, "accep"));
    assert_null(wd_http_header(&msg, "content-length"));
}

static void test_methods(void **state)
{
    (void)state;
    static const struct {
        const char *m;
        wd_http_method_t id;
    } cases[] = {
        {"GET", WD_HTTP_GET},         {"HEAD", WD_HTTP_HEAD},     {"POST", WD_HTTP_POST},
        {"PUT", WD_HTTP_PUT},         {"DELETE", WD_HTTP_DELETE}, {"OPTIONS", WD_HTTP_OPTIONS},
        {"PATCH", WD_HTTP_PATCH},     {"get", WD_HTTP_OTHER},     {"PROPFIND", WD_HTTP_OTHER},
        {"X-Y!#$%&'*+.^_`|~", WD_HTTP_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s / HTTP/1.1\r\nHost: a\r\n\r\n", cases[i].m);
        assert_int_equal(parse_req(buf), WD_OK);
        assert_int_equal(msg.method, cases[i].id);
        assert_view(msg.method_str, cases[i].m);
    }
    assert_int_equal(parse_req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), WD_OK);
    assert_view(msg.target, "*");
    assert_view(msg.path, "*");
}

static void test_pipelined(void **state)
{
    (void)state;
    const char *a = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    const char *rest = "hello"
                       "GET /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s", a, rest);
    assert_int_equal(parse_req(buf), WD_OK);
    assert_int_equal(msg.method, WD_HTTP_POST);
    assert_int_equal(msg.head_len, strlen(a));
    assert_int_equal(msg.content_length, 5);
    assert_true(msg.keep_alive);
    size_t off = msg.head_len + (size_t)msg.content_length;
    assert_int_equal(parse_req(buf + off), WD_OK);
    assert_int_equal(msg.method, WD_HTTP_GET);
    assert_view(msg.target, "/two");
    assert_int_equal(msg.head_len, strlen(buf + off));
    assert_false(msg.keep_alive);
}

static void test_keep_alive(void **state)
{
    (void)state;
    assert_int_equal(parse_req("GET / HTTP/1.0\r\n\r\n"), WD_OK);
    assert_int_equal(msg.version_minor, 0);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), WD_OK);
    assert_true(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), WD_OK);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), WD_OK);
    assert_true(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"), WD_OK);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: ,close,\r\n\r\n"),
                     WD_OK);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"), WD_OK);
    assert_true(msg.keep_alive);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n"), WD_OK);
    assert_true(msg.upgrade);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nupgrade: ws\r\n\r\n"), WD_OK);
    assert_true(msg.upgrade);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", 400);
}

static void test_framing_ok(void **state)
{
    (void)state;
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), WD_OK);
    assert_true(msg.chunked);
    assert_int_equal(msg.content_length, -1);
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  ChUnKeD \r\n\r\n"), WD_OK);
    assert_true(msg.chunked);
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), WD_OK);
    assert_int_equal(msg.content_length, 0);
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n"), WD_OK);
    assert_int_equal(msg.content_length, 7);
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387904\r\n\r\n"), WD_OK);
    assert_int_equal(msg.content_length, (int64_t)1 << 62);
    assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n"), WD_OK);
    assert_true(msg.expect_continue);
    assert_int_equal(parse_req("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), WD_OK);
    assert_false(msg.expect_continue);
    /* one leading CRLF is tolerated */
    assert_int_equal(parse_req("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), WD_OK);
    assert_int_equal(msg.head_len, strlen("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_view(msg.target, "/");
    /* empty Host and host:port and IP literals */
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost:\r\n\r\n"), WD_OK);
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), WD_OK);
    /* obs-text in values is allowed */
    assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n"), WD_OK);
    assert_view(msg.headers[1].value, "caf\xc3\xa9");
}

static void test_reject_smuggling(void **state)
{
    (void)state;
    /* Content-Length forms */
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   \r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387905\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
    /* Transfer-Encoding forms */
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked ;x=1\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked x\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
               400);
    reject_req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    /* line structure */
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
    reject_req("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\n\rX", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400);
    reject_req("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    /* field names */
    reject_req("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX\x80: x\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
    /* control bytes in values (NUL needs an explicit length) */
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", 400);
    {
        static const char r[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
        assert_int_equal(parse_req_lim(r, sizeof r - 1, NULL), WD_EINVAL);
        assert_int_equal(err.status, 400);
        static const char r2[] = "GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_int_equal(parse_req_lim(r2, sizeof r2 - 1, NULL), WD_EINVAL);
        assert_int_equal(err.status, 400);
        static const char r3[] = "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_int_equal(parse_req_lim(r3, sizeof r3 - 1, NULL), WD_EINVAL);
        assert_int_equal(err.status, 400);
    }
    /* request line */
    reject_req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("CONNECT evil:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
    reject_req(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET /\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / \r\nHost: a\r\n\r\n", 400);
    /* versions */
    reject_req("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    reject_req("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    reject_req("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
    reject_req("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/11\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400);
    /* Host */
    reject_req("GET / HTTP/1.1\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    reject_req("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    reject_req("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400);
    /* Expect */
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n", 417);
    reject_req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417);
}

static void test_limits(void **state)
{
    (void)state;
    wd_http_limits_t lim;
    wd_http_limits_default(&lim);
    assert_int_equal(lim.max_request_line, 8192);
    assert_int_equal(lim.max_head, 32768);
    assert_int_equal(lim.max_headers, WD_HTTP_MAX_HEADERS);

    lim.max_request_line = 20;
    const char *ok = "GET /12345 HTTP/1.1\r\nHost: a\r\n\r\n"; /* request line is exactly 19 */
    assert_int_equal(parse_req_lim(ok, strlen(ok), &lim), WD_OK);
    const char *ok20 = "GET /123456 HTTP/1.1\r\nHost: a\r\n\r\n"; /* exactly 20 */
    assert_int_equal(parse_req_lim(ok20, strlen(ok20), &lim), WD_OK);
    const char *long21 = "GET /1234567 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse_req_lim(long21, strlen(long21), &lim), WD_EINVAL);
    assert_int_equal(err.status, 414);
    /* too long without any CRLF yet: reported at once, not after waiting */
    const char *partial = "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(parse_req_lim(partial, strlen(partial), &lim), WD_EINVAL);
    assert_int_equal(err.status, 414);
    /* a partial line still within the limit waits */
    assert_int_equal(parse_req_lim(partial, 15, &lim), WD_EAGAIN);

    wd_http_limits_default(&lim);
    lim.max_head = 40;
    const char *h40 = "GET / HTTP/1.1\r\nHost: a\r\nX: 12345678\r\n\r\n"; /* 40 bytes */
    assert_int_equal(strlen(h40), 40);
    assert_int_equal(parse_req_lim(h40, 40, &lim), WD_OK);
    const char *h41 = "GET / HTTP/1.1\r\nHost: a\r\nX: 123456789\r\n\r\n";
    assert_int_equal(parse_req_lim(h41, 41, &lim), WD_EINVAL);
    assert_int_equal(err.status, 431);
    /* no terminator within max_head bytes: 431 right away */
    const char *nohead = "GET / HTTP/1.1\r\nHost: a\r\nX: 12345678901234567890";
    assert_int_equal(parse_req_lim(nohead, strlen(nohead), &lim), WD_EINVAL);
    assert_int_equal(err.status, 431);
    assert_int_equal(parse_req_lim(nohead, 39, &lim), WD_EAGAIN);

    wd_http_limits_default(&lim);
    lim.max_headers = 3;
    const char *three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(parse_req_lim(three, strlen(three), &lim), WD_OK);
    const char *four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_int_equal(parse_req_lim(four, strlen(four), &lim), WD_EINVAL);
    assert_int_equal(err.status, 431);

    /* default: more than WD_HTTP_MAX_HEADERS fields */
    char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < WD_HTTP_MAX_HEADERS - 1; i++) n += (size_t)snprintf(big + n, sizeof big - n, "X%d: y\r\n", i);
    n += (size_t)snprintf(big + n, sizeof big - n, "\r\n");
    assert_int_equal(parse_req_lim(big, n, NULL), WD_OK);
    assert_int_equal(msg.nheaders, WD_HTTP_MAX_HEADERS);
    n -= 2;
    n += (size_t)snprintf(big + n, sizeof big - n, "Z: 1\r\n\r\n");
    assert_int_equal(parse_req_lim(big, n, NULL), WD_EINVAL);
    assert_int_equal(err.status, 431);

    /* a long but acceptable target and value exercise the word-at-a-time scanners */
    char lt[9000];
    memcpy(lt, "GET /", 5);
    memset(lt + 5, 'a', 8000);
    n = 5 + 8000;
    n += (size_t)snprintf(lt + n, sizeof lt - n, " HTTP/1.1\r\nHost: a\r\nX: %s\r\n\r\n",
                          "0123456789abcdef\t0123456789abcdef 0123456789abcdef\xff");
    assert_int_equal(parse_req_lim(lt, n, NULL), WD_OK);
    assert_int_equal(msg.target.len, 8001);
    lt[5 + 6000] = '\x7f';
    assert_int_equal(parse_req_lim(lt, n, NULL), WD_EINVAL);
    assert_int_equal(err.status, 400);
}

/* Every proper prefix of a valid request is EAGAIN; the whole is OK with identical results. */
static void test_incremental(void **state)
{
    (void)state;
    const char *reqs[] = {
        ("GET /v1/models?limit=10 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: test/1.0 (x)\r\n"
         "Authorization: Bearer sk-0123456789abcdef0123456789abcdef\r\nAccept: */*\r\n\r\n"),
        "\r\nPOST /x HTTP/1.0\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
        size_t n = strlen(reqs[k]);
        for (size_t i = 0; i < n; i++) {
            int rc = parse_req_lim(reqs[k], i, NULL);
            if (rc != WD_EAGAIN) {
                print_error("req %zu prefix %zu: rc=%d reason=%s\n", k, i, rc, err.reason ? err.reason : "-");
                fail();
            }
        }
        assert_int_equal(parse_req_lim(reqs[k], n, NULL), WD_OK);
        assert_int_equal(msg.head_len, n);
    }
    /* violations in a partial head are reported without waiting for the terminator */
    static const char *early[] = {
        "GET / HTTP/1.1\nHo",     "GET / HTTP/1.1\r\nHost: a\x01",  "GET /\x80",
        "G@T",                    "GET / HTTP/1.1\r\nHost : a",      "GET / HTTP/1.1\r\nHost: a\r\n fold",
        "GET / HTTP/1.1\r\nA\rb", "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\nX",
        "GET / HTTP/1.1x",           "GET http:",
    };
    for (size_t k = 0; k < sizeof early / sizeof early[0]; k++) {
        int rc = parse_req(early[k]);
        if (rc != WD_EINVAL) {
            print_error("early %zu: rc=%d\n", k, rc);
            fail();
        }
    }
}

static void test_response(void **state)
{
    (void)state;
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello"), WD_OK);
    assert_int_equal(msg.status, 200);
    assert_view(msg.reason, "OK");
    assert_int_equal(msg.content_length, 12);
    assert_false(msg.chunked);
    assert_true(msg.keep_alive);
    assert_int_equal(msg.head_len, strlen("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"));

    assert_int_equal(parse_resp("HTTP/1.1 404 Not  Found here\r\n\r\n"), WD_OK);
    assert_view(msg.reason, "Not  Found here");
    assert_int_equal(msg.content_length, -1); /* read until close */
    assert_false(msg.chunked);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n"), WD_OK);
    assert_view(msg.reason, "");
    assert_true(msg.chunked);
    assert_true(msg.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), WD_OK);
    assert_view(msg.reason, "");
    assert_int_equal(msg.content_length, 0);
    assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"), WD_OK);
    assert_false(msg.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"), WD_OK);
    assert_true(msg.keep_alive);
    /* no body, whatever the headers say */
    assert_int_equal(parse_resp("HTTP/1.1 204 No Content\r\n\r\n"), WD_OK);
    assert_int_equal(msg.content_length, 0);
    assert_true(msg.keep_alive);
    assert_int_equal(parse_resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"), WD_OK);
    assert_int_equal(msg.content_length, 0);
    assert_int_equal(parse_resp("HTTP/1.1 100 Continue\r\n\r\n"), WD_OK);
    assert_int_equal(msg.status, 100);
    assert_int_equal(msg.content_length, 0);
    assert_int_equal(parse_resp("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"),
                     WD_OK);
    assert_true(msg.upgrade);
    /* responses need no Host; Expect is not interpreted */
    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nExpect: x\r\nContent-Length: 0\r\n\r\n"), WD_OK);

    assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 1"), WD_EAGAIN);
    assert_int_equal(parse_resp("HTTP/1.1 20"), WD_EAGAIN);
    assert_int_equal(parse_resp(""), WD_EAGAIN);

    static const char *bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 OK\r\n\r\n",
        "HTTP/1.1 600 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = parse_resp(bad[k]);
        if (rc != WD_EINVAL || err.status != 502) {
            print_error("bad response %zu: rc=%d status=%d\n", k, rc, err.status);
            fail();
        }
    }
}

static void test_status_text(void **state)
{
    (void)state;
    assert_string_equal(wd_http_status_text(200), "OK");
    assert_string_equal(wd_http_status_text(404), "Not Found");
    assert_string_equal(wd_http_status_text(429), "Too Many Requests");
    assert_string_equal(wd_http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(wd_http_status_text(502), "Bad Gateway");
    assert_string_equal(wd_http_status_text(499), "Client Error");
    assert_non_null(wd_http_status_text(-1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),  cmocka_unit_test(test_methods),
        cmocka_unit_test(test_pipelined),   cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_framing_ok),  cmocka_unit_test(test_reject_smuggling),
        cmocka_unit_test(test_limits),      cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_response),    cmocka_unit_test(test_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

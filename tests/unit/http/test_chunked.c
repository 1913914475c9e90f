/* Unit tests for the chunked transfer coding: valid forms (extensions, trailers), every malformed
 * size and line ending, limits, and byte-at-a-time feeding matching whole-buffer feeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"

typedef struct {
    int rc;
    size_t consumed;
    char out[4096];
    size_t out_len;
    wd_http_error_t err;
} result_t;

/* Feeds s[0..n) in pieces of `step` bytes (0 = all at once), stopping at the first non-EAGAIN. */
static void decode(const char *s, size_t n, size_t step, size_t limit, result_t *r)
{
    wd_http_chunked_t c;
    wd_http_chunked_init(&c);
    wd_buf_t out;
    wd_buf_init(&out, limit);
    memset(r, 0, sizeof *r);
    r->rc = WD_EAGAIN;
    size_t off = 0;
    while (off < n) {
        size_t piece = step ? WD_MIN(step, n - off) : n - off;
        char *copy = malloc(piece); /* exact size so ASan sees overreads */
        assert_non_null(copy);
        memcpy(copy, s + off, piece);
        size_t used = 0;
        r->rc = wd_http_chunked_decode(&c, copy, piece, &used, &out, &r->err);
        free(copy);
        if (r->rc == WD_OK || r->rc == WD_EAGAIN) assert_true(used <= piece);
        if (r->rc == WD_EAGAIN) assert_int_equal(used, piece);
        off += used;
        if (r->rc != WD_EAGAIN) break;
    }
    r->consumed = off;
    assert_true(out.len < sizeof r->out);
    if (out.len) memcpy(r->out, out.data, out.len);
    r->out_len = out.len;
    if (r->rc == WD_OK) assert_int_equal(c.total, out.len);
    wd_buf_free(&out);
}

/* Decodes whole and byte by byte and requires identical outcomes; returns the whole-feed result. */
static void decode_both(const char *s, size_t n, result_t *r)
{
    result_t one;
    decode(s, n, 0, 0, r);
    decode(s, n, 1, 0, &one);
    assert_int_equal(r->rc, one.rc);
    assert_int_equal(r->out_len, one.out_len);
    assert_memory_equal(r->out, one.out, r->out_len);
    if (r->rc != WD_EINVAL) assert_int_equal(r->consumed, one.consumed);
    else assert_int_equal(r->err.status, one.err.status);
}

static void expect_ok(const char *s, const char *body, size_t consumed)
{
    result_t r;
    decode_both(s, strlen(s), &r);
    if (r.rc != WD_OK) {
        print_error("input %s: rc=%d reason=%s\n", s, r.rc, r.rc == WD_EINVAL ? r.err.reason : "-");
        fail();
    }
    assert_int_equal(r.out_len, strlen(body));
    assert_memory_equal(r.out, body, r.out_len);
    assert_int_equal(r.consumed, consumed);
}

static void expect_bad(const char *s, int status)
{
    result_t r;
    decode_both(s, strlen(s), &r);
    if (r.rc != WD_EINVAL || r.err.status != status || !r.err.reason) {
        print_error("input %s: rc=%d status=%d\n", s, r.rc, r.err.status);
        fail();
    }
}

static void test_valid(void **state)
{
    (void)state;
    const char *a = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    expect_ok(a, "hello world", strlen(a));
    expect_ok("0\r\n\r\n", "", 5);
    expect_ok("A\r\n0123456789\r\n0\r\n\r\n", "0123456789", 20);
    expect_ok("a\r\n0123456789\r\n000\r\n\r\n", "0123456789", 22);
    expect_ok("0000000000000001\r\nx\r\n0\r\n\r\n", "x", 26);
    /* data may contain CR, LF and NUL-free binary: it is counted, never scanned */
    expect_ok("4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", 14);
    /* extensions are parsed and ignored */
    expect_ok("3;foo\r\nabc\r\n0\r\n\r\n", "abc", 17);
    expect_ok("3;foo=bar;baz\r\nabc\r\n0;last\r\n\r\n", "abc", 30);
}

static void test_valid_more(void **state)
{
    (void)state;
    /* trailers are validated and dropped */
    const char *t = "3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other:\tv v \r\n\r\n";
    expect_ok(t, "abc", strlen(t));
    /* bytes after the message are left for the next one */
    const char *p = "2\r\nhi\r\n0\r\n\r\nPOST / HTTP/1.1\r\n";
    expect_ok(p, "hi", strlen("2\r\nhi\r\n0\r\n\r\n"));
    const char *q = "3;q=\"a \\\" ;b\"\r\nabc\r\n0\r\n\r\n";
    expect_ok(q, "abc", strlen(q));

    /* after completion further calls return OK and consume nothing */
    wd_http_chunked_t c;
    wd_http_chunked_init(&c);
    wd_buf_t out;
    wd_buf_init(&out, 0);
    size_t used;
    wd_http_error_t err;
    assert_int_equal(wd_http_chunked_decode(&c, "0\r\n\r\nxyz", 8, &used, &out, &err), WD_OK);
    assert_int_equal(used, 5);
    assert_int_equal(wd_http_chunked_decode(&c, "xyz", 3, &used, &out, &err), WD_OK);
    assert_int_equal(used, 0);
    wd_buf_free(&out);
}

static void test_incomplete(void **state)
{
    (void)state;
    const char *a = "5\r\nhello\r\n0\r\nX: y\r\n\r\n";
    size_t n = strlen(a);
    for (size_t i = 0; i < n; i++) {
        result_t r;
        decode(a, i, 0, 0, &r);
        assert_int_equal(r.rc, WD_EAGAIN);
        assert_int_equal(r.consumed, i);
    }
}

static void test_bad_sizes(void **state)
{
    (void)state;
    expect_bad("0x10\r\n0123456789abcdef\r\n0\r\n\r\n", 400);
    expect_bad("-1\r\n", 400);
    expect_bad("+1\r\nx\r\n0\r\n\r\n", 400);
    expect_bad(" 5\r\nhello\r\n0\r\n\r\n", 400);
    expect_bad("5 \r\nhello\r\n0\r\n\r\n", 400);
    expect_bad("5\t\r\nhello\r\n0\r\n\r\n", 400);
    expect_bad("5 ;x\r\nhello\r\n0\r\n\r\n", 400);
    expect_bad("\r\nhello\r\n0\r\n\r\n", 400);
    expect_bad(";x\r\n", 400);
    expect_bad("g\r\n", 400);
    expect_bad("00000000000000001\r\nx\r\n0\r\n\r\n", 400); /* 17 digits, even with leading zeros */
    expect_bad("10000000000000000\r\n", 400);
    expect_bad("5\nhello\r\n0\r\n\r\n", 400);     /* LF only after size */
    expect_bad("5\rhello\r\n0\r\n\r\n", 400);      /* bare CR */
    expect_bad("5\r\nhello\n0\r\n\r\n", 400);      /* LF only after data */
    expect_bad("5\r\nhelloX\r\n0\r\n\r\n", 400);   /* data longer than declared */
    expect_bad("5\r\nhello0\r\n\r\n", 400);        /* missing CRLF after data */
    expect_bad("5\r\nhello\r0\r\n\r\n", 400);
    expect_bad("0\r\n\n", 400);                    /* LF-only final line */
    expect_bad("0\n\n", 400);
    expect_bad("0\r\n\r\r", 400);
}

static void test_bad_extensions_trailers(void **state)
{
    (void)state;
    expect_bad("3;\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;=x\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;a=\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3; a\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;a\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;a=\"x\r\ny\"\r\nabc\r\n0\r\n\r\n", 400); /* no line ending hides in a quoted string */
    expect_bad("3;a=\"x\ny\"\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;q=\"a \\\" ;\r b\"\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;a=\"x\"y\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("3;a=b\x01\r\nabc\r\n0\r\n\r\n", 400);
    expect_bad("0\r\nX: a\r\n b\r\n\r\n", 400);            /* obs-fold in trailer */
    expect_bad("0\r\nX : a\r\n\r\n", 400);
    expect_bad("0\r\n: a\r\n\r\n", 400);
    expect_bad("0\r\nX\r\n\r\n", 400);
    expect_bad("0\r\nX: a\x7f\r\n\r\n", 400);
    expect_bad("0\r\nX: a\nY: b\r\n\r\n", 400);
    expect_bad("0\r\nX: a\rY: b\r\n\r\n", 400);

    /* an endless extension is cut off rather than scanned forever */
    char big[5000];
    memcpy(big, "1;a=", 4);
    memset(big + 4, 'x', sizeof big - 4);
    result_t r;
    decode(big, sizeof big, 0, 0, &r);
    assert_int_equal(r.rc, WD_EINVAL);
    assert_int_equal(r.err.status, 400);

    /* likewise an endless trailer section */
    static char tr[40000];
    memcpy(tr, "0\r\n", 3);
    size_t n = 3;
    while (n + 12 < sizeof tr) {
        memcpy(tr + n, "X: 12345678\r\n", 13);
        n += 13;
    }
    decode(tr, n, 0, 0, &r);
    assert_int_equal(r.rc, WD_EINVAL);
    assert_int_equal(r.err.status, 431);
}

static void test_sticky_error(void **state)
{
    (void)state;
    wd_http_chunked_t c;
    wd_http_chunked_init(&c);
    wd_buf_t out;
    wd_buf_init(&out, 0);
    size_t used;
    wd_http_error_t err = {0, NULL};
    assert_int_equal(wd_http_chunked_decode(&c, "z", 1, &used, &out, &err), WD_EINVAL);
    assert_int_equal(err.status, 400);
    err.status = 0;
    assert_int_equal(wd_http_chunked_decode(&c, "0\r\n\r\n", 5, &used, &out, &err), WD_EINVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(out.len, 0);
    wd_buf_free(&out);
}

static void test_out_limit(void **state)
{
    (void)state;
    const char *a = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    result_t r;
    decode(a, strlen(a), 0, 10, &r);
    assert_int_equal(r.rc, WD_E2BIG);
    assert_int_equal(r.out_len, 5);
    decode(a, strlen(a), 0, 11, &r);
    assert_int_equal(r.rc, WD_OK);
    assert_int_equal(r.out_len, 11);
    /* a huge declared size is fine until the data actually exceeds the limit */
    decode("ffffffffffffffff\r\nabc", 21, 0, 2, &r);
    assert_int_equal(r.rc, WD_E2BIG);
}

static void test_encode(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_http_chunk_encode(&b, "hello", 5), WD_OK);
    char sixteen[16];
    memset(sixteen, 'x', sizeof sixteen);
    assert_int_equal(wd_http_chunk_encode(&b, sixteen, 16), WD_OK);
    assert_int_equal(wd_http_chunk_encode(&b, NULL, 0), WD_OK);
    const char *want = "5\r\nhello\r\n10\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);

    /* round trip */
    result_t r;
    decode(b.data, b.len, 1, 0, &r);
    assert_int_equal(r.rc, WD_OK);
    assert_int_equal(r.out_len, 21);
    assert_memory_equal(r.out, "helloxxxxxxxxxxxxxxxx", 21);

    /* all or nothing against a limit */
    wd_buf_t small;
    wd_buf_init(&small, 8);
    assert_int_equal(wd_http_chunk_encode(&small, "hello", 5), WD_E2BIG);
    assert_int_equal(small.len, 0);
    assert_int_equal(wd_http_chunk_encode(&small, "h", 1), WD_OK);
    assert_int_equal(small.len, 6);
    wd_buf_free(&small);
    wd_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_valid_more),      cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_bad_sizes),       cmocka_unit_test(test_bad_extensions_trailers),
        cmocka_unit_test(test_sticky_error),    cmocka_unit_test(test_out_limit),
        cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

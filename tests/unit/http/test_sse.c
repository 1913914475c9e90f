/* Unit tests for the SSE parser: line endings (including a CR/LF pair split across feeds), data
 * joining, comments and unknown fields, BOM, size limit, exact raw pass-through, and identical results
 * whatever the feed boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"

#define MAXEV 64

typedef struct {
    char raw[512], data[512], event[128];
    size_t raw_len, data_len, event_len;
    bool has_data;
} ev_t;

typedef struct {
    ev_t ev[MAXEV];
    size_t n;
    size_t stop_after; /* return 7 from the callback after this many events (0 = never) */
} col_t;

static int collect(void *ud, const wd_sse_event_t *e)
{
    col_t *c = ud;
    assert_true(c->n < MAXEV);
    ev_t *x = &c->ev[c->n++];
    assert_true(e->raw.len < sizeof x->raw && e->data.len < sizeof x->data && e->event.len < sizeof x->event);
    memcpy(x->raw, e->raw.p, e->raw.len);
    x->raw_len = e->raw.len;
    if (e->data.len) memcpy(x->data, e->data.p, e->data.len);
    x->data_len = e->data.len;
    if (e->event.len) memcpy(x->event, e->event.p, e->event.len);
    x->event_len = e->event.len;
    x->has_data = e->has_data;
    if (!e->has_data) assert_int_equal(e->data.len, 0);
    return c->stop_after && c->n == c->stop_after ? 7 : 0;
}

/* Feeds p[0..n) split at the given cut points (ascending, within n), each piece an exact heap copy. */
static int feed_cuts(wd_sse_parser_t *s, const char *p, size_t n, const size_t *cuts, size_t ncuts, col_t *c)
{
    size_t prev = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        size_t m = to - prev;
        char *copy = malloc(m ? m : 1);
        assert_non_null(copy);
        memcpy(copy, p + prev, m);
        int rc = wd_sse_feed(s, copy, m, collect, c);
        free(copy);
        if (rc) return rc;
        prev = to;
    }
    return WD_OK;
}

static void run(const char *p, size_t n, const size_t *cuts, size_t ncuts, col_t *c, size_t *pending)
{
    wd_sse_parser_t s;
    wd_sse_init(&s, 4096);
    memset(c, 0, sizeof *c);
    assert_int_equal(feed_cuts(&s, p, n, cuts, ncuts, c), WD_OK);
    *pending = wd_sse_pending(&s);
    wd_sse_free(&s);
}

static void assert_same(const col_t *a, const col_t *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->ev[i].raw_len, b->ev[i].raw_len);
        assert_memory_equal(a->ev[i].raw, b->ev[i].raw, a->ev[i].raw_len);
        assert_int_equal(a->ev[i].data_len, b->ev[i].data_len);
        assert_memory_equal(a->ev[i].data, b->ev[i].data, a->ev[i].data_len);
        assert_int_equal(a->ev[i].event_len, b->ev[i].event_len);
        assert_memory_equal(a->ev[i].event, b->ev[i].event, a->ev[i].event_len);
        assert_int_equal(a->ev[i].has_data, b->ev[i].has_data);
    }
}

static void assert_ev(const ev_t *e, const char *raw, const char *data, const char *event, bool has_data)
{
    if (e->raw_len != strlen(raw) || memcmp(e->raw, raw, e->raw_len) != 0) {
        print_error("raw '%.*s' != '%s'\n", (int)e->raw_len, e->raw, raw);
        fail();
    }
    assert_int_equal(e->data_len, strlen(data));
    assert_memory_equal(e->data, data, e->data_len);
    assert_int_equal(e->event_len, strlen(event));
    assert_memory_equal(e->event, event, e->event_len);
    assert_int_equal(e->has_data, has_data);
}

/* Whole feed, every single split point and every byte separately must all agree. Returns the whole. */
static void run_all_ways(const char *p, size_t n, col_t *whole, size_t *pending)
{
    static col_t other;
    size_t pend2;
    run(p, n, NULL, 0, whole, pending);
    for (size_t cut = 0; cut <= n; cut++) {
        run(p, n, &cut, 1, &other, &pend2);
        assert_same(whole, &other);
        assert_int_equal(*pending, pend2);
    }
    size_t cuts[1024];
    assert_true(n < 1024);
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    run(p, n, cuts, n ? n - 1 : 0, &other, &pend2);
    assert_same(whole, &other);
    assert_int_equal(*pending, pend2);
    /* pass-through: raws concatenated are the input (minus a leading BOM) minus what is pending */
    size_t off = (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;
    for (size_t i = 0; i < whole->n; i++) {
        assert_true(off + whole->ev[i].raw_len <= n);
        assert_memory_equal(p + off, whole->ev[i].raw, whole->ev[i].raw_len);
        off += whole->ev[i].raw_len;
    }
    assert_int_equal(off + *pending, n);
}

static col_t c;

static void test_basic_lf(void **state)
{
    (void)state;
    const char *s = "data: hello\n\nevent: upd\ndata: a\ndata:b\ndata\n\n: comment\n\n";
    size_t pend;
    run_all_ways(s, strlen(s), &c, &pend);
    assert_int_equal(pend, 0);
    assert_int_equal(c.n, 3);
    assert_ev(&c.ev[0], "data: hello\n\n", "hello", "", true);
    assert_ev(&c.ev[1], "event: upd\ndata: a\ndata:b\ndata\n\n", "a\nb\n", "upd", true);
    assert_ev(&c.ev[2], ": comment\n\n", "", "", false);
}

static void test_line_endings(void **state)
{
    (void)state;
    size_t pend;
    const char *crlf = "data: x\r\ndata: y\r\n\r\ndata: z\r\n\r\n";
    run_all_ways(crlf, strlen(crlf), &c, &pend);
    assert_int_equal(c.n, 2);
    assert_ev(&c.ev[0], "data: x\r\ndata: y\r\n\r\n", "x\ny", "", true);
    assert_ev(&c.ev[1], "data: z\r\n\r\n", "z", "", true);
    assert_int_equal(pend, 0);

    const char *cr = "data: x\rdata: y\r\rdata: z\r\r";
    run_all_ways(cr, strlen(cr), &c, &pend);
    /* the last blank line ends in a CR at the end of input: held until the next byte */
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "data: x\rdata: y\r\r", "x\ny", "", true);
    assert_int_equal(pend, strlen("data: z\r\r"));

    const char *mixed = "data: 1\r\ndata: 2\rdata: 3\n\r\nevent:e\r\r\n\n";
    run_all_ways(mixed, strlen(mixed), &c, &pend);
    assert_int_equal(c.n, 3);
    assert_ev(&c.ev[0], "data: 1\r\ndata: 2\rdata: 3\n\r\n", "1\n2\n3", "", true);
    assert_ev(&c.ev[1], "event:e\r\r\n", "", "e", false);
    assert_ev(&c.ev[2], "\n", "", "", false);
    assert_int_equal(pend, 0);

    /* CR then LF in separate feeds is one line ending; CR then something else is two */
    wd_sse_parser_t s;
    wd_sse_init(&s, 1024);
    memset(&c, 0, sizeof c);
    assert_int_equal(wd_sse_feed(&s, "data: a\r", 8, collect, &c), WD_OK);
    assert_int_equal(wd_sse_feed(&s, "\n\r", 2, collect, &c), WD_OK);
    assert_int_equal(c.n, 0);
    assert_int_equal(wd_sse_feed(&s, "\n", 1, collect, &c), WD_OK);
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "data: a\r\n\r\n", "a", "", true);
    assert_int_equal(wd_sse_feed(&s, "data: b\r", 8, collect, &c), WD_OK);
    assert_int_equal(wd_sse_feed(&s, "\r", 1, collect, &c), WD_OK);
    assert_int_equal(c.n, 1);
    assert_int_equal(wd_sse_feed(&s, "d", 1, collect, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_ev(&c.ev[1], "data: b\r\r", "b", "", true);
    assert_int_equal(wd_sse_pending(&s), 1);
    /* at end of stream nothing is held back unless its blank line ended in a final CR */
    assert_int_equal(wd_sse_finish(&s, collect, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(wd_sse_pending(&s), 1);
    assert_int_equal(wd_sse_feed(&s, "ata: c\r\r", 8, collect, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(wd_sse_finish(&s, collect, &c), WD_OK);
    assert_int_equal(c.n, 3);
    assert_ev(&c.ev[2], "data: c\r\r", "c", "", true);
    assert_int_equal(wd_sse_pending(&s), 0);
    assert_int_equal(wd_sse_finish(&s, collect, &c), WD_OK);
    assert_int_equal(c.n, 3);
    wd_sse_free(&s);
}

static void test_fields(void **state)
{
    (void)state;
    size_t pend;
    const char *s = "data:  two spaces\nid: 7\nretry: 10\nfoo: bar\n:c\nevent: a\nevent: b\ndata: x:y\n\n"
                    "data:\n\n"
                    "Data: no\nDATA: no\n\n"
                    "event\ndata: q\n\n";
    run_all_ways(s, strlen(s), &c, &pend);
    assert_int_equal(c.n, 4);
    assert_ev(&c.ev[0], "data:  two spaces\nid: 7\nretry: 10\nfoo: bar\n:c\nevent: a\nevent: b\ndata: x:y\n\n",
              " two spaces\nx:y", "b", true);
    assert_ev(&c.ev[1], "data:\n\n", "", "", true);
    assert_ev(&c.ev[2], "Data: no\nDATA: no\n\n", "", "", false);
    assert_ev(&c.ev[3], "event\ndata: q\n\n", "q", "", true);
    assert_int_equal(pend, 0);
}

static void test_bom(void **state)
{
    (void)state;
    size_t pend;
    const char *s = "\xef\xbb\xbf" "data: a\n\n";
    run_all_ways(s, strlen(s), &c, &pend);
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "data: a\n\n", "a", "", true);
    /* only one BOM, only at the start */
    const char *two = "\xef\xbb\xbf\xef\xbb\xbf" "data: a\n\n";
    run_all_ways(two, strlen(two), &c, &pend);
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "\xef\xbb\xbf" "data: a\n\n", "", "", false);
    /* a BOM prefix that is not a BOM is content */
    const char *notbom = "\xef\xbb" "data: a\n\n";
    run_all_ways(notbom, strlen(notbom), &c, &pend);
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "\xef\xbb" "data: a\n\n", "", "", false);
    const char *utf8 = "data: \xef\xbb\xbf\xc3\xa9\n\n";
    run_all_ways(utf8, strlen(utf8), &c, &pend);
    assert_ev(&c.ev[0], utf8, "\xef\xbb\xbf\xc3\xa9", "", true);
    /* a partial BOM at the end counts as pending */
    wd_sse_parser_t p;
    wd_sse_init(&p, 100);
    assert_int_equal(wd_sse_feed(&p, "\xef\xbb", 2, collect, &c), WD_OK);
    assert_int_equal(wd_sse_pending(&p), 2);
    wd_sse_free(&p);
}

static void test_openai_stream(void **state)
{
    (void)state;
    size_t pend;
    const char *s = "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
                    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"
                    ": keep-alive\n\n"
                    "data: [DONE]\n\n";
    run_all_ways(s, strlen(s), &c, &pend);
    assert_int_equal(c.n, 4);
    assert_ev(&c.ev[3], "data: [DONE]\n\n", "[DONE]", "", true);
    assert_false(c.ev[2].has_data);
    assert_int_equal(pend, 0);
}

static void test_limit(void **state)
{
    (void)state;
    wd_sse_parser_t s;
    wd_sse_init(&s, 16);
    memset(&c, 0, sizeof c);
    /* exactly 16 bytes including the blank line fits */
    assert_int_equal(wd_sse_feed(&s, "data: 123456789\n\n", 17, collect, &c), WD_E2BIG);
    wd_sse_free(&s);

    wd_sse_init(&s, 16);
    memset(&c, 0, sizeof c);
    assert_int_equal(wd_sse_feed(&s, "data: 12345678\n\n", 16, collect, &c), WD_OK);
    assert_int_equal(c.n, 1);
    assert_ev(&c.ev[0], "data: 12345678\n\n", "12345678", "", true);
    /* a line that never ends fails as soon as it exceeds the limit, even fed a byte at a time */
    int rc = WD_OK;
    for (int i = 0; i < 100 && rc == WD_OK; i++) rc = wd_sse_feed(&s, "x", 1, collect, &c);
    assert_int_equal(rc, WD_E2BIG);
    assert_true(wd_sse_pending(&s) <= 16);
    /* and stays failed */
    assert_int_equal(wd_sse_feed(&s, "\n\n", 2, collect, &c), WD_E2BIG);
    assert_int_equal(c.n, 1);
    wd_sse_free(&s);

    /* max_event 0 is the 1 MiB default, not unlimited */
    wd_sse_init(&s, 0);
    assert_int_equal(s.max_event, 1u << 20);
    wd_sse_free(&s);
}

static void test_callback_stop(void **state)
{
    (void)state;
    wd_sse_parser_t s;
    wd_sse_init(&s, 1024);
    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    assert_int_equal(wd_sse_feed(&s, "data: a\n\ndata: b\n\n", 18, collect, &c), 7);
    assert_int_equal(c.n, 1);
    wd_sse_free(&s);
}

static void test_split_everywhere(void **state)
{
    (void)state;
    /* every pair of split points over a small mixed stream */
    const char *s = "\xef\xbb\xbf" "event: e\r\ndata: a\r\rdata: b\n\r\n:c\r\n\r";
    size_t n = strlen(s), pend;
    static col_t whole, other;
    run(s, n, NULL, 0, &whole, &pend);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b}, p2;
            run(s, n, cuts, 2, &other, &p2);
            assert_same(&whole, &other);
            assert_int_equal(pend, p2);
        }
    assert_int_equal(whole.n, 2);
    assert_ev(&whole.ev[0], "event: e\r\ndata: a\r\r", "a", "e", true);
    assert_ev(&whole.ev[1], "data: b\n\r\n", "b", "", true);
    assert_int_equal(pend, strlen(":c\r\n\r")); /* final CR: waits to see whether an LF follows */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_lf),     cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_fields),       cmocka_unit_test(test_bom),
        cmocka_unit_test(test_openai_stream), cmocka_unit_test(test_limit),
        cmocka_unit_test(test_callback_stop), cmocka_unit_test(test_split_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

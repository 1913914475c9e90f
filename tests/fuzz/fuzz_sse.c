/* libFuzzer driver for the SSE parser. The first input byte picks a split point and the second the
 * event size limit; the stream is the rest. Feeding it whole, in two pieces and byte by byte must
 * give the same events and result, and the raw bytes of the events must reassemble the stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "fuzz_check.h"

typedef struct {
    wd_buf_t log; /* serialized events */
    wd_buf_t raws; /* concatenated raw */
} rec_t;

static void put(wd_buf_t *b, const void *p, size_t n)
{
    CHECK(wd_buf_append(b, &n, sizeof n) == WD_OK);
    CHECK(wd_buf_append(b, p, n) == WD_OK);
}

static int record(void *ud, const wd_sse_event_t *ev)
{
    rec_t *r = ud;
    CHECK(ev->raw.len > 0);
    CHECK(ev->data.len <= ev->raw.len && ev->event.len <= ev->raw.len);
    CHECK(ev->has_data || ev->data.len == 0);
    /* the raw of an event ends with its blank line's terminator */
    char last = ev->raw.p[ev->raw.len - 1];
    CHECK(last == '\n' || last == '\r');
    put(&r->log, ev->raw.p, ev->raw.len);
    put(&r->log, ev->data.p, ev->data.len);
    put(&r->log, ev->event.p, ev->event.len);
    put(&r->log, &ev->has_data, sizeof ev->has_data);
    CHECK(wd_buf_append(&r->raws, ev->raw.p, ev->raw.len) == WD_OK);
    return 0;
}

static int run(const char *p, size_t n, const size_t *cuts, size_t ncuts, size_t max_event, rec_t *r,
               size_t *pending)
{
    wd_sse_parser_t s;
    wd_sse_init(&s, max_event);
    wd_buf_init(&r->log, 0);
    wd_buf_init(&r->raws, 0);
    int rc = WD_OK;
    size_t prev = 0;
    for (size_t k = 0; k <= ncuts && rc == WD_OK; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        char *copy = malloc(to - prev + 1);
        if (!copy) abort();
        memcpy(copy, p + prev, to - prev);
        rc = wd_sse_feed(&s, copy, to - prev, record, r);
        free(copy);
        CHECK(wd_sse_pending(&s) <= max_event + 2);
        prev = to;
    }
    if (rc == WD_OK) rc = wd_sse_finish(&s, record, r);
    CHECK(rc == WD_OK || rc == WD_E2BIG);
    *pending = wd_sse_pending(&s);
    wd_sse_free(&s);
    return rc;
}

static void same(const rec_t *a, const rec_t *b)
{
    CHECK(a->log.len == b->log.len && (a->log.len == 0 || memcmp(a->log.data, b->log.data, a->log.len) == 0));
}

static void done(rec_t *r)
{
    wd_buf_free(&r->log);
    wd_buf_free(&r->raws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t n = size - 2;
    const char *p = (const char *)data + 2;
    size_t cut = data[0] % (n + 1);
    size_t max_event = 8 + (size_t)data[1] * 4;

    rec_t whole, two, bytes;
    size_t pw, pt, pb;
    int rw = run(p, n, NULL, 0, max_event, &whole, &pw);
    int rt = run(p, n, &cut, 1, max_event, &two, &pt);
    size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
    if (!cuts) abort();
    for (size_t i = 0; i + 1 < n; i++) cuts[i] = i + 1;
    int rb = run(p, n, cuts, n ? n - 1 : 0, max_event, &bytes, &pb);
    free(cuts);

    CHECK(rw == rt && rw == rb);
    same(&whole, &two);
    same(&whole, &bytes);
    if (rw == WD_OK) {
        CHECK(pw == pt && pw == pb);
        /* pass-through: the raws reassemble the stream minus a leading BOM and what is pending */
        size_t off = (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;
        CHECK(off + whole.raws.len + pw == n);
        CHECK(whole.raws.len == 0 || memcmp(whole.raws.data, p + off, whole.raws.len) == 0);
    }
    done(&whole);
    done(&two);
    done(&bytes);
    return 0;
}

/* libFuzzer driver for the chunked decoder and encoder. Checks that feeding the input whole, split
 * in two at a point chosen by the first byte, or one byte at a time gives the same outcome, output
 * and consumption, and that encoding arbitrary data decodes back to it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "fuzz_check.h"

#define OUT_LIMIT (64 * 1024)

typedef struct {
    int rc;
    size_t consumed;
    int status;
    wd_buf_t out;
} res_t;

/* Feeds p in pieces no longer than `step` (0 = whole) plus an optional first cut. */
static void decode(const char *p, size_t n, size_t cut, size_t step, res_t *r)
{
    wd_http_chunked_t c;
    wd_http_chunked_init(&c);
    wd_buf_init(&r->out, OUT_LIMIT);
    r->rc = WD_EAGAIN;
    r->status = 0;
    size_t off = 0;
    while (off < n) {
        size_t end = n;
        if (off < cut) end = cut;
        if (step && end - off > step) end = off + step;
        size_t piece = end - off;
        char *copy = malloc(piece);
        if (!copy) abort();
        memcpy(copy, p + off, piece);
        size_t used = 12345;
        wd_http_error_t err = {0, NULL};
        r->rc = wd_http_chunked_decode(&c, copy, piece, &used, &r->out, &err);
        free(copy);
        CHECK(r->rc == WD_OK || r->rc == WD_EAGAIN || r->rc == WD_EINVAL || r->rc == WD_E2BIG);
        if (r->rc == WD_EINVAL) {
            CHECK(err.reason && (err.status == 400 || err.status == 431));
            r->status = err.status;
            break;
        }
        CHECK(used <= piece);
        if (r->rc == WD_EAGAIN) CHECK(used == piece);
        off += used;
        if (r->rc != WD_EAGAIN) break;
    }
    r->consumed = off;
    CHECK(r->out.len <= OUT_LIMIT);
    if (r->rc == WD_OK) {
        CHECK(c.total == r->out.len);
        CHECK(r->consumed >= 5 && memcmp(p + r->consumed - 2, "\r\n", 2) == 0);
    }
}

static void same(const res_t *a, const res_t *b)
{
    CHECK(a->rc == b->rc);
    CHECK(a->status == b->status);
    if (a->rc == WD_OK || a->rc == WD_EAGAIN) {
        CHECK(a->consumed == b->consumed);
        CHECK(a->out.len == b->out.len && (a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    res_t whole, split, bytes;
    decode(p, size, 0, 0, &whole);
    decode(p, size, size ? data[0] % (size + 1) : 0, 0, &split);
    decode(p, size, 0, 1, &bytes);
    same(&whole, &split);
    same(&whole, &bytes);
    wd_buf_free(&whole.out);
    wd_buf_free(&split.out);
    wd_buf_free(&bytes.out);

    /* round trip: the input cut into chunks by its own bytes */
    wd_buf_t enc;
    wd_buf_init(&enc, 0);
    size_t off = 0;
    while (off < size) {
        size_t n = WD_MIN((size_t)(data[off] % 64) + 1, size - off);
        CHECK(wd_http_chunk_encode(&enc, p + off, n) == WD_OK);
        off += n;
    }
    CHECK(wd_http_chunk_encode(&enc, NULL, 0) == WD_OK);
    res_t rt;
    decode(enc.data, enc.len, 0, 0, &rt);
    CHECK(rt.rc == WD_OK && rt.consumed == enc.len && rt.out.len == size);
    CHECK(size == 0 || memcmp(rt.out.data, data, size) == 0);
    wd_buf_free(&rt.out);
    wd_buf_free(&enc);
    return 0;
}

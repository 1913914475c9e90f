/* libFuzzer driver for the HTTP head parsers. Besides memory errors it checks the parser's
 * contract: views lie inside the consumed head, framing fields are consistent, statuses are the
 * documented ones, and a head that parses is EAGAIN at every shorter length (incrementality). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "fuzz_check.h"

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_view(wd_str_t v, const char *base, size_t head_len)
{
    if (v.len == 0) return;
    CHECK(v.p >= base && v.p + v.len <= base + head_len);
}

static void check_msg(const wd_http_msg_t *m, const char *p, size_t len, const wd_http_limits_t *lim)
{
    CHECK(m->head_len > 0 && m->head_len <= len);
    CHECK(m->head_len <= (lim && lim->max_head ? lim->max_head : 32768));
    CHECK(m->nheaders <= WD_HTTP_MAX_HEADERS);
    CHECK(m->version_minor == 0 || m->version_minor == 1);
    CHECK(m->content_length >= -1 && m->content_length <= ((int64_t)1 << 62));
    CHECK(!(m->chunked && m->content_length > 0));
    /* the head must end in CRLF CRLF (or be a request line + CRLF with no headers) */
    CHECK(m->head_len >= 4 && memcmp(p + m->head_len - 2, "\r\n", 2) == 0);
    for (size_t i = 0; i < m->nheaders; i++) {
        const wd_http_header_t *h = &m->headers[i];
        check_view(h->name, p, m->head_len);
        check_view(h->value, p, m->head_len);
        CHECK(h->name.len > 0);
        for (size_t k = 0; k < h->name.len; k++) CHECK(is_tchar((unsigned char)h->name.p[k]));
        for (size_t k = 0; k < h->value.len; k++) {
            unsigned char c = (unsigned char)h->value.p[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (h->value.len) {
            CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t');
            CHECK(h->value.p[h->value.len - 1] != ' ' && h->value.p[h->value.len - 1] != '\t');
        }
        CHECK(wd_http_header(m, "x") == NULL || wd_http_header(m, "x")->name.len == 1);
    }
}

static void check_request(const char *p, size_t len, const wd_http_limits_t *lim)
{
    static wd_http_msg_t m, m2;
    wd_http_error_t err = {0, NULL};
    int rc = wd_http_parse_request(p, len, lim, &m, &err);
    CHECK(rc == WD_OK || rc == WD_EAGAIN || rc == WD_EINVAL);
    if (rc == WD_EINVAL) {
        CHECK(err.reason != NULL);
        CHECK(err.status == 400 || err.status == 414 || err.status == 417 || err.status == 431 ||
              err.status == 501 || err.status == 505);
        return;
    }
    if (rc == WD_EAGAIN) return;
    check_msg(&m, p, len, lim);
    check_view(m.method_str, p, m.head_len);
    check_view(m.target, p, m.head_len);
    check_view(m.path, p, m.head_len);
    CHECK(m.method_str.len > 0 && m.target.len > 0 && m.path.len > 0 && m.path.len <= m.target.len);
    CHECK(m.target.p[0] == '/' || (m.target.len == 1 && m.target.p[0] == '*' && m.method == WD_HTTP_OPTIONS));
    for (size_t k = 0; k < m.target.len; k++) {
        unsigned char c = (unsigned char)m.target.p[k];
        CHECK(c > 0x20 && c < 0x7f && c != '#');
    }
    if (m.version_minor == 1) CHECK(wd_http_header(&m, "host") != NULL);
    if (m.chunked) CHECK(m.content_length == -1 && m.version_minor == 1);
    if (m.version_minor == 0) CHECK(!m.expect_continue);
    /* the head alone parses identically; every shorter prefix is incomplete */
    rc = wd_http_parse_request(p, m.head_len, lim, &m2, &err);
    CHECK(rc == WD_OK && m2.head_len == m.head_len && m2.nheaders == m.nheaders &&
          m2.content_length == m.content_length && m2.chunked == m.chunked && m2.keep_alive == m.keep_alive);
    size_t cuts[3] = {m.head_len - 1, m.head_len / 2, len ? (unsigned char)p[0] % m.head_len : 0};
    for (int k = 0; k < 3; k++) CHECK(wd_http_parse_request(p, cuts[k], lim, &m2, &err) == WD_EAGAIN);
}

static void check_response(const char *p, size_t len)
{
    static wd_http_msg_t m, m2;
    wd_http_error_t err = {0, NULL};
    int rc = wd_http_parse_response(p, len, NULL, &m, &err);
    CHECK(rc == WD_OK || rc == WD_EAGAIN || rc == WD_EINVAL);
    if (rc == WD_EINVAL) {
        CHECK(err.reason != NULL && err.status == 502);
        return;
    }
    if (rc == WD_EAGAIN) return;
    check_msg(&m, p, len, NULL);
    check_view(m.reason, p, m.head_len);
    CHECK(m.status >= 100 && m.status <= 599);
    if ((m.status >= 100 && m.status < 200) || m.status == 204 || m.status == 304)
        CHECK(m.content_length == 0 && !m.chunked);
    if (!m.chunked && m.content_length < 0) CHECK(!m.keep_alive);
    rc = wd_http_parse_response(p, m.head_len, NULL, &m2, &err);
    CHECK(rc == WD_OK && m2.head_len == m.head_len && m2.status == m.status);
    CHECK(wd_http_parse_response(p, m.head_len - 1, NULL, &m2, &err) == WD_EAGAIN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so any read past len is caught */
    char *p = malloc(size ? size : 1);
    if (!p) return 0;
    if (size) memcpy(p, data, size);

    check_request(p, size, NULL);
    check_response(p, size);
    /* small limits reach the 414/431 paths with short inputs */
    wd_http_limits_t lim = {.max_request_line = 32, .max_head = 128, .max_headers = 4};
    check_request(p, size, &lim);
    free(p);
    return 0;
}

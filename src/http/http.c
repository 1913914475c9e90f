/* http: strict HTTP/1.1 request and response head parser.
 *
 * One forward pass over the buffer, validating every byte as it goes so that a violation in a
 * partial head is reported at once (a client cannot park an invalid head in our buffer while it
 * trickles the rest). Long runs (request target, field values) are scanned eight bytes at a time
 * with SWAR tests; everything else goes through one 256-entry class table. Nothing is allocated:
 * the message holds views into the caller's buffer. */
#include "http/http.h"

enum {
    C_TOKEN = 1,  /* tchar (RFC 9110 §5.6.2) */
    C_VALUE = 2,  /* field-vchar, SP, HTAB, obs-text: what a field value may contain */
    C_TARGET = 4, /* visible ASCII except '#': what a request target may contain */
    C_HOST = 8,   /* RFC 3986 host [ ":" port ]: unreserved, sub-delims, ":", "[", "]", "%" */
};

static const uint8_t ctab[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  3,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

#define CT(c, cls) (ctab[(unsigned char)(c)] & (cls))

/* Largest Content-Length accepted: beyond this, additions on 64-bit counters could overflow. */
#define WD_HTTP_MAX_CONTENT_LENGTH ((int64_t)1 << 62)

/* ---- SWAR helpers: exact "does any byte of x satisfy..." tests (Bit Twiddling Hacks) -------- */

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load8(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}
static inline uint64_t has_less(uint64_t x, unsigned n) { return (x - ONES * n) & ~x & HIGHS; } /* n <= 128 */
static inline uint64_t has_byte(uint64_t x, unsigned b)
{
    uint64_t y = x ^ (ONES * b);
    return (y - ONES) & ~y & HIGHS;
}

/* Returns the index of the first byte in p[i..end) that is not allowed in a field value. */
static size_t scan_value(const char *p, size_t i, size_t end)
{
    for (;;) {
        while (end - i >= 8) {
            uint64_t x = load8(p + i);
            if (has_less(x, 0x20) | has_byte(x, 0x7f)) break;
            i += 8;
        }
        /* a hit may be an allowed HTAB: finish this word bytewise, then resume word steps */
        size_t stop = WD_MIN(end, i + 8);
        while (i < stop && CT(p[i], C_VALUE)) i++;
        if (i < stop || i == end) return i;
    }
}

static size_t scan_target(const char *p, size_t i, size_t end)
{
    for (;;) {
        while (end - i >= 8) {
            uint64_t x = load8(p + i);
            if (has_less(x, 0x21) | (x & HIGHS) | has_byte(x, 0x7f) | has_byte(x, '#')) break;
            i += 8;
        }
        size_t stop = WD_MIN(end, i + 8);
        while (i < stop && CT(p[i], C_TARGET)) i++;
        if (i < stop || i == end) return i;
    }
}

static inline size_t scan_token(const char *p, size_t i, size_t end)
{
    while (i < end && CT(p[i], C_TOKEN)) i++;
    return i;
}

/* ---- small helpers -------------------------------------------------------------------------- */

static int fail(wd_http_error_t *err, int status, const char *reason)
{
    if (err) {
        err->status = status;
        err->reason = reason;
    }
    return WD_EINVAL;
}

/* Case-insensitive compare of a token against a lowercase literal. OR-ing 0x20 only folds letters
 * here: the sole non-letter in our literals is '-', whose other preimage (CR) is never in a token. */
static bool tok_is(const char *p, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen) return false;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lit[i]) return false;
    return true;
}
#define TOK_IS(s, lit) tok_is((s).p, (s).len, lit, sizeof(lit) - 1)

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* Iterates a comma-separated list (RFC 9110 §5.6.1); yields each element with OWS trimmed, including
 * empty ones, so that callers decide whether empties are tolerable. */
static bool list_next(wd_str_t v, size_t *pos, wd_str_t *elem)
{
    if (*pos > v.len) return false;
    size_t s = *pos;
    const char *comma = memchr(v.p + s, ',', v.len - s);
    size_t e = comma ? (size_t)(comma - v.p) : v.len;
    *pos = e + 1;
    while (s < e && is_ows(v.p[s])) s++;
    size_t t = e;
    while (t > s && is_ows(v.p[t - 1])) t--;
    *elem = wd_str(v.p + s, t - s);
    return true;
}

static wd_http_method_t method_id(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0) return WD_HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0) return WD_HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0) return WD_HTTP_POST;
        if (memcmp(m, "HEAD", 4) == 0) return WD_HTTP_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0) return WD_HTTP_PATCH;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0) return WD_HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0) return WD_HTTP_OPTIONS;
        break;
    }
    return WD_HTTP_OTHER;
}

void wd_http_limits_default(wd_http_limits_t *lim)
{
    lim->max_request_line = 8192;
    lim->max_head = 32768;
    lim->max_headers = WD_HTTP_MAX_HEADERS;
}

/* ---- the parser ----------------------------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t len;      /* bytes available */
    size_t end;      /* scan bound: min(len, max_head) */
    size_t max_head;
    size_t max_line; /* start line content limit */
    size_t max_headers;
    size_t line0;    /* offset of the start line */
    bool response;
    /* header bookkeeping */
    unsigned n_host, n_cl, n_te;
    bool conn_close, conn_keep_alive;
    wd_http_error_t *err;
} pctx_t;

/* The head is incomplete at `end`: either wait for more bytes or, if max_head bytes are already
 * here, it can never fit. */
static int head_more(const pctx_t *c)
{
    if (c->len >= c->max_head)
        return fail(c->err, 431, c->response ? "response head too large" : "request head too large");
    return WD_EAGAIN;
}

/* The start line is incomplete at i (i is the first unexamined byte). */
static int line_more(const pctx_t *c, size_t i)
{
    if (i - c->line0 > c->max_line)
        return fail(c->err, 414, c->response ? "status line too long" : "request line too long");
    return head_more(c);
}

/* Bound for scanning start-line content: one byte past the limit is enough to know it is too long. */
static size_t line_bound(const pctx_t *c)
{
    size_t avail = c->end - c->line0;
    return avail > c->max_line ? c->line0 + c->max_line + 1 : c->end;
}

static int bad_line_byte(const pctx_t *c, char ch, const char *dflt)
{
    if (ch == '\n') return fail(c->err, 400, "bare LF in start line");
    if (ch == '\r') return fail(c->err, 400, "unexpected CR in start line");
    unsigned char u = (unsigned char)ch;
    if (u < 0x20 || u == 0x7f) return fail(c->err, 400, "control byte in start line");
    return fail(c->err, 400, dflt);
}

/* Parses "HTTP/d.d" at *ip (bounded by lb). Returns WD_OK with major/minor, EAGAIN-ish, or error. */
static int parse_version(const pctx_t *c, size_t *ip, size_t lb, int *major, int *minor)
{
    static const char pat[] = "HTTP/0.0";
    size_t i = *ip;
    for (size_t k = 0; k < 8; k++, i++) {
        if (i >= lb) return line_more(c, i);
        char ch = c->p[i];
        bool ok = (pat[k] == '0') ? (ch >= '0' && ch <= '9') : ch == pat[k];
        if (!ok) return bad_line_byte(c, ch, "malformed HTTP version");
    }
    *major = c->p[*ip + 5] - '0';
    *minor = c->p[*ip + 7] - '0';
    *ip = i;
    return WD_OK;
}

/* Expects CRLF at *ip; the CR must lie within the start-line bound. */
static int start_line_crlf(const pctx_t *c, size_t *ip, size_t lb, const char *what)
{
    size_t i = *ip;
    if (i >= lb) return line_more(c, i);
    if (c->p[i] != '\r') return bad_line_byte(c, c->p[i], what);
    if (i + 1 >= c->end) return head_more(c);
    if (c->p[i + 1] != '\n') return fail(c->err, 400, "bare CR in start line");
    *ip = i + 2;
    return WD_OK;
}

static int parse_request_line(pctx_t *c, size_t *ip, wd_http_msg_t *m)
{
    const char *p = c->p;
    size_t i = *ip;
    size_t lb = line_bound(c);

    size_t ms = i;
    i = scan_token(p, i, lb);
    if (i >= lb) return line_more(c, i);
    if (p[i] != ' ' || i == ms) return bad_line_byte(c, p[i], "invalid method");
    m->method_str = wd_str(p + ms, i - ms);
    m->method = method_id(p + ms, i - ms);
    i++;

    size_t ts = i;
    /* decide the form on the first byte so absolute-form is refused before the rest arrives */
    if (i < lb && p[i] != '/' && p[i] != '*' && CT(p[i], C_TARGET))
        return fail(c->err, 400, "request target not in origin form");
    i = scan_target(p, i, lb);
    if (i >= lb) return line_more(c, i);
    if (p[i] != ' ' || i == ts) {
        unsigned char u = (unsigned char)p[i];
        if (u >= 0x80) return fail(c->err, 400, "non-ASCII byte in request target");
        if (u == '#') return fail(c->err, 400, "fragment in request target");
        return bad_line_byte(c, p[i], "invalid request target");
    }
    m->target = wd_str(p + ts, i - ts);
    if (p[ts] == '/') {
        const char *q = memchr(p + ts, '?', i - ts);
        m->path = wd_str(p + ts, q ? (size_t)(q - (p + ts)) : i - ts);
    } else if (i - ts == 1 && p[ts] == '*' && m->method == WD_HTTP_OPTIONS) {
        m->path = m->target;
    } else {
        return fail(c->err, 400, "request target not in origin form");
    }
    i++;

    int major, minor;
    int rc = parse_version(c, &i, lb, &major, &minor);
    if (rc) return rc;
    if ((rc = start_line_crlf(c, &i, lb, "malformed HTTP version"))) return rc;
    if (major != 1 || minor > 1) return fail(c->err, 505, "HTTP version not supported");
    m->version_minor = minor;
    *ip = i;
    return WD_OK;
}

static int parse_status_line(pctx_t *c, size_t *ip, wd_http_msg_t *m)
{
    const char *p = c->p;
    size_t i = *ip;
    size_t lb = line_bound(c);

    int major, minor;
    int rc = parse_version(c, &i, lb, &major, &minor);
    if (rc) return rc;
    if (i >= lb) return line_more(c, i);
    if (p[i] != ' ') return bad_line_byte(c, p[i], "malformed HTTP version");
    i++;
    int status = 0;
    for (int k = 0; k < 3; k++, i++) {
        if (i >= lb) return line_more(c, i);
        if (p[i] < '0' || p[i] > '9') return bad_line_byte(c, p[i], "malformed status code");
        status = status * 10 + (p[i] - '0');
    }
    if (i >= lb) return line_more(c, i);
    size_t rs = i;
    /* RFC 9112 §4 requires the SP before an empty reason, but its absence is unambiguous: accept it */
    if (p[i] == ' ') {
        rs = ++i;
        i = scan_value(p, i, lb);
    }
    m->reason = wd_str(p + rs, i - rs);
    if ((rc = start_line_crlf(c, &i, lb, "malformed status line"))) return rc;
    if (major != 1 || minor > 1) return fail(c->err, 505, "HTTP version not supported");
    if (status < 100 || status > 599) return fail(c->err, 400, "status code out of range");
    m->status = status;
    m->version_minor = minor;
    *ip = i;
    return WD_OK;
}

static int on_content_length(pctx_t *c, wd_http_msg_t *m, wd_str_t v)
{
    if (++c->n_cl > 1) return fail(c->err, 400, "duplicate Content-Length");
    if (c->n_te) return fail(c->err, 400, "Content-Length with Transfer-Encoding");
    if (v.len == 0) return fail(c->err, 400, "invalid Content-Length");
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned char)v.p[i] - '0';
        if (d > 9) return fail(c->err, 400, "invalid Content-Length");
        if (n > (WD_HTTP_MAX_CONTENT_LENGTH - (int64_t)d) / 10)
            return fail(c->err, 400, "Content-Length too large");
        n = n * 10 + (int64_t)d;
    }
    m->content_length = n;
    return WD_OK;
}

static int on_transfer_encoding(pctx_t *c, wd_http_msg_t *m, wd_str_t v)
{
    if (++c->n_te > 1) return fail(c->err, 400, "duplicate Transfer-Encoding");
    if (c->n_cl) return fail(c->err, 400, "Content-Length with Transfer-Encoding");
    /* RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty */
    if (m->version_minor == 0) return fail(c->err, 400, "Transfer-Encoding in HTTP/1.0");
    size_t pos = 0, nchunked = 0;
    bool unknown = false, malformed = false;
    wd_str_t e;
    while (list_next(v, &pos, &e)) {
        size_t t = scan_token(e.p, 0, e.len);
        if (t == 0) {
            malformed = true;
            continue;
        }
        size_t r = t;
        while (r < e.len && is_ows(e.p[r])) r++;
        bool params = r < e.len;
        if (params && e.p[r] != ';') malformed = true;
        if (tok_is(e.p, t, "chunked", 7)) {
            nchunked++;
            if (params) malformed = true; /* chunked takes no parameters */
        } else {
            unknown = true;
        }
    }
    if (malformed) return fail(c->err, 400, "invalid Transfer-Encoding");
    if (unknown) return fail(c->err, 501, "unsupported Transfer-Encoding");
    if (nchunked != 1) return fail(c->err, 400, "invalid Transfer-Encoding");
    m->chunked = true;
    return WD_OK;
}

static int on_connection(pctx_t *c, wd_http_msg_t *m, wd_str_t v)
{
    size_t pos = 0;
    wd_str_t e;
    while (list_next(v, &pos, &e)) {
        if (e.len == 0) continue; /* RFC 9110 §5.6.1.2: empty elements are ignored */
        if (scan_token(e.p, 0, e.len) != e.len) return fail(c->err, 400, "invalid Connection");
        if (TOK_IS(e, "close")) c->conn_close = true;
        else if (TOK_IS(e, "keep-alive")) c->conn_keep_alive = true;
        else if (TOK_IS(e, "upgrade")) m->upgrade = true;
    }
    return WD_OK;
}

static int on_host(pctx_t *c, wd_str_t v)
{
    if (++c->n_host > 1) return fail(c->err, 400, "duplicate Host");
    for (size_t i = 0; i < v.len; i++)
        if (!CT(v.p[i], C_HOST)) return fail(c->err, 400, "invalid Host");
    return WD_OK;
}

/* Applies the framing-relevant fields as each header completes, so violations surface early. */
static int on_header(pctx_t *c, wd_http_msg_t *m, wd_str_t n, wd_str_t v)
{
    switch (n.len) {
    case 4:
        if (!c->response && TOK_IS(n, "host")) return on_host(c, v);
        break;
    case 6:
        if (!c->response && TOK_IS(n, "expect")) {
            if (!TOK_IS(v, "100-continue")) return fail(c->err, 417, "unsupported Expect");
            /* RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored */
            if (m->version_minor == 1) m->expect_continue = true;
        }
        break;
    case 7:
        if (TOK_IS(n, "upgrade")) m->upgrade = true;
        break;
    case 10:
        if (TOK_IS(n, "connection")) return on_connection(c, m, v);
        break;
    case 14:
        if (TOK_IS(n, "content-length")) return on_content_length(c, m, v);
        break;
    case 17:
        if (TOK_IS(n, "transfer-encoding")) return on_transfer_encoding(c, m, v);
        break;
    }
    return WD_OK;
}

static int parse_headers(pctx_t *c, size_t *ip, wd_http_msg_t *m)
{
    const char *p = c->p;
    size_t end = c->end;
    size_t i = *ip;
    for (;;) {
        if (i >= end) return head_more(c);
        char ch = p[i];
        if (ch == '\r') {
            if (i + 1 >= end) return head_more(c);
            if (p[i + 1] != '\n') return fail(c->err, 400, "bare CR in header section");
            *ip = i + 2;
            return WD_OK;
        }
        if (ch == '\n') return fail(c->err, 400, "bare LF in header section");
        if (ch == ' ' || ch == '\t') return fail(c->err, 400, "obsolete line folding");
        if (m->nheaders >= c->max_headers) return fail(c->err, 431, "too many header fields");

        size_t ns = i;
        i = scan_token(p, i, end);
        if (i >= end) return head_more(c);
        if (p[i] != ':') {
            if (p[i] == ' ' || p[i] == '\t') return fail(c->err, 400, "whitespace before colon");
            if (p[i] == '\r' || p[i] == '\n') return fail(c->err, 400, "header field without colon");
            return fail(c->err, 400, "invalid header field name");
        }
        if (i == ns) return fail(c->err, 400, "empty header field name");
        wd_str_t name = wd_str(p + ns, i - ns);
        i++;
        while (i < end && is_ows(p[i])) i++;
        size_t vs = i;
        i = scan_value(p, i, end);
        if (i >= end) return head_more(c);
        if (p[i] != '\r') {
            if (p[i] == '\n') return fail(c->err, 400, "bare LF in header section");
            return fail(c->err, 400, "control byte in header field value");
        }
        if (i + 1 >= end) return head_more(c);
        if (p[i + 1] != '\n') return fail(c->err, 400, "bare CR in header section");
        size_t ve = i;
        while (ve > vs && is_ows(p[ve - 1])) ve--;
        i += 2;

        wd_http_header_t *h = &m->headers[m->nheaders++];
        h->name = name;
        h->value = wd_str(p + vs, ve - vs);
        int rc = on_header(c, m, h->name, h->value);
        if (rc) return rc;
    }
}

static void ctx_init(pctx_t *c, const char *p, size_t len, const wd_http_limits_t *lim, bool response,
                     wd_http_error_t *err)
{
    wd_http_limits_t d;
    wd_http_limits_default(&d);
    memset(c, 0, sizeof *c);
    c->p = p;
    c->len = len;
    c->max_head = lim && lim->max_head ? lim->max_head : d.max_head;
    c->max_line = lim && lim->max_request_line ? lim->max_request_line : d.max_request_line;
    c->max_headers = lim && lim->max_headers ? WD_MIN(lim->max_headers, (size_t)WD_HTTP_MAX_HEADERS)
                                             : d.max_headers;
    c->end = WD_MIN(len, c->max_head);
    c->response = response;
    c->err = err;
}

static void msg_init(wd_http_msg_t *m)
{
    /* the header array is left alone: only [0, nheaders) is meaningful */
    m->method = WD_HTTP_OTHER;
    m->method_str = m->target = m->path = m->reason = wd_str(NULL, 0);
    m->status = 0;
    m->version_minor = 0;
    m->nheaders = 0;
    m->head_len = 0;
    m->content_length = -1;
    m->chunked = m->keep_alive = m->expect_continue = m->upgrade = false;
}

static void set_keep_alive(const pctx_t *c, wd_http_msg_t *m)
{
    if (m->version_minor == 1) m->keep_alive = !c->conn_close;
    else m->keep_alive = c->conn_keep_alive && !c->conn_close;
}

int wd_http_parse_request(const char *p, size_t len, const wd_http_limits_t *lim, wd_http_msg_t *msg,
                          wd_http_error_t *err)
{
    pctx_t c;
    ctx_init(&c, p, len, lim, false, err);
    msg_init(msg);

    size_t i = 0;
    /* RFC 9112 §2.2: tolerate one CRLF before the request line (left over from a previous body) */
    if (c.end > 0 && p[0] == '\r') {
        if (c.end < 2) return head_more(&c);
        if (p[1] != '\n') return fail(err, 400, "bare CR in start line");
        i = 2;
    } else if (c.end > 0 && p[0] == '\n') {
        return fail(err, 400, "bare LF in start line");
    }
    c.line0 = i;
    int rc = parse_request_line(&c, &i, msg);
    if (rc) return rc;
    if ((rc = parse_headers(&c, &i, msg))) return rc;
    if (msg->version_minor == 1 && c.n_host == 0) return fail(err, 400, "missing Host");
    set_keep_alive(&c, msg);
    msg->head_len = i;
    return WD_OK;
}

int wd_http_parse_response(const char *p, size_t len, const wd_http_limits_t *lim, wd_http_msg_t *msg,
                           wd_http_error_t *err)
{
    pctx_t c;
    ctx_init(&c, p, len, lim, true, err);
    msg_init(msg);

    size_t i = 0;
    int rc = parse_status_line(&c, &i, msg);
    if (!rc) rc = parse_headers(&c, &i, msg);
    if (rc) {
        /* whatever is wrong upstream, the client is answered with 502 */
        if (rc == WD_EINVAL && err) err->status = 502;
        return rc;
    }
    set_keep_alive(&c, msg);
    int s = msg->status;
    if ((s >= 100 && s < 200) || s == 204 || s == 304) {
        /* RFC 9112 §6.3 rule 1: these never carry content, whatever the headers say */
        msg->content_length = 0;
        msg->chunked = false;
    } else if (!msg->chunked && msg->content_length < 0) {
        /* read until close: the connection cannot be reused */
        msg->keep_alive = false;
    }
    msg->head_len = i;
    return WD_OK;
}

const wd_http_header_t *wd_http_header(const wd_http_msg_t *msg, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->nheaders; i++) {
        const wd_http_header_t *h = &msg->headers[i];
        if (h->name.len == n && wd_str_ieq(h->name, wd_str(name, n))) return h;
    }
    return NULL;
}

const char *wd_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: break;
    }
    if (status >= 100 && status < 200) return "Informational";
    if (status >= 200 && status < 300) return "Success";
    if (status >= 300 && status < 400) return "Redirection";
    if (status >= 400 && status < 500) return "Client Error";
    return "Server Error";
}

#include "core/json.h"

#include <stdio.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Small objects (the common case: chat bodies, messages) check duplicate keys pairwise; bigger ones
 * merge-sort their keys as a linked list threaded through the key tokens' unused `size` fields, so
 * the check is O(n log n) without allocating. */
#define DUP_PAIRWISE_MAX 16u
#define DEFAULT_DEPTH 64u

/* Character classes for the scanner. */
enum { C_WS = 1, C_STR = 2 /* needs attention inside a string: '"', '\\', < 0x20, >= 0x80 */ };

static const uint8_t cls[256] = {
    [0x00] = C_STR, [0x01] = C_STR, [0x02] = C_STR, [0x03] = C_STR, [0x04] = C_STR, [0x05] = C_STR,
    [0x06] = C_STR, [0x07] = C_STR, [0x08] = C_STR, [0x09] = C_STR | C_WS, [0x0a] = C_STR | C_WS,
    [0x0b] = C_STR, [0x0c] = C_STR, [0x0d] = C_STR | C_WS, [0x0e] = C_STR, [0x0f] = C_STR,
    [0x10] = C_STR, [0x11] = C_STR, [0x12] = C_STR, [0x13] = C_STR, [0x14] = C_STR, [0x15] = C_STR,
    [0x16] = C_STR, [0x17] = C_STR, [0x18] = C_STR, [0x19] = C_STR, [0x1a] = C_STR, [0x1b] = C_STR,
    [0x1c] = C_STR, [0x1d] = C_STR, [0x1e] = C_STR, [0x1f] = C_STR, [' '] = C_WS, ['"'] = C_STR,
    ['\\'] = C_STR,
#define R16(b)                                                                                            \
    [b + 0] = C_STR, [b + 1] = C_STR, [b + 2] = C_STR, [b + 3] = C_STR, [b + 4] = C_STR, [b + 5] = C_STR, \
    [b + 6] = C_STR, [b + 7] = C_STR, [b + 8] = C_STR, [b + 9] = C_STR, [b + 10] = C_STR,                 \
    [b + 11] = C_STR, [b + 12] = C_STR, [b + 13] = C_STR, [b + 14] = C_STR, [b + 15] = C_STR
    R16(0x80), R16(0x90), R16(0xa0), R16(0xb0), R16(0xc0), R16(0xd0), R16(0xe0), R16(0xf0),
#undef R16
};

typedef struct {
    const unsigned char *s;
    size_t len;
    wd_json_tok_t *toks;
    size_t ntoks, cap;
    unsigned max_depth;
    char *err;
    size_t errlen;
} parser_t;

/* ---- errors ---- */

static int fail(parser_t *p, size_t off, const char *what)
{
    return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %zu: %s", off, what);
}

static int fail_char(parser_t *p, size_t off, const char *what)
{
    if (off >= p->len) return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %zu: unexpected end of input", off);
    unsigned char c = p->s[off];
    if (c > 0x20 && c < 0x7f)
        return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %zu: unexpected '%c', %s", off, c, what);
    return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %zu: unexpected byte 0x%02x, %s", off, c, what);
}

/* ---- strings ---- */

/* Reads 4 hex digits at s[i..i+4) (bounds checked by the caller); -1 if not hex. */
static inline int32_t hex4(const unsigned char *s)
{
    int a = wd_hex_digit(s[0]), b = wd_hex_digit(s[1]), c = wd_hex_digit(s[2]), d = wd_hex_digit(s[3]);
    if ((a | b | c | d) < 0) return -1;
    return (a << 12) | (b << 8) | (c << 4) | d;
}

/* Length of the valid UTF-8 sequence at s[i] (lead byte >= 0x80), or 0 if invalid or truncated.
 * Follows Unicode Table 3-7, which excludes overlongs, UTF-16 surrogates and values > U+10FFFF. */
static inline size_t utf8_seq(const unsigned char *s, size_t i, size_t len)
{
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        else if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        else if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (len - i < n) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < n; k++)
        if (s[i + k] < 0x80 || s[i + k] > 0xbf) return 0;
    return n;
}

static inline uint64_t load64(const unsigned char *s)
{
    uint64_t v;
    memcpy(&v, s, 8);
    return v;
}

/* True if any byte of v is '"', '\\', < 0x20 or >= 0x80 (SWAR, see "Bit Twiddling Hacks"). */
static inline bool swar_special(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    uint64_t zq = (q - ones) & ~q, zb = (b - ones) & ~b;
    uint64_t lt = v - ones * 0x20; /* high bit set where byte < 0x20 (or borrow effects, ok: only false positives) */
    return ((zq | zb | lt | v) & highs) != 0;
}

/* The index of the first byte at or after i that needs attention inside a string (C_STR), or len:
 * 16 bytes at a time with SSE2 (a signed compare below 0x20 also catches the bytes >= 0x80), else 8
 * with SWAR, then byte by byte. */
static inline size_t skip_plain(const unsigned char *s, size_t i, size_t len)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i sp = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                  _mm_cmplt_epi8(v, space));
        unsigned m = (unsigned)_mm_movemask_epi8(sp);
        if (m) return i + (size_t)__builtin_ctz(m);
    }
#endif
    while (i + 8 <= len && !swar_special(load64(s + i)))
        i += 8;
    while (i < len && !(cls[s[i]] & C_STR))
        i++;
    return i;
}

/* Scans a string whose opening quote is at s[i-1]; validates it and returns the index of the closing
 * quote in *end. */
static int scan_string(parser_t *p, size_t i, size_t *end, bool *escaped)
{
    const unsigned char *s = p->s;
    size_t len = p->len;
    bool esc = false;
    for (;;) {
        i = skip_plain(s, i, len);
        if (i >= len) return fail(p, len, "unterminated string");
        unsigned char c = s[i];
        if (c == '"') break;
        if (c == '\\') {
            esc = true;
            if (i + 1 >= len) return fail(p, len, "unterminated string");
            switch (s[i + 1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': i += 2; continue;
            case 'u': break;
            default: return fail(p, i, "invalid escape in string");
            }
            if (len - i < 6) return fail(p, i, "truncated \\u escape");
            int32_t u = hex4(s + i + 2);
            if (u < 0) return fail(p, i, "invalid \\u escape");
            if (u >= 0xdc00 && u <= 0xdfff) return fail(p, i, "lone low surrogate in \\u escape");
            if (u >= 0xd800 && u <= 0xdbff) {
                int32_t lo = -1;
                if (len - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u') lo = hex4(s + i + 8);
                if (lo < 0xdc00 || lo > 0xdfff) return fail(p, i, "high surrogate not followed by a low surrogate");
                i += 12;
            } else
                i += 6;
            continue;
        }
        if (c < 0x20) return fail(p, i, "control character in string");
        size_t n = utf8_seq(s, i, len);
        if (!n) return fail(p, i, "invalid UTF-8");
        i += n;
    }
    *end = i;
    *escaped = esc;
    return WD_OK;
}

/* Decoding iterator over a validated string span: yields the decoded UTF-8 bytes one at a time. */
typedef struct {
    const unsigned char *s;
    size_t i, end;
    unsigned char buf[4];
    unsigned bi, bn;
} dec_t;

static size_t utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the escape at s[i] (a backslash) into o; returns the number of output bytes and advances *i.
 * The span was validated by scan_string; malformed input is still handled without reading out of
 * bounds (decoded as U+FFFD) so a corrupted token array cannot cause an overrun. */
static size_t decode_escape(const unsigned char *s, size_t *i, size_t end, unsigned char *o)
{
    size_t k = *i;
    if (k + 1 >= end) {
        *i = end;
        return utf8_put(o, 0xfffd);
    }
    unsigned char c = s[k + 1];
    *i = k + 2;
    switch (c) {
    case 'b': o[0] = '\b'; return 1;
    case 'f': o[0] = '\f'; return 1;
    case 'n': o[0] = '\n'; return 1;
    case 'r': o[0] = '\r'; return 1;
    case 't': o[0] = '\t'; return 1;
    case 'u': break;
    default: o[0] = c; return 1;
    }
    int32_t u = end - k >= 6 ? hex4(s + k + 2) : -1;
    if (u < 0) {
        *i = end;
        return utf8_put(o, 0xfffd);
    }
    *i = k + 6;
    if (u >= 0xd800 && u <= 0xdbff && end - k >= 12 && s[k + 6] == '\\' && s[k + 7] == 'u') {
        int32_t lo = hex4(s + k + 8);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
            *i = k + 12;
            return utf8_put(o, 0x10000 + (((uint32_t)u - 0xd800) << 10) + ((uint32_t)lo - 0xdc00));
        }
    }
    if (u >= 0xd800 && u <= 0xdfff) u = 0xfffd;
    return utf8_put(o, (uint32_t)u);
}

static inline int dec_next(dec_t *d)
{
    if (d->bi < d->bn) return d->buf[d->bi++];
    if (d->i >= d->end) return -1;
    unsigned char c = d->s[d->i];
    if (c != '\\') {
        d->i++;
        return c;
    }
    d->bn = (unsigned)decode_escape(d->s, &d->i, d->end, d->buf);
    d->bi = 1;
    return d->buf[0];
}

static inline void dec_init(dec_t *d, const char *src, const wd_json_tok_t *t)
{
    d->s = (const unsigned char *)src;
    d->i = t->start;
    d->end = t->end;
    d->bi = d->bn = 0;
}

/* Orders two string tokens by their decoded bytes (memcmp order, shorter prefix first). */
static int key_cmp(const char *src, const wd_json_tok_t *a, const wd_json_tok_t *b)
{
    if (!a->escaped && !b->escaped) {
        size_t la = a->end - a->start, lb = b->end - b->start;
        int r = memcmp(src + a->start, src + b->start, WD_MIN(la, lb));
        if (r) return r;
        return la < lb ? -1 : la > lb;
    }
    dec_t x, y;
    dec_init(&x, src, a);
    dec_init(&y, src, b);
    for (;;) {
        int cx = dec_next(&x), cy = dec_next(&y);
        if (cx != cy) return cx < cy ? -1 : 1;
        if (cx < 0) return 0;
    }
}

static inline bool key_eq(const char *src, const wd_json_tok_t *a, const wd_json_tok_t *b)
{
    if (!a->escaped && !b->escaped)
        return a->end - a->start == b->end - b->start &&
               memcmp(src + a->start, src + b->start, a->end - a->start) == 0;
    return key_cmp(src, a, b) == 0;
}

/* ---- duplicate keys ---- */

static int fail_dup(parser_t *p, const wd_json_tok_t *k)
{
    /* The message reaches the client and the audit event: the key is quoted only when it is a
     * lower-case identifier ("model", "max_tokens"), never when it could be data (an address, a
     * number, a name). */
    size_t n = k->end - k->start;
    bool ident = n > 0 && n <= 32 && !(p->s[k->start] >= '0' && p->s[k->start] <= '9');
    for (size_t i = 0; ident && i < n; i++) {
        unsigned char c = p->s[k->start + i];
        ident = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    }
    if (!ident)
        return wd_errf(p->err, p->errlen, WD_EINVAL,
                       "offset %u: duplicate key of %zu bytes (not shown: not a lower-case identifier)",
                       k->start - 1, n);
    return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %u: duplicate key \"%.*s\"", k->start - 1, (int)n,
                   (const char *)p->s + k->start);
}

/* Stable merge sort of the list threaded through toks[].size (0 terminates: index 0 is always the root,
 * never a key). Simon Tatham's bottom-up list merge sort: O(n log n), no recursion, no memory. */
static uint32_t sort_keys(const char *src, wd_json_tok_t *t, uint32_t head)
{
    for (uint32_t insize = 1;; insize *= 2) {
        uint32_t pp = head, tail = 0, merges = 0;
        head = 0;
        while (pp) {
            merges++;
            uint32_t q = pp, psize = 0, qsize = insize;
            while (psize < insize && q) {
                psize++;
                q = t[q].size;
            }
            while (psize > 0 || (qsize > 0 && q)) {
                uint32_t e;
                if (psize == 0) {
                    e = q;
                    q = t[q].size;
                    qsize--;
                } else if (qsize == 0 || !q || key_cmp(src, &t[pp], &t[q]) <= 0) {
                    e = pp;
                    pp = t[pp].size;
                    psize--;
                } else {
                    e = q;
                    q = t[q].size;
                    qsize--;
                }
                if (tail) t[tail].size = e;
                else head = e;
                tail = e;
            }
            pp = q;
        }
        t[tail].size = 0;
        if (merges <= 1) return head;
    }
}

static int check_dups(parser_t *p, uint32_t obj)
{
    wd_json_tok_t *t = p->toks;
    const char *src = (const char *)p->s;
    uint32_t n = t[obj].size;
    if (n < 2) return WD_OK;
    if (n <= DUP_PAIRWISE_MAX) {
        uint32_t keys[DUP_PAIRWISE_MAX];
        uint32_t k = obj + 1;
        for (uint32_t i = 0; i < n; i++) {
            for (uint32_t j = 0; j < i; j++)
                if (key_eq(src, &t[keys[j]], &t[k])) return fail_dup(p, &t[k]);
            keys[i] = k;
            k = t[k + 1].next;
        }
        return WD_OK;
    }
    uint32_t k = obj + 1, head = k;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t nk = i + 1 < n ? t[k + 1].next : 0;
        t[k].size = nk;
        k = nk;
    }
    head = sort_keys(src, t, head);
    /* Equal keys are adjacent and, the sort being stable, in document order; report the duplicate that
     * comes first in the document, as the pairwise check would. Restore size = 0 on the way. */
    uint32_t prev = 0, dup = 0;
    for (uint32_t e = head; e;) {
        uint32_t nx = t[e].size;
        if (prev && key_eq(src, &t[prev], &t[e]) && t[prev].start < t[e].start &&
            (!dup || t[e].start < t[dup].start))
            dup = e;
        if (prev) t[prev].size = 0;
        prev = e;
        e = nx;
    }
    if (prev) t[prev].size = 0;
    return dup ? fail_dup(p, &t[dup]) : WD_OK;
}

/* ---- parser ---- */

static inline int push(parser_t *p, uint8_t type, size_t start, int32_t parent, uint32_t *idx)
{
    if (p->ntoks >= p->cap) {
        /* A valid document of N bytes has at most ceil(N/2) tokens (every value but the first needs a
         * separator, containers two bytes). Running out of a cap that large proves the input malformed
         * (e.g. unclosed brackets), which must not be reported as a size problem. */
        if (p->cap > p->len / 2)
            return wd_errf(p->err, p->errlen, WD_EINVAL, "offset %zu: more values than a valid %zu-byte document can hold",
                           start, p->len);
        return wd_errf(p->err, p->errlen, WD_E2BIG, "offset %zu: more than %zu tokens", start, p->cap);
    }
    wd_json_tok_t *t = &p->toks[p->ntoks];
    t->type = type;
    t->escaped = false;
    t->start = (uint32_t)start;
    t->end = (uint32_t)start;
    t->size = 0;
    t->next = (uint32_t)p->ntoks + 1;
    t->parent = parent;
    *idx = (uint32_t)p->ntoks++;
    return WD_OK;
}

static inline size_t skip_ws(const unsigned char *s, size_t i, size_t len)
{
    while (i < len && (cls[s[i]] & C_WS)) i++;
    return i;
}

static int scan_number(parser_t *p, size_t i, size_t *end)
{
    const unsigned char *s = p->s;
    size_t len = p->len, b = i;
    if (s[i] == '-') i++;
    if (i >= len) return fail(p, i, "unexpected end of input in number");
    if (s[i] == '0') {
        i++;
        if (i < len && s[i] >= '0' && s[i] <= '9') return fail(p, b, "leading zero in number");
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    } else
        return fail_char(p, i, "expected a digit");
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9') return fail_char(p, i, "expected a digit after '.'");
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= len || s[i] < '0' || s[i] > '9') return fail_char(p, i, "expected a digit in exponent");
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    }
    *end = i;
    return WD_OK;
}

static int parse(parser_t *p)
{
    const unsigned char *s = p->s;
    const size_t len = p->len;
    wd_json_tok_t *t = p->toks;
    int32_t cur = -1; /* innermost open container */
    unsigned depth = 0;
    uint32_t idx = 0;
    int rc;
    size_t i = skip_ws(s, 0, len);

value:
    if (i >= len) return fail(p, i, "unexpected end of input, expected a value");
    if (cur >= 0 && t[cur].type == WD_JSON_ARRAY) t[cur].size++;
    switch (s[i]) {
    case '{':
    case '[': {
        bool obj = s[i] == '{';
        if (depth >= p->max_depth)
            return wd_errf(p->err, p->errlen, WD_E2BIG, "offset %zu: nesting deeper than %u", i, p->max_depth);
        if ((rc = push(p, obj ? WD_JSON_OBJECT : WD_JSON_ARRAY, i, cur, &idx))) return rc;
        depth++;
        cur = (int32_t)idx;
        i = skip_ws(s, i + 1, len);
        if (i < len && s[i] == (obj ? '}' : ']')) goto close;
        if (obj) goto key;
        goto value;
    }
    case '"': {
        size_t e = 0;
        bool esc;
        if ((rc = push(p, WD_JSON_STRING, i + 1, cur, &idx))) return rc;
        if ((rc = scan_string(p, i + 1, &e, &esc))) return rc;
        t[idx].end = (uint32_t)e;
        t[idx].escaped = esc;
        i = e + 1;
        break;
    }
    case '-': case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9': {
        size_t e = 0;
        if ((rc = push(p, WD_JSON_NUMBER, i, cur, &idx))) return rc;
        if ((rc = scan_number(p, i, &e))) return rc;
        t[idx].end = (uint32_t)e;
        i = e;
        break;
    }
    case 't':
    case 'f':
    case 'n': {
        static const char *const lit[] = {"true", "false", "null"};
        static const uint8_t ty[] = {WD_JSON_TRUE, WD_JSON_FALSE, WD_JSON_NULL};
        int w = s[i] == 't' ? 0 : s[i] == 'f' ? 1 : 2;
        size_t n = strlen(lit[w]);
        for (size_t k = 1; k < n; k++)
            if (i + k >= len || s[i + k] != (unsigned char)lit[w][k]) return fail_char(p, i + k, "invalid literal");
        if ((rc = push(p, ty[w], i, cur, &idx))) return rc;
        t[idx].end = (uint32_t)(i + n);
        i += n;
        break;
    }
    default:
        if (cur >= 0 && t[cur].type == WD_JSON_ARRAY && s[i] == ']' && t[cur].size > 1)
            return fail(p, i, "trailing comma in array");
        return fail_char(p, i, "expected a value");
    }

after_value:
    if (cur < 0) {
        i = skip_ws(s, i, len);
        if (i < len) return fail_char(p, i, "expected end of input after the document");
        return WD_OK;
    }
    i = skip_ws(s, i, len);
    if (i >= len) return fail(p, i, "unexpected end of input");
    if (t[cur].type == WD_JSON_ARRAY) {
        if (s[i] == ',') {
            i = skip_ws(s, i + 1, len);
            goto value;
        }
        if (s[i] == ']') goto close;
        return fail_char(p, i, "expected ',' or ']'");
    }
    if (s[i] == ',') {
        i = skip_ws(s, i + 1, len);
        goto key;
    }
    if (s[i] == '}') goto close;
    return fail_char(p, i, "expected ',' or '}'");

key:
    if (i >= len) return fail(p, i, "unexpected end of input, expected a key");
    if (s[i] != '"') {
        if (s[i] == '}' && t[cur].size > 0) return fail(p, i, "trailing comma in object");
        return fail_char(p, i, "expected a string key");
    }
    {
        size_t e = 0;
        bool esc;
        if ((rc = push(p, WD_JSON_STRING, i + 1, cur, &idx))) return rc;
        t[cur].size++;
        if ((rc = scan_string(p, i + 1, &e, &esc))) return rc;
        t[idx].end = (uint32_t)e;
        t[idx].escaped = esc;
        i = skip_ws(s, e + 1, len);
        if (i >= len || s[i] != ':') return fail_char(p, i, "expected ':' after key");
        i = skip_ws(s, i + 1, len);
        goto value;
    }

close:
    t[cur].end = (uint32_t)(i + 1);
    t[cur].next = (uint32_t)p->ntoks;
    if (t[cur].type == WD_JSON_OBJECT && (rc = check_dups(p, (uint32_t)cur))) return rc;
    cur = t[cur].parent;
    depth--;
    i++;
    goto after_value;
}

int wd_json_parse(wd_json_doc_t *doc, const char *src, size_t len, wd_json_tok_t *toks, size_t cap,
                  unsigned max_depth, char *err, size_t errlen)
{
    doc->src = src;
    doc->len = len;
    doc->toks = toks;
    doc->ntoks = 0;
    doc->cap = cap;
    if (err && errlen) err[0] = '\0';
    if (len > UINT32_MAX) return wd_errf(err, errlen, WD_E2BIG, "document of %zu bytes is too large", len);
    if (cap > (size_t)INT32_MAX) cap = (size_t)INT32_MAX; /* token indices are int32 (parent) */
    parser_t p = {(const unsigned char *)src, len, toks, 0, cap, max_depth ? max_depth : DEFAULT_DEPTH, err, errlen};
    int rc = parse(&p);
    doc->ntoks = rc == WD_OK ? p.ntoks : 0;
    return rc;
}

/* ---- lookups ---- */

static inline const wd_json_tok_t *tok_at(const wd_json_doc_t *doc, int tok)
{
    if (!doc || tok < 0 || (size_t)tok >= doc->ntoks) return NULL;
    return &doc->toks[tok];
}

/* Compares a string token's decoded value with z[0..zlen). */
static bool str_eq_n(const wd_json_doc_t *doc, const wd_json_tok_t *t, const char *z, size_t zlen)
{
    size_t raw = t->end - t->start;
    if (!t->escaped) return raw == zlen && memcmp(doc->src + t->start, z, zlen) == 0;
    if (raw < zlen) return false; /* decoding never makes a string longer */
    dec_t d;
    dec_init(&d, doc->src, t);
    for (size_t k = 0; k < zlen; k++)
        if (dec_next(&d) != (unsigned char)z[k]) return false;
    return dec_next(&d) < 0;
}

int wd_json_obj_get(const wd_json_doc_t *doc, int obj, const char *key)
{
    const wd_json_tok_t *o = tok_at(doc, obj);
    if (!o || o->type != WD_JSON_OBJECT || !key) return -1;
    size_t klen = strlen(key);
    uint32_t k = (uint32_t)obj + 1;
    for (uint32_t i = 0; i < o->size; i++) {
        if (k + 1 >= doc->ntoks) return -1;
        if (str_eq_n(doc, &doc->toks[k], key, klen)) return (int)k + 1;
        k = doc->toks[k + 1].next;
    }
    return -1;
}

int wd_json_arr_get(const wd_json_doc_t *doc, int arr, size_t i)
{
    const wd_json_tok_t *a = tok_at(doc, arr);
    if (!a || a->type != WD_JSON_ARRAY || i >= a->size) return -1;
    uint32_t k = (uint32_t)arr + 1;
    for (size_t j = 0; j < i; j++) {
        if (k >= doc->ntoks) return -1;
        k = doc->toks[k].next;
    }
    return k < doc->ntoks ? (int)k : -1;
}

int wd_json_str_decode(const wd_json_doc_t *doc, int tok, wd_buf_t *out)
{
    const wd_json_tok_t *t = tok_at(doc, tok);
    if (!t || t->type != WD_JSON_STRING) return WD_EINVAL;
    const unsigned char *s = (const unsigned char *)doc->src;
    size_t i = t->start, end = t->end;
    /* Decoded text is never longer than the raw span, so one reservation covers it. */
    int rc = wd_buf_reserve(out, end - i);
    if (rc) return rc;
    if (!t->escaped) return wd_buf_append(out, s + i, end - i);
    unsigned char *o = (unsigned char *)out->data + out->len;
    while (i < end) {
        const unsigned char *bs = memchr(s + i, '\\', end - i);
        size_t run = bs ? (size_t)(bs - (s + i)) : end - i;
        memcpy(o, s + i, run);
        o += run;
        i += run;
        if (i < end) o += decode_escape(s, &i, end, o);
    }
    out->len = (size_t)(o - (unsigned char *)out->data);
    return WD_OK;
}

bool wd_json_str_eq(const wd_json_doc_t *doc, int tok, const char *z)
{
    const wd_json_tok_t *t = tok_at(doc, tok);
    if (!t || t->type != WD_JSON_STRING || !z) return false;
    return str_eq_n(doc, t, z, strlen(z));
}

wd_str_t wd_json_raw(const wd_json_doc_t *doc, int tok)
{
    const wd_json_tok_t *t = tok_at(doc, tok);
    if (!t) return wd_str(NULL, 0);
    if (t->type == WD_JSON_STRING) return wd_str(doc->src + t->start - 1, t->end - t->start + 2);
    return wd_str(doc->src + t->start, t->end - t->start);
}

int wd_json_int(const wd_json_doc_t *doc, int tok, int64_t *v)
{
    const wd_json_tok_t *t = tok_at(doc, tok);
    if (!t || t->type != WD_JSON_NUMBER) return WD_EINVAL;
    const char *s = doc->src + t->start;
    size_t n = t->end - t->start, i = 0;
    bool neg = n > 0 && s[0] == '-';
    if (neg) i++;
    if (i >= n) return WD_EINVAL;
    /* Not an integer (fraction or exponent) takes precedence over out of range. */
    for (size_t k = i; k < n; k++)
        if (s[k] < '0' || s[k] > '9') return WD_EINVAL;
    /* Accumulate as a negative number so INT64_MIN is representable. */
    int64_t acc = 0;
    for (; i < n; i++) {
        int d = s[i] - '0';
        if (acc < (INT64_MIN + d) / 10) return WD_E2BIG;
        acc = acc * 10 - d;
    }
    if (!neg) {
        if (acc == INT64_MIN) return WD_E2BIG;
        acc = -acc;
    }
    *v = acc;
    return WD_OK;
}

/* ---- rewrites ---- */

int wd_json_apply_edits(const char *src, size_t len, wd_json_edit_t *edits, size_t nedits, wd_buf_t *out)
{
    if (!src && len) return WD_EINVAL;
    if (nedits && !edits) return WD_EINVAL;
    /* Validate everything and size the result before writing, so a failed call leaves out unchanged. */
    size_t total = len, prev_end = 0;
    for (size_t k = 0; k < nedits; k++) {
        const wd_json_edit_t *e = &edits[k];
        if (e->start > e->end || e->end > len || e->start < prev_end) return WD_EINVAL;
        if (e->with.len && !e->with.p) return WD_EINVAL;
        total -= e->end - e->start;
        if (e->with.len > SIZE_MAX - total) return WD_E2BIG;
        total += e->with.len;
        prev_end = e->end;
    }
    int rc = wd_buf_reserve(out, total);
    if (rc) return rc;
    size_t pos = 0;
    for (size_t k = 0; k < nedits; k++) {
        const wd_json_edit_t *e = &edits[k];
        memcpy(out->data + out->len, src + pos, e->start - pos);
        out->len += e->start - pos;
        if (e->with.len) memcpy(out->data + out->len, e->with.p, e->with.len);
        out->len += e->with.len;
        pos = e->end;
    }
    if (len > pos) memcpy(out->data + out->len, src + pos, len - pos);
    out->len += len - pos;
    return WD_OK;
}

int wd_json_edit_set(const wd_json_doc_t *doc, int obj, const char *key, wd_str_t raw_value,
                     wd_json_edit_t *edit, wd_buf_t *scratch)
{
    const wd_json_tok_t *o = tok_at(doc, obj);
    if (!o || o->type != WD_JSON_OBJECT || !key || !edit || !scratch || (raw_value.len && !raw_value.p))
        return WD_EINVAL;
    if (!raw_value.len) return WD_EINVAL; /* an empty value would make the document invalid */
    wd_buf_reset(scratch);
    int rc, v = wd_json_obj_get(doc, obj, key);
    if (v >= 0) {
        wd_str_t old = wd_json_raw(doc, v);
        if ((rc = wd_buf_append(scratch, raw_value.p, raw_value.len))) return rc;
        edit->start = (size_t)(old.p - doc->src);
        edit->end = edit->start + old.len;
    } else {
        if ((rc = wd_buf_append(scratch, "\"", 1)) || (rc = wd_buf_append_json_str(scratch, key, strlen(key))) ||
            (rc = wd_buf_append(scratch, "\":", 2)) || (rc = wd_buf_append(scratch, raw_value.p, raw_value.len)) ||
            (o->size && (rc = wd_buf_append(scratch, ",", 1)))) {
            wd_buf_reset(scratch);
            return rc;
        }
        edit->start = edit->end = (size_t)o->start + 1;
    }
    edit->with = wd_str(scratch->data, scratch->len);
    return WD_OK;
}

/* guard/pattern: the bytes a pattern's matches can contain. See pattern.h. */
#include "guard/pattern.h"

#include "core/core.h"

#include <stdlib.h>
#include <string.h>

static void add(uint8_t b[32], unsigned c)
{
    b[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static void add_range(uint8_t b[32], unsigned lo, unsigned hi)
{
    for (unsigned c = lo; c <= hi; c++)
        add(b, c);
}

/* A shorthand class after a backslash (\d \w \s \h \v, upper case negated, as PCRE2 reads them
 * without UTF) added to b; false if c is none. */
static bool shorthand(char c, uint8_t b[32])
{
    uint8_t t[32] = {0};
    switch (c | 0x20) {
    case 'd': add_range(t, '0', '9'); break;
    case 'w':
        add_range(t, '0', '9');
        add_range(t, 'A', 'Z');
        add_range(t, 'a', 'z');
        add(t, '_');
        break;
    case 's':
        add_range(t, '\t', '\r'); /* \t \n \v \f \r */
        add(t, ' ');
        break;
    case 'h':
        add(t, '\t');
        add(t, ' ');
        add(t, 0xa0);
        break;
    case 'v':
        add_range(t, '\n', '\r');
        add(t, 0x85);
        break;
    default: return false;
    }
    bool neg = c >= 'A' && c <= 'Z';
    for (unsigned i = 0; i < 32; i++)
        b[i] |= neg ? (uint8_t)~t[i] : t[i];
    return true;
}

/* The byte an escape stands for (*pp at the character after the backslash, advanced past it), or -1
 * if it is not one this reader knows. */
static int escaped_byte(const char **pp)
{
    const char *p = *pp;
    int v;
    switch (*p) {
    case 't': v = '\t'; break;
    case 'n': v = '\n'; break;
    case 'r': v = '\r'; break;
    case 'f': v = '\f'; break;
    case 'e': v = 0x1b; break;
    case 'a': v = 0x07; break;
    case 'x': {
        int h = wd_hex_digit(p[1]), l = h >= 0 ? wd_hex_digit(p[2]) : -1;
        if (l < 0) return -1; /* \x{...} and one-digit forms */
        *pp = p + 3;
        return h * 16 + l;
    }
    default:
        if (!*p || wd_is_alnum(*p)) return -1; /* \p, \Q, \c, back-references, octal, ... */
        v = (unsigned char)*p;
    }
    *pp = p + 1;
    return v;
}

/* A bracket class (*pp at its '['), added to b. */
static bool read_class(const char **pp, uint8_t b[32])
{
    const char *p = *pp + 1;
    uint8_t t[32] = {0};
    bool neg = *p == '^';
    if (neg) p++;
    for (bool first = true; *p && (*p != ']' || first); first = false) {
        if (p[0] == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) return false; /* POSIX classes */
        int lo;
        if (*p == '\\') {
            p++;
            if (shorthand(*p, t)) {
                p++;
                continue;
            }
            if (*p == 'b') { /* backspace inside a class */
                p++;
                lo = 0x08;
            } else if ((lo = escaped_byte(&p)) < 0) {
                return false;
            }
        } else {
            lo = (unsigned char)*p++;
        }
        int hi = lo;
        if (p[0] == '-' && p[1] && p[1] != ']') {
            p++;
            if (*p == '\\') {
                p++;
                if ((hi = escaped_byte(&p)) < 0) return false;
            } else {
                hi = (unsigned char)*p++;
            }
            if (hi < lo) return false;
        }
        add_range(t, (unsigned)lo, (unsigned)hi);
    }
    if (*p != ']') return false;
    *pp = p + 1;
    for (unsigned i = 0; i < 32; i++)
        b[i] |= neg ? (uint8_t)~t[i] : t[i];
    return true;
}

/* After "(?": the kind of group, *pp advanced past what opens it. Sets *ci for a flag group with i. */
static bool read_group(const char **pp, bool *ci)
{
    const char *p = *pp;
    if (*p == ':' || *p == '=' || *p == '!' || *p == '>') {
        p++; /* non-capturing, lookahead, atomic */
    } else if (p[0] == '<' && (p[1] == '=' || p[1] == '!')) {
        p += 2; /* lookbehind */
    } else if (*p == '<' || *p == '\'' || (p[0] == 'P' && p[1] == '<')) {
        p += *p == 'P' ? 2 : 1; /* a named group: skip the name */
        while (*p == '_' || wd_is_alnum(*p))
            p++;
        if (*p != '>' && *p != '\'') return false;
        p++;
    } else if (*p == '#') { /* a comment */
        while (*p && *p != ')')
            p++;
        if (!*p) return false;
    } else { /* inline flags: (?i) (?i:...) (?-i) ...; extended mode (x) changes what bytes mean */
        const char *f = p;
        while (*p && strchr("imsn-", *p))
            p++;
        if (p == f || (*p != ':' && *p != ')')) return false;
        if (memchr(f, 'i', (size_t)(p - f))) *ci = true;
        if (*p == ':') p++;
    }
    *pp = p;
    return true;
}

/* {m}, {m,}, {m,n}: the length of the quantifier at p, or 0 if it is not one (then `{` is a literal). */
static size_t quantifier(const char *p)
{
    const char *q = p + 1;
    if (*q < '0' || *q > '9') return 0;
    while (*q >= '0' && *q <= '9')
        q++;
    if (*q == ',') {
        q++;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    return *q == '}' ? (size_t)(q + 1 - p) : 0;
}

bool wd_pattern_bytes(const char *pat, bool caseless, uint8_t bytes[32])
{
    memset(bytes, 0, 32);
    const char *p = pat;
    bool ok = p != NULL, ci = caseless;
    while (ok && *p) {
        char c = *p;
        if (c == '\\') {
            p++;
            if (*p && strchr("bBAzZG", *p)) { /* zero-width */
                p++;
            } else if (shorthand(*p, bytes)) {
                p++;
            } else {
                int x = escaped_byte(&p);
                if (x < 0)
                    ok = false;
                else
                    add(bytes, (unsigned)x);
            }
        } else if (c == '[') {
            ok = read_class(&p, bytes);
        } else if (c == '(') {
            if (p[1] == '*') ok = false; /* (*UTF), (*UCP) and other verbs change what bytes mean */
            p++;
            if (*p == '?') {
                p++;
                ok = read_group(&p, &ci);
            }
        } else if (c == '{' && quantifier(p)) {
            p += quantifier(p);
        } else if (c == '.') {
            memset(bytes, 0xff, 32); /* any byte (with or without dotall) */
            p++;
        } else {
            if (!strchr(")|*+?^$", c))
                add(bytes, (unsigned char)c); /* structure and anchors consume nothing */
            p++;
        }
    }
    if (!ok) {
        memset(bytes, 0xff, 32);
        return false;
    }
    if (ci)
        for (unsigned c = 'a'; c <= 'z'; c++)
            if (wd_byte_in(bytes, (unsigned char)c) || wd_byte_in(bytes, (unsigned char)(c - 32))) {
                add(bytes, c);
                add(bytes, c - 32);
            }
    return true;
}

/* ---- the shape of a pattern's matches ----------------------------------------------------------- */

/* What a (sub)pattern's matches are made of: whether one can be empty, how long one can be, the bytes
 * one can start or end with, the bytes it can hold, and how many bytes of the set asked about each
 * holds at least (need). */
typedef struct {
    bool nullable;
    unsigned long lo, hi; /* the least and greatest length of a match (INF: unbounded) */
    unsigned long need;
    uint8_t first[32], last[32], bytes[32];
    /* Literals (each byte one, or one letter in both cases): every match is one, of at least pre bytes
     * (full); else every match starts with one of at least pre bytes, ends with one of at least suf,
     * and holds one of at least lit. */
    bool full;
    unsigned long pre, suf, lit;
} shape_t;

typedef struct {
    const char *p;
    const uint8_t *set; /* for shape_t.need */
    bool ci, ok;
    unsigned depth;
} reader_t;

static void set_or(uint8_t d[32], const uint8_t s[32])
{
    for (unsigned i = 0; i < 32; i++)
        d[i] |= s[i];
}

static bool subset(const uint8_t a[32], const uint8_t b[32])
{
    for (unsigned i = 0; i < 32; i++)
        if (a[i] & ~b[i]) return false;
    return true;
}

static unsigned count(const uint8_t b[32], unsigned *last);

/* One byte class consumed once: both ASCII cases when caseless. */
static void one_byte(const reader_t *q, uint8_t t[32], shape_t *sh)
{
    if (q->ci)
        for (unsigned c = 'a'; c <= 'z'; c++)
            if (wd_byte_in(t, (unsigned char)c) || wd_byte_in(t, (unsigned char)(c - 32))) {
                add(t, c);
                add(t, c - 32);
            }
    memset(sh, 0, sizeof *sh);
    memcpy(sh->first, t, 32);
    memcpy(sh->last, t, 32);
    memcpy(sh->bytes, t, 32);
    sh->lo = sh->hi = 1;
    sh->need = q->set && subset(t, q->set);
    unsigned c = 0, k = count(t, &c);
    sh->full = k == 1 || (k == 2 && wd_is_alnum((unsigned char)c) && wd_byte_in(t, (unsigned char)(c ^ 0x20)));
    sh->pre = sh->suf = sh->lit = sh->full;
}

static void read_alt(reader_t *q, shape_t *sh);

/* One atom at q->p, advanced past it. Zero-width atoms are nullable with no bytes. */
static void read_atom(reader_t *q, shape_t *sh)
{
    uint8_t t[32] = {0};
    memset(sh, 0, sizeof *sh);
    sh->nullable = sh->full = true; /* zero-width: an empty literal, which keeps its neighbours together */
    char c = *q->p;
    if (c == '\\') {
        q->p++;
        if (*q->p && strchr("bBAzZG", *q->p)) {
            q->p++;
            return;
        }
        if (shorthand(*q->p, t)) {
            q->p++;
        } else {
            int x = escaped_byte(&q->p);
            if (x < 0) {
                q->ok = false;
                return;
            }
            add(t, (unsigned)x);
        }
        one_byte(q, t, sh);
        return;
    }
    if (c == '[') {
        if (!read_class(&q->p, t)) q->ok = false;
        else one_byte(q, t, sh);
        return;
    }
    if (c == '(') {
        if (q->p[1] == '*' || ++q->depth > 64) {
            q->ok = false;
            return;
        }
        q->p++;
        bool zero = false, scoped = false, ci = q->ci;
        if (*q->p == '?') {
            q->p++;
            zero = *q->p == '=' || *q->p == '!' || *q->p == '#' ||
                   (q->p[0] == '<' && (q->p[1] == '=' || q->p[1] == '!'));
            const char *f = q->p;
            if (!read_group(&q->p, &q->ci)) {
                q->ok = false;
                return;
            }
            if (*q->p == ')' && q->p > f && q->p[-1] != ':' && !zero) { /* (?i): to the group's end */
                q->p++;
                q->depth--;
                return;
            }
            scoped = q->p[-1] == ':' && !memchr("=!", *f, 2); /* (?i:...) */
        }
        shape_t in;
        read_alt(q, &in);
        if (*q->p != ')') {
            q->ok = false;
            return;
        }
        q->p++;
        q->depth--;
        if (scoped) q->ci = ci;
        if (!zero) *sh = in;
        return;
    }
    if (!c || strchr(")|*+?", c) || (c == '{' && quantifier(q->p))) {
        q->ok = false;
        return;
    }
    q->p++;
    if (c == '^' || c == '$') return;
    if (c == '.')
        memset(t, 0xff, 32);
    else
        add(t, (unsigned char)c);
    one_byte(q, t, sh);
}

/* The quantifier after an atom, if any: its least and greatest count (1, 1 without one; INF). */
#define INF (1ul << 20)
static void read_quantifier(reader_t *q, unsigned long *lo, unsigned long *hi)
{
    *lo = *hi = 1;
    if (*q->p == '?' || *q->p == '*' || *q->p == '+') {
        *lo = *q->p == '+';
        *hi = *q->p == '?' ? 1 : INF;
        q->p++;
    } else if (*q->p == '{' && quantifier(q->p)) {
        char *e;
        *lo = *hi = strtoul(q->p + 1, &e, 10);
        if (*e == ',') *hi = e[1] == '}' ? INF : strtoul(e + 1, NULL, 10);
        q->p += quantifier(q->p);
    } else {
        return;
    }
    if (*q->p == '?' || *q->p == '+') q->p++; /* lazy, possessive */
}

static unsigned long sat(unsigned long x) { return x > INF ? INF : x; }

/* Appends b to the sequence a (a = a b). */
static void seq_join(shape_t *a, const shape_t *b)
{
    a->lit = WD_MAX(WD_MAX(a->lit, b->lit), a->suf + b->pre);
    a->pre = a->full ? a->pre + b->pre : a->pre;
    a->suf = b->full ? a->suf + b->suf : b->suf;
    a->full = a->full && b->full;
    if (a->nullable) set_or(a->first, b->first);
    uint8_t last[32];
    memcpy(last, b->last, 32);
    if (b->nullable) set_or(last, a->last);
    memcpy(a->last, last, 32);
    set_or(a->bytes, b->bytes);
    a->nullable = a->nullable && b->nullable;
    a->need = sat(a->need + b->need);
    a->lo = sat(a->lo + b->lo);
    a->hi = sat(a->hi + b->hi);
}

/* One quantified atom. */
static void read_piece(reader_t *q, shape_t *sh)
{
    read_atom(q, sh);
    if (!q->ok) return;
    unsigned long lo, hi;
    read_quantifier(q, &lo, &hi);
    if (lo == 0) {
        sh->nullable = true;
        sh->pre = sh->suf = sh->lit = 0;
    }
    if (lo != 1 || hi != 1) sh->full = sh->full && sh->hi == 0; /* a repeated literal: one copy is certain */
    sh->lo = sat(sh->lo * lo);
    sh->need = sat(sh->need * lo);
    sh->hi = sh->hi && hi ? sat(sh->hi * hi) : 0;
}

static void read_seq(reader_t *q, shape_t *sh)
{
    memset(sh, 0, sizeof *sh);
    sh->nullable = sh->full = true;
    while (q->ok && *q->p && *q->p != '|' && *q->p != ')') {
        shape_t a;
        read_piece(q, &a);
        seq_join(sh, &a);
    }
}

static void read_alt(reader_t *q, shape_t *sh)
{
    read_seq(q, sh);
    while (q->ok && *q->p == '|') {
        q->p++;
        shape_t b;
        read_seq(q, &b);
        set_or(sh->first, b.first);
        set_or(sh->last, b.last);
        set_or(sh->bytes, b.bytes);
        sh->nullable = sh->nullable || b.nullable;
        sh->need = WD_MIN(sh->need, b.need);
        sh->lo = WD_MIN(sh->lo, b.lo);
        sh->hi = WD_MAX(sh->hi, b.hi);
        sh->full = sh->full && b.full;
        sh->pre = WD_MIN(sh->pre, b.pre);
        sh->suf = WD_MIN(sh->suf, b.suf);
        sh->lit = WD_MIN(sh->lit, b.lit);
    }
}

unsigned long wd_pattern_count(const char *pat, bool caseless, const uint8_t set[32])
{
    if (!pat) return 0;
    reader_t q = {.p = pat, .set = set, .ci = caseless, .ok = true};
    shape_t sh;
    read_alt(&q, &sh);
    return q.ok && !*q.p ? sh.need : 0;
}

bool wd_pattern_first(const char *pat, bool caseless, uint8_t first[32])
{
    reader_t q = {.p = pat, .ci = caseless, .ok = pat != NULL};
    shape_t sh;
    if (q.ok) read_alt(&q, &sh);
    if (!q.ok || *q.p || sh.nullable) {
        memset(first, 0xff, 32);
        return false;
    }
    memcpy(first, sh.first, 32);
    return true;
}

#define MAX_PIECES 64

/* The pieces of a top-level sequence (n = 0: not one, or not read). */
static size_t read_pieces(const char *pat, bool caseless, shape_t *pc)
{
    reader_t q = {.p = pat, .ci = caseless, .ok = pat != NULL};
    size_t n = 0;
    while (q.ok && *q.p && *q.p != '|' && *q.p != ')' && n < MAX_PIECES)
        read_piece(&q, &pc[n++]);
    return q.ok && !*q.p ? n : 0;
}

/* The number of bytes in a set, and the last of them. */
static unsigned count(const uint8_t b[32], unsigned *last)
{
    for (unsigned c = 256; c-- > 0;)
        if (wd_byte_in(b, (unsigned char)c)) {
            *last = c;
            break;
        }
    return wd_byte_count(b);
}

size_t wd_pattern_literal(const char *pat, bool caseless)
{
    reader_t q = {.p = pat, .ci = caseless, .ok = pat != NULL};
    shape_t sh;
    if (q.ok) read_alt(&q, &sh);
    return q.ok && !*q.p ? sh.lit : 0;
}

bool wd_pattern_pivot(const char *pat, bool caseless, unsigned char *pivot, uint8_t before[32],
                      uint8_t after[32], bool *once)
{
    shape_t pc[MAX_PIECES];
    size_t n = read_pieces(pat, caseless, pc); /* 0: an alternation at the top, or too long */
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        unsigned c = 0;
        if (pc[i].lo != 1 || pc[i].hi != 1 || count(pc[i].bytes, &c) != 1) continue; /* one byte, always */
        bool alone = true; /* no other piece can consume it: a match holds it exactly once */
        for (size_t j = 0; j < n && alone; j++)
            alone = j == i || !wd_byte_in(pc[j].bytes, (unsigned char)c);
        if (found && !alone) continue; /* a byte held once is preferred */
        shape_t pre = {.nullable = true}, post = {.nullable = true};
        for (size_t j = 0; j < i; j++)
            seq_join(&pre, &pc[j]);
        for (size_t j = i + 1; j < n; j++)
            seq_join(&post, &pc[j]);
        if (pre.nullable || post.nullable) continue;
        *pivot = (unsigned char)c;
        memcpy(before, pre.last, 32);
        memcpy(after, post.first, 32);
        *once = alone;
        found = true;
        if (alone) return true;
    }
    return found;
}

/* guard/pattern: the bytes a pattern's matches can contain. See pattern.h. */
#include "guard/pattern.h"

#include "core/core.h"

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

/* guard/prefix: see prefix.h. The pattern is parsed into a small tree (atoms, assertions,
 * concatenations, alternations, repeats), then written out twice over: full(N), the language of N
 * with assertions dropped, and pre(N), its non-empty prefixes:
 *
 *   pre(x) = x                 for an atom (one byte: literal, class, ., \d ...)
 *   pre(A B) = pre(A) | A pre(B)   written nested: abc -> a(?:b(?:c)?)?
 *   pre(A|B) = pre(A) | pre(B)
 *   pre(A{m,n}) = A{0,n-1} pre(A)  (x{1,n} for an atom; unbounded: A* pre(A))
 *   pre(assertion) = nothing
 *
 * A concatenation is written iteratively, so a long literal does not recurse once per byte; only
 * group nesting recurses, and it is bounded by WD_PREFIX_MAX_DEPTH. */
#include "guard/prefix.h"

#include <stdlib.h>

#define WD_PREFIX_MAX_DEPTH 64       /* group nesting; bounds recursion and the output's growth */
#define WD_PREFIX_MAX_PAT (1u << 20) /* node indexes are 32-bit; rule patterns are at most 8 KiB */
#define WD_PREFIX_MAX_REPEAT 65535u  /* PCRE2's limit on a repeat count */

#define NIL UINT32_MAX
#define INF UINT32_MAX

/* Inline flags that change what an atom matches. x changes only how the pattern is read, so it is
 * applied while parsing and never written; m changes only ^ and $, which P drops.
 *
 * Each of i and s is in one of three states at every atom: set by (?i), cleared by (?-i), or never
 * named, which means whatever the caller's compile flags say (HS_FLAG_CASELESS). P writes (?i: and
 * (?-i: only around atoms that were set or cleared in R, so a "never named" atom keeps following
 * the caller's flags. A flag state is a byte: the set bits (F_I, F_S), and the cleared bits
 * shifted by 4. */
#define F_I 1u
#define F_S 2u
#define F_X 4u
#define F_LANG (F_I | F_S)
#define F_OFF(f) ((uint8_t)((f) << 4))

enum { N_BYTE, N_TEXT, N_ASSERT, N_CAT, N_ALT, N_REP };

typedef struct {
    uint8_t kind;
    uint8_t flags;        /* atoms: the flag state in effect */
    uint8_t care;         /* atoms: the flags that can change what the atom matches */
    uint8_t on, off, def; /* over the caring atoms of the subtree: flags some has set / cleared / unnamed */
    uint8_t son, soff, sdef; /* the same over this node and the siblings after it (levels of pre(A B)) */
    bool nullable;           /* can match the empty string */
    bool solid;              /* can match a non-empty string (else pre(N) is empty and full(N) is "") */
    uint32_t child, last, next, prev;
    uint32_t a, b; /* N_BYTE: a = the byte; N_TEXT: offset, length in the pattern; N_REP: min, max */
} node_t;

typedef struct {
    const char *p;
    size_t len, i;
    node_t *n;
    uint32_t nn, cap;
    uint8_t flags;
    unsigned depth;
    char *err;
    size_t errlen;
    int rc;
} parser_t;

typedef struct {
    const char *pat;
    const node_t *n;
    char *out;
    size_t cap, len;
    bool overflow;
    uint8_t *closes; /* stack of closing strings owed by the nested levels of pre(A B) */
    size_t nclose;
} emitter_t;

enum { CLOSE_PAREN, CLOSE_OPT, CLOSE_ALT };

/* ---- parsing ---------------------------------------------------------------------------------- */

static int fail(parser_t *ps, size_t at, const char *what)
{
    if (ps->rc == WD_OK) ps->rc = wd_errf(ps->err, ps->errlen, WD_EINVAL, "at offset %zu: %s", at, what);
    return ps->rc;
}

static uint32_t node_new(parser_t *ps, int kind)
{
    if (ps->nn >= ps->cap) { /* cannot happen: cap is derived from the pattern length */
        fail(ps, ps->i, "pattern too complex");
        return NIL;
    }
    node_t *n = &ps->n[ps->nn];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->flags = ps->flags & (uint8_t)(F_LANG | F_OFF(F_LANG));
    n->child = n->last = n->next = n->prev = NIL;
    return ps->nn++;
}

static void append(parser_t *ps, uint32_t parent, uint32_t c)
{
    node_t *p = &ps->n[parent];
    ps->n[c].prev = p->last;
    if (p->last == NIL)
        p->child = c;
    else
        ps->n[p->last].next = c;
    p->last = c;
}

static uint32_t atom_byte(parser_t *ps, unsigned char c)
{
    uint32_t k = node_new(ps, N_BYTE);
    if (k == NIL) return NIL;
    ps->n[k].a = c;
    /* caseless matching is ASCII-only without UTF */
    ps->n[k].care = ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ? F_I : 0;
    return k;
}

static uint32_t atom_text(parser_t *ps, size_t off, size_t len, uint8_t care)
{
    uint32_t k = node_new(ps, N_TEXT);
    if (k == NIL) return NIL;
    ps->n[k].a = (uint32_t)off;
    ps->n[k].b = (uint32_t)len;
    ps->n[k].care = care;
    return k;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_alnum(char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* In extended mode (?x) whitespace and # comments outside classes are not part of the pattern. */
static void skip_ext(parser_t *ps)
{
    if (!(ps->flags & F_X)) return;
    while (ps->i < ps->len) {
        char c = ps->p[ps->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            ps->i++;
        } else if (c == '#') {
            while (ps->i < ps->len && ps->p[ps->i] != '\n')
                ps->i++;
        } else {
            break;
        }
    }
}

/* Reads {n}, {n,} or {n,m} at i. Returns 1 (and the bounds), 0 when the brace is a literal, or -1
 * for braces that PCRE2 versions read differently ({,m} is a repeat since 10.43, a literal before). */
static int brace_quant(const parser_t *ps, size_t i, uint32_t *min, uint32_t *max, size_t *end)
{
    const char *p = ps->p;
    size_t j = i + 1;
    if (j < ps->len && (p[j] == ',' || p[j] == ' ')) return -1;
    uint64_t lo = 0, hi = 0;
    size_t d = j;
    while (j < ps->len && is_digit(p[j]) && lo <= WD_PREFIX_MAX_REPEAT)
        lo = lo * 10 + (uint64_t)(p[j++] - '0');
    if (j == d) return 0;
    if (j < ps->len && p[j] == '}') {
        hi = lo;
    } else if (j < ps->len && p[j] == ',') {
        j++;
        d = j;
        while (j < ps->len && is_digit(p[j]) && hi <= WD_PREFIX_MAX_REPEAT)
            hi = hi * 10 + (uint64_t)(p[j++] - '0');
        if (j == d) hi = INF;
        if (j >= ps->len || p[j] != '}') return (j < ps->len && p[j] == ' ') ? -1 : 0;
    } else {
        return (j < ps->len && p[j] == ' ') ? -1 : 0;
    }
    if (lo > WD_PREFIX_MAX_REPEAT || (hi != INF && hi > WD_PREFIX_MAX_REPEAT)) return -1;
    *min = (uint32_t)lo;
    *max = (uint32_t)hi;
    *end = j + 1;
    return 1;
}

/* A class [...] is kept verbatim: both engines read it as one byte set, and P applies the same
 * flags to it. Only its end needs finding: ] first is literal, escapes and [:name:] hide a ]. */
static uint32_t parse_class(parser_t *ps)
{
    const char *p = ps->p;
    size_t start = ps->i, j = ps->i + 1;
    if (j < ps->len && p[j] == '^') j++;
    if (j < ps->len && p[j] == ']') j++;
    for (;;) {
        if (j >= ps->len) {
            fail(ps, start, "missing ] at the end of a character class");
            return NIL;
        }
        char c = p[j];
        if (c == ']') break;
        if (c == '\\') {
            if (j + 1 >= ps->len) continue; /* reported as a missing ] */
            char e = p[j + 1];
            if (e == 'Q' || e == 'E') {
                fail(ps, j, "\\Q...\\E inside a character class is not supported");
                return NIL;
            }
            j += 2;
            if ((e == 'x' || e == 'o' || e == 'p' || e == 'P') && j < ps->len && p[j] == '{') {
                while (j < ps->len && p[j] != '}')
                    j++;
                j++;
            }
            continue;
        }
        if (c == '[' && j + 1 < ps->len && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
            char d = p[j + 1];
            size_t k = j + 2;
            while (k + 1 < ps->len && !(p[k] == d && p[k + 1] == ']') && p[k] != ']')
                k++;
            if (k + 1 < ps->len && p[k] == d && p[k + 1] == ']') {
                j = k + 2;
                continue;
            }
        }
        j++;
    }
    ps->i = j + 1;
    return atom_text(ps, start, ps->i - start, F_I);
}

/* An escape outside a class (\Q is the caller's): a byte, a shorthand class, an assertion, or
 * something refused. *item receives NIL for \E (nothing). */
static int parse_escape(parser_t *ps, uint32_t *item)
{
    const char *p = ps->p;
    size_t at = ps->i;
    *item = NIL;
    if (at + 1 >= ps->len) return fail(ps, at, "pattern ends with a backslash");
    char e = p[at + 1];
    ps->i = at + 2;
    unsigned v = 0;
    switch (e) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 's':
    case 'S':
    case 'h':
    case 'H':
    case 'v':
    case 'V':
        *item = atom_text(ps, at, 2, 0); /* ASCII-only, the same in either case */
        return ps->rc;
    case 'b':
    case 'B':
    case 'A':
    case 'z':
    case 'Z': *item = node_new(ps, N_ASSERT); return ps->rc;
    case 'a': v = 7; break;
    case 'e': v = 27; break;
    case 'f': v = 12; break;
    case 'n': v = 10; break;
    case 'r': v = 13; break;
    case 't': v = 9; break;
    case 'x':
        if (ps->i < ps->len && p[ps->i] == '{') {
            size_t j = ps->i + 1;
            while (j < ps->len && hexval(p[j]) >= 0 && v <= 0xff)
                v = v * 16 + (unsigned)hexval(p[j++]);
            if (j == ps->i + 1 || j >= ps->len || p[j] != '}') return fail(ps, at, "malformed \\x{...}");
            if (v > 0xff)
                return fail(ps, at, "a code point above \\xff needs UTF, which rule patterns do not use");
            ps->i = j + 1;
        } else {
            for (int k = 0; k < 2 && ps->i < ps->len && hexval(p[ps->i]) >= 0; k++)
                v = v * 16 + (unsigned)hexval(p[ps->i++]);
        }
        break;
    case 'o':
        if (ps->i >= ps->len || p[ps->i] != '{') return fail(ps, at, "malformed \\o{...}");
        ps->i++;
        {
            size_t d = ps->i;
            while (ps->i < ps->len && p[ps->i] >= '0' && p[ps->i] <= '7' && v <= 0xff)
                v = v * 8 + (unsigned)(p[ps->i++] - '0');
            if (ps->i == d || ps->i >= ps->len || p[ps->i] != '}') return fail(ps, at, "malformed \\o{...}");
            if (v > 0xff)
                return fail(ps, at, "a code point above \\xff needs UTF, which rule patterns do not use");
            ps->i++;
        }
        break;
    case '0':
        for (int k = 0; k < 2 && ps->i < ps->len && p[ps->i] >= '0' && p[ps->i] <= '7'; k++)
            v = v * 8 + (unsigned)(p[ps->i++] - '0');
        break;
    case 'c':
        if (ps->i >= ps->len || (unsigned char)p[ps->i] < 0x20 || (unsigned char)p[ps->i] > 0x7e)
            return fail(ps, at, "\\c must be followed by a printable ASCII character");
        v = (unsigned char)p[ps->i];
        if (v >= 'a' && v <= 'z') v -= 32; /* PCRE2: upper-cased, then bit 6 flipped */
        v ^= 0x40u;
        ps->i++;
        break;
    case 'E': return ps->rc;
    case 'K': return fail(ps, at, "\\K is not supported");
    case 'G': return fail(ps, at, "\\G is not supported");
    case 'g':
    case 'k': return fail(ps, at, "back-references are not supported");
    case 'p':
    case 'P': return fail(ps, at, "Unicode properties (\\p, \\P) are not supported without UTF");
    case 'R':
    case 'X':
    case 'C':
    case 'N': return fail(ps, at, "\\R, \\X, \\C and \\N are not supported");
    default:
        if (is_digit(e)) return fail(ps, at, "back-references are not supported");
        if (is_alnum(e) || (unsigned char)e >= 0x80) return fail(ps, at, "unknown escape");
        v = (unsigned char)e; /* an escaped punctuation character is itself */
        break;
    }
    *item = atom_byte(ps, (unsigned char)v);
    return ps->rc;
}

static uint32_t parse_alt(parser_t *ps);

/* Parses (?flags) / (?flags:...) letters at i; returns the new flag set or -1. */
static int parse_flags(parser_t *ps, uint8_t cur)
{
    bool neg = false;
    uint8_t fl = cur;
    while (ps->i < ps->len && ps->p[ps->i] != ')' && ps->p[ps->i] != ':') {
        uint8_t f;
        switch (ps->p[ps->i]) {
        case 'i': f = F_I; break;
        case 's': f = F_S; break;
        case 'x': f = F_X; break;
        case 'm': f = 0; break; /* only ^ and $ depend on it, and P drops them */
        case '-':
            if (neg) return -1;
            neg = true;
            ps->i++;
            continue;
        default: return -1;
        }
        fl = neg ? (uint8_t)((fl & ~f) | F_OFF(f & F_LANG)) : (uint8_t)((fl | f) & ~F_OFF(f & F_LANG));
        ps->i++;
    }
    if (ps->i >= ps->len) return -1;
    return fl;
}

/* A group at '(': a node, or NIL for (?flags) and (?#...), which match nothing and change state. */
static uint32_t parse_group(parser_t *ps)
{
    const char *p = ps->p;
    size_t at = ps->i;
    uint8_t saved = ps->flags, inner = ps->flags;
    ps->i++;
    if (ps->i < ps->len && p[ps->i] == '*') {
        fail(ps, at, "backtracking verbs (*...) are not supported");
        return NIL;
    }
    if (ps->i < ps->len && p[ps->i] == '?') {
        ps->i++;
        char c = ps->i < ps->len ? p[ps->i] : '\0';
        char d = ps->i + 1 < ps->len ? p[ps->i + 1] : '\0';
        if (c == ':') {
            ps->i++;
        } else if (c == '#') {
            while (ps->i < ps->len && p[ps->i] != ')')
                ps->i++;
            if (ps->i >= ps->len) fail(ps, at, "missing ) after a comment");
            ps->i++;
            return NIL;
        } else if (c == '=' || c == '!' || (c == '<' && (d == '=' || d == '!'))) {
            fail(ps, at, "lookahead and lookbehind are not supported (only \\b)");
            return NIL;
        } else if (c == '>') {
            fail(ps, at, "atomic groups are not supported");
            return NIL;
        } else if (c == '|') {
            fail(ps, at, "branch reset groups (?|...) are not supported");
            return NIL;
        } else if (c == '(') {
            fail(ps, at, "conditional groups are not supported");
            return NIL;
        } else if (c == 'P' && (d == '=' || d == '>')) {
            fail(ps, at, "back-references and recursion are not supported");
            return NIL;
        } else if (c == '<' || c == '\'' || (c == 'P' && d == '<')) {
            char close = c == '\'' ? '\'' : '>';
            ps->i += c == 'P' ? 2 : 1;
            while (ps->i < ps->len && (is_alnum(p[ps->i]) || p[ps->i] == '_'))
                ps->i++;
            if (ps->i >= ps->len || p[ps->i] != close) {
                fail(ps, at, "malformed group name");
                return NIL;
            }
            ps->i++;
        } else if (c == 'i' || c == 'm' || c == 's' || c == 'x' || c == '-') {
            int fl = parse_flags(ps, ps->flags);
            if (fl < 0) {
                fail(ps, at, "unsupported inline flags (allowed: i m s x)");
                return NIL;
            }
            if (p[ps->i] == ')') { /* applies to the rest of the enclosing group */
                ps->i++;
                ps->flags = (uint8_t)fl;
                return NIL;
            }
            ps->i++; /* ':' */
            inner = (uint8_t)fl;
        } else if (c == 'R' || c == '&' || c == '+' || is_digit(c) || (c == '-' && is_digit(d))) {
            fail(ps, at, "recursion is not supported");
            return NIL;
        } else if (c == 'C') {
            fail(ps, at, "callouts are not supported");
            return NIL;
        } else {
            fail(ps, at, "unsupported group syntax (?... (inline flags allowed: i m s x)");
            return NIL;
        }
    }
    if (++ps->depth > WD_PREFIX_MAX_DEPTH) {
        fail(ps, at, "groups nested too deeply");
        return NIL;
    }
    ps->flags = inner;
    uint32_t k = parse_alt(ps);
    ps->depth--;
    ps->flags = saved;
    if (k == NIL) return NIL;
    if (ps->i >= ps->len || p[ps->i] != ')') {
        fail(ps, at, "missing ) for this group");
        return NIL;
    }
    ps->i++;
    return k;
}

static uint32_t parse_cat(parser_t *ps)
{
    uint32_t cat = node_new(ps, N_CAT);
    if (cat == NIL) return NIL;
    for (;;) {
        skip_ext(ps);
        if (ps->i >= ps->len) break;
        const char *p = ps->p;
        char c = p[ps->i];
        if (c == '|' || c == ')') break;
        size_t at = ps->i;
        uint32_t item = NIL, mn, mx;
        size_t end;
        switch (c) {
        case '(': item = parse_group(ps); break;
        case '[': item = parse_class(ps); break;
        case '.':
            ps->i++;
            item = atom_text(ps, at, 1, F_S);
            break;
        case '^':
        case '$':
            ps->i++;
            item = node_new(ps, N_ASSERT);
            break;
        case '*':
        case '+':
        case '?': fail(ps, at, "quantifier does not follow a repeatable item"); return NIL;
        case '\\':
            if (at + 1 < ps->len && p[at + 1] == 'Q') {
                /* \Q...\E: each byte a literal; a quantifier after it applies to the last one */
                ps->i += 2;
                while (ps->i < ps->len && !(p[ps->i] == '\\' && ps->i + 1 < ps->len && p[ps->i + 1] == 'E')) {
                    if (item != NIL) append(ps, cat, item);
                    item = atom_byte(ps, (unsigned char)p[ps->i++]);
                    if (item == NIL) return NIL;
                }
                if (ps->i < ps->len) ps->i += 2;
                break;
            }
            parse_escape(ps, &item);
            break;
        case '{': {
            int q = brace_quant(ps, at, &mn, &mx, &end);
            if (q != 0) {
                fail(ps, at,
                     q > 0 ? "quantifier does not follow a repeatable item"
                           : "ambiguous '{': write \\{ for a literal brace");
                return NIL;
            }
            ps->i++;
            item = atom_byte(ps, '{');
            break;
        }
        default:
            ps->i++;
            item = atom_byte(ps, (unsigned char)c);
            break;
        }
        if (ps->rc != WD_OK) return NIL;
        /* quantifiers (one; lazy ? allowed, possessive + refused) */
        skip_ext(ps);
        if (ps->i < ps->len) {
            size_t qat = ps->i;
            int q = 0;
            c = p[ps->i];
            if (c == '?' || c == '*' || c == '+') {
                mn = c == '+' ? 1 : 0;
                mx = c == '?' ? 1 : INF;
                end = ps->i + 1;
                q = 1;
            } else if (c == '{') {
                q = brace_quant(ps, ps->i, &mn, &mx, &end);
                if (q < 0) {
                    fail(ps, qat,
                         "ambiguous or out-of-range {...} (bounds are at most 65535; write \\{ for a "
                         "literal brace)");
                    return NIL;
                }
            }
            if (q > 0) {
                if (item == NIL) {
                    fail(ps, qat, "quantifier does not follow a repeatable item");
                    return NIL;
                }
                if (mx != INF && mx < mn) {
                    fail(ps, qat, "numbers out of order in {} quantifier");
                    return NIL;
                }
                ps->i = end;
                if (ps->i < ps->len && p[ps->i] == '+') {
                    fail(ps, qat, "possessive quantifiers are not supported");
                    return NIL;
                }
                if (ps->i < ps->len && p[ps->i] == '?') ps->i++; /* lazy: the same language */
                uint32_t rep = node_new(ps, N_REP);
                if (rep == NIL) return NIL;
                ps->n[rep].a = mn;
                ps->n[rep].b = mx;
                append(ps, rep, item);
                item = rep;
                skip_ext(ps);
                if (ps->i < ps->len) {
                    c = p[ps->i];
                    uint32_t m2, x2;
                    size_t e2;
                    if (c == '?' || c == '*' || c == '+' ||
                        (c == '{' && brace_quant(ps, ps->i, &m2, &x2, &e2) != 0)) {
                        fail(ps, ps->i, "a quantifier after a quantifier is not supported: use a group");
                        return NIL;
                    }
                }
            }
        }
        if (item != NIL) append(ps, cat, item);
    }
    return cat;
}

static uint32_t parse_alt(parser_t *ps)
{
    uint32_t alt = node_new(ps, N_ALT);
    if (alt == NIL) return NIL;
    uint8_t start = ps->flags;
    for (;;) {
        uint32_t cat = parse_cat(ps);
        if (cat == NIL) return NIL;
        /* a branch of one item is that item, so (?:a)b is written like ab */
        if (ps->n[cat].child != NIL && ps->n[cat].child == ps->n[cat].last) cat = ps->n[cat].child;
        append(ps, alt, cat);
        if (ps->i >= ps->len || ps->p[ps->i] != '|') break;
        ps->i++;
        /* PCRE2 carries (?i) set in one branch into the next ones; widen the state to the wider of
         * the group's and the branch's so P covers R whichever way an engine reads it: set is wider
         * than unnamed (caseless and dotall only add strings), unnamed wider than cleared */
        uint8_t on = (ps->flags | start) & F_LANG;
        uint8_t off = (uint8_t)(ps->flags & start & F_OFF(F_LANG) & ~F_OFF(on));
        ps->flags = (uint8_t)((ps->flags & F_X) | on | off);
    }
    return ps->n[alt].child == ps->n[alt].last ? ps->n[alt].child : alt;
}

/* ---- analysis --------------------------------------------------------------------------------- */

static void analyse(node_t *n, uint32_t k)
{
    node_t *x = &n[k];
    switch (x->kind) {
    case N_BYTE:
    case N_TEXT:
        x->nullable = false;
        x->solid = true;
        x->on = x->flags & x->care;
        x->off = (uint8_t)((x->flags >> 4) & x->care);
        x->def = (uint8_t)(x->care & ~x->on & ~x->off);
        break;
    case N_ASSERT:
        x->nullable = true;
        x->solid = false;
        break;
    case N_REP:
        analyse(n, x->child);
        x->nullable = x->a == 0 || n[x->child].nullable;
        x->solid = n[x->child].solid && x->b > 0;
        x->on = n[x->child].on;
        x->off = n[x->child].off;
        x->def = n[x->child].def;
        break;
    case N_CAT:
    case N_ALT:
        x->nullable = x->kind == N_CAT;
        x->solid = false;
        for (uint32_t c = x->child; c != NIL; c = n[c].next) {
            analyse(n, c);
            if (x->kind == N_CAT)
                x->nullable = x->nullable && n[c].nullable;
            else
                x->nullable = x->nullable || n[c].nullable;
            x->solid = x->solid || n[c].solid;
            x->on |= n[c].on;
            x->off |= n[c].off;
            x->def |= n[c].def;
        }
        uint8_t son = 0, soff = 0, sdef = 0;
        for (uint32_t c = x->last; c != NIL; c = n[c].prev) {
            son |= n[c].on;
            soff |= n[c].off;
            sdef |= n[c].def;
            n[c].son = son;
            n[c].soff = soff;
            n[c].sdef = sdef;
        }
        break;
    }
}

/* ---- writing ---------------------------------------------------------------------------------- */

static void put(emitter_t *e, const char *s, size_t n)
{
    if (e->overflow || n >= e->cap - e->len) {
        e->overflow = true;
        return;
    }
    memcpy(e->out + e->len, s, n);
    e->len += n;
}

static void puts_(emitter_t *e, const char *s)
{
    put(e, s, strlen(s));
}

static void put_uint(emitter_t *e, uint32_t v)
{
    char b[16];
    size_t n = 0;
    do {
        b[sizeof b - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(e, b + sizeof b - n, n);
}

static void put_quant(emitter_t *e, uint32_t mn, uint32_t mx)
{
    if (mn == 1 && mx == 1) return;
    if (mn == 0 && mx == 1) return puts_(e, "?");
    if (mn == 0 && mx == INF) return puts_(e, "*");
    if (mn == 1 && mx == INF) return puts_(e, "+");
    puts_(e, "{");
    put_uint(e, mn);
    if (mx != mn) {
        puts_(e, ",");
        if (mx != INF) put_uint(e, mx);
    }
    puts_(e, "}");
}

static void put_atom(emitter_t *e, const node_t *x)
{
    if (x->kind == N_TEXT) return put(e, e->pat + x->a, x->b);
    /* printable ASCII as itself (metacharacters escaped); other bytes as \xHH, which cannot run
     * into a following digit as \x4 or \0 written verbatim could */
    unsigned char c = (unsigned char)x->a;
    if (c > 0x20 && c < 0x7f) {
        if (strchr("\\^$.|?*+()[]{}#", c)) put(e, "\\", 1);
        char ch = (char)c;
        return put(e, &ch, 1);
    }
    static const char hex[] = "0123456789abcdef";
    char b[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
    put(e, b, 4);
}

static bool is_atom(const node_t *x)
{
    return x->kind == N_BYTE || x->kind == N_TEXT;
}

/* pre(N) = full(N) as languages, and N never empty: an atom, or x{1,n} / x+ of one */
static bool is_simple(const node_t *n, const node_t *x)
{
    return is_atom(x) || (x->kind == N_REP && x->a == 1 && is_atom(&n[x->child]));
}

/* The flag changes a subtree needs in context ctx: only flags on which all its caring atoms agree
 * change here, the rest is left to the atoms below. A subtree of unnamed atoms never needs one:
 * the levels above wrap only subtrees that agree, so it is never inside a set or cleared group. */
static void flag_delta(uint8_t on, uint8_t off, uint8_t def, uint8_t ctx, uint8_t *set, uint8_t *clr)
{
    *set = (uint8_t)(on & ~off & ~def & ~ctx & F_LANG);
    *clr = (uint8_t)(off & ~on & ~def & ~(ctx >> 4) & F_LANG);
}

/* The subtree may be written in ctx as it is: every caring atom is in ctx's state. */
static bool fits(const node_t *x, uint8_t ctx)
{
    uint8_t con = ctx & F_LANG, coff = (ctx >> 4) & F_LANG;
    return !(x->on & ~con) && !(x->off & ~coff) && !(x->def & (con | coff));
}

/* Opens (?flags: when the subtree needs other flags than ctx; returns whether it did. */
static bool flag_open(emitter_t *e, uint8_t on, uint8_t off, uint8_t def, uint8_t *ctx)
{
    uint8_t set, clr;
    flag_delta(on, off, def, *ctx, &set, &clr);
    if (!set && !clr) return false;
    puts_(e, "(?");
    if (set & F_I) puts_(e, "i");
    if (set & F_S) puts_(e, "s");
    if (clr) puts_(e, "-");
    if (clr & F_I) puts_(e, "i");
    if (clr & F_S) puts_(e, "s");
    puts_(e, ":");
    *ctx = (uint8_t)((*ctx | set | F_OFF(clr)) & ~clr & ~F_OFF(set));
    return true;
}

static void push_close(emitter_t *e, uint8_t c)
{
    e->closes[e->nclose++] = c;
}

static void pop_closes(emitter_t *e, size_t mark)
{
    while (e->nclose > mark) {
        switch (e->closes[--e->nclose]) {
        case CLOSE_PAREN: puts_(e, ")"); break;
        case CLOSE_OPT: puts_(e, ")?"); break;
        case CLOSE_ALT: puts_(e, "))"); break;
        }
    }
}

/* full(N): a pattern for L(N) with assertions dropped (a superset of L(N)); "" when N is
 * zero-width. Never has a top-level |, so it can be concatenated. */
static void emit_full(emitter_t *e, uint32_t k, uint8_t ctx)
{
    const node_t *n = e->n, *x = &n[k];
    if (!x->solid) return;
    bool wrap = flag_open(e, x->on, x->off, x->def, &ctx);
    switch (x->kind) {
    case N_BYTE:
    case N_TEXT: put_atom(e, x); break;
    case N_ASSERT: break;
    case N_CAT:
        for (uint32_t c = x->child; c != NIL;) {
            uint8_t c2 = ctx;
            if (!flag_open(e, n[c].on, n[c].off, n[c].def, &c2)) {
                emit_full(e, c, ctx);
                c = n[c].next;
                continue;
            }
            /* one (?flags: for the run of children that agree with it */
            do {
                emit_full(e, c, c2);
                c = n[c].next;
            } while (c != NIL && fits(&n[c], c2));
            puts_(e, ")");
        }
        break;
    case N_ALT: {
        unsigned solid = 0;
        bool eps = false;
        for (uint32_t c = x->child; c != NIL; c = n[c].next) {
            if (n[c].solid)
                solid++;
            else
                eps = true;
        }
        if (solid == 1 && !eps) {
            for (uint32_t c = x->child; c != NIL; c = n[c].next)
                if (n[c].solid) emit_full(e, c, ctx);
            break;
        }
        puts_(e, "(?:");
        bool first = true;
        for (uint32_t c = x->child; c != NIL; c = n[c].next) {
            if (!n[c].solid) continue;
            if (!first) puts_(e, "|");
            first = false;
            emit_full(e, c, ctx);
        }
        puts_(e, eps ? ")?" : ")");
        break;
    }
    case N_REP:
        if (is_atom(&n[x->child])) {
            emit_full(e, x->child, ctx);
        } else {
            puts_(e, "(?:");
            emit_full(e, x->child, ctx);
            puts_(e, ")");
        }
        put_quant(e, x->a, x->b);
        break;
    }
    if (wrap) puts_(e, ")");
}

/* pre(N) for a solid N: every non-empty prefix of L(N); never matches "" and has no top-level |. */
static void emit_pre(emitter_t *e, uint32_t k, uint8_t ctx)
{
    const node_t *n = e->n, *x = &n[k];
    bool wrap = flag_open(e, x->on, x->off, x->def, &ctx);
    switch (x->kind) {
    case N_BYTE:
    case N_TEXT: put_atom(e, x); break;
    case N_ASSERT: break; /* not solid: never reached */
    case N_ALT: {
        unsigned solid = 0;
        for (uint32_t c = x->child; c != NIL; c = n[c].next)
            solid += n[c].solid;
        if (solid > 1) puts_(e, "(?:");
        bool first = true;
        for (uint32_t c = x->child; c != NIL; c = n[c].next) {
            if (!n[c].solid) continue;
            if (!first) puts_(e, "|");
            first = false;
            emit_pre(e, c, ctx);
        }
        if (solid > 1) puts_(e, ")");
        break;
    }
    case N_REP: {
        const node_t *c = &n[x->child];
        if (is_atom(c)) { /* x{0,n-1}x = x{1,n} */
            emit_full(e, x->child, ctx);
            put_quant(e, 1, x->b);
            break;
        }
        uint32_t more = x->b == INF ? INF : x->b - 1;
        if (more > 0) {
            puts_(e, "(?:");
            emit_full(e, x->child, ctx);
            puts_(e, ")");
            put_quant(e, 0, more);
        }
        emit_pre(e, x->child, ctx);
        break;
    }
    case N_CAT: {
        /* S_i = pre(N_i) | N_i S_i+1 over the solid children; zero-width ones contribute nothing.
         * A level whose pre(N) is N itself (an atom, x+) is N(?:S)?, any other (?:pre(N)|N(?:S)). */
        uint32_t last = x->last;
        while (last != NIL && !n[last].solid)
            last = n[last].prev;
        size_t mark = e->nclose;
        for (uint32_t c = x->child; c != NIL; c = n[c].next) {
            if (!n[c].solid) continue;
            if (flag_open(e, n[c].son, n[c].soff, n[c].sdef, &ctx)) push_close(e, CLOSE_PAREN);
            if (c == last) {
                emit_pre(e, c, ctx);
                break;
            }
            if (is_simple(n, &n[c])) {
                emit_full(e, c, ctx);
                puts_(e, "(?:");
                push_close(e, CLOSE_OPT);
            } else {
                puts_(e, "(?:");
                emit_pre(e, c, ctx);
                puts_(e, "|");
                emit_full(e, c, ctx);
                puts_(e, "(?:");
                push_close(e, CLOSE_ALT);
            }
        }
        pop_closes(e, mark);
        break;
    }
    }
    if (wrap) puts_(e, ")");
}

/* ---- entry point ------------------------------------------------------------------------------ */

int wd_regex_prefix(const char *pat, size_t len, char *out, size_t cap, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out || !cap) return wd_errf(err, errlen, WD_E2BIG, "no room for the prefix pattern");
    out[0] = '\0';
    if (!pat && len) return wd_errf(err, errlen, WD_EINVAL, "no pattern");
    if (len > WD_PREFIX_MAX_PAT)
        return wd_errf(err, errlen, WD_E2BIG, "pattern longer than %u bytes", WD_PREFIX_MAX_PAT);

    /* every node consumes at least one pattern byte, except a group's ALT and CAT (two for "(") and
     * the top level's two */
    parser_t ps = {.p = pat, .len = len, .err = err, .errlen = errlen, .rc = WD_OK};
    ps.cap = (uint32_t)(2 * len + 4);
    ps.n = malloc((size_t)ps.cap * sizeof *ps.n);
    if (!ps.n) return wd_errf(err, errlen, WD_ENOMEM, "out of memory");
    uint32_t root = parse_alt(&ps);
    if (ps.rc == WD_OK && ps.i < len) fail(&ps, ps.i, "unmatched )");
    int rc = ps.rc;
    if (rc == WD_OK) {
        analyse(ps.n, root);
        if (!ps.n[root].solid)
            rc = wd_errf(err, errlen, WD_EINVAL, "the pattern matches no non-empty string");
    }
    if (rc == WD_OK) {
        emitter_t e = {.pat = pat, .n = ps.n, .out = out, .cap = cap};
        /* at most two closes per node are owed at once (a level and its flag group) */
        e.closes = malloc(2 * (size_t)ps.nn + 1);
        if (!e.closes) {
            rc = wd_errf(err, errlen, WD_ENOMEM, "out of memory");
        } else {
            emit_pre(&e, root, 0);
            free(e.closes);
            e.closes = NULL;
            if (e.overflow) {
                out[0] = '\0';
                rc = wd_errf(err, errlen, WD_E2BIG, "the prefix pattern needs more than %zu bytes", cap - 1);
            } else {
                out[e.len] = '\0';
            }
        }
    }
    free(ps.n);
    ps.n = NULL;
    return rc;
}

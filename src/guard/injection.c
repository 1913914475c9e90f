/* guard/injection: decoding layers and the per-request score on top of the injection rules.
 * See injection.h for the model; the decoders here are deliberately conservative about what they
 * call a blob (runs long enough to carry an instruction) and about what decoded output is worth a
 * scan (valid UTF-8, mostly printable), because every decoded byte costs budget and a scan. */
#include "guard/injection.h"

#include "guard/fold.h"

#include <stdio.h>
#include <stdlib.h>

#define MIN_B64_RUN 16   /* "ignore all" is 10 bytes -> 16 base64 characters */
#define MIN_HEX_BYTES 8
#define MIN_URL_ESCAPES 2
#define MIN_ROT13_LETTERS 16
#define MIN_TAG_CHARS 4
#define MIN_ID_WORDS 3 /* "ignore_previous_instructions" */
#define MIN_FLIPPED 4  /* upside-down letters ("ǝɹouƃᴉ" has five) */
#define PRINTABLE_MIN 0.85

static const char *const layer_names[WD_INJ__LAYERS] = {"plain", "base64", "hex",       "url",   "rot13",
                                                        "tags",  "folded", "lookalike", "words", "flipped"};

const char *wd_inj_layer_name(wd_inj_layer_t l)
{
    return (unsigned)l < WD_INJ__LAYERS ? layer_names[l] : "?";
}

void wd_inj_result_init(wd_inj_result_t *r)
{
    memset(r, 0, sizeof *r);
}

bool wd_inj_rule(const wd_rule_t *r)
{
    return r && r->cls && strcmp(r->cls, WD_INJ_CLASS) == 0;
}

float wd_inj_score(const wd_inj_result_t *r)
{
    double keep = 1.0;
    for (size_t i = 0; i < r->nhits; i++) keep *= 1.0 - (double)r->hits[i].score;
    double s = 1.0 - keep;
    return (float)(s < 0 ? 0 : s > 1 ? 1 : s);
}

static void add_hit(wd_inj_result_t *r, uint16_t rule, wd_inj_layer_t layer, unsigned depth, float score)
{
    for (size_t i = 0; i < r->nhits; i++)
        if (r->hits[i].rule == rule) {
            if (score > r->hits[i].score) r->hits[i].score = score;
            return;
        }
    if (r->nhits < WD_INJ_MAX_HITS)
        r->hits[r->nhits++] = (wd_inj_hit_t){rule, (uint8_t)layer, (uint8_t)depth, score};
}

/* ---- decoders ----------------------------------------------------------------------------------- */

/* Byte classes for the decoders' pre-checks, one table lookup per byte (the screen runs on every
 * string of every request, so the common case - prose with nothing to decode - must cost a single
 * cheap pass per layer, not a decoder's work). */
enum { C_B64 = 1, C_UPPER = 2, C_LOWER = 4, C_B64X = 8 /* digit, '+', '/' */, C_HEX = 16, C_HEXSEP = 32 };

static const uint8_t cls[256] = {
    ['+'] = C_B64 | C_B64X, ['/'] = C_B64 | C_B64X, ['-'] = C_B64 | C_HEXSEP, ['_'] = C_B64,
    [' '] = C_HEXSEP, [':'] = C_HEXSEP, [','] = C_HEXSEP, ['\\'] = C_HEXSEP, ['x'] = C_B64 | C_LOWER | C_HEXSEP,
    ['X'] = C_B64 | C_UPPER | C_HEXSEP,
#define D(c) [c] = C_B64 | C_B64X | C_HEX
    D('0'), D('1'), D('2'), D('3'), D('4'), D('5'), D('6'), D('7'), D('8'), D('9'),
#undef D
#define U(c) [c] = C_B64 | C_UPPER
#define UH(c) [c] = C_B64 | C_UPPER | C_HEX
    UH('A'), UH('B'), UH('C'), UH('D'), UH('E'), UH('F'), U('G'), U('H'), U('I'), U('J'), U('K'), U('L'), U('M'),
    U('N'), U('O'), U('P'), U('Q'), U('R'), U('S'), U('T'), U('U'), U('V'), U('W'), U('Y'), U('Z'),
#undef U
#undef UH
#define L(c) [c] = C_B64 | C_LOWER
#define LH(c) [c] = C_B64 | C_LOWER | C_HEX
    LH('a'), LH('b'), LH('c'), LH('d'), LH('e'), LH('f'), L('g'), L('h'), L('i'), L('j'), L('k'), L('l'), L('m'),
    L('n'), L('o'), L('p'), L('q'), L('r'), L('s'), L('t'), L('u'), L('v'), L('w'), L('y'), L('z'),
#undef L
#undef LH
};

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Looks for stretches of at least min bytes of class mask. Any such stretch covers one of the
 * positions min-1, 2*min-1, ... (or, after a stretch that ended at e, e+min), so
 * only those are probed and a stretch is walked only when a probe lands in it. Prose, where words are
 * short, costs about one lookup per min bytes plus the words the probes land in. Calls ok(s, e) for
 * each stretch [s, e) of at least min bytes; returns true as soon as ok does. */
static bool find_stretch(const unsigned char *p, size_t len, unsigned mask, size_t min,
                         bool (*ok)(const unsigned char *p, size_t s, size_t e))
{
    for (size_t i = min - 1; i < len;) {
        if (!(cls[p[i]] & mask)) {
            i += min;
            continue;
        }
        size_t s = i, e = i + 1;
        while (s > 0 && (cls[p[s - 1]] & mask)) s--;
        while (e < len && (cls[p[e]] & mask)) e++;
        if (e - s >= min && ok(p, s, e)) return true;
        i = e + min;
    }
    return false;
}

/* The decoder's test for a base64 run worth decoding (see decode_base64). */
static bool b64_run_ok(const unsigned char *p, size_t s, size_t e)
{
    unsigned seen = 0;
    for (size_t k = s; k < e; k++) seen |= cls[p[k]];
    return (seen & C_UPPER) && (seen & C_LOWER) && ((seen & C_B64X) || e - s >= 24);
}

/* A hex blob of MIN_HEX_BYTES bytes is 2 x MIN_HEX_BYTES hex digits with nothing between them but
 * the decoder's separators and prefixes (' ', ':', ',', '-', "\\x", "0x"): a necessary condition. */
static bool hex_run_ok(const unsigned char *p, size_t s, size_t e)
{
    size_t digits = 0;
    for (size_t k = s; k < e; k++) digits += (cls[p[k]] & C_HEX) != 0;
    return digits >= 2 * MIN_HEX_BYTES;
}

static bool b64_candidate(const unsigned char *p, size_t len)
{
    return find_stretch(p, len, C_B64, MIN_B64_RUN, b64_run_ok);
}

static bool hex_candidate(const unsigned char *p, size_t len)
{
    return find_stretch(p, len, C_HEX | C_HEXSEP, 2 * MIN_HEX_BYTES, hex_run_ok);
}

/* The URL decoder needs MIN_URL_ESCAPES "%XX" escapes in one token; at least that many in the text
 * is necessary ("25% of" is not an escape). */
static bool url_candidate(const char *p, size_t len)
{
    size_t esc = 0;
    const char *e = p + len;
    for (const char *q = memchr(p, '%', len); q; q = memchr(q + 1, '%', (size_t)(e - q - 1))) {
        if (e - q >= 3 && (cls[(unsigned char)q[1]] & C_HEX) && (cls[(unsigned char)q[2]] & C_HEX) &&
            ++esc >= MIN_URL_ESCAPES)
            return true;
        if (e - q <= 1) break;
    }
    return false;
}

/* Decoded bytes are worth scanning when they are text: valid UTF-8 with few control characters. */
static bool looks_text(const unsigned char *p, size_t len)
{
    if (!len) return false;
    size_t good = 0, i = 0;
    while (i < len) {
        unsigned char c = p[i];
        size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!n || i + n > len || (n == 2 && c < 0xC2)) return false;
        for (size_t k = 1; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        if (n > 1 || (c >= 0x20 && c < 0x7F) || c == '\n' || c == '\r' || c == '\t') good++;
        i += n;
    }
    size_t chars = 0;
    for (i = 0; i < len; i++) chars += (p[i] & 0xC0) != 0x80;
    return (double)good >= PRINTABLE_MIN * (double)chars;
}

/* Appends a decoded blob (if it is text) followed by '\n'; a blob cut short by the budget is kept
 * up to its last whole character. Returns bytes appended or a negative code. */
static long emit_blob(const unsigned char *p, size_t len, size_t *room, wd_buf_t *out)
{
    if (*room < 2) return 0; /* a byte and the newline */
    if (len + 1 > *room) {
        len = *room - 1;
        while (len && (p[len] & 0xC0) == 0x80) len--; /* whole characters only */
    }
    if (!len || !looks_text(p, len)) return 0;
    int rc = wd_buf_append(out, p, len);
    if (!rc) rc = wd_buf_append(out, "\n", 1);
    if (rc) return rc;
    *room -= len + 1;
    return (long)len + 1;
}

static long decode_base64(const char *p, size_t len, size_t room, wd_buf_t *out)
{
    long total = 0;
    unsigned char *tmp = NULL;
    size_t i = 0;
    while (i < len && room) {
        if (b64val((unsigned char)p[i]) < 0 || (i && b64val((unsigned char)p[i - 1]) >= 0)) {
            i++;
            continue;
        }
        size_t j = i;
        bool upper = false, lower = false, digit = false;
        while (j < len && b64val((unsigned char)p[j]) >= 0) {
            unsigned char c = (unsigned char)p[j];
            upper |= c >= 'A' && c <= 'Z';
            lower |= c >= 'a' && c <= 'z';
            digit |= (c >= '0' && c <= '9') || c == '+' || c == '/';
            j++;
        }
        size_t run = j - i;
        /* plain words are runs too; base64 of text mixes cases and (almost always) digits or '+/' */
        if (run >= MIN_B64_RUN && upper && lower && (digit || run >= 24)) {
            size_t quads = run / 4, nbytes = quads * 3 + ((run % 4) >= 2 ? (run % 4) - 1 : 0);
            unsigned char *t = realloc(tmp, nbytes ? nbytes : 1);
            if (!t) {
                free(tmp);
                return WD_ENOMEM;
            }
            tmp = t;
            size_t o = 0;
            uint32_t acc = 0;
            int bits = 0;
            for (size_t k = i; k < j && o < nbytes; k++) {
                acc = (acc << 6) | (uint32_t)b64val((unsigned char)p[k]);
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    tmp[o++] = (unsigned char)(acc >> bits);
                }
            }
            long n = emit_blob(tmp, o, &room, out);
            if (n < 0) {
                free(tmp);
                return n;
            }
            total += n;
        }
        i = j;
    }
    free(tmp);
    return total;
}

/* Hex: "69676e6f7265...", "\x69\x67...", "0x69 0x67 ...", "69 67 6e ..." (separators: space, ':',
 * ',' or '-'). At least MIN_HEX_BYTES bytes. */
static long decode_hex(const char *p, size_t len, size_t room, wd_buf_t *out)
{
    long total = 0;
    wd_buf_t tmp;
    wd_buf_init(&tmp, 0);
    size_t i = 0;
    while (i < len && room) {
        size_t j = i;
        wd_buf_reset(&tmp);
        /* the run must not start inside a word */
        if (i && wd_is_alnum((unsigned char)p[i - 1])) {
            i++;
            continue;
        }
        for (;;) {
            size_t k = j;
            if (k + 1 < len && p[k] == '\\' && p[k + 1] == 'x') k += 2;
            else if (k + 1 < len && p[k] == '0' && (p[k + 1] == 'x' || p[k + 1] == 'X') && k + 3 < len &&
                     wd_hex_digit((unsigned char)p[k + 2]) >= 0 && wd_hex_digit((unsigned char)p[k + 3]) >= 0)
                k += 2;
            if (k + 1 >= len + 0 || wd_hex_digit((unsigned char)p[k]) < 0 ||
                wd_hex_digit((unsigned char)p[k + 1]) < 0)
                break;
            unsigned char b = (unsigned char)(wd_hex_digit((unsigned char)p[k]) << 4 |
                                              wd_hex_digit((unsigned char)p[k + 1]));
            if (wd_buf_append(&tmp, &b, 1)) {
                wd_buf_free(&tmp);
                return WD_ENOMEM;
            }
            j = k + 2;
            if (j < len && (p[j] == ' ' || p[j] == ':' || p[j] == ',' || p[j] == '-') && j + 1 < len &&
                (wd_hex_digit((unsigned char)p[j + 1]) >= 0 || p[j + 1] == '\\' || p[j + 1] == '0'))
                j++;
        }
        if (tmp.len >= MIN_HEX_BYTES) {
            long n = emit_blob((const unsigned char *)tmp.data, tmp.len, &room, out);
            if (n < 0) {
                wd_buf_free(&tmp);
                return n;
            }
            total += n;
            i = j;
        } else {
            i = j > i ? j : i + 1;
        }
    }
    wd_buf_free(&tmp);
    return total;
}

/* URL-encoding: every whitespace-delimited token with at least MIN_URL_ESCAPES %XX escapes is decoded
 * whole ('+' becomes a space, as in forms). */
static long decode_url(const char *p, size_t len, size_t room, wd_buf_t *out)
{
    long total = 0;
    wd_buf_t tmp;
    wd_buf_init(&tmp, 0);
    size_t i = 0;
    while (i < len && room) {
        while (i < len && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r')) i++;
        size_t j = i, esc = 0;
        while (j < len && p[j] != ' ' && p[j] != '\n' && p[j] != '\t' && p[j] != '\r') {
            if (p[j] == '%' && j + 2 < len && wd_hex_digit((unsigned char)p[j + 1]) >= 0 &&
                wd_hex_digit((unsigned char)p[j + 2]) >= 0)
                esc++;
            j++;
        }
        if (esc >= MIN_URL_ESCAPES) {
            wd_buf_reset(&tmp);
            for (size_t k = i; k < j; k++) {
                unsigned char b = (unsigned char)p[k];
                if (b == '%' && k + 2 < j && wd_hex_digit((unsigned char)p[k + 1]) >= 0 &&
                    wd_hex_digit((unsigned char)p[k + 2]) >= 0) {
                    b = (unsigned char)(wd_hex_digit((unsigned char)p[k + 1]) << 4 |
                                        wd_hex_digit((unsigned char)p[k + 2]));
                    k += 2;
                } else if (b == '+') {
                    b = ' ';
                }
                if (wd_buf_append(&tmp, &b, 1)) {
                    wd_buf_free(&tmp);
                    return WD_ENOMEM;
                }
            }
            long n = emit_blob((const unsigned char *)tmp.data, tmp.len, &room, out);
            if (n < 0) {
                wd_buf_free(&tmp);
                return n;
            }
            total += n;
        }
        i = j;
    }
    wd_buf_free(&tmp);
    return total;
}

static unsigned char rot13(unsigned char c)
{
    if (c >= 'a' && c <= 'z') return (unsigned char)('a' + (c - 'a' + 13) % 26);
    if (c >= 'A' && c <= 'Z') return (unsigned char)('A' + (c - 'A' + 13) % 26);
    return c;
}

/* Common English words: rot13 text has few of them and its rotation many. Checking this first keeps
 * ordinary prose (nearly all input) from costing a second scan. It runs on every word of every
 * screened text, so a word is a key built while it is read, 5 bits a letter ('a' = 1 .. 'z' = 26;
 * words of different lengths cannot collide), and the list is a switch the compiler turns into a
 * few compares. */
#define K1(a) ((uint64_t)((a) & 31))
#define K2(a, b) (K1(a) << 5 | K1(b))
#define K3(a, b, c) (K2(a, b) << 5 | K1(c))
#define K4(a, b, c, d) (K3(a, b, c) << 5 | K1(d))
#define K6(a, b, c, d, e, f) (K4(a, b, c, d) << 10 | K2(e, f))
#define K8(a, b, c, d, e, f, g, h) (K4(a, b, c, d) << 20 | K4(e, f, g, h))
#define K12(a, b, c, d, e, f, g, h, i, j, k, l) (K8(a, b, c, d, e, f, g, h) << 20 | K4(i, j, k, l))
#define MAX_WORD 12 /* "instructions" */

/* A perfect hash of the list into 64 slots (the multiplier was searched for; a collision would be a
 * duplicate initializer, which -Werror=override-init refuses). One load and compare per word: a
 * switch here was a chain of unpredictable branches that cost more than the rest of the screen. */
#define WORD_SLOT(k) ((size_t)(((uint64_t)(k) * 0x03e2eacf14f27607ull) >> 58))
#define W(k) [WORD_SLOT(k)] = (k)
static const uint64_t common_words[64] = {
    W(K1('a')),
    W(K2('t', 'o')), W(K2('o', 'f')), W(K2('i', 's')), W(K2('i', 'n')), W(K2('i', 't')), W(K2('b', 'e')),
    W(K2('o', 'n')), W(K2('m', 'e')),
    W(K3('t', 'h', 'e')), W(K3('a', 'n', 'd')), W(K3('y', 'o', 'u')), W(K3('a', 'l', 'l')), W(K3('f', 'o', 'r')),
    W(K3('a', 'r', 'e')), W(K3('n', 'o', 't')), W(K3('n', 'o', 'w')),
    W(K4('y', 'o', 'u', 'r')), W(K4('t', 'h', 'a', 't')), W(K4('t', 'h', 'i', 's')), W(K4('w', 'i', 't', 'h')),
    W(K4('w', 'h', 'a', 't')), W(K4('t', 'e', 'l', 'l')),
    W(K6('i', 'g', 'n', 'o', 'r', 'e')), W(K6('p', 'r', 'o', 'm', 'p', 't')), W(K6('s', 'y', 's', 't', 'e', 'm')),
    W(K8('p', 'r', 'e', 'v', 'i', 'o', 'u', 's')),
    W(K12('i', 'n', 's', 't', 'r', 'u', 'c', 't', 'i', 'o', 'n', 's')),
};
#undef W

static inline bool common_word(uint64_t key)
{
    return common_words[WORD_SLOT(key)] == key;
}

static bool looks_rot13(const char *p, size_t len)
{
    size_t plain = 0, rot = 0, letters = 0, n = 0;
    uint64_t w = 0, rw = 0;
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && (cls[u[i]] & (C_UPPER | C_LOWER))) {
            unsigned v = u[i] & 31; /* 1..26 for both cases */
            w = w << 5 | v;
            rw = rw << 5 | ((v + 12) % 26 + 1);
            n++;
            continue;
        }
        if (n && n <= MAX_WORD) {
            plain += common_word(w);
            rot += common_word(rw);
        }
        letters += n;
        n = 0;
        w = rw = 0;
    }
    return letters >= MIN_ROT13_LETTERS && rot >= 2 && rot > plain;
}

static long decode_rot13(const char *p, size_t len, size_t room, wd_buf_t *out)
{
    if (!looks_rot13(p, len)) return 0;
    size_t n = WD_MIN(len, room);
    int rc = wd_buf_reserve(out, n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) out->data[out->len + i] = (char)rot13((unsigned char)p[i]);
    out->len += n;
    return (long)n;
}

/* U+E0000..U+E007F are F3 A0 80 80 .. F3 A0 81 BF; U+E0020..E007E carry printable ASCII. */
static long decode_tags(const char *p, size_t len, size_t room, wd_buf_t *out)
{
    size_t start = out->len, found = 0;
    for (size_t i = 0; i + 3 < len && out->len - start < room; i++) {
        const unsigned char *u = (const unsigned char *)p + i;
        if (u[0] != 0xF3 || u[1] != 0xA0 || (u[2] != 0x80 && u[2] != 0x81) || (u[3] & 0xC0) != 0x80) continue;
        unsigned cp = ((unsigned)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        i += 3;
        if (cp < 0x20 || cp > 0x7E) continue;
        char c = (char)cp;
        int rc = wd_buf_append(out, &c, 1);
        if (rc) return rc;
        found++;
    }
    if (found < MIN_TAG_CHARS) {
        out->len = start;
        return 0;
    }
    return (long)(out->len - start);
}

/* The text as the privacy rules read it (guard/fold.h): invisible characters dropped, look-alike
 * spaces, fullwidth forms, mathematical letters and digits and tag characters read as ASCII; with
 * what = WD_FOLD_LOOKALIKES_ANY, every Cyrillic or Greek look-alike reads as Latin too. */
static long decode_folded(const char *p, size_t len, unsigned what, size_t room, wd_buf_t *out)
{
    if (!out->len) { /* nothing to append to (the screen's case): fold into out itself */
        int rc = wd_guard_fold_as(p, len, what, out, NULL, NULL);
        if (rc) return rc;
        out->len = WD_MIN(out->len, room);
        return (long)out->len;
    }
    wd_buf_t f;
    wd_buf_init(&f, 0);
    int rc = wd_guard_fold_as(p, len, what, &f, NULL, NULL);
    size_t n = WD_MIN(f.len, room);
    if (!rc) rc = wd_buf_append(out, f.data, n);
    if (f.data) memset(f.data, 0, f.cap); /* the caller's text */
    wd_buf_free(&f);
    return rc ? rc : (long)n;
}

static bool alnum(unsigned char c)
{
    return (cls[c] & (C_UPPER | C_LOWER)) || (c >= '0' && c <= '9');
}

static bool id_joiner(const unsigned char *p, size_t len, size_t i)
{
    return (p[i] == '_' || p[i] == '-') && i > 0 && alnum(p[i - 1]) && i + 1 < len && alnum(p[i + 1]);
}

/* A word starts at p[i] inside an identifier: after a joiner, or a capital after a lower-case letter. */
static bool camel_break(const unsigned char *p, size_t i)
{
    return i > 0 && (cls[p[i]] & C_UPPER) && (cls[p[i - 1]] & C_LOWER);
}

/* A necessary condition for decode_words, cheap on prose: an underscore, two hyphens joining words in
 * one run, or a lower-case letter followed by a capital. */
static bool words_candidate(const unsigned char *p, size_t len)
{
    if (memchr(p, '_', len)) return true;
    for (const unsigned char *q = memchr(p, '-', len); q; q = memchr(q + 1, '-', (size_t)(p + len - q - 1))) {
        if (!id_joiner(p, len, (size_t)(q - p))) continue;
        const unsigned char *e = q + 1;
        while (e < p + len && alnum(*e))
            e++;
        if (e < p + len && id_joiner(p, len, (size_t)(e - p))) return true;
    }
    unsigned char camel = 0;
    for (size_t i = 1; i < len; i++) /* branch-free: the compiler vectorises it */
        camel |= (unsigned char)((unsigned char)(p[i - 1] - 'a') < 26u) &
                 (unsigned char)((unsigned char)(p[i] - 'A') < 26u);
    return camel;
}

bool wd_inj_name_screened(const char *name, size_t len)
{
    size_t joins = 0;
    for (const char *p = name; (p = memchr(p, '_', (size_t)(name + len - p))) != NULL; p++)
        joins += p > name && p + 1 < name + len && p[-1] != '_' && p[1] != '_';
    return joins >= MIN_ID_WORDS - 1;
}

/* Identifiers of at least MIN_ID_WORDS words, each written as its words ("ignore_all_previous",
 * "ignoreAllPrevious" -> "ignore all previous"), one per line ending in ';'. A model reads such a name as the
 * words; the injection rules want spaces between them. */
static long decode_words(const char *text, size_t len, size_t room, wd_buf_t *out)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t start = out->len;
    for (size_t i = 0; i < len;) {
        if (!alnum(p[i])) {
            i++;
            continue;
        }
        size_t s = i, words = 1;
        for (i++; i < len && (alnum(p[i]) || id_joiner(p, len, i)); i++)
            words += id_joiner(p, len, i) || camel_break(p, i);
        if (words < MIN_ID_WORDS) continue;
        int rc = wd_buf_reserve(out, 2 * (i - s) + 2);
        if (rc) return rc;
        for (size_t k = s; k < i; k++) {
            if (k > s && camel_break(p, k)) out->data[out->len++] = ' ';
            out->data[out->len++] = id_joiner(p, len, k) ? ' ' : (char)p[k];
        }
        out->data[out->len++] = ';'; /* no rule's \s+ runs from one name into the next */
        out->data[out->len++] = '\n';
        if (out->len - start >= room) {
            out->len = start + room;
            break;
        }
    }
    return (long)(out->len - start);
}

/* Upside-down text: the characters generators turn letters into ("ɐ" for a, "ǝ" for e, "∀" for A, ...),
 * sorted by code point, and the letter each stands for. `mark`: seldom seen otherwise, so it counts as
 * evidence that a text is upside down (the dotless i, Greek capitals, turned digits do not). */
typedef struct {
    uint16_t cp;
    char c;
    bool mark;
} flip_t;

static const flip_t flips[] = {
    {0x00A1, '!', false},  {0x00BF, '?', false},  {0x0131, 'i', false},  {0x017F, 'J', false},
    {0x0183, 'g', true},   {0x0186, 'C', true},   {0x018E, 'E', true},   {0x0190, '3', false},
    {0x0196, '1', false},  {0x01DD, 'e', true},   {0x0250, 'a', true},   {0x0254, 'c', true},
    {0x025F, 'f', true},   {0x0265, 'h', true},   {0x026F, 'm', true},   {0x0279, 'r', true},
    {0x027E, 'j', true},   {0x0287, 't', true},   {0x028C, 'v', true},   {0x028D, 'w', true},
    {0x028E, 'y', true},   {0x029E, 'k', true},   {0x02D9, '.', false},  {0x02E5, 'L', true},
    {0x039B, 'V', false},  {0x03DB, '5', false},  {0x0500, 'P', true},   {0x05DF, 'l', false},
    {0x1D09, 'i', true},   {0x2132, 'F', true},   {0x2141, 'G', true},   {0x2142, 'L', true},
    {0x2144, 'Y', true},   {0x2200, 'A', true},   {0x2229, 'U', true},   {0x22A5, 'T', true},
    {0x3123, '4', false},  {0x3125, '7', false},  {0x3145, '2', false},  {0xA4D8, 'K', true},
    {0xA4E4, 'R', true},   {0xA4ED, 'B', true},   {0xA4F7, 'D', true},
};

static const flip_t *flip_of(unsigned cp)
{
    if (cp > UINT16_MAX) return NULL;
    const flip_t key = {.cp = (uint16_t)cp};
    return bsearch(&key, flips, WD_ARRAY_LEN(flips), sizeof key, wd_cmp_cp16);
}

/* ASCII characters that stand for another when turned ("q" for b, "u" for n, ...). */
static char flip_ascii(unsigned char c)
{
    static const char pairs[] = "bqdpnuMW69',()[]{}<>";
    for (size_t i = 0; i + 1 < sizeof pairs; i++)
        if (pairs[i] == (char)c) return pairs[i ^ 1];
    return (char)c;
}

/* Whether the text holds MIN_FLIPPED characters that mark upside-down text. */
static bool flipped_candidate(const unsigned char *u, size_t len)
{
    unsigned char any = 0;
    for (size_t i = 0; i < len; i++) /* an OR the compiler vectorises: ASCII text stops here */
        any |= u[i];
    if (!(any & 0x80)) return false;
    /* Only characters with the lead byte of a mark (Latin Extended-B, IPA, spacing modifiers, U+0500,
     * U+1Dxx, U+2xxx, U+Axxx) are decoded; for the rest, Cyrillic or Greek text included, the check is
     * one table lookup per byte. */
    static const bool lead[256] = {[0xC6] = true, [0xC7] = true, [0xC9] = true, [0xCA] = true, [0xCB] = true,
                                   [0xD4] = true, [0xE1] = true, [0xE2] = true, [0xEA] = true};
    size_t marks = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned cp;
        size_t n = lead[u[i]] ? wd_utf8_decode(u + i, len - i, &cp) : 0;
        if (!n) continue;
        const flip_t *f = flip_of(cp);
        if (f && f->mark && ++marks >= MIN_FLIPPED) return true;
        i += n - 1;
    }
    return false;
}

/* The text read backwards, character by character, each turned back (flips, flip_ascii); other
 * characters (and malformed bytes) as they are. Never longer than the text. */
static long decode_flipped(const char *text, size_t len, size_t room, wd_buf_t *out)
{
    const unsigned char *u = (const unsigned char *)text;
    if (!flipped_candidate(u, len)) return 0;
    int rc = wd_buf_reserve(out, len);
    if (rc) return rc;
    size_t start = out->len, e = len;
    while (e > 0 && out->len - start < room) {
        size_t s = e - 1;
        while (s > 0 && e - s < 4 && (u[s] & 0xC0) == 0x80) /* back to the character's lead byte */
            s--;
        unsigned cp;
        const flip_t *f = NULL;
        if (u[s] < 0x80) {
            out->data[out->len++] = flip_ascii(u[s]);
        } else if (wd_utf8_decode(u + s, e - s, &cp) != e - s) {
            s = e - 1; /* malformed: its last byte alone */
            out->data[out->len++] = (char)u[s];
        } else if ((f = flip_of(cp))) {
            out->data[out->len++] = f->c;
        } else {
            memcpy(out->data + out->len, u + s, e - s);
            out->len += e - s;
        }
        e = s;
    }
    if (out->len - start > room) out->len = start + room;
    return (long)(out->len - start);
}

long wd_inj_decode(wd_inj_layer_t layer, const char *p, size_t len, size_t max_out, wd_buf_t *out)
{
    if (!p || !len || !max_out) return 0;
    switch (layer) {
    case WD_INJ_BASE64: return decode_base64(p, len, max_out, out);
    case WD_INJ_HEX: return decode_hex(p, len, max_out, out);
    case WD_INJ_URL: return decode_url(p, len, max_out, out);
    case WD_INJ_ROT13: return decode_rot13(p, len, max_out, out);
    case WD_INJ_TAGS: return decode_tags(p, len, max_out, out);
    case WD_INJ_FOLDED: return decode_folded(p, len, 0, max_out, out);
    case WD_INJ_LOOKALIKE: return decode_folded(p, len, WD_FOLD_LOOKALIKES_ANY, max_out, out);
    case WD_INJ_WORDS: return decode_words(p, len, max_out, out);
    case WD_INJ_FLIPPED: return decode_flipped(p, len, max_out, out);
    default: return 0;
    }
}

/* ---- screening ---------------------------------------------------------------------------------- */

static void take(const wd_guard_db_t *db, const wd_findings_t *f, wd_inj_layer_t layer, unsigned depth,
                 wd_inj_result_t *r)
{
    for (size_t i = 0; i < f->n; i++) {
        const wd_rule_t *rule = wd_guard_db_rule(db, f->v[i].rule);
        if (wd_inj_rule(rule)) add_hit(r, f->v[i].rule, layer, depth, f->v[i].score);
    }
}

/* Whether the text has an ASCII letter (a branch-free loop the compiler vectorises). */
static bool has_ascii_letter(const unsigned char *p, size_t len)
{
    unsigned char any = 0;
    for (size_t i = 0; i < len; i++)
        any |= (unsigned char)((unsigned char)((p[i] | 0x20) - 'a') < 26u);
    return any;
}

/* Cheap pre-checks so a layer's decoder only runs where it can find something: each is a necessary
 * condition for its decoder to produce output (rot13 has its own word test inside the decoder). */
static bool layer_possible(wd_inj_layer_t l, const char *p, size_t len)
{
    const unsigned char *u = (const unsigned char *)p;
    switch (l) {
    case WD_INJ_URL: return url_candidate(p, len);
    case WD_INJ_TAGS: return len >= 4 * MIN_TAG_CHARS && memchr(p, 0xF3, len) != NULL;
    case WD_INJ_FOLDED: return wd_guard_fold_needed(p, len, 0); /* a dash hides no word */
    /* look-alikes alone spell no override phrase (lower-case g, n, r, t, u and capital D, G, L, R, U
     * have no twin), so Greek or Cyrillic text without an ASCII letter is not read a second time */
    case WD_INJ_LOOKALIKE:
        return wd_guard_fold_needed(p, len, WD_FOLD_ONLY_LOOKALIKES | WD_FOLD_LOOKALIKES_ANY) && has_ascii_letter(u, len);
    case WD_INJ_WORDS: return len >= 2 * MIN_ID_WORDS - 1 && words_candidate(u, len);
    case WD_INJ_FLIPPED: return len >= 2 * MIN_FLIPPED && flipped_candidate(u, len);
    case WD_INJ_BASE64: return len >= MIN_B64_RUN && b64_candidate(u, len);
    case WD_INJ_HEX: return len >= 2 * MIN_HEX_BYTES && hex_candidate(u, len);
    case WD_INJ_ROT13: return len >= MIN_ROT13_LETTERS;
    default: return false;
    }
}

static int screen(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len,
                  const wd_findings_t *plain, wd_inj_layer_t layer, unsigned depth, wd_inj_result_t *r)
{
    int rc = WD_OK;
    if (plain) {
        take(db, plain, layer, depth, r);
    } else {
        wd_findings_t f;
        wd_findings_init(&f);
        rc = wd_guard_scan_for(db, s, WD_GUARD_INJECTION, text, len, 0.0f, &f);
        if (!rc) take(db, &f, layer, depth, r);
        wd_findings_free(&f);
        if (rc) return rc;
    }
    if (depth >= WD_INJ_MAX_DEPTH || layer == WD_INJ_WORDS) return WD_OK; /* words: nothing below them */
    /* order: the cheap, targeted layers first so rot13 (whole texts) cannot starve them of budget */
    static const wd_inj_layer_t order[] = {WD_INJ_TAGS,  WD_INJ_FOLDED,  WD_INJ_LOOKALIKE,
                                           WD_INJ_WORDS, WD_INJ_FLIPPED, WD_INJ_BASE64,
                                           WD_INJ_HEX,   WD_INJ_URL,     WD_INJ_ROT13};
    wd_buf_t dec;
    wd_buf_init(&dec, 0);
    for (size_t k = 0; k < WD_ARRAY_LEN(order) && !rc; k++) {
        wd_inj_layer_t l = order[k];
        if (l == layer && (l == WD_INJ_ROT13 || l == WD_INJ_TAGS || l == WD_INJ_FOLDED))
            continue; /* idempotent */
        if ((layer == WD_INJ_LOOKALIKE || layer == WD_INJ_FLIPPED) && l != WD_INJ_WORDS)
            continue; /* the folded layer (or the text as sent) decodes the rest */
        if (!layer_possible(l, text, len)) continue;
        /* the folded and flipped texts are never longer than the text, the words about as long: each
         * costs a scan like the plain one, not budget, so text with no-break spaces or code full of
         * snake_case names is not refused for its length */
        bool budgeted =
            l != WD_INJ_FOLDED && l != WD_INJ_LOOKALIKE && l != WD_INJ_WORDS && l != WD_INJ_FLIPPED;
        size_t room = budgeted            ? WD_INJ_DECODE_BUDGET - r->decoded_bytes
                      : l == WD_INJ_WORDS ? 2 * len + 2
                                          : len;
        if (budgeted ? room < 2 : !room) { /* not even a decoded byte and its newline (emit_blob) */
            r->budget_exhausted = true;
            continue; /* the folded layer may still run */
        }
        wd_buf_reset(&dec);
        long n = wd_inj_decode(l, text, len, room, &dec);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        if (!n) continue;
        if (budgeted) r->decoded_bytes += dec.len > room ? room : dec.len;
        if (r->decoded_bytes >= WD_INJ_DECODE_BUDGET) r->budget_exhausted = true;
        r->layers_seen |= 1u << l;
        if (budgeted || l != WD_INJ_FOLDED) {
            rc = screen(db, s, dec.data, dec.len, NULL, l, depth + 1, r);
            continue;
        }
        /* below the folded text the decoders meet the blobs they already decoded in the text: they
         * spend a budget of their own, so folding cannot use up the one of the text as sent */
        size_t text_used = r->decoded_bytes;
        r->decoded_bytes = r->decoded_folded;
        rc = screen(db, s, dec.data, dec.len, NULL, l, depth + 1, r);
        r->decoded_folded = r->decoded_bytes;
        r->decoded_bytes = text_used;
    }
    wd_buf_free(&dec);
    return rc;
}

int wd_inj_scan(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len,
                const wd_findings_t *plain, wd_inj_result_t *r)
{
    if (!db || !s || !r || (!text && len)) return WD_EINVAL;
    if (!len) return WD_OK;
    return screen(db, s, text, len, plain, WD_INJ_PLAIN, 0, r);
}

wd_action_t wd_inj_decide(const wd_inj_result_t *r, float threshold, wd_action_t action, bool fail_open,
                          wd_inj_verdict_t *verdict)
{
    wd_inj_verdict_t v = WD_INJ_CLEAN;
    wd_action_t a = WD_ACT_ALLOW;
    float score = wd_inj_score(r);
    if (r->nhits && score + 1e-6f >= threshold) {
        v = WD_INJ_ABOVE;
        a = action;
    } else if (r->budget_exhausted) {
        v = WD_INJ_UNSCREENED;
        a = fail_open ? WD_ACT_FLAG : action;
    } else if (r->nhits) {
        v = WD_INJ_BELOW;
        a = WD_ACT_FLAG;
    }
    if (verdict) *verdict = v;
    return a;
}

size_t wd_inj_describe(const wd_guard_db_t *db, const wd_inj_result_t *r, char *buf, size_t cap)
{
    if (!cap) return 0;
    buf[0] = 0;
    size_t order[WD_INJ_MAX_HITS], n = r->nhits, used = 0;
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of hits */
        for (size_t j = i; j > 0 && r->hits[order[j]].score > r->hits[order[j - 1]].score; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        const wd_inj_hit_t *h = &r->hits[order[i]];
        const wd_rule_t *rule = wd_guard_db_rule(db, h->rule);
        char item[128];
        int m = h->layer == WD_INJ_PLAIN
                    ? snprintf(item, sizeof item, "%s%s=%.2f", i ? "," : "", rule->id, (double)h->score)
                    : snprintf(item, sizeof item, "%s%s[%s]=%.2f", i ? "," : "", rule->id,
                               wd_inj_layer_name((wd_inj_layer_t)h->layer), (double)h->score);
        if (m < 0 || used + (size_t)m >= cap) break; /* whole items only */
        memcpy(buf + used, item, (size_t)m + 1);
        used += (size_t)m;
    }
    return used;
}

/* wd_pattern_bytes (src/guard/pattern.c): the bytes a pattern's matches can contain, which the engine
 * uses to start its PCRE2 confirmations late. Hand-written cases for the syntax (and what it must
 * refuse), then a check against PCRE2 itself: every shipped rule's pattern, matched by PCRE2 at every
 * position of a corpus (every rule's examples, the Presidio test set, dense text built from them),
 * may only ever match bytes the reader says it can. A byte missing from the set would make the engine
 * miss or cut short a finding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

#include "guard/guard.h"
#include "guard/pattern.h"

/* The set as a string of its bytes (printable ASCII as is, others as \xHH), for readable failures. */
static void show(const uint8_t b[32], char *out, size_t cap)
{
    size_t n = 0;
    for (unsigned c = 0; c < 256 && n + 5 < cap; c++)
        if (wd_byte_in(b, (unsigned char)c))
            n += (size_t)(c >= 0x20 && c < 0x7f ? snprintf(out + n, cap - n, "%c", c)
                                                : snprintf(out + n, cap - n, "\\x%02x", c));
    out[n] = 0;
}

/* The pattern's set must be exactly the bytes in `want` (escapes as in C); ok must be as given. */
static void expect(const char *pat, bool caseless, bool ok, const char *want, size_t wlen)
{
    uint8_t b[32], w[32] = {0};
    bool got_ok = wd_pattern_bytes(pat, caseless, b);
    if (!ok) {
        for (unsigned c = 0; c < 32; c++)
            w[c] = 0xff;
    } else {
        for (size_t i = 0; i < wlen; i++)
            w[(unsigned char)want[i] >> 3] |= (uint8_t)(1u << ((unsigned char)want[i] & 7));
    }
    char gs[1200], ws[1200];
    show(b, gs, sizeof gs);
    show(w, ws, sizeof ws);
    if (got_ok != ok || memcmp(b, w, 32) != 0)
        fail_msg("pattern '%s'%s: got %s {%s}, want %s {%s}", pat, caseless ? " (caseless)" : "",
                 got_ok ? "ok" : "refused", gs, ok ? "ok" : "refused", ws);
}
#define EXPECT(pat, ci, want) expect(pat, ci, true, want, sizeof(want) - 1)
#define REFUSED(pat) expect(pat, false, false, "", 0)

static void test_syntax(void **state)
{
    (void)state;
    EXPECT("abc", false, "abc");
    EXPECT("abc", true, "abcABC");
    EXPECT("a[^a-y]", false,
           "a\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13"
           "\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f !\"#$%&'()*+,-./0123456789:;<=>?@"
           "ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`z{|}~\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89"
           "\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e"
           "\x9f\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf\xb0\xb1\xb2\xb3"
           "\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xc8"
           "\xc9\xca\xcb\xcc\xcd\xce\xcf\xd0\xd1\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xdb\xdc\xdd"
           "\xde\xdf\xe0\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xeb\xec\xed\xee\xef\xf0\xf1\xf2"
           "\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff");
    /* quantifiers consume nothing; a brace that is not one is a literal */
    EXPECT("\\d{2,4}x{3}y{1,}z*?", false, "0123456789xyz");
    EXPECT("a{,3}", false, "a{,3}");
    EXPECT("a{x}", false, "a{x}");
    /* escapes and shorthands */
    EXPECT("\\x41\\t\\.\\-\\\\", false, "A\t.-\\");
    EXPECT("\\s", false, "\t\n\v\f\r ");
    EXPECT("\\h\\v", false, "\t \xa0\n\v\f\r\x85");
    EXPECT("\\w", false, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_");
    EXPECT("\\bab\\B\\Aa\\z\\Z\\G", false, "ab");
    /* classes: a leading ] or -, a trailing -, escapes, shorthands, backspace */
    EXPECT("[]a]", false, "]a");
    EXPECT("[-a][a-]", false, "-a");
    EXPECT("[\\]\\d\\b]", false, "]0123456789\x08");
    EXPECT("[a-c\\x30-\\x32]", true, "abcABC012");
    /* groups: non-capturing, lookaround (its bytes are kept: a superset), named, comments, flags */
    EXPECT("(?:a|b)(?=c)(?!d)(?<=e)(?<!f)(?>g)", false, "abcdefg");
    EXPECT("(?<year>1)(?P<m>2)(?'d'3)(?#a comment)", false, "123");
    EXPECT("(?i)ab", false, "abAB");
    EXPECT("x(?i:y)", false, "xXyY"); /* (?i) anywhere folds the whole set: a superset */
    EXPECT("(?s-m)a", false, "a");
    EXPECT("^a$|b", false, "ab");
    /* the engine's own kind of pattern */
    EXPECT("\\b[0-9]{3}[\\- ][0-9]{2}\\b", false, "0123456789- ");
    /* a dot is any byte: the set is full, and that is not a refusal */
    uint8_t b[32];
    assert_true(wd_pattern_bytes("a.b", false, b));
    for (unsigned c = 0; c < 32; c++)
        assert_int_equal(b[c], 0xff);
    /* what the reader does not know for certain is refused (every bit set) */
    REFUSED("[[:alpha:]]");
    REFUSED("\\p{L}");
    REFUSED("\\Qa.b\\E");
    REFUSED("\\x{41}");
    REFUSED("\\x4");
    REFUSED("(?x)a b");
    REFUSED("(*UCP)\\w");
    REFUSED("(a)\\1");
    REFUSED("\\012");
    REFUSED("\\cA");
    REFUSED("(?(1)a|b)");
    REFUSED("(?|a)");
    REFUSED("[z-a]");
    REFUSED("[abc");
    REFUSED("(?<name");
    REFUSED("(?#unterminated");
    REFUSED("a\\");
    assert_false(wd_pattern_bytes(NULL, false, b));
}

/* ---- the shape of matches: required bytes, a pivot, the first bytes, a literal ------------------- */

static void set_of(const char *bytes, uint8_t b[32])
{
    memset(b, 0, 32);
    for (const char *p = bytes; *p; p++)
        b[(unsigned char)*p >> 3] |= (uint8_t)(1u << ((unsigned char)*p & 7));
}

static void expect_pivot(const char *pat, bool ci, int want, const char *before, const char *after,
                         bool want_once)
{
    unsigned char c = 0;
    uint8_t b[32], a[32], wb[32], wa[32];
    bool once = !want_once;
    bool got = wd_pattern_pivot(pat, ci, &c, b, a, &once);
    if (want < 0) {
        if (got) fail_msg("pattern '%s': pivot 0x%02x, want none", pat, c);
        return;
    }
    set_of(before, wb);
    set_of(after, wa);
    if (!got || c != want || memcmp(b, wb, 32) || memcmp(a, wa, 32) || once != want_once) {
        char gb[1200], ga[1200];
        show(b, gb, sizeof gb);
        show(a, ga, sizeof ga);
        fail_msg("pattern '%s': got %s 0x%02x {%s} {%s} once %d, want 0x%02x {%s} {%s} once %d", pat,
                 got ? "pivot" : "none", c, gb, ga, once, want, before, after, want_once);
    }
}

static void test_shapes(void **state)
{
    (void)state;
    uint8_t digits[32], b[32];
    set_of("0123456789", digits);
    /* every match holds a digit: some piece that must occur consumes only digits, in every branch */
    assert_true(wd_pattern_requires("\\b[0-9]{3}-[0-9]{2}\\b", false, digits));
    assert_true(wd_pattern_requires("x+\\d", false, digits));
    assert_true(wd_pattern_requires("(?:a1|2b)c", false, digits));
    assert_true(wd_pattern_requires("(?:a|b)[0-9]{1,4}", false, digits));
    assert_true(wd_pattern_requires("(?i:ab)7", false, digits));
    assert_false(wd_pattern_requires("(?:a1|bb)c", false, digits)); /* one branch has none */
    assert_false(wd_pattern_requires("[0-9]?x", false, digits));
    assert_false(wd_pattern_requires("[0-9]*x", false, digits));
    assert_false(wd_pattern_requires("[0-9]{0,3}x", false, digits));
    assert_false(wd_pattern_requires("[0-9a]x", false, digits));
    assert_false(wd_pattern_requires("(?=[0-9])\\w+", false, digits)); /* lookahead consumes nothing */
    assert_false(wd_pattern_requires("a.b", false, digits));
    assert_false(wd_pattern_requires("\\p{N}", false, digits)); /* unknown: never assumed */
    assert_false(wd_pattern_requires("(a1", false, digits));
    assert_false(wd_pattern_requires(NULL, false, digits));
    set_of("aA", b);
    assert_true(wd_pattern_requires("1a", true, b));
    assert_true(wd_pattern_requires("1a", true, digits));
    set_of("a", b);
    assert_false(wd_pattern_requires("1a", true, b)); /* caseless: A is a match too */
    assert_false(wd_pattern_requires("(?i)a", false, b));

    /* how many: least repetitions added along a sequence, the fewest over branches */
    assert_int_equal(wd_pattern_count("\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b", false, digits), 9);
    assert_int_equal(wd_pattern_count("(?:\\+?1[ .])?[0-9]{3}[ .][0-9]{3}", false, digits), 6);
    assert_int_equal(wd_pattern_count("(?:a1|22)b", false, digits), 1);
    assert_int_equal(wd_pattern_count("(?:[0-9]{2}x){2,5}", false, digits), 4);
    assert_int_equal(wd_pattern_count("[0-9]+", false, digits), 1);
    assert_int_equal(wd_pattern_count("[0-9]{0,9}x", false, digits), 0);
    assert_int_equal(wd_pattern_count("[0-9a-f]{32}", false, digits), 0); /* a hex digit may be a letter */
    assert_int_equal(wd_pattern_count("(?=[0-9]{4})[0-9]{2}", false, digits), 2); /* lookahead: nothing */
    assert_int_equal(wd_pattern_count("[0-9]{4}\\p{N}", false, digits), 0); /* not read: nothing */
    set_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ", b);
    assert_int_equal(wd_pattern_count("\\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}\\b", false, b), 2);
    assert_int_equal(wd_pattern_count("[A-Z]{2}", true, b), 0); /* caseless: a-z too */

    /* a pivot: one byte, always once, between what comes before and after; held once by a match if no
     * other piece can consume it */
    expect_pivot("[a-c]+ [A-C]", false, ' ', "abc", "ABC", true);
    expect_pivot("\\b[a-c]+(?:x)? (?:y)?[A-C]\\b", false, ' ', "abcx", "ABCy", true);
    expect_pivot("a+@b", false, '@', "a", "b", true);
    expect_pivot("a+@b", true, '@', "aA", "bB", true);
    expect_pivot("a @ b", false, '@', " ", " ", true);     /* the space occurs twice, the @ once */
    expect_pivot("a+ +b", false, -1, "", "", false);       /* repeated */
    expect_pivot("a+ ?b", false, -1, "", "", false);       /* optional */
    expect_pivot("(?: )b", false, -1, "", "", false);      /* nothing before */
    expect_pivot("a+[ ]b|c", false, -1, "", "", false);    /* an alternation at the top */
    expect_pivot("[a ]+ b", false, ' ', "a ", "b", false); /* another piece can hold it too */
    expect_pivot("[ab]+\\.[cd]+\\.[ef]", false, '.', "ab", "cd", false); /* the first of two */
    expect_pivot("[ab]+\\.[c.]+-[ef]", false, '-', "c.", "ef", true);    /* the one held once */
    expect_pivot("a+(?: )b", false, ' ', "a", "b", true);
    expect_pivot("a+(?:  )b", false, -1, "", "", false); /* two bytes */

    uint8_t f[32];
    assert_true(wd_pattern_first("\\b(?:x)?[a-c]+d", false, f));
    set_of("xabc", b);
    assert_memory_equal(f, b, 32);
    assert_false(wd_pattern_first("a?", false, f)); /* can be empty */
    assert_false(wd_pattern_first("\\p{L}", false, f));

    assert_int_equal(wd_pattern_literal("\\bghp_[A-Za-z0-9]{36}", false), 4);
    assert_int_equal(wd_pattern_literal("(?:ab)cd", false), 4);
    assert_int_equal(wd_pattern_literal("[Aa][Bb][Cc]x", false), 4);
    assert_int_equal(wd_pattern_literal("[ab]cd", false), 2);
    assert_int_equal(wd_pattern_literal("a|bcd", false), 1); /* the shorter of the two */
    assert_int_equal(wd_pattern_literal("\\b(?:Server|Data Source|Host)\\s?=", false), 4);
    assert_int_equal(wd_pattern_literal("ab(?:cd|ef)g", false), 5);
    assert_int_equal(wd_pattern_literal("x(?:ab)?cd", false), 2);
    assert_int_equal(wd_pattern_literal("ab+c", false), 2);  /* ab and bc: abc only with one b */
    assert_int_equal(wd_pattern_literal("a\\bcd", false), 3); /* an assertion keeps them together */
    assert_int_equal(wd_pattern_literal("(?i)ab[0-9]", false), 2);
    assert_int_equal(wd_pattern_literal("(?:x|ext\\.?|#)[0-9]", false), 1);
    assert_int_equal(wd_pattern_literal("a{3}b", false), 2);
}

/* ---- against PCRE2 ---------------------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} strs_t;

static void strs_add(strs_t *s, const char *t)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        assert_non_null(s->v);
    }
    s->v[s->n] = strdup(t);
    assert_non_null(s->v[s->n]);
    s->n++;
}

/* What the reader says of a rule's matches. */
typedef struct {
    uint8_t bytes[32], first[32], before[32], after[32];
    bool digit, has_first, has_pivot, once;
    unsigned char pivot;
} said_t;

/* Every match PCRE2 finds from every start position of text, anchored there, holds only bytes of the
 * set, starts with a byte of the first set, holds a digit if the reader says so, and holds the pivot
 * between bytes of its sets (once, if the reader says so). */
static size_t check_text(const wd_rule_t *r, const pcre2_code *code, pcre2_match_data *md, const said_t *w,
                         const char *text)
{
    size_t len = strlen(text), matches = 0;
    for (size_t s = 0; s < len; s++) {
        int rc = pcre2_match(code, (PCRE2_SPTR)text, len, s, PCRE2_ANCHORED, md, NULL);
        if (rc < 0) continue;
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        matches++;
        const unsigned char *m = (const unsigned char *)text + ov[0];
        size_t n = ov[1] - ov[0], digits = 0, pivots = 0, between = 0;
        for (size_t i = 0; i < n; i++) {
            if (!wd_byte_in(w->bytes, m[i]))
                fail_msg("rule %s: PCRE2 matched byte 0x%02x at %zu of \"%.*s\", which its set lacks", r->id, m[i],
                         i, (int)n, (const char *)m);
            digits += m[i] >= '0' && m[i] <= '9';
            if (w->has_pivot && m[i] == w->pivot) {
                pivots++;
                between +=
                    i > 0 && i + 1 < n && wd_byte_in(w->before, m[i - 1]) && wd_byte_in(w->after, m[i + 1]);
            }
        }
        if (n && w->has_first && !wd_byte_in(w->first, m[0]))
            fail_msg("rule %s: \"%.*s\" starts with a byte its first set lacks", r->id, (int)n, (const char *)m);
        if (w->digit && !digits) fail_msg("rule %s: \"%.*s\" holds no digit", r->id, (int)n, (const char *)m);
        if (w->has_pivot && (!between || (w->once && pivots != 1)))
            fail_msg("rule %s: \"%.*s\" does not hold its pivot 0x%02x%s between its sets", r->id, (int)n,
                     (const char *)m, w->pivot, w->once ? " once" : "");
    }
    return matches;
}

static void corpus(const wd_guard_db_t *db, strs_t *c)
{
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        for (size_t k = 0; k < r->nex_match; k++)
            strs_add(c, r->ex_match[k]);
        for (size_t k = 0; k < r->nex_no_match; k++)
            strs_add(c, r->ex_no_match[k]);
    }
    /* dense text: every example after the next, with the separators prose puts between values */
    static const char *const seps[] = {" ", ", ", "\n", ": ", " (", ") ", "; ", "\t", "=", "\"", "'"};
    size_t nex = c->n;
    for (size_t i = 0; i + 1 < nex; i++) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s%s%s%s", c->v[i], seps[i % (sizeof seps / sizeof *seps)], c->v[i + 1],
                 seps[(i + 3) % (sizeof seps / sizeof *seps)]);
        strs_add(c, buf);
    }
    /* the shared data sets: PII texts, benign prompts, prompt injections */
    static const struct {
        const char *file, *field;
    } sets[] = {{"../shared/data/dev/pii_presidio_generated_small.json", "full_text"},
                {"../shared/data/dev/benign_prompts_wildguard.json", "prompt"},
                {"../shared/data/dev/injection_injecguard_valid.json", "prompt"}};
    for (size_t f = 0; f < sizeof sets / sizeof *sets; f++) {
        json_error_t jerr;
        json_t *set = json_load_file(sets[f].file, 0, &jerr);
        if (!set) fail_msg("%s: %s", sets[f].file, jerr.text);
        size_t i, before = c->n;
        json_t *rec;
        json_array_foreach(set, i, rec)
        {
            const char *t = json_string_value(json_object_get(rec, sets[f].field));
            if (t) strs_add(c, t);
        }
        if (c->n == before) fail_msg("%s: no \"%s\" texts", sets[f].file, sets[f].field);
        json_decref(set);
    }
}

static void test_shipped_rules_against_pcre2(void **state)
{
    (void)state;
    char err[512];
    wd_guard_db_t *db = wd_guard_db_parse("rules", err, sizeof err);
    if (!db) fail_msg("%s", err);
    strs_t c = {0};
    corpus(db, &c);
    assert_true(c.n > 1000);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    assert_non_null(md);
    size_t read = 0, matched = 0, with_examples = 0, digit_rules = 0, pivot_rules = 0;
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        said_t w;
        if (!wd_pattern_bytes(r->pattern, r->caseless, w.bytes)) continue; /* refused: nothing is assumed */
        read++;
        uint8_t digits[32];
        set_of("0123456789", digits);
        w.digit = wd_pattern_requires(r->pattern, r->caseless, digits);
        w.has_first = wd_pattern_first(r->pattern, r->caseless, w.first);
        w.has_pivot = wd_pattern_pivot(r->pattern, r->caseless, &w.pivot, w.before, w.after, &w.once);
        digit_rules += w.digit;
        pivot_rules += w.has_pivot;
        int ecode;
        PCRE2_SIZE eoff;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)r->pattern, PCRE2_ZERO_TERMINATED,
                                         r->caseless ? PCRE2_CASELESS : 0, &ecode, &eoff, NULL);
        assert_non_null(code);
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
        size_t n = 0;
        for (size_t k = 0; k < c.n; k++)
            n += check_text(r, code, md, &w, c.v[k]);
        if (r->nex_match && !n) fail_msg("rule %s: PCRE2 matched nothing in the corpus", r->id);
        with_examples += r->nex_match > 0;
        matched += n > 0;
        pcre2_code_free(code);
    }
    print_message("%zu rules, %zu read, %zu matched in the corpus (%zu with examples); %zu hold a digit, %zu a "
                  "pivot\n",
                  wd_guard_db_nrules(db), read, matched, with_examples, digit_rules, pivot_rules);
    assert_true(digit_rules >= 40 && pivot_rules >= 40); /* the checks above covered many of each */
    /* the reader understands (nearly) every shipped pattern, and every one with examples was exercised */
    assert_true(read + 5 >= wd_guard_db_nrules(db));
    assert_true(with_examples >= 140 && matched >= with_examples);
    pcre2_match_data_free(md);
    for (size_t k = 0; k < c.n; k++)
        free(c.v[k]);
    free(c.v);
    wd_guard_db_unref(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_shipped_rules_against_pcre2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

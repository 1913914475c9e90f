/* Unit tests for guard/rewrite: the pseudonym vault (placeholders, reuse, limits), restoring
 * pseudonyms in whole texts and in pieces (a placeholder split at every byte, across three pieces,
 * '<' that is not a placeholder, flush), and rewriting findings (exact offsets, adjacent and
 * overlapping spans, UTF-8 boundaries around and inside spans, every action, the tally). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sodium.h>

#include "guard/rewrite.h"

/* ---- helpers ------------------------------------------------------------------------------------- */

static const char rules_yaml[] =
    "version: 1\n"
    "rules:\n"
    "  - id: t.email\n    type: EMAIL\n    class: pii\n    score: 0.9\n    caseless: true\n"
    "    pattern: '[a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}'\n    max_len: 64\n"
    "  - id: t.card\n    type: CREDIT_CARD\n    class: financial\n    validator: luhn\n    score: 0.9\n"
    "    pattern: '\\b\\d{4}[ -]?\\d{4}[ -]?\\d{4}[ -]?\\d{4}\\b'\n"
    "  - id: t.key\n    type: API_KEY\n    class: secrets\n    score: 0.9\n    pattern: 'sk-[A-Za-z0-9]{8}'\n"
    /* bytes, not characters: [^ ]{3} may stop inside a multi-byte character */
    "  - id: t.tag\n    type: TAG\n    class: test\n    score: 0.9\n    boundary: false\n"
    "    pattern: 'ID:[^ ]{3}'\n    max_len: 6\n"
    "  - id: t.tail\n    type: TAIL\n    class: test\n    score: 0.9\n    boundary: false\n"
    "    pattern: '[^ A-Za-z:][a-z]{4}Z'\n    max_len: 6\n"
    /* brackets around anything (multi-byte text inside a span) */
    "  - id: t.name\n    type: NAME\n    class: pii\n    score: 0.9\n    boundary: false\n"
    "    pattern: 'N\\[[^\\]]{1,30}\\]'\n    max_len: 40\n";

static wd_guard_db_t *db;
static wd_guard_scratch_t *scratch;
static int R_EMAIL, R_CARD, R_KEY, R_TAG, R_NAME;

static int setup(void **state)
{
    (void)state;
    char err[256];
    db = wd_guard_db_load_buf("t.yaml", rules_yaml, sizeof rules_yaml - 1, err, sizeof err);
    if (!db) {
        fprintf(stderr, "rules: %s\n", err);
        return -1;
    }
    scratch = wd_guard_scratch_new(db);
    R_EMAIL = wd_guard_db_find(db, "t.email");
    R_CARD = wd_guard_db_find(db, "t.card");
    R_KEY = wd_guard_db_find(db, "t.key");
    R_TAG = wd_guard_db_find(db, "t.tag");
    R_NAME = wd_guard_db_find(db, "t.name");
    return scratch && R_EMAIL >= 0 && R_CARD >= 0 && R_KEY >= 0 && R_TAG >= 0 && R_NAME >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    wd_guard_scratch_free(scratch);
    wd_guard_db_unref(db);
    return 0;
}

/* The action table of a test: by entity type, default redact. */
typedef struct {
    const char *type[4];
    wd_action_t act[4];
} actions_t;

static wd_action_t by_type(void *ud, const wd_rule_t *r)
{
    const actions_t *a = ud;
    for (size_t i = 0; i < 4 && a->type[i]; i++)
        if (strcmp(a->type[i], r->type) == 0) return a->act[i];
    return WD_ACT_REDACT;
}

static wd_action_t all_action;
static wd_action_t one_action(void *ud, const wd_rule_t *r)
{
    (void)ud;
    (void)r;
    return all_action;
}

static bool valid_utf8(const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) n = 3, cp = c & 0x07;
        else return false;
        if (i + n >= len) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

/* Scans text with the test rules and rewrites it; returns the output (NUL-terminated, caller frees). */
static char *scan_rewrite(const char *text, const wd_rewrite_opts_t *o, wd_guard_tally_t *t)
{
    wd_findings_t f;
    wd_findings_init(&f);
    assert_int_equal(wd_guard_scan(db, scratch, text, strlen(text), 0.0f, &f), WD_OK);
    wd_buf_t out;
    wd_buf_init(&out, 0);
    if (t) wd_guard_tally_init(t);
    assert_int_equal(wd_guard_rewrite(db, text, strlen(text), &f, o, t, &out), WD_OK);
    assert_int_equal(wd_buf_append(&out, "", 1), WD_OK);
    wd_findings_free(&f);
    assert_true(valid_utf8(out.data, out.len - 1));
    return out.data;
}

/* Rewrites text with hand-made findings {start, end, rule}. */
static char *rewrite_spans(const char *text, size_t len, const wd_finding_t *spans, size_t n,
                           const wd_rewrite_opts_t *o, wd_guard_tally_t *t)
{
    wd_finding_t v[16];
    assert_true(n <= 16);
    memcpy(v, spans, n * sizeof *v);
    wd_findings_t f = {.v = v, .n = n, .cap = 16};
    wd_buf_t out;
    wd_buf_init(&out, 0);
    if (t) wd_guard_tally_init(t);
    assert_int_equal(wd_guard_rewrite(db, text, len, &f, o, t, &out), WD_OK);
    assert_int_equal(wd_buf_append(&out, "", 1), WD_OK);
    return out.data;
}

#define F(s, e, r) ((wd_finding_t){(s), (e), (uint16_t)(r), 0.9f})

/* ---- vault ----------------------------------------------------------------------------------------- */

static void test_vault_placeholders_and_reuse(void **state)
{
    (void)state;
    wd_vault_t v;
    wd_vault_init(&v);
    assert_int_equal(wd_vault_max_placeholder(&v), 0);
    const wd_vault_entry_t *a = wd_vault_put(&v, "EMAIL", "a@x.io", 6);
    assert_non_null(a);
    assert_string_equal(a->ph, "<EMAIL_1>");
    assert_int_equal(a->phlen, 9);
    const wd_vault_entry_t *b = wd_vault_put(&v, "EMAIL", "b@x.io", 6);
    assert_string_equal(b->ph, "<EMAIL_2>");
    /* the same value again: the same placeholder, no new entry */
    const wd_vault_entry_t *a2 = wd_vault_put(&v, "EMAIL", "a@x.io", 6);
    assert_string_equal(a2->ph, "<EMAIL_1>");
    assert_int_equal(v.n, 2);
    /* a prefix of a known value is a different value */
    assert_string_equal(wd_vault_put(&v, "EMAIL", "a@x.i", 5)->ph, "<EMAIL_3>");
    /* numbering is per type; the same bytes under another type are another entry */
    const wd_vault_entry_t *c = wd_vault_put(&v, "CREDIT_CARD", "4111111111111111", 16);
    assert_string_equal(c->ph, "<CREDIT_CARD_1>");
    assert_string_equal(wd_vault_put(&v, "PHONE", "a@x.io", 6)->ph, "<PHONE_1>");
    assert_int_equal(v.n, 5);
    assert_int_equal(wd_vault_max_placeholder(&v), strlen("<CREDIT_CARD_1>"));
    /* values are kept exactly, NUL bytes included */
    const wd_vault_entry_t *z = wd_vault_put(&v, "EMAIL", "n\0l", 3);
    assert_int_equal(z->vlen, 3);
    assert_memory_equal(z->value, "n\0l", 3);
    assert_string_equal(wd_vault_put(&v, "EMAIL", "n\0l", 3)->ph, z->ph);
    assert_string_not_equal(wd_vault_put(&v, "EMAIL", "n\0m", 3)->ph, z->ph);
    /* numbers of several digits; the longest type (32 bytes) still fits */
    for (int i = 0; i < 120; i++) {
        char val[8];
        snprintf(val, sizeof val, "v%d", i);
        const wd_vault_entry_t *p = wd_vault_put(&v, "URL", val, strlen(val));
        char want[16];
        snprintf(want, sizeof want, "<URL_%d>", i + 1);
        assert_string_equal(p->ph, want);
        assert_int_equal(p->phlen, strlen(want));
    }
    const char t32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_ABCDE";
    assert_string_equal(wd_vault_put(&v, t32, "x", 1)->ph, "<ABCDEFGHIJKLMNOPQRSTUVWXYZ_ABCDE_1>");
    assert_null(wd_vault_put(&v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_ABCDEF", "x", 1)); /* 33 bytes */
    wd_vault_free(&v);
    assert_int_equal(v.n, 0);
    assert_null(v.e);
}

static void test_vault_limits(void **state)
{
    (void)state;
    wd_vault_t v;
    wd_vault_init(&v);
    v.max_entries = 2;
    assert_non_null(wd_vault_put(&v, "EMAIL", "a", 1));
    assert_non_null(wd_vault_put(&v, "EMAIL", "b", 1));
    assert_null(wd_vault_put(&v, "EMAIL", "c", 1)); /* full */
    /* a known value still has its placeholder when the vault is full */
    const wd_vault_entry_t *e = wd_vault_put(&v, "EMAIL", "b", 1);
    assert_non_null(e);
    assert_string_equal(e->ph, "<EMAIL_2>");
    wd_vault_free(&v);

    wd_vault_init(&v);
    char longtype[40];
    memset(longtype, 'T', 33);
    longtype[33] = 0;
    assert_null(wd_vault_put(&v, longtype, "x", 1)); /* the placeholder would not fit */
    longtype[32] = 0;
    e = wd_vault_put(&v, longtype, "x", 1);
    assert_non_null(e);
    assert_int_equal(e->phlen, 32 + 4);
    assert_int_equal(strlen(e->ph), e->phlen);
    wd_vault_free(&v);
}

/* ---- restore --------------------------------------------------------------------------------------- */

static wd_vault_t vault3; /* <EMAIL_1>, <EMAIL_2>, <CREDIT_CARD_1> */

static void fill_vault3(void)
{
    wd_vault_init(&vault3);
    wd_vault_put(&vault3, "EMAIL", "jane.doe@example.com", 20);
    wd_vault_put(&vault3, "EMAIL", "bob@corp.example", 16);
    wd_vault_put(&vault3, "CREDIT_CARD", "4111 1111 1111 1111", 19);
}

static char *restore_z(const wd_vault_t *v, const char *text)
{
    wd_buf_t out;
    wd_buf_init(&out, 0);
    assert_int_equal(wd_vault_restore(v, text, strlen(text), &out), WD_OK);
    wd_buf_append(&out, "", 1);
    return out.data;
}

static void test_restore_whole(void **state)
{
    (void)state;
    fill_vault3();
    char *s = restore_z(&vault3, "Mail <EMAIL_1>, cc <EMAIL_2> and <EMAIL_1>; card <CREDIT_CARD_1>.");
    assert_string_equal(s, "Mail jane.doe@example.com, cc bob@corp.example and jane.doe@example.com; card "
                           "4111 1111 1111 1111.");
    free(s);
    /* placeholders at both ends, back to back */
    s = restore_z(&vault3, "<EMAIL_2><EMAIL_1>");
    assert_string_equal(s, "bob@corp.examplejane.doe@example.com");
    free(s);
    /* unknown numbers, incomplete, lower case, '<' that is not one: unchanged */
    const char *same[] = {"<EMAIL_3>", "<EMAIL_1", "EMAIL_1>", "<email_1>", "a < b > c", "<<>>", "<", "",
                          "<CREDIT_CARD_2>", "<EMAIL_ 1>", "x<EMAIL_11>"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        s = restore_z(&vault3, same[i]);
        assert_string_equal(s, same[i]);
        free(s);
    }
    /* a '<' right before a placeholder */
    s = restore_z(&vault3, "<<EMAIL_2>>");
    assert_string_equal(s, "<bob@corp.example>");
    free(s);
    /* an empty vault restores nothing */
    wd_vault_t empty;
    wd_vault_init(&empty);
    s = restore_z(&empty, "<EMAIL_1>");
    assert_string_equal(s, "<EMAIL_1>");
    free(s);
    wd_vault_free(&vault3);
}

static void test_restore_ten_and_more(void **state)
{
    (void)state;
    /* <EMAIL_1> must not be taken for the beginning of <EMAIL_10> or <EMAIL_11> */
    wd_vault_t v;
    wd_vault_init(&v);
    char val[16];
    for (int i = 1; i <= 12; i++) {
        int n = snprintf(val, sizeof val, "u%d@x.io", i);
        wd_vault_put(&v, "EMAIL", val, (size_t)n);
    }
    char *s = restore_z(&v, "<EMAIL_10>|<EMAIL_1>|<EMAIL_12>|<EMAIL_13>");
    assert_string_equal(s, "u10@x.io|u1@x.io|u12@x.io|<EMAIL_13>");
    free(s);
    wd_vault_free(&v);
}

/* Feeds text to a restorer cut at the given offsets and returns everything it emitted (flushed). */
static char *restore_pieces(const wd_vault_t *v, const char *text, const size_t *cuts, size_t ncuts)
{
    wd_restorer_t r;
    wd_restorer_init(&r, v);
    wd_buf_t out;
    wd_buf_init(&out, 0);
    size_t at = 0, len = strlen(text);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        assert_int_equal(wd_restorer_feed(&r, text + at, to - at, &out), WD_OK);
        /* never more held back than a placeholder minus one byte */
        assert_true(r.held.len < WD_MAX(wd_vault_max_placeholder(v), (size_t)1));
        at = to;
    }
    assert_int_equal(wd_restorer_flush(&r, &out), WD_OK);
    assert_int_equal(r.held.len, 0);
    wd_restorer_free(&r);
    wd_buf_append(&out, "", 1);
    return out.data;
}

static void test_restorer_every_split(void **state)
{
    (void)state;
    fill_vault3();
    const char *texts[] = {
        "Hi <EMAIL_1>, your card <CREDIT_CARD_1> was charged. a<b <EMAIL_2>!",
        "<EMAIL_1>",
        "<EMAIL_1><EMAIL_2>",
        "<<EMAIL_1",        /* no placeholder: literal text comes out unchanged */
        "x <EMAIL_3> y <",  /* unknown number, dangling '<' */
        "<CREDIT_CARD_1>< <EMAIL_2>>",
    };
    for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
        char *want = restore_z(&vault3, texts[t]);
        size_t len = strlen(texts[t]);
        /* two pieces, cut at every byte */
        for (size_t i = 0; i <= len; i++) {
            char *got = restore_pieces(&vault3, texts[t], &i, 1);
            if (strcmp(got, want) != 0) fail_msg("text %zu cut at %zu: got \"%s\" want \"%s\"", t, i, got, want);
            free(got);
        }
        /* three pieces, every pair of cuts */
        for (size_t i = 0; i <= len; i++)
            for (size_t j = i; j <= len; j++) {
                size_t cuts[2] = {i, j};
                char *got = restore_pieces(&vault3, texts[t], cuts, 2);
                if (strcmp(got, want) != 0)
                    fail_msg("text %zu cut at %zu,%zu: got \"%s\" want \"%s\"", t, i, j, got, want);
                free(got);
            }
        /* one byte at a time */
        size_t cuts[128];
        assert_true(len <= 128);
        for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
        char *got = restore_pieces(&vault3, texts[t], cuts, len);
        assert_string_equal(got, want);
        free(got);
        free(want);
    }
    wd_vault_free(&vault3);
}

static void test_restorer_emits_early_and_flushes(void **state)
{
    (void)state;
    fill_vault3();
    wd_restorer_t r;
    wd_restorer_init(&r, &vault3);
    wd_buf_t out;
    wd_buf_init(&out, 0);
#define FEED(s) assert_int_equal(wd_restorer_feed(&r, (s), strlen(s), &out), WD_OK)
#define OUT_IS(s) (assert_int_equal(out.len, strlen(s)), assert_memory_equal(out.data, (s), out.len))
    FEED("Dear <EMA");
    OUT_IS("Dear "); /* "<EMA" may become a placeholder: held */
    FEED("IL_1> done");
    OUT_IS("Dear jane.doe@example.com done");
    /* '<' followed by something no placeholder contains is released at once */
    wd_buf_reset(&out);
    FEED("a < b, c<d, x<>");
    OUT_IS("a < b, c<d, x<>");
    /* a '<' and upper-case letters longer than any placeholder cannot be one */
    wd_buf_reset(&out);
    FEED("<ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    OUT_IS("<ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    /* held text that never completes is released by the flush, unchanged */
    wd_buf_reset(&out);
    FEED("the end <EMAIL_1");
    OUT_IS("the end ");
    assert_int_equal(wd_restorer_flush(&r, &out), WD_OK);
    OUT_IS("the end <EMAIL_1");
    /* a flush with nothing held adds nothing; the restorer is usable afterwards */
    assert_int_equal(wd_restorer_flush(&r, &out), WD_OK);
    OUT_IS("the end <EMAIL_1");
    wd_buf_reset(&out);
    FEED("<");
    OUT_IS("");
    FEED("");
    OUT_IS("");
    FEED("CREDIT_CARD_1>");
    OUT_IS("4111 1111 1111 1111");
    wd_restorer_free(&r);
    wd_buf_free(&out);
    wd_vault_free(&vault3);

    /* with an empty vault nothing is held */
    wd_vault_t empty;
    wd_vault_init(&empty);
    wd_restorer_init(&r, &empty);
    wd_buf_init(&out, 0);
    FEED("x <EMA");
    OUT_IS("x <EMA");
    wd_restorer_free(&r);
    wd_buf_free(&out);
#undef FEED
#undef OUT_IS
}

/* ---- rewrite --------------------------------------------------------------------------------------- */

static void test_rewrite_offsets_and_pseudonyms(void **state)
{
    (void)state;
    wd_vault_t v;
    wd_vault_init(&v);
    all_action = WD_ACT_PSEUDO;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, &v};
    wd_guard_tally_t t;
    /* at the start, in the middle, twice, and at the very end */
    char *s = scan_rewrite("jane@ex.com wrote to bob@corp.org, then jane@ex.com again: 4111 1111 1111 1111", &o, &t);
    assert_string_equal(s, "<EMAIL_1> wrote to <EMAIL_2>, then <EMAIL_1> again: <CREDIT_CARD_1>");
    free(s);
    assert_int_equal(t.blocked_rule, -1);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.v[0].rule, R_EMAIL);
    assert_int_equal(t.v[0].action, WD_ACT_PSEUDO);
    assert_int_equal(t.v[0].count, 3);
    assert_int_equal(t.v[1].rule, R_CARD);
    assert_int_equal(t.v[1].count, 1);
    /* the vault holds the values; restoring gives the original back */
    assert_int_equal(v.n, 3);
    s = restore_z(&v, "<EMAIL_1> wrote to <EMAIL_2>, then <EMAIL_1> again: <CREDIT_CARD_1>");
    assert_string_equal(s, "jane@ex.com wrote to bob@corp.org, then jane@ex.com again: 4111 1111 1111 1111");
    free(s);
    /* a later text of the same exchange reuses the vault's numbering */
    s = scan_rewrite("and bob@corp.org, new@ex.com", &o, NULL);
    assert_string_equal(s, "and <EMAIL_2>, <EMAIL_3>");
    free(s);
    /* no findings: the text is copied unchanged */
    s = scan_rewrite("nothing to see here, 1234 5678 1234 5678 fails luhn", &o, &t);
    assert_string_equal(s, "nothing to see here, 1234 5678 1234 5678 fails luhn");
    assert_int_equal(t.n, 0);
    free(s);
    wd_vault_free(&v);
}

static void test_rewrite_adjacent_and_overlapping(void **state)
{
    (void)state;
    all_action = WD_ACT_REDACT;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, NULL};
    wd_guard_tally_t t;
    const char *text = "abcdefghij";
    /* adjacent spans: both replaced, nothing between them */
    wd_finding_t adj[] = {F(0, 3, R_EMAIL), F(3, 6, R_KEY), F(6, 10, R_EMAIL)};
    char *s = rewrite_spans(text, 10, adj, 3, &o, &t);
    assert_string_equal(s, "[EMAIL][API_KEY][EMAIL]");
    free(s);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.v[0].count, 2);
    /* a one-byte span and an empty text around it */
    wd_finding_t one[] = {F(9, 10, R_KEY)};
    s = rewrite_spans(text, 10, one, 1, &o, NULL);
    assert_string_equal(s, "abcdefghi[API_KEY]");
    free(s);
    /* out of range or empty spans are ignored, the text is still copied */
    wd_finding_t bad[] = {F(4, 4, R_KEY), F(8, 11, R_KEY)};
    s = rewrite_spans(text, 10, bad, 2, &o, &t);
    assert_string_equal(s, "abcdefghij");
    free(s);

    /* overlapping findings from the scanner are resolved before the rewrite: the higher score wins */
    s = scan_rewrite("key sk-abcdefgh@mail.com end", &o, &t);
    assert_true(strstr(s, "sk-abcdefgh") == NULL && strstr(s, "mail.com") == NULL);
    free(s);

    /* overlapping spans break the contract (sorted, non-overlapping), yet the rewrite fails closed: no
     * byte of either span passes through, nothing is duplicated, both are tallied */
    wd_finding_t ov[] = {F(1, 5, R_EMAIL), F(3, 8, R_KEY)};
    s = rewrite_spans(text, 10, ov, 2, &o, &t);
    assert_true(strncmp(s, "a[EMAIL]", 8) == 0);
    assert_string_equal(s + strlen(s) - 2, "ij");
    for (const char *c = "bcdefgh"; *c; c++)
        if (strchr(s, *c)) fail_msg("byte '%c' of an overlapping span passed through: \"%s\"", *c, s);
    assert_int_equal(t.n, 2);
    free(s);
}

static void test_rewrite_utf8_boundaries(void **state)
{
    (void)state;
    all_action = WD_ACT_REDACT;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, NULL};
    /* multi-byte text around spans is kept intact */
    char *s = scan_rewrite("café ☕ jane@ex.com naïve 😀 4111-1111-1111-1111 日本", &o, NULL);
    assert_string_equal(s, "café ☕ [EMAIL] naïve 😀 [CREDIT_CARD] 日本");
    free(s);
    /* multi-byte text inside a span is replaced whole */
    s = scan_rewrite("x N[José Müller 日本] y", &o, NULL);
    assert_string_equal(s, "x [NAME] y");
    free(s);
    /* the scanner works on bytes: "ID:" + 3 bytes stops inside "é" (C3 A9) or "日" (E6 97 A5); the
     * rewrite widens the span to the end of the character */
    s = scan_rewrite("a ID:xé tail", &o, NULL);
    assert_string_equal(s, "a [TAG] tail");
    free(s);
    s = scan_rewrite("a ID:日本 tail", &o, NULL);
    assert_string_equal(s, "a [TAG]本 tail");
    free(s);
    s = scan_rewrite("ID:😀😀", &o, NULL); /* F0 9F 98 80: 3 bytes of 4 */
    assert_string_equal(s, "[TAG]😀");
    free(s);

    /* hand-made spans that start or end inside a character */
    const char *t = "ab\xC3\xA9" "cd\xE6\x97\xA5" "ef"; /* a b é c d 日 e f */
    size_t tl = strlen(t);
    wd_finding_t in_start[] = {F(3, 5, R_KEY)}; /* starts on é's second byte */
    s = rewrite_spans(t, tl, in_start, 1, &o, NULL);
    assert_string_equal(s, "ab[API_KEY]d日ef");
    free(s);
    wd_finding_t in_end[] = {F(5, 7, R_KEY)}; /* ends after 日's first byte */
    s = rewrite_spans(t, tl, in_end, 1, &o, NULL);
    assert_string_equal(s, "abéc[API_KEY]ef");
    free(s);
    wd_finding_t both[] = {F(3, 8, R_KEY)};
    s = rewrite_spans(t, tl, both, 1, &o, NULL);
    assert_string_equal(s, "ab[API_KEY]ef");
    assert_true(valid_utf8(s, strlen(s)));
    free(s);

    /* every action keeps the output valid UTF-8 for every span position in a multi-byte text */
    const char *m = "é日😀aé日😀b";
    size_t ml = strlen(m);
    uint8_t key[32] = {1};
    wd_vault_t v;
    wd_vault_init(&v);
    for (int a = WD_ACT_MASK; a <= WD_ACT_PSEUDO; a++) {
        all_action = (wd_action_t)a;
        wd_rewrite_opts_t oa = {one_action, NULL, key, &v};
        for (size_t i = 0; i < ml; i++)
            for (size_t j = i + 1; j <= ml; j++) {
                wd_finding_t sp[] = {F(i, j, R_NAME)};
                s = rewrite_spans(m, ml, sp, 1, &oa, NULL);
                if (!valid_utf8(s, strlen(s))) fail_msg("action %d span [%zu,%zu): invalid UTF-8", a, i, j);
                free(s);
            }
    }
    wd_vault_free(&v);
}

/* Two findings that meet inside one character (valid input: sorted, disjoint): widening the first to
 * the character's end swallows the start of the second. The second must still be acted on; its bytes
 * must not pass through in the clear. */
static void test_rewrite_widened_spans_never_leak(void **state)
{
    (void)state;
    all_action = WD_ACT_REDACT;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, NULL};
    const char *t = "ab\xC3\xA9" "cd\xE6\x97\xA5" "ef"; /* a b é c d 日 e f */
    wd_guard_tally_t tally;
    wd_finding_t meet[] = {F(0, 3, R_EMAIL), F(3, 6, R_KEY)};
    char *s = rewrite_spans(t, strlen(t), meet, 2, &o, &tally);
    assert_true(valid_utf8(s, strlen(s)));
    if (strchr(s, 'a') || strchr(s, 'c') || strchr(s, 'd'))
        fail_msg("a finding whose start was swallowed by the previous widened span leaked: \"%s\"", s);
    free(s);
    /* the same from the scanner: "ID:aa" + first byte of é is a TAG, the next span (TAIL) starts on
     * é's second byte (both rules match bytes, as rule authors may write them) */
    s = scan_rewrite("ID:aa\xC3\xA9secrZ end", &o, &tally);
    if (strstr(s, "secr")) fail_msg("the TAIL finding leaked: \"%s\"", s);
    assert_int_equal(tally.n, 2);
    free(s);
}

static void test_rewrite_mask(void **state)
{
    (void)state;
    all_action = WD_ACT_MASK;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, NULL};
    char *s = scan_rewrite("card 4111 1111 1111 1111 ok", &o, NULL);
    assert_string_equal(s, "card ***************1111 ok"); /* 19 characters, the last 4 kept */
    free(s);
    s = scan_rewrite("to jane@ex.com", &o, NULL);
    assert_string_equal(s, "to *******.com");
    free(s);
    /* characters, not bytes: one '*' per character, multi-byte characters among the last four intact */
    s = scan_rewrite("N[ñandú1234]", &o, NULL); /* 12 characters, 14 bytes */
    assert_string_equal(s, "********234]");
    free(s);
}

static void test_rewrite_mask_multibyte(void **state)
{
    (void)state;
    all_action = WD_ACT_MASK;
    wd_rewrite_opts_t o = {one_action, NULL, NULL, NULL};
    const char *t = "x ñandú1234 日本語テキスト y";
    /* "ñandú1234" = 9 characters, 11 bytes, at 2..13 */
    wd_finding_t f1[] = {F(2, 13, R_NAME)};
    char *s = rewrite_spans(t, strlen(t), f1, 1, &o, NULL);
    assert_string_equal(s, "x *****1234 日本語テキスト y");
    free(s);
    /* "日本語テキスト" = 7 characters, 21 bytes: 3 stars, the last four characters kept whole */
    const char *j = strstr(t, "日");
    size_t js = (size_t)(j - t);
    wd_finding_t f2[] = {F(js, js + 21, R_NAME)};
    s = rewrite_spans(t, strlen(t), f2, 1, &o, NULL);
    assert_string_equal(s, "x ñandú1234 ***テキスト y");
    free(s);
    /* ending in a multi-byte character */
    const char *u = "1234567ñ";
    wd_finding_t f3[] = {F(0, strlen(u), R_NAME)};
    s = rewrite_spans(u, strlen(u), f3, 1, &o, NULL);
    assert_string_equal(s, "****567ñ");
    free(s);
}

static void test_rewrite_redact_hash(void **state)
{
    (void)state;
    all_action = WD_ACT_HASH;
    uint8_t key[32], key2[32];
    memset(key, 7, sizeof key);
    memset(key2, 8, sizeof key2);
    wd_rewrite_opts_t o = {one_action, NULL, key, NULL};
    char *s = scan_rewrite("a jane@ex.com b jane@ex.com c bob@ex.com", &o, NULL);
    /* [TYPE:16 hex], the keyed BLAKE2b of the value (8 bytes) */
    uint8_t h[8];
    crypto_generichash(h, sizeof h, (const uint8_t *)"jane@ex.com", 11, key, 32);
    char want[64], hex[17];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(want, sizeof want, "[EMAIL:%s]", hex);
    assert_int_equal(strlen(want), strlen("[EMAIL:]") + 16);
    const char *p1 = strstr(s, want);
    assert_non_null(p1);
    assert_non_null(strstr(p1 + 1, want)); /* stable: the same value, the same hash */
    assert_int_equal(strncmp(s, "a [EMAIL:", 9), 0);
    assert_int_equal(
        strlen(s),
        strlen("a [EMAIL:0123456789abcdef] b [EMAIL:0123456789abcdef] c [EMAIL:0123456789abcdef]"));
    /* not the 32-bit tag of before followed by anything: the last 8 hex digits are the hash's too */
    uint8_t h4[4];
    crypto_generichash(h4, sizeof h4, (const uint8_t *)"jane@ex.com", 11, key, 32);
    char old[32];
    snprintf(old, sizeof old, "[EMAIL:%02x%02x%02x%02x]", h4[0], h4[1], h4[2], h4[3]);
    assert_null(strstr(s, old));
    const char *p3 = strrchr(s, '[');
    assert_true(strncmp(p3, want, strlen(want)) != 0); /* another value, another hash */
    /* the same input, again: identical output */
    char *again = scan_rewrite("a jane@ex.com b jane@ex.com c bob@ex.com", &o, NULL);
    assert_string_equal(again, s);
    free(again);
    /* another key: another hash */
    o.hash_key = key2;
    again = scan_rewrite("a jane@ex.com b jane@ex.com c bob@ex.com", &o, NULL);
    assert_string_not_equal(again, s);
    free(again);
    free(s);
    /* without a key, hashing degrades to redaction (never the value) */
    o.hash_key = NULL;
    s = scan_rewrite("a jane@ex.com", &o, NULL);
    assert_string_equal(s, "a [EMAIL]");
    free(s);
    /* pseudonymize without a vault, and with a full vault: redaction */
    all_action = WD_ACT_PSEUDO;
    s = scan_rewrite("a jane@ex.com", &o, NULL);
    assert_string_equal(s, "a [EMAIL]");
    free(s);
    wd_vault_t v;
    wd_vault_init(&v);
    v.max_entries = 1;
    o.vault = &v;
    s = scan_rewrite("a jane@ex.com b bob@ex.com c jane@ex.com", &o, NULL);
    assert_string_equal(s, "a <EMAIL_1> b [EMAIL] c <EMAIL_1>");
    free(s);
    wd_vault_free(&v);
    /* no action function: redaction */
    wd_rewrite_opts_t none = {NULL, NULL, NULL, NULL};
    s = scan_rewrite("sk-abcdefgh", &none, NULL);
    assert_string_equal(s, "[API_KEY]");
    free(s);
}

static void test_rewrite_allow_flag_block(void **state)
{
    (void)state;
    const char *text = "jane@ex.com paid with 4111 1111 1111 1111 using sk-abcdefgh and sk-zzzzzzzz";
    wd_guard_tally_t t;
    /* allow and flag leave the text unchanged but are tallied */
    actions_t a = {{"EMAIL", "CREDIT_CARD", "API_KEY"}, {WD_ACT_ALLOW, WD_ACT_FLAG, WD_ACT_FLAG}};
    wd_rewrite_opts_t o = {by_type, &a, NULL, NULL};
    char *s = scan_rewrite(text, &o, &t);
    assert_string_equal(s, text);
    free(s);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.blocked_rule, -1);
    assert_int_equal(t.v[0].action, WD_ACT_ALLOW);
    assert_int_equal(t.v[1].action, WD_ACT_FLAG);
    assert_int_equal(t.v[2].rule, R_KEY);
    assert_int_equal(t.v[2].count, 2);
    /* block: tallied with the rule that blocked; the others still act */
    actions_t b = {{"EMAIL", "API_KEY"}, {WD_ACT_PSEUDO, WD_ACT_BLOCK}};
    wd_vault_t v;
    wd_vault_init(&v);
    wd_rewrite_opts_t ob = {by_type, &b, NULL, &v};
    s = scan_rewrite(text, &ob, &t);
    assert_int_equal(t.blocked_rule, R_KEY);
    assert_non_null(strstr(s, "<EMAIL_1>"));
    assert_non_null(strstr(s, "[CREDIT_CARD]"));
    free(s);
    int found = 0;
    for (size_t i = 0; i < t.n; i++)
        if (t.v[i].rule == R_KEY) {
            assert_int_equal(t.v[i].action, WD_ACT_BLOCK);
            assert_int_equal(t.v[i].count, 2);
            found++;
        }
    assert_int_equal(found, 1);
    /* the first blocking rule in the text is the one named */
    actions_t c = {{"EMAIL", "API_KEY", "CREDIT_CARD"}, {WD_ACT_ALLOW, WD_ACT_BLOCK, WD_ACT_BLOCK}};
    wd_rewrite_opts_t oc = {by_type, &c, NULL, NULL};
    s = scan_rewrite(text, &oc, &t);
    assert_int_equal(t.blocked_rule, R_CARD);
    free(s);
    /* the tally accumulates over several texts of one request until re-initialised */
    wd_guard_tally_init(&t);
    for (int i = 0; i < 3; i++) {
        wd_findings_t f;
        wd_findings_init(&f);
        assert_int_equal(wd_guard_scan(db, scratch, "x sk-abcdefgh", 13, 0.0f, &f), WD_OK);
        wd_buf_t out;
        wd_buf_init(&out, 0);
        assert_int_equal(wd_guard_rewrite(db, "x sk-abcdefgh", 13, &f, &o, &t, &out), WD_OK);
        wd_buf_free(&out);
        wd_findings_free(&f);
    }
    assert_int_equal(t.n, 1);
    assert_int_equal(t.v[0].count, 3);
    wd_vault_free(&v);
}

/* The allow list: listed values pass whatever their type's action, even block; others are acted on. */
static void test_rewrite_allow_list(void **state)
{
    (void)state;
    wd_guard_allow_t *al = wd_guard_allow_new();
    assert_non_null(al);
    assert_int_equal(wd_guard_allow_add(al, "Jane@Ex.com", 11), WD_OK);
    assert_int_equal(wd_guard_allow_add(al, "4111-1111-1111-1111", 19), WD_OK);
    assert_int_equal(wd_guard_allow_add(al, "sk-abcdefgh", 11), WD_OK);
    assert_int_equal(wd_guard_allow_add(al, "JANE@ex.COM", 11), WD_EEXIST);
    assert_int_equal(wd_guard_allow_add(al, "4111 1111 1111 1111", 19), WD_EEXIST);
    assert_int_equal(wd_guard_allow_add(al, " - ", 3), WD_EINVAL);
    assert_int_equal(wd_guard_allow_count(al), 3);
    /* a domain: every address of it, not of its subdomains, not a URL with credentials for it */
    assert_int_equal(wd_guard_allow_add(al, "*@Corp.Example", 14), WD_OK);
    assert_int_equal(wd_guard_allow_add(al, "*@corp.EXAMPLE", 14), WD_EEXIST);
    static const char *const bad[] = {"*@", "*@a@b.co", "*@ex ample.co", "*@-.-", "*@a/b", "*@a:b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(wd_guard_allow_add(al, bad[i], strlen(bad[i])), WD_EINVAL);
    static const char *const in[] = {"anna@corp.example", "Bob.X@CORP.Example", "a+tag@corp.example"};
    static const char *const out[] = {
        "anna@mail.corp.example", "anna@corp.example.org",    "corp.example",
        "@corp.example",          "https://u:p@corp.example", "a b@corp.example"};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++)
        assert_true(wd_guard_allow_has(al, in[i], strlen(in[i])));
    for (size_t i = 0; i < sizeof out / sizeof *out; i++)
        assert_false(wd_guard_allow_has(al, out[i], strlen(out[i])));
    assert_int_equal(wd_guard_allow_count(al), 4);
    const char *text =
        "jane@ex.com and bob@ex.com paid with 4111 1111 1111 1111 using sk-abcdefgh and sk-zzzzzzzz";
    actions_t a = {{"EMAIL", "CREDIT_CARD", "API_KEY"}, {WD_ACT_REDACT, WD_ACT_MASK, WD_ACT_BLOCK}};
    wd_rewrite_opts_t o = {by_type, &a, NULL, NULL, al};
    wd_guard_tally_t t;
    char *s = scan_rewrite(text, &o, &t);
    assert_string_equal(
        s, "jane@ex.com and [EMAIL] paid with 4111 1111 1111 1111 using sk-abcdefgh and sk-zzzzzzzz");
    free(s);
    /* the listed key passes; the other one still blocks */
    assert_int_equal(t.blocked_rule, R_KEY);
    size_t allowed = 0;
    for (size_t i = 0; i < t.n; i++)
        if (t.v[i].action == WD_ACT_ALLOW) allowed += t.v[i].count;
    assert_int_equal(allowed, 3);
    /* without the list every finding is acted on */
    o.allow = NULL;
    s = scan_rewrite(text, &o, &t);
    assert_null(strstr(s, "jane@ex.com"));
    assert_null(strstr(s, "4111 1111 1111 1111"));
    free(s);
    assert_false(wd_guard_allow_has(NULL, "jane@ex.com", 11));
    wd_guard_allow_free(al);
}

static void test_action_names(void **state)
{
    (void)state;
    const char *names[] = {"allow", "flag", "mask", "redact", "hash", "pseudonymize", "block"};
    for (size_t i = 0; i < 7; i++) {
        wd_action_t a;
        assert_int_equal(wd_action_parse(names[i], strlen(names[i]), &a), WD_OK);
        assert_int_equal(a, (wd_action_t)i);
        assert_string_equal(wd_action_name(a), names[i]);
    }
    wd_action_t a = WD_ACT_ALLOW;
    assert_int_equal(wd_action_parse("pseudo", 6, &a), WD_EINVAL);
    assert_int_equal(wd_action_parse("blocked", 7, &a), WD_EINVAL);
    assert_int_equal(wd_action_parse("Block", 5, &a), WD_EINVAL);
    assert_int_equal(wd_action_parse("", 0, &a), WD_EINVAL);
    assert_int_equal(a, WD_ACT_ALLOW);
    assert_string_equal(wd_action_name((wd_action_t)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vault_placeholders_and_reuse),
        cmocka_unit_test(test_vault_limits),
        cmocka_unit_test(test_restore_whole),
        cmocka_unit_test(test_restore_ten_and_more),
        cmocka_unit_test(test_restorer_every_split),
        cmocka_unit_test(test_restorer_emits_early_and_flushes),
        cmocka_unit_test(test_rewrite_offsets_and_pseudonyms),
        cmocka_unit_test(test_rewrite_adjacent_and_overlapping),
        cmocka_unit_test(test_rewrite_utf8_boundaries),
        cmocka_unit_test(test_rewrite_widened_spans_never_leak),
        cmocka_unit_test(test_rewrite_mask),
        cmocka_unit_test(test_rewrite_mask_multibyte),
        cmocka_unit_test(test_rewrite_redact_hash),
        cmocka_unit_test(test_rewrite_allow_flag_block),
        cmocka_unit_test(test_rewrite_allow_list),
        cmocka_unit_test(test_action_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

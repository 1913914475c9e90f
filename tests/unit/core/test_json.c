/* Tests for the strict JSON scanner: token shape, every rejection class, duplicate keys (small and
 * sorted paths), accessors, splicing rewrites, and a differential test against jansson (a fixed table
 * plus a few thousand generated and mutated documents). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/json.h"

#define NOT_SHOWN " bytes (not shown: not a lower-case identifier)"

#define MAXTOK 4096

static wd_json_tok_t g_toks[MAXTOK];

static int parse_n(wd_json_doc_t *d, const char *s, size_t n, char *err, size_t errlen)
{
    return wd_json_parse(d, s, n, g_toks, MAXTOK, 0, err, errlen);
}

static int parse_z(wd_json_doc_t *d, const char *s)
{
    char err[256];
    return parse_n(d, s, strlen(s), err, sizeof err);
}

static void expect_err(const char *s, size_t n, int code, const char *msg)
{
    wd_json_doc_t d;
    char err[256] = "unset";
    int rc = parse_n(&d, s, n, err, sizeof err);
    if (rc != code) fail_msg("%.*s: rc %d, want %d (%s)", (int)n, s, rc, code, err);
    if (msg && strcmp(err, msg) != 0) fail_msg("%.*s: message \"%s\", want \"%s\"", (int)n, s, err, msg);
    assert_int_equal(d.ntoks, 0);
}
#define EXPECT_ERR(lit, code, msg) expect_err(lit, sizeof(lit) - 1, code, msg)

/* ---------------------------------------------------------------- shape */

static void test_token_shape(void **state)
{
    (void)state;
    wd_json_doc_t d;
    const char *s = " {\"a\":[1,\"x\"],\"b\":{},\"c\":true} ";
    assert_int_equal(parse_z(&d, s), WD_OK);
    assert_int_equal(d.ntoks, 9);
    const wd_json_tok_t *t = d.toks;
    assert_int_equal(t[0].type, WD_JSON_OBJECT);
    assert_int_equal(t[0].start, 1);
    assert_int_equal(t[0].end, strlen(s) - 1);
    assert_int_equal(t[0].size, 3);
    assert_int_equal(t[0].next, 9);
    assert_int_equal(t[0].parent, -1);
    assert_int_equal(t[1].type, WD_JSON_STRING); /* key a */
    assert_int_equal(t[1].start, 3);
    assert_int_equal(t[1].end, 4);
    assert_int_equal(t[1].parent, 0);
    assert_int_equal(t[2].type, WD_JSON_ARRAY);
    assert_int_equal(t[2].size, 2);
    assert_int_equal(t[2].next, 5);
    assert_int_equal(t[2].parent, 0);
    assert_int_equal(t[3].type, WD_JSON_NUMBER);
    assert_int_equal(t[3].parent, 2);
    assert_int_equal(t[3].next, 4);
    assert_int_equal(t[4].type, WD_JSON_STRING);
    assert_int_equal(t[4].parent, 2);
    assert_false(t[4].escaped);
    assert_int_equal(t[6].type, WD_JSON_OBJECT);
    assert_int_equal(t[6].size, 0);
    assert_int_equal(t[6].next, 7);
    assert_int_equal(t[8].type, WD_JSON_TRUE);
    assert_int_equal(t[8].end - t[8].start, 4);

    assert_int_equal(parse_z(&d, "\"a\\nb\""), WD_OK);
    assert_true(d.toks[0].escaped);
    assert_int_equal(d.toks[0].start, 1);
    assert_int_equal(d.toks[0].end, 5);
    assert_int_equal(d.toks[0].next, 1);
}

static void test_not_nul_terminated(void **state)
{
    (void)state;
    wd_json_doc_t d;
    char err[128];
    /* Bytes past len must never be looked at: "12" with len 1 is the number 1. */
    const char buf[] = {'1', '2'};
    assert_int_equal(parse_n(&d, buf, 1, err, sizeof err), WD_OK);
    assert_int_equal(d.toks[0].end, 1);
    const char b2[] = {'[', '1', ']', 'x'};
    assert_int_equal(parse_n(&d, b2, 3, err, sizeof err), WD_OK);
    /* A string cut at len is unterminated even though the quote follows in memory. */
    const char b3[] = {'"', 'a', 'b', '"'};
    assert_int_equal(parse_n(&d, b3, 3, err, sizeof err), WD_EINVAL);
    const char b4[] = {'t', 'r', 'u', 'e'};
    assert_int_equal(parse_n(&d, b4, 3, err, sizeof err), WD_EINVAL);
    const char b5[] = {'"', '\\', 'u', '0', '0', '4', '1', '"'};
    assert_int_equal(parse_n(&d, b5, 6, err, sizeof err), WD_EINVAL);
    const char b6[] = {'"', '\xc3', '\xa9', '"'};
    assert_int_equal(parse_n(&d, b6, 2, err, sizeof err), WD_EINVAL);
    assert_int_equal(parse_n(&d, b6, 4, err, sizeof err), WD_OK);
}

/* The string scanner skips 8 bytes at a time; every special byte must be seen at every position. */
static void test_string_positions(void **state)
{
    (void)state;
    const struct {
        const char *ins;
        size_t n;
        int rc;
    } bytes[] = {{"\x01", 1, WD_EINVAL}, {"\x1f", 1, WD_EINVAL}, {"\n", 1, WD_EINVAL}, {"\0", 1, WD_EINVAL},
                 {"\x80", 1, WD_EINVAL}, {"\xff", 1, WD_EINVAL}, {"\xc3", 1, WD_EINVAL}, {"\\q", 2, WD_EINVAL},
                 {"\x20", 1, WD_OK},     {"\x7f", 1, WD_OK},     {"\xc3\xa9", 2, WD_OK}, {"\\n", 2, WD_OK},
                 {"\xed\xa0\x80", 3, WD_EINVAL}, {"\xf0\x9f\x98\x80", 4, WD_OK}};
    char buf[64];
    wd_json_doc_t d;
    char err[128];
    for (size_t k = 0; k < WD_ARRAY_LEN(bytes); k++) {
        for (size_t pos = 0; pos < 26; pos++) {
            size_t o = 0;
            buf[o++] = '"';
            memset(buf + o, 'a', pos);
            o += pos;
            memcpy(buf + o, bytes[k].ins, bytes[k].n);
            o += bytes[k].n;
            memset(buf + o, 'b', 20);
            o += 20;
            buf[o++] = '"';
            int rc = parse_n(&d, buf, o, err, sizeof err);
            if (rc != bytes[k].rc) fail_msg("byte %zu at %zu: rc %d (%s)", k, pos, rc, err);
            if (rc == WD_OK) assert_int_equal(d.toks[0].end, o - 1);
            /* A quote in the middle of a long run ends the string there. */
            buf[1 + pos] = '"';
            rc = parse_n(&d, buf, 2 + pos, err, sizeof err);
            assert_int_equal(rc, WD_OK);
            assert_int_equal(d.toks[0].end, 1 + pos);
        }
    }
}

/* ---------------------------------------------------------------- errors */

static void test_error_messages(void **state)
{
    (void)state;
    EXPECT_ERR("{\"model\":\"gpt\",   \"model\":\"b\"}", WD_EINVAL, "offset 18: duplicate key \"model\"");
    EXPECT_ERR("{\"a\":1,\"\\u0061\":2}", WD_EINVAL, "offset 7: duplicate key of 6" NOT_SHOWN);
    EXPECT_ERR("[1,]", WD_EINVAL, "offset 3: trailing comma in array");
    EXPECT_ERR("{\"a\":1,}", WD_EINVAL, "offset 7: trailing comma in object");
    EXPECT_ERR("01", WD_EINVAL, "offset 0: leading zero in number");
    EXPECT_ERR("[\"\\ud800\"]", WD_EINVAL, "offset 2: high surrogate not followed by a low surrogate");
    EXPECT_ERR("\"\\udc00\"", WD_EINVAL, "offset 1: lone low surrogate in \\u escape");
    EXPECT_ERR("[\"ab\xed\xa0\x80\"]", WD_EINVAL, "offset 4: invalid UTF-8");
    EXPECT_ERR("\"a\x01\"", WD_EINVAL, "offset 2: control character in string");
    EXPECT_ERR("\"\\x\"", WD_EINVAL, "offset 1: invalid escape in string");
    EXPECT_ERR("", WD_EINVAL, "offset 0: unexpected end of input, expected a value");
    EXPECT_ERR("[1 2]", WD_EINVAL, "offset 3: unexpected '2', expected ',' or ']'");
    EXPECT_ERR("{} x", WD_EINVAL, "offset 3: unexpected 'x', expected end of input after the document");
    EXPECT_ERR("{\"a\" 1}", WD_EINVAL, "offset 5: unexpected '1', expected ':' after key");
    EXPECT_ERR("{1:1}", WD_EINVAL, "offset 1: unexpected '1', expected a string key");
    EXPECT_ERR("[\x01]", WD_EINVAL, "offset 1: unexpected byte 0x01, expected a value");
    EXPECT_ERR("1.", WD_EINVAL, "offset 2: unexpected end of input");
    EXPECT_ERR("\"abc", WD_EINVAL, "offset 4: unterminated string");

    /* The message goes to the client and the audit event: only a lower-case identifier of at most 32
     * bytes is quoted, never a key that could be data (escaped, an address, a number, a name, long). */
    static const struct {
        const char *key, *want;
    } keys[] = {
        {"max_tokens", "offset 16: duplicate key \"max_tokens\""},
        {"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk2", "offset 38: duplicate key \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk2\""},
        {"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk3", "offset 39: duplicate key of 33" NOT_SHOWN},
        {"john@example.com", "offset 22: duplicate key of 16" NOT_SHOWN},
        {"4111111111111111", "offset 22: duplicate key of 16" NOT_SHOWN},
        {"Smith", "offset 11: duplicate key of 5" NOT_SHOWN},
        {"caf\xc3\xa9", "offset 11: duplicate key of 5" NOT_SHOWN},
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(keys); i++) {
        char big[256];
        int n = snprintf(big, sizeof big, "{\"%s\":1,\"%s\":2}", keys[i].key, keys[i].key);
        expect_err(big, (size_t)n, WD_EINVAL, keys[i].want);
    }

    /* err may be NULL, and a short buffer is truncated, not overrun. */
    wd_json_doc_t d;
    assert_int_equal(wd_json_parse(&d, "[", 1, g_toks, MAXTOK, 0, NULL, 0), WD_EINVAL);
    char small[8];
    memset(small, 'X', sizeof small);
    assert_int_equal(wd_json_parse(&d, "[", 1, g_toks, MAXTOK, 0, small, 5), WD_EINVAL);
    assert_string_equal(small, "offs");
    assert_int_equal(small[5], 'X');
    /* A successful parse clears err. */
    char e2[32] = "stale";
    assert_int_equal(wd_json_parse(&d, "1", 1, g_toks, MAXTOK, 0, e2, sizeof e2), WD_OK);
    assert_string_equal(e2, "");
}

static void test_limits(void **state)
{
    (void)state;
    wd_json_doc_t d;
    char err[128], buf[512];
    wd_json_tok_t toks[8];
    /* "[1,1,1]" needs exactly 4 tokens = 7/2+1. */
    assert_int_equal(wd_json_parse(&d, "[1,1,1]", 7, toks, 4, 0, err, sizeof err), WD_OK);
    assert_int_equal(d.ntoks, 4);
    assert_int_equal(wd_json_parse(&d, "[1,1,1]", 7, toks, 3, 0, err, sizeof err), WD_E2BIG);
    assert_string_equal(err, "offset 5: more than 3 tokens");
    assert_int_equal(wd_json_parse(&d, "1", 1, toks, 0, 0, err, sizeof err), WD_E2BIG);
    /* With cap >= N/2+1, running out of tokens proves the input malformed: EINVAL, not E2BIG. */
    assert_int_equal(wd_json_parse(&d, "[[[[[]", 6, toks, 4, 0, err, sizeof err), WD_EINVAL);
    assert_string_equal(err, "offset 4: more values than a valid 6-byte document can hold");
    assert_int_equal(wd_json_parse(&d, "[[[[[]", 6, toks, 3, 0, err, sizeof err), WD_E2BIG);
    assert_int_equal(wd_json_parse(&d, "[[[[[]", 6, toks, 8, 0, err, sizeof err), WD_EINVAL);
    assert_string_equal(err, "offset 6: unexpected end of input");
    assert_int_equal(wd_json_parse(&d, "{\"a\":1}", 7, toks, 2, 0, err, sizeof err), WD_E2BIG);
    assert_int_equal(wd_json_parse(&d, "{\"a\":1}", 7, toks, 3, 0, err, sizeof err), WD_OK);

    /* Default depth 64, counting the root container as 1. */
    for (int depth = 63; depth <= 66; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        int rc = wd_json_parse(&d, buf, 2 * (size_t)depth, g_toks, MAXTOK, 0, err, sizeof err);
        assert_int_equal(rc, depth <= 64 ? WD_OK : WD_E2BIG);
    }
    assert_string_equal(err, "offset 64: nesting deeper than 64");
    assert_int_equal(wd_json_parse(&d, "[[1]]", 5, g_toks, MAXTOK, 1, err, sizeof err), WD_E2BIG);
    assert_int_equal(wd_json_parse(&d, "[[1]]", 5, g_toks, MAXTOK, 2, err, sizeof err), WD_OK);
    assert_int_equal(wd_json_parse(&d, "{\"a\":{\"b\":{}}}", 14, g_toks, MAXTOK, 2, err, sizeof err), WD_E2BIG);
    assert_int_equal(wd_json_parse(&d, "{\"a\":{\"b\":{}}}", 14, g_toks, MAXTOK, 3, err, sizeof err), WD_OK);
    /* Depth is the nesting, not the number of containers. */
    assert_int_equal(wd_json_parse(&d, "[[],[],[],[]]", 13, g_toks, MAXTOK, 2, err, sizeof err), WD_OK);

    /* Offsets are 32-bit: refuse 4 GiB before reading anything. */
    assert_int_equal(wd_json_parse(&d, "1", (size_t)UINT32_MAX + 1, g_toks, MAXTOK, 0, err, sizeof err), WD_E2BIG);
}

/* ---------------------------------------------------------------- duplicate keys */

/* Builds {"k0":0,"k1":1,...} with n members; key `dup_of` is repeated at member position `at`
 * (spelled with a \u escape if escaped) unless dup_of < 0. Returns the offset of the repeated key. */
static size_t build_object(char *out, size_t cap, int n, int dup_of, int at, bool escaped, size_t *len)
{
    size_t o = 0, dup_off = 0;
    o += (size_t)snprintf(out + o, cap - o, "{");
    for (int i = 0; i < n; i++) {
        if (i) out[o++] = ',';
        if (i == at && dup_of >= 0) {
            dup_off = o;
            if (escaped) o += (size_t)snprintf(out + o, cap - o, "\"\\u006b%d\":%d", dup_of, i);
            else o += (size_t)snprintf(out + o, cap - o, "\"k%d\":%d", dup_of, i);
        } else
            o += (size_t)snprintf(out + o, cap - o, "\"k%d\":%d", i, i);
    }
    o += (size_t)snprintf(out + o, cap - o, "}");
    *len = o;
    return dup_off;
}

static void test_duplicates_small(void **state)
{
    (void)state;
    wd_json_doc_t d;
    EXPECT_ERR("{\"a\":1,\"a\":2}", WD_EINVAL, "offset 7: duplicate key \"a\"");
    EXPECT_ERR("{\"\\u0061\":1,\"a\":2}", WD_EINVAL, "offset 12: duplicate key \"a\"");
    EXPECT_ERR("{\"\\u00e9\":1,\"\xc3\xa9\":2}", WD_EINVAL, NULL);
    EXPECT_ERR("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", WD_EINVAL, NULL);
    EXPECT_ERR("{\"\\/\":1,\"/\":2}", WD_EINVAL, NULL);
    EXPECT_ERR("{\"\":1,\"\":2}", WD_EINVAL, NULL);
    EXPECT_ERR("{\"a\":{\"b\":1,\"b\":2}}", WD_EINVAL, "offset 12: duplicate key \"b\"");
    /* The first repeat in document order is the one reported. */
    EXPECT_ERR("{\"a\":1,\"b\":2,\"b\":3,\"a\":4}", WD_EINVAL, "offset 13: duplicate key \"b\"");
    /* Same key in different objects, or as a value, is fine. */
    assert_int_equal(parse_z(&d, "{\"a\":{\"a\":1},\"b\":\"a\"}"), WD_OK);
    assert_int_equal(parse_z(&d, "[{\"a\":1},{\"a\":2}]"), WD_OK);
    /* Equal after decoding only: near misses are not duplicates. */
    assert_int_equal(parse_z(&d, "{\"a\":1,\"\\u0062\":2,\"a \":3,\"A\":4,\"\\u0061\\u0000\":5}"), WD_OK);
    /* 16 members: still the pairwise path; 17: the sorted path. Both must catch the last key. */
    char buf[2048];
    size_t len;
    for (int n = 15; n <= 18; n++) {
        size_t off = build_object(buf, sizeof buf, n, 0, n - 1, false, &len);
        char err[128], want[128];
        assert_int_equal(parse_n(&d, buf, len, err, sizeof err), WD_EINVAL);
        snprintf(want, sizeof want, "offset %zu: duplicate key \"k0\"", off);
        assert_string_equal(err, want);
        build_object(buf, sizeof buf, n, -1, 0, false, &len);
        assert_int_equal(parse_n(&d, buf, len, err, sizeof err), WD_OK);
        assert_int_equal(d.toks[0].size, (unsigned)n);
    }
}

static void test_duplicates_large(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char buf[N * 24];
    static wd_json_tok_t toks[2 * N + 1];
    wd_json_doc_t d;
    char err[128], want[128];
    size_t len;
    build_object(buf, sizeof buf, N, -1, 0, false, &len);
    assert_int_equal(wd_json_parse(&d, buf, len, toks, 2 * N + 1, 0, err, sizeof err), WD_OK);
    /* The sort threads its list through the keys' size fields; they must be restored to 0. */
    for (size_t i = 1; i < d.ntoks; i++) assert_int_equal(d.toks[i].size, 0);
    assert_int_equal(wd_json_obj_get(&d, 0, "k999"), (int)(2 * 999 + 2));
    assert_int_equal(wd_json_obj_get(&d, 0, "k0"), 2);

    const int cases[][3] = {{0, 1, 0}, {0, N - 1, 0}, {N - 2, N - 1, 0}, {500, 17, 0}, {999, 3, 1},
                            {7, 900, 1}, {123, 124, 1}};
    for (size_t c = 0; c < WD_ARRAY_LEN(cases); c++) {
        size_t off = build_object(buf, sizeof buf, N, cases[c][0], cases[c][1], cases[c][2], &len);
        assert_int_equal(wd_json_parse(&d, buf, len, toks, 2 * N + 1, 0, err, sizeof err), WD_EINVAL);
        /* The repeat comes before its original when dup_of > at; then the original is reported. */
        if (cases[c][0] < cases[c][1]) {
            if (cases[c][2]) /* written "\u006b<n>": not shown */
                snprintf(want, sizeof want, "offset %zu: duplicate key of %d" NOT_SHOWN, off,
                         6 + snprintf(NULL, 0, "%d", cases[c][0]));
            else
                snprintf(want, sizeof want, "offset %zu: duplicate key \"k%d\"", off, cases[c][0]);
            assert_string_equal(err, want);
        } else {
            assert_non_null(strstr(err, "duplicate key "));
        }
    }

    /* Three equal keys: the earliest repeat is named. Many objects at once with a dup in the last one. */
    size_t o = (size_t)snprintf(buf, sizeof buf, "{");
    for (int i = 0; i < 40; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "\"z%d\":1,", i);
    size_t first_repeat = o + 6;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "\"x\":1,\"x\":2,\"\\u0078\":3}");
    snprintf(want, sizeof want, "offset %zu: duplicate key \"x\"", first_repeat);
    assert_int_equal(wd_json_parse(&d, buf, o, toks, 2 * N + 1, 0, err, sizeof err), WD_EINVAL);
    assert_string_equal(err, want);
}

/* 100k members: a pairwise check would take ~5e9 key comparisons (seconds); the sort takes ms. */
static void test_duplicates_not_quadratic(void **state)
{
    (void)state;
    enum { N = 100000 };
    size_t cap = (size_t)N * 24;
    char *buf = malloc(cap);
    wd_json_tok_t *toks = malloc(sizeof *toks * (2 * N + 1));
    assert_non_null(buf);
    assert_non_null(toks);
    size_t len;
    build_object(buf, cap, N, -1, 0, false, &len);
    wd_json_doc_t d;
    char err[128];
    uint64_t t0 = wd_now_ns();
    assert_int_equal(wd_json_parse(&d, buf, len, toks, 2 * N + 1, 0, err, sizeof err), WD_OK);
    size_t off = build_object(buf, cap, N, N / 3, N - 1, true, &len);
    assert_int_equal(wd_json_parse(&d, buf, len, toks, 2 * N + 1, 0, err, sizeof err), WD_EINVAL);
    uint64_t ms = (wd_now_ns() - t0) / 1000000;
    char want[128];
    snprintf(want, sizeof want, "offset %zu: duplicate key of %d" NOT_SHOWN, off, 6 + snprintf(NULL, 0, "%d", N / 3));
    assert_string_equal(err, want);
    if (ms > 1500) fail_msg("100k-member object took %llu ms", (unsigned long long)ms);
    free(buf);
    free(toks);
}

/* ---------------------------------------------------------------- accessors */

static void test_obj_arr_get(void **state)
{
    (void)state;
    wd_json_doc_t d;
    const char *s = "{\"mod\\u0065l\":\"m\",\"messages\":[{\"role\":\"user\"},[1,2],3],\"x\":{\"model\":1},"
                    "\"\\u00e9t\\u00e9\":true,\"a\\u0000b\":0}";
    assert_int_equal(parse_z(&d, s), WD_OK);
    int m = wd_json_obj_get(&d, 0, "model");
    assert_int_equal(m, 2);
    assert_true(wd_json_str_eq(&d, m, "m"));
    int msgs = wd_json_obj_get(&d, 0, "messages");
    assert_int_equal(d.toks[msgs].type, WD_JSON_ARRAY);
    int e0 = wd_json_arr_get(&d, msgs, 0), e1 = wd_json_arr_get(&d, msgs, 1), e2 = wd_json_arr_get(&d, msgs, 2);
    assert_int_equal(d.toks[e0].type, WD_JSON_OBJECT);
    assert_true(wd_json_str_eq(&d, wd_json_obj_get(&d, e0, "role"), "user"));
    assert_int_equal(d.toks[e1].type, WD_JSON_ARRAY);
    assert_int_equal(wd_json_arr_get(&d, e1, 1), e1 + 2);
    int64_t v;
    assert_int_equal(wd_json_int(&d, e2, &v), WD_OK);
    assert_int_equal(v, 3);
    assert_int_equal(wd_json_arr_get(&d, msgs, 3), -1);
    assert_int_equal(wd_json_arr_get(&d, 0, 0), -1);       /* not an array */
    assert_int_equal(wd_json_obj_get(&d, msgs, "x"), -1);   /* not an object */
    assert_int_equal(wd_json_obj_get(&d, 0, "role"), -1);   /* only direct members */
    assert_int_equal(wd_json_obj_get(&d, 0, "mode"), -1);   /* prefix of an escaped key */
    assert_int_equal(wd_json_obj_get(&d, 0, "modell"), -1);
    assert_int_equal(wd_json_obj_get(&d, 0, "modem"), -1);
    assert_int_equal(d.toks[wd_json_obj_get(&d, 0, "\xc3\xa9t\xc3\xa9")].type, WD_JSON_TRUE);
    assert_int_equal(wd_json_obj_get(&d, 0, "a"), -1); /* "a\u0000b" is not "a" */
    int x = wd_json_obj_get(&d, 0, "x");
    assert_int_equal(d.toks[wd_json_obj_get(&d, x, "model")].type, WD_JSON_NUMBER);
    assert_int_equal(wd_json_obj_get(&d, -1, "x"), -1);
    assert_int_equal(wd_json_obj_get(&d, 999, "x"), -1);
    assert_int_equal(wd_json_obj_get(&d, 0, NULL), -1);
    assert_int_equal(wd_json_arr_get(&d, 12345, 0), -1);
}

static void test_str_decode_eq(void **state)
{
    (void)state;
    wd_json_doc_t d;
    const char *s = "[\"plain\",\"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t\",\"\\u0041\\u00e9\\u20ac\\uD83D\\uDE00\","
                    "\"nul\\u0000x\",\"\xe2\x82\xac\",\"\",1]";
    assert_int_equal(parse_z(&d, s), WD_OK);
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_json_str_decode(&d, 1, &b), WD_OK);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "plain", 5);
    /* Appends rather than replaces. */
    assert_int_equal(wd_json_str_decode(&d, 2, &b), WD_OK);
    const char want2[] = "plainq\"b\\s/b\bf\fn\nr\rt\t";
    assert_int_equal(b.len, sizeof want2 - 1);
    assert_memory_equal(b.data, want2, b.len);
    wd_buf_reset(&b);
    assert_int_equal(wd_json_str_decode(&d, 3, &b), WD_OK);
    const char want3[] = "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_int_equal(b.len, sizeof want3 - 1);
    assert_memory_equal(b.data, want3, b.len);
    wd_buf_reset(&b);
    assert_int_equal(wd_json_str_decode(&d, 4, &b), WD_OK);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "nul\0x", 5);
    wd_buf_reset(&b);
    assert_int_equal(wd_json_str_decode(&d, 6, &b), WD_OK);
    assert_int_equal(b.len, 0);
    assert_int_equal(wd_json_str_decode(&d, 7, &b), WD_EINVAL); /* a number */
    assert_int_equal(wd_json_str_decode(&d, 0, &b), WD_EINVAL); /* the array */
    assert_int_equal(wd_json_str_decode(&d, 99, &b), WD_EINVAL);
    wd_buf_free(&b);
    /* A capped buffer fails cleanly and is left as it was. */
    wd_buf_t small;
    wd_buf_init(&small, 4);
    assert_int_equal(wd_buf_append(&small, "zz", 2), WD_OK);
    assert_int_equal(wd_json_str_decode(&d, 1, &small), WD_E2BIG);
    assert_int_equal(small.len, 2);
    wd_buf_free(&small);

    assert_true(wd_json_str_eq(&d, 1, "plain"));
    assert_false(wd_json_str_eq(&d, 1, "plai"));
    assert_false(wd_json_str_eq(&d, 1, "plainx"));
    assert_true(wd_json_str_eq(&d, 3, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    assert_false(wd_json_str_eq(&d, 3, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98"));
    assert_false(wd_json_str_eq(&d, 3, "A"));
    assert_false(wd_json_str_eq(&d, 4, "nul")); /* NUL inside the value: never equals a C string */
    assert_true(wd_json_str_eq(&d, 5, "\xe2\x82\xac"));
    assert_true(wd_json_str_eq(&d, 6, ""));
    assert_false(wd_json_str_eq(&d, 7, "1"));
    assert_false(wd_json_str_eq(&d, 1, NULL));
    assert_false(wd_json_str_eq(&d, -3, "plain"));
}

static void test_raw_int(void **state)
{
    (void)state;
    wd_json_doc_t d;
    const char *s = "{\"s\":\"a\\\"b\",\"o\":{ \"k\" : [ 1 ] },\"n\":-12.5e3,\"i\":[0,-0,42,9223372036854775807,"
                    "-9223372036854775808,9223372036854775808,-9223372036854775809,1.0,1e2,"
                    "100000000000000000000000,-922337203685477580820.5,1e99999]}";
    assert_int_equal(parse_z(&d, s), WD_OK);
    wd_str_t r = wd_json_raw(&d, wd_json_obj_get(&d, 0, "s"));
    assert_int_equal(r.len, 6);
    assert_memory_equal(r.p, "\"a\\\"b\"", 6);
    r = wd_json_raw(&d, wd_json_obj_get(&d, 0, "o"));
    assert_int_equal(r.len, 15);
    assert_memory_equal(r.p, "{ \"k\" : [ 1 ] }", 15);
    r = wd_json_raw(&d, wd_json_obj_get(&d, 0, "n"));
    assert_int_equal(r.len, 7);
    assert_memory_equal(r.p, "-12.5e3", 7);
    r = wd_json_raw(&d, 0);
    assert_int_equal(r.len, strlen(s));
    r = wd_json_raw(&d, 1000);
    assert_null(r.p);
    assert_int_equal(r.len, 0);

    int64_t v = 77;
    assert_int_equal(wd_json_int(&d, wd_json_obj_get(&d, 0, "n"), &v), WD_EINVAL);
    assert_int_equal(wd_json_int(&d, wd_json_obj_get(&d, 0, "s"), &v), WD_EINVAL);
    assert_int_equal(v, 77);
    int arr = wd_json_obj_get(&d, 0, "i");
    const struct {
        int rc;
        int64_t v;
    } want[] = {{WD_OK, 0},         {WD_OK, 0},         {WD_OK, 42},        {WD_OK, INT64_MAX}, {WD_OK, INT64_MIN},
                {WD_E2BIG, 0},      {WD_E2BIG, 0},      {WD_EINVAL, 0},     {WD_EINVAL, 0},     {WD_E2BIG, 0},
                {WD_EINVAL, 0},     {WD_EINVAL, 0}};
    for (size_t i = 0; i < WD_ARRAY_LEN(want); i++) {
        v = 77;
        int rc = wd_json_int(&d, wd_json_arr_get(&d, arr, i), &v);
        assert_int_equal(rc, want[i].rc);
        if (rc == WD_OK) assert_true(v == want[i].v);
        else assert_int_equal(v, 77);
    }
}

/* ---------------------------------------------------------------- edits */

static void test_apply_edits(void **state)
{
    (void)state;
    const char *src = "0123456789";
    wd_buf_t out;
    wd_buf_init(&out, 0);
    wd_json_edit_t e[3] = {{1, 3, WD_STR("ab")}, {3, 3, WD_STR("X")}, {8, 10, WD_STR("")}};
    assert_int_equal(wd_json_apply_edits(src, 10, e, 3, &out), WD_OK);
    assert_int_equal(out.len, 9);
    assert_memory_equal(out.data, "0abX34567", 9);
    /* Appends to what out already holds. */
    assert_int_equal(wd_json_apply_edits(src, 10, NULL, 0, &out), WD_OK);
    assert_int_equal(out.len, 19);
    assert_memory_equal(out.data + 9, src, 10);
    /* Two insertions at one offset keep array order. */
    wd_buf_reset(&out);
    wd_json_edit_t ins[2] = {{5, 5, WD_STR("a")}, {5, 5, WD_STR("b")}};
    assert_int_equal(wd_json_apply_edits(src, 10, ins, 2, &out), WD_OK);
    assert_int_equal(out.len, 12);
    assert_memory_equal(out.data, "01234ab56789", 12);

    /* Rejections leave out unchanged. */
    wd_buf_reset(&out);
    assert_int_equal(wd_buf_append(&out, "keep", 4), WD_OK);
    wd_json_edit_t overlap[2] = {{1, 5, WD_STR("a")}, {4, 6, WD_STR("b")}};
    assert_int_equal(wd_json_apply_edits(src, 10, overlap, 2, &out), WD_EINVAL);
    wd_json_edit_t descending[2] = {{5, 6, WD_STR("a")}, {1, 2, WD_STR("b")}};
    assert_int_equal(wd_json_apply_edits(src, 10, descending, 2, &out), WD_EINVAL);
    wd_json_edit_t past[1] = {{5, 11, WD_STR("a")}};
    assert_int_equal(wd_json_apply_edits(src, 10, past, 1, &out), WD_EINVAL);
    wd_json_edit_t inverted[1] = {{6, 5, WD_STR("a")}};
    assert_int_equal(wd_json_apply_edits(src, 10, inverted, 1, &out), WD_EINVAL);
    wd_json_edit_t nullwith[1] = {{1, 2, {NULL, 3}}};
    assert_int_equal(wd_json_apply_edits(src, 10, nullwith, 1, &out), WD_EINVAL);
    /* Insertion just inside a replaced span's end is overlap too. */
    wd_json_edit_t inside[2] = {{2, 6, WD_STR("a")}, {5, 5, WD_STR("b")}};
    assert_int_equal(wd_json_apply_edits(src, 10, inside, 2, &out), WD_EINVAL);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 4);
    wd_buf_free(&out);

    wd_buf_t capped;
    wd_buf_init(&capped, 12);
    assert_int_equal(wd_buf_append(&capped, "xy", 2), WD_OK);
    wd_json_edit_t grow[1] = {{0, 0, WD_STR("abc")}};
    assert_int_equal(wd_json_apply_edits(src, 10, grow, 1, &capped), WD_E2BIG);
    assert_int_equal(capped.len, 2);
    wd_buf_free(&capped);
}

/* Applies edit_set and checks the result re-parses, holds the new value, and keeps everything else. */
static void set_and_check(const char *src, const char *path_obj_key, const char *key, const char *raw,
                          const char *want)
{
    wd_json_doc_t d;
    char err[256];
    assert_int_equal(wd_json_parse(&d, src, strlen(src), g_toks, MAXTOK, 0, err, sizeof err), WD_OK);
    int obj = path_obj_key ? wd_json_obj_get(&d, 0, path_obj_key) : 0;
    assert_true(obj >= 0);
    wd_json_edit_t e;
    wd_buf_t scratch, out;
    wd_buf_init(&scratch, 0);
    wd_buf_init(&out, 0);
    assert_int_equal(wd_json_edit_set(&d, obj, key, wd_strz(raw), &e, &scratch), WD_OK);
    assert_ptr_equal(e.with.p, scratch.data);
    assert_int_equal(wd_json_apply_edits(src, strlen(src), &e, 1, &out), WD_OK);
    if (want && (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0))
        fail_msg("edit of %s gave %.*s, want %s", src, (int)out.len, out.data, want);
    wd_json_doc_t d2;
    static wd_json_tok_t toks2[MAXTOK];
    if (wd_json_parse(&d2, out.data, out.len, toks2, MAXTOK, 0, err, sizeof err) != WD_OK)
        fail_msg("edit output does not parse: %s: %.*s", err, (int)out.len, out.data);
    int obj2 = path_obj_key ? wd_json_obj_get(&d2, 0, path_obj_key) : 0;
    wd_str_t got = wd_json_raw(&d2, wd_json_obj_get(&d2, obj2, key));
    assert_int_equal(got.len, strlen(raw));
    assert_memory_equal(got.p, raw, got.len);
    /* Also valid for jansson, the reference. */
    json_error_t je;
    json_t *j = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!j) fail_msg("jansson rejects edit output: %s: %.*s", je.text, (int)out.len, out.data);
    json_decref(j);
    wd_buf_free(&scratch);
    wd_buf_free(&out);
}

static void test_edit_set(void **state)
{
    (void)state;
    const char *chat = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}";
    set_and_check(chat, NULL, "model", "\"llama-3.1-70b\"",
                  "{\"model\":\"llama-3.1-70b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}");
    /* Absent: inserted first, followed by a comma. */
    set_and_check("{\"messages\":[],\"stream\":false}", NULL, "model", "\"m\"",
                  "{\"model\":\"m\",\"messages\":[],\"stream\":false}");
    /* Present under an escaped spelling: replaced in place, no duplicate created. */
    set_and_check("{\"messages\":[],\"mod\\u0065l\":\"gpt\"}", NULL, "model", "\"m\"",
                  "{\"messages\":[],\"mod\\u0065l\":\"m\"}");
    /* Empty objects: no stray comma. */
    set_and_check("{}", NULL, "model", "\"m\"", "{\"model\":\"m\"}");
    set_and_check(" { \n } ", NULL, "model", "\"m\"", " {\"model\":\"m\" \n } ");
    set_and_check("{\"a\":1}", NULL, "model", "\"m\"", "{\"model\":\"m\",\"a\":1}");
    /* Non-string values and non-string replacements. */
    set_and_check("{\"a\":1,\"n\":{\"deep\":[1,2]}}", NULL, "n", "null", "{\"a\":1,\"n\":null}");
    set_and_check("{\"a\":1,\"n\":5}", NULL, "n", "{\"include_usage\":true}", "{\"a\":1,\"n\":{\"include_usage\":true}}");
    /* Nested object. */
    set_and_check("{\"stream_options\":{},\"x\":1}", "stream_options", "include_usage", "true",
                  "{\"stream_options\":{\"include_usage\":true},\"x\":1}");
    /* A key that needs escaping is inserted escaped, and found again. */
    set_and_check("{\"a\":1}", NULL, "we\"ird\\key\n", "2", "{\"we\\\"ird\\\\key\\n\":2,\"a\":1}");

    wd_json_doc_t d;
    wd_json_edit_t e;
    wd_buf_t sc;
    wd_buf_init(&sc, 0);
    assert_int_equal(parse_z(&d, "[{\"a\":1}]"), WD_OK);
    assert_int_equal(wd_json_edit_set(&d, 0, "a", WD_STR("1"), &e, &sc), WD_EINVAL); /* array */
    assert_int_equal(wd_json_edit_set(&d, 1, NULL, WD_STR("1"), &e, &sc), WD_EINVAL);
    assert_int_equal(wd_json_edit_set(&d, 1, "a", WD_STR(""), &e, &sc), WD_EINVAL);
    assert_int_equal(wd_json_edit_set(&d, 7, "a", WD_STR("1"), &e, &sc), WD_EINVAL);
    /* scratch is reset on each call. */
    assert_int_equal(wd_buf_append(&sc, "junk", 4), WD_OK);
    assert_int_equal(wd_json_edit_set(&d, 1, "b", WD_STR("2"), &e, &sc), WD_OK);
    assert_int_equal(sc.len, 6);
    assert_int_equal(e.with.len, 6);
    assert_memory_equal(e.with.p, "\"b\":2,", 6);
    assert_int_equal(e.start, 2);
    assert_int_equal(e.end, 2);
    wd_buf_free(&sc);
    /* A capped scratch fails cleanly. */
    wd_buf_init(&sc, 4);
    assert_int_equal(wd_json_edit_set(&d, 1, "long_key", WD_STR("2"), &e, &sc), WD_E2BIG);
    wd_buf_free(&sc);
}

/* Two edits at once (the gateway's forward rewrite): one scratch buffer per edit. */
static void test_edit_two(void **state)
{
    (void)state;
    const char *src = "{\"stream\":true,\"model\":\"a\",\"messages\":[],\"stream_options\":{\"x\":1}}";
    wd_json_doc_t d;
    assert_int_equal(parse_z(&d, src), WD_OK);
    wd_json_edit_t e[2];
    wd_buf_t s1, s2, out;
    wd_buf_init(&s1, 0);
    wd_buf_init(&s2, 0);
    wd_buf_init(&out, 0);
    assert_int_equal(wd_json_edit_set(&d, 0, "model", WD_STR("\"upstream-model\""), &e[0], &s1), WD_OK);
    int so = wd_json_obj_get(&d, 0, "stream_options");
    assert_int_equal(wd_json_edit_set(&d, so, "include_usage", WD_STR("true"), &e[1], &s2), WD_OK);
    assert_true(e[0].end <= e[1].start);
    assert_int_equal(wd_json_apply_edits(src, strlen(src), e, 2, &out), WD_OK);
    const char *want = "{\"stream\":true,\"model\":\"upstream-model\",\"messages\":[],"
                       "\"stream_options\":{\"include_usage\":true,\"x\":1}}";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    /* In the wrong order they are refused. */
    wd_json_edit_t rev[2] = {e[1], e[0]};
    wd_buf_reset(&out);
    assert_int_equal(wd_json_apply_edits(src, strlen(src), rev, 2, &out), WD_EINVAL);
    wd_buf_free(&s1);
    wd_buf_free(&s2);
    wd_buf_free(&out);
}

/* ---------------------------------------------------------------- differential against jansson */

/* Where jansson 2.14 and this scanner disagree on purpose (RFC 8259 allows both; jansson's limits are
 * implementation limits of its DOM):
 *  - jansson rejects integers outside json_int_t and reals that overflow double ("too big integer",
 *    "real number overflow", json_error_numeric_overflow); we accept any number the grammar allows
 *    and leave range to wd_json_int.
 *  - jansson rejects "\u0000" inside object keys even with JSON_ALLOW_NUL (json_error_null_byte_in_key);
 *    we accept it (such a key is simply never found by a C-string lookup).
 *  - jansson (a bug in its lexer: it cannot unget a NUL byte) skips one NUL byte directly after a number
 *    or literal, so it accepts "1\0" and "[1\0,2]" as 1 and [1,2]. We reject any raw NUL outside a
 *    string. The harness checks such cases by deleting that NUL byte and demanding full agreement.
 * Flags used for jansson: JSON_DECODE_ANY (scalars at top level), JSON_REJECT_DUPLICATES, JSON_ALLOW_NUL.
 * Depth: jansson's limit is 2048, so we parse with max_depth 2048 here; both then agree. */
enum { SAME = 0, DIFF_NUMBER_RANGE, DIFF_NUL_KEY, DIFF_NUL_AFTER_SCALAR };

static bool jansson_intentional(const json_error_t *e)
{
    enum json_error_code c = json_error_code(e);
    return c == json_error_numeric_overflow || c == json_error_null_byte_in_key;
}

static bool compare_value(const wd_json_doc_t *d, int tok, json_t *j, char *why, size_t whylen);

/* Structural invariants every accepted token array must satisfy. */
static bool check_tokens(const wd_json_doc_t *d, char *why, size_t whylen)
{
    if (d->ntoks == 0 || d->ntoks > d->len / 2 + 1) {
        snprintf(why, whylen, "token count %zu for %zu bytes", d->ntoks, d->len);
        return false;
    }
    for (size_t i = 0; i < d->ntoks; i++) {
        const wd_json_tok_t *t = &d->toks[i];
        bool ok = t->start <= t->end && t->end <= d->len && t->next > i && t->next <= d->ntoks &&
                  (i == 0 ? t->parent == -1 : (t->parent >= 0 && (size_t)t->parent < i));
        if (ok && t->type != WD_JSON_OBJECT && t->type != WD_JSON_ARRAY) ok = t->size == 0 && t->next == i + 1;
        if (ok && i > 0) {
            const wd_json_tok_t *p = &d->toks[t->parent];
            ok = (p->type == WD_JSON_OBJECT || p->type == WD_JSON_ARRAY) && p->next >= t->next && p->start < t->start;
        }
        if (!ok) {
            snprintf(why, whylen, "token %zu inconsistent", i);
            return false;
        }
    }
    if (d->toks[0].next != d->ntoks) {
        snprintf(why, whylen, "root does not span all tokens");
        return false;
    }
    return true;
}

static bool compare_value(const wd_json_doc_t *d, int tok, json_t *j, char *why, size_t whylen)
{
    if (tok < 0 || (size_t)tok >= d->ntoks) {
        snprintf(why, whylen, "missing token");
        return false;
    }
    const wd_json_tok_t *t = &d->toks[tok];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (t->type != WD_JSON_OBJECT || t->size != json_object_size(j)) {
            snprintf(why, whylen, "token %d: object mismatch", tok);
            return false;
        }
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            if (!wd_json_str_eq(d, wd_json_obj_get(d, tok, key) - 1, key) ||
                !compare_value(d, wd_json_obj_get(d, tok, key), v, why, whylen)) {
                if (!*why) snprintf(why, whylen, "member \"%s\" not found", key);
                return false;
            }
        }
        /* And the other way: each of our keys, decoded, names a jansson member. */
        int k = tok + 1;
        for (uint32_t i = 0; i < t->size; i++) {
            wd_buf_t b;
            wd_buf_init(&b, 0);
            bool found = wd_json_str_decode(d, k, &b) == WD_OK && json_object_getn(j, b.data ? b.data : "", b.len);
            wd_buf_free(&b);
            if (!found) {
                snprintf(why, whylen, "token %d: our key unknown to jansson", k);
                return false;
            }
            k = (int)d->toks[k + 1].next;
        }
        return true;
    }
    case JSON_ARRAY:
        if (t->type != WD_JSON_ARRAY || t->size != json_array_size(j)) {
            snprintf(why, whylen, "token %d: array mismatch", tok);
            return false;
        }
        for (size_t i = 0; i < json_array_size(j); i++)
            if (!compare_value(d, wd_json_arr_get(d, tok, i), json_array_get(j, i), why, whylen)) return false;
        return true;
    case JSON_STRING: {
        wd_buf_t b;
        wd_buf_init(&b, 0);
        bool ok = t->type == WD_JSON_STRING && wd_json_str_decode(d, tok, &b) == WD_OK &&
                  b.len == json_string_length(j) && (b.len == 0 || memcmp(b.data, json_string_value(j), b.len) == 0);
        /* str_eq must agree with decode whenever the value is a C string. */
        if (ok && !memchr(json_string_value(j), 0, json_string_length(j)))
            ok = wd_json_str_eq(d, tok, json_string_value(j));
        wd_buf_free(&b);
        if (!ok) snprintf(why, whylen, "token %d: string value differs", tok);
        return ok;
    }
    case JSON_INTEGER: {
        int64_t v;
        if (t->type != WD_JSON_NUMBER || wd_json_int(d, tok, &v) != WD_OK || v != json_integer_value(j)) {
            snprintf(why, whylen, "token %d: integer differs", tok);
            return false;
        }
        return true;
    }
    case JSON_REAL: {
        int64_t v;
        wd_str_t r = wd_json_raw(d, tok);
        char tmp[512];
        if (t->type != WD_JSON_NUMBER || wd_json_int(d, tok, &v) != WD_EINVAL || r.len >= sizeof tmp) {
            snprintf(why, whylen, "token %d: real differs", tok);
            return false;
        }
        memcpy(tmp, r.p, r.len);
        tmp[r.len] = 0;
        if (strtod(tmp, NULL) != json_real_value(j)) {
            snprintf(why, whylen, "token %d: real value differs", tok);
            return false;
        }
        return true;
    }
    case JSON_TRUE: return t->type == WD_JSON_TRUE || (snprintf(why, whylen, "want true"), false);
    case JSON_FALSE: return t->type == WD_JSON_FALSE || (snprintf(why, whylen, "want false"), false);
    case JSON_NULL: return t->type == WD_JSON_NULL || (snprintf(why, whylen, "want null"), false);
    }
    return false;
}

typedef enum { AGREE_REJECT, AGREE_ACCEPT, INTENTIONAL, MISMATCH } diff_t;

static wd_json_tok_t g_dtoks[1 << 16];

static diff_t differential(const char *s, size_t n, char *why, size_t whylen)
{
    why[0] = 0;
    wd_json_doc_t d;
    char err[256];
    size_t cap = n / 2 + 1;
    assert_true(cap <= WD_ARRAY_LEN(g_dtoks));
    int rc = wd_json_parse(&d, s, n, g_dtoks, cap, 2048, err, sizeof err);
    json_error_t je;
    json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j && jansson_intentional(&je)) return INTENTIONAL;
    if (rc == WD_E2BIG && strstr(err, "tokens")) {
        snprintf(why, whylen, "N/2+1 tokens were not enough: %.180s", err);
        json_decref(j);
        return MISMATCH;
    }
    if (rc != WD_OK && j) {
        /* DIFF_NUL_AFTER_SCALAR: find the NUL jansson skipped and compare without it. */
        for (size_t i = 1; i < n; i++) {
            if (s[i] != 0 || !((s[i - 1] >= '0' && s[i - 1] <= '9') || (s[i - 1] >= 'a' && s[i - 1] <= 'z'))) continue;
            char *t = malloc(n);
            assert_non_null(t);
            memcpy(t, s, i);
            memcpy(t + i, s + i + 1, n - i - 1);
            diff_t r = differential(t, n - 1, why, whylen);
            free(t);
            json_decref(j);
            return r == AGREE_ACCEPT || r == INTENTIONAL ? INTENTIONAL : MISMATCH;
        }
    }
    if ((rc == WD_OK) != (j != NULL)) {
        snprintf(why, whylen, "we %s (%.100s), jansson %s (%.100s)", rc == WD_OK ? "accept" : "reject", err,
                 j ? "accepts" : "rejects", j ? "" : je.text);
        json_decref(j);
        return MISMATCH;
    }
    if (!j) return AGREE_REJECT;
    bool ok = check_tokens(&d, why, whylen) && compare_value(&d, 0, j, why, whylen);
    json_decref(j);
    return ok ? AGREE_ACCEPT : MISMATCH;
}

typedef struct {
    const char *s;
    size_t n;
    bool valid;  /* RFC 8259 + our rules */
    int jansson; /* SAME or the intentional difference */
} case_t;

#define OK(lit) {lit, sizeof(lit) - 1, true, SAME}
#define BAD(lit) {lit, sizeof(lit) - 1, false, SAME}
#define OK_DIFF(lit, why) {lit, sizeof(lit) - 1, true, why}
#define BAD_DIFF(lit, why) {lit, sizeof(lit) - 1, false, why}

static const case_t cases[] = {
    /* numbers */
    OK("0"), OK("-0"), OK("1"), OK("-1"), OK("123456789"), OK("1.5"), OK("-1.5e10"), OK("1e5"), OK("1E+5"),
    OK("1e-5"), OK("0.0"), OK("0e0"), OK("-0.0e-0"), OK("10"), OK("1.25E-300"), OK("1e-400"),
    OK("9223372036854775807"), OK("-9223372036854775808"), OK("[0,1,-1,0.5]"),
    BAD("01"), BAD("-01"), BAD("00"), BAD("+1"), BAD(".5"), BAD("1."), BAD("1.e5"), BAD("1e"), BAD("1e+"),
    BAD("-"), BAD("--1"), BAD("1..2"), BAD("0x10"), BAD("NaN"), BAD("Infinity"), BAD("-Infinity"), BAD("1 2"),
    BAD("1e5.5"), BAD("- 1"), BAD("01.5"), BAD("1E"), BAD("1.5e+-3"), BAD("[-]"), BAD("[1.]"), BAD("-a"),
    BAD("1e1e1"), BAD("[01]"), BAD("0."), BAD("-.5"),
    OK_DIFF("9223372036854775808", DIFF_NUMBER_RANGE), OK_DIFF("-9223372036854775809", DIFF_NUMBER_RANGE),
    OK_DIFF("[99999999999999999999999]", DIFF_NUMBER_RANGE), OK_DIFF("1e400", DIFF_NUMBER_RANGE),
    OK_DIFF("{\"a\":-1e999}", DIFF_NUMBER_RANGE),
    /* literals */
    OK("true"), OK("false"), OK("null"), OK("[true,false,null]"),
    BAD("tru"), BAD("True"), BAD("nul"), BAD("nulll"), BAD("falsee"), BAD("t"), BAD("fals"), BAD("truefalse"),
    BAD("undefined"), BAD("[nul]"), BAD("NULL"), BAD("[true false]"),
    /* whitespace */
    OK(" 1 "), OK("\t\n\r 1\n"), OK(" [ 1 , 2 ] "), OK("{ \"a\" : 1 }"), OK("\n{\n}\n"),
    BAD(""), BAD(" "), BAD("\n\t"), BAD("\f1"), BAD("\v1"), BAD("1\xc2\xa0"), BAD("[1,\x0b" "2]"), BAD("\xef\xbb\xbf{}"),
    /* strings and escapes */
    OK("\"\""), OK("\" \""), OK("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), OK("\"\\u0041\""), OK("\"\\u00e9\""), OK("\"\\u00E9\""),
    OK("\"\\uD83D\\uDE00\""), OK("\"\\udbff\\udfff\""), OK("\"\\ud800\\udc00\""), OK("\"\\u0000\""),
    OK("\"a\\u0000b\""), OK("\"\\uffff\""), OK("\"\\ufeff\""), OK("\"\x7f\""), OK("\"'\""), OK("\"/\""),
    OK("\"\\u20AC\\u20ac\""), OK("[\"a\",\"b\"]"),
    BAD("\""), BAD("\"abc"), BAD("\"\\\""), BAD("\"\\x\""), BAD("\"\\U0041\""), BAD("\"\\u00\""),
    BAD("\"\\u00g0\""), BAD("\"\\'\""), BAD("\"\\a\""), BAD("\"\\0\""), BAD("\"\x01\""), BAD("\"\x1f\""),
    BAD("\"\t\""), BAD("\"\n\""), BAD("\"\x00\""), BAD("'a'"), BAD("\"\\u\""), BAD("\"\\u12\""),
    BAD("\"\\uD800\""), BAD("\"\\uDC00\""), BAD("\"\\uDFFF\""), BAD("\"\\uD800\\u0041\""), BAD("\"\\uD800\\uD800\""),
    BAD("\"\\uDC00\\uD800\""), BAD("\"\\uD800x\""), BAD("\"\\uD800\\\""), BAD("\"\\uD800\\n\""),
    BAD("\"\\uDBFF\\uE000\""), BAD("\"\\uD83D\\u\""), BAD("\"\\uD83D\\uDE0\""), BAD("\"a\\\""),
    /* raw UTF-8 */
    OK("\"\xc3\xa9\""), OK("\"\xe2\x82\xac\""), OK("\"\xf0\x9f\x98\x80\""), OK("\"\xf4\x8f\xbf\xbf\""),
    OK("\"\xef\xbf\xbf\""), OK("\"\xed\x9f\xbf\""), OK("\"\xee\x80\x80\""), OK("\"\xc2\x80\""), OK("\"\xdf\xbf\""),
    OK("\"\xe0\xa0\x80\""), OK("\"\xf0\x90\x80\x80\""), OK("{\"\xc3\xa9\":\"\xe2\x82\xac\"}"),
    BAD("\"\xc0\x80\""), BAD("\"\xc1\xbf\""), BAD("\"\xe0\x80\xaf\""), BAD("\"\xe0\x9f\xbf\""),
    BAD("\"\xf0\x80\x80\x80\""), BAD("\"\xf0\x8f\xbf\xbf\""), BAD("\"\xed\xa0\x80\""), BAD("\"\xed\xbf\xbf\""),
    BAD("\"\xf4\x90\x80\x80\""), BAD("\"\xf5\x80\x80\x80\""), BAD("\"\xf8\x88\x80\x80\x80\""), BAD("\"\xff\""),
    BAD("\"\xfe\""), BAD("\"\x80\""), BAD("\"\xbf\""), BAD("\"\xc3\""), BAD("\"\xe2\x82\""), BAD("\"\xf0\x9f\x98\""),
    BAD("\"\xc3\x28\""), BAD("\"\xe2\x28\xa1\""), BAD("\"\xe2\x82\x28\""), BAD("\"\xf0\x9f\x28\x80\""),
    BAD("[\xc3\xa9]"), BAD("\xc3\xa9"), BAD("{\"a\":1}\xff"), BAD("\"\xed\xa0\xbd\xed\xb8\x80\""),
    /* structure */
    OK("[]"), OK("{}"), OK("[1,2,3]"), OK("[[[]]]"), OK("{\"a\":{\"b\":[1,{\"c\":null}]}}"), OK("{\"a\":1,\"b\":2}"),
    OK("{\"\":1}"), OK("[{},[],{}]"), OK("[\"]\"]"), OK("{\"}\":\"{\"}"), OK("[[1],[2,[3]]]"),
    BAD("["), BAD("]"), BAD("[1"), BAD("[1,"), BAD("[1,]"), BAD("[,1]"), BAD("[,]"), BAD("[1,,2]"), BAD("[1 2]"),
    BAD("{"), BAD("}"), BAD("{\"a\"}"), BAD("{\"a\":}"), BAD("{\"a\" 1}"), BAD("{\"a\":1,}"), BAD("{,\"a\":1}"),
    BAD("{1:2}"), BAD("{a:1}"), BAD("{\"a\":1 \"b\":2}"), BAD("{\"a\":1;\"b\":2}"), BAD("[1]]"), BAD("{}}"),
    BAD("[]x"), BAD("{}{}"), BAD("[1]\x00"), BAD("\x00"), BAD("[\"a\":1]"), BAD("{\"a\",1}"), BAD("{\"a\"::1}"),
    BAD("{'a':1}"), BAD("[}"), BAD("{]"), BAD("{\"a\":1]"), BAD("[1}"), BAD("{\"a\":[}"), BAD("{\"a\""),
    BAD("{\"a\":"), BAD("{\"a\":1"), BAD("[[]"), BAD("[{]}"), BAD("1,"), BAD("[1]/**/"), BAD("//\n1"),
    /* duplicate keys */
    OK("{\"a\":{\"a\":1}}"), OK("[{\"a\":1},{\"a\":2}]"), OK("{\"a\":1,\"A\":2}"), OK("{\"a\":1,\"a \":2}"),
    OK("{\"\\u00e9\":1,\"e\":2}"), OK("{\"ab\":1,\"a\\u0062c\":2}"), OK("{\"a\":\"a\",\"b\":\"a\"}"),
    BAD("{\"a\":1,\"a\":2}"), BAD("{\"a\":1,\"\\u0061\":2}"), BAD("{\"\\u0061\":1,\"a\":2}"), BAD("{\"\":1,\"\":2}"),
    BAD("{\"\\u00e9\":1,\"\xc3\xa9\":2}"), BAD("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"),
    BAD("{\"a\":{\"b\":1,\"b\":2}}"), BAD("[{\"x\":1},{\"x\":1,\"x\":1}]"), BAD("{\"\\/\":1,\"/\":2}"),
    BAD("{\"\\n\":1,\"\\u000a\":2}"), BAD("{\"a\":1,\"b\":2,\"a\":3}"), BAD("{\"a\":null,\"a\":null}"),
    /* NUL in keys */
    OK_DIFF("{\"a\\u0000\":1}", DIFF_NUL_KEY), OK_DIFF("{\"\\u0000\":1,\"\":2}", DIFF_NUL_KEY),
    BAD_DIFF("{\"\\u0000\":1,\"\\u0000\":2}", DIFF_NUL_KEY), /* both reject, for different reasons */
    /* jansson's lexer swallows one NUL byte after a number or literal */
    BAD_DIFF("1\x00", DIFF_NUL_AFTER_SCALAR), BAD_DIFF("[1\x00,2]", DIFF_NUL_AFTER_SCALAR),
    BAD_DIFF("{\"a\":true\x00}", DIFF_NUL_AFTER_SCALAR),
};

static void test_differential_table(void **state)
{
    (void)state;
    size_t agree = 0, intentional = 0;
    assert_true(WD_ARRAY_LEN(cases) >= 150);
    for (size_t i = 0; i < WD_ARRAY_LEN(cases); i++) {
        const case_t *c = &cases[i];
        wd_json_doc_t d;
        char err[256], why[256];
        int rc = wd_json_parse(&d, c->s, c->n, g_toks, MAXTOK, 0, err, sizeof err);
        if ((rc == WD_OK) != c->valid)
            fail_msg("case %zu %.*s: rc %d (%s), want %s", i, (int)c->n, c->s, rc, err, c->valid ? "accept" : "reject");
        diff_t r = differential(c->s, c->n, why, sizeof why);
        if (c->jansson == SAME) {
            if (r != (c->valid ? AGREE_ACCEPT : AGREE_REJECT))
                fail_msg("case %zu %.*s: differential %d: %s", i, (int)c->n, c->s, (int)r, why);
            agree++;
        } else {
            /* The documented difference must really be the one jansson reports. */
            json_error_t je;
            json_t *j = json_loadb(c->s, c->n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
            if (c->jansson == DIFF_NUL_AFTER_SCALAR) {
                assert_non_null(j); /* jansson accepts what we reject */
                json_decref(j);
            } else {
                assert_null(j);
                assert_int_equal(json_error_code(&je), c->jansson == DIFF_NUMBER_RANGE ? json_error_numeric_overflow
                                                                                       : json_error_null_byte_in_key);
            }
            assert_int_equal(r, INTENTIONAL);
            intentional++;
        }
    }
    assert_true(agree >= 150);
    assert_true(intentional > 0);
}

/* ---- randomized: generate documents, mutate some, and demand agreement */

static uint64_t g_rng;
static uint64_t rnd(void)
{
    /* xorshift64*: deterministic per seed, so a failure is reproducible with WD_JSON_SEED. */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); }

typedef struct {
    char *p;
    size_t len, cap;
} gbuf_t;

static void put(gbuf_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) return; /* truncated documents are just more invalid inputs */
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void puts_(gbuf_t *b, const char *z) { put(b, z, strlen(z)); }

static void gen_ws(gbuf_t *b)
{
    static const char *ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    puts_(b, ws[rn(WD_ARRAY_LEN(ws))]);
}

static void gen_string(gbuf_t *b, bool key)
{
    static const char *pieces[] = {"a", "b", "model", "x", "\\u0061", "\\u0062", "\\n", "\\\"", "\\\\", "\\/",
                                   "\\u00e9", "\xc3\xa9", "\\uD83D\\uDE00", "\xf0\x9f\x98\x80", "\xe2\x82\xac",
                                   "\\u20ac", "\\u0000", " ", "\\t", "\\b\\f\\r", "\\uFFFF", "\xef\xbf\xbf", "0"};
    put(b, "\"", 1);
    unsigned n = key ? rn(3) : rn(6);
    for (unsigned i = 0; i < n; i++) {
        const char *p = pieces[rn(WD_ARRAY_LEN(pieces))];
        if (key && strcmp(p, "\\u0000") == 0) continue; /* see DIFF_NUL_KEY */
        puts_(b, p);
    }
    put(b, "\"", 1);
}

static void gen_number(gbuf_t *b)
{
    char tmp[64];
    switch (rn(5)) {
    case 0: snprintf(tmp, sizeof tmp, "%d", (int)rn(2000) - 1000); break;
    case 1: snprintf(tmp, sizeof tmp, "%s%u.%u", rn(2) ? "-" : "", rn(100), rn(1000)); break;
    case 2: snprintf(tmp, sizeof tmp, "%u%s%s%u", rn(10), rn(2) ? "e" : "E", rn(3) == 0 ? "-" : rn(2) ? "+" : "", rn(300)); break;
    case 3: snprintf(tmp, sizeof tmp, "%lld", (long long)(rnd() >> rn(64))); break;
    default: snprintf(tmp, sizeof tmp, "-0.%ue%u", rn(1000), rn(20)); break;
    }
    puts_(b, tmp);
}

static void gen_value(gbuf_t *b, int depth)
{
    unsigned k = depth > 5 ? 2 + rn(5) : rn(9);
    switch (k) {
    case 0:
    case 1: {
        bool obj = k == 0;
        put(b, obj ? "{" : "[", 1);
        gen_ws(b);
        unsigned n = rn(depth == 0 ? 24 : 6);
        for (unsigned i = 0; i < n; i++) {
            if (i) {
                put(b, ",", 1);
                gen_ws(b);
            }
            if (obj) {
                gen_string(b, true);
                gen_ws(b);
                put(b, ":", 1);
                gen_ws(b);
            }
            gen_value(b, depth + 1);
            gen_ws(b);
        }
        put(b, obj ? "}" : "]", 1);
        break;
    }
    case 2: case 3: gen_string(b, false); break;
    case 4: case 5: gen_number(b); break;
    case 6: puts_(b, "true"); break;
    case 7: puts_(b, "false"); break;
    default: puts_(b, "null"); break;
    }
}

static void mutate(gbuf_t *b)
{
    static const char interesting[] = "{}[]\",:\\0123456789eE+-.tfnu \t\n\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xed\xa0\xf0\xf4\xf5\xff";
    if (b->len == 0) return;
    size_t at = rn((unsigned)b->len);
    switch (rn(6)) {
    case 0: /* delete a byte */
        memmove(b->p + at, b->p + at + 1, b->len - at - 1);
        b->len--;
        break;
    case 1: /* replace a byte */ b->p[at] = interesting[rn(sizeof interesting - 1)]; break;
    case 2: /* insert a byte */
        if (b->len < b->cap) {
            memmove(b->p + at + 1, b->p + at, b->len - at);
            b->p[at] = interesting[rn(sizeof interesting - 1)];
            b->len++;
        }
        break;
    case 3: /* truncate */ b->len = at; break;
    case 4: { /* duplicate a span (often a member, making duplicate keys or trailing commas) */
        size_t n = 1 + rn(16);
        if (at + n <= b->len && b->len + n <= b->cap) {
            memmove(b->p + at + n, b->p + at, b->len - at);
            b->len += n;
        }
        break;
    }
    default: { /* flip an escape's hex digit, or a bit */
        b->p[at] ^= (char)(1u << rn(8));
        break;
    }
    }
}

static void test_differential_random(void **state)
{
    (void)state;
    const char *seed_env = getenv("WD_JSON_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 0x5eed2026ull;
    g_rng = seed ? seed : 1;
    static char mem[16384];
    size_t counts[4] = {0};
    enum { ROUNDS = 6000 };
    for (int round = 0; round < ROUNDS; round++) {
        gbuf_t b = {mem, 0, sizeof mem};
        gen_ws(&b);
        gen_value(&b, 0);
        gen_ws(&b);
        unsigned muts = rn(3) == 0 ? 0 : 1 + rn(3);
        for (unsigned m = 0; m < muts; m++) mutate(&b);
        char why[256];
        diff_t r = differential(b.p, b.len, why, sizeof why);
        counts[r]++;
        if (r == MISMATCH)
            fail_msg("seed %#llx round %d: %s\ndocument (%zu bytes): %.*s", (unsigned long long)seed, round, why, b.len,
                     (int)b.len, b.p);
    }
    /* The generator must exercise both sides, or the test proves little. */
    print_message("random: %zu accepted, %zu rejected, %zu intentional differences\n", counts[AGREE_ACCEPT],
                  counts[AGREE_REJECT], counts[INTENTIONAL]);
    assert_true(counts[AGREE_ACCEPT] > ROUNDS / 5);
    assert_true(counts[AGREE_REJECT] > ROUNDS / 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_shape),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_string_positions),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_duplicates_small),
        cmocka_unit_test(test_duplicates_large),
        cmocka_unit_test(test_duplicates_not_quadratic),
        cmocka_unit_test(test_obj_arr_get),
        cmocka_unit_test(test_str_decode_eq),
        cmocka_unit_test(test_raw_int),
        cmocka_unit_test(test_apply_edits),
        cmocka_unit_test(test_edit_set),
        cmocka_unit_test(test_edit_two),
        cmocka_unit_test(test_differential_table),
        cmocka_unit_test(test_differential_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for guard/fold (what the privacy rules read) and wd_guard_scan_folded: each folded
 * character class, the map back to the text as sent, malformed sequences left alone, and findings
 * whose spans cover the characters as they were sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "guard/fold.h"
#include "guard/guard.h"

typedef struct {
    wd_buf_t out;
    uint32_t *map;
    size_t cap;
} folded_t;

static void fold_ok(folded_t *f, const char *text)
{
    assert_int_equal(wd_guard_fold(text, strlen(text), &f->out, &f->map, &f->cap), WD_OK);
}

static void folded_free(folded_t *f)
{
    wd_buf_free(&f->out);
    free(f->map);
}

static void test_each_class(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"a\xE2\x80\x8B"
         "b\xC2\xAD"
         "c\xEF\xBB\xBF"
         "d\xE2\x80\x8E"
         "e\xE2\x81\xA0"
         "f\xE2\x81\xA6"
         "g\xE1\xA0\x8E"
         "h",
         "abcdefgh"}, /* invisible and bidi: dropped */
        {"1\xC2\xA0"
         "2\xE2\x80\x80"
         "3\xE2\x80\x8A"
         "4\xE2\x80\xAF"
         "5\xE2\x81\x9F"
         "6\xE3\x80\x80"
         "7",
         "1 2 3 4 5 6 7"}, /* spaces */
        {"1\xE2\x80\x90"
         "2\xE2\x80\x93"
         "3\xE2\x80\x95"
         "4\xE2\x88\x92"
         "5",
         "1-2-3-4-5"}, /* dashes and minus */
        {"\xEF\xBC\x81\xEF\xBC\x90\xEF\xBC\x99\xEF\xBC\xA0\xEF\xBC\xA1\xEF\xBD\x9A\xEF\xBD\x9E",
         "!09@Az~"}, /* fullwidth */
        {"\xF0\x9D\x9F\x8E\xF0\x9D\x9F\x97\xF0\x9D\x9F\x98\xF0\x9D\x9F\xBF",
         "0909"}, /* mathematical digits */
        {"x\xF3\xA0\x80\x81\xF3\xA0\x81\x81\xF3\xA0\x80\xB7\xF3\xA0\x81\xBF"
         "y",
         "xA7y"}, /* tags */
        /* mathematical bold J, sans-serif o, monospace z, italic h (a letterlike symbol), Kelvin sign */
        {"\xF0\x9D\x90\x89\xF0\x9D\x97\xBC\xF0\x9D\x9A\xA3\xE2\x84\x8E\xE2\x84\xAA", "JozhK"},
        /* circled and parenthesized digits and letters, squared and negative circled/squared letters */
        {"\xE2\x91\xA0\xE2\x91\xA8\xE2\x93\xAA\xE2\x92\x9C\xE2\x92\xB6\xE2\x93\xA9"
         "\xF0\x9F\x84\xB0\xF0\x9F\x85\x90\xF0\x9F\x85\xB0\xF0\x9F\x86\x89",
         "190aAzAAAZ"},
        /* Cyrillic and Greek look-alikes in words with an ASCII letter: "pаypal", "Оbama", "Αlpha" */
        {"p\xD0\xB0ypal \xD0\x9E"
         "bama \xCE\x91lpha",
         "paypal Obama Alpha"},
        /* Armenian look-alikes likewise: "gօօgle", "jօhn@example.com", "Օbama", "ցet" */
        {"g\xD6\x85\xD6\x85gle j\xD6\x85hn@example.com \xD5\x95"
         "bama \xD6\x81"
         "et",
         "google john@example.com Obama get"},
        /* ... but not in Armenian words ("Բարեւ", "ողջույն", "բարa" with an ASCII letter), nor in a word
         * that Armenian punctuation (the comma U+055D) separates from the ASCII letter; the neighbours of
         * the range stay */
        {"\xD4\xB2\xD5\xA1\xD6\x80\xD5\xA5\xD6\x82 \xD5\xB8\xD5\xB2\xD5\xBB\xD5\xB8\xD6\x82\xD5\xB5\xD5\xB6 "
         "\xD5\xA2\xD5\xA1\xD6\x80"
         "a a\xD5\x9D\xD6\x85 x\xD6\x86\xD6\x90",
         "\xD4\xB2\xD5\xA1\xD6\x80\xD5\xA5\xD6\x82 \xD5\xB8\xD5\xB2\xD5\xBB\xD5\xB8\xD6\x82\xD5\xB5\xD5\xB6 "
         "\xD5\xA2\xD5\xA1\xD6\x80"
         "a a\xD5\x9D\xD6\x85 x\xD6\x86\xD6\x90"},
        /* Cherokee ones (three bytes): "ꮪecret", "ꭵgnore", "Ꭼxample" */
        {"\xEA\xAE\xAA"
         "ecret \xEA\xAD\xB5gnore \xE1\x8E\xACxample",
         "secret ignore Example"},
        /* Lisu, Coptic and Georgian ones: "ꓮꓟꓮꓜꓳꓠ.com", "ⲣaypal", "ყou" */
        {"\xEA\x93\xAE\xEA\x93\x9F\xEA\x93\xAE\xEA\x93\x9C\xEA\x93\xB3\xEA\x93\xA0.com \xE2\xB2\xA3"
         "aypal \xE1\x83\xA7ou",
         "AMAZON.com paypal you"},
        /* Canadian syllabics and Tifinagh ones: "ᑭaypal", "ᑲank", "jⵔhn", "ⴹxample" */
        {"\xE1\x91\xAD"
         "aypal \xE1\x91\xB2"
         "ank j\xE2\xB5\x94hn \xE2\xB4\xB9xample",
         "Paypal bank jOhn Example"},
        /* ... but not in an Inuktitut or a Tamazight word ("ᐃᓄᑲ", "ⴰⵔⵉ", each with an ASCII letter) */
        {"\xE1\x90\x83\xE1\x93\x84\xE1\x91\xB2"
         "a \xE2\xB4\xB0\xE2\xB5\x94\xE2\xB5\x89"
         "a",
         "\xE1\x90\x83\xE1\x93\x84\xE1\x91\xB2"
         "a \xE2\xB4\xB0\xE2\xB5\x94\xE2\xB5\x89"
         "a"},
        /* ... but not in a Georgian word ("ყველა" with an ASCII letter) */
        {"\xE1\x83\xA7\xE1\x83\x95\xE1\x83\x94\xE1\x83\x9A\xE1\x83\x90"
         "a",
         "\xE1\x83\xA7\xE1\x83\x95\xE1\x83\x94\xE1\x83\x9A\xE1\x83\x90"
         "a"},
        /* ... but not in a Cherokee word ("ᏣᎳᎩ" with an ASCII letter), nor standing alone */
        {"\xE1\x8F\xA3\xE1\x8E\xB3\xE1\x8E\xA9"
         "a \xE1\x8E\xAA x",
         "\xE1\x8F\xA3\xE1\x8E\xB3\xE1\x8E\xA9"
         "a \xE1\x8E\xAA x"},
        /* ... an invisible character inside the word does not end it; a whole word of look-alikes in an
         * address is read with the rest of it ("ехес" is four look-alikes) */
        {"ign\xE2\x80\x8B\xD0\xBEre \xD1\x81\xD0\xBE\xD1\x80y", "ignore copy"},
        /* more invisible characters dropped: combining grapheme joiner, variation selector 16, Hangul
         * filler, Mongolian free variation selector, variation selector 17 */
        {"a\xCD\x8F"
         "b\xEF\xB8\x8F"
         "c\xE3\x85\xA4"
         "d\xE1\xA0\x8B"
         "e\xF3\xA0\x84\x80"
         "f\xE2\x81\xAF"
         "g",
         "abcdefg"},
        /* fancy text: small capitals "ɪɢɴᴏʀᴇ" (U+026A U+0262 U+0274 U+1D0F U+0280 U+1D07), raised letters
         * "ᵃˡˡ", superscript and subscript digits */
        {"\xC9\xAA\xC9\xA2\xC9\xB4\xE1\xB4\x8F\xCA\x80\xE1\xB4\x87 \xE1\xB5\x83\xCB\xA1\xCB\xA1 "
         "\xC2\xB9\xC2\xB2\xC2\xB3\xE2\x81\xB4\xE2\x81\xB9\xE2\x82\x80\xE2\x82\x89",
         "ignore all 1234909"},
        /* combining marks dropped: strike-through (U+0336), underline (U+0332), an accent written apart
         * (U+0301), a keycap (U+20E3), marks of the extended and supplement blocks, a half mark */
        {"i\xCC\xB6g\xCC\xB6 j\xCC\xB2o\xCC\xB2 e\xCC\x81 1\xE2\x83\xA3 "
         "x\xE1\xAA\xB0\xE1\xB7\x80\xEF\xB8\xA0y",
         "ig jo e 1 xy"},
        /* an address or host name is one word: "раураӏ.com", "јое@аррӏе.com" */
        {"\xD1\x80\xD0\xB0\xD1\x83\xD1\x80\xD0\xB0\xD3\x8F.com "
         "\xD1\x98\xD0\xBE\xD0\xB5@\xD0\xB0\xD1\x80\xD1\x80\xD3\x8F\xD0\xB5.com",
         "paypal.com joe@apple.com"},
        /* ... also inside a Russian word, after the look-alikes that decided it stays */
        {"\xD1\x81\xD0\xBE\xCD\x8F\xD0\xB4 \xD0\xBE\xD0\xB4\xD8\x9C\xD0\xB4",
         "\xD1\x81\xD0\xBE\xD0\xB4 \xD0\xBE\xD0\xB4\xD0\xB4"},
        /* kept: a word with a Greek or Cyrillic letter that has no Latin twin ("инструкцииa"), one whose
         * only ASCII letter is an invisible tag character */
        {"\xD0\xB8\xD0\xBD\xD1\x81\xD1\x82\xD1\x80\xD1\x83\xD0\xBA\xD1\x86\xD0\xB8\xD0\xB8"
         "a \xD1\x81\xD0\xBE\xD1\x80",
         "\xD0\xB8\xD0\xBD\xD1\x81\xD1\x82\xD1\x80\xD1\x83\xD0\xBA\xD1\x86\xD0\xB8\xD0\xB8"
         "a \xD1\x81\xD0\xBE\xD1\x80"},
        {"\xD1\x81\xD0\xBE\xD1\x80\xF3\xA0\x81\xA1", "\xD1\x81\xD0\xBE\xD1\x80"
                                                     "a"},
        /* kept: Russian and Greek words, a look-alike standing alone or between separators, the
         * neighbours of each range */
        {"\xD0\x98\xD0\xB2\xD0\xB0\xD0\xBD \xD0\xBE\xD1\x82\xD0\xB2\xD0\xB5\xD1\x82\xD0\xB8\xD0\xBB "
         "\xCE\x91\xCE\xB8\xCE\xAE\xCE\xBD\xCE\xB1 12\xD0\xBE a \xD0\xBE \xC2\xAB\xD0\xBE\xC2\xBBx",
         "\xD0\x98\xD0\xB2\xD0\xB0\xD0\xBD \xD0\xBE\xD1\x82\xD0\xB2\xD0\xB5\xD1\x82\xD0\xB8\xD0\xBB "
         "\xCE\x91\xCE\xB8\xCE\xAE\xCE\xBD\xCE\xB1 12\xD0\xBE a \xD0\xBE \xC2\xAB\xD0\xBE\xC2\xBBx"},
        {"\xF0\x9D\x9A\xA4\xE2\x84\x81\xE2\x91\xA9\xF0\x9F\x85\x8A\xCD\xB0\xCE\x90x\xD4\xB0\xD4\xBF",
         "\xF0\x9D\x9A\xA4\xE2\x84\x81\xE2\x91\xA9\xF0\x9F\x85\x8A\xCD\xB0\xCE\x90x\xD4\xB0\xD4\xBF"},
        /* ... and of the fancy-text letters and combining marks: turned a (U+0250), U+02AF, modifier
         * letter small alpha (U+1D45), U+1D01, U+02FF, U+1AAF, U+20CF, U+FE30 */
        {"\xC9\x90\xCA\xAF\xE1\xB5\x85\xE1\xB4\x81\xCB\xBF\xE1\xAA\xAF\xE2\x83\x8F\xEF\xB8\xB0",
         "\xC9\x90\xCA\xAF\xE1\xB5\x85\xE1\xB4\x81\xCB\xBF\xE1\xAA\xAF\xE2\x83\x8F\xEF\xB8\xB0"},
        /* kept as they are: other non-ASCII, lone or malformed sequences, the neighbours of each range */
        {"caf\xC3\xA9 \xE2\x80\x98x\xE2\x80\x99", "caf\xC3\xA9 \xE2\x80\x98x\xE2\x80\x99"},
        {"\xE2\x80\x41\xE2\x80", "\xE2\x80\x41\xE2\x80"},
        {"\xE2\x80\x96\xE2\x80\xA9\xEF\xBC\x80\xEF\xBD\x9F\xF0\x9D\x9F\x8D\xC2\xA1",
         "\xE2\x80\x96\xE2\x80\xA9\xEF\xBC\x80\xEF\xBD\x9F\xF0\x9D\x9F\x8D\xC2\xA1"},
        {"\xF3\xA0\x80\xC1x", "\xF3\xA0\x80\xC1x"},
    };
    folded_t f = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fold_ok(&f, cases[i].in);
        if (f.out.len != strlen(cases[i].want) || memcmp(f.out.data, cases[i].want, f.out.len) != 0)
            fail_msg("case %zu: got \"%.*s\"", i, (int)f.out.len, f.out.data);
        /* the map is increasing and ends at the text's length */
        for (size_t j = 0; j < f.out.len; j++)
            assert_true(f.map[j] < f.map[j + 1]);
        assert_int_equal(f.map[f.out.len], strlen(cases[i].in));
        bool same = strcmp(cases[i].in, cases[i].want) == 0;
        assert_int_equal(wd_guard_fold_needed(cases[i].in, strlen(cases[i].in), WD_FOLD_ALL), !same);
    }
    /* WD_FOLD_LOOKALIKES_ANY (the injection screen): every look-alike folds, whatever its word, the
     * letters without a twin stay */
    const char *ru = "\xD0\xB0\xD3\x8F\xD3\x8F \xD0\x98\xD0\xB2\xD0\xB0\xD0\xBD \xCE\x91\xCE\xB8";
    assert_false(wd_guard_fold_needed(ru, strlen(ru), WD_FOLD_ONLY_LOOKALIKES));
    assert_true(wd_guard_fold_needed(ru, strlen(ru), WD_FOLD_ONLY_LOOKALIKES | WD_FOLD_LOOKALIKES_ANY));
    assert_int_equal(wd_guard_fold_as(ru, strlen(ru), WD_FOLD_LOOKALIKES_ANY, &f.out, &f.map, &f.cap), WD_OK);
    const char *want = "all \xD0\x98\xD0\xB2" "a\xD0\xBD A\xCE\xB8";
    assert_int_equal(f.out.len, strlen(want));
    assert_memory_equal(f.out.data, want, f.out.len);
    assert_int_equal(f.map[f.out.len], strlen(ru));
    folded_free(&f);
}

/* Spans map back to whole characters of the text, dropped characters inside a span included and
 * those at its edges left out. */
static void test_map_and_end(void **state)
{
    (void)state;
    /* "a" ZWSP "\uFF11" "b" "é" */
    const char *in = "a\xE2\x80\x8B\xEF\xBC\x91"
                     "b\xC3\xA9";
    folded_t f = {0};
    fold_ok(&f, in);
    assert_int_equal(f.out.len, 5);
    assert_memory_equal(f.out.data, "a1b\xC3\xA9", 5);
    static const uint32_t map[] = {0, 4, 7, 8, 9, 10};
    assert_memory_equal(f.map, map, sizeof map);
    assert_int_equal(wd_guard_fold_end(in, &f.out, f.map, 1), 1);  /* "a": the ZWSP after it is left out */
    assert_int_equal(wd_guard_fold_end(in, &f.out, f.map, 2), 7);  /* "１" whole */
    assert_int_equal(wd_guard_fold_end(in, &f.out, f.map, 3), 8);
    assert_int_equal(wd_guard_fold_end(in, &f.out, f.map, 5), 10); /* copied bytes one to one */
    assert_int_equal(wd_guard_fold_end(in, &f.out, f.map, 0), 0);
    /* the combining marks after a character belong to it (up to an invisible character) */
    const char *marked = "ab\xCC\xB2\xCC\x81\xE2\x80\x8B\xCC\xB2" "c";
    fold_ok(&f, marked);
    assert_int_equal(f.out.len, 3);
    assert_int_equal(wd_guard_fold_end(marked, &f.out, f.map, 1), 1);
    assert_int_equal(wd_guard_fold_end(marked, &f.out, f.map, 2), 6);
    assert_int_equal(wd_guard_fold_end(marked, &f.out, f.map, 3), 12);
    folded_free(&f);

    assert_false(
        wd_guard_fold_needed("plain ASCII text, long enough for the eight-byte steps", 55, WD_FOLD_ALL));
    assert_false(wd_guard_fold_needed("", 0, WD_FOLD_ALL));
    /* a dash alone matters to identifiers (555\u2013123\u20134567), not to words */
    assert_true(wd_guard_fold_needed("a \xE2\x80\x94 b", 7, WD_FOLD_ALL));
    assert_false(wd_guard_fold_needed("a \xE2\x80\x94 b \xE2\x88\x92", 11, WD_FOLD_LOOKALIKES));
    assert_true(wd_guard_fold_needed("a \xE2\x80\x94 b\xC2\xA0", 9, WD_FOLD_LOOKALIKES));
}

static const char rules[] = "version: 1\nrules:\n"
                            "  - id: t.email\n    type: EMAIL\n    class: pii\n    score: 0.9\n"
                            "    pattern: '[a-z0-9._]+@[a-z0-9-]+\\.[a-z]{2,}'\n"
                            "  - id: t.ssn\n    type: US_SSN\n    class: pii\n    pattern: '\\b\\d{3}-\\d{2}-\\d{4}\\b'\n";

static void expect_one(wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, const char *rule, size_t start,
                       size_t end)
{
    wd_findings_t out;
    wd_findings_init(&out);
    assert_int_equal(wd_guard_scan_folded(db, s, WD_GUARD_ANY, text, strlen(text), 0.0f, NULL, &out), WD_OK);
    if (out.n != 1) fail_msg("%zu findings in \"%s\"", out.n, text);
    assert_string_equal(wd_guard_db_rule(db, out.v[0].rule)->id, rule);
    if (out.v[0].start != start || out.v[0].end != end)
        fail_msg("\"%s\": span %u..%u, wanted %zu..%zu", text, out.v[0].start, out.v[0].end, start, end);
    wd_findings_free(&out);
}

static void test_scan_folded(void **state)
{
    (void)state;
    char err[256];
    wd_guard_db_t *db = wd_guard_db_load_buf("r.yaml", rules, sizeof rules - 1, err, sizeof err);
    if (!db) fail_msg("%s", err);
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    assert_non_null(s);
    wd_findings_t raw;
    wd_findings_init(&raw);

    /* a zero-width space inside the address: found, the span covers it; the raw scan misses it */
    const char *zw = "to ja\xE2\x80\x8Bne@example.com now";
    expect_one(db, s, zw, "t.email", 3, 22);
    assert_int_equal(wd_guard_scan(db, s, zw, strlen(zw), 0.0f, &raw), WD_OK);
    assert_int_equal(raw.n, 1); /* only "ne@example.com" */
    assert_int_equal(raw.v[0].start, 8);
    /* fullwidth digits and an en dash; the no-break space before it stays outside the span */
    expect_one(db, s, "ssn\xC2\xA0\xEF\xBC\x95\xEF\xBC\x93\xEF\xBC\x96\xE2\x80\x93" "22-1234.", "t.ssn", 5, 24);
    /* an address written in tag characters, invisible to a reader */
    char tagged[128];
    size_t n = 0;
    for (const char *p = "bob@corp.io"; *p; p++) {
        unsigned v = 0xE0000u + (unsigned char)*p;
        tagged[n++] = (char)0xF3;
        tagged[n++] = (char)(0x80 | ((v >> 12) & 0x3F));
        tagged[n++] = (char)(0x80 | ((v >> 6) & 0x3F));
        tagged[n++] = (char)(0x80 | (v & 0x3F));
    }
    memcpy(tagged + n, " hi", 4);
    expect_one(db, s, tagged, "t.email", 0, 44);
    /* nothing to fold: the same findings as the raw scan */
    expect_one(db, s, "mail bob@corp.io", "t.email", 5, 16);

    wd_findings_free(&raw);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
}

/* A stream folded in random pieces (characters cut between pieces included) gives the same bytes as
 * folding it whole, and maps every folded offset back as the whole fold does, trimmed or not. */
static void test_stream_matches_whole(void **state)
{
    (void)state;
    /* the second alphabet makes long words of look-alikes, with and without an ASCII letter */
    static const char *const alphabets[2][20] = {
        {"a",
         "7",
         "-",
         " ",
         "@",
         "\xE2\x80\x8B",
         "\xEF\xBC\x97",
         "\xC2\xA0",
         "\xC3\xA9",
         "\xF3\xA0\x81\x81",
         "\xE2\x80\x93",
         "\xF0\x9F\x98\x80",
         "\xF0\x9D\x9F\x8F",
         "\xC2\xAD",
         "\xD0\xBE",
         "\xD0\xB4",
         "\xCE\x91",
         "\xF0\x9D\x90\x9A",
         "\xC2\xAB",
         "\xE2\x91\xA0"},
        {"\xD0\xBE",     "\xD0\xB4", "\xD0\xB4", "\xCE\xB8", "\xD1\x81", "\xD0\xBE", "\xD0\xB4",
         "\xE2\x80\x8B", "7",        "\xD0\xBE", "\xD0\xB4", "\xD1\x80", "\xD0\xBE", "\xD0\xB4",
         "\xD0\xBE",     "\xD0\xB4", "\xD0\xBE", "\xD0\xB4", " ",        "a"}};
    uint32_t seed = 12345;
    folded_t whole = {0};
    for (int round = 0; round < 800; round++) {
        const char *const *alphabet = alphabets[round & 1];
        char text[512];
        size_t len = 0;
        while (len < 200) {
            seed = seed * 1103515245u + 12345u;
            const char *a = alphabet[(seed >> 16) % 20];
            memcpy(text + len, a, strlen(a));
            len += strlen(a);
        }
        assert_int_equal(wd_guard_fold(text, len, &whole.out, &whole.map, &whole.cap), WD_OK);
        wd_fold_stream_t fs;
        wd_fold_stream_init(&fs);
        wd_buf_t got;
        wd_buf_init(&got, 0);
        size_t at = 0;
        uint64_t trimmed = 0;
        while (at <= len) {
            seed = seed * 1103515245u + 12345u;
            size_t n = WD_MIN((size_t)(seed >> 16) % 9, len - at);
            bool final = at + n == len && (seed & 1);
            const char *fp;
            size_t fn;
            assert_int_equal(wd_fold_stream_feed(&fs, text + at, n, final, &fp, &fn), WD_OK);
            assert_int_equal(wd_buf_append(&got, fp, fn), WD_OK);
            at += n;
            assert_true(fs.folded == got.len && fs.raw + fs.npend == at);
            /* every offset not yet trimmed maps as the whole fold does */
            for (uint64_t x = trimmed; x < fs.folded; x++) {
                assert_int_equal(wd_fold_stream_raw(&fs, x), whole.map[x]);
                assert_int_equal(wd_fold_stream_raw_end(&fs, x + 1),
                                 wd_guard_fold_end(text, &whole.out, whole.map, (uint32_t)x + 1));
            }
            if (fs.folded > trimmed && (seed & 2)) {
                trimmed += (seed >> 8) % (fs.folded - trimmed + 1);
                wd_fold_stream_trim(&fs, trimmed);
            }
            if (final || (at == len && n == 0)) break;
        }
        const char *fp;
        size_t fn;
        assert_int_equal(wd_fold_stream_feed(&fs, NULL, 0, true, &fp, &fn), WD_OK); /* flush */
        assert_int_equal(wd_buf_append(&got, fp, fn), WD_OK);
        if (got.len != whole.out.len || memcmp(got.data, whole.out.data, got.len) != 0)
            fail_msg("round %d: the pieces fold to something else", round);
        assert_int_equal(wd_fold_stream_raw(&fs, fs.folded), len);
        wd_buf_free(&got);
        wd_fold_stream_free(&fs);
    }
    folded_free(&whole);
}

/* A word of look-alikes longer than WD_FOLD_WORD_MAX bytes is folded whatever its script; one of that
 * length is not. */
static void test_long_words(void **state)
{
    (void)state;
    char text[256];
    folded_t f = {0};
    for (size_t n = 94; n <= 98; n += 2) { /* n bytes: Cyrillic "д" (2 bytes) ... then "о" */
        size_t len = 0;
        while (len + 2 < n)
            len += (size_t)sprintf(text + len, "\xD0\xB4");
        len += (size_t)sprintf(text + len, "\xD0\xBE");
        fold_ok(&f, text);
        bool folded = f.out.len == len - 1;
        assert_int_equal(folded, n > WD_FOLD_WORD_MAX);
        assert_int_equal(wd_guard_fold_needed(text, len, WD_FOLD_ALL), folded);
        if (folded) assert_int_equal(f.out.data[f.out.len - 1], 'o');
    }
    folded_free(&f);
}

/* Short texts whose look-alikes depend on a letter far from them, cut into three pieces at every
 * pair of byte offsets: the stream folds them as the whole text folds. */
static void test_stream_every_cut(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "ab\xD0\xB4\xD0\xB4\xD0\xBE x", /* letter, other Cyrillic, a look-alike */
        "\xD0\xBE\xD0\xB4\xE2\x80\x8B\067ab \xD0\xBE", /* \067: '7' after a hex escape */
        "\xD0\xBE\xD0\xBE \xD0\xBE\xD0\xBEq",
        "x\xC2\xAB\xD0\xBE\xC2\xBB\xD0\xBE\xE2\x80\x8B",
        "\xF0\x9D\x90\x9A\xD1\x80\xD0\xB4-\xD0\xB4\xD1\x80",
        "\xC9\xAA\xD0\xBE\xCC\xB6 \xD0\xBE\xCC\x81\xD0\xB4 \xCB\xA1\xD1\x80", /* small capital, combining marks */
        "a\xCC\xB2\xCC\xB2\xE2\x80\x8B\xCC\xB2 b\xCC\xB2",                     /* marks, then invisible */
        "\xEA\xAE\xAA\xD6\x85x \xE1\x8F\xA3\xE1\x8E\xAA\x61 \xD5\xA2\xD6\x85q", /* Cherokee, Armenian; \x61: 'a' */
    };
    folded_t whole = {0};
    for (size_t t = 0; t < WD_ARRAY_LEN(texts); t++) {
        const char *text = texts[t];
        size_t len = strlen(text);
        fold_ok(&whole, text);
        for (size_t i = 0; i <= len; i++)
            for (size_t j = i; j <= len; j++) {
                wd_fold_stream_t fs;
                wd_fold_stream_init(&fs);
                wd_buf_t got;
                wd_buf_init(&got, 0);
                const size_t cuts[] = {0, i, j, len};
                for (size_t k = 0; k < 4; k++) {
                    const char *fp;
                    size_t fn;
                    size_t at = cuts[k], n = k < 3 ? cuts[k + 1] - at : 0;
                    assert_int_equal(wd_fold_stream_feed(&fs, text + at, n, k == 3, &fp, &fn), WD_OK);
                    assert_int_equal(wd_buf_append(&got, fp, fn), WD_OK);
                }
                if (got.len != whole.out.len || memcmp(got.data, whole.out.data, got.len) != 0)
                    fail_msg("text %zu cut at %zu and %zu: \"%.*s\"", t, i, j, (int)got.len, got.data);
                for (uint32_t x = 1; x <= got.len; x++) /* and maps back the same way */
                    if (wd_fold_stream_raw_end(&fs, x) != wd_guard_fold_end(text, &whole.out, whole.map, x))
                        fail_msg("text %zu cut at %zu and %zu: end of %u", t, i, j, x);
                wd_buf_free(&got);
                wd_fold_stream_free(&fs);
            }
    }
    folded_free(&whole);
}

/* Every WD_FOLD_RUN_BREAK-th invisible character in a row becomes a NUL byte, in the whole fold and in
 * a stream alike; a stream remembers a run of them as one event, however long. */
static void test_long_invisible_runs(void **state)
{
    (void)state;
    static char text[4096];
    size_t len = 0;
    text[len++] = 'a';
    for (int i = 0; i < 130; i++)
        len += (size_t)sprintf(text + len, "\xE2\x80\x8B");
    text[len++] = 'b';
    for (int i = 0; i < 63; i++)
        len += (size_t)sprintf(text + len, "\xC2\xAD");
    text[len++] = 'c';
    folded_t f = {0};
    assert_int_equal(wd_guard_fold(text, len, &f.out, &f.map, &f.cap), WD_OK);
    assert_int_equal(f.out.len, 5); /* a NUL NUL b c: 130 -> two breaks, 63 -> none */
    assert_memory_equal(f.out.data, "a\0\0bc", 5);
    assert_int_equal(f.map[1], 1 + 63 * 3);  /* the 64th zero-width space */
    assert_int_equal(f.map[2], 1 + 127 * 3); /* the 128th */

    uint32_t seed = 99;
    for (int round = 0; round < 50; round++) {
        wd_fold_stream_t fs;
        wd_fold_stream_init(&fs);
        wd_buf_t got;
        wd_buf_init(&got, 0);
        size_t maxev = 0;
        for (size_t at = 0; at < len;) {
            seed = seed * 1103515245u + 12345u;
            size_t n = WD_MIN((size_t)(seed >> 16) % 40, len - at);
            const char *fp;
            size_t fn;
            assert_int_equal(wd_fold_stream_feed(&fs, text + at, n, at + n == len, &fp, &fn), WD_OK);
            assert_int_equal(wd_buf_append(&got, fp, fn), WD_OK);
            at += n;
            maxev = WD_MAX(maxev, fs.nev);
        }
        assert_int_equal(got.len, f.out.len);
        assert_memory_equal(got.data, f.out.data, got.len);
        for (uint64_t x = 0; x < got.len; x++)
            assert_int_equal(wd_fold_stream_raw(&fs, x), f.map[x]);
        assert_true(maxev <= 6); /* runs and breaks, not one event per character */
        wd_buf_free(&got);
        wd_fold_stream_free(&fs);
    }

    /* a piece with nothing to fold ends a run too: 40 + 30 invisible characters around "b" are two
     * runs, no break, whether "b" comes alone or not */
    len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(text + len, "\xE2\x80\x8B");
    size_t mid = len;
    text[len++] = 'b';
    for (int i = 0; i < 30; i++)
        len += (size_t)sprintf(text + len, "\xE2\x80\x8B");
    wd_fold_stream_t fs;
    wd_fold_stream_init(&fs);
    const char *fp;
    size_t fn, total = 0;
    assert_int_equal(wd_fold_stream_feed(&fs, text, mid, false, &fp, &fn), WD_OK);
    total += fn;
    assert_int_equal(wd_fold_stream_feed(&fs, text + mid, 1, false, &fp, &fn), WD_OK);
    assert_true(fn == 1 && fp == text + mid); /* the piece itself */
    total += fn;
    assert_int_equal(wd_fold_stream_feed(&fs, text + mid + 1, len - mid - 1, true, &fp, &fn), WD_OK);
    total += fn;
    assert_int_equal(total, 1); /* just "b" */
    wd_fold_stream_free(&fs);
    folded_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_class),          cmocka_unit_test(test_map_and_end),
        cmocka_unit_test(test_scan_folded),         cmocka_unit_test(test_stream_matches_whole),
        cmocka_unit_test(test_long_invisible_runs), cmocka_unit_test(test_long_words),
        cmocka_unit_test(test_stream_every_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

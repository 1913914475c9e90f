/* Unit tests for the guard engine: the rule loader names every error class at its exact
 * file:line:col, block scans give exact byte spans with validators, context and overlap resolution
 * applied, and stream scans (any split of the text) give the same findings as a block scan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "guard/guard.h"

#define ERRLEN 512

static wd_guard_db_t *load(const char *yaml, char *err)
{
    err[0] = 'X'; /* the loader must overwrite it */
    return wd_guard_db_load_buf("r.yaml", yaml, strlen(yaml), err, ERRLEN);
}

static wd_guard_db_t *load_ok(const char *yaml)
{
    char err[ERRLEN];
    wd_guard_db_t *db = load(yaml, err);
    if (!db) fail_msg("unexpected error: %s\n%s", err, yaml);
    return db;
}

/* Loading must fail with a message at exactly `loc` ("LINE:COL") that contains `want`. */
static void expect_err(const char *yaml, const char *loc, const char *want)
{
    char err[ERRLEN], prefix[64];
    wd_guard_db_t *db = load(yaml, err);
    if (db) {
        wd_guard_db_unref(db);
        fail_msg("expected an error at %s containing \"%s\", but the rules loaded:\n%s", loc, want, yaml);
    }
    snprintf(prefix, sizeof prefix, "r.yaml:%s: ", loc);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, want))
        fail_msg("got \"%s\"\nwanted prefix \"%s\" and \"%s\"", err, prefix, want);
}

#define HEAD "version: 1\nrules:\n"
/* one valid rule; its keys sit on lines 3..6, at column 5 (after "  - " on line 3) */
#define RULE_A "  - id: t.a\n    type: A\n    class: test\n    pattern: 'abc'\n"

/* ---------------------------------------------------------------------------------------------- */
/* Loader */

static void test_load_valid(void **state)
{
    (void)state;
    wd_guard_db_t *db = load_ok(HEAD RULE_A
                                "  - id: pii.card-1\n"
                                "    type: CREDIT_CARD\n"
                                "    class: financial\n"
                                "    pattern: '\\b\\d{16}\\b'\n"
                                "    caseless: true\n"
                                "    validator: luhn\n"
                                "    context: [card, visa, credit card]\n"
                                "    context_required: true\n"
                                "    score: 0.85\n"
                                "    max_len: 32\n"
                                "    severity: high\n"
                                "    boundary: false\n"
                                "    description: a card number\n");
    assert_int_equal(wd_guard_db_nrules(db), 2);
    const wd_rule_t *a = wd_guard_db_rule(db, 0), *c = wd_guard_db_rule(db, 1);
    assert_string_equal(a->id, "t.a");
    assert_int_equal(a->validator, -1);
    assert_true(a->score > 0.79f && a->score < 0.81f); /* default 0.8 */
    assert_int_equal(a->max_len, 256);
    assert_true(a->boundary);
    assert_false(a->caseless);
    assert_null(a->severity);
    assert_string_equal(a->file, "r.yaml");
    assert_int_equal(a->line, 3);
    assert_string_equal(c->type, "CREDIT_CARD");
    assert_string_equal(c->cls, "financial");
    assert_string_equal(c->pattern, "\\b\\d{16}\\b");
    assert_true(c->caseless);
    assert_int_equal(c->validator, wd_validator_find("luhn"));
    assert_int_equal(c->ncontext, 3);
    assert_string_equal(c->context[2], "credit card");
    assert_true(c->context_required);
    assert_true(c->score > 0.84f && c->score < 0.86f);
    assert_int_equal(c->max_len, 32);
    assert_string_equal(c->severity, "high");
    assert_false(c->boundary);
    assert_string_equal(c->description, "a card number");
    assert_int_equal(wd_guard_db_find(db, "pii.card-1"), 1);
    assert_int_equal(wd_guard_db_find(db, "nope"), -1);
    assert_null(wd_guard_db_rule(db, 2));
    /* the pattern is fixed width 16 with \b; max_len 32 and 'abc' (3): the widest is 16 */
    assert_int_equal(wd_guard_db_max_len(db), 16);
    assert_true(wd_guard_db_holdback(db) >= 2 * 16);
    wd_guard_db_ref(db);
    wd_guard_db_unref(db);
    wd_guard_db_unref(db);

    /* an empty list of rules is a valid (empty) set */
    db = load_ok("version: 1\nrules: []\n");
    assert_int_equal(wd_guard_db_nrules(db), 0);
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    assert_non_null(s);
    wd_findings_t f;
    wd_findings_init(&f);
    assert_int_equal(wd_guard_scan(db, s, "a@b.co", 6, 0, &f), WD_OK);
    assert_int_equal(f.n, 0);
    wd_findings_free(&f);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
}

static void test_load_errors(void **state)
{
    (void)state;
    /* unknown keys, at the key */
    expect_err(HEAD RULE_A "    colour: red\n", "7:5", "unknown key 'colour' in a rule");
    expect_err("version: 1\nrules: []\nextra: 1\n", "3:1", "unknown key 'extra'");
    /* missing keys, at the rule */
    expect_err(HEAD "  - type: A\n    class: test\n    pattern: 'abc'\n", "3:5", "missing required key 'id'");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n", "3:5", "rule 't.a': missing required key 'pattern'");
    expect_err("rules: []\n", "1:1", "missing required key 'version'");
    expect_err("version: 1\n", "1:1", "missing required key 'rules'");
    expect_err("version: 2\nrules: []\n", "1:10", "version: 2 is out of range");
    /* patterns: Hyperscan refuses lookahead; PCRE2 alone refuses [\d-z]; both errors at the pattern */
    expect_err(HEAD RULE_A "  - id: t.b\n    type: B\n    class: test\n    pattern: 'a(?=b)'\n", "10:14",
               "rule 't.b': pattern rejected by Hyperscan:");
    expect_err(HEAD RULE_A "  - id: t.b\n    type: B\n    class: test\n    pattern: '[\\d-z]x'\n", "10:14",
               "rule 't.b': pattern rejected by PCRE2 at offset");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n    pattern: 'a?'\n", "6:14", "Hyperscan");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n    pattern: ''\n", "6:14", "pattern: expected a value");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n    pattern: 'a{10}'\n    max_len: 5\n", "6:14",
               "shortest match (10 bytes) is longer than max_len (5)");
    /* duplicate ids, at the second id */
    expect_err(HEAD RULE_A "  - id: t.a\n    type: B\n    class: test\n    pattern: 'x'\n", "7:9",
               "duplicate rule id 't.a' (first defined at r.yaml:3)");
    expect_err(HEAD RULE_A "    id: t.b\n", "7:5", "duplicate key 'id'");
    /* values */
    expect_err(HEAD RULE_A "    validator: nosuch\n", "7:16", "unknown validator 'nosuch'");
    expect_err(HEAD RULE_A "    score: 1.5\n", "7:12", "score: 1.5 is out of range (0..1)");
    expect_err(HEAD RULE_A "    score: -0.1\n", "7:12", "out of range");
    expect_err(HEAD RULE_A "    score: high\n", "7:12", "score: expected a number");
    expect_err(HEAD RULE_A "    score: '0.5'\n", "7:12", "score: expected a number");
    expect_err(HEAD RULE_A "    max_len: 0\n", "7:14", "max_len: 0 is out of range (1..4096)");
    expect_err(HEAD RULE_A "    max_len: 5000\n", "7:14", "out of range");
    expect_err(HEAD RULE_A "    max_len: 2.5\n", "7:14", "expected an integer");
    expect_err(HEAD RULE_A "    caseless: yes\n", "7:15", "caseless: expected true or false");
    expect_err(HEAD RULE_A "    severity: extreme\n", "7:15", "severity: expected low, medium or high");
    expect_err(HEAD RULE_A "    context: card\n", "7:14", "context: expected a list of words");
    expect_err(HEAD RULE_A "    context: [Card]\n", "7:15", "must be lower-case");
    expect_err(HEAD RULE_A "    context_required: true\n", "7:23", "the rule has no context words");
    expect_err(HEAD RULE_A "    gate: trigger\n", "7:11", "gate: only for rules with context_required");
    expect_err(HEAD RULE_A "    context: [x]\n    context_required: true\n    gate: digits\n", "9:11",
               "gate: expected 'words' or 'trigger', got 'digits'");
    expect_err(HEAD RULE_A "    context: [x]\n    context_required: true\n    gate: [trigger]\n", "9:11",
               "gate:");
    /* RULE_A's pattern has a literal of three bytes: Hyperscan looks for it, no trigger is used */
    expect_err(HEAD RULE_A "    context: [x]\n    context_required: true\n    gate: trigger\n", "6:14",
               "rule 't.a': gate: trigger, but the pattern has a literal of three bytes or more");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n    pattern: '[a-z]{4,9}'\n"
                    "    context: [x]\n    context_required: true\n    gate: trigger\n",
               "6:14", "no trigger can be proved");
    expect_err(HEAD RULE_A "    group: 0\n", "7:12", "group: 0 is out of range (1..9)");
    expect_err(HEAD RULE_A "    group: 10\n", "7:12", "out of range");
    expect_err(HEAD RULE_A "    group: first\n", "7:12", "group: expected an integer");
    expect_err(HEAD RULE_A "    group: 1\n", "6:14",
               "rule 't.a': group 1, but the pattern has 0 capture groups");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: test\n    pattern: '(?:a)(b)'\n    group: 2\n",
               "6:14", "group 2, but the pattern has 1 capture group");
    expect_err(HEAD "  - id: T.A\n    type: A\n    class: test\n    pattern: 'abc'\n", "3:9",
               "id 'T.A' must match [a-z0-9._-]");
    expect_err(HEAD "  - id: t.a\n    type: a b\n    class: test\n    pattern: 'abc'\n", "4:11",
               "type 'a b' must match [A-Z0-9_]");
    expect_err(HEAD "  - id: t.a\n    type: A\n    class: Test\n    pattern: 'abc'\n", "5:12",
               "class 'Test' must match [a-z0-9_]");
    expect_err(HEAD "  - just a string\n", "3:5", "a rule must be a mapping");
    expect_err("version: 1\nrules: {a: 1}\n", "2:8", "rules: expected a list of rules");
    expect_err("- 1\n", "1:1", "the top level must be a mapping");
    /* anchors, aliases and tags are refused like in config files */
    expect_err("version: 1\nrules: &r []\n", "2:8", "YAML anchors (&name) are not allowed");
    expect_err(HEAD "  - id: &i t.a\n    type: A\n    class: test\n    pattern: 'abc'\n", "3:9", "anchors");
    expect_err("version: 1\nx: &a 1\nrules: *a\n", "2:4", "anchors");
    expect_err("version: !!int 1\nrules: []\n", "1:10", "YAML tags (!tag) are not allowed");
    /* empty and malformed files */
    expect_err("", "1:1", "empty rule file");
    expect_err("# nothing\n", "1:1", "empty rule file");
    expect_err("---\n", "2:1", "empty rule file");
    expect_err("version: 1\nrules: [\n", "3:1", "YAML syntax error");
    expect_err("version: 1\nrules: []\n---\nversion: 1\n", "3:1", "only one YAML document");

    /* a file name is used in messages; no buffer is fine */
    char err[ERRLEN];
    assert_null(wd_guard_db_load_buf("x.yaml", "", 0, NULL, 0));
    assert_null(wd_guard_db_load_buf("x.yaml", NULL, 3, err, sizeof err));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/wd_guard_rulesXXXXXX", p1[128], p2[128], p3[128], err[ERRLEN];
    assert_non_null(mkdtemp(dir));
    snprintf(p1, sizeof p1, "%s/10-b.yaml", dir);
    snprintf(p2, sizeof p2, "%s/05-a.yaml", dir);
    snprintf(p3, sizeof p3, "%s/notes.txt", dir);

    assert_null(wd_guard_db_load(dir, err, sizeof err));
    assert_non_null(strstr(err, "no *.yaml rule files"));

    write_file(p1, HEAD "  - id: t.b\n    type: B\n    class: test\n    pattern: 'bbb'\n");
    write_file(p2, HEAD RULE_A);
    write_file(p3, "not yaml: [");
    wd_guard_db_t *db = wd_guard_db_load(dir, err, sizeof err);
    if (!db) fail_msg("%s", err);
    /* files load in name order */
    assert_int_equal(wd_guard_db_nrules(db), 2);
    assert_string_equal(wd_guard_db_rule(db, 0)->id, "t.a");
    assert_string_equal(wd_guard_db_rule(db, 1)->id, "t.b");
    assert_string_equal(wd_guard_db_rule(db, 1)->file, p1);
    wd_guard_db_unref(db);

    /* ids are unique across files; the error names both places */
    write_file(p1, HEAD "  - id: t.x\n    type: B\n    class: test\n    pattern: 'bbb'\n"
                        "  - id: t.a\n    type: B\n    class: test\n    pattern: 'bbb'\n");
    assert_null(wd_guard_db_load(dir, err, sizeof err));
    char want[400];
    snprintf(want, sizeof want, "%s:7:9: duplicate rule id 't.a' (first defined at %s:3)", p1, p2);
    assert_string_equal(err, want);

    /* a bad pattern in the second file names that file */
    write_file(p1, HEAD "  - id: t.x\n    type: B\n    class: test\n    pattern: '(unclosed'\n");
    assert_null(wd_guard_db_load(dir, err, sizeof err));
    snprintf(want, sizeof want, "%s:6:14: rule 't.x': pattern rejected by Hyperscan", p1);
    assert_memory_equal(err, want, strlen(want));

    unlink(p1);
    unlink(p2);
    unlink(p3);
    rmdir(dir);
    assert_null(wd_guard_db_load(dir, err, sizeof err));
    assert_non_null(strstr(err, "cannot open rules directory"));
}

/* ---------------------------------------------------------------------------------------------- */
/* Block scans */

typedef struct {
    wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    wd_findings_t f;
} fx_t;

static fx_t fx_open(const char *yaml)
{
    fx_t x = {.db = load_ok(yaml)};
    x.s = wd_guard_scratch_new(x.db);
    assert_non_null(x.s);
    wd_findings_init(&x.f);
    return x;
}

static void fx_close(fx_t *x)
{
    wd_findings_free(&x->f);
    wd_guard_scratch_free(x->s);
    wd_guard_db_unref(x->db);
}

static int scan(fx_t *x, const char *text, float min_score)
{
    return wd_guard_scan(x->db, x->s, text, strlen(text), min_score, &x->f);
}

/* Asserts the findings as "rule-id:start-end rule-id:start-end ..." */
static void expect_findings(fx_t *x, const char *text, const char *want)
{
    assert_int_equal(scan(x, text, 0.0f), WD_OK);
    char got[2048] = "";
    for (size_t i = 0; i < x->f.n; i++) {
        size_t used = strlen(got);
        snprintf(got + used, sizeof got - used, "%s%s:%u-%u", i ? " " : "", wd_guard_db_rule(x->db, x->f.v[i].rule)->id,
                 x->f.v[i].start, x->f.v[i].end);
    }
    if (strcmp(got, want) != 0) fail_msg("text \"%s\"\n got: %s\nwant: %s", text, got, want);
}

#define R(id, type, extra, pat) "  - id: " id "\n    type: " type "\n    class: test\n    pattern: '" pat "'\n" extra

static const char *const basic_rules =
    HEAD R("email", "EMAIL", "    caseless: true\n    score: 0.9\n", "[a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}")
        R("card", "CREDIT_CARD", "    validator: luhn\n    score: 0.7\n", "\\b\\d{16}\\b")
            R("card16", "CARD_NOB", "    score: 0.6\n", "\\d{16}")
                R("num", "NUMBER", "    score: 0.5\n", "\\d{4,}")
                    R("ssn", "US_SSN", "    context: [ssn, social security]\n    context_required: true\n",
                      "\\b\\d{3}-\\d{2}-\\d{4}\\b")
                        R("tok", "TOKEN", "    score: 0.6\n    context: [token]\n", "tok_[a-z0-9]{8}")
                            R("kw", "KW", "    max_len: 8\n    boundary: false\n", "kz[a-z]+")
                                R("secret", "SECRET", "    caseless: true\n", "secret[0-9]{2}")
                                    R("upper", "UPPER", "", "SECRET[0-9]{3}")
                                        /* a long-span rule: streams scan it in a database of its own */
                                        R("quote", "QUOTE", "    max_len: 600\n    boundary: false\n", "<<[a-z ]+>>")
                                            /* another, caseless, whose matches start with a literal */
                                            R("kv", "KV", "    max_len: 600\n    caseless: true\n",
                                              "key=+[a-z ]+;");

static void test_scan_spans(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    /* at the very start and the very end of the text, and the whole text */
    expect_findings(&x, "a@b.co", "email:0-6");
    expect_findings(&x, "a@b.co is mine", "email:0-6");
    expect_findings(&x, "mine: a@b.co", "email:6-12");
    /* the leftmost start of the longest match: dots inside the local part, subdomains */
    expect_findings(&x, "x john.doe+tag@mail.example.com.", "email:2-31");
    /* repeated matches, each exact */
    expect_findings(&x, "a@b.co, c@d.org;e@f.net", "email:0-6 email:8-15 email:16-23");
    /* nothing */
    expect_findings(&x, "nothing to see here", "");
    expect_findings(&x, "", "");
    /* case-insensitive rule vs case-sensitive rule */
    expect_findings(&x, "John.DOE@Example.COM", "email:0-20");
    expect_findings(&x, "a SeCrEt42 b", "secret:2-10");
    expect_findings(&x, "a secret123 b", "");          /* 'secret12' then '3': inside a digit run */
    expect_findings(&x, "a SECRET123 b", "upper:2-11"); /* secret12 is dropped inside a run, upper is whole */
    expect_findings(&x, "a Secret123 b", "");
    fx_close(&x);
}

static void test_scan_overlaps_and_boundaries(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    /* card (0.7, Luhn) beats card16 (0.6) and num (0.5) on the same span */
    expect_findings(&x, "card 4111111111111111 ok", "card:5-21");
    /* Luhn fails: card is dropped, card16 (0.6) beats num (0.5) */
    expect_findings(&x, "card 4111111111111112 ok", "card16:5-21");
    /* 16 digits inside a 30-digit run: no card; the run is one number */
    expect_findings(&x, "x 123456789012345678901234567890 y", "num:2-32");
    /* digits glued to letters: \d{16} without \b is still dropped by the boundary check */
    expect_findings(&x, "id4111111111111111", "");
    /* multi-byte characters around: offsets are bytes; é is not a word character */
    expect_findings(&x, "\xc3\xa9" "4111111111111111\xc3\xa9", "card:2-18");
    expect_findings(&x, "Gr\xc3\xbc\xc3\x9f" "e: a@b.co \xf0\x9f\x99\x82 c@d.io", "email:9-15 email:21-27");
    /* max_len bounds a span: kz[a-z]+ never reports more than 8 bytes */
    expect_findings(&x, "kzabcdefghijk", "kw:0-8");
    expect_findings(&x, "xx kzab", "kw:3-7");
    fx_close(&x);

    /* ties: same score and length -> the earlier rule; same score -> the longer span */
    x = fx_open(HEAD R("x", "X", "    score: 0.6\n    boundary: false\n", "xx[0-9]+")
                    R("y", "Y", "    score: 0.6\n    boundary: false\n", "[0-9]+y+")
                        R("z", "Z", "    score: 0.6\n    boundary: false\n", "q[0-9]+y"));
    expect_findings(&x, "xx123yy", "x:0-5");     /* x "xx123" (5) vs y "123yy" (5): x is defined first */
    expect_findings(&x, "xx12yyy", "y:2-7");     /* y "12yyy" (5) is longer than x "xx12" (4) */
    expect_findings(&x, "xx1 2yyy", "x:0-3 y:4-8"); /* no overlap: both */
    /* a chain: x and y overlap, y and z overlap; y wins, neither x nor z survives */
    expect_findings(&x, "xx1yyyq1y", "y:2-6 z:6-9");
    fx_close(&x);

    /* boundary: false lets a rule match inside words */
    x = fx_open(HEAD R("in", "IN", "    boundary: false\n", "bomb") R("whole", "WHOLE", "", "kill"));
    expect_findings(&x, "bombastic skill kill", "in:0-4 whole:16-20");
    fx_close(&x);
}

static void test_scan_context_and_scores(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    float s;
    /* context before (within 64 bytes), after (within 32), case-insensitively, whole words */
    assert_int_equal(scan(&x, "tok_abcdefgh", 0), WD_OK);
    assert_int_equal(x.f.n, 1);
    s = x.f.v[0].score;
    assert_true(s > 0.59f && s < 0.61f);
    assert_int_equal(scan(&x, "my Token: tok_abcdefgh", 0), WD_OK);
    assert_int_equal(x.f.n, 1);
    assert_true(x.f.v[0].score > 0.84f && x.f.v[0].score < 0.86f);
    assert_int_equal(scan(&x, "tok_abcdefgh is my token", 0), WD_OK);
    assert_true(x.f.v[0].score > 0.84f);
    assert_int_equal(scan(&x, "tokens: tok_abcdefgh", 0), WD_OK); /* not a whole word */
    assert_true(x.f.v[0].score < 0.61f);
    assert_int_equal(scan(&x, "token ................................................................ tok_abcdefgh", 0),
                     WD_OK); /* 71 bytes before */
    assert_true(x.f.v[0].score < 0.61f);
    assert_int_equal(scan(&x, "tok_abcdefgh ................................ token", 0), WD_OK); /* 33 after */
    assert_true(x.f.v[0].score < 0.61f);
    /* min_score drops weaker findings, after the context boost */
    assert_int_equal(scan(&x, "tok_abcdefgh", 0.7f), WD_OK);
    assert_int_equal(x.f.n, 0);
    assert_int_equal(scan(&x, "token tok_abcdefgh", 0.7f), WD_OK);
    assert_int_equal(x.f.n, 1);
    /* context_required: without a context word the SSN is dropped; phrases work */
    expect_findings(&x, "call 123-45-6789 now", "num:12-16"); /* only the weaker rule remains */
    expect_findings(&x, "SSN: 123-45-6789", "ssn:5-16");
    expect_findings(&x, "my Social Security number is 123-45-6789", "ssn:29-40");
    expect_findings(&x, "123-45-6789 (ssn)", "ssn:0-11");
    expect_findings(&x, "social  security 123-45-6789", "num:24-28");
    /* the boosted score is capped at 1 */
    fx_close(&x);
    x = fx_open(HEAD R("t", "T", "    score: 0.9\n    context: [key]\n", "t_[0-9]{4}"));
    assert_int_equal(scan(&x, "key t_1234", 0), WD_OK);
    assert_int_equal(x.f.n, 1);
    assert_true(x.f.v[0].score == 1.0f);
    fx_close(&x);
    /* a one-byte word, and words whose first two bytes share a filter slot ("ca", "sa") */
    x = fx_open(HEAD R("t", "T", "    score: 0.5\n    context: ['#', sa, ca]\n", "t_[0-9]{4}"));
    static const char *const boosted[] = {"#: t_1234", "# t_1234",  "t_1234 #",
                                          "CA t_1234", "t_1234 sa", "x sa: t_1234"};
    static const char *const plain[] = {"t_1234", "xa t_1234", "casa t_1234", "t_1234 s", "t_1234 c"};
    for (size_t i = 0; i < sizeof boosted / sizeof *boosted; i++) {
        assert_int_equal(scan(&x, boosted[i], 0), WD_OK);
        assert_int_equal(x.f.n, 1);
        assert_true(x.f.v[0].score > 0.74f);
    }
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        assert_int_equal(scan(&x, plain[i], 0), WD_OK);
        assert_int_equal(x.f.n, 1);
        assert_true(x.f.v[0].score < 0.51f);
    }
    fx_close(&x);
}

static void test_scan_limit(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    x.f.limit = 3;
    assert_int_equal(scan(&x, "a@b.co c@d.co e@f.co", 0), WD_OK);
    assert_int_equal(x.f.n, 3);
    assert_int_equal(scan(&x, "a@b.co c@d.co e@f.co g@h.co", 0), WD_E2BIG);
    /* dropped candidates do not count */
    assert_int_equal(scan(&x, "a@b.co c@d.co e@f.co 123-45-6789 tok_abcdefgh", 0.65f), WD_OK);
    assert_int_equal(x.f.n, 3);
    /* a scratch belongs to its database */
    fx_t y = fx_open(basic_rules);
    assert_int_equal(wd_guard_scan(x.db, y.s, "a", 1, 0, &x.f), WD_EINVAL);
    fx_close(&y);
    fx_close(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* Stream scans */

typedef struct {
    uint64_t start, end;
    uint16_t rule;
    float score;
} abs_t;

/* Feeds text cut at cuts[0..ncuts) and collects absolute findings; checks the hold-back contract. */
static size_t stream_scan(fx_t *x, const char *text, size_t len, const size_t *cuts, size_t ncuts, float min_score,
                          abs_t *out, size_t cap)
{
    wd_guard_stream_t *st = wd_guard_stream_open(x->db, min_score);
    assert_non_null(st);
    size_t n = 0, pos = 0;
    uint64_t safe = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        assert_int_equal(wd_guard_stream_feed(st, x->s, text + pos, end - pos, &x->f), WD_OK); /* empty too */
        for (size_t k = 0; k < x->f.n; k++) {
            assert_true(n < cap);
            abs_t a = {x->f.base + x->f.v[k].start, x->f.base + x->f.v[k].end, x->f.v[k].rule, x->f.v[k].score};
            /* nothing reported now may start before a byte that was declared final earlier */
            assert_true(a.start >= safe);
            out[n++] = a;
        }
        pos = end;
        assert_int_equal(wd_guard_stream_offset(st), pos);
        safe = wd_guard_stream_safe_offset(st);
        assert_true(safe <= pos);
        assert_true(pos - safe <= wd_guard_db_holdback(x->db));
    }
    assert_int_equal(wd_guard_stream_finish(st, x->s, &x->f), WD_OK);
    for (size_t k = 0; k < x->f.n; k++) {
        assert_true(n < cap);
        abs_t a = {x->f.base + x->f.v[k].start, x->f.base + x->f.v[k].end, x->f.v[k].rule, x->f.v[k].score};
        assert_true(a.start >= safe);
        out[n++] = a;
    }
    assert_int_equal(wd_guard_stream_safe_offset(st), len);
    assert_int_equal(wd_guard_stream_feed(st, x->s, "x", 1, &x->f), WD_EINVAL); /* finished */
    wd_guard_stream_free(st);
    return n;
}

static void expect_stream_equals_block(fx_t *x, const char *text, size_t len, const size_t *cuts, size_t ncuts)
{
    abs_t got[512];
    size_t n = stream_scan(x, text, len, cuts, ncuts, 0.0f, got, 512);
    assert_int_equal(wd_guard_scan(x->db, x->s, text, len, 0.0f, &x->f), WD_OK);
    bool same = n == x->f.n;
    for (size_t i = 0; same && i < n; i++)
        same = got[i].start == x->f.v[i].start && got[i].end == x->f.v[i].end && got[i].rule == x->f.v[i].rule &&
               got[i].score == x->f.v[i].score;
    if (!same) {
        fprintf(stderr, "text (%zu bytes): %.*s\ncuts:", len, (int)len, text);
        for (size_t i = 0; i < ncuts; i++)
            fprintf(stderr, " %zu", cuts[i]);
        fprintf(stderr, "\nstream:");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %u:%llu-%llu", got[i].rule, (unsigned long long)got[i].start,
                    (unsigned long long)got[i].end);
        fprintf(stderr, "\nblock: ");
        for (size_t i = 0; i < x->f.n; i++)
            fprintf(stderr, " %u:%u-%u", x->f.v[i].rule, x->f.v[i].start, x->f.v[i].end);
        fprintf(stderr, "\n");
        fail_msg("stream and block findings differ");
    }
}

static void test_stream_split(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    const char *t = "hello john.doe@example.com and card 4111111111111111, token tok_abcdefgh.";
    size_t len = strlen(t);
    abs_t got[16];
    /* split inside the email: the span still has its absolute offsets */
    size_t c1[] = {12};
    size_t n = stream_scan(&x, t, len, c1, 1, 0, got, 16);
    assert_int_equal(n, 3);
    assert_int_equal(got[0].start, 6);
    assert_int_equal(got[0].end, 26);
    assert_string_equal(wd_guard_db_rule(x.db, got[0].rule)->id, "email");
    assert_int_equal(got[1].start, 36);
    assert_int_equal(got[1].end, 52);
    assert_string_equal(wd_guard_db_rule(x.db, got[1].rule)->id, "card");
    assert_int_equal(got[2].start, 60);
    assert_int_equal(got[2].end, 72);
    assert_true(got[2].score > 0.84f); /* the context word came in an earlier piece */
    /* three pieces: the email and the card each split twice */
    size_t c3[] = {10, 20, 40, 48};
    n = stream_scan(&x, t, len, c3, 4, 0, got, 16);
    assert_int_equal(n, 3);
    assert_int_equal(got[0].start, 6);
    assert_int_equal(got[0].end, 26);
    assert_int_equal(got[1].start, 36);
    assert_int_equal(got[1].end, 52);
    expect_stream_equals_block(&x, t, len, c3, 4);
    /* every single-cut position, and byte by byte */
    for (size_t c = 0; c <= len; c++) {
        size_t cc[] = {c};
        expect_stream_equals_block(&x, t, len, cc, 1);
    }
    size_t every[128];
    for (size_t i = 0; i < len; i++)
        every[i] = i + 1;
    expect_stream_equals_block(&x, t, len, every, len);
    /* a match that needs the end of the text (\b at the very end) is reported by finish */
    n = stream_scan(&x, "card 4111111111111111", 21, NULL, 0, 0, got, 16);
    assert_int_equal(n, 1);
    assert_int_equal(got[0].start, 5);
    assert_int_equal(got[0].end, 21);
    fx_close(&x);
}

/* Member names the gateway does not scan in prompts: lower-case letters and '_', or up to 7 digits. */
static void test_plain_name(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "messages", "max_tokens", "_x", "0", "1234567"};
    static const char *const text[] = {"Max",    "max-tokens", "a1",      "12345678",
                                       "a@b.co", "4111 1111",  "\\u0061", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        assert_true(wd_guard_plain_name(plain[i], strlen(plain[i])));
    for (size_t i = 0; i < sizeof text / sizeof *text; i++)
        assert_false(wd_guard_plain_name(text[i], strlen(text[i])));
}

/* `group`: the finding is a capture group; the rest of the match is a cue that is not reported. */
static void test_scan_group(void **state)
{
    (void)state;
    fx_t x = fx_open(HEAD R("who", "PERSON", "    group: 1\n", "\\b(?:name is|said)[ ]([A-Z][a-z]+)")
                     /* the group before the end, in a long-span rule */
                     R("tail", "ID", "    group: 2\n    max_len: 300\n    boundary: false\n",
                       "(id)=([0-9]+)[a-z ]{0,200};")
                     /* fixed width: the group still needs the confirmation */
                     R("fixed", "CODE", "    group: 1\n", "code:([A-Z]{3})")
                         R("gated", "MRN", "    group: 1\n    context: [chart]\n    context_required: true\n",
                           "mrn ([0-9]{6})"));
    expect_findings(&x, "my name is Alice.", "who:11-16");
    expect_findings(&x, "he said Bob and said Carol", "who:8-11 who:21-26");
    expect_findings(&x, "name is alice, resaid Bob", "");
    expect_findings(&x, "code:ABC", "fixed:5-8");
    expect_findings(&x, "id=42 abc;", "tail:3-5");
    expect_findings(&x, "id=42 abc", "");
    expect_findings(&x, "chart: mrn 123456", "gated:11-17");
    expect_findings(&x, "mrn 123456 and more words to move the context word away, chart", "");
    expect_findings(&x, "mrn 123456", "");
    const char *t = "chart mrn 123456; he said Bob; id=7 ab; code:XYZ and name is Eve";
    size_t len = strlen(t);
    for (size_t c = 0; c <= len; c++) {
        size_t cc[] = {c};
        expect_stream_equals_block(&x, t, len, cc, 1);
    }
    fx_close(&x);
}

/* Hyperscan 5.4.9's own stream mode misses this match (found by fuzzing); ours must not. */
static void test_stream_vectorscan_regression(void **state)
{
    (void)state;
    fx_t x = fx_open(HEAD R("bomb", "TERM", "    caseless: true\n    boundary: false\n    max_len: 16\n", "b[o0]+mb")
                         R("ab", "AB", "    boundary: false\n", "a[ab]*b"));
    const char *t = "0000000000000000b00mb";
    size_t len = strlen(t);
    expect_findings(&x, t, "bomb:16-21");
    for (size_t c = 0; c <= len; c++) {
        size_t cc[] = {c};
        expect_stream_equals_block(&x, t, len, cc, 1);
    }
    expect_stream_equals_block(&x, t, len, NULL, 0);
    fx_close(&x);
}

/* Nested matches whose starts move left as their ends move right (a^k b^k for k = 1..40): the
 * candidates arrive in reverse start order, so the sort by start moves every one (insertion runs of
 * 16, then merges). */
static void test_scan_nested_reverse(void **state)
{
    (void)state;
    char yaml[8192], pat[4096], text[128];
    size_t pl = 0;
    for (int k = 1; k <= 40; k++) {
        if (k > 1) pat[pl++] = '|';
        memset(pat + pl, 'a', (size_t)k);
        memset(pat + pl + k, 'b', (size_t)k);
        pl += 2 * (size_t)k;
    }
    pat[pl] = '\0';
    snprintf(yaml, sizeof yaml, HEAD R("ab", "AB", "    boundary: false\n    max_len: 80\n", "%s"), pat);
    fx_t x = fx_open(yaml);
    memset(text, 'a', 40);
    memset(text + 40, 'b', 40);
    text[80] = '\0';
    expect_findings(&x, text, "ab:0-80");
    expect_findings(&x, text + 30, "ab:0-20"); /* a^10 b^40: the longest is a^10 b^10 */
    size_t cuts[] = {41, 60};
    expect_stream_equals_block(&x, text, 80, cuts, 2);
    fx_close(&x);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Random pieces joined until the text has at least target bytes (or is full). */
static size_t random_text(char *text, size_t cap, size_t target, const char *const *parts, size_t nparts)
{
    size_t len = 0;
    while (len < target) {
        const char *p = parts[rnd((uint32_t)nparts)];
        size_t pl = strlen(p);
        if (len + pl > cap) break;
        memcpy(text + len, p, pl);
        len += pl;
    }
    return len;
}

/* Random texts made of pieces that match, almost match and separate, split at random points. */
static void test_stream_property(void **state)
{
    (void)state;
    static const char *const parts[] = {
        "a@b.co",  "john.doe@example.com", "x@y",   "@",       "4111111111111111", "4111111111111112", "12345",
        "123-45-6789", "ssn",  "social security", "token", "tok_abcdefgh", "tok_", "kzabcdefghij", "kz",
        "SECRET123", "secret42", " ", " ", ".", ",", "-", "\n", "\xc3\xa9", "xx", "yy", "0", "9", "abc",
        "Token:", "q1y", "<<", ">>", "<<abc def>>", "a b c d e f g h", "key=", "KEY==", "Ke", "y=", ";", "kEy=ab cd;"};
    fx_t x = fx_open(basic_rules);
    static char text[4096];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = random_text(text, sizeof text, 1 + rnd(iter < 300 ? 300 : 3000), parts, WD_ARRAY_LEN(parts));
        size_t cuts[8], ncuts = rnd(7);
        for (size_t i = 0; i < ncuts; i++)
            cuts[i] = rnd((uint32_t)len + 1);
        for (size_t i = 1; i < ncuts; i++) /* sort */
            for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
        wd_guard_simd(iter % 3);
        expect_stream_equals_block(&x, text, len, cuts, ncuts);
    }
    wd_guard_simd(2);
    fx_close(&x);
}

/* Texts that end where the next page is not mapped. Hyperscan 5.4's AVX-512 literal matcher loads past
 * the end of what it scans, which crashed the process (found by fuzz_guard_scan); on a CPU with AVX-512
 * VBMI this test crashed without the engine's copy of such tails. Findings must equal those of the same
 * text scanned from an ordinary buffer. */
static void test_scan_at_page_end(void **state)
{
    (void)state;
    static const char *const parts[] = {"a@b.co",
                                        "john.doe@example.com",
                                        "4111 1111 1111 1111",
                                        "ssn",
                                        "123-45-6789",
                                        "card",
                                        "visa",
                                        "social security",
                                        "Card",
                                        "SSN",
                                        " ",
                                        ".",
                                        "\xe2\x80\x8b",
                                        "\xef\xbc\x94",
                                        "tok_abcdefgh",
                                        "secret42",
                                        "kzab",
                                        "xx",
                                        "1111",
                                        "$"};
    static const char crash[] = "mc\xffil ja\xe2\x80\x8bneT@example.com card \xef\xbc\x94"
                                "111\xc2\xa0"
                                "1111$1111 1111 "
                                "ssn 12\xa0"
                                "1111 sn 123\xe2SSSSS";
    fx_t x = fx_open(basic_rules);
    long pg = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    static char text[512];
    wd_findings_t ref;
    wd_findings_init(&ref);
    for (int iter = 0; iter < 200; iter++) {
        size_t len = iter == 0 ? sizeof crash - 1
                               : random_text(text, sizeof text, 1 + rnd(400), parts, WD_ARRAY_LEN(parts));
        if (iter == 0) memcpy(text, crash, len);
        for (size_t off = 0; off < len; off += 1 + (iter ? rnd(16) : 0)) {
            size_t n = len - off;
            char *at = m + pg - n;
            memcpy(at, text + off, n);
            assert_int_equal(wd_guard_scan(x.db, x.s, at, n, 0.0f, &x.f), WD_OK);
            assert_int_equal(wd_guard_scan(x.db, x.s, text + off, n, 0.0f, &ref), WD_OK);
            assert_int_equal(x.f.n, ref.n);
            for (size_t i = 0; i < ref.n; i++)
                assert_true(x.f.v[i].start == ref.v[i].start && x.f.v[i].end == ref.v[i].end &&
                            x.f.v[i].rule == ref.v[i].rule);
        }
    }
    wd_findings_free(&ref);
    munmap(m, 2 * (size_t)pg);
    fx_close(&x);
}

/* A long-span match in progress whose start differs in case from the rule's literal prefix: the stream
 * must keep holding it back (the safe offset stays before its start) however it is cut. */
static void test_stream_long_span_caseless(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    static char text[600];
    size_t len = (size_t)snprintf(text, sizeof text, "start kEy=");
    for (; len < 520; len++)
        text[len] = len % 7 ? 'q' : ' ';
    text[len++] = ';';
    size_t cuts[60];
    for (size_t i = 0; i < 60; i++)
        cuts[i] = 8 * (i + 1);
    expect_stream_equals_block(&x, text, len, cuts, 60);
    assert_int_equal(x.f.n, 1);
    assert_int_equal(x.f.v[0].start, 6);
    fx_close(&x);
}

static void test_stream_holdback_bounded(void **state)
{
    (void)state;
    fx_t x = fx_open(basic_rules);
    wd_guard_stream_t *st = wd_guard_stream_open(x.db, 0);
    assert_non_null(st);
    /* 1 MB of clean text in 1000-byte pieces: the stream keeps only its hold-back */
    char piece[1000];
    memset(piece, 'a', sizeof piece);
    for (int i = 0; i < 1000; i++) {
        piece[i % 997] = ' ';
        assert_int_equal(wd_guard_stream_feed(st, x.s, piece, sizeof piece, &x.f), WD_OK);
        assert_int_equal(x.f.n, 0);
        assert_true(wd_guard_stream_offset(st) - wd_guard_stream_safe_offset(st) <= wd_guard_db_holdback(x.db));
    }
    /* the findings are at absolute offsets far beyond 32 bits of a single piece */
    const char *tail = " mail a@b.co";
    assert_int_equal(wd_guard_stream_feed(st, x.s, tail, strlen(tail), &x.f), WD_OK);
    assert_int_equal(wd_guard_stream_finish(st, x.s, &x.f), WD_OK);
    assert_int_equal(x.f.n, 1);
    assert_int_equal(x.f.base + x.f.v[0].start, 1000000 + 6);
    assert_int_equal(x.f.base + x.f.v[0].end, 1000000 + 12);
    assert_int_equal(wd_guard_stream_finish(st, x.s, &x.f), WD_EINVAL);
    wd_guard_stream_free(st);
    /* an empty stream */
    st = wd_guard_stream_open(x.db, 0);
    assert_int_equal(wd_guard_stream_feed(st, x.s, NULL, 0, &x.f), WD_OK);
    assert_int_equal(wd_guard_stream_finish(st, x.s, &x.f), WD_OK);
    assert_int_equal(x.f.n, 0);
    wd_guard_stream_free(st);
    /* freeing an unfinished stream is fine */
    st = wd_guard_stream_open(x.db, 0);
    assert_int_equal(wd_guard_stream_feed(st, x.s, "a@b", 3, &x.f), WD_OK);
    wd_guard_stream_free(st);
    fx_close(&x);
}

/* ---------------------------------------------------------------------------------------------- */
/* Rule purposes */

/* A scan for some purposes sees only the rules that serve one of them. Rules that never run on answers
 * (here "in" and "gin", a context-gated one) are compiled for block scans only: streams refuse them. */
static void test_uses(void **state)
{
    (void)state;
    char err[ERRLEN];
    const char *yaml = HEAD R("in", "IN", "", "alpha") R("out", "OUT", "", "beta")
        R("both", "BOTH", "", "gamma") R("never", "NEVER", "", "delta")
            R("gin", "GIN", "    context: [pin]\n    context_required: true\n", "[0-9]{4}");
    wd_guard_db_t *db = wd_guard_db_parse_buf("r.yaml", yaml, strlen(yaml), err, sizeof err);
    assert_non_null(db);
    assert_int_equal(wd_guard_db_set_uses(db, 0, WD_GUARD_INPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 1, WD_GUARD_OUTPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 2, WD_GUARD_INPUT | WD_GUARD_OUTPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 3, 0), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 4, WD_GUARD_INPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 5, 0), WD_EINVAL);  /* no such rule */
    assert_int_equal(wd_guard_db_set_uses(db, 0, 8), WD_EINVAL);  /* no such purpose */
    assert_null(wd_guard_stream_open(db, 0));                       /* not compiled yet */
    assert_int_equal(wd_guard_db_compile(db, err, sizeof err), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 0, WD_GUARD_ANY), WD_EINVAL);
    fx_t x = {.db = db, .s = wd_guard_scratch_new(db)};
    wd_findings_init(&x.f);
    const char *t = "alpha beta gamma delta 1234 pin 5678";
    static const struct {
        unsigned uses;
        const char *want;
    } cases[] = {{WD_GUARD_INPUT, "in:0-5 both:11-16 gin:23-27 gin:32-36"},
                 {WD_GUARD_OUTPUT, "out:6-10 both:11-16"},
                 {WD_GUARD_INJECTION, ""},
                 {WD_GUARD_ANY, "in:0-5 out:6-10 both:11-16 gin:23-27 gin:32-36"}};
    for (size_t i = 0; i < WD_ARRAY_LEN(cases); i++) {
        assert_int_equal(wd_guard_scan_for(db, x.s, cases[i].uses, t, strlen(t), 0, &x.f), WD_OK);
        char got[256] = "";
        for (size_t k = 0; k < x.f.n; k++) {
            size_t used = strlen(got);
            snprintf(got + used, sizeof got - used, "%s%s:%u-%u", k ? " " : "", wd_guard_db_rule(db, x.f.v[k].rule)->id,
                     x.f.v[k].start, x.f.v[k].end);
        }
        if (strcmp(got, cases[i].want)) fail_msg("uses %u: got '%s', want '%s'", cases[i].uses, got, cases[i].want);
    }
    assert_null(wd_guard_stream_open_for(db, WD_GUARD_INPUT, 0));
    assert_null(wd_guard_stream_open(db, 0));
    /* a stream for answers reports only the output rules */
    wd_guard_stream_t *st = wd_guard_stream_open_for(db, WD_GUARD_OUTPUT, 0);
    assert_non_null(st);
    size_t n = 0;
    assert_int_equal(wd_guard_stream_feed(st, x.s, t, strlen(t), &x.f), WD_OK);
    n += x.f.n;
    assert_int_equal(wd_guard_stream_finish(st, x.s, &x.f), WD_OK);
    n += x.f.n;
    assert_int_equal(n, 2);
    wd_guard_stream_free(st);
    fx_close(&x);
}

/* With the shipped rules, a stream holds back only the short rules' window on clean text, and from the
 * start of a long secret (a JWT) while it is still arriving; the JWT is then found whole. */
/* The default privacy rules on random texts of identifiers, near-misses and context words (block scans
 * run the context_required rules only around their context words; streams scan them everywhere). */
static void test_stream_property_rules(void **state)
{
    (void)state;
    static const char *const parts[] = {
        "ssn ", "SSN: ", "social security ", "123-45-6789", "078-05-1120", "123456789", "021000021",
        "routing ", "passport ", "driver's license ", "D1234567", "dob ", "born ", "12/03/1985",
        "March 3rd, 1985", "nhs ", "943 476 5919", "9434765919", "patient ", "MRN 00123456",
        "medical record ", "member id ", "npi ", "1234567893", "dea ", "AB1234563", "iban ",
        "de89370400440532013000", "DE89 3704 0044 0532 0130 00", "phone ", "call ", "+44 20 7946 0958",
        "(212) 555-1234", "020 7946 0958", "itin ", "912-70-1234", "4111 1111 1111 1111", "card ", "a@b.co",
        "Dr. Ana Lopez", "Megan Payne", "twilio ", "SK0123456789abcdef0123456789abcdef", "each", "reach",
        "_ach", "ach ", "x", "9", " ", " ", " ", ", ", ". ", "-", "\n", "\xc3\xa9", "Ssn", "ssn#",
        /* around the triggers of trigger-gated rules (digits; the space between two capitalised words;
         * an e-mail address's @): runs longer than a rule's span, values glued to words, names in
         * a row, addresses with long local parts */
        "Megan", "Payne", "megan Payne", "Ann-Marie O'Neil", "Jos\xc3\xa9 \xc3\x81lvarez", "\xc5\x81ukasz ",
        "Mr ", "Dear ", "a", "B", "12345678901234567890123456789012345678901234567890123456789",
        "4111-1111-1111-1111", "ABCD1234EFGH5678IJKL9012MNOP3456QRST", "192.168.0.1", "10.0.0.256",
        "john.doe+tag@example.co.uk", "@", "x@", "@y.io",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "+1 ",
        "(", ")", "\t", "GB82 WEST 1234 5698 7654 32", "QQ 12 34 56 C",
        /* a dotted token (pivot: its first dot), a Bitcoin address (a range of leading digits), a
         * connection string (pivot: an =) */
        "MRo8ADQvj07uvnYkPYfYtrQyCe.BQvpHm.5MHXtiWJG0ueLwcEXJ3PBMFBqrN", "MRo8ADQvj07uvnYkPYfYtrQyCe",
        ".BQvpHm", "19yTc1xUZKqRiQzwspZRyMiFdaVUwceyGC", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        "Host=10.0.4.12;", "Database=crm;", "Password=Qx7rT2mVb9Lk4Wz8", "="};
    char err[ERRLEN];
    wd_guard_db_t *db = wd_guard_db_parse("rules", err, sizeof err);
    if (!db) fail_msg("%s", err);
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++) {
        const char *cls = wd_guard_db_rule(db, i)->cls;
        bool privacy =
            !strcmp(cls, "pii") || !strcmp(cls, "phi") || !strcmp(cls, "financial") || !strcmp(cls, "secrets");
        wd_guard_db_set_uses(db, i, privacy ? WD_GUARD_ANY : 0);
    }
    assert_int_equal(wd_guard_db_compile(db, err, sizeof err), WD_OK);
    fx_t x = {.db = db, .s = wd_guard_scratch_new(db)};
    assert_non_null(x.s);
    wd_findings_init(&x.f);
    static char text[4096];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = random_text(text, sizeof text, 1 + rnd(iter < 250 ? 300 : 2500), parts, WD_ARRAY_LEN(parts));
        size_t cuts[8], ncuts = rnd(7);
        for (size_t i = 0; i < ncuts; i++)
            cuts[i] = rnd((uint32_t)len + 1);
        for (size_t i = 1; i < ncuts; i++)
            for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
        wd_guard_simd(iter % 3);
        expect_stream_equals_block(&x, text, len, cuts, ncuts);
    }
    wd_guard_simd(2);
    fx_close(&x);
}

/* Trigger-gated rules (engine.c): block scans run them only around their trigger's occurrences; streams
 * scan them everywhere, so the two must agree. A digit run longer than a rule's span, a match that
 * reaches past the region of the run's first digit, the space between two words as a pivot, a pivot a
 * match can hold more than once (the first dot of a dotted token), a range of leading digits. */
static void test_trigger_gating(void **state)
{
    (void)state;
    fx_t x = fx_open(
        HEAD R("wide", "WIDE", "    boundary: false\n", "[0-9][A-Z]{60}")
            R("pair", "PAIR", "", "[a-z]+ [A-Z][a-z]+") R("dash", "DASH", "", "\\b[0-9]{3}-[0-9]{4}\\b")
                R("dots", "DOTS", "", "\\b[MN][a-z0-9]{2,4}\\.[a-z0-9.]{2,3}\\.[a-z]{4}")
                    R("lead", "LEAD", "", "\\b[13][a-km-z1-9]{6,9}\\b")
                        R("alt", "ALT", "", "\\b(?:[0-9]{6}|[0-9]:[0-9]:[0-9])\\b")
                            R("hex", "HEX", "", "(?:[a-f]{1,4}:|::?)(?:[a-f]{0,4}:){1,3}[a-f]{1,4}\\b"));
    char text[200];
    snprintf(text, sizeof text, "1A2%s", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    expect_findings(&x, text, "wide:2-63");
    expect_findings(&x, "see john Smith and mary Jones", "pair:4-14 pair:19-29");
    expect_findings(&x, "a B", "");
    expect_findings(&x, "ab Cd", "pair:0-5");
    expect_findings(&x, "call 555-1234 or 5551-234 now, or 555-12345 or x555-1234", "dash:5-13");
    expect_findings(&x, "see: Mab.c.d.abcd, Na1.b2.wxyz, Mx.yz.abcd", "dots:5-17 dots:19-30");
    expect_findings(&x, "1abcdefg 3abcdefghkm 2abcdefg 1abcdefghk", "lead:0-8 lead:30-40");
    /* a run is scanned when it holds as many digits and colons as either branch needs (3 and 0) */
    expect_findings(&x, "at 1:2:3 or 123456 or 12:34, 1:2", "alt:3-8 alt:12-18");
    /* no literal, no digit, no byte held once: run around its colons, which every match holds twice */
    expect_findings(&x, "at fe::ab or a:b or ::f, ab: c:d:e", "hex:3-9 hex:20-23 hex:29-34");
    static const char *const parts[] = {"1",
                                        "A",
                                        "2",
                                        "BBBBBBBBBBBBBBBBBBBB",
                                        "555-1234",
                                        "-",
                                        "john",
                                        "Smith",
                                        " ",
                                        "  ",
                                        "Cd",
                                        "x",
                                        "\n",
                                        "9",
                                        "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
                                        "Mab.c.d.abcd",
                                        "N12.",
                                        ".",
                                        "ab.",
                                        "wxyz",
                                        "3",
                                        "abcdefg",
                                        "Mab",
                                        "1:2:3",
                                        "123456",
                                        ":",
                                        "fe::ab",
                                        "::",
                                        "c:d",
                                        "\xc3\xa9",
                                        "\xe2\x80\x99",
                                        "\xb1"};
    static char buf[4096];
    for (int iter = 0; iter < 300; iter++) {
        wd_guard_simd(iter % 3); /* the trigger loop at each level (as far as the CPU has it) */
        size_t len = random_text(buf, sizeof buf, 1 + rnd(iter < 200 ? 200 : 2000), parts, WD_ARRAY_LEN(parts));
        size_t cut = rnd((uint32_t)len + 1);
        expect_stream_equals_block(&x, buf, len, &cut, 1);
    }
    /* the trigger loop looks at 64-byte blocks, the first and last in a copy: a value at every offset of
     * texts around one, two and three blocks long, at each level of wd_guard_simd */
    for (unsigned level = 0; level < 3; level++) {
        wd_guard_simd(level);
        for (size_t len = 8; len <= 200; len += len < 50 || (len > 120 && len < 136) || len > 185 ? 1 : 9)
            for (size_t off = 0; off + 5 <= len; off++)
                for (int k = 0; k < 6; k++) {
                    static const char *const val[] = {"555-1234", "ab Cd", "Mab.c.d.abcd",
                                                      "1abcdefg", "1:2:3", "fe::ab"};
                    static const char *const id[] = {"dash", "pair", "dots", "lead", "alt", "hex"};
                    size_t vl = strlen(val[k]);
                    if (off + vl > len) continue;
                    char want[32];
                    memset(buf, k == 2 ? ' ' : '.', len);
                    buf[len] = 0;
                    memcpy(buf + off, val[k], vl);
                    snprintf(want, sizeof want, "%s:%zu-%zu", id[k], off, off + vl);
                    expect_findings(&x, buf, want);
                }
    }
    wd_guard_simd(2);
    fx_close(&x);
}

/* A trigger group keeps at most 16 rules' counts; the rules past them share the last entry, which then
 * asks for what each of them needs at least: sixteen rules of a digit and 1 to 16 capitals, then two of
 * 5 and 6 digits and no capital, each value found. */
static void test_trigger_counts(void **state)
{
    (void)state;
    char yaml[8192], text[512], want[1024];
    size_t y = (size_t)snprintf(yaml, sizeof yaml, HEAD), t = 0, w = 0;
    for (int k = 1; k <= 18; k++) {
        char pat[64], val[32];
        if (k <= 16) {
            snprintf(pat, sizeof pat, "\\b[0-9][A-Z]{%d}x\\b", k);
            snprintf(val, sizeof val, "7%.*sx", k, "QQQQQQQQQQQQQQQQ");
        } else {
            snprintf(pat, sizeof pat, "\\b[0-9]{%d}%c\\b", k - 12, k == 17 ? 'y' : 'z');
            snprintf(val, sizeof val, "%.*s%c", k - 12, "123456", k == 17 ? 'y' : 'z');
        }
        y += (size_t)snprintf(yaml + y, sizeof yaml - y,
                              "  - id: n%d\n    type: N\n    class: test\n    pattern: '%s'\n", k, pat);
        w += (size_t)snprintf(want + w, sizeof want - w, "%sn%d:%zu-%zu", k > 1 ? " " : "", k, t,
                              t + strlen(val));
        t += (size_t)snprintf(text + t, sizeof text - t, "%s and ", val);
    }
    fx_t x = fx_open(yaml);
    expect_findings(&x, text, want);
    fx_close(&x);
}

/* A context_required rule with `gate: trigger` is run around its digits in block scans instead of around
 * its context words; its findings are the same, and still need a word. */
static void test_gate_trigger(void **state)
{
    (void)state;
    fx_t x = fx_open(HEAD R("ssn", "US_SSN",
                            "    context: [ssn, irs]\n    context_required: true\n    gate: trigger\n",
                            "\\b\\d{3}-\\d{2}-\\d{4}\\b"));
    expect_findings(&x, "irs 123-45-6789", "ssn:4-15");
    expect_findings(&x, "123-45-6789 (SSN)", "ssn:0-11");
    expect_findings(&x, "first 123-45-6789", ""); /* 'irs' inside a word is no context word */
    expect_findings(&x, "123-45-6789", "");
    static const char *const parts[] = {"ssn", "irs", "first", " ",  "  ", "123-45-6789",
                                        "1",   "-",   "x",     "\n", ":"};
    static char buf[4096];
    for (int iter = 0; iter < 300; iter++) {
        wd_guard_simd(iter % 3);
        size_t len =
            random_text(buf, sizeof buf, 1 + rnd(iter < 200 ? 200 : 2000), parts, WD_ARRAY_LEN(parts));
        size_t cut = rnd((uint32_t)len + 1);
        expect_stream_equals_block(&x, buf, len, &cut, 1);
    }
    wd_guard_simd(2);
    fx_close(&x);
    /* a part has at most eight trigger groups: the rule of a ninth trigger is run around its words */
    x = fx_open(HEAD R("p1", "P", "", "[a-z]{2,}:[a-z]{2,}") R("p2", "P", "", "[a-z]{2,};[a-z]{2,}")
                    R("p3", "P", "", "[a-z]{2,}=[a-z]{2,}") R("p4", "P", "", "[a-z]{2,}~[a-z]{2,}")
                        R("p5", "P", "", "[a-z]{2,}[|][a-z]{2,}") R("p6", "P", "", "[a-z]{2,}![a-z]{2,}")
                            R("p7", "P", "", "[a-z]{2,}%[a-z]{2,}") R("p8", "P", "", "[a-z]{2,}&[a-z]{2,}")
                                R("ssn", "US_SSN",
                                  "    context: [ssn]\n    context_required: true\n    gate: trigger\n",
                                  "\\b\\d{3}-\\d{2}-\\d{4}\\b"));
    expect_findings(&x, "ab:cd ssn 123-45-6789 ef&gh", "p1:0-5 ssn:10-21 p8:22-27");
    expect_findings(&x, "123-45-6789", "");
    fx_close(&x);
}

static void test_stream_holdback_dynamic(void **state)
{
    (void)state;
    char err[ERRLEN];
    wd_guard_db_t *db = wd_guard_db_parse("rules", err, sizeof err);
    if (!db) fail_msg("%s", err);
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++)
        wd_guard_db_set_uses(db, i, strcmp(wd_guard_db_rule(db, i)->cls, "injection") ? WD_GUARD_OUTPUT : 0);
    assert_int_equal(wd_guard_db_compile(db, err, sizeof err), WD_OK);
    assert_true(wd_guard_db_holdback(db) > 4096); /* the bound: private keys and JWTs are long */
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    wd_findings_t f;
    wd_findings_init(&f);
    static char text[8192];
    size_t len = 0;
    while (len < 3000)
        len += (size_t)snprintf(text + len, sizeof text - len, "The harbour was quiet that summer, and the boats %s. ",
                                len % 3 ? "came home early" : "stayed out late");
    size_t jwt_at = len + 7;
    len += (size_t)snprintf(text + len, sizeof text - len, "token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
                                                             "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U and the rest.");
    wd_guard_stream_t *st = wd_guard_stream_open_for(db, WD_GUARD_OUTPUT, 0.5f);
    assert_non_null(st);
    uint64_t worst_clean = 0;
    bool found = false;
    for (size_t off = 0; off < len; off += 5) {
        size_t n = WD_MIN((size_t)5, len - off);
        assert_int_equal(wd_guard_stream_feed(st, s, text + off, n, &f), WD_OK);
        for (size_t k = 0; k < f.n; k++)
            if (!strcmp(wd_guard_db_rule(db, f.v[k].rule)->id, "secrets.jwt")) {
                assert_int_equal(f.base + f.v[k].start, jwt_at);
                found = true;
            }
        uint64_t fed = wd_guard_stream_offset(st), safe = wd_guard_stream_safe_offset(st);
        if (fed < jwt_at - 10) {
            if (fed > 400 && fed - safe > worst_clean) worst_clean = fed - safe;
        } else if (fed > jwt_at + 20 && !found) {
            assert_true(safe <= jwt_at); /* the secret in progress is never released */
        }
    }
    assert_int_equal(wd_guard_stream_finish(st, s, &f), WD_OK);
    for (size_t k = 0; k < f.n; k++)
        found |= !strcmp(wd_guard_db_rule(db, f.v[k].rule)->id, "secrets.jwt") && f.base + f.v[k].start == jwt_at;
    assert_true(found);
    if (worst_clean > 200) fail_msg("clean text held back %llu bytes", (unsigned long long)worst_clean);
    wd_guard_stream_free(st);
    wd_findings_free(&f);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_valid),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_dir),
        cmocka_unit_test(test_scan_spans),
        cmocka_unit_test(test_scan_overlaps_and_boundaries),
        cmocka_unit_test(test_scan_context_and_scores),
        cmocka_unit_test(test_scan_limit),
        cmocka_unit_test(test_stream_split),
        cmocka_unit_test(test_scan_group),
        cmocka_unit_test(test_plain_name),
        cmocka_unit_test(test_scan_at_page_end),
        cmocka_unit_test(test_stream_vectorscan_regression),
        cmocka_unit_test(test_scan_nested_reverse),
        cmocka_unit_test(test_stream_property),
        cmocka_unit_test(test_stream_long_span_caseless),
        cmocka_unit_test(test_stream_holdback_bounded),
        cmocka_unit_test(test_uses),
        cmocka_unit_test(test_stream_holdback_dynamic),
        cmocka_unit_test(test_stream_property_rules),
        cmocka_unit_test(test_trigger_gating),
        cmocka_unit_test(test_trigger_counts),
        cmocka_unit_test(test_gate_trigger),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

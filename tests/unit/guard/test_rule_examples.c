/* Rule examples as data: every rule in rules/ may carry `examples: {match: [...], no_match: [...]}`,
 * and every privacy rule (pii, phi, financial, secrets) and output content-category rule must. For
 * each rule that has them, every `match` string must give a finding of exactly that rule (it must
 * survive its validator, its context check and overlap resolution against every other rule), in a
 * block scan and in a stream scan fed in two pieces split at every position; every `no_match` string
 * must give no finding of that rule, and for a content-category rule (a benign near miss: news about
 * violence, supportive talk about self-harm, a security article) no finding of any content category.
 * Scans use the gateway's default min_score (0.5). Failures name the rule, its file:line and the
 * example. Also: the loader's errors for a malformed `examples` key, and that the checker itself
 * fails on a wrong example. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "guard/guard.h"
#include "guard/validators.h"

#define ERRLEN 512

/* The output content categories (rules/safety_*.yaml); their near misses must fire none of them. */
static const char *const categories[] = {"self_harm", "violence", "sexual_minors",
                                         "hate",      "weapons",  "malware"};

static bool is_category(const char *cls)
{
    for (size_t i = 0; i < sizeof categories / sizeof *categories; i++)
        if (!strcmp(cls, categories[i])) return true;
    return false;
}

static bool must_have_examples(const char *cls)
{
    return !strcmp(cls, "pii") || !strcmp(cls, "phi") || !strcmp(cls, "financial") ||
           !strcmp(cls, "secrets") || is_category(cls);
}
#define MIN_SCORE 0.5f /* guard.min_score default (config.c) */

typedef struct {
    wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    wd_findings_t f;
} fx_t;

static void fx_open(fx_t *x, wd_guard_db_t *db)
{
    x->db = db;
    x->s = wd_guard_scratch_new(db);
    assert_non_null(x->s);
    wd_findings_init(&x->f);
}

static void fx_close(fx_t *x)
{
    wd_findings_free(&x->f);
    wd_guard_scratch_free(x->s);
    wd_guard_db_unref(x->db);
}

static void print_failure(void *ud, const wd_rule_t *rule, const char *msg)
{
    (void)ud;
    (void)rule;
    print_error("%s\n", msg);
}

/* Checks every example of every rule (wd_guard_check_examples, content categories strict); prints one
 * line per failure. Returns the number of failures; *nchecked counts the examples checked. */
static size_t check_examples(fx_t *x, size_t *nchecked)
{
    size_t failures = 0;
    assert_int_equal(wd_guard_check_examples(x->db, MIN_SCORE, categories,
                                             sizeof categories / sizeof *categories, print_failure, NULL,
                                             nchecked, &failures),
                     WD_OK);
    return failures;
}

/* The gateway does not scan member names spelt as plain identifiers (wd_guard_plain_name): no shipped
 * rule that runs on prompts may match one. Tried on every such word of the gazetteer (English words,
 * places and names), their snake_case joins, and numbers of up to 7 digits. */
static size_t scan_plain(fx_t *x, const char *t, size_t len)
{
    assert_true(wd_guard_plain_name(t, len));
    assert_int_equal(wd_guard_scan_for(x->db, x->s, WD_GUARD_INPUT | WD_GUARD_INJECTION, t, len, 0.0f, &x->f),
                     WD_OK);
    if (x->f.n) {
        const wd_rule_t *r = wd_guard_db_rule(x->db, x->f.v[0].rule);
        print_error("plain member name \"%.*s\" gives a finding of %s: the gateway would not see it\n",
                    (int)len, t, r->id);
    }
    return x->f.n ? 1 : 0;
}

static size_t check_plain_names(fx_t *x, size_t *nchecked)
{
    FILE *f = fopen("rules/data/names.tsv", "r");
    assert_non_null(f);
    char line[256], prev[2][128] = {"", ""}, joined[400];
    size_t failures = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\t");
        if (line[0] == '#' || n == 0 || n >= sizeof prev[0] || !wd_guard_plain_name(line, n)) continue;
        line[n] = '\0';
        failures += scan_plain(x, line, n);
        int j = snprintf(joined, sizeof joined, "%s_%s_%s", prev[0], prev[1], line);
        if (prev[0][0]) failures += scan_plain(x, joined, (size_t)j);
        memcpy(prev[0], prev[1], sizeof prev[1]);
        memcpy(prev[1], line, n + 1);
        *nchecked += 2;
    }
    fclose(f);
    for (unsigned long v = 0; v < 10000000; v += v < 1000 ? 1 : 997) {
        int j = snprintf(joined, sizeof joined, "%lu", v);
        failures += scan_plain(x, joined, (size_t)j);
        (*nchecked)++;
    }
    return failures;
}

/* The opt-in files of rules/optional/ (not loaded by default): each alone, its examples checked the
 * same way. */
static void test_optional_rules(void **state)
{
    (void)state;
    char err[ERRLEN];
    wd_validators_set_data_dir("rules");
    if (wd_validators_load_data(err, sizeof err) != WD_OK) fail_msg("%s", err);
    DIR *d = opendir("rules/optional");
    assert_non_null(d);
    size_t files = 0, nchecked = 0, failures = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 5, ".yaml") != 0) continue;
        char path[512];
        snprintf(path, sizeof path, "rules/optional/%s", e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char yaml[1 << 16];
        size_t len = fread(yaml, 1, sizeof yaml, f);
        fclose(f);
        assert_true(len < sizeof yaml);
        wd_guard_db_t *db = wd_guard_db_load_buf(path, yaml, len, err, sizeof err);
        if (!db) fail_msg("%s", err);
        for (size_t r = 0; r < wd_guard_db_nrules(db); r++)
            assert_true(wd_guard_db_rule(db, r)->nex_match > 0 && wd_guard_db_rule(db, r)->nex_no_match > 0);
        fx_t x;
        fx_open(&x, db);
        size_t n = 0;
        failures += check_examples(&x, &n);
        nchecked += n;
        fx_close(&x);
        files++;
    }
    closedir(d);
    print_message("%zu optional files, %zu examples checked, %zu failed\n", files, nchecked, failures);
    assert_true(files >= 2 && nchecked >= 10);
    assert_int_equal(failures, 0);
    wd_validators_cleanup();
}

static void test_shipped_rules(void **state)
{
    (void)state;
    char err[ERRLEN];
    wd_validators_set_data_dir("rules");
    if (wd_validators_load_data(err, sizeof err) != WD_OK) fail_msg("%s", err);
    wd_guard_db_t *db = wd_guard_db_load("rules", err, sizeof err);
    if (!db) fail_msg("%s", err);
    fx_t x;
    fx_open(&x, db);

    /* every privacy and content-category rule has examples of each kind (the injection rules are
     * covered by test_injection and make eval-guard) */
    size_t missing = 0, privacy = 0, content = 0;
    for (size_t r = 0; r < wd_guard_db_nrules(db); r++) {
        const wd_rule_t *rule = wd_guard_db_rule(db, r);
        if (!must_have_examples(rule->cls)) continue;
        if (is_category(rule->cls))
            content++;
        else
            privacy++;
        size_t need = is_category(rule->cls) ? 2 : 1; /* a content rule: two of each */
        if (rule->nex_match < need || rule->nex_no_match < need) {
            print_error("%s:%u: rule %s has fewer than %zu %s examples\n", rule->file, rule->line, rule->id,
                        need, rule->nex_match < need ? "match" : "no_match");
            missing++;
        }
    }
    assert_true(privacy >= 140);
    assert_true(content >= 20);

    size_t nchecked = 0, failures = check_examples(&x, &nchecked);
    print_message(
        "%zu privacy and %zu content rules, %zu examples checked, %zu failed, %zu rules without enough "
        "examples\n",
        privacy, content, nchecked, failures, missing);
    assert_true(nchecked >= 2 * privacy + 4 * content);
    assert_int_equal(failures, 0);
    assert_int_equal(missing, 0);
    size_t nplain = 0, plain_failures = check_plain_names(&x, &nplain);
    print_message("%zu plain member names scanned, %zu with a finding\n", nplain, plain_failures);
    assert_true(nplain >= 100000);
    assert_int_equal(plain_failures, 0);
    fx_close(&x);
    wd_validators_cleanup();
}

/* The checker is not vacuous: a wrong example of either kind is reported. */
static void test_checker_fails_on_wrong_examples(void **state)
{
    (void)state;
    static const char yaml[] = "version: 1\n"
                               "rules:\n"
                               "  - id: t.key\n"
                               "    type: KEY\n"
                               "    class: secrets\n"
                               "    pattern: 'key_[a-f0-9]{8}\\b'\n"
                               "    examples:\n"
                               "      match: ['key_0123abcd', 'key_0123', 'xkey_0123abcd']\n"
                               "      no_match: ['key_01234567', 'key_xyz']\n";
    char err[ERRLEN];
    wd_guard_db_t *db = wd_guard_db_load_buf("t.yaml", yaml, sizeof yaml - 1, err, sizeof err);
    if (!db) fail_msg("%s", err);
    const wd_rule_t *r = wd_guard_db_rule(db, 0);
    assert_int_equal(r->nex_match, 3);
    assert_int_equal(r->nex_no_match, 2);
    assert_string_equal(r->ex_match[1], "key_0123");
    fx_t x;
    fx_open(&x, db);
    size_t nchecked = 0;
    /* 'key_0123' is too short, 'xkey_0123abcd' fails the word boundary, 'key_01234567' does match */
    assert_int_equal(check_examples(&x, &nchecked), 3);
    assert_int_equal(nchecked, 5);
    fx_close(&x);

    /* a content-category near miss that fires another category fails; other classes are not strict */
    static const char cat[] = "version: 1\n"
                              "rules:\n"
                              "  - id: t.a\n    type: A\n    class: violence\n    pattern: 'attack plan'\n"
                              "    examples: {match: ['an attack plan'], no_match: ['a hate rally']}\n"
                              "  - id: t.b\n    type: B\n    class: hate\n    pattern: 'hate rally'\n"
                              "    examples: {match: ['a hate rally']}\n";
    db = wd_guard_db_load_buf("c.yaml", cat, sizeof cat - 1, err, sizeof err);
    if (!db) fail_msg("%s", err);
    fx_open(&x, db);
    assert_int_equal(check_examples(&x, &nchecked), 1);
    assert_int_equal(nchecked, 3);
    size_t failed = 9;
    assert_int_equal(wd_guard_check_examples(db, MIN_SCORE, NULL, 0, print_failure, NULL, &nchecked, &failed),
                     WD_OK);
    assert_int_equal(failed, 0);
    fx_close(&x);
}

static void expect_err(const char *examples, const char *loc, const char *want)
{
    char yaml[1024], err[ERRLEN], prefix[64];
    snprintf(yaml, sizeof yaml,
             "version: 1\nrules:\n  - id: t.x\n    type: X\n    class: pii\n    pattern: 'ab'\n%s", examples);
    err[0] = 0;
    wd_guard_db_t *db = wd_guard_db_load_buf("r.yaml", yaml, strlen(yaml), err, sizeof err);
    if (db) {
        wd_guard_db_unref(db);
        fail_msg("expected an error at %s containing \"%s\", but the rules loaded:\n%s", loc, want, yaml);
    }
    snprintf(prefix, sizeof prefix, "r.yaml:%s: ", loc);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, want))
        fail_msg("expected \"%s...%s\", got \"%s\"", prefix, want, err);
}

static void test_loader_errors(void **state)
{
    (void)state;
    expect_err("    examples: ['ab']\n", "7:15", "examples: expected a mapping");
    expect_err("    examples: {}\n", "7:15", "examples: expected match or no_match");
    expect_err("    examples: {match: ['ab'], matches: ['x']}\n", "7:31",
               "unknown key 'matches' in examples");
    expect_err("    examples: {match: 'ab'}\n", "7:23", "examples.match: expected a list of strings");
    expect_err("    examples:\n      match: ['ab']\n      no_match: [['x']]\n", "9:18",
               "examples.no_match: expected a scalar");
    expect_err("    examples:\n      match: ['ab', '']\n", "8:21", "examples.match: expected a value");
    expect_err("    examples: {match: ['ab'], match: ['ab']}\n", "7:31", "duplicate key 'match' in examples");

    /* well-formed: only one list, and the rule still scans as before */
    char err[ERRLEN];
    static const char ok[] =
        "version: 1\nrules:\n  - id: t.x\n    type: X\n    class: pii\n    pattern: 'ab'\n"
        "    examples: {no_match: ['a b']}\n";
    wd_guard_db_t *db = wd_guard_db_load_buf("r.yaml", ok, sizeof ok - 1, err, sizeof err);
    if (!db) fail_msg("%s", err);
    assert_int_equal(wd_guard_db_rule(db, 0)->nex_match, 0);
    assert_int_equal(wd_guard_db_rule(db, 0)->nex_no_match, 1);
    wd_guard_db_unref(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_checker_fails_on_wrong_examples),
        cmocka_unit_test(test_shipped_rules),
        cmocka_unit_test(test_optional_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

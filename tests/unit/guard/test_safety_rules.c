/* Unit tests for the output content categories (rules/safety_*.yaml) with the real rules/ directory,
 * every rule serving every purpose as `warden scan` loads them, scanned for WD_GUARD_OUTPUT as the
 * gateway scans answers: every category has rules, each graded and with examples in its rule file
 * (test_rule_examples runs them: sentences that must fire the rule, and benign near misses such as
 * news about violence, supportive talk about self-harm or security articles that must fire no content
 * category). Also: operator-defined lists (their own class), severity and set_version loading. Runs
 * from the source root (meson test sets workdir). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "guard/guard.h"

static wd_guard_db_t *db;
static wd_guard_scratch_t *scratch;

static const char *const categories[] = {"self_harm", "violence", "sexual_minors",
                                         "hate",      "weapons",  "malware"};

static bool is_category(const char *cls)
{
    for (size_t i = 0; i < sizeof categories / sizeof *categories; i++)
        if (!strcmp(cls, categories[i])) return true;
    return false;
}

static int setup(void **state)
{
    (void)state;
    char err[1024];
    db = wd_guard_db_load("rules", err, sizeof err);
    if (!db) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    scratch = wd_guard_scratch_new(db);
    return scratch ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    wd_guard_scratch_free(scratch);
    wd_guard_db_unref(db);
    return 0;
}

/* The ids of the content-category findings of text, comma-separated (empty when none). */
static void content_ids(const wd_guard_db_t *d, wd_guard_scratch_t *s, const char *text, char *out,
                        size_t cap)
{
    wd_findings_t f;
    wd_findings_init(&f);
    assert_int_equal(wd_guard_scan_for(d, s, WD_GUARD_OUTPUT, text, strlen(text), 0.5f, &f), WD_OK);
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < f.n; i++) {
        const wd_rule_t *r = wd_guard_db_rule(d, f.v[i].rule);
        if (!is_category(r->cls) && strncmp(r->id, "acme.", 5) != 0) continue;
        int n = snprintf(out + used, cap - used, "%s%s", used ? "," : "", r->id);
        if (n > 0 && (size_t)n < cap - used) used += (size_t)n;
    }
    wd_findings_free(&f);
}

/* Every category has rules, every content rule is graded (severity low|medium|high) and carries
 * examples: the examples themselves (positives, and benign near misses that must fire no content
 * category) are data in the rule files, checked by test_rule_examples. */
static void test_categories_graded_and_exemplified(void **state)
{
    (void)state;
    size_t per[sizeof categories / sizeof *categories] = {0};
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        for (size_t c = 0; c < sizeof categories / sizeof *categories; c++)
            if (!strcmp(r->cls, categories[c])) per[c]++;
        if (!is_category(r->cls)) continue;
        if (!r->severity) fail_msg("%s has no severity", r->id);
        if (strcmp(r->severity, "low") && strcmp(r->severity, "medium") && strcmp(r->severity, "high"))
            fail_msg("%s: severity %s", r->id, r->severity);
        if (r->nex_match < 2 || r->nex_no_match < 2)
            fail_msg("%s: too few examples in %s (%zu match, %zu no_match)", r->id, r->file, r->nex_match,
                     r->nex_no_match);
    }
    for (size_t c = 0; c < sizeof categories / sizeof *categories; c++)
        if (!per[c]) fail_msg("category %s has no rules", categories[c]);
}

/* ---- operator-defined lists --------------------------------------------------------------------------- */

static const char acme[] = "set_version: \"2.3.1\"\n"
                           "version: 1\n"
                           "rules:\n"
                           "  - id: acme.codenames\n"
                           "    type: CODENAME\n"
                           "    class: acme_confidential\n"
                           "    pattern: '\\b(?:blue-banana|project\\s+nightjar)\\b'\n"
                           "    caseless: true\n"
                           "    severity: medium\n"
                           "    description: internal project code names\n";

static void test_operator_list(void **state)
{
    (void)state;
    char err[512];
    wd_guard_db_t *d = wd_guard_db_load_buf("rules/zz_acme.yaml", acme, sizeof acme - 1, err, sizeof err);
    if (!d) fail_msg("%s", err);
    wd_guard_scratch_t *s = wd_guard_scratch_new(d);
    assert_non_null(s);
    int i = wd_guard_db_find(d, "acme.codenames");
    assert_true(i >= 0);
    const wd_rule_t *r = wd_guard_db_rule(d, (size_t)i);
    assert_string_equal(r->cls, "acme_confidential");
    assert_non_null(r->severity);
    assert_string_equal(r->severity, "medium");
    assert_non_null(r->set_version);
    assert_string_equal(r->set_version, "2.3.1");
    assert_string_equal(r->set, "zz_acme");
    char got[128];
    content_ids(d, s, "The launch of Project Nightjar moved to May.", got, sizeof got);
    assert_string_equal(got, "acme.codenames");
    content_ids(d, s, "A nightjar is a nocturnal bird; project plans are due.", got, sizeof got);
    assert_string_equal(got, "");
    content_ids(d, s, "blue-bananas", got, sizeof got); /* word boundary */
    assert_string_equal(got, "");
    wd_guard_scratch_free(s);
    wd_guard_db_unref(d);
}

/* A bad severity is refused with file:line:col pointing at the value. */
static void test_severity_validated(void **state)
{
    (void)state;
    static const char y[] = "version: 1\n"
                            "rules:\n"
                            "  - id: acme.x\n"
                            "    type: X\n"
                            "    class: acme\n"
                            "    pattern: 'xyzzy'\n"
                            "    severity: critical\n";
    char err[512];
    wd_guard_db_t *d = wd_guard_db_parse_buf("rules/zz.yaml", y, sizeof y - 1, err, sizeof err);
    assert_null(d);
    if (!strstr(err, "rules/zz.yaml:7:15:") || !strstr(err, "severity"))
        fail_msg("unexpected error: %s", err);
}

/* ---- set_version ----------------------------------------------------------------------------------------
 */

/* Every shipped content and injection file names its version; rules carry it with their set name. */
static void test_shipped_set_versions(void **state)
{
    (void)state;
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        if (!is_category(r->cls) && strcmp(r->cls, "injection")) continue;
        if (!r->set_version) fail_msg("%s (%s) has no set_version", r->id, r->file);
        assert_non_null(r->set);
        if (!strstr(r->file, r->set)) fail_msg("%s: set %s is not its file %s", r->id, r->set, r->file);
    }
    const wd_rule_t *r = wd_guard_db_rule(db, (size_t)wd_guard_db_find(db, "safety.violence.threat"));
    assert_string_equal(r->set, "safety_violence");
    /* the privacy files are not versioned (yet): their rules say so with NULL */
    r = wd_guard_db_rule(db, (size_t)wd_guard_db_find(db, "pii.email"));
    assert_null(r->set_version);
    assert_string_equal(r->set, "pii");
}

static void bad_version(const char *value, const char *where)
{
    char y[256], err[512];
    int n = snprintf(y, sizeof y, "version: 1\nset_version: %s\nrules: []\n", value);
    wd_guard_db_t *d = wd_guard_db_parse_buf("rules/v.yaml", y, (size_t)n, err, sizeof err);
    if (d) {
        wd_guard_db_unref(d);
        fail_msg("set_version %s was accepted", value);
    }
    if (!strstr(err, where) || !strstr(err, "set_version"))
        fail_msg("set_version %s: unexpected error: %s", value, err);
}

/* A set's name comes from its file name and goes into headers: other characters than [A-Za-z0-9._-]
 * never reach them. */
static void test_set_name_sanitized(void **state)
{
    (void)state;
    static const char y[] = "version: 1\nset_version: \"1.0.0\"\nrules:\n  - id: acme.x\n    type: X\n"
                            "    class: acme\n    pattern: 'xyzzy'\n";
    char err[512];
    wd_guard_db_t *d = wd_guard_db_parse_buf("rules/zz acme\r\nx: y.yaml", y, sizeof y - 1, err, sizeof err);
    if (!d) fail_msg("%s", err);
    assert_string_equal(wd_guard_db_rule(d, 0)->set, "zz_acme__x__y");
    wd_guard_db_unref(d);
}

static void test_set_version_validated(void **state)
{
    (void)state;
    bad_version("1.0", "rules/v.yaml:2:14:");
    bad_version("\"1.0.0-beta\"", "rules/v.yaml:2:14:");
    bad_version("v1.0.0", "rules/v.yaml:2:14:");
    bad_version("01.0.0", "rules/v.yaml:2:14:");
    bad_version("[1]", "rules/v.yaml:2:14:");
    bad_version("\"1..0\"", "rules/v.yaml:2:14:");
    /* good ones */
    static const char *const ok[] = {"1.0.0", "\"10.20.300\"", "0.0.1"};
    for (size_t i = 0; i < 3; i++) {
        char y[256], err[512];
        int n = snprintf(y, sizeof y, "version: 1\nset_version: %s\nrules: []\n", ok[i]);
        wd_guard_db_t *d = wd_guard_db_parse_buf("rules/v.yaml", y, (size_t)n, err, sizeof err);
        if (!d) fail_msg("set_version %s refused: %s", ok[i], err);
        wd_guard_db_unref(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_categories_graded_and_exemplified),
        cmocka_unit_test(test_operator_list),
        cmocka_unit_test(test_severity_validated),
        cmocka_unit_test(test_shipped_set_versions),
        cmocka_unit_test(test_set_name_sanitized),
        cmocka_unit_test(test_set_version_validated),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

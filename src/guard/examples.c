/* guard: a rule set checked against its own examples (docs/rules.md, "Examples"), for `warden rules
 * check` and the shipped rules' unit test. */
#include "guard/guard.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    wd_findings_t f;
    float min_score;
    const char *const *strict;
    size_t nstrict;
} ex_t;

static bool strict_class(const ex_t *x, const char *cls)
{
    for (size_t i = 0; i < x->nstrict; i++)
        if (!strcmp(x->strict[i], cls)) return true;
    return false;
}

/* Whether the findings hold rule r (or, with any_strict, a rule of a strict class). */
static bool holds(const ex_t *x, size_t r, bool any_strict)
{
    for (size_t i = 0; i < x->f.n; i++)
        if (x->f.v[i].rule == r ||
            (any_strict && strict_class(x, wd_guard_db_rule(x->db, x->f.v[i].rule)->cls)))
            return true;
    return false;
}

/* text fed as text[0..cut) and text[cut..): *found says whether a finding of rule r is reported. */
static int stream_has(ex_t *x, const char *text, size_t cut, size_t r, bool *found)
{
    size_t len = strlen(text);
    *found = false;
    wd_guard_stream_t *st = wd_guard_stream_open(x->db, x->min_score);
    if (!st) return WD_ENOMEM;
    int rc = wd_guard_stream_feed(st, x->s, text, cut, &x->f);
    *found = !rc && holds(x, r, false);
    if (!rc) rc = wd_guard_stream_feed(st, x->s, text + cut, len - cut, &x->f);
    *found = *found || (!rc && holds(x, r, false));
    if (!rc) rc = wd_guard_stream_finish(st, x->s, &x->f);
    *found = *found || (!rc && holds(x, r, false));
    wd_guard_stream_free(st);
    return rc;
}

/* What a block scan at score 0 finds in text, for a failure's message. */
static int describe(ex_t *x, const char *text, char *buf, size_t cap)
{
    int rc = wd_guard_scan(x->db, x->s, text, strlen(text), 0.0f, &x->f);
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; !rc && i < x->f.n && used < cap; i++) {
        const wd_finding_t *v = &x->f.v[i];
        int n = snprintf(buf + used, cap - used, "%s%s [%u,%u) %.2f", i ? ", " : "",
                         wd_guard_db_rule(x->db, v->rule)->id, v->start, v->end, (double)v->score);
        if (n < 0) break;
        used += (size_t)n;
    }
    if (!rc && !x->f.n) snprintf(buf, cap, "nothing, even at score 0");
    return rc;
}

/* The examples of rule r; failures counted in *failed. */
static int check_rule(ex_t *x, size_t r, wd_guard_example_fn fail, void *ud, size_t *nchecked, size_t *failed)
{
    const wd_rule_t *rule = wd_guard_db_rule(x->db, r);
    char msg[1536], seen[1024];
    int rc;
    for (size_t k = 0; k < rule->nex_match; k++) {
        const char *ex = rule->ex_match[k];
        (*nchecked)++;
        if ((rc = wd_guard_scan(x->db, x->s, ex, strlen(ex), x->min_score, &x->f))) return rc;
        if (!holds(x, r, false)) {
            if ((rc = describe(x, ex, seen, sizeof seen))) return rc;
            snprintf(msg, sizeof msg,
                     "%s:%u: rule %s: match example \"%s\" gives no finding of the rule (found: %s)",
                     rule->file, rule->line, rule->id, ex, seen);
            fail(ud, rule, msg);
            (*failed)++;
            continue;
        }
        if (k) continue; /* streams: the rule's first example, split at every position */
        for (size_t cut = 0; cut <= strlen(ex); cut++) {
            bool found;
            if ((rc = stream_has(x, ex, cut, r, &found))) return rc;
            if (found) continue;
            snprintf(msg, sizeof msg,
                     "%s:%u: rule %s: match example \"%s\" fed in two pieces split at %zu gives no finding "
                     "of the rule",
                     rule->file, rule->line, rule->id, ex, cut);
            fail(ud, rule, msg);
            (*failed)++;
            break;
        }
    }
    bool strict = strict_class(x, rule->cls);
    for (size_t k = 0; k < rule->nex_no_match; k++) {
        const char *ex = rule->ex_no_match[k];
        (*nchecked)++;
        if ((rc = wd_guard_scan(x->db, x->s, ex, strlen(ex), x->min_score, &x->f))) return rc;
        if (!holds(x, r, strict)) continue;
        if ((rc = describe(x, ex, seen, sizeof seen))) return rc;
        snprintf(msg, sizeof msg,
                 "%s:%u: rule %s: no_match example \"%s\" gives a finding of the rule%s (found: %s)",
                 rule->file, rule->line, rule->id, ex, strict ? " or of another rule of those classes" : "",
                 seen);
        fail(ud, rule, msg);
        (*failed)++;
    }
    return WD_OK;
}

int wd_guard_check_examples(wd_guard_db_t *db, float min_score, const char *const *strict, size_t nstrict,
                            wd_guard_example_fn fail, void *ud, size_t *nchecked, size_t *nfailed)
{
    *nchecked = *nfailed = 0;
    ex_t x = {.db = db, .min_score = min_score, .strict = strict, .nstrict = nstrict};
    if (!(x.s = wd_guard_scratch_new(db))) return WD_ENOMEM;
    wd_findings_init(&x.f);
    int rc = WD_OK;
    for (size_t r = 0; r < wd_guard_db_nrules(db) && !rc; r++)
        rc = check_rule(&x, r, fail, ud, nchecked, nfailed);
    wd_findings_free(&x.f);
    wd_guard_scratch_free(x.s);
    return rc;
}

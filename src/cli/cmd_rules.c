/* warden rules: a rules directory as an operator writing rules sees it: its rules listed, and checked
 * against their own examples before they are deployed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "guard/guard.h"
#include "guard/validators.h"

#define DEFAULT_MIN_SCORE 0.5f /* guard.min_score's default, as the gateway and warden scan use it */

static void usage(FILE *f)
{
    fputs("usage: warden rules list|check [--rules DIR]          (default DIR: ./rules)\n"
          "\n"
          "  list                   every rule: id, type, class, score, context words\n"
          "  check [--min-score F]  load and compile the rules, then try each rule's examples with\n"
          "                         all the rules competing, as the gateway scans: a `match` string\n"
          "                         must give a finding of its rule (in one piece; the rule's first\n"
          "                         one also streamed in two pieces split at every position), a\n"
          "                         `no_match` string none. Prints each failure as FILE:LINE: rule\n"
          "                         ID: ..., then a summary. --min-score: as guard.min_score (0.5)\n"
          "\n"
          "  Exit status: 0 ok, 1 an example failed, 2 invalid usage or rules that do not load.\n",
          f);
}

static void print_failure(void *ud, const wd_rule_t *rule, const char *msg)
{
    (void)ud;
    (void)rule;
    puts(msg);
}

/* The rules of dir, each checked; to scan with (`compile`): compiled, with the person-name gazetteer of
 * dir/data when a rule needs it. */
static wd_guard_db_t *load(const wd_cli_t *c, const char *dir, bool compile)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        wd_cli_fail(c, WD_EXIT_USAGE, "rules directory '%s': %s (pass --rules DIR)", dir,
                    stat(dir, &st) != 0 ? strerror(errno) : "is not a directory");
        return NULL;
    }
    char err[1024];
    wd_guard_db_t *db =
        compile ? wd_guard_db_load(dir, err, sizeof err) : wd_guard_db_parse(dir, err, sizeof err);
    if (!db) {
        wd_cli_fail(c, WD_EXIT_USAGE, "%s", err);
        return NULL;
    }
    if (!compile) return db;
    wd_validators_set_data_dir(dir);
    /* without it every PERSON example would fail for a reason that is not the rule's */
    if (wd_guard_db_uses_validator(db, "person_name") && wd_validators_load_data(err, sizeof err) != WD_OK) {
        wd_cli_fail(c, WD_EXIT_USAGE, "%s", err);
        wd_guard_db_unref(db);
        return NULL;
    }
    return db;
}

static int list(const wd_cli_t *c, wd_guard_db_t *db)
{
    wd_cli_table_t t;
    wd_cli_table_init(&t, 5);
    const char *hdr[] = {"ID", "TYPE", "CLASS", "SCORE", "CONTEXT"};
    int rc = wd_cli_table_add(&t, hdr);
    for (size_t i = 0; !rc && i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        char score[16], ctx[96];
        snprintf(score, sizeof score, "%.2f", (double)r->score);
        if (!r->ncontext)
            snprintf(ctx, sizeof ctx, "-");
        else
            snprintf(ctx, sizeof ctx, "%s%zu word%s%s", r->context_required ? "required: " : "", r->ncontext,
                     r->ncontext == 1 ? "" : "s",
                     r->context_required && r->gate_trigger ? " (gate: trigger)" : "");
        const char *row[] = {r->id, r->type, r->cls, score, ctx};
        rc = wd_cli_table_add(&t, row);
    }
    if (!rc) wd_cli_table_print(&t, stdout);
    wd_cli_table_free(&t);
    return rc ? wd_cli_fail(c, WD_EXIT_FAIL, "out of memory") : WD_EXIT_OK;
}

static int check(const wd_cli_t *c, wd_guard_db_t *db, const char *dir, float min_score)
{
    size_t nchecked, nfailed, bare = 0;
    int rc = wd_guard_check_examples(db, min_score, NULL, 0, print_failure, NULL, &nchecked, &nfailed);
    if (rc)
        return wd_cli_fail(c, WD_EXIT_USAGE, "checking the examples failed (%s)",
                           rc == WD_ENOMEM ? "out of memory" : "too many findings in an example");
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++)
        bare += !wd_guard_db_rule(db, i)->nex_match && !wd_guard_db_rule(db, i)->nex_no_match;
    size_t n = wd_guard_db_nrules(db);
    printf("%s: %zu rule%s (%zu without examples), %zu example%s checked, %zu failed\n", dir, n,
           n == 1 ? "" : "s", bare, nchecked, nchecked == 1 ? "" : "s", nfailed);
    return nfailed ? WD_EXIT_FAIL : WD_EXIT_OK;
}

int wd_cmd_rules(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden rules"};
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? WD_EXIT_USAGE : WD_EXIT_OK;
    }
    const char *cmd = argv[1];
    bool is_check = !strcmp(cmd, "check");
    if (!is_check && strcmp(cmd, "list") != 0) {
        wd_cli_fail(&c, WD_EXIT_USAGE, "unknown command '%s' (list or check)", cmd);
        return WD_EXIT_USAGE;
    }
    wd_cli_opt_t o[] = {{.name = "rules", .arg = true},
                        {.name = "min-score", .arg = true},
                        {.name = "help", .short_name = 'h'}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *pos[1];
    size_t npos = 0;
    int rc = wd_cli_parse(&c, argc - 2, argv + 2, o, no, pos, 0, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return WD_EXIT_OK;
    }
    float min_score = DEFAULT_MIN_SCORE;
    const char *v = wd_cli_val(o, no, "min-score");
    if (v && !is_check) return wd_cli_fail(&c, WD_EXIT_USAGE, "--min-score applies to check");
    if (v && (rc = wd_cli_min_score(&c, v, &min_score))) return rc;
    const char *dir = wd_cli_val(o, no, "rules");
    if (!dir) dir = "rules";
    wd_guard_db_t *db = load(&c, dir, is_check);
    if (!db) return WD_EXIT_USAGE;
    rc = is_check ? check(&c, db, dir, min_score) : list(&c, db);
    wd_guard_db_unref(db);
    wd_validators_cleanup();
    return rc;
}

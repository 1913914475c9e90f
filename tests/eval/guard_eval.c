/* guard_eval: the evaluation harness behind `make eval-guard` until `warden scan --format findings`
 * exists. Reads JSON lines, scans one string field of each with the rules in a directory, and prints
 * one JSON line per input: {"findings":[{"type","start","end","rule","class","score"}]} (byte offsets).
 *
 *   guard_eval [--rules DIR] [--field NAME] [--min-score F] < input.jsonl
 *
 * Exit 0 on success, 2 on a usage, rule or input error (with a message on stderr). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard/guard.h"
#include "guard/validators.h"

static int usage(void)
{
    fprintf(stderr, "usage: guard_eval [--rules DIR] [--field NAME] [--min-score F] < input.jsonl\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *rules = "rules", *field = "full_text";
    float min_score = 0.5f;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc) rules = argv[++i];
        else if (strcmp(argv[i], "--field") == 0 && i + 1 < argc) field = argv[++i];
        else if (strcmp(argv[i], "--min-score") == 0 && i + 1 < argc) min_score = strtof(argv[++i], NULL);
        else return usage();
    }
    char err[512];
    wd_validators_set_data_dir(rules);
    if (wd_validators_load_data(err, sizeof err) != WD_OK) {
        fprintf(stderr, "guard_eval: %s\n", err);
        return 2;
    }
    wd_guard_db_t *db = wd_guard_db_load(rules, err, sizeof err);
    if (!db) {
        fprintf(stderr, "guard_eval: %s\n", err);
        return 2;
    }
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    if (!s) {
        fprintf(stderr, "guard_eval: out of memory\n");
        wd_guard_db_unref(db);
        return 2;
    }
    wd_findings_t f;
    wd_findings_init(&f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        json_error_t jerr;
        json_t *obj = json_loadb(line, (size_t)n, 0, &jerr);
        json_t *txt = obj ? json_object_get(obj, field) : NULL;
        if (!txt || !json_is_string(txt)) {
            fprintf(stderr, "guard_eval: line %lu: %s\n", lineno, obj ? "field missing or not a string" : jerr.text);
            json_decref(obj);
            rc = 2;
            break;
        }
        int sr = wd_guard_scan(db, s, json_string_value(txt), json_string_length(txt), min_score, &f);
        json_t *arr = json_array();
        for (size_t i = 0; sr == WD_OK && i < f.n; i++) {
            const wd_rule_t *r = wd_guard_db_rule(db, f.v[i].rule);
            json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:s,s:s,s:f}", "type", r->type, "start",
                                                 (json_int_t)f.v[i].start, "end", (json_int_t)f.v[i].end, "rule",
                                                 r->id, "class", r->cls, "score", (double)f.v[i].score));
        }
        json_t *out = json_pack("{s:o}", "findings", arr);
        if (sr != WD_OK) json_object_set_new(out, "error", json_integer(sr));
        char *dump = json_dumps(out, JSON_COMPACT);
        puts(dump ? dump : "{}");
        free(dump);
        json_decref(out);
        json_decref(obj);
    }
    free(line);
    wd_findings_free(&f);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
    wd_validators_cleanup();
    return rc;
}

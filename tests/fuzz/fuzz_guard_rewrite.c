/* libFuzzer driver for the guard's scan + rewrite of a JSON body, as the gateway's guard stage does it:
 * every string value (not keys, not structural members such as "model" or "role") is decoded, scanned
 * with a fixed small rule set, rewritten and spliced back re-encoded.
 *
 * The first input byte is the mode (bit 0: pseudonymize everything, else a mix of actions chosen per
 * rule; bit 1: with an allow list; the rest picks where the answer is cut for the streaming restorer);
 * the remainder is the body.
 * Inputs that wd_json_parse rejects are ignored. Checked, aborting on any violation:
 *  - every finding is acted on (the tally counts each one), so none can pass through unnoticed, and
 *    with the allow list each finding whose text is listed is counted as allowed;
 *  - each rewritten text is valid UTF-8 (a span is never split inside a character);
 *  - the rebuilt body parses with wd_json_parse, is valid UTF-8, has the same token structure, and each
 *    of its strings decodes to exactly the rewritten text;
 *  - with pseudonymize: restoring the vault's placeholders gives back each original string (unless the
 *    original itself contained one of the placeholders, which is then ambiguous by design), and the
 *    streaming restorer fed the text in two pieces gives the same result as the whole-text restore. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "guard/rewrite.h"
#include "fuzz_check.h"

static const char rules[] =
    "version: 1\n"
    "rules:\n"
    "  - id: t.email\n    type: EMAIL\n    class: pii\n    caseless: true\n    score: 0.9\n"
    "    pattern: '[a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}'\n    max_len: 64\n"
    "  - id: t.card\n    type: CREDIT_CARD\n    class: financial\n    validator: luhn\n    score: 0.7\n"
    "    pattern: '\\b\\d{4}[ -]?\\d{4}[ -]?\\d{4}[ -]?\\d{4}\\b'\n    context: [card, visa]\n"
    "  - id: t.num\n    type: NUMBER\n    class: test\n    score: 0.5\n    pattern: '\\d{4,}'\n    max_len: 40\n"
    "  - id: t.key\n    type: API_KEY\n    class: secrets\n    pattern: 'sk-[A-Za-z0-9]{8}'\n"
    "  - id: t.word\n    type: TERM\n    class: violence\n    caseless: true\n    boundary: false\n"
    "    pattern: 'b[o0]+mb'\n    max_len: 16\n"
    "  - id: t.ab\n    type: AB\n    class: test\n    boundary: false\n    score: 0.5\n    pattern: 'a[ab]*b'\n"
    "    max_len: 24\n"
    /* bytes, not characters: may end inside a multi-byte character (the rewrite must widen) */
    "  - id: t.tag\n    type: TAG\n    class: test\n    boundary: false\n    score: 0.6\n"
    "    pattern: 'ID:[^ ]{3}'\n    max_len: 6\n"
    /* starts with a byte class: may start inside the character the previous span ended in */
    "  - id: t.tail\n    type: TAIL\n    class: test\n    boundary: false\n    score: 0.6\n"
    "    pattern: '[^ A-Za-z:][a-z]{4}Z'\n    max_len: 6\n";

static wd_guard_db_t *db;
static wd_guard_scratch_t *scratch;
static wd_guard_allow_t *allow;
static const uint8_t hash_key[32] = {42};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    db = wd_guard_db_load_buf("fuzz.yaml", rules, sizeof rules - 1, err, sizeof err);
    if (!db) fprintf(stderr, "rules: %s\n", err);
    CHECK(db);
    scratch = wd_guard_scratch_new(db);
    CHECK(scratch);
    static const char *const listed[] = {"a@b.co", "4111 1111 1111 1111", "sk-abcdefgh",
                                         "aab",    "ID:\xc3\xa9x",        "*@y.io"};
    allow = wd_guard_allow_new();
    CHECK(allow);
    for (size_t i = 0; i < sizeof listed / sizeof *listed; i++)
        CHECK(wd_guard_allow_add(allow, listed[i], strlen(listed[i])) == WD_OK);
    return 0;
}

static wd_action_t mixed(void *ud, const wd_rule_t *r)
{
    static const wd_action_t acts[] = {WD_ACT_MASK, WD_ACT_REDACT, WD_ACT_HASH, WD_ACT_PSEUDO, WD_ACT_FLAG,
                                       WD_ACT_ALLOW};
    unsigned seed = *(const unsigned *)ud;
    return acts[(seed + (unsigned)strlen(r->id)) % (sizeof acts / sizeof *acts)];
}

static wd_action_t pseudo(void *ud, const wd_rule_t *r)
{
    (void)ud;
    (void)r;
    return WD_ACT_PSEUDO;
}

/* The gateway's structural members (src/gateway/guard_stage.c skip_key). */
static bool skip_key(const wd_json_doc_t *d, int key)
{
    static const char *const skip[] = {"model", "role", "type", "id", "tool_call_id", "object", "encoding_format",
                                       "service_tier", "user"};
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (wd_json_str_eq(d, key, skip[i])) return true;
    return false;
}

#define MAXS 512 /* strings followed per input */

typedef struct {
    const wd_json_doc_t *d;
    int idx[MAXS]; /* string value tokens in document order */
    size_t n;
} strings_t;

static void collect(strings_t *s, int tok, int key)
{
    const wd_json_doc_t *d = s->d;
    const wd_json_tok_t *t = &d->toks[tok];
    if (t->type == WD_JSON_STRING) {
        if ((key < 0 || !skip_key(d, key)) && s->n < MAXS) s->idx[s->n++] = tok;
    } else if (t->type == WD_JSON_OBJECT) {
        int k = tok + 1;
        for (uint32_t m = 0; m < t->size; m++) {
            collect(s, k + 1, k);
            k = (int)d->toks[k + 1].next;
        }
    } else if (t->type == WD_JSON_ARRAY) {
        int e = tok + 1;
        for (uint32_t m = 0; m < t->size; m++) {
            collect(s, e, key);
            e = (int)d->toks[e].next;
        }
    }
}

static bool contains_placeholder(const wd_vault_t *v, const char *p, size_t len)
{
    if (!len) return false;
    for (size_t i = 0; i < v->n; i++)
        if (memmem(p, len, v->e[i].ph, v->e[i].phlen)) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    unsigned mode = data[0];
    const char *src = (const char *)data + 1;
    size_t len = size - 1;
    bool all_pseudo = mode & 1;

    size_t cap = len / 2 + 2;
    wd_json_tok_t *toks = malloc(cap * sizeof *toks), *toks2 = NULL;
    CHECK(toks);
    wd_json_doc_t d, d2;
    if (wd_json_parse(&d, src, len, toks, cap, 0, NULL, 0) != WD_OK) {
        free(toks);
        return 0;
    }
    strings_t *ss = calloc(1, sizeof *ss), *ss2 = calloc(1, sizeof *ss2);
    CHECK(ss && ss2);
    ss->d = &d;
    collect(ss, 0, -1);

    wd_vault_t vault;
    wd_vault_init(&vault);
    wd_rewrite_opts_t o = {all_pseudo ? pseudo : mixed, &mode, hash_key, &vault, mode & 2 ? allow : NULL};
    wd_findings_t f;
    wd_findings_init(&f);
    wd_buf_t *orig = calloc(ss->n + 1, sizeof *orig), *rew = calloc(ss->n + 1, sizeof *rew);
    wd_json_edit_t *edits = calloc(ss->n + 1, sizeof *edits);
    wd_buf_t arena, out, rebuilt;
    wd_buf_init(&arena, 0);
    wd_buf_init(&out, 0);
    wd_buf_init(&rebuilt, 0);
    CHECK(orig && rew && edits);
    size_t *offs = calloc(ss->n + 1, sizeof *offs), nedits = 0;
    CHECK(offs);
    bool refused = false;

    for (size_t i = 0; i < ss->n && !refused; i++) {
        int tok = ss->idx[i];
        wd_buf_init(&orig[i], 0);
        wd_buf_init(&rew[i], 0);
        CHECK(wd_json_str_decode(&d, tok, &orig[i]) == WD_OK);
        CHECK(valid_utf8(orig[i].data, orig[i].len)); /* the parser validated it */
        f.n = 0;
        int rc = wd_guard_scan(db, scratch, orig[i].data ? orig[i].data : "", orig[i].len, 0.0f, &f);
        if (rc != WD_OK) {
            refused = true; /* the guard refuses such a request (fail closed) */
            break;
        }
        wd_guard_tally_t t;
        wd_guard_tally_init(&t);
        CHECK(wd_guard_rewrite(db, orig[i].data ? orig[i].data : "", orig[i].len, &f, &o, &t, &rew[i]) == WD_OK);
        uint64_t acted = 0, allowed = 0, listed = 0;
        for (size_t k = 0; k < t.n; k++) {
            acted += t.v[k].count;
            if (t.v[k].action == WD_ACT_ALLOW) allowed += t.v[k].count;
        }
        CHECK(acted == f.n); /* every finding was acted on */
        for (size_t k = 0; o.allow && k < f.n; k++)
            listed += wd_guard_allow_has(o.allow, orig[i].data + f.v[k].start, f.v[k].end - f.v[k].start);
        CHECK(allowed >= listed);
        CHECK(valid_utf8(rew[i].data, rew[i].len));
        if (rew[i].len == orig[i].len && (rew[i].len == 0 || memcmp(rew[i].data, orig[i].data, rew[i].len) == 0))
            continue;
        offs[nedits] = arena.len;
        CHECK(wd_buf_append(&arena, "\"", 1) == WD_OK);
        CHECK(wd_buf_append_json_str(&arena, rew[i].data, rew[i].len) == WD_OK);
        CHECK(wd_buf_append(&arena, "\"", 1) == WD_OK);
        edits[nedits] = (wd_json_edit_t){d.toks[tok].start - 1, d.toks[tok].end + 1, wd_str(NULL, arena.len - offs[nedits])};
        nedits++;
    }
    if (refused) goto done;

    for (size_t i = 0; i < nedits; i++) edits[i].with.p = arena.data + offs[i];
    CHECK(wd_json_apply_edits(src, len, edits, nedits, &rebuilt) == WD_OK);
    CHECK(valid_utf8(rebuilt.data, rebuilt.len));
    toks2 = malloc((rebuilt.len / 2 + 2) * sizeof *toks2);
    CHECK(toks2);
    char err[128];
    if (wd_json_parse(&d2, rebuilt.data ? rebuilt.data : "", rebuilt.len, toks2, rebuilt.len / 2 + 2, 0, err,
                      sizeof err) != WD_OK) {
        fprintf(stderr, "rebuilt body does not parse: %s\n%.*s\n", err, (int)rebuilt.len, rebuilt.data);
        abort();
    }
    /* the same structure: same token types, sizes and nesting */
    CHECK(d2.ntoks == d.ntoks);
    for (size_t k = 0; k < d.ntoks; k++) {
        CHECK(d2.toks[k].type == d.toks[k].type);
        CHECK(d2.toks[k].size == d.toks[k].size);
        CHECK(d2.toks[k].parent == d.toks[k].parent && d2.toks[k].next == d.toks[k].next);
    }
    ss2->d = &d2;
    collect(ss2, 0, -1);
    CHECK(ss2->n == ss->n);
    for (size_t i = 0; i < ss->n; i++) {
        CHECK(ss2->idx[i] == ss->idx[i]);
        wd_buf_reset(&out);
        CHECK(wd_json_str_decode(&d2, ss2->idx[i], &out) == WD_OK);
        CHECK(out.len == rew[i].len && (out.len == 0 || memcmp(out.data, rew[i].data, out.len) == 0));
        if (!all_pseudo || contains_placeholder(&vault, orig[i].data, orig[i].len)) continue;
        /* restore, whole text */
        wd_buf_t back;
        wd_buf_init(&back, 0);
        CHECK(wd_vault_restore(&vault, out.data ? out.data : "", out.len, &back) == WD_OK);
        CHECK(back.len == orig[i].len && (back.len == 0 || memcmp(back.data, orig[i].data, back.len) == 0));
        /* restore, streamed in two pieces */
        size_t cut = out.len ? ((mode >> 1) * 2654435761u + i) % (out.len + 1) : 0;
        wd_restorer_t r;
        wd_restorer_init(&r, &vault);
        wd_buf_reset(&back);
        CHECK(wd_restorer_feed(&r, out.data ? out.data : "", cut, &back) == WD_OK);
        CHECK(wd_restorer_feed(&r, out.data ? out.data + cut : "", out.len - cut, &back) == WD_OK);
        CHECK(wd_restorer_flush(&r, &back) == WD_OK);
        CHECK(back.len == orig[i].len && (back.len == 0 || memcmp(back.data, orig[i].data, back.len) == 0));
        wd_restorer_free(&r);
        wd_buf_free(&back);
    }

done:
    for (size_t i = 0; i < ss->n; i++) {
        wd_buf_free(&orig[i]);
        wd_buf_free(&rew[i]);
    }
    free(orig);
    free(rew);
    free(edits);
    free(offs);
    free(ss);
    free(ss2);
    free(toks);
    free(toks2);
    wd_buf_free(&arena);
    wd_buf_free(&out);
    wd_buf_free(&rebuilt);
    wd_findings_free(&f);
    wd_vault_free(&vault);
    return 0;
}

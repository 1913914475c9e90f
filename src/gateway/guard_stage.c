/* The `guard` stage: privacy controls on prompts and pseudonym restoration in answers.
 * Every string the model will see in the JSON body is scanned (message contents and text parts,
 * prompts, inputs, tool and function arguments — everything but structural fields such as model
 * and role); findings are acted on per the caller's guard profile, except the data classes its
 * roles are entitled to send; the body is rebuilt by splicing, everything else byte for byte.
 * Pseudonyms stay in this exchange's vault and are put back in the answer, streamed or not. The
 * findings (types, actions and counts, never values) go into the event and the x-warden-guard
 * header. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway/gateway.h"
#include "guard/rewrite.h"

#define RESTORERS 8

typedef struct {
    const wd_guard_profile_t *profile;
    const char **entitled; /* data classes the caller may send unchanged */
    size_t nentitled;
    wd_vault_t vault;
    wd_restorer_t restorers[RESTORERS]; /* one per streamed choice index */
    wd_buf_t body;                      /* the rewritten request body */
} guard_state_t;

static wd_gw_worker_t *gw(wd_worker_t *w) { return w->app; }

static void scrub(wd_buf_t *b)
{
    if (b->data) sodium_memzero(b->data, b->cap);
    wd_buf_free(b);
}

/* Structural fields the model does not read as text. */
static bool skip_key(const wd_json_doc_t *d, int key)
{
    static const char *const skip[] = {"model", "role", "type", "id", "tool_call_id", "object", "encoding_format",
                                       "service_tier", "user"};
    for (size_t i = 0; i < WD_ARRAY_LEN(skip); i++)
        if (wd_json_str_eq(d, key, skip[i])) return true;
    return false;
}

static wd_action_t action_for(void *ud, const wd_rule_t *r)
{
    guard_state_t *gs = ud;
    for (size_t i = 0; i < gs->nentitled; i++)
        if (strcmp(gs->entitled[i], r->cls) == 0) return WD_ACT_ALLOW;
    return wd_profile_action(gs->profile, r);
}

/* ---- request ---------------------------------------------------------------------------------------- */

typedef struct {
    wd_exchange_t *x;
    guard_state_t *gs;
    wd_guard_scratch_t *scratch;
    wd_findings_t findings;
    wd_guard_tally_t tally;
    wd_json_edit_t *edits;
    size_t *offs; /* replacement start in arena (pointers are fixed up once the arena stops growing) */
    size_t nedits, cap;
    wd_buf_t arena, text, out;
    int rc;
} walk_t;

static int add_edit(walk_t *w, const wd_json_tok_t *t, const char *p, size_t len)
{
    if (w->nedits == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        wd_json_edit_t *e = realloc(w->edits, cap * sizeof *e);
        if (e) w->edits = e;
        size_t *of = realloc(w->offs, cap * sizeof *of);
        if (of) w->offs = of;
        if (!e || !of) return WD_ENOMEM;
        w->cap = cap;
    }
    size_t at = w->arena.len;
    wd_buf_append(&w->arena, "\"", 1);
    wd_buf_append_json_str(&w->arena, p, len);
    if (wd_buf_append(&w->arena, "\"", 1)) return WD_ENOMEM;
    w->offs[w->nedits] = at;
    w->edits[w->nedits++] = (wd_json_edit_t){t->start - 1, t->end + 1, wd_str(NULL, w->arena.len - at)};
    return WD_OK;
}

static void scan_string(walk_t *w, const wd_json_doc_t *d, int tok)
{
    const wd_config_t *cfg = w->x->cfg;
    wd_buf_reset(&w->text);
    if (wd_json_str_decode(d, tok, &w->text) != WD_OK || w->text.len < 5) return;
    w->findings.n = 0;
    int rc = wd_guard_scan(cfg->guard_db, w->scratch, w->text.data, w->text.len, (float)cfg->guard.min_score / 100.0f,
                           &w->findings);
    if (rc || !w->findings.n) {
        w->rc = rc;
        return;
    }
    wd_rewrite_opts_t o = {action_for, w->gs, gw(w->x->w)->guard_hash_key, &w->gs->vault};
    wd_buf_reset(&w->out);
    rc = wd_guard_rewrite(cfg->guard_db, w->text.data, w->text.len, &w->findings, &o, &w->tally, &w->out);
    if (!rc && (w->out.len != w->text.len || memcmp(w->out.data, w->text.data, w->out.len) != 0))
        rc = add_edit(w, &d->toks[tok], w->out.data, w->out.len);
    w->rc = rc;
}

static void walk(walk_t *w, const wd_json_doc_t *d, int tok, int key)
{
    const wd_json_tok_t *t = &d->toks[tok];
    if (w->rc) return;
    if (t->type == WD_JSON_STRING) {
        if (key < 0 || !skip_key(d, key)) scan_string(w, d, tok);
    } else if (t->type == WD_JSON_OBJECT) {
        int k = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            walk(w, d, k + 1, k);
            k = (int)d->toks[k + 1].next;
        }
    } else if (t->type == WD_JSON_ARRAY) {
        int e = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            walk(w, d, e, key);
            e = (int)d->toks[e].next;
        }
    }
}

static void summarize(wd_exchange_t *x, const wd_guard_tally_t *t)
{
    const wd_guard_db_t *db = x->cfg->guard_db;
    char buf[256];
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < t->n && used < sizeof buf; i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, t->v[i].rule);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s:%s:%u", i ? "," : "", r->type,
                                 wd_action_name(t->v[i].action), t->v[i].count);
    }
    wd_event_copy(x->ev.guard, sizeof x->ev.guard, buf, strlen(buf));
    char hdr[360];
    snprintf(hdr, sizeof hdr, "profile=%s; %s", x->ev.guard_profile, buf[0] ? buf : "clean");
    wd_exchange_add_header(x, "x-warden-guard", hdr);
}

/* The caller's profile (the first of its roles that names one, else guard.default_profile) and the
 * union of its roles' entitled data classes. */
static const wd_guard_profile_t *pick_profile(wd_exchange_t *x, guard_state_t *gs)
{
    const wd_config_t *cfg = x->cfg;
    const wd_guard_profile_t *p = NULL;
    size_t n = 0;
    for (size_t i = 0; x->authenticated && i < x->principal.nroles; i++) {
        const wd_role_t *r = wd_policy_role(cfg->roles, cfg->nroles, x->principal.roles[i]);
        if (!r) continue;
        if (!p && r->guard) p = wd_config_profile(cfg, r->guard);
        n += r->ndata_classes;
    }
    if (n && (gs->entitled = calloc(n, sizeof *gs->entitled))) {
        for (size_t i = 0; i < x->principal.nroles; i++) {
            const wd_role_t *r = wd_policy_role(cfg->roles, cfg->nroles, x->principal.roles[i]);
            for (size_t j = 0; r && j < r->ndata_classes; j++) gs->entitled[gs->nentitled++] = r->data_classes[j];
        }
    }
    return p ? p : wd_config_profile(cfg, cfg->guard.default_profile);
}

static wd_stage_rc_t guard_on_request(wd_exchange_t *x)
{
    const wd_config_t *cfg = x->cfg;
    if (!cfg->guard_db || !x->route->json_body) return WD_CONTINUE;
    guard_state_t *gs = calloc(1, sizeof *gs);
    if (!gs) {
        wd_exchange_reject(x, 500, "internal_error", "out of memory", NULL);
        return WD_REJECT;
    }
    x->guard = gs;
    wd_vault_init(&gs->vault);
    for (size_t i = 0; i < RESTORERS; i++) wd_restorer_init(&gs->restorers[i], &gs->vault);
    wd_buf_init(&gs->body, 0);
    if (!(gs->profile = pick_profile(x, gs))) return WD_CONTINUE;
    snprintf(x->ev.guard_profile, sizeof x->ev.guard_profile, "%s", gs->profile->name);

    wd_gw_worker_t *g = gw(x->w);
    if (g->guard_db != cfg->guard_db) { /* first use, or a reload brought new rules */
        wd_guard_scratch_free(g->guard_scratch);
        wd_guard_db_unref(g->guard_db);
        g->guard_scratch = wd_guard_scratch_new(cfg->guard_db);
        g->guard_db = g->guard_scratch ? wd_guard_db_ref(cfg->guard_db) : NULL; /* held: never a stale address */
    }
    walk_t w;
    memset(&w, 0, sizeof w);
    w.x = x;
    w.gs = gs;
    w.scratch = g->guard_scratch;
    wd_findings_init(&w.findings);
    wd_guard_tally_init(&w.tally);
    wd_buf_init(&w.arena, 0);
    wd_buf_init(&w.text, 0);
    wd_buf_init(&w.out, 0);
    if (!w.scratch) w.rc = WD_ENOMEM;
    else walk(&w, &x->doc, 0, -1);
    wd_stage_rc_t out = WD_CONTINUE;
    if (w.rc) {
        /* text that cannot be scanned is not forwarded (fail closed) */
        bool big = w.rc == WD_E2BIG;
        wd_exchange_reject(x, big ? 400 : 500, "guard_failed",
                           big ? "the request has too many findings to process" : "the guard could not scan the request",
                           "guard");
        out = WD_REJECT;
    } else {
        summarize(x, &w.tally);
        if (w.tally.blocked_rule >= 0) {
            const wd_rule_t *r = wd_guard_db_rule(cfg->guard_db, (size_t)w.tally.blocked_rule);
            char reason[200];
            snprintf(reason, sizeof reason, "blocked by rule %s (profile %s)", r->id, gs->profile->name);
            wd_exchange_reject(x, 400, "content_blocked", reason, r->id);
            out = WD_REJECT;
        } else if (w.nedits) {
            for (size_t i = 0; i < w.nedits; i++) w.edits[i].with.p = w.arena.data + w.offs[i];
            /* replacing strings by strings keeps the token structure: the same capacity suffices */
            if (wd_json_apply_edits(x->body->data, x->body->len, w.edits, w.nedits, &gs->body) != WD_OK ||
                wd_json_parse(&x->doc, gs->body.data, gs->body.len, x->toks, x->toks_cap, 0, NULL, 0) != WD_OK) {
                wd_exchange_reject(x, 500, "guard_failed", "the guard could not rewrite the request", "guard");
                out = WD_REJECT;
            } else {
                x->body = &gs->body; /* forward sends what the guard produced */
            }
        }
    }
    wd_findings_free(&w.findings);
    free(w.edits);
    free(w.offs);
    scrub(&w.arena);
    scrub(&w.text);
    scrub(&w.out);
    return out;
}

/* ---- answer: restore pseudonyms ----------------------------------------------------------------------- */

/* Restores one string token of doc into edits (non-streamed answers). */
static int restore_token(guard_state_t *gs, const wd_json_doc_t *d, int tok, wd_buf_t *arena, wd_json_edit_t *e,
                         size_t *offs, size_t *n, size_t cap)
{
    if (tok < 0 || d->toks[tok].type != WD_JSON_STRING || *n == cap) return WD_OK;
    wd_buf_t text, out;
    wd_buf_init(&text, 0);
    wd_buf_init(&out, 0);
    int rc = wd_json_str_decode(d, tok, &text);
    if (!rc) rc = wd_vault_restore(&gs->vault, text.data, text.len, &out);
    if (!rc && (out.len != text.len || memcmp(out.data, text.data, out.len) != 0)) {
        offs[*n] = arena->len;
        wd_buf_append(arena, "\"", 1);
        wd_buf_append_json_str(arena, out.data, out.len);
        rc = wd_buf_append(arena, "\"", 1);
        e[*n] = (wd_json_edit_t){d->toks[tok].start - 1, d->toks[tok].end + 1, wd_str(NULL, arena->len - offs[*n])};
        (*n)++;
    }
    scrub(&text);
    scrub(&out);
    return rc;
}

#define MAX_RESTORE_EDITS 64

static int restore_body(guard_state_t *gs, wd_buf_t *chunk)
{
    wd_json_tok_t *toks = malloc((chunk->len / 2 + 2) * sizeof *toks);
    if (!toks) return WD_ENOMEM;
    wd_json_doc_t d;
    int rc = wd_json_parse(&d, chunk->data, chunk->len, toks, chunk->len / 2 + 2, 0, NULL, 0);
    if (rc || toks[0].type != WD_JSON_OBJECT) {
        free(toks);
        return WD_OK; /* not JSON: nothing we placed there can be found reliably; pass it on */
    }
    wd_json_edit_t e[MAX_RESTORE_EDITS];
    size_t offs[MAX_RESTORE_EDITS], n = 0;
    wd_buf_t arena, out;
    wd_buf_init(&arena, 0);
    wd_buf_init(&out, 0);
    int ch = wd_json_obj_get(&d, 0, "choices");
    for (size_t i = 0; ch >= 0 && toks[ch].type == WD_JSON_ARRAY && i < toks[ch].size && !rc; i++) {
        int c = wd_json_arr_get(&d, ch, i), msg = wd_json_obj_get(&d, c, "message");
        rc = restore_token(gs, &d, wd_json_obj_get(&d, c, "text"), &arena, e, offs, &n, MAX_RESTORE_EDITS);
        if (!rc && msg >= 0) rc = restore_token(gs, &d, wd_json_obj_get(&d, msg, "content"), &arena, e, offs, &n,
                                                MAX_RESTORE_EDITS);
        int tc = msg >= 0 ? wd_json_obj_get(&d, msg, "tool_calls") : -1;
        for (size_t j = 0; !rc && tc >= 0 && toks[tc].type == WD_JSON_ARRAY && j < toks[tc].size; j++) {
            int fn = wd_json_obj_get(&d, wd_json_arr_get(&d, tc, j), "function");
            if (fn >= 0) rc = restore_token(gs, &d, wd_json_obj_get(&d, fn, "arguments"), &arena, e, offs, &n,
                                            MAX_RESTORE_EDITS);
        }
    }
    if (!rc && n) {
        for (size_t i = 0; i < n; i++) e[i].with.p = arena.data + offs[i];
        rc = wd_json_apply_edits(chunk->data, chunk->len, e, n, &out);
        if (!rc) {
            scrub(chunk);
            *chunk = out;
            wd_buf_init(&out, 0);
        }
    }
    scrub(&arena);
    scrub(&out);
    free(toks);
    return rc;
}

/* One SSE event "data: {json}\n\n": content deltas pass through a per-choice restorer that holds back
 * a possible partial placeholder until the next event (or the choice's finish). */
static int restore_event(guard_state_t *gs, wd_buf_t *chunk)
{
    const char *p = chunk->data;
    size_t len = chunk->len;
    if (len < 8 || memcmp(p, "data: {", 7) != 0) return WD_OK;
    const char *nl = memchr(p + 6, '\n', len - 6);
    if (!nl || (size_t)(nl - p) + 1 != len - 1 || p[len - 1] != '\n') return WD_OK; /* multi-line data: leave */
    const char *json = p + 6;
    size_t jlen = (size_t)(nl - json);
    wd_json_tok_t toks[512];
    wd_json_doc_t d;
    if (wd_json_parse(&d, json, jlen, toks, WD_ARRAY_LEN(toks), 0, NULL, 0) != WD_OK || toks[0].type != WD_JSON_OBJECT)
        return WD_OK;
    int ch = wd_json_obj_get(&d, 0, "choices");
    if (ch < 0 || toks[ch].type != WD_JSON_ARRAY) return WD_OK;
    wd_json_edit_t e[RESTORERS];
    size_t offs[RESTORERS], n = 0;
    wd_buf_t arena, text, out;
    wd_buf_init(&arena, 0);
    wd_buf_init(&text, 0);
    wd_buf_init(&out, 0);
    wd_buf_t scratch[RESTORERS];
    for (size_t i = 0; i < RESTORERS; i++) wd_buf_init(&scratch[i], 0);
    int rc = WD_OK;
    for (size_t i = 0; i < toks[ch].size && i < RESTORERS && !rc; i++) {
        int c = wd_json_arr_get(&d, ch, i);
        int64_t idx = 0;
        int it = wd_json_obj_get(&d, c, "index");
        if (it >= 0) wd_json_int(&d, it, &idx);
        wd_restorer_t *r = &gs->restorers[(size_t)(idx < 0 ? 0 : idx) % RESTORERS];
        int delta = wd_json_obj_get(&d, c, "delta");
        int obj = delta >= 0 ? delta : c;
        int tok = wd_json_obj_get(&d, obj, delta >= 0 ? "content" : "text");
        int fin = wd_json_obj_get(&d, c, "finish_reason");
        bool finished = fin >= 0 && toks[fin].type == WD_JSON_STRING;
        wd_buf_reset(&text);
        wd_buf_reset(&out);
        if (tok >= 0 && toks[tok].type == WD_JSON_STRING) rc = wd_json_str_decode(&d, tok, &text);
        if (!rc) rc = wd_restorer_feed(r, text.data, text.len, &out);
        if (!rc && finished) rc = wd_restorer_flush(r, &out);
        bool changed = out.len != text.len || (out.len && memcmp(out.data, text.data, out.len) != 0);
        if (rc || !changed) continue;
        offs[n] = arena.len;
        if (tok >= 0 && toks[tok].type == WD_JSON_STRING) {
            wd_buf_append(&arena, "\"", 1);
            wd_buf_append_json_str(&arena, out.data, out.len);
            rc = wd_buf_append(&arena, "\"", 1);
            e[n] = (wd_json_edit_t){toks[tok].start - 1, toks[tok].end + 1, wd_str(NULL, arena.len - offs[n])};
        } else { /* held-back text released by the finish: insert the content member */
            wd_buf_append(&arena, "\"", 1);
            wd_buf_append_json_str(&arena, out.data, out.len);
            rc = wd_buf_append(&arena, "\"", 1);
            if (!rc) rc = wd_json_edit_set(&d, obj, delta >= 0 ? "content" : "text",
                                           wd_str(NULL, arena.len - offs[n]), &e[n], &scratch[n]);
            offs[n] = SIZE_MAX; /* the edit's text lives in scratch[n] */
        }
        n++;
    }
    if (!rc && n) {
        /* edits sorted by position (choices appear in order; one edit each) */
        for (size_t i = 0; i < n; i++)
            if (offs[i] != SIZE_MAX) e[i].with.p = arena.data + offs[i];
        wd_buf_reset(&out);
        wd_buf_append_str(&out, "data: ");
        rc = wd_json_apply_edits(json, jlen, e, n, &out);
        if (!rc) rc = wd_buf_append_str(&out, "\n\n");
        if (!rc) {
            scrub(chunk);
            *chunk = out;
            wd_buf_init(&out, 0);
        }
    }
    for (size_t i = 0; i < RESTORERS; i++) scrub(&scratch[i]);
    scrub(&arena);
    scrub(&text);
    scrub(&out);
    return rc;
}

static wd_stage_rc_t guard_on_response_data(wd_exchange_t *x, wd_buf_t *chunk)
{
    guard_state_t *gs = x->guard;
    if (!gs || !gs->profile || !gs->profile->restore || !gs->vault.n) return WD_CONTINUE;
    int rc = x->streaming ? restore_event(gs, chunk) : restore_body(gs, chunk);
    if (rc) {
        wd_exchange_reject(x, 502, "guard_failed", "the guard could not restore the answer", "guard");
        return WD_REJECT;
    }
    return WD_CONTINUE;
}

static void guard_on_done(wd_exchange_t *x)
{
    guard_state_t *gs = x->guard;
    if (!gs) return;
    for (size_t i = 0; i < RESTORERS; i++) wd_restorer_free(&gs->restorers[i]);
    wd_vault_free(&gs->vault);
    scrub(&gs->body);
    free(gs->entitled);
    free(gs);
    x->guard = NULL;
}

const wd_stage_t wd_stage_guard = {"guard", guard_on_request, NULL, guard_on_response_data, guard_on_done};

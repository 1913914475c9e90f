/* The `guard` stage: privacy controls and injection screening on prompts; content filtering,
 * secret/PII redaction and pseudonym restoration in answers, streamed or not.
 *
 * Request: every string the model will see in the JSON body is scanned once (message contents and
 * text parts, prompts, inputs, tool and function arguments, member names other than plain identifiers
 * — everything but structural fields such as model and role; the injection screen also reads plain
 * identifiers of three or more words). Privacy findings are acted on per the caller's
 * guard profile, except the data classes its roles are entitled to send; the body is rebuilt by splicing,
 * everything else byte for byte. Injection findings feed the injection screen (guard/injection.h) for the
 * roles the profile screens, including tool results (indirect injection): decoded layers are scanned too and
 * the request's score is compared with the profile's threshold.
 *
 * Answer: output filtering runs before pseudonym restoration, so it judges the model's own text and
 * never the caller's restored values. A non-streamed answer is scanned whole (message content, text,
 * tool call arguments, refusal). A streamed answer is scanned per choice and field (content, each tool
 * call's arguments, the refusal, the legacy function_call's arguments) with the guard's stream
 * scanner, so a term split across SSE events is caught. Events
 * are queued and leave in order, unchanged, as soon as every byte they carry is final (before the
 * scanner's safe offset): a clean stream is byte-identical to the upstream's, only delayed by the
 * scanner's hold-back; an event whose text a redaction touches is rewritten (the replacement goes
 * where the finding starts, its other bytes are removed from later events); a block ends the stream
 * with an error event before any byte of the blocked text left. A check that cannot run (an event
 * that does not parse, a chunk without choices, a text field that is not a string) follows the
 * profile's on_error: closed ends the stream, open lets the event pass and records "fail-open" and
 * what passed unchecked. Pseudonyms are restored in content, tool call and function_call arguments
 * (not the refusal), as in a whole answer; what a field's restorer still holds when its choice
 * finishes (the start of a placeholder that never completed) leaves, unchanged, in the finishing
 * event: inserted as a "content" member, or as "tool_calls" / "function_call" arguments to append.
 *
 * Decisions (profile, rule ids, categories, actions, the injection score; never text) go into the
 * event and the x-warden-guard header. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway/gateway.h"
#include "guard/fold.h"
#include "guard/injection.h"
#include "guard/rewrite.h"

#define MAX_CHOICES 16
#define TOOL_SLOTS 4
/* Per choice: content (or text), TOOL_SLOTS tool call arguments, refusal, legacy function_call
 * arguments. */
#define SLOT_REFUSAL (1 + TOOL_SLOTS)
#define SLOT_FUNCTION (2 + TOOL_SLOTS)
#define CHAN_PER_CHOICE (3 + TOOL_SLOTS)
#define MAX_CHANS (MAX_CHOICES * CHAN_PER_CHOICE)
#define MAX_SPANS (MAX_CHANS * 2)
/* Queued events wait for the scanner's hold-back (a few KiB of text); an upstream that sends a huge
 * number of events without text in between cannot make the queue grow without bound. */
#define MAX_QUEUED_EVENTS 16384
#define MAX_QUEUED_BYTES (8u << 20)

/* ---- state ------------------------------------------------------------------------------------------ */

typedef struct {
    uint64_t start, end; /* stream offsets, widened to character boundaries */
    uint16_t rule;
    wd_action_t action; /* mask | redact | hash */
} ofind_t;

/* One streamed text field of choice i: content (slot 0), tool call j's arguments (slot 1 + j), the
 * refusal (SLOT_REFUSAL) or the legacy function_call's arguments (SLOT_FUNCTION). */
typedef struct {
    bool used, finished;
    wd_guard_stream_t *st; /* NULL when the profile filters no output */
    wd_fold_stream_t fold; /* st scans the text folded (guard/fold.h); its offsets map back through this */
    uint64_t fed, safe;
    uint64_t tbase; /* text holds stream bytes [tbase, fed) */
    wd_buf_t text;
    ofind_t *f; /* final findings to rewrite, sorted by start */
    size_t nf, capf;
    wd_restorer_t rest; /* pseudonyms back in content, tool call and function_call arguments */
} chan_t;

typedef struct {
    uint8_t chan;
    bool has_tok;       /* the field's string is in the event; otherwise an insertion point */
    bool comma;         /* insertion: the object already has members */
    bool text_key;      /* insertion key "text" (completions) rather than "content" */
    bool finish;        /* the event ends this field */
    bool tools;         /* insertion before the delta's closing brace of what the choice's tool call and
                           function_call restorers still hold when it finishes (chan is the choice's base) */
    uint32_t tstart, tend; /* raw offsets: the string with its quotes, or the insertion offset */
    uint64_t a, b;      /* the field's stream bytes the event carries */
} span_t;

typedef struct {
    wd_buf_t raw;
    span_t *spans;
    size_t nspans;
} qev_t;

typedef struct {
    const wd_guard_profile_t *profile;
    const char **entitled; /* data classes the caller may send unchanged */
    size_t nentitled;
    wd_vault_t vault;
    wd_buf_t body; /* the rewritten request body */

    /* decisions */
    char in_summary[256];
    char inj_summary[224];
    char sets[160]; /* "set@version,..." of the versioned rule sets the decisions used */
    wd_guard_tally_t out_tally;
    bool fail_open;
    char unchecked[96]; /* fail-open: what passed unchecked ("no_choices,bad_field"), for the decision */
    char unreadable[112]; /* what the guard could not read and how the profile decided: "token_ids(flag)" */

    /* streamed answer */
    bool out_on; /* the profile filters answers */
    chan_t *chans; /* MAX_CHANS, allocated with the first streamed event */
    qev_t *q;
    size_t qhead, qlen, qcap, qbytes;
} guard_state_t;

static wd_gw_worker_t *gw(wd_worker_t *w) { return w->app; }

static void scrub(wd_buf_t *b)
{
    if (b->data) sodium_memzero(b->data, b->cap);
    wd_buf_free(b);
}

static bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Structural fields the model does not read as text. */
static bool skip_key(const wd_json_doc_t *d, int key)
{
    static const char *const skip[] = {"model", "role", "type", "id", "tool_call_id", "object", "encoding_format",
                                       "service_tier"};
    for (size_t i = 0; i < WD_ARRAY_LEN(skip); i++)
        if (wd_json_str_eq(d, key, skip[i])) return true;
    return false;
}

/* The chat message role tok names ("\u0074ool" is still tool), or NULL. */
static const char *known_role(const wd_json_doc_t *d, int tok)
{
    for (const char *const *m = wd_message_roles; d->toks[tok].type == WD_JSON_STRING && *m; m++)
        if (wd_json_str_eq(d, tok, *m)) return *m;
    return NULL;
}

static bool entitled(const guard_state_t *gs, const wd_rule_t *r)
{
    for (size_t i = 0; i < gs->nentitled; i++)
        if (strcmp(gs->entitled[i], r->cls) == 0) return true;
    return false;
}

static wd_action_t action_for(void *ud, const wd_rule_t *r)
{
    guard_state_t *gs = ud;
    if (entitled(gs, r)) return WD_ACT_ALLOW;
    return wd_profile_action(gs->profile, r);
}

/* Answers: the caller's entitled classes are its own data coming back, so they pass too. */
static wd_action_t out_action_for(void *ud, const wd_rule_t *r)
{
    guard_state_t *gs = ud;
    if (entitled(gs, r)) return WD_ACT_ALLOW;
    return wd_profile_output_action(gs->profile, r);
}

/* Overlapping findings of equal score: the one acted on most strictly wins (block, then a rewrite,
 * then flag, then what passes), so a finding the caller may send (an entitled class, an allowed type)
 * never hides an equally likely one that must be rewritten or blocked: an SSN given as a health-plan
 * member id still reaches the model pseudonymized when the role may send phi. */
static unsigned action_rank(wd_action_t a)
{
    return a == WD_ACT_BLOCK ? 3 : a == WD_ACT_FLAG ? 1 : a == WD_ACT_ALLOW ? 0 : 2;
}

static unsigned in_rank(void *ud, const wd_rule_t *r) { return action_rank(action_for(ud, r)); }
static unsigned out_rank(void *ud, const wd_rule_t *r) { return action_rank(out_action_for(ud, r)); }

/* ---- decisions: the header and the event ----------------------------------------------------------- */

/* Records the set and version of a rule that took part in a decision (once per set), so an event
 * says which version of the rules decided. Unversioned sets (no set_version) are not listed. */
static void note_set(guard_state_t *gs, const wd_rule_t *r)
{
    if (!r || !r->set_version) return;
    char item[96];
    int n = snprintf(item, sizeof item, "%s@%s", r->set, r->set_version);
    if (n <= 0 || (size_t)n >= sizeof item) return;
    size_t used = strlen(gs->sets), l = (size_t)n;
    for (const char *p = gs->sets; (p = strstr(p, item)); p += l)
        if ((p == gs->sets || p[-1] == ',') && (p[l] == 0 || p[l] == ',')) return;
    if (used + l + 2 > sizeof gs->sets) return; /* whole items only */
    snprintf(gs->sets + used, sizeof gs->sets - used, "%s%s", used ? "," : "", item);
}

static void tally_sets(const wd_guard_db_t *db, guard_state_t *gs, const wd_guard_tally_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].action != WD_ACT_ALLOW) note_set(gs, wd_guard_db_rule(db, t->v[i].rule));
}

static bool same_type(const wd_guard_db_t *db, const wd_guard_tally_t *t, size_t i, size_t j)
{
    return t->v[i].action == t->v[j].action &&
           strcmp(wd_guard_db_rule(db, t->v[i].rule)->type, wd_guard_db_rule(db, t->v[j].rule)->type) == 0;
}

/* Input items name the type, one item per type and action ("PERSON:pseudonymize:2" for a titled name
 * and a name after a cue); output items name the rule, its class and its severity when it has one:
 * "safety.violence.threat(violence,high):block:1". */
static void tally_text(const wd_guard_db_t *db, const wd_guard_tally_t *t, bool ids, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < t->n && used < cap; i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, t->v[i].rule);
        uint32_t count = t->v[i].count;
        if (!ids) {
            size_t j = 0;
            while (j < i && !same_type(db, t, i, j))
                j++;
            if (j < i) continue; /* counted with an earlier item */
            for (j = i + 1; j < t->n; j++)
                if (same_type(db, t, i, j)) count += t->v[j].count;
        }
        int n = ids ? snprintf(buf + used, cap - used, "%s%s(%s%s%s):%s:%u", used ? "," : "", r->id, r->cls,
                               r->severity ? "," : "", r->severity ? r->severity : "",
                               wd_action_name(t->v[i].action), count)
                    : snprintf(buf + used, cap - used, "%s%s:%s:%u", used ? "," : "", r->type,
                               wd_action_name(t->v[i].action), count);
        if (n < 0 || (size_t)n >= cap - used) {
            buf[used] = 0; /* whole items only */
            break;
        }
        used += (size_t)n;
    }
}

/* Sets (or replaces) the x-warden-guard header and the event's guard field from what is known now. */
static void publish(wd_exchange_t *x, guard_state_t *gs)
{
    const wd_guard_db_t *db = x->cfg->guard_db;
    char out[256] = "";
    if (gs->out_tally.n) tally_text(db, &gs->out_tally, true, out, sizeof out);

    if (gs->out_tally.n) tally_sets(db, gs, &gs->out_tally);

    char ev[1024];
    snprintf(ev, sizeof ev, "%s%s%s%s%s%s", gs->in_summary, gs->inj_summary[0] && gs->in_summary[0] ? "," : "",
             gs->inj_summary[0] ? "injection:" : "", gs->inj_summary, out[0] && (gs->in_summary[0] || gs->inj_summary[0]) ? "," : "",
             out[0] ? "output:" : "");
    size_t l = strlen(ev);
    snprintf(ev + l, sizeof ev - l, "%s", out);
    /* the rule-set versions last, so a long decision truncates them rather than the rules */
    l = strlen(ev);
    if (gs->unchecked[0]) snprintf(ev + l, sizeof ev - l, "%sunchecked:%s(on_error:open)", l ? "," : "", gs->unchecked);
    l = strlen(ev);
    if (gs->unreadable[0]) snprintf(ev + l, sizeof ev - l, "%sunreadable:%s", l ? "," : "", gs->unreadable);
    l = strlen(ev);
    if (gs->sets[0]) snprintf(ev + l, sizeof ev - l, "%ssets:%s", l ? "," : "", gs->sets);
    wd_event_copy(x->ev.guard, sizeof x->ev.guard, ev, strlen(ev));

    char hdr[1024];
    int n = snprintf(hdr, sizeof hdr, "profile=%s; %s", gs->profile->name, gs->in_summary[0] ? gs->in_summary : "clean");
    if (gs->inj_summary[0] && n > 0 && (size_t)n < sizeof hdr)
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "; injection=%s", gs->inj_summary);
    if (out[0] && n > 0 && (size_t)n < sizeof hdr) n += snprintf(hdr + n, sizeof hdr - (size_t)n, "; output=%s", out);
    if (gs->unchecked[0] && n > 0 && (size_t)n < sizeof hdr)
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "; unchecked=%s(on_error:open)", gs->unchecked);
    if (gs->unreadable[0] && n > 0 && (size_t)n < sizeof hdr)
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "; unreadable=%s", gs->unreadable);
    if (gs->sets[0] && n > 0 && (size_t)n < sizeof hdr) snprintf(hdr + n, sizeof hdr - (size_t)n, "; sets=%s", gs->sets);

    /* one x-warden-guard line: drop the one set earlier in this exchange */
    wd_buf_t *h = &x->resp_headers;
    static const char name[] = "x-warden-guard: ";
    for (size_t i = 0; h->data && i + sizeof name - 1 <= h->len;) {
        const char *eol = memmem(h->data + i, h->len - i, "\r\n", 2);
        size_t end = eol ? (size_t)(eol - h->data) + 2 : h->len;
        if (end - i >= sizeof name - 1 && memcmp(h->data + i, name, sizeof name - 1) == 0) {
            memmove(h->data + i, h->data + end, h->len - end);
            h->len -= end - i;
            continue;
        }
        i = end;
    }
    wd_exchange_add_header(x, "x-warden-guard", hdr);
}

/* ---- request ---------------------------------------------------------------------------------------- */

typedef struct {
    wd_exchange_t *x;
    guard_state_t *gs;
    wd_guard_scratch_t *scratch;
    wd_findings_t findings;
    wd_guard_tally_t tally;
    wd_inj_result_t inj;
    wd_json_edit_t *edits;
    size_t *offs; /* replacement start in arena (pointers are fixed up once the arena stops growing) */
    size_t nedits, cap;
    wd_buf_t arena, text, out;
    bool key_edited; /* a member name was rewritten (two may now be the same) */
    char unread[96]; /* what the profile's checks cannot read: "image_url,token_ids,audio_output" */
    bool unread_in;  /* the profile checks prompts: note what they cannot read */
    bool unread_out; /* the profile filters answers: note answers it cannot read */
    int rc;
} walk_t;

/* kind: len bytes, not terminated (it may point into the request) */
static void note_unread(walk_t *w, const char *kind, size_t len)
{
    size_t used = strlen(w->unread);
    for (const char *p = w->unread; *p;) {
        size_t n = strcspn(p, ",");
        if (n == len && memcmp(p, kind, len) == 0) return;
        p += n + (p[n] == ',');
    }
    if (used + len + 2 <= sizeof w->unread)
        snprintf(w->unread + used, sizeof w->unread - used, "%s%.*s", used ? "," : "", (int)len, kind);
}

/* true, or a number other than 0 ("logprobs": 5 in completions) */
static bool truthy(const wd_json_doc_t *d, int tok)
{
    const wd_json_tok_t *t = &d->toks[tok];
    if (t->type == WD_JSON_TRUE) return true;
    if (t->type != WD_JSON_NUMBER) return false;
    char num[32];
    size_t n = WD_MIN((size_t)(t->end - t->start), sizeof num - 1);
    memcpy(num, d->src + t->start, n);
    num[n] = 0;
    return strtod(num, NULL) != 0.0;
}

/* A content part the model reads as something other than text (an image, audio, a file, a video):
 * named by its type when that is a plain word. */
static void content_part(walk_t *w, const wd_json_doc_t *d, int part)
{
    static const char *const text_types[] = {"text", "input_text", "output_text", "refusal"};
    if (!w->unread_in) return;
    int t = wd_json_obj_get(d, part, "type");
    if (t < 0 || d->toks[t].type != WD_JSON_STRING) return; /* not a typed part: its strings are scanned */
    for (size_t i = 0; i < WD_ARRAY_LEN(text_types); i++)
        if (wd_json_str_eq(d, t, text_types[i])) return;
    const char *s = d->src + d->toks[t].start;
    size_t n = d->toks[t].end - d->toks[t].start;
    bool word = !d->toks[t].escaped && n > 0 && n <= 24;
    for (size_t i = 0; word && i < n; i++)
        word = (s[i] >= 'a' && s[i] <= 'z') || s[i] == '_';
    if (word)
        note_unread(w, s, n);
    else
        note_unread(w, "other_part", 10);
}

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

/* The privacy rules and the injection signatures are scanned apart (their databases are disjoint, so
 * nothing is scanned twice): a long injection span must never win an overlap against the e-mail
 * address inside it and so let the address through. privacy false: the injection screen only. */
static void scan_string(walk_t *w, const wd_json_doc_t *d, int tok, const char *role, size_t rlen, bool privacy)
{
    const wd_config_t *cfg = w->x->cfg;
    const wd_guard_profile_t *p = w->gs->profile;
    wd_buf_reset(&w->text);
    if (wd_json_str_decode(d, tok, &w->text) != WD_OK || w->text.len < 2) return;
    bool inj = p->injection.enabled && p->injection.action != WD_ACT_ALLOW && wd_profile_injection_role(p, role, rlen);
    if ((w->text.len < 5 || !privacy) && !inj) return;
    w->findings.n = 0;
    float min = (float)cfg->guard.min_score / 100.0f;
    int rc = inj ? wd_inj_scan(cfg->guard_db, w->scratch, w->text.data, w->text.len, NULL, &w->inj) : WD_OK;
    if (!rc && w->text.len >= 5 && privacy)
        rc = wd_guard_scan_folded(cfg->guard_db, w->scratch, WD_GUARD_INPUT, w->text.data, w->text.len, min,
                                  &(wd_guard_rank_t){in_rank, w->gs}, &w->findings);
    if (rc || !w->findings.n) {
        w->rc = rc;
        return;
    }
    wd_rewrite_opts_t o = {action_for, w->gs, gw(w->x->w)->guard_hash_key, &w->gs->vault, p->allow};
    wd_buf_reset(&w->out);
    rc = wd_guard_rewrite(cfg->guard_db, w->text.data, w->text.len, &w->findings, &o, &w->tally, &w->out);
    if (!rc && (w->out.len != w->text.len || memcmp(w->out.data, w->text.data, w->out.len) != 0))
        rc = add_edit(w, &d->toks[tok], w->out.data, w->out.len);
    w->rc = rc;
}

/* role: the "role" of the nearest enclosing message object; strings outside messages (prompt, input,
 * tool definitions) come from the caller and count as "user". */
static void walk(walk_t *w, const wd_json_doc_t *d, int tok, int key, const char *role, size_t rlen)
{
    const wd_json_tok_t *t = &d->toks[tok];
    if (w->rc) return;
    if (t->type == WD_JSON_STRING) {
        /* a role other than the known ones is text: servers that accept custom roles put it in the prompt */
        if (key < 0 || !skip_key(d, key) || (wd_json_str_eq(d, key, "role") && !known_role(d, tok)))
            scan_string(w, d, tok, role, rlen, true);
    } else if (t->type == WD_JSON_OBJECT) {
        /* a message's role decides its screening; one that is not a known role ("usr", a number) is the
         * caller's text, screened as "user", so a custom role cannot slip past an injection role list */
        int rt = wd_json_obj_get(d, tok, "role");
        if (rt >= 0) {
            role = known_role(d, rt);
            if (!role) role = "user";
            rlen = strlen(role);
        }
        /* a message's content parts: each one the model reads as something other than text is noted */
        int ct = rt >= 0 ? wd_json_obj_get(d, tok, "content") : -1;
        if (ct >= 0 && d->toks[ct].type == WD_JSON_ARRAY)
            for (int e = ct + 1, m = 0; (uint32_t)m < d->toks[ct].size; m++, e = (int)d->toks[e].next)
                if (d->toks[e].type == WD_JSON_OBJECT) content_part(w, d, e);
        int k = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            const char *name = d->src + d->toks[k].start;
            size_t nlen = d->toks[k].end - d->toks[k].start;
            if (!wd_guard_plain_name(name, nlen)) {
                size_t before = w->nedits;
                scan_string(w, d, k, role, rlen, true);
                w->key_edited |= w->nedits > before;
            } else if (wd_inj_name_screened(name, nlen)) { /* "ignore_all_previous_instructions" */
                scan_string(w, d, k, role, rlen, false);
            }
            if (w->rc) break;
            walk(w, d, k + 1, k, role, rlen);
            k = (int)d->toks[k + 1].next;
        }
    } else if (t->type == WD_JSON_ARRAY) {
        int e = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            walk(w, d, e, key, role, rlen);
            e = (int)d->toks[e].next;
        }
    }
}

/* Token ids: a list of numbers, or a list holding lists of numbers. */
static bool token_ids(const wd_json_doc_t *d, int tok)
{
    if (tok < 0 || d->toks[tok].type != WD_JSON_ARRAY) return false;
    for (int e = tok + 1, m = 0; (uint32_t)m < d->toks[tok].size; m++, e = (int)d->toks[e].next) {
        if (d->toks[e].type == WD_JSON_NUMBER) return true;
        if (d->toks[e].type == WD_JSON_ARRAY && token_ids(d, e)) return true;
    }
    return false;
}

/* The request's own members that carry what the rules cannot read, or ask for an answer the output
 * filter cannot read: prompts or inputs as token ids, prompt embeddings, a spoken answer, log
 * probabilities (their tokens would repeat a redacted or blocked answer). */
static void unread_members(walk_t *w, const wd_json_doc_t *d)
{
    if (w->unread_in) {
        if (token_ids(d, wd_json_obj_get(d, 0, "prompt")) || token_ids(d, wd_json_obj_get(d, 0, "input")))
            note_unread(w, "token_ids", 9);
        int pe = wd_json_obj_get(d, 0, "prompt_embeds");
        if (pe >= 0 && d->toks[pe].type != WD_JSON_NULL) note_unread(w, "prompt_embeds", 13);
    }
    if (!w->unread_out) return;
    int mo = wd_json_obj_get(d, 0, "modalities");
    for (int e = mo + 1, m = 0;
         mo >= 0 && d->toks[mo].type == WD_JSON_ARRAY && (uint32_t)m < d->toks[mo].size;
         m++, e = (int)d->toks[e].next)
        if (wd_json_str_eq(d, e, "audio")) note_unread(w, "audio_output", 12);
    int lp = wd_json_obj_get(d, 0, "logprobs");
    if (lp >= 0 && truthy(d, lp)) note_unread(w, "logprobs", 8);
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

/* The profile acts on what prompts say: some input action or an injection screen. */
static bool checks_input(const wd_guard_profile_t *p)
{
    for (size_t i = 0; i < p->ninput; i++)
        if (p->input[i].action != WD_ACT_ALLOW) return true;
    return p->injection.enabled && p->injection.action != WD_ACT_ALLOW;
}

/* What the event and errors name when unreadable content, not a rule, decided. */
#define UNREADABLE_RULE "guard.unreadable_input"

/* What the event and errors name when the decode budget, not a rule, decided. */
#define INJ_BUDGET_RULE "injection.decode_budget"

/* What the event and errors name when rewritten member names collided. */
#define MEMBER_NAMES_RULE "guard.member_names"

/* The injection decision (guard/injection.h wd_inj_decide): score, threshold, action and the rules
 * that fired (ids and layers), and whether the decode budget ran out ("budget_exhausted": some
 * encoded text was not screened; the profile's on_error decides, see wd_inj_decide). */
static wd_action_t injection_decision(wd_exchange_t *x, guard_state_t *gs, const wd_inj_result_t *r, char *top,
                                      size_t topcap, wd_inj_verdict_t *v)
{
    const wd_guard_injection_cfg_t *ic = &gs->profile->injection;
    float score = wd_inj_score(r), thr = (float)ic->threshold / 100.0f;
    top[0] = 0;
    wd_action_t a = wd_inj_decide(r, thr, ic->action, gs->profile->fail_open, v);
    if (*v == WD_INJ_CLEAN) return WD_ACT_ALLOW;
    char rules[160];
    size_t rl = wd_inj_describe(x->cfg->guard_db, r, rules, sizeof rules);
    snprintf(gs->inj_summary, sizeof gs->inj_summary, "%s:%.2f%s%.2f:%s%s%s", wd_action_name(a), (double)score,
             score + 1e-6f >= thr ? ">=" : "<", (double)thr, rules, r->budget_exhausted && rl ? "," : "",
             !r->budget_exhausted ? "" : gs->profile->fail_open ? "budget_exhausted(on_error:open)"
                                                                 : "budget_exhausted(on_error:closed)");
    if (*v == WD_INJ_UNSCREENED) {
        snprintf(top, topcap, "%s", INJ_BUDGET_RULE);
        if (gs->profile->fail_open) gs->fail_open = true;
        return a;
    }
    /* the deciding rule: the strongest */
    size_t best = 0;
    for (size_t i = 1; i < r->nhits; i++)
        if (r->hits[i].score > r->hits[best].score) best = i;
    snprintf(top, topcap, "%s", wd_guard_db_rule(x->cfg->guard_db, r->hits[best].rule)->id);
    return a;
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
    wd_buf_init(&gs->body, 0);
    wd_guard_tally_init(&gs->out_tally);
    if (!(gs->profile = pick_profile(x, gs))) return WD_CONTINUE;
    snprintf(x->ev.guard_profile, sizeof x->ev.guard_profile, "%s", gs->profile->name);
    for (size_t i = 0; i < gs->profile->noutput; i++)
        if (gs->profile->output[i].action != WD_ACT_ALLOW) gs->out_on = true;

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
    wd_inj_result_init(&w.inj);
    wd_buf_init(&w.arena, 0);
    wd_buf_init(&w.text, 0);
    wd_buf_init(&w.out, 0);
    if (!w.scratch) w.rc = WD_ENOMEM;
    else {
        w.unread_in = checks_input(gs->profile);
        w.unread_out = gs->out_on;
        walk(&w, &x->doc, 0, -1, "user", 4);
        unread_members(&w, &x->doc);
    }
    if (w.unread[0])
        snprintf(gs->unreadable, sizeof gs->unreadable, "%s(%s)", w.unread,
                 wd_action_name(gs->profile->unreadable));
    wd_stage_rc_t out = WD_CONTINUE;
    if (w.rc) {
        /* text that cannot be scanned is not forwarded (fail closed) */
        bool big = w.rc == WD_E2BIG;
        wd_exchange_reject(x, big ? 400 : 500, "guard_failed",
                           big ? "the request has too many findings to process" : "the guard could not scan the request",
                           "guard");
        out = WD_REJECT;
    } else {
        tally_text(cfg->guard_db, &w.tally, false, gs->in_summary, sizeof gs->in_summary);
        tally_sets(cfg->guard_db, gs, &w.tally);
        for (size_t i = 0; i < w.inj.nhits; i++) note_set(gs, wd_guard_db_rule(cfg->guard_db, w.inj.hits[i].rule));
        char top[96];
        wd_inj_verdict_t iv = WD_INJ_CLEAN;
        wd_action_t ia = injection_decision(x, gs, &w.inj, top, sizeof top, &iv);
        publish(x, gs);
        if (iv == WD_INJ_UNSCREENED && ia != WD_ACT_BLOCK && !x->ev.rule[0])
            wd_event_copy(x->ev.rule, sizeof x->ev.rule, "fail-open", 9);
        if (w.tally.blocked_rule >= 0) {
            const wd_rule_t *r = wd_guard_db_rule(cfg->guard_db, (size_t)w.tally.blocked_rule);
            char reason[200];
            snprintf(reason, sizeof reason, "blocked by rule %s (profile %s)", r->id, gs->profile->name);
            wd_exchange_reject(x, 400, "content_blocked", reason, r->id);
            out = WD_REJECT;
        } else if (ia == WD_ACT_BLOCK && iv == WD_INJ_UNSCREENED) {
            char reason[256];
            snprintf(reason, sizeof reason,
                     "blocked by rule %s (profile %s): the prompt holds more encoded text than the injection screen "
                     "decodes (%u KiB); the rest could not be screened (on_error: closed)",
                     INJ_BUDGET_RULE, gs->profile->name, WD_INJ_DECODE_BUDGET / 1024u);
            wd_exchange_reject(x, 400, "content_blocked", reason, INJ_BUDGET_RULE);
            out = WD_REJECT;
        } else if (ia == WD_ACT_BLOCK) {
            char reason[256];
            snprintf(reason, sizeof reason, "blocked by rule %s (profile %s): prompt injection score %.2f, threshold %.2f",
                     top, gs->profile->name, (double)wd_inj_score(&w.inj),
                     (double)gs->profile->injection.threshold / 100.0);
            wd_exchange_reject(x, 400, "content_blocked", reason, top);
            out = WD_REJECT;
        } else if (w.unread[0] && gs->profile->unreadable == WD_ACT_BLOCK) {
            char reason[320];
            snprintf(reason, sizeof reason,
                     "blocked by rule %s (profile %s): the request carries what the guard cannot read (%s); "
                     "send text, or set unreadable_input: flag in the profile to let it pass unchecked",
                     UNREADABLE_RULE, gs->profile->name, w.unread);
            wd_exchange_reject(x, 400, "content_blocked", reason, UNREADABLE_RULE);
            out = WD_REJECT;
        } else if (w.nedits) {
            for (size_t i = 0; i < w.nedits; i++) w.edits[i].with.p = w.arena.data + w.offs[i];
            /* replacing strings by strings keeps the token structure: the same capacity suffices */
            int arc = wd_json_apply_edits(x->body->data, x->body->len, w.edits, w.nedits, &gs->body);
            int prc =
                arc ? arc
                    : wd_json_parse(&x->doc, gs->body.data, gs->body.len, x->toks, x->toks_cap, 0, NULL, 0);
            if (prc && !arc && w.key_edited) {
                /* with the structure kept, only member names redacted alike fail the parse */
                char reason[256];
                snprintf(reason, sizeof reason,
                         "blocked by rule %s (profile %s): two member names of one object are the same once "
                         "rewritten (redacted or masked alike); pseudonymize keeps distinct names apart",
                         MEMBER_NAMES_RULE, gs->profile->name);
                wd_exchange_reject(x, 400, "content_blocked", reason, MEMBER_NAMES_RULE);
                out = WD_REJECT;
            } else if (prc) {
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

/* ---- answers: shared helpers ---------------------------------------------------------------------- */

static void block_answer(wd_exchange_t *x, guard_state_t *gs, uint16_t rule)
{
    const wd_rule_t *r = wd_guard_db_rule(x->cfg->guard_db, rule);
    char reason[200];
    snprintf(reason, sizeof reason, "blocked by rule %s (profile %s)", r->id, gs->profile->name);
    wd_exchange_reject(x, 400, "content_blocked", reason, r->id);
}

/* A check that could not run: on_error decides. Returns true when the answer may pass. code (may be
 * NULL) is a short name of what passed unchecked, recorded in the decision when on_error is open. */
static bool check_failed(wd_exchange_t *x, guard_state_t *gs, const char *what, const char *code)
{
    if (gs->profile->fail_open) {
        gs->fail_open = true;
        if (!x->ev.rule[0]) wd_event_copy(x->ev.rule, sizeof x->ev.rule, "fail-open", 9);
        size_t used = strlen(gs->unchecked), l = code ? strlen(code) : 0;
        if (l && !strstr(gs->unchecked, code) && used + l + 2 <= sizeof gs->unchecked)
            snprintf(gs->unchecked + used, sizeof gs->unchecked - used, "%s%s", used ? "," : "", code);
        return true;
    }
    char reason[160];
    snprintf(reason, sizeof reason, "the guard could not check the answer (%s; profile %s, on_error: closed)", what,
             gs->profile->name);
    wd_exchange_reject(x, 502, "guard_failed", reason, "guard");
    return false;
}

static wd_json_tok_t *parse_json(const char *p, size_t len, wd_json_tok_t *stack, size_t nstack, wd_json_doc_t *d)
{
    size_t cap = len / 2 + 2;
    wd_json_tok_t *toks = cap <= nstack ? stack : malloc(cap * sizeof *toks);
    if (!toks) return NULL;
    if (wd_json_parse(d, p, len, toks, cap, 0, NULL, 0) != WD_OK) {
        if (toks != stack) free(toks);
        return NULL;
    }
    return toks;
}

/* ---- non-streamed answers --------------------------------------------------------------------------- */

#define MAX_BODY_EDITS 256

typedef struct {
    wd_exchange_t *x;
    guard_state_t *gs;
    const wd_json_doc_t *d;
    wd_json_edit_t e[MAX_BODY_EDITS];
    size_t offs[MAX_BODY_EDITS], n;
    wd_buf_t arena, text, mid, out;
    wd_findings_t f;
    int blocked;
} body_t;

/* Filters (when the profile filters answers) and restores one string of the answer. */
static int body_token(body_t *b, int tok, bool filter, bool restore)
{
    const wd_json_doc_t *d = b->d;
    if (tok < 0 || d->toks[tok].type != WD_JSON_STRING) return WD_OK;
    if (b->n == MAX_BODY_EDITS) return WD_E2BIG;
    const wd_config_t *cfg = b->x->cfg;
    wd_buf_reset(&b->text);
    wd_buf_reset(&b->mid);
    wd_buf_reset(&b->out);
    int rc = wd_json_str_decode(d, tok, &b->text);
    const wd_buf_t *cur = &b->text;
    if (!rc && filter) {
        b->f.n = 0;
        rc = wd_guard_scan_folded(cfg->guard_db, gw(b->x->w)->guard_scratch, WD_GUARD_OUTPUT, b->text.data,
                                  b->text.len, (float)cfg->guard.min_score / 100.0f,
                                  &(wd_guard_rank_t){out_rank, b->gs}, &b->f);
        wd_rewrite_opts_t o = {out_action_for, b->gs, gw(b->x->w)->guard_hash_key, NULL,
                               b->gs->profile->allow};
        if (!rc && b->f.n) {
            wd_guard_tally_t t;
            wd_guard_tally_init(&t);
            rc = wd_guard_rewrite(cfg->guard_db, b->text.data, b->text.len, &b->f, &o, &t, &b->mid);
            for (size_t i = 0; i < t.n; i++) /* merge into the answer's tally */
                for (uint32_t k = 0; t.v[i].action != WD_ACT_ALLOW && k < t.v[i].count; k++)
                    wd_guard_tally_add(&b->gs->out_tally, t.v[i].rule, t.v[i].action);
            if (t.blocked_rule >= 0 && b->blocked < 0) b->blocked = t.blocked_rule;
            cur = &b->mid;
        }
    }
    if (!rc && restore) {
        rc = wd_vault_restore(&b->gs->vault, cur->data, cur->len, &b->out);
        cur = &b->out;
    }
    if (!rc && (cur->len != b->text.len || memcmp(cur->data, b->text.data, cur->len) != 0)) {
        b->offs[b->n] = b->arena.len;
        wd_buf_append(&b->arena, "\"", 1);
        wd_buf_append_json_str(&b->arena, cur->data, cur->len);
        rc = wd_buf_append(&b->arena, "\"", 1);
        b->e[b->n] = (wd_json_edit_t){d->toks[tok].start - 1, d->toks[tok].end + 1, wd_str(NULL, b->arena.len - b->offs[b->n])};
        b->n++;
    }
    return rc;
}

/* Returns WD_OK, WD_EINVAL when the answer is not the JSON it should be, or another error. */
static int answer_body(wd_exchange_t *x, guard_state_t *gs, wd_buf_t *chunk, bool filter, bool restore)
{
    wd_json_tok_t stack[256];
    wd_json_doc_t d;
    wd_json_tok_t *toks = parse_json(chunk->data, chunk->len, stack, WD_ARRAY_LEN(stack), &d);
    if (!toks) return WD_EINVAL;
    int rc = WD_OK;
    body_t *b = calloc(1, sizeof *b);
    if (!b) rc = WD_ENOMEM;
    if (!rc && toks[0].type != WD_JSON_OBJECT) rc = WD_EINVAL;
    if (rc) {
        if (toks != stack) free(toks);
        free(b);
        return rc;
    }
    b->x = x;
    b->gs = gs;
    b->d = &d;
    b->blocked = -1;
    wd_buf_init(&b->arena, 0);
    wd_buf_init(&b->text, 0);
    wd_buf_init(&b->mid, 0);
    wd_buf_init(&b->out, 0);
    wd_findings_init(&b->f);
    int ch = wd_json_obj_get(&d, 0, "choices");
    for (size_t i = 0; ch >= 0 && toks[ch].type == WD_JSON_ARRAY && i < toks[ch].size && !rc; i++) {
        int c = wd_json_arr_get(&d, ch, i), msg = wd_json_obj_get(&d, c, "message");
        rc = body_token(b, wd_json_obj_get(&d, c, "text"), filter, restore);
        if (!rc && msg >= 0) rc = body_token(b, wd_json_obj_get(&d, msg, "content"), filter, restore);
        if (!rc && msg >= 0) rc = body_token(b, wd_json_obj_get(&d, msg, "refusal"), filter, false);
        int tc = msg >= 0 ? wd_json_obj_get(&d, msg, "tool_calls") : -1;
        for (size_t j = 0; !rc && tc >= 0 && toks[tc].type == WD_JSON_ARRAY && j < toks[tc].size; j++) {
            int fn = wd_json_obj_get(&d, wd_json_arr_get(&d, tc, j), "function");
            if (fn >= 0) rc = body_token(b, wd_json_obj_get(&d, fn, "arguments"), filter, restore);
        }
        int fc = msg >= 0 ? wd_json_obj_get(&d, msg, "function_call") : -1;
        if (!rc && fc >= 0) rc = body_token(b, wd_json_obj_get(&d, fc, "arguments"), filter, restore);
    }
    if (!rc && b->blocked >= 0) {
        block_answer(x, gs, (uint16_t)b->blocked);
        rc = 1; /* blocked */
    } else if (!rc && b->n) {
        for (size_t i = 0; i < b->n; i++) b->e[i].with.p = b->arena.data + b->offs[i];
        wd_buf_reset(&b->out);
        rc = wd_json_apply_edits(chunk->data, chunk->len, b->e, b->n, &b->out);
        if (!rc) {
            scrub(chunk);
            *chunk = b->out;
            wd_buf_init(&b->out, 0);
        }
    }
    scrub(&b->arena);
    scrub(&b->text);
    scrub(&b->mid);
    scrub(&b->out);
    wd_findings_free(&b->f);
    free(b);
    if (toks != stack) free(toks);
    return rc;
}

/* ---- streamed answers --------------------------------------------------------------------------------- */

static void chan_free(chan_t *c)
{
    wd_guard_stream_free(c->st);
    c->st = NULL;
    wd_fold_stream_free(&c->fold);
    scrub(&c->text);
    free(c->f);
    c->f = NULL;
    wd_restorer_free(&c->rest);
}

static int ofind_add(chan_t *c, const ofind_t *o)
{
    if (c->nf == c->capf) {
        size_t cap = c->capf ? c->capf * 2 : 8;
        ofind_t *v = realloc(c->f, cap * sizeof *v);
        if (!v) return WD_ENOMEM;
        c->f = v;
        c->capf = cap;
    }
    size_t i = c->nf;
    while (i > 0 && c->f[i - 1].start > o->start) { /* findings arrive nearly sorted */
        c->f[i] = c->f[i - 1];
        i--;
    }
    c->f[i] = *o;
    c->nf++;
    return WD_OK;
}

/* Acts on the findings the scanner made final: block stops here, flag is recorded, the rewriting
 * actions are kept until the events carrying the span leave. */
static int take_findings(wd_exchange_t *x, guard_state_t *gs, chan_t *c, const wd_findings_t *f, int *blocked)
{
    const wd_guard_db_t *db = x->cfg->guard_db;
    for (size_t i = 0; i < f->n; i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, f->v[i].rule);
        wd_action_t a = out_action_for(gs, r);
        if (a == WD_ACT_ALLOW) continue;
        if (a == WD_ACT_PSEUDO) a = WD_ACT_REDACT;
        ofind_t o = {wd_fold_stream_raw(&c->fold, f->base + f->v[i].start),
                     wd_fold_stream_raw_end(&c->fold, f->base + f->v[i].end), f->v[i].rule, a};
        /* the profile's allow list, on the text as the model wrote it (held: the span is final) */
        if (wd_guard_allow_has(gs->profile->allow, c->text.data + (o.start - c->tbase),
                               (size_t)(o.end - o.start)))
            continue;
        wd_guard_tally_add(&gs->out_tally, f->v[i].rule, a);
        if (a == WD_ACT_BLOCK) {
            if (*blocked < 0) *blocked = f->v[i].rule;
            continue;
        }
        if (a == WD_ACT_FLAG) continue;
        /* widen to character boundaries within the text we hold (event boundaries are boundaries) */
        while (o.start > c->tbase && cont((unsigned char)c->text.data[o.start - c->tbase])) o.start--;
        while (o.end < c->fed && cont((unsigned char)c->text.data[o.end - c->tbase])) o.end++;
        int rc = ofind_add(c, &o);
        if (rc) return rc;
    }
    return WD_OK;
}

static int chan_feed(wd_exchange_t *x, guard_state_t *gs, chan_t *c, const char *p, size_t len, int *blocked)
{
    if (!c->used) {
        c->used = true;
        wd_buf_init(&c->text, 0);
        wd_fold_stream_init(&c->fold);
        wd_restorer_init(&c->rest, &gs->vault);
        if (gs->out_on && !(c->st = wd_guard_stream_open_for(x->cfg->guard_db, WD_GUARD_OUTPUT,
                                                            (float)x->cfg->guard.min_score / 100.0f)))
            return WD_ENOMEM;
        wd_guard_stream_set_rank(c->st, &(wd_guard_rank_t){out_rank, gs});
    }
    if (c->finished) return len ? WD_EINVAL : WD_OK; /* text after the field's end */
    int rc = wd_buf_append(&c->text, p, len);
    if (rc) return rc;
    c->fed += len;
    if (!c->st) {
        c->safe = c->fed;
        return WD_OK;
    }
    wd_findings_t f;
    wd_findings_init(&f);
    const char *fp = NULL;
    size_t fn = 0;
    rc = wd_fold_stream_feed(&c->fold, p, len, false, &fp, &fn);
    if (!rc) rc = wd_guard_stream_feed(c->st, gw(x->w)->guard_scratch, fp, fn, &f);
    if (!rc) rc = take_findings(x, gs, c, &f, blocked);
    wd_findings_free(&f);
    uint64_t safe = wd_guard_stream_safe_offset(c->st);
    c->safe = wd_fold_stream_raw(&c->fold, safe);
    wd_fold_stream_trim(&c->fold, safe);
    return rc;
}

static int chan_finish(wd_exchange_t *x, guard_state_t *gs, chan_t *c, int *blocked)
{
    if (!c->used || c->finished) return WD_OK;
    c->finished = true;
    c->safe = c->fed;
    if (!c->st) return WD_OK;
    wd_findings_t f;
    wd_findings_init(&f);
    const char *fp = NULL;
    size_t fn = 0;
    int rc = wd_fold_stream_feed(&c->fold, NULL, 0, true, &fp, &fn); /* a word or character that waited */
    if (!rc && fn) rc = wd_guard_stream_feed(c->st, gw(x->w)->guard_scratch, fp, fn, &f);
    if (!rc) rc = take_findings(x, gs, c, &f, blocked);
    if (!rc) rc = wd_guard_stream_finish(c->st, gw(x->w)->guard_scratch, &f);
    if (!rc) rc = take_findings(x, gs, c, &f, blocked);
    wd_findings_free(&f);
    return rc;
}

static wd_action_t fixed_action(void *ud, const wd_rule_t *r)
{
    WD_UNUSED(r);
    return *(const wd_action_t *)ud;
}

/* The text one event carries for a field, after the rewriting findings: a finding's replacement goes
 * where it starts; its bytes in later events are dropped. */
static int span_text(wd_exchange_t *x, chan_t *c, const span_t *s, wd_buf_t *out)
{
    const char *t = c->text.data;
    uint64_t pos = s->a;
    int rc = WD_OK;
    for (size_t i = 0; i < c->nf && !rc; i++) {
        const ofind_t *f = &c->f[i];
        if (f->end <= s->a || f->start >= s->b || f->end <= pos) continue;
        if (f->start >= pos) {
            rc = wd_buf_append(out, t + (pos - c->tbase), (size_t)(f->start - pos));
            if (!rc) { /* the whole span is still held: it ends before the safe offset */
                wd_finding_t v = {0, (uint32_t)(f->end - f->start), f->rule, 1.0f};
                wd_findings_t one = {.v = &v, .n = 1, .cap = 1};
                wd_action_t act = f->action;
                wd_rewrite_opts_t o = {fixed_action, &act, gw(x->w)->guard_hash_key, NULL};
                rc = wd_guard_rewrite(x->cfg->guard_db, t + (f->start - c->tbase), (size_t)(f->end - f->start), &one, &o,
                                      NULL, out);
            }
        }
        pos = f->end < s->b ? f->end : s->b;
    }
    if (!rc && pos < s->b) rc = wd_buf_append(out, t + (pos - c->tbase), (size_t)(s->b - pos));
    return rc;
}

/* Drops what no queued event needs any more: text before the first queued span of the field (and
 * before the safe offset, which later findings start at or after), findings wholly before it. */
static void chan_trim(guard_state_t *gs, size_t ci)
{
    chan_t *c = &gs->chans[ci];
    uint64_t keep = c->safe > 4 ? c->safe - 4 : 0; /* a few bytes before: widening to a character start */
    for (size_t i = gs->qhead; i < gs->qhead + gs->qlen; i++)
        for (size_t k = 0; k < gs->q[i].nspans; k++)
            if (gs->q[i].spans[k].chan == ci && gs->q[i].spans[k].a < keep) keep = gs->q[i].spans[k].a;
    if (keep > c->fed) keep = c->fed;
    size_t drop = 0;
    while (drop < c->nf && c->f[drop].end <= keep) drop++;
    if (drop) {
        memmove(c->f, c->f + drop, (c->nf - drop) * sizeof *c->f);
        c->nf -= drop;
    }
    if (c->nf && c->f[0].start < keep) keep = c->f[0].start;
    if (keep > c->tbase) {
        sodium_memzero(c->text.data, (size_t)(keep - c->tbase));
        wd_buf_consume(&c->text, (size_t)(keep - c->tbase));
        c->tbase = keep;
    }
}

/* The members to insert before the closing brace of a finishing choice's delta for what its tool call
 * and function_call restorers still hold (a prefix of a placeholder that never completed): a
 * "tool_calls" array with the arguments to append per tool call index, and a "function_call". */
static int tools_flush(guard_state_t *gs, size_t base, bool comma, wd_buf_t *arena, wd_buf_t *held)
{
    int rc = WD_OK;
    bool any = false;
    for (size_t j = 0; j < TOOL_SLOTS && !rc; j++) {
        chan_t *c = &gs->chans[base + 1 + j];
        wd_buf_reset(held);
        if (!c->used || (rc = wd_restorer_flush(&c->rest, held)) || !held->len) continue;
        if (!any && comma) wd_buf_append_str(arena, ",");
        wd_buf_append_str(arena, any ? ",{\"index\":" : "\"tool_calls\":[{\"index\":");
        char idx[8];
        snprintf(idx, sizeof idx, "%zu", j);
        wd_buf_append_str(arena, idx);
        wd_buf_append_str(arena, ",\"function\":{\"arguments\":\"");
        wd_buf_append_json_str(arena, held->data, held->len);
        rc = wd_buf_append_str(arena, "\"}}");
        any = true;
    }
    if (!rc && any) rc = wd_buf_append_str(arena, "]");
    chan_t *f = &gs->chans[base + SLOT_FUNCTION];
    wd_buf_reset(held);
    if (!rc && f->used && !(rc = wd_restorer_flush(&f->rest, held)) && held->len) {
        if (any || comma) wd_buf_append_str(arena, ",");
        wd_buf_append_str(arena, "\"function_call\":{\"arguments\":\"");
        wd_buf_append_json_str(arena, held->data, held->len);
        rc = wd_buf_append_str(arena, "\"}");
    }
    return rc;
}

/* Writes one queued event to out, rewriting the fields whose text changed. */
static int emit_event(wd_exchange_t *x, guard_state_t *gs, qev_t *e, wd_buf_t *out)
{
    bool restore = gs->profile->restore && gs->vault.n;
    wd_json_edit_t ed[MAX_SPANS];
    size_t n = 0;
    wd_buf_t arena, tx, rs;
    wd_buf_init(&arena, 0);
    wd_buf_init(&tx, 0);
    wd_buf_init(&rs, 0);
    size_t offs[MAX_SPANS];
    int rc = WD_OK;
    size_t content_inserted = SIZE_MAX; /* the choice (base channel) whose delta got a "content" member */
    for (size_t k = 0; k < e->nspans && !rc && n < MAX_SPANS; k++) {
        const span_t *s = &e->spans[k];
        chan_t *c = &gs->chans[s->chan];
        size_t slot = s->chan % CHAN_PER_CHOICE;
        if (s->tools) {
            if (!restore) continue;
            size_t before = arena.len;
            rc = tools_flush(gs, s->chan, s->comma || content_inserted == s->chan, &arena, &rs);
            if (!rc && arena.len > before) {
                offs[n] = before;
                ed[n++] = (wd_json_edit_t){s->tstart, s->tstart, wd_str(NULL, arena.len - before)};
            }
            continue;
        }
        wd_buf_reset(&tx);
        wd_buf_reset(&rs);
        rc = span_text(x, c, s, &tx);
        const wd_buf_t *cur = &tx;
        if (!rc && restore && slot != SLOT_REFUSAL) { /* restored where the non-streamed path restores */
            rc = wd_restorer_feed(&c->rest, tx.data, tx.len, &rs);
            if (!rc && s->finish) rc = wd_restorer_flush(&c->rest, &rs);
            cur = &rs;
        }
        if (rc) break;
        size_t olen = (size_t)(s->b - s->a);
        bool same = cur->len == olen && (!olen || memcmp(cur->data, c->text.data + (s->a - c->tbase), olen) == 0);
        if (same && s->has_tok) continue;
        if (!s->has_tok && !cur->len) continue;
        offs[n] = arena.len;
        if (!s->has_tok) {
            content_inserted = s->chan;
            wd_buf_append_str(&arena, s->text_key ? "\"text\":\"" : "\"content\":\"");
            wd_buf_append_json_str(&arena, cur->data, cur->len);
            rc = wd_buf_append_str(&arena, s->comma ? "\"," : "\"");
            ed[n] = (wd_json_edit_t){s->tstart, s->tstart, wd_str(NULL, arena.len - offs[n])};
        } else {
            wd_buf_append(&arena, "\"", 1);
            wd_buf_append_json_str(&arena, cur->data, cur->len);
            rc = wd_buf_append(&arena, "\"", 1);
            ed[n] = (wd_json_edit_t){s->tstart, s->tend, wd_str(NULL, arena.len - offs[n])};
        }
        n++;
    }
    if (!rc && n) {
        for (size_t i = 0; i < n; i++) ed[i].with.p = arena.data + offs[i];
        for (size_t i = 1; i < n; i++) /* by position: fields of one event may come in any order */
            for (size_t j = i; j > 0 && ed[j].start < ed[j - 1].start; j--) {
                wd_json_edit_t t = ed[j];
                ed[j] = ed[j - 1];
                ed[j - 1] = t;
            }
        rc = wd_json_apply_edits(e->raw.data, e->raw.len, ed, n, out);
    } else if (!rc) {
        rc = wd_buf_append(out, e->raw.data, e->raw.len);
    }
    scrub(&arena);
    scrub(&tx);
    scrub(&rs);
    return rc;
}

static void qev_free(qev_t *e)
{
    scrub(&e->raw);
    free(e->spans);
    e->spans = NULL;
    e->nspans = 0;
}

/* Sends every queued event, in order, whose fields are all final. */
static int release(wd_exchange_t *x, guard_state_t *gs, wd_buf_t *out)
{
    int rc = WD_OK;
    while (gs->qlen && !rc) {
        qev_t *e = &gs->q[gs->qhead];
        bool ready = true;
        for (size_t k = 0; k < e->nspans && ready; k++) ready = e->spans[k].b <= gs->chans[e->spans[k].chan].safe;
        if (!ready) break;
        rc = emit_event(x, gs, e, out);
        gs->qbytes -= e->raw.len;
        qev_free(e);
        gs->qhead++;
        gs->qlen--;
    }
    if (!gs->qlen) gs->qhead = 0;
    for (size_t i = 0; i < MAX_CHANS && !rc; i++)
        if (gs->chans[i].used) chan_trim(gs, i);
    return rc;
}

static int enqueue(guard_state_t *gs, const wd_buf_t *raw, span_t *spans, size_t nspans)
{
    if (gs->qlen >= MAX_QUEUED_EVENTS || gs->qbytes + raw->len > MAX_QUEUED_BYTES) return WD_E2BIG;
    if (gs->qhead + gs->qlen == gs->qcap) {
        if (gs->qhead) { /* slide down before growing */
            memmove(gs->q, gs->q + gs->qhead, gs->qlen * sizeof *gs->q);
            gs->qhead = 0;
        } else {
            size_t cap = gs->qcap ? gs->qcap * 2 : 16;
            qev_t *q = realloc(gs->q, cap * sizeof *q);
            if (!q) return WD_ENOMEM;
            gs->q = q;
            gs->qcap = cap;
        }
    }
    qev_t *e = &gs->q[gs->qhead + gs->qlen];
    memset(e, 0, sizeof *e);
    wd_buf_init(&e->raw, 0);
    if (wd_buf_append(&e->raw, raw->data, raw->len)) return WD_ENOMEM;
    if (nspans) {
        if (!(e->spans = malloc(nspans * sizeof *spans))) {
            wd_buf_free(&e->raw);
            return WD_ENOMEM;
        }
        memcpy(e->spans, spans, nspans * sizeof *spans);
    }
    e->nspans = nspans;
    gs->qlen++;
    gs->qbytes += raw->len;
    return WD_OK;
}

/* The payload of an event's single data line; false when the event has no data. *multi is set when it
 * has several data lines (which this stage does not rewrite). */
static bool event_data(const char *p, size_t len, size_t *at, size_t *dlen, bool *multi)
{
    bool found = false;
    *multi = false;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(p + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - p) : len, l = end - i;
        if (l >= 5 && memcmp(p + i, "data:", 5) == 0) {
            if (found) *multi = true;
            found = true;
            *at = i + 5 + (l > 5 && p[i + 5] == ' ');
            *dlen = end - *at;
            if (*dlen && p[*at + *dlen - 1] == '\r') (*dlen)--;
        }
        i = end + 1;
    }
    return found;
}

/* Feeds one string field of a streamed choice (a tool call's, the refusal's or the legacy function
 * call's arguments) to its channel and records where the event carries it. NULL passes; any other
 * type is a shape the guard cannot check (WD_EINVAL). */
static int feed_field(wd_exchange_t *x, guard_state_t *gs, const wd_json_doc_t *d, int tok, size_t at, size_t chan,
                      bool finish, span_t *spans, size_t *nspans, wd_buf_t *text, int *blocked)
{
    if (tok < 0 || d->toks[tok].type == WD_JSON_NULL) return WD_OK;
    if (d->toks[tok].type != WD_JSON_STRING || *nspans >= MAX_SPANS) return WD_EINVAL;
    chan_t *c = &gs->chans[chan];
    wd_buf_reset(text);
    int rc = wd_json_str_decode(d, tok, text);
    uint64_t a = c->fed;
    if (!rc) rc = chan_feed(x, gs, c, text->data, text->len, blocked);
    spans[(*nspans)++] = (span_t){(uint8_t)chan, true, false, false, finish, false,
                                  (uint32_t)(at + d->toks[tok].start - 1), (uint32_t)(at + d->toks[tok].end + 1), a,
                                  c->fed};
    return rc;
}

/* Feeds one event's fields; fills spans (at most MAX_SPANS). Returns WD_OK, WD_EINVAL (not a chunk
 * whose text fields the guard can find: *code names why), or another error; *blocked names a rule
 * whose action is block. Every text field the model writes is scanned as the non-streamed path scans
 * it: content / text, tool call and legacy function_call arguments, refusal. */
static int read_event(wd_exchange_t *x, guard_state_t *gs, const wd_buf_t *chunk, size_t at, size_t dlen, span_t *spans,
                      size_t *nspans, int *blocked, const char **code)
{
    wd_json_tok_t stack[512];
    wd_json_doc_t d;
    wd_json_tok_t *toks = parse_json(chunk->data + at, dlen, stack, WD_ARRAY_LEN(stack), &d);
    *code = "bad_json";
    if (!toks) return WD_EINVAL;
    int rc = WD_OK;
    wd_buf_t text;
    wd_buf_init(&text, 0);
    int ch = toks[0].type == WD_JSON_OBJECT ? wd_json_obj_get(&d, 0, "choices") : -1;
    /* a chunk without choices (an upstream's error object, a vendor extension) may carry text the
     * guard does not know where to find: it is not passed as checked */
    if (toks[0].type != WD_JSON_OBJECT || ch < 0 || toks[ch].type != WD_JSON_ARRAY) {
        *code = toks[0].type == WD_JSON_OBJECT && ch < 0 ? "no_choices" : "bad_choices";
        rc = WD_EINVAL;
    }
    if (!rc) *code = "bad_field";
    for (size_t i = 0; !rc && i < toks[ch].size; i++) {
        int c = wd_json_arr_get(&d, ch, i);
        if (toks[c].type != WD_JSON_OBJECT) {
            rc = WD_EINVAL;
            break;
        }
        int64_t idx = (int64_t)i;
        int it = wd_json_obj_get(&d, c, "index");
        if (it >= 0 && wd_json_int(&d, it, &idx) != WD_OK) rc = WD_EINVAL;
        if (rc || idx < 0 || idx >= MAX_CHOICES) {
            rc = WD_EINVAL;
            break;
        }
        /* one choice yields at most CHAN_PER_CHOICE + 1 spans; repeated indexes must not overrun them */
        if (*nspans + CHAN_PER_CHOICE + 1 > MAX_SPANS) {
            *code = "too_many_fields";
            rc = WD_EINVAL;
            break;
        }
        int delta = wd_json_obj_get(&d, c, "delta");
        if (delta >= 0 && toks[delta].type != WD_JSON_OBJECT) delta = -1;
        int obj = delta >= 0 ? delta : c;
        int fin = wd_json_obj_get(&d, c, "finish_reason");
        bool finished = fin >= 0 && toks[fin].type == WD_JSON_STRING;
        size_t base = (size_t)idx * CHAN_PER_CHOICE;
        /* content (chat) or text (completions) */
        int tok = wd_json_obj_get(&d, obj, delta >= 0 ? "content" : "text");
        if (tok >= 0 && toks[tok].type != WD_JSON_STRING && toks[tok].type != WD_JSON_NULL) rc = WD_EINVAL;
        chan_t *cc = &gs->chans[base];
        if (!rc && tok >= 0 && toks[tok].type == WD_JSON_STRING) {
            wd_buf_reset(&text);
            rc = wd_json_str_decode(&d, tok, &text);
            uint64_t a = cc->fed;
            if (!rc) rc = chan_feed(x, gs, cc, text.data, text.len, blocked);
            if (!rc && finished) rc = chan_finish(x, gs, cc, blocked);
            spans[(*nspans)++] = (span_t){(uint8_t)base, true, false, false, finished, false,
                                          (uint32_t)(at + toks[tok].start - 1), (uint32_t)(at + toks[tok].end + 1), a,
                                          cc->fed};
        } else if (!rc && finished && cc->used && !cc->finished) {
            rc = chan_finish(x, gs, cc, blocked);
            /* a pseudonym prefix the restorer still holds leaves with this event */
            spans[(*nspans)++] = (span_t){(uint8_t)base, false, toks[obj].size > 0, delta < 0, true, false,
                                          (uint32_t)(at + toks[obj].start + 1), (uint32_t)(at + toks[obj].start + 1),
                                          cc->fed, cc->fed};
        }
        /* tool call arguments */
        int tcs = delta >= 0 ? wd_json_obj_get(&d, delta, "tool_calls") : -1;
        if (!rc && tcs >= 0 && toks[tcs].type != WD_JSON_ARRAY && toks[tcs].type != WD_JSON_NULL) rc = WD_EINVAL;
        for (size_t j = 0; !rc && tcs >= 0 && toks[tcs].type == WD_JSON_ARRAY && j < toks[tcs].size; j++) {
            int tc = wd_json_arr_get(&d, tcs, j);
            int64_t tj = (int64_t)j;
            int ti = toks[tc].type == WD_JSON_OBJECT ? wd_json_obj_get(&d, tc, "index") : -1;
            if (toks[tc].type != WD_JSON_OBJECT || (ti >= 0 && wd_json_int(&d, ti, &tj) != WD_OK) || tj < 0 ||
                tj >= TOOL_SLOTS) {
                rc = WD_EINVAL;
                break;
            }
            int fn = wd_json_obj_get(&d, tc, "function");
            if (fn >= 0 && toks[fn].type != WD_JSON_OBJECT && toks[fn].type != WD_JSON_NULL) rc = WD_EINVAL;
            int args = !rc && fn >= 0 && toks[fn].type == WD_JSON_OBJECT ? wd_json_obj_get(&d, fn, "arguments") : -1;
            if (!rc)
                rc = feed_field(x, gs, &d, args, at, base + 1 + (size_t)tj, finished, spans, nspans, &text, blocked);
        }
        /* the refusal and the legacy function_call, scanned as the non-streamed path scans them */
        if (!rc && delta >= 0)
            rc = feed_field(x, gs, &d, wd_json_obj_get(&d, delta, "refusal"), at, base + SLOT_REFUSAL, finished, spans,
                            nspans, &text, blocked);
        int fc = !rc && delta >= 0 ? wd_json_obj_get(&d, delta, "function_call") : -1;
        if (fc >= 0 && toks[fc].type != WD_JSON_OBJECT && toks[fc].type != WD_JSON_NULL) rc = WD_EINVAL;
        if (!rc && fc >= 0 && toks[fc].type == WD_JSON_OBJECT)
            rc = feed_field(x, gs, &d, wd_json_obj_get(&d, fc, "arguments"), at, base + SLOT_FUNCTION, finished, spans,
                            nspans, &text, blocked);
        bool args_used = false;
        for (size_t j = 1; !rc && finished && j < CHAN_PER_CHOICE; j++) {
            args_used |= j != SLOT_REFUSAL && gs->chans[base + j].used && !gs->chans[base + j].finished;
            rc = chan_finish(x, gs, &gs->chans[base + j], blocked);
        }
        /* a pseudonym prefix a tool call's restorer still holds leaves with this event, as for content */
        if (!rc && args_used && delta >= 0)
            spans[(*nspans)++] = (span_t){(uint8_t)base, false, toks[obj].size > 0, false, true, true,
                                          (uint32_t)(at + toks[obj].end - 1), (uint32_t)(at + toks[obj].end - 1),
                                          cc->fed, cc->fed};
    }
    scrub(&text);
    if (toks != stack) free(toks);
    return rc;
}

/* One SSE event in, zero or more events out (in order). Returns 0, 1 when the answer was rejected. */
static int stream_event(wd_exchange_t *x, guard_state_t *gs, wd_buf_t *chunk)
{
    if (!gs->chans && !(gs->chans = calloc(MAX_CHANS, sizeof *gs->chans))) {
        wd_exchange_reject(x, 500, "internal_error", "out of memory", "guard");
        return 1;
    }
    size_t at = 0, dlen = 0;
    bool multi = false;
    span_t spans[MAX_SPANS];
    size_t nspans = 0;
    int blocked = -1, rc = WD_OK;
    const char *why = NULL, *code = NULL;
    if (event_data(chunk->data, chunk->len, &at, &dlen, &multi)) {
        if (multi) {
            rc = WD_EINVAL;
            why = "an event with several data lines";
            code = "multi_data";
        } else if (dlen == 6 && memcmp(chunk->data + at, "[DONE]", 6) == 0) {
            for (size_t i = 0; i < MAX_CHANS && !rc; i++) rc = chan_finish(x, gs, &gs->chans[i], &blocked);
            why = "the end of the stream";
        } else {
            rc = read_event(x, gs, chunk, at, dlen, spans, &nspans, &blocked, &code);
            why = rc != WD_EINVAL                 ? "a scan error"
                  : !strcmp(code, "no_choices")   ? "a chunk without choices"
                  : !strcmp(code, "bad_field")    ? "a chunk whose text fields are not strings"
                                                  : "an event that does not parse as a completion chunk";
            if (rc != WD_EINVAL) code = "scan_error";
        }
    }
    if (blocked >= 0) {
        block_answer(x, gs, (uint16_t)blocked);
        publish(x, gs);
        return 1;
    }
    if (rc) {
        if (rc != WD_EINVAL && rc != WD_E2BIG) why = "out of memory";
        if (!check_failed(x, gs, why, code)) return 1;
        /* fail-open: the event passes in its place, unchecked */
        nspans = 0;
    }
    rc = enqueue(gs, chunk, spans, nspans);
    if (rc == WD_E2BIG) {
        wd_exchange_reject(x, 502, "guard_failed", "the answer's events outran the guard's hold-back limit", "guard");
        return 1;
    }
    wd_buf_t out;
    wd_buf_init(&out, 0);
    if (!rc) rc = release(x, gs, &out);
    if (rc) {
        scrub(&out);
        if (!check_failed(x, gs, "the guard could not rewrite an event", "rewrite")) return 1;
        return 0;
    }
    scrub(chunk);
    *chunk = out;
    return 0; /* the head has left: later decisions reach the event in on_done */
}

static wd_stage_rc_t guard_on_response_data(wd_exchange_t *x, wd_buf_t *chunk)
{
    guard_state_t *gs = x->guard;
    if (!gs || !gs->profile) return WD_CONTINUE;
    bool restore = gs->profile->restore && gs->vault.n;
    if (!gs->out_on && !restore) return WD_CONTINUE;
    if (x->streaming) return stream_event(x, gs, chunk) ? WD_REJECT : WD_CONTINUE;
    /* non-streamed: only answers (200) carry model text; upstream errors pass as they are */
    bool filter = gs->out_on && x->resp_status == 200;
    int rc = answer_body(x, gs, chunk, filter, restore);
    if (rc == 1) {
        publish(x, gs);
        return WD_REJECT;
    }
    if (rc == WD_EINVAL && !filter) return WD_CONTINUE; /* not JSON: nothing we placed there can be found */
    if (rc) {
        if (!check_failed(x, gs, rc == WD_EINVAL ? "the answer is not JSON" : "a scan error",
                          rc == WD_EINVAL ? "not_json" : "scan_error"))
            return WD_REJECT;
        publish(x, gs);
        return WD_CONTINUE;
    }
    publish(x, gs);
    return WD_CONTINUE;
}

static void guard_on_done(wd_exchange_t *x)
{
    guard_state_t *gs = x->guard;
    if (!gs) return;
    if (gs->profile) {
        if (gs->out_tally.n || gs->fail_open) {
            /* decisions made after the head was sent (streams) still reach the event */
            char keep[96];
            snprintf(keep, sizeof keep, "%s", x->ev.rule);
            publish(x, gs);
            if (gs->fail_open && !keep[0]) wd_event_copy(x->ev.rule, sizeof x->ev.rule, "fail-open", 9);
        }
    }
    if (gs->chans) {
        for (size_t i = 0; i < MAX_CHANS; i++)
            if (gs->chans[i].used) chan_free(&gs->chans[i]);
        free(gs->chans);
    }
    for (size_t i = gs->qhead; i < gs->qhead + gs->qlen; i++) qev_free(&gs->q[i]);
    free(gs->q);
    wd_vault_free(&gs->vault);
    scrub(&gs->body);
    free(gs->entitled);
    free(gs);
    x->guard = NULL;
}

const wd_stage_t wd_stage_guard = {"guard", guard_on_request, NULL, guard_on_response_data, guard_on_done};

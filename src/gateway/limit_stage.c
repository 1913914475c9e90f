/* The `limit` stage: builds a request's limit scopes (its principal, shared role pools, its client
 * address), reserves its estimated tokens and a concurrency slot before the model is called, answers
 * 429 with Retry-After when a limit says no, and reconciles real usage when the exchange ends.
 * The arithmetic lives in src/limit; this file only maps requests onto it. */
#include <stdio.h>
#include <stdlib.h>

#include "gateway/gateway.h"
#include "limit/estimate.h"

static wd_limiter_t *g_limiter;

void wd_gateway_set_limiter(wd_limiter_t *l) { g_limiter = l; }

static wd_gw_worker_t *gw(wd_worker_t *w) { return w->app; }

static int64_t now_ns(void) { return (int64_t)wd_wall_ms() * 1000000; }

/* Field-wise union of grants: a role without a limit of some kind leaves that kind unlimited. */
static void widen(wd_limits_t *acc, const wd_limits_t *r, bool first)
{
#define W(f) acc->f = first ? r->f : (acc->f == 0 || r->f == 0) ? 0 : WD_MAX(acc->f, r->f)
    W(rpm);
    W(tpm);
    W(concurrent);
    W(tokens_per_day);
    W(tokens_per_month);
#undef W
}

static void narrow(wd_limits_t *acc, const wd_limits_t *k)
{
#define N(f) acc->f = k->f == 0 ? acc->f : acc->f == 0 ? k->f : WD_MIN(acc->f, k->f)
    N(rpm);
    N(tpm);
    N(concurrent);
    N(tokens_per_day);
    N(tokens_per_month);
#undef N
}

static bool any_limit(const wd_limits_t *l)
{
    return l->rpm || l->tpm || l->concurrent || l->tokens_per_day || l->tokens_per_month;
}

/* Metric label of a scope key: key:, user:, role:, ip: (tokens minted from a key count as key). */
enum { KIND_KEY, KIND_USER, KIND_ROLE, KIND_IP };

static void add_scope(wd_exchange_t *x, uint8_t kind, const char *prefix, size_t plen, const char *id,
                      const wd_limits_t *lim)
{
    if (!any_limit(lim) || x->nlimit_scopes == WD_LIMIT_MAX_SCOPES) return;
    wd_limit_scope_t *s = &x->limit_scopes[x->nlimit_scopes++];
    wd_limit_scope_set(s, prefix, plen, id, strlen(id), lim);
    s->kind = kind;
}

static void build_scopes(wd_exchange_t *x)
{
    const wd_config_t *cfg = x->cfg;
    x->nlimit_scopes = 0;
    if (x->authenticated) {
        wd_limits_t mine;
        bool first = true, unlimited_role = false;
        memset(&mine, 0, sizeof mine);
        for (size_t i = 0; i < x->principal.nroles; i++) {
            const wd_role_t *r = wd_policy_role(cfg->roles, cfg->nroles, x->principal.roles[i]);
            if (!r) continue;
            if (r->limits_shared) {
                add_scope(x, KIND_ROLE, "role:", 5, r->name, &r->limits);
                continue;
            }
            if (!any_limit(&r->limits)) unlimited_role = true;
            widen(&mine, &r->limits, first);
            first = false;
        }
        if (unlimited_role) memset(&mine, 0, sizeof mine);
        /* a key narrows its roles' limits (never widens them); tokens minted from a key share that
         * key's limits and scope name */
        const wd_authkey_t *k = x->key;
        if (!k && strncmp(x->ev.principal, "key:", 4) == 0)
            k = wd_authdb_key(x->authdb, x->ev.principal + 4, strlen(x->ev.principal + 4));
        if (k) narrow(&mine, &k->limits);
        add_scope(x, strncmp(x->ev.principal, "user:", 5) == 0 ? KIND_USER : KIND_KEY, "", 0, x->ev.principal,
                  &mine);
    }
    add_scope(x, KIND_IP, "ip:", 3, x->ev.client_ip, &cfg->rate.per_ip);
}

/* The reservation: prompt size from the body (about 4 bytes a token) plus the completion the request
 * allows (max_tokens / max_completion_tokens, or rate_limits.default_max_tokens). */
static int64_t estimate_tokens(wd_exchange_t *x)
{
    if (!x->route->json_body) return 0;
    x->prompt_estimate = (int64_t)(x->body->len + 3) / 4;
    if (x->route->id == WD_ROUTE_EMBEDDINGS) return x->prompt_estimate;
    int64_t completion = x->cfg->rate.default_max_tokens, v;
    const char *keys[] = {"max_completion_tokens", "max_tokens"};
    for (size_t i = 0; i < 2; i++) {
        int t = wd_json_obj_get(&x->doc, 0, keys[i]);
        if (t >= 0 && wd_json_int(&x->doc, t, &v) == WD_OK && v >= 0) {
            completion = v;
            break;
        }
    }
    return x->prompt_estimate + completion;
}

/* Applies a decision; returns the stage result. */
static wd_stage_rc_t apply(wd_exchange_t *x, const wd_limit_decision_t *d)
{
    wd_gw_worker_t *g = gw(x->w);
    size_t o = d->outcome < 6 ? (size_t)d->outcome : 5;
    for (size_t i = 0; i < x->nlimit_scopes; i++) {
        /* a refusal counts for the scope that refused; an admission for every scope checked */
        if (d->outcome != WD_LIMIT_OK && d->scope >= 0 && (size_t)d->scope != i) continue;
        WD_METRIC_ADD(g->metrics.limit_decisions[x->limit_scopes[i].kind][o], 1);
    }
    /* OpenAI's rate-limit headers, so SDK retry logic and dashboards work unchanged */
    x->limit_headers_len = (uint16_t)wd_limit_headers(d, x->limit_headers);
    if (d->outcome == WD_LIMIT_OK) {
        x->limit_admitted = true;
        return WD_CONTINUE;
    }
    if (d->outcome == WD_LIMIT_UNAVAILABLE) {
        if (x->cfg->rate.fail && strcmp(x->cfg->rate.fail, "open") == 0) {
            snprintf(x->ev.rule, sizeof x->ev.rule, "limit:fail-open");
            /* nothing was reserved and no slot taken; what it uses is charged when it ends */
            x->limit_fail_open = true;
            return WD_CONTINUE;
        }
        wd_exchange_reject(x, 503, "limits_unavailable",
                           "the rate-limit backend is unreachable and rate_limits.fail is closed", "limit:fail-closed");
        snprintf(x->retry_after, sizeof x->retry_after, "1");
        return WD_REJECT;
    }
    const wd_limit_scope_t *s = d->scope >= 0 && (size_t)d->scope < x->nlimit_scopes ? &x->limit_scopes[d->scope] : NULL;
    static const char *const kind[] = {"", "rpm", "tpm", "concurrent", "budget", ""};
    char reason[WD_LIMIT_KEY_MAX + 160], rule[WD_LIMIT_KEY_MAX + 32];
    snprintf(rule, sizeof rule, "limit:%s:%s", s ? s->key : "?", kind[d->outcome]);
    switch (d->outcome) {
    case WD_LIMIT_REQUESTS:
        snprintf(reason, sizeof reason, "Rate limit reached for %s: %u requests per minute", s ? s->key : "?",
                 s ? s->lim.rpm : 0);
        break;
    case WD_LIMIT_TOKENS:
        snprintf(reason, sizeof reason,
                 "Token rate limit reached for %s: %u tokens per minute; this request reserves %lld",
                 s ? s->key : "?", s ? s->lim.tpm : 0, (long long)x->limit_reserved);
        break;
    case WD_LIMIT_CONCURRENCY:
        snprintf(reason, sizeof reason, "Too many requests in flight for %s (limit %u)", s ? s->key : "?",
                 s ? s->lim.concurrent : 0);
        break;
    default:
        snprintf(reason, sizeof reason, "Token budget exhausted for %s", s ? s->key : "?");
    }
    wd_exchange_reject(x, 429, wd_limit_code(d->outcome), reason, rule);
    if (d->retry_after_ms < 0) {
        /* this request can never pass (it asks for more than the whole limit): retrying is pointless,
         * so no Retry-After; the reason says why */
        size_t l = strlen(x->ev.reason);
        snprintf(x->ev.reason + l, sizeof x->ev.reason - l, " (this request exceeds the limit itself)");
        return WD_REJECT;
    }
    int64_t ms = WD_MIN(WD_MAX(d->retry_after_ms, 1), (int64_t)86400000 * 366); /* at most a year */
    snprintf(x->retry_after, sizeof x->retry_after, "%lld", (long long)((ms + 999) / 1000));
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)ms);
    wd_exchange_add_header(x, "retry-after-ms", v);
    return WD_REJECT;
}

static void on_redis_decision(void *ud, const wd_limit_decision_t *d)
{
    wd_exchange_t *x = ud;
    x->work_pending = false;
    if (x->aborted) { /* the client left while Redis decided */
        if (d->outcome == WD_LIMIT_OK) x->limit_admitted = true; /* on_done releases the reservation */
        wd_gw_complete(x);
        return;
    }
    if (apply(x, d) == WD_CONTINUE) wd_exchange_resume(x);
    else wd_gw_reject_now(x);
}

static wd_stage_rc_t limit_on_request(wd_exchange_t *x)
{
    build_scopes(x);
    if (!x->nlimit_scopes) return WD_CONTINUE;
    x->limit_reserved = estimate_tokens(x);
    /* the body is parsed now; by the end the guard may have replaced it */
    if (x->route->json_body) x->prompt_text_tokens = wd_limit_prompt_tokens(&x->doc);
    wd_gw_worker_t *g = gw(x->w);
    if (g->redis) {
        /* one atomic script in Redis decides for every scope; the loop goes on meanwhile */
        x->limit_redis = true;
        x->work_pending = true;
        if (wd_limit_redis_admit(g->redis, x->limit_scopes, x->nlimit_scopes, x->limit_reserved, on_redis_decision,
                                 x) == WD_OK)
            return WD_PAUSE;
        x->work_pending = false;
        wd_limit_decision_t u = {.outcome = WD_LIMIT_UNAVAILABLE, .scope = -1, .limit_requests = -1, .limit_tokens = -1};
        return apply(x, &u);
    }
    wd_limit_decision_t d;
    wd_limiter_admit(g_limiter, x->limit_scopes, x->nlimit_scopes, x->limit_reserved, now_ns(), &d);
    return apply(x, &d);
}

/* The answer's text, measured as it passes (before the guard rewrites it), in case the upstream
 * reports no usage: only for requests a limit applies to, and not once usage is known. */
static wd_stage_rc_t limit_on_response_data(wd_exchange_t *x, wd_buf_t *chunk)
{
    if ((!x->limit_admitted && !x->limit_fail_open) || x->route->id == WD_ROUTE_EMBEDDINGS)
        return WD_CONTINUE;
    if (x->ev.usage_reported || !chunk->len) return WD_CONTINUE;
    int64_t n;
    if (x->streaming) {
        wd_buf_t scratch;
        wd_buf_init(&scratch, 0);
        n = wd_limit_sse_answer_bytes(chunk->data, chunk->len, &scratch);
        wd_buf_free(&scratch);
    } else {
        n = wd_limit_answer_bytes(chunk->data, chunk->len);
        if (n < 0) n = x->resp_status >= 400 ? 0 : (int64_t)chunk->len; /* not JSON: charge it whole */
    }
    x->answer_text_bytes += (uint64_t)n;
    return WD_CONTINUE;
}

static void limit_on_done(wd_exchange_t *x)
{
    if (!x->limit_admitted && !x->limit_fail_open) return;
    wd_event_t *e = &x->ev;
    int64_t actual = 0;
    if (!x->t_up_start) {
        /* never reached the model: nothing was used */
    } else if (e->usage_reported) {
        actual = WD_MAX(e->prompt_tokens, 0) + WD_MAX(e->completion_tokens, 0);
    } else {
        /* no usage from the upstream: estimate from the text and say so in the event ("reported": false) */
        e->prompt_tokens = x->prompt_text_tokens;
        e->completion_tokens = wd_limit_tokens_of_bytes(x->answer_text_bytes);
        actual = e->prompt_tokens + e->completion_tokens;
    }
    wd_gw_worker_t *g = gw(x->w);
    if (x->limit_fail_open) {
        /* never admitted: charge what it used as plain usage, if the backend can take it now (fire
         * and forget: the response is already on its way) */
        if (actual <= 0) return;
        if (x->limit_redis) {
            if (g->redis) wd_limit_redis_charge(g->redis, x->limit_scopes, x->nlimit_scopes, actual);
        } else {
            wd_limiter_charge(g_limiter, x->limit_scopes, x->nlimit_scopes, actual, now_ns());
        }
        return;
    }
    if (x->limit_redis) {
        if (g->redis) wd_limit_redis_finish(g->redis, x->limit_scopes, x->nlimit_scopes, x->limit_reserved, actual);
    } else {
        wd_limiter_finish(g_limiter, x->limit_scopes, x->nlimit_scopes, x->limit_reserved, actual, now_ns());
    }
}

const wd_stage_t wd_stage_limit = {"limit", limit_on_request, NULL, limit_on_response_data, limit_on_done};

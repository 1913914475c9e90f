/* The admin listener: health, readiness and Prometheus metrics. It runs on the main thread's loop,
 * never on a worker, so a slow scrape cannot delay client traffic. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "audit/admin_event.h"
#include "auth/keyops.h"
#include "gateway/gateway.h"


static void reply(wd_conn_t *c, int status, const char *ctype, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                     status, wd_http_status_text(status), ctype, len, c->keep_alive ? "" : "Connection: close\r\n");
    wd_conn_write(c, head, (size_t)n);
    if (len) wd_conn_write(c, body, len);
    wd_conn_finish(c, true);
}

static void admin_api(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body, wd_admin_ctx_t *ctx);

/* With rate_limits.fail: closed every request fails while a worker's Redis connection is down, so
 * the replica is not ready then (a load balancer sends traffic elsewhere); with fail: open it still
 * serves. The reason is the limiter's last error, which never holds the URL's password. */
static bool limits_ready(wd_conn_t *c, const wd_admin_ctx_t *ctx, char *why, size_t cap)
{
    const wd_config_t *cfg = c->w->cfg;
    if (!cfg || (cfg->rate.fail && strcmp(cfg->rate.fail, "open") == 0)) return true;
    for (size_t i = 0; i < ctx->nworkers; i++) {
        const wd_gw_worker_t *g = ctx->workers[i]->app;
        if (g->redis && !wd_limit_redis_healthy(g->redis, why, cap)) return false;
    }
    return true;
}

static void reply_not_ready(wd_conn_t *c, const char *why)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_buf_append_str(&b, "{\"status\":\"not_ready\",\"reason\":\"rate-limit backend unavailable (rate_limits.fail "
                          "is closed): ");
    wd_buf_append_json_str(&b, why, strlen(why));
    wd_buf_append_str(&b, "\"}");
    reply(c, 503, "application/json", b.data, b.len);
    wd_buf_free(&b);
}

static void admin_request(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body)
{
    wd_admin_ctx_t *ctx = c->hud;
    static const char json[] = "application/json";
    if (req->path.len > 10 && memcmp(req->path.p, "/admin/v1/", 10) == 0) {
        admin_api(c, req, body, ctx);
        return;
    }
    if (req->method != WD_HTTP_GET) {
        static const char m[] = "{\"error\":{\"message\":\"only GET is allowed here\",\"type\":\"invalid_request_error\","
                                "\"param\":null,\"code\":\"method_not_allowed\"}}";
        reply(c, 405, json, m, sizeof m - 1);
        return;
    }
    if (wd_str_eq(req->path, WD_STR("/healthz"))) {
        static const char ok[] = "{\"status\":\"ok\"}";
        reply(c, 200, json, ok, sizeof ok - 1);
    } else if (wd_str_eq(req->path, WD_STR("/readyz"))) {
        static const char ok[] = "{\"status\":\"ready\"}", no[] = "{\"status\":\"draining\"}";
        char why[200];
        if (ctx->draining) reply(c, 503, json, no, sizeof no - 1);
        else if (!limits_ready(c, ctx, why, sizeof why)) reply_not_ready(c, why);
        else reply(c, 200, json, ok, sizeof ok - 1);
    } else if (wd_str_eq(req->path, WD_STR("/metrics"))) {
        wd_metrics_t *ms[256];
        size_t n = WD_MIN(ctx->nworkers, WD_ARRAY_LEN(ms));
        for (size_t i = 0; i < n; i++) ms[i] = &((wd_gw_worker_t *)ctx->workers[i]->app)->metrics;
        wd_metrics_info_t info = {.active_connections = wd_server_connections(),
                                  .inflight = wd_gateway_inflight(),
                                  .config_reloads = ctx->reloads,
                                  .config_reload_failures = ctx->reload_failures};
        for (size_t r = 0; r < WD_ROUTE__COUNT && r < WD_METRICS_ROUTES; r++) info.route_names[r] = wd_routes[r].name;
        for (int s = WD_UP_ECONNECT; s <= WD_UP_ETLS; s++) info.upstream_error_names[s] = wd_up_status_text(s);
        static const char *const outcomes[] = {"allowed", "rate_limit_exceeded", "tokens_exceeded",
                                               "concurrency_exceeded", "budget_exceeded", "unavailable"};
        for (size_t i = 0; i < 6; i++) info.limit_outcome_names[i] = outcomes[i];
        static const char *const scopes[] = {"key", "user", "role", "ip"};
        for (size_t i = 0; i < 4; i++) info.limit_scope_names[i] = scopes[i];
        for (size_t i = 0; i < n; i++) {
            const wd_gw_worker_t *g = ctx->workers[i]->app;
            if (!g->redis) continue;
            const wd_limit_redis_stats_t *rs = wd_limit_redis_stats(g->redis);
            info.redis_decisions += __atomic_load_n(&rs->decisions, __ATOMIC_RELAXED);
            info.redis_errors += __atomic_load_n(&rs->errors, __ATOMIC_RELAXED);
            info.redis_timeouts += __atomic_load_n(&rs->timeouts, __ATOMIC_RELAXED);
            info.redis_reconnects += __atomic_load_n(&rs->reconnects, __ATOMIC_RELAXED);
            info.redis_latency_ns_sum += __atomic_load_n(&rs->latency_ns_sum, __ATOMIC_RELAXED);
            info.redis_latency_count += __atomic_load_n(&rs->latency_count, __ATOMIC_RELAXED);
        }
        wd_buf_t out;
        wd_buf_init(&out, 0);
        if (wd_metrics_render(ms, n, &info, &out) == WD_OK)
            reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
        else
            reply(c, 500, "text/plain", "out of memory\n", 14);
        wd_buf_free(&out);
    } else {
        static const char nf[] = "{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\","
                                 "\"param\":null,\"code\":\"unknown_url\"}}";
        reply(c, 404, json, nf, sizeof nf - 1);
    }
}

static void admin_bad(wd_conn_t *c, int status, const char *reason)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_gw_error_json(&b, "invalid_request_error", "invalid_request", reason, NULL);
    reply(c, status, "application/json", b.data, b.len);
    wd_buf_free(&b);
}

const wd_handler_t wd_admin_handler = {admin_request, NULL, NULL, admin_bad};

/* ---- admin API: /admin/v1/... ---------------------------------------------------------------------- */

static void reply_json(wd_conn_t *c, int status, json_t *v)
{
    char *txt = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!txt) {
        reply(c, 500, "application/json", "{}", 2);
        return;
    }
    reply(c, status, "application/json", txt, strlen(txt));
    sodium_memzero(txt, strlen(txt)); /* may hold a new key */
    free(txt);
}

static void reply_error(wd_conn_t *c, int status, const char *code, const char *msg)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_gw_error_json(&b, status == 401 ? "authentication_error" : status == 403 ? "permission_error"
                         : status == 404 ? "not_found_error" : "invalid_request_error",
                     code, msg, NULL);
    reply(c, status, "application/json", b.data, b.len);
    wd_buf_free(&b);
}

/* Every admin-API request that gets past parsing is recorded, reads and refusals included, in the
 * configured sink. What an authenticated principal does also goes to the state directory's admin log
 * (whatever the audit sink), which is fsync'd per line: refused authentication is left out of it, so
 * that an anonymous caller cannot make the admin loop fsync at will. */
static void record(wd_admin_ctx_t *ctx, bool authenticated, const char *actor, const char *action, const char *target,
                   bool ok, const char *detail)
{
    const char *outcome = ok ? "ok" : "failed";
    if (authenticated) {
        wd_buf_t line;
        wd_buf_init(&line, 256);
        char err[256] = "out of memory";
        if (wd_event_admin_to_json(wd_wall_ms(), actor, action, target, outcome, detail, &line) != WD_OK ||
            wd_store_admin_log_append(ctx->store->dir, line.data, line.len, err, sizeof err) != WD_OK)
            wd_log(WD_LOG_ERROR, "admin log: could not record %s: %s", action, err);
        wd_buf_free(&line);
    }
    wd_event_admin(&ctx->events, actor, action, target, outcome, detail);
    wd_event_flush(&ctx->events);
}

static void audit(wd_admin_ctx_t *ctx, const char *actor, const char *action, const char *target, bool ok,
                  const char *detail)
{
    record(ctx, true, actor, action, target, ok, detail);
}

static json_t *json_text(const char *text)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *time_or_null(int64_t t)
{
    if (!t) return json_null();
    char b[32];
    wd_time_iso(t, b);
    return json_string(b);
}

static int key_to_json(void *ud, const wd_key_rec_t *k)
{
    json_array_append_new(ud, json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "id", k->id, "name", k->name,
                                        "roles", json_text(k->roles), "models", json_text(k->models), "ips",
                                        json_text(k->ips), "limits", json_text(k->limits), "created_at", time_or_null(k->created_at), "expires_at",
                                        time_or_null(k->expires_at), "revoked_at", time_or_null(k->revoked_at),
                                        "grace_until", time_or_null(k->rotated_to[0] ? k->grace_until : 0),
                                        "last_used_at", time_or_null(k->last_used_at)));
    return 0;
}

static int user_to_json(void *ud, const wd_user_rec_t *u)
{
    json_array_append_new(ud, json_pack("{s:s,s:o,s:b,s:o,s:o}", "name", u->name, "roles", json_text(u->roles),
                                        "mfa", u->mfa_enabled, "locked_until", time_or_null(u->locked_until),
                                        "disabled_at", time_or_null(u->disabled_at)));
    return 0;
}

/* A JSON array of non-empty strings, re-serialised compactly (NULL when absent). */
static int string_list(json_t *body, const char *key, char **out, bool required, const char **why)
{
    *out = NULL;
    json_t *a = json_object_get(body, key);
    if (!a) return required ? (*why = "is required", WD_EINVAL) : WD_OK;
    if (!json_is_array(a) || !json_array_size(a) || json_array_size(a) > 64) return *why = "must be a non-empty list of strings", WD_EINVAL;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (!json_is_string(v) || !json_string_length(v)) return *why = "must contain strings", WD_EINVAL;
    *out = json_dumps(a, JSON_COMPACT);
    return *out ? WD_OK : WD_ENOMEM;
}

static void keys_create(wd_conn_t *c, json_t *body, wd_admin_ctx_t *ctx, const char *actor)
{
    const wd_config_t *cfg = c->w->cfg;
    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    const char *why = NULL, *field = NULL;
    json_t *name = json_object_get(body, "name"), *ttl = json_object_get(body, "ttl");
    char msg[200];
    if (!json_is_string(name) || !json_string_length(name) || json_string_length(name) >= sizeof k.name)
        field = "name", why = "must be a non-empty string";
    else if (string_list(body, "roles", &k.roles, true, &why)) field = "roles";
    else if (string_list(body, "models", &k.models, false, &why)) field = "models";
    else if (string_list(body, "ips", &k.ips, false, &why)) field = "ips";
    int64_t ttl_s = 0;
    if (!field && ttl && (!json_is_string(ttl) || wd_parse_ttl(json_string_value(ttl), &ttl_s)))
        field = "ttl", why = "must be a duration like 30d, 12h or 15m";
    json_t *lim = json_object_get(body, "limits");
    wd_limits_t parsed;
    if (!field && lim) {
        k.limits = json_dumps(lim, JSON_COMPACT | JSON_SORT_KEYS);
        if (!json_is_object(lim) || !k.limits || wd_limits_from_json(k.limits, &parsed) != WD_OK)
            field = "limits", why = "must be an object of rpm, tpm, concurrent, tokens_per_day, tokens_per_month";
    }
    if (!field) {
        json_t *roles = json_loads(k.roles, 0, NULL), *v;
        size_t i;
        json_array_foreach(roles, i, v) if (!wd_policy_role(cfg->roles, cfg->nroles, json_string_value(v)))
        {
            field = "roles";
            why = "names a role that is not configured";
        }
        json_decref(roles);
        json_t *ips = k.ips ? json_loads(k.ips, 0, NULL) : NULL;
        json_array_foreach(ips, i, v)
        {
            wd_cidr_t cidr;
            if (wd_cidr_parse(json_string_value(v), json_string_length(v), &cidr, NULL, 0))
                field = "ips", why = "must contain address ranges like 10.0.0.0/8";
        }
        json_decref(ips);
    }
    if (field) {
        snprintf(msg, sizeof msg, "%s %s", field, why);
        char detail[64];
        snprintf(detail, sizeof detail, "invalid_request: %s", field);
        audit(ctx, actor, "key.create", "-", false, detail);
        reply_error(c, 400, "invalid_request", msg);
    } else {
        snprintf(k.name, sizeof k.name, "%s", json_string_value(name));
        k.created_at = (int64_t)(wd_wall_ms() / 1000);
        k.expires_at = ttl_s ? k.created_at + ttl_s : 0;
        char key[WD_APIKEY_MAX], err[256];
        if (wd_keyops_create(ctx->store, &k, key, err, sizeof err) != WD_OK) {
            audit(ctx, actor, "key.create", k.name, false, "internal_error");
            reply_error(c, 500, "internal_error", err);
        } else {
            audit(ctx, actor, "key.create", k.id, true, NULL);
            ctx->changed(ctx->changed_ud);
            reply_json(c, 201, json_pack("{s:s,s:s,s:o}", "id", k.id, "key", key, "expires_at",
                                         time_or_null(k.expires_at)));
            sodium_memzero(key, sizeof key);
        }
    }
    wd_key_rec_free(&k);
}

static void key_action(wd_conn_t *c, const char *id, const char *action, json_t *body, wd_admin_ctx_t *ctx,
                       const char *actor)
{
    char err[256], act[32];
    snprintf(act, sizeof act, "key.%s", action);
    int64_t now = (int64_t)(wd_wall_ms() / 1000);
    if (!strcmp(action, "revoke")) {
        if (wd_store_key_revoke(ctx->store, id, now, err, sizeof err) != WD_OK) {
            audit(ctx, actor, act, id, false, "not_found");
            reply_error(c, 404, "not_found", "unknown or already revoked key");
            return;
        }
        audit(ctx, actor, act, id, true, NULL);
        ctx->changed(ctx->changed_ud);
        reply_json(c, 200, json_pack("{s:s,s:b}", "id", id, "revoked", 1));
        return;
    }
    /* rotate */
    int64_t grace = 86400;
    json_t *g = body ? json_object_get(body, "grace") : NULL;
    if (g && (!json_is_string(g) || wd_parse_ttl(json_string_value(g), &grace) || grace > 30 * 86400)) {
        audit(ctx, actor, act, id, false, "invalid_request: grace");
        reply_error(c, 400, "invalid_request", "grace must be a duration like 24h (at most 30d)");
        return;
    }
    wd_key_rec_t k, nk;
    if (wd_store_key_get(ctx->store, id, &k) != WD_OK) {
        audit(ctx, actor, act, id, false, "not_found");
        reply_error(c, 404, "not_found", "unknown key");
        return;
    }
    char key[WD_APIKEY_MAX];
    if (k.revoked_at || k.rotated_to[0] || (k.expires_at && k.expires_at <= now)) {
        audit(ctx, actor, act, id, false, "not_active");
        reply_error(c, 409, "not_active", "only an active key can be rotated");
    } else if (wd_keyops_rotate(ctx->store, &k, now, grace, &nk, key, err, sizeof err) != WD_OK) {
        audit(ctx, actor, act, id, false, "internal_error");
        reply_error(c, 500, "internal_error", err);
    } else {
        char detail[64];
        snprintf(detail, sizeof detail, "new key %s", nk.id);
        audit(ctx, actor, act, id, true, detail);
        ctx->changed(ctx->changed_ud);
        reply_json(c, 201, json_pack("{s:s,s:s,s:s,s:o}", "id", nk.id, "key", key, "old_id", id, "grace_until",
                                     time_or_null(now + grace)));
        sodium_memzero(key, sizeof key);
    }
    wd_key_rec_free(&k);
}

/* Splits "/admin/v1/<a>/<b>/<c>" into up to three segments (views into the path). */
static size_t segments(wd_str_t path, wd_str_t seg[3])
{
    size_t n = 0, i = 10;
    while (i < path.len && n < 3) {
        size_t j = i;
        while (j < path.len && path.p[j] != '/') j++;
        seg[n++] = wd_str(path.p + i, j - i);
        i = j + 1;
    }
    return i < path.len ? 4 : n; /* 4: too many segments */
}

static bool seg_is(wd_str_t s, const char *z) { return wd_str_eq(s, wd_strz(z)); }

static void admin_api(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body, wd_admin_ctx_t *ctx)
{
    if (!ctx->store) {
        reply_error(c, 404, "unknown_url", "authentication is not enabled on this gateway (auth.mode: none)");
        return;
    }
    const wd_http_header_t *h = wd_http_header(req, "authorization");
    if (!h || h->value.len < 8 || !wd_str_ieq(wd_str(h->value.p, 7), WD_STR("Bearer "))) {
        record(ctx, false, "unknown", "admin.auth", "-", false, "missing_token");
        reply_error(c, 401, "missing_token", "send an admin token as 'Authorization: Bearer <token>'");
        return;
    }
    const wd_authdb_t *db = *ctx->authdb;
    wd_claims_t cl;
    const char *code;
    char reason[200];
    int64_t now = (int64_t)(wd_wall_ms() / 1000);
    if (wd_token_verify(db->sign_pk, db->kid, h->value.p + 7, h->value.len - 7, now, &cl, &code, reason,
                        sizeof reason) != WD_OK) {
        record(ctx, false, "unknown", "admin.auth", "-", false, code);
        reply_error(c, 401, code, reason);
        return;
    }
    if (wd_authdb_check_claims(db, &cl, now, &code, reason, sizeof reason) != WD_OK) {
        record(ctx, false, cl.sub, "admin.auth", "-", false, code);
        reply_error(c, 401, code, reason);
        wd_claims_free(&cl);
        return;
    }
    const wd_config_t *cfg = c->w->cfg;
    wd_principal_t p = {"token", cl.sub, (const char *const *)cl.roles, cl.nroles, cl.mfa, NULL, 0, NULL, 0};
    bool admin = wd_policy_is_admin(cfg->roles, cfg->nroles, &p, c->peer);
    wd_str_t seg[3];
    size_t n = segments(req->path, seg);
    bool get = req->method == WD_HTTP_GET, post = req->method == WD_HTTP_POST;
    json_t *jb = NULL;
    if (post && body->len) {
        jb = json_loadb(body->data, body->len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(jb)) {
            json_decref(jb);
            audit(ctx, cl.sub, "admin.request", "-", false, "invalid_json");
            reply_error(c, 400, "invalid_json", "the body must be a JSON object");
            wd_claims_free(&cl);
            return;
        }
    }
    char target[160];
    if (n == 1 && seg_is(seg[0], "whoami") && get) {
        json_t *roles = json_array();
        for (size_t i = 0; i < cl.nroles; i++) json_array_append_new(roles, json_string(cl.roles[i]));
        audit(ctx, cl.sub, "admin.whoami", cl.sub, true, admin ? "admin" : "not admin");
        reply_json(c, 200, json_pack("{s:s,s:o,s:b,s:b,s:o}", "principal", cl.sub, "roles", roles, "mfa", cl.mfa,
                                     "admin", admin, "expires_at", time_or_null(cl.exp)));
    } else if (!admin) {
        audit(ctx, cl.sub, "admin.auth", "-", false, "admin_required");
        reply_error(c, 403, "admin_required",
                    "the admin API needs a token of a role with admin: true, obtained with multi-factor authentication");
    } else if (n == 1 && seg_is(seg[0], "keys") && get) {
        json_t *a = json_array();
        bool ok = wd_store_key_each(ctx->store, key_to_json, a) == WD_OK;
        char detail[32];
        snprintf(detail, sizeof detail, "%zu keys", json_array_size(a));
        audit(ctx, cl.sub, "key.list", "-", ok, detail);
        reply_json(c, 200, json_pack("{s:o}", "keys", a));
    } else if (n == 1 && seg_is(seg[0], "keys") && post) {
        keys_create(c, jb ? jb : json_object(), ctx, cl.sub);
    } else if (n == 3 && seg_is(seg[0], "keys") && post && (seg_is(seg[2], "revoke") || seg_is(seg[2], "rotate")) &&
               seg[1].len && seg[1].len < 16) {
        snprintf(target, sizeof target, "%.*s", (int)seg[1].len, seg[1].p);
        char action[8];
        snprintf(action, sizeof action, "%.*s", (int)seg[2].len, seg[2].p);
        key_action(c, target, action, jb, ctx, cl.sub);
    } else if (n == 1 && seg_is(seg[0], "users") && get) {
        json_t *a = json_array();
        bool ok = wd_store_user_each(ctx->store, user_to_json, a) == WD_OK;
        char detail[32];
        snprintf(detail, sizeof detail, "%zu users", json_array_size(a));
        audit(ctx, cl.sub, "user.list", "-", ok, detail);
        reply_json(c, 200, json_pack("{s:o}", "users", a));
    } else if (n == 3 && seg_is(seg[0], "users") && seg_is(seg[2], "disable") && post && seg[1].len &&
               seg[1].len < 128) {
        snprintf(target, sizeof target, "%.*s", (int)seg[1].len, seg[1].p);
        char err[256];
        bool ok = wd_store_user_disable(ctx->store, target, now, err, sizeof err) == WD_OK;
        audit(ctx, cl.sub, "user.disable", target, ok, ok ? NULL : "not_found");
        if (ok) {
            ctx->changed(ctx->changed_ud);
            reply_json(c, 200, json_pack("{s:s,s:b}", "name", target, "disabled", 1));
        } else {
            reply_error(c, 404, "not_found", "unknown or already disabled user");
        }
    } else if (n == 3 && seg_is(seg[0], "tokens") && seg_is(seg[2], "revoke") && post && seg[1].len &&
               seg[1].len < 48) {
        snprintf(target, sizeof target, "%.*s", (int)seg[1].len, seg[1].p);
        char err[256];
        /* kept until the longest possible token lifetime has passed */
        bool ok = wd_store_token_revoke(ctx->store, target, now + cfg->auth.token_max_ttl_ms / 1000, err,
                                        sizeof err) == WD_OK;
        audit(ctx, cl.sub, "token.revoke", target, ok, ok ? NULL : "internal_error");
        if (ok) ctx->changed(ctx->changed_ud);
        if (ok) reply_json(c, 200, json_pack("{s:s,s:b}", "jti", target, "revoked", 1));
        else reply_error(c, 500, "internal_error", err);
    } else {
        audit(ctx, cl.sub, "admin.request", "-", false, "unknown_url");
        reply_error(c, 404, "unknown_url", "no such admin API endpoint or method");
    }
    json_decref(jb);
    wd_claims_free(&cl);
}

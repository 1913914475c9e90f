/* Identity in the request path: the `authenticate` stage (API key or PASETO token from
 * `Authorization: Bearer`, checked against the in-memory snapshot), the `authorize` stage (RBAC
 * from src/policy), and POST /v1/auth/token (password + TOTP -> token), whose argon2id and database
 * work runs on libuv's thread pool so the event loop never waits for it. */
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "auth/recovery.h"
#include "auth/secret.h"
#include "auth/totp.h"
#include "gateway/gateway.h"

static wd_store_t *g_store;

void wd_gateway_set_store(wd_store_t *s) { g_store = s; }
wd_store_t *wd_gateway_store(void) { return g_store; }

static wd_gw_worker_t *gw(wd_worker_t *w) { return w->app; }

void wd_gateway_set_authdb(wd_worker_t *w, wd_authdb_t *db)
{
    wd_gw_worker_t *g = gw(w);
    wd_authdb_t *old = g->authdb;
    g->authdb = wd_authdb_ref(db);
    wd_authdb_unref(old);
}

static int64_t now_s(void) { return (int64_t)(wd_wall_ms() / 1000); }

static wd_stage_rc_t unauthorized(wd_exchange_t *x, const char *code, const char *reason)
{
    wd_exchange_reject(x, 401, code, reason, "authenticate");
    wd_exchange_add_header(x, "WWW-Authenticate", "Bearer realm=\"warden\"");
    return WD_REJECT;
}

/* Copies verified claims (the cache slot may be reused while this request is in flight). */
static int claims_copy(wd_claims_t *dst, const wd_claims_t *src)
{
    *dst = *src;
    dst->roles = dst->models = NULL;
    dst->nroles = dst->nmodels = 0;
    if (!(dst->roles = calloc(src->nroles ? src->nroles : 1, sizeof *dst->roles))) return WD_ENOMEM;
    for (; dst->nroles < src->nroles; dst->nroles++)
        if (!(dst->roles[dst->nroles] = strdup(src->roles[dst->nroles]))) return WD_ENOMEM;
    if (src->models) {
        if (!(dst->models = calloc(src->nmodels ? src->nmodels : 1, sizeof *dst->models))) return WD_ENOMEM;
        for (; dst->nmodels < src->nmodels; dst->nmodels++)
            if (!(dst->models[dst->nmodels] = strdup(src->models[dst->nmodels]))) return WD_ENOMEM;
    }
    return WD_OK;
}

/* Verified claims for a token, from the worker's cache or by verifying it now. */
static int token_claims(wd_exchange_t *x, const char *tok, size_t len, int64_t now, const char **code, char *reason,
                        size_t rlen)
{
    wd_gw_worker_t *g = gw(x->w);
    uint8_t d[16];
    crypto_generichash(d, sizeof d, (const uint8_t *)tok, len, NULL, 0);
    wd_token_slot_t *slot = &g->tokens[(d[0] | (size_t)d[1] << 8) % WD_TOKEN_CACHE];
    if (!slot->used || memcmp(slot->digest, d, sizeof d) != 0) {
        wd_claims_t c;
        if (wd_token_verify(x->authdb->sign_pk, x->authdb->kid, tok, len, now, &c, code, reason, rlen) != WD_OK)
            return WD_EINVAL;
        if (slot->used) wd_claims_free(&slot->claims);
        slot->claims = c;
        memcpy(slot->digest, d, sizeof d);
        slot->used = true;
    } else if (slot->claims.exp <= now) {
        *code = "expired_token";
        snprintf(reason, rlen, "the token has expired");
        return WD_EINVAL;
    }
    if (claims_copy(&x->claims, &slot->claims) != WD_OK) {
        *code = "internal_error";
        snprintf(reason, rlen, "out of memory");
        return WD_ENOMEM;
    }
    return WD_OK;
}

/* Appends s at dst[used], truncating to cap - 1 bytes; dst stays NUL-terminated. Returns the new length. */
static size_t put(char *dst, size_t cap, size_t used, const char *s)
{
    size_t n = strlen(s);
    if (n > cap - 1 - used) n = cap - 1 - used;
    memcpy(dst + used, s, n);
    dst[used + n] = '\0';
    return used + n;
}

static void set_principal_event(wd_exchange_t *x)
{
    const wd_principal_t *p = &x->principal;
    size_t used = x->key ? put(x->ev.principal, sizeof x->ev.principal, 0, "key:") : 0;
    put(x->ev.principal, sizeof x->ev.principal, used, p->id);
    used = 0;
    for (size_t i = 0; i < p->nroles; i++) {
        if (i) used = put(x->ev.roles, sizeof x->ev.roles, used, ",");
        used = put(x->ev.roles, sizeof x->ev.roles, used, p->roles[i]);
    }
    x->ev.mfa = p->mfa;
}

static wd_stage_rc_t authenticate(wd_exchange_t *x)
{
    if (!wd_config_auth_required(x->cfg) || !x->route->endpoint) return WD_CONTINUE;
    x->authdb = wd_authdb_ref(gw(x->w)->authdb);
    if (!x->authdb) {
        wd_exchange_reject(x, 503, "auth_unavailable", "the identity database is not loaded", "authenticate");
        return WD_REJECT;
    }
    const wd_http_header_t *h = wd_http_header(x->req, "authorization");
    if (!h)
        return unauthorized(x, "missing_api_key",
                            "You didn't provide an API key. Send it as 'Authorization: Bearer <key or token>'.");
    wd_str_t v = h->value;
    if (v.len < 7 || !wd_str_ieq(wd_str(v.p, 7), WD_STR("Bearer ")))
        return unauthorized(x, "invalid_api_key", "The Authorization header must use the Bearer scheme.");
    const char *cred = v.p + 7;
    size_t len = v.len - 7;
    while (len && *cred == ' ') {
        cred++;
        len--;
    }
    int64_t now = now_s();
    const char *code = "invalid_api_key";
    char reason[200];
    wd_principal_t *p = &x->principal;
    if (len > 4 && memcmp(cred, "wdk_", 4) == 0) {
        const wd_authkey_t *k;
        if (wd_authdb_check_key(x->authdb, cred, len, now, &k, &code, reason, sizeof reason) != WD_OK)
            return unauthorized(x, code, reason);
        x->key = k;
        /* last-used time: a relaxed store, flushed to the database in batches by the main thread */
        if (__atomic_load_n(&k->last_used, __ATOMIC_RELAXED) < now)
            __atomic_store_n(&((wd_authkey_t *)k)->last_used, now, __ATOMIC_RELAXED);
        p->kind = "key";
        p->id = k->id;
        p->roles = (const char *const *)k->roles;
        p->nroles = k->nroles;
        p->models = (const char *const *)k->models;
        p->nmodels = k->nmodels;
        p->ips = k->ips;
        p->nips = k->nips;
        p->mfa = false;
    } else if (len > 10 && memcmp(cred, "v4.public.", 10) == 0) {
        if (token_claims(x, cred, len, now, &code, reason, sizeof reason) != WD_OK) return unauthorized(x, code, reason);
        if (wd_authdb_check_claims(x->authdb, &x->claims, now, &code, reason, sizeof reason) != WD_OK)
            return unauthorized(x, code, reason);
        p->kind = "token";
        p->id = x->claims.sub;
        p->roles = (const char *const *)x->claims.roles;
        p->nroles = x->claims.nroles;
        p->mfa = x->claims.mfa;
        p->models = (const char *const *)x->claims.models;
        p->nmodels = x->claims.nmodels;
        if (strncmp(x->claims.sub, "key:", 4) == 0) {
            /* a token minted from a key keeps that key's scope (check_claims refused a key the
             * snapshot does not know, so k is never NULL here; fail closed all the same) */
            const wd_authkey_t *k = wd_authdb_key(x->authdb, x->claims.sub + 4, strlen(x->claims.sub + 4));
            if (!k) return unauthorized(x, "invalid_token", "the token's API key is not known to this gateway yet");
            p->ips = k->ips;
            p->nips = k->nips;
            if (!p->models) {
                p->models = (const char *const *)k->models;
                p->nmodels = k->nmodels;
            }
        }
    } else {
        return unauthorized(x, "invalid_api_key", "Incorrect API key provided");
    }
    x->authenticated = true;
    set_principal_event(x);
    return WD_CONTINUE;
}

static void authenticate_done(wd_exchange_t *x)
{
    wd_claims_free(&x->claims);
    wd_authdb_unref(x->authdb);
    x->authdb = NULL;
}

const wd_stage_t wd_stage_authenticate = {"authenticate", authenticate, NULL, NULL, authenticate_done};

static wd_stage_rc_t authorize(wd_exchange_t *x)
{
    if (!x->authenticated) return WD_CONTINUE;
    wd_decision_t d;
    const char *model = x->route->json_body ? x->model_name : NULL;
    if (wd_policy_decide(x->cfg->roles, x->cfg->nroles, &x->principal, x->route->endpoint, model,
                         model ? x->model_name_len : 0, x->ev.client_ip, &d))
        return WD_CONTINUE;
    wd_exchange_reject(x, d.status, d.code, d.reason, d.rule);
    return WD_REJECT;
}

const wd_stage_t wd_stage_authorize = {"authorize", authorize, NULL, NULL, NULL};

/* ---- POST /v1/auth/token --------------------------------------------------------------------------- */

typedef struct {
    uv_work_t req;
    wd_exchange_t *x;
    /* input */
    char username[128];
    char password[WD_PASSWORD_MAX + 1];
    char totp[16];
    char recovery[32];
    int64_t ttl;
    wd_lockout_t lockout;
    /* output */
    int status;
    const char *code;
    char reason[200];
    int64_t retry_after;
    wd_buf_t token;
    int64_t exp;
    bool mfa;
    char roles[160];
} login_t;

static pthread_once_t g_dummy_once = PTHREAD_ONCE_INIT;
static char g_dummy_hash[128];

/* Unknown users get the same argon2id cost as known ones, so timing does not reveal which exist. */
static void make_dummy_hash(void)
{
    uint8_t r[24];
    randombytes_buf(r, sizeof r);
    wd_password_hash((const char *)r, sizeof r, g_dummy_hash);
}

static void login_fail(login_t *l, int status, const char *code, const char *reason)
{
    l->status = status;
    l->code = code;
    snprintf(l->reason, sizeof l->reason, "%s", reason);
}

/* The count is incremented in the database, not from u->failed_count: that value was read before the
 * slow argon2id check, and parallel wrong guesses would otherwise overwrite each other's counts. */
static void count_failure(login_t *l, wd_store_t *s, const wd_user_rec_t *u)
{
    wd_store_user_login_failed(s, u->id, now_s(), &l->lockout, NULL, NULL);
}

/* The account was locked while this login's password was being checked (parallel wrong guesses):
 * a right guess that started before the lock does not get through it. */
static void login_locked(login_t *l, wd_store_t *s, const char *name)
{
    wd_user_rec_t u;
    int64_t now = now_s();
    l->retry_after = 1;
    if (wd_store_user_get(s, name, &u) == WD_OK) {
        if (u.locked_until > now) l->retry_after = u.locked_until - now;
        wd_user_rec_free(&u);
    }
    login_fail(l, 429, "account_locked", "too many failed attempts; the account is locked for now");
}

static void login_work(uv_work_t *req)
{
    login_t *l = req->data;
    wd_store_t *s = wd_gateway_store();
    int64_t now = now_s();
    pthread_once(&g_dummy_once, make_dummy_hash);
    wd_user_rec_t u;
    if (wd_store_user_get(s, l->username, &u) != WD_OK) {
        wd_password_verify(g_dummy_hash, l->password, strlen(l->password));
        login_fail(l, 401, "invalid_credentials", "invalid username or password");
        return;
    }
    if (u.locked_until > now) {
        l->retry_after = u.locked_until - now;
        login_fail(l, 429, "account_locked", "too many failed attempts; the account is locked for now");
        goto out;
    }
    if (wd_password_verify(u.pw_hash, l->password, strlen(l->password)) != WD_OK || u.disabled_at) {
        if (!u.disabled_at) count_failure(l, s, &u);
        login_fail(l, 401, "invalid_credentials", "invalid username or password");
        goto out;
    }
    int64_t step = 0;
    if (u.mfa_enabled) {
        if (l->totp[0]) {
            wd_buf_t secret;
            wd_buf_init(&secret, 256);
            char ad[64];
            snprintf(ad, sizeof ad, "totp:user:%lld", (long long)u.id);
            uint64_t matched = 0;
            int rc = wd_unseal(s->totp_key, u.totp_sealed, u.totp_sealed_len, ad, &secret);
            if (rc == WD_OK)
                rc = wd_totp_verify((const uint8_t *)secret.data, secret.len, l->totp, strlen(l->totp), (uint64_t)now,
                                    30, 6, WD_TOTP_SHA1, 1, (uint64_t)u.totp_last_step, &matched);
            sodium_memzero(secret.data, secret.cap);
            wd_buf_free(&secret);
            int ok = rc == WD_OK ? wd_store_user_login_ok(s, u.id, (int64_t)matched, now_s()) : rc;
            if (ok == WD_OK) {
                step = (int64_t)matched;
            } else if (ok == WD_EAGAIN) {
                login_locked(l, s, u.name);
                goto out;
            } else {
                count_failure(l, s, &u);
                if (rc == WD_EEXIST || rc == WD_OK)
                    login_fail(l, 401, "totp_replayed", "this code was already used; wait for the next one");
                else login_fail(l, 401, "invalid_totp", "invalid one-time code");
                goto out;
            }
        } else if (l->recovery[0]) {
            uint8_t h[32];
            if (wd_recovery_hash(s->recovery_key, l->recovery, strlen(l->recovery), h) != WD_OK ||
                wd_store_recovery_use(s, u.id, h, now) != WD_OK) {
                count_failure(l, s, &u);
                login_fail(l, 401, "invalid_recovery_code", "invalid or already used recovery code");
                goto out;
            }
            if (wd_store_user_login_ok(s, u.id, 0, now_s()) == WD_EAGAIN) {
                login_locked(l, s, u.name);
                goto out;
            }
        } else {
            login_fail(l, 401, "totp_required", "this account has multi-factor authentication; send \"totp\"");
            goto out;
        }
    } else if (wd_store_user_login_ok(s, u.id, 0, now_s()) == WD_EAGAIN) {
        login_locked(l, s, u.name);
        goto out;
    }
    WD_UNUSED(step);
    wd_claims_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "user:%s", u.name);
    c.mfa = u.mfa_enabled;
    c.iat = now;
    c.exp = now + l->ttl;
    json_t *roles = json_loads(u.roles ? u.roles : "[]", 0, NULL);
    size_t n = json_array_size(roles);
    c.roles = calloc(n ? n : 1, sizeof *c.roles);
    for (size_t i = 0; c.roles && i < n; i++)
        if (json_is_string(json_array_get(roles, i))) c.roles[c.nroles++] = strdup(json_string_value(json_array_get(roles, i)));
    json_decref(roles);
    size_t used = 0;
    for (size_t i = 0; i < c.nroles && used < sizeof l->roles; i++)
        used += (size_t)snprintf(l->roles + used, sizeof l->roles - used, "%s%s", i ? "," : "", c.roles[i]);
    if (!c.roles || wd_token_mint(s->sign_sk, s->kid, &c, &l->token) != WD_OK) {
        login_fail(l, 500, "internal_error", "could not mint a token");
    } else {
        l->status = 200;
        l->exp = c.exp;
        l->mfa = c.mfa;
    }
    wd_claims_free(&c);
out:
    wd_user_rec_free(&u);
}

static void login_after(uv_work_t *req, int status)
{
    WD_UNUSED(status);
    login_t *l = req->data;
    wd_exchange_t *x = l->x;
    x->work_pending = false;
    snprintf(x->ev.principal, sizeof x->ev.principal, "user:%s", l->username);
    if (!x->aborted) {
        if (l->status == 200) {
            snprintf(x->ev.roles, sizeof x->ev.roles, "%s", l->roles);
            x->ev.mfa = l->mfa;
            char exp[32];
            wd_time_iso(l->exp, exp);
            wd_buf_t b;
            wd_buf_init(&b, 0);
            wd_buf_append_str(&b, "{\"access_token\":\"");
            wd_buf_append(&b, l->token.data, l->token.len);
            wd_buf_printf(&b, "\",\"token_type\":\"Bearer\",\"expires_in\":%lld,\"expires_at\":\"%s\",\"mfa\":%s}",
                          (long long)l->ttl, exp, l->mfa ? "true" : "false");
            wd_exchange_add_header(x, "Cache-Control", "no-store");
            wd_gw_respond(x, 200, b.data, b.len);
            sodium_memzero(b.data, b.len);
            wd_buf_free(&b);
        } else {
            if (l->retry_after) snprintf(x->retry_after, sizeof x->retry_after, "%lld", (long long)l->retry_after);
            wd_exchange_reject(x, l->status, l->code, l->reason, "login");
            wd_gw_send_rejection(x);
        }
    }
    if (l->token.data) sodium_memzero(l->token.data, l->token.len);
    wd_buf_free(&l->token);
    sodium_memzero(l->password, sizeof l->password);
    free(l);
    wd_gw_complete(x);
}

/* Copies a string member of the login body into dst (NUL-free, bounded). */
static bool take_field(const wd_json_doc_t *d, const char *key, char *dst, size_t cap, bool required)
{
    int t = wd_json_obj_get(d, 0, key);
    if (t < 0) return !required;
    if (d->toks[t].type != WD_JSON_STRING) return false;
    wd_buf_t b;
    wd_buf_init(&b, cap - 1);
    bool ok = wd_json_str_decode(d, t, &b) == WD_OK && !memchr(b.data, 0, b.len) && (b.len || !required);
    if (ok) {
        if (b.len) memcpy(dst, b.data, b.len);
        dst[b.len] = 0;
    }
    if (b.data) sodium_memzero(b.data, b.cap);
    wd_buf_free(&b);
    return ok;
}

wd_stage_rc_t wd_gw_login(wd_exchange_t *x)
{
    if (!wd_config_auth_required(x->cfg) || !wd_gateway_store()) {
        wd_exchange_reject(x, 404, "unknown_url", "authentication is not enabled on this gateway", NULL);
        return WD_REJECT;
    }
    login_t *l = calloc(1, sizeof *l);
    if (!l) {
        wd_exchange_reject(x, 500, "internal_error", "out of memory", NULL);
        return WD_REJECT;
    }
    wd_json_tok_t toks[64];
    wd_json_doc_t d;
    char err[128];
    bool ok = x->body->len && wd_json_parse(&d, x->body->data, x->body->len, toks, WD_ARRAY_LEN(toks), 4, err,
                                            sizeof err) == WD_OK && toks[0].type == WD_JSON_OBJECT;
    ok = ok && take_field(&d, "username", l->username, sizeof l->username, true) &&
         take_field(&d, "password", l->password, sizeof l->password, true) &&
         take_field(&d, "totp", l->totp, sizeof l->totp, false) &&
         take_field(&d, "recovery_code", l->recovery, sizeof l->recovery, false);
    int64_t ttl = x->cfg->auth.token_ttl_ms / 1000;
    int e = ok ? wd_json_obj_get(&d, 0, "expires_in") : -1;
    if (ok && e >= 0) {
        int64_t v;
        ok = wd_json_int(&d, e, &v) == WD_OK && v > 0 && v <= (int64_t)(x->cfg->auth.token_max_ttl_ms / 1000);
        ttl = v;
    }
    /* the body held the password: scrub it now that it has been copied */
    sodium_memzero(x->body->data, x->body->len);
    if (!ok) {
        sodium_memzero(l->password, sizeof l->password);
        free(l);
        wd_exchange_reject(x, 400, "invalid_request",
                           "expected a JSON object with string fields username, password and optionally totp or "
                           "recovery_code, and an integer expires_in within auth.token_max_ttl_ms",
                           NULL);
        return WD_REJECT;
    }
    l->ttl = ttl;
    const wd_config_t *cfg = x->cfg;
    l->lockout = (wd_lockout_t){cfg->auth.max_failures, cfg->auth.lockout_ms, cfg->auth.lockout_max_ms};
    l->x = x;
    l->req.data = l;
    wd_buf_init(&l->token, 0);
    x->work_pending = true;
    if (uv_queue_work(&x->w->loop, &l->req, login_work, login_after) != 0) {
        x->work_pending = false;
        sodium_memzero(l->password, sizeof l->password);
        free(l);
        wd_exchange_reject(x, 503, "unavailable", "could not schedule the login", NULL);
        return WD_REJECT;
    }
    return WD_PAUSE;
}

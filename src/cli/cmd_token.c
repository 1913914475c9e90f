/* warden token: PASETO v4.public tokens minted from an API key for a developer (time-limited, never
 * wider than the key), and revocation by jti. */
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>

#include "auth/apikey.h"
#include "auth/token.h"
#include "cli/cli.h"

#define COMMON_OPTS                                                                                          \
    {.name = "state-dir", .arg = true}, {.name = "config", .short_name = 'c', .arg = true},                 \
        {.name = "help", .short_name = 'h'}

#define DEFAULT_MAX_TTL 86400
/* Tokens live at most 30 days (auth.token_max_ttl_ms's bound), so a revocation kept that long
 * outlives every token it could name. */
#define DEFAULT_REVOKE_KEEP (30 * 86400)

static void usage(FILE *f)
{
    fputs("usage: warden token COMMAND [--state-dir DIR | -c FILE] ...\n"
          "\n"
          "  issue --key-id ID --ttl 1h [--models a,b] [--quiet]\n"
          "        mints a token (PASETO v4.public) carrying the key's roles, for a developer; printed once on\n"
          "        stdout. --models narrows it further (within the key's own scope). The lifetime is at most\n"
          "        auth.token_max_ttl_ms with -c (else 24h) and never beyond the key's expiry.\n"
          "  revoke JTI [--until 2026-12-31T00:00:00Z | --until 30d]\n"
          "        the token stops working; the revocation is kept until --until (default 30 days).\n"
          "\n"
          "  Exit status: 0 ok, 1 failed (unknown or inactive key), 2 invalid usage.\n",
          f);
}

static bool valid_chars(const char *s, size_t min, size_t max, bool b64url)
{
    size_t n = strlen(s);
    if (n < min || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (b64url && (ch == '-' || ch == '_'))))
            return false;
    }
    return true;
}

/* Whether the requested model (name or prefix pattern) lies inside scope entry s. */
static bool within(const char *req, const char *s)
{
    size_t sl = strlen(s), rl = strlen(req);
    if (!sl) return false;
    if (s[sl - 1] != '*') return !strcmp(req, s);
    /* s = P*: an exact name starting with P, or a pattern Q* whose Q starts with P */
    size_t ql = req[rl - 1] == '*' ? rl - 1 : rl;
    return ql >= sl - 1 && !memcmp(req, s, sl - 1);
}

static int take_strings(const char *json_text, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    json_t *a = json_text ? json_loads(json_text, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        return WD_EINVAL;
    }
    size_t cnt = json_array_size(a);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    int rc = *out ? WD_OK : WD_ENOMEM;
    for (size_t i = 0; rc == WD_OK && i < cnt; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v)) rc = WD_EINVAL;
        else if (!((*out)[i] = strdup(json_string_value(v)))) rc = WD_ENOMEM;
        else *n = i + 1;
    }
    json_decref(a);
    return rc;
}

static int token_issue(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden token issue"};
    wd_cli_opt_t o[] = {COMMON_OPTS,
                        {.name = "key-id", .arg = true},
                        {.name = "ttl", .arg = true},
                        {.name = "models", .arg = true, .multi = true},
                        {.name = "quiet", .short_name = 'q'}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(&c, argc, argv, o, no, pos, 0, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return 0;
    }
    const char *id = wd_cli_val(o, no, "key-id"), *ttl = wd_cli_val(o, no, "ttl");
    if (!id) return wd_cli_fail(&c, WD_EXIT_USAGE, "--key-id is required");
    if (!valid_chars(id, WD_APIKEY_ID_LEN, WD_APIKEY_ID_LEN, false))
        return wd_cli_fail(&c, WD_EXIT_USAGE, "'%s' is not a key id (12 letters and digits, as in warden key list)", id);
    if (!ttl) return wd_cli_fail(&c, WD_EXIT_USAGE, "--ttl is required (e.g. --ttl 1h)");
    int64_t ttl_s;
    if (wd_parse_ttl(ttl, &ttl_s) != WD_OK)
        return wd_cli_fail(&c, WD_EXIT_USAGE, "invalid --ttl '%s' (a positive number with s, m, h or d)", ttl);

    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    wd_claims_t cl;
    memset(&cl, 0, sizeof cl);
    char *req_store = NULL;
    wd_buf_t tok;
    wd_buf_init(&tok, 0);
    if ((rc = wd_cli_begin(&c, true, true))) goto out;
    int64_t max_ttl = c.cfg ? (int64_t)(c.cfg->auth.token_max_ttl_ms / 1000) : DEFAULT_MAX_TTL;
    if (ttl_s > max_ttl) {
        rc = wd_cli_fail(&c, WD_EXIT_USAGE, "--ttl %s is longer than the maximum token lifetime of %llds%s", ttl,
                         (long long)max_ttl, c.cfg ? " (auth.token_max_ttl_ms)" : " (24h without -c)");
        goto out;
    }
    int grc = wd_store_key_get(c.store, id, &k);
    if (grc == WD_ENOTFOUND) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "no key with id %s", id);
        goto out;
    }
    if (grc != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "cannot read key %s", id);
        goto out;
    }
    int64_t now = wd_cli_now(), exp = now + ttl_s;
    char t[32];
    if (k.revoked_at) rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s is revoked", id);
    else if (k.expires_at && k.expires_at <= now) rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s has expired", id);
    else if (k.rotated_to[0] && k.grace_until <= now)
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s was rotated to %s; issue from the new key", id, k.rotated_to);
    if (rc) goto out;
    /* A token never outlives the key it was scoped from (nor a rotated key's grace period). */
    bool capped = false;
    if (k.expires_at && exp > k.expires_at) exp = k.expires_at, capped = true;
    if (k.rotated_to[0] && exp > k.grace_until) exp = k.grace_until, capped = true;

    char **scope = NULL;
    size_t nscope = 0;
    if (k.models && take_strings(k.models, &scope, &nscope) != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s has a malformed models scope", id);
        goto out_scope;
    }
    if (take_strings(k.roles, &cl.roles, &cl.nroles) != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s has malformed roles", id);
        goto out_scope;
    }
    wd_cli_opt_t *mo = wd_cli_opt(o, no, "models");
    if (mo->n) {
        const char *req[WD_CLI_MAX_VALS * 4];
        int nreq = wd_cli_split(&c, mo, &req_store, req, WD_ARRAY_LEN(req));
        if (nreq < 0) {
            rc = WD_EXIT_USAGE;
            goto out_scope;
        }
        for (int i = 0; i < nreq; i++) {
            if ((rc = wd_cli_check_model(&c, req[i], k.roles))) goto out_scope;
            bool ok = !k.models;
            for (size_t j = 0; !ok && j < nscope; j++) ok = within(req[i], scope[j]);
            if (!ok) {
                rc = wd_cli_fail(&c, WD_EXIT_USAGE, "model '%s' is outside key %s's scope %s: a token can only narrow",
                                 req[i], id, k.models);
                goto out_scope;
            }
        }
        cl.models = calloc((size_t)nreq, sizeof *cl.models);
        for (int i = 0; cl.models && i < nreq; i++)
            if ((cl.models[i] = strdup(req[i]))) cl.nmodels = (size_t)i + 1;
        if (!cl.models || cl.nmodels != (size_t)nreq) {
            rc = wd_cli_fail(&c, WD_EXIT_FAIL, "out of memory");
            goto out_scope;
        }
    } else if (scope) {
        cl.models = scope; /* the key's own scope carries over */
        cl.nmodels = nscope;
        scope = NULL;
        nscope = 0;
    }
    snprintf(cl.sub, sizeof cl.sub, "key:%s", k.id);
    cl.mfa = false;
    cl.iat = now;
    cl.exp = exp;
    if (wd_token_mint(c.store->sign_sk, c.store->kid, &cl, &tok) != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "cannot sign the token");
        goto out_scope;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "jti %s, expires %s", cl.jti, wd_cli_time(exp, "-", t));
    wd_cli_audit(&c, "token.issue", k.id, true, detail);
    puts(tok.data);
    fflush(stdout);
    if (!wd_cli_flag(o, no, "quiet")) {
        char *roles = wd_cli_join_json(k.roles), *models = wd_cli_json_array((const char *const *)cl.models, cl.nmodels);
        fprintf(stderr, "issued a token for key %s (roles %s, models %s), jti %s, expires %s%s\n", k.id,
                roles ? roles : "-", cl.models && models ? models : "(all its roles grant)", cl.jti, t,
                capped ? " (capped at the key's expiry)" : "");
        free(models);
        fprintf(stderr, "revoke it with: warden token revoke %s%s\n", cl.jti[0] == '-' ? "-- " : "", cl.jti);
        free(roles);
    }
out_scope:
    for (size_t i = 0; i < nscope; i++) free(scope[i]);
    free(scope);
out:
    if (tok.data) sodium_memzero(tok.data, tok.cap);
    wd_buf_free(&tok);
    free(req_store);
    wd_claims_free(&cl);
    wd_key_rec_free(&k);
    wd_cli_end(&c);
    return rc;
}

static int token_revoke(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden token revoke"};
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "until", .arg = true}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(&c, argc, argv, o, no, pos, 1, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return 0;
    }
    if (npos != 1) return wd_cli_fail(&c, WD_EXIT_USAGE, "expects one token id (the jti claim)");
    const char *jti = pos[0];
    if (!valid_chars(jti, 1, 47, true))
        return wd_cli_fail(&c, WD_EXIT_USAGE, "'%s' is not a token id (base64url characters, at most 47)", jti);
    const char *until = wd_cli_val(o, no, "until");
    int64_t now = wd_cli_now(), keep = now + DEFAULT_REVOKE_KEEP, secs;
    if (until) {
        if (wd_time_parse_iso(until, strlen(until), &keep) != WD_OK) {
            if (wd_parse_ttl(until, &secs) != WD_OK)
                return wd_cli_fail(&c, WD_EXIT_USAGE,
                                   "invalid --until '%s' (a UTC time like 2026-12-31T00:00:00Z, or a duration like 30d)",
                                   until);
            keep = now + secs;
        }
        if (keep <= now) return wd_cli_fail(&c, WD_EXIT_USAGE, "--until %s is in the past", until);
    }
    if ((rc = wd_cli_begin(&c, true, true))) goto out;
    char err[512], t[32];
    if (wd_store_token_revoke(c.store, jti, keep, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "token.revoke", jti, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        goto out;
    }
    wd_cli_audit(&c, "token.revoke", jti, true, NULL);
    printf("revoked token %s (on the revocation list until %s)\n", jti, wd_cli_time(keep, "-", t));
out:
    wd_cli_end(&c);
    return rc;
}

int wd_cmd_token(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? WD_EXIT_USAGE : WD_EXIT_OK;
    }
    if (!strcmp(argv[1], "issue")) return token_issue(argc - 2, argv + 2);
    if (!strcmp(argv[1], "revoke")) return token_revoke(argc - 2, argv + 2);
    fprintf(stderr, "warden token: unknown command '%s' (issue, revoke)\n", argv[1]);
    return WD_EXIT_USAGE;
}

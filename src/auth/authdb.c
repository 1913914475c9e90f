#include "auth/authdb.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "auth/apikey.h"

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Parses a JSON array of strings as stored by the CLI; NULL text means "no list". */
static int strs_from_json(const char *text, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!text) return WD_OK;
    json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_array(a)) {
        json_decref(a);
        return WD_EINVAL;
    }
    size_t count = json_array_size(a);
    *out = calloc(count ? count : 1, sizeof **out);
    int rc = *out ? WD_OK : WD_ENOMEM;
    for (size_t i = 0; rc == WD_OK && i < count; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v) || !((*out)[i] = strdup(json_string_value(v)))) rc = WD_EINVAL;
        else *n = i + 1;
    }
    json_decref(a);
    return rc;
}

typedef struct {
    wd_authdb_t *db;
    size_t cap;
    int rc;
} load_ctx_t;

static int add_key(void *ud, const wd_key_rec_t *k)
{
    load_ctx_t *lc = ud;
    wd_authdb_t *db = lc->db;
    if (db->nkeys == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 64;
        wd_authkey_t *nk = realloc(db->keys, cap * sizeof *nk);
        if (!nk) return lc->rc = WD_ENOMEM;
        db->keys = nk;
        lc->cap = cap;
    }
    wd_authkey_t *a = &db->keys[db->nkeys];
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", k->id);
    memcpy(a->hash, k->hash, 32);
    a->expires_at = k->expires_at;
    a->revoked_at = k->revoked_at;
    a->grace_until = k->grace_until;
    a->rotated = k->rotated_to[0] != 0;
    a->last_used = a->last_flushed = k->last_used_at;
    db->nkeys++;
    if (strs_from_json(k->roles, &a->roles, &a->nroles) || strs_from_json(k->models, &a->models, &a->nmodels) ||
        wd_limits_from_json(k->limits, &a->limits))
        return lc->rc = WD_EINVAL;
    char **ips = NULL;
    size_t nips = 0;
    if (strs_from_json(k->ips, &ips, &nips)) return lc->rc = WD_EINVAL;
    if (ips) {
        a->ips = calloc(nips ? nips : 1, sizeof *a->ips);
        a->nips = nips;
        for (size_t i = 0; a->ips && i < nips; i++)
            if (wd_cidr_parse(ips[i], strlen(ips[i]), &a->ips[i], NULL, 0)) lc->rc = WD_EINVAL;
        free_strs(ips, nips);
        if (!a->ips) return lc->rc = WD_ENOMEM;
    }
    return lc->rc;
}

int wd_limits_from_json(const char *text, wd_limits_t *out)
{
    memset(out, 0, sizeof *out);
    if (!text) return WD_OK;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return WD_EINVAL;
    }
    static const char *const names[] = {"rpm", "tpm", "concurrent", "tokens_per_day", "tokens_per_month"};
    int rc = WD_OK;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t i = 0;
        while (i < WD_ARRAY_LEN(names) && strcmp(names[i], k) != 0) i++;
        if (i == WD_ARRAY_LEN(names) || !json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 4000000000LL) {
            rc = WD_EINVAL;
            break;
        }
        uint64_t n = (uint64_t)json_integer_value(v);
        if (i == 0) out->rpm = (uint32_t)WD_MIN(n, UINT32_MAX);
        else if (i == 1) out->tpm = (uint32_t)WD_MIN(n, UINT32_MAX);
        else if (i == 2) out->concurrent = (uint32_t)WD_MIN(n, UINT32_MAX);
        else if (i == 3) out->tokens_per_day = n;
        else out->tokens_per_month = n;
    }
    json_decref(o);
    return rc;
}

static int add_user(void *ud, const wd_user_rec_t *u)
{
    load_ctx_t *lc = ud;
    wd_authdb_t *db = lc->db;
    if (db->nusers == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 64;
        wd_authuser_t *nu = realloc(db->users, cap * sizeof *nu);
        if (!nu) return lc->rc = WD_ENOMEM;
        db->users = nu;
        lc->cap = cap;
    }
    wd_authuser_t *a = &db->users[db->nusers++];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", u->name);
    a->disabled = u->disabled_at != 0;
    if (strs_from_json(u->roles, &a->roles, &a->nroles)) return lc->rc = WD_EINVAL;
    return WD_OK;
}

static int add_revoked(void *ud, const char *jti)
{
    load_ctx_t *lc = ud;
    wd_authdb_t *db = lc->db;
    if (db->nrevoked == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 64;
        char **nr = realloc(db->revoked, cap * sizeof *nr);
        if (!nr) return lc->rc = WD_ENOMEM;
        db->revoked = nr;
        lc->cap = cap;
    }
    if (!(db->revoked[db->nrevoked] = strdup(jti))) return lc->rc = WD_ENOMEM;
    db->nrevoked++;
    return WD_OK;
}

static int cmp_key(const void *a, const void *b) { return strcmp(((const wd_authkey_t *)a)->id, ((const wd_authkey_t *)b)->id); }
static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const wd_authuser_t *)a)->name, ((const wd_authuser_t *)b)->name);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void authdb_free(wd_authdb_t *db)
{
    for (size_t i = 0; i < db->nkeys; i++) {
        free_strs(db->keys[i].roles, db->keys[i].nroles);
        free_strs(db->keys[i].models, db->keys[i].nmodels);
        free(db->keys[i].ips);
    }
    free(db->keys);
    for (size_t i = 0; i < db->nusers; i++) free_strs(db->users[i].roles, db->users[i].nroles);
    free(db->users);
    free_strs(db->revoked, db->nrevoked);
    sodium_memzero(db->key_hash_key, sizeof db->key_hash_key);
    free(db);
}

wd_authdb_t *wd_authdb_load(wd_store_t *s, char *err, size_t errlen)
{
    wd_authdb_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->refs = 1;
    memcpy(db->key_hash_key, s->key_hash_key, 32);
    memcpy(db->sign_pk, s->sign_pk, 32);
    snprintf(db->kid, sizeof db->kid, "%s", s->kid);
    load_ctx_t lc = {db, 0, WD_OK};
    int rc = wd_store_key_each(s, add_key, &lc);
    if (rc == WD_OK && lc.rc == WD_OK) {
        lc.cap = 0;
        rc = wd_store_user_each(s, add_user, &lc);
    }
    if (rc == WD_OK && lc.rc == WD_OK) {
        lc.cap = 0;
        rc = wd_store_revoked_each(s, (int64_t)(wd_wall_ms() / 1000), add_revoked, &lc);
    }
    if (rc != WD_OK || lc.rc != WD_OK) {
        wd_errf(err, errlen, WD_EIO, "loading keys and users from the database failed (%d)", rc ? rc : lc.rc);
        authdb_free(db);
        return NULL;
    }
    if (db->nkeys) qsort(db->keys, db->nkeys, sizeof *db->keys, cmp_key);
    if (db->nusers) qsort(db->users, db->nusers, sizeof *db->users, cmp_user);
    if (db->nrevoked) qsort(db->revoked, db->nrevoked, sizeof *db->revoked, cmp_str);
    return db;
}

wd_authdb_t *wd_authdb_ref(wd_authdb_t *db)
{
    if (db) __atomic_fetch_add(&db->refs, 1, __ATOMIC_RELAXED);
    return db;
}

void wd_authdb_unref(wd_authdb_t *db)
{
    if (db && __atomic_sub_fetch(&db->refs, 1, __ATOMIC_ACQ_REL) == 0) authdb_free(db);
}

const wd_authkey_t *wd_authdb_key(const wd_authdb_t *db, const char *id, size_t len)
{
    size_t lo = 0, hi = db->nkeys;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *k = db->keys[mid].id;
        size_t kl = strlen(k);
        int c = memcmp(k, id, WD_MIN(kl, len));
        if (c == 0) c = kl < len ? -1 : kl > len ? 1 : 0;
        if (c == 0) return &db->keys[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const wd_authuser_t *wd_authdb_user(const wd_authdb_t *db, const char *name)
{
    wd_authuser_t key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return db->nusers ? bsearch(&key, db->users, db->nusers, sizeof *db->users, cmp_user) : NULL;
}

bool wd_authdb_revoked(const wd_authdb_t *db, const char *jti)
{
    return db->nrevoked && bsearch(&jti, db->revoked, db->nrevoked, sizeof *db->revoked, cmp_str) != NULL;
}

static int fail(const char **code, const char *c, char *reason, size_t rlen, const char *fmt, const char *arg)
{
    *code = c;
    snprintf(reason, rlen, fmt, arg);
    return WD_EINVAL;
}

int wd_authdb_check_key(const wd_authdb_t *db, const char *key, size_t len, int64_t now, const wd_authkey_t **out,
                        const char **code, char *reason, size_t rlen)
{
    wd_str_t id;
    *out = NULL;
    /* The checksum is not checked on this path: the keyed hash covers the whole string, so a key with
     * a wrong checksum or character cannot match. Only a failure is parsed fully, to tell whether the
     * id is well-formed enough to be named in the reason. */
    if (wd_apikey_split(key, len, &id) != WD_OK)
        return fail(code, "invalid_api_key", reason, rlen, "%s", "Incorrect API key provided");
    char idz[WD_APIKEY_ID_LEN + 1];
    memcpy(idz, id.p, WD_APIKEY_ID_LEN);
    idz[WD_APIKEY_ID_LEN] = '\0';
    const wd_authkey_t *k = wd_authdb_key(db, id.p, id.len);
    uint8_t h[32];
    wd_apikey_hash(db->key_hash_key, key, len, h);
    /* compare even when the id is unknown, so timing does not tell which ids exist */
    static const uint8_t zero[32];
    bool match = sodium_memcmp(h, k ? k->hash : zero, 32) == 0 && k;
    sodium_memzero(h, sizeof h);
    if (!match && wd_apikey_parse(key, len, NULL, NULL) != WD_OK)
        return fail(code, "invalid_api_key", reason, rlen, "%s", "Incorrect API key provided");
    if (!match) return fail(code, "invalid_api_key", reason, rlen, "Incorrect API key provided (key id %s)", idz);
    if (k->revoked_at) return fail(code, "invalid_api_key", reason, rlen, "API key %s has been revoked", idz);
    if (k->expires_at && k->expires_at <= now)
        return fail(code, "expired_api_key", reason, rlen, "API key %s has expired", idz);
    if (k->rotated && k->grace_until <= now)
        return fail(code, "expired_api_key", reason, rlen, "API key %s was rotated and its grace period is over", idz);
    *out = k;
    return WD_OK;
}

int wd_authdb_check_claims(const wd_authdb_t *db, const wd_claims_t *c, int64_t now, const char **code, char *reason,
                           size_t rlen)
{
    if (wd_authdb_revoked(db, c->jti)) return fail(code, "invalid_token", reason, rlen, "%s", "the token has been revoked");
    /* Users and keys are disabled or revoked, never deleted, so a subject missing from the snapshot
     * is one created after it (a token minted within the last refresh interval). A user's token is
     * accepted, and the next snapshot applies any disabling. A key's token is not: the key's scope
     * (its address ranges, its models) lives in the snapshot, and a token must not escape it, so it
     * is refused until the snapshot knows the key (at most auth.refresh_ms). */
    if (strncmp(c->sub, "user:", 5) == 0) {
        const wd_authuser_t *u = wd_authdb_user(db, c->sub + 5);
        if (u && u->disabled)
            return fail(code, "invalid_token", reason, rlen, "%s", "the token's user is disabled");
        return WD_OK;
    }
    if (strncmp(c->sub, "key:", 4) == 0) {
        const wd_authkey_t *k = wd_authdb_key(db, c->sub + 4, strlen(c->sub + 4));
        if (!k)
            return fail(code, "invalid_token", reason, rlen, "%s",
                        "the token's API key is not known to this gateway yet; retry in a moment");
        if (k->revoked_at || (k->expires_at && k->expires_at <= now) || (k->rotated && k->grace_until <= now))
            return fail(code, "invalid_token", reason, rlen, "%s", "the token's API key is no longer valid");
        return WD_OK;
    }
    return fail(code, "invalid_token", reason, rlen, "%s", "the token's subject is not recognised");
}

void wd_authdb_flush_last_used(wd_authdb_t *db, wd_store_t *s)
{
    const char **ids = NULL;
    int64_t *times = NULL;
    size_t n = 0;
    for (size_t i = 0; i < db->nkeys; i++) {
        int64_t t = __atomic_load_n(&db->keys[i].last_used, __ATOMIC_RELAXED);
        if (t <= db->keys[i].last_flushed) continue;
        if (!ids) {
            ids = malloc(db->nkeys * sizeof *ids);
            times = malloc(db->nkeys * sizeof *times);
            if (!ids || !times) break;
        }
        ids[n] = db->keys[i].id;
        times[n++] = t;
        db->keys[i].last_flushed = t;
    }
    if (n && ids && times) wd_store_key_touch(s, ids, times, n);
    free(ids);
    free(times);
}

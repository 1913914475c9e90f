/* auth/authdb: an immutable in-memory snapshot of who may authenticate — API keys (by public id,
 * with their keyed hashes), users (enabled or not) and revoked token ids — built from the store by
 * the main thread and handed to workers, so authentication never touches the database on the hot
 * path. A running server rebuilds it whenever the database changes (the CLI, the admin API or
 * another replica wrote), which is how a revocation takes effect within auth.refresh_ms. */
#ifndef WD_AUTHDB_H
#define WD_AUTHDB_H

#include "auth/token.h"
#include "limit/limit.h"
#include "policy/policy.h"
#include "store/store.h"

typedef struct {
    char id[16];
    uint8_t hash[32];
    char **roles;
    size_t nroles;
    char **models; /* NULL: no narrowing */
    size_t nmodels;
    wd_cidr_t *ips; /* NULL: no narrowing */
    size_t nips;
    wd_limits_t limits; /* narrows the roles' limits (0 fields: no narrowing) */
    int64_t expires_at, revoked_at, grace_until;
    bool rotated;
    int64_t last_used; /* written by workers (relaxed atomics), flushed to the store in batches */
    int64_t last_flushed;
} wd_authkey_t;

typedef struct {
    char name[128];
    char **roles;
    size_t nroles;
    bool disabled;
} wd_authuser_t;

typedef struct wd_authdb {
    int refs;
    wd_authkey_t *keys; /* sorted by id */
    size_t nkeys;
    wd_authuser_t *users; /* sorted by name */
    size_t nusers;
    char **revoked; /* sorted jtis */
    size_t nrevoked;
    uint8_t key_hash_key[32];
    uint8_t sign_pk[32];
    char kid[64];
} wd_authdb_t;

wd_authdb_t *wd_authdb_load(wd_store_t *s, char *err, size_t errlen);
wd_authdb_t *wd_authdb_ref(wd_authdb_t *db);
void wd_authdb_unref(wd_authdb_t *db);

const wd_authkey_t *wd_authdb_key(const wd_authdb_t *db, const char *id, size_t len);
const wd_authuser_t *wd_authdb_user(const wd_authdb_t *db, const char *name);
bool wd_authdb_revoked(const wd_authdb_t *db, const char *jti);

/* Checks a presented API key. On success *out is the key; else *code is invalid_api_key or
 * expired_api_key and reason says why (never echoing the key). */
int wd_authdb_check_key(const wd_authdb_t *db, const char *key, size_t len, int64_t now, const wd_authkey_t **out,
                        const char **code, char *reason, size_t rlen);

/* Checks verified token claims against the snapshot: not revoked, and its user or key still alive. A
 * token of a key the snapshot does not know (yet) is refused: the key's scope could not be applied. */
int wd_authdb_check_claims(const wd_authdb_t *db, const wd_claims_t *c, int64_t now, const char **code, char *reason,
                           size_t rlen);

/* Parses a key's limits JSON ({"rpm":N,...}); NULL text gives all zeros. */
int wd_limits_from_json(const char *text, wd_limits_t *out);

/* Writes last-used times that changed since the previous flush to the store (one transaction). */
void wd_authdb_flush_last_used(wd_authdb_t *db, wd_store_t *s);

#endif

/* store: warden's state directory and its SQLite database (WAL, STRICT tables, versioned
 * migrations). The state directory holds warden.db, master.key (32 random bytes, 0600; or the file
 * named by WARDEN_MASTER_KEY_FILE) and signing.key (Ed25519, 0600). Secrets never enter the database
 * in the clear: API keys as keyed hashes, passwords as argon2id, TOTP secrets sealed under a key
 * derived from the master key. The gateway reads the database off the hot path only (snapshots). */
#ifndef WD_STORE_H
#define WD_STORE_H

#include <sqlite3.h>

#include "core/core.h"

typedef struct {
    char *dir;
    sqlite3 *db;
    uint8_t master[32];    /* mlock'd copy, zeroed on close */
    uint8_t sign_sk[64];   /* Ed25519 seed||pk */
    uint8_t sign_pk[32];
    char kid[64];          /* PASERK k4.pid of the signing key */
    uint8_t key_hash_key[32]; /* derived: API key hashing */
    uint8_t totp_key[32];     /* derived: sealing TOTP secrets */
    uint8_t recovery_key[32]; /* derived: hashing recovery codes */
    uint8_t guard_hash_key[32]; /* derived: the guard's keyed-hash action (gateway and warden scan) */
} wd_store_t;

/* Creates the state directory and its files if missing. Returns WD_OK when it created anything,
 * WD_EEXIST when everything was already there (and changes nothing), or an error. */
int wd_store_init(const char *dir, char *err, size_t errlen);

/* Opens an initialised state directory (runs pending migrations). */
int wd_store_open(const char *dir, wd_store_t **out, char *err, size_t errlen);
void wd_store_close(wd_store_t *s);

/* The database's change counter as seen by this connection: it moves when another connection
 * (the CLI, another replica's admin API) commits, which is how a running server notices changes. */
int64_t wd_store_data_version(wd_store_t *s);

/* The PASERK id (k4.pid) of an Ed25519 public key: "k4.pid." + base64url(BLAKE2b-264("k4.pid." ||
 * "k4.public." + base64url(pk))), 51 characters plus NUL. Used as the kid of tokens warden signs. */
void wd_store_paserk_pid(const uint8_t pk[32], char out[64]);

/* Runs sql (no rows) with err set on failure. */
int wd_store_exec(wd_store_t *s, const char *sql, char *err, size_t errlen);

/* ---- admin log -------------------------------------------------------------------------------------- */

/* state_dir/audit/admin.jsonl: one JSON line per operator or admin-API action (CLI and daemon alike),
 * whatever the config's audit sink is. Opened O_APPEND (whole-line writes from several processes do
 * not interleave), created 0600, never through a symlink; audit/ is re-created 0700 if missing. */
#define WD_STORE_ADMIN_LOG "audit/admin.jsonl"

/* Returns an open descriptor (>= 0) or a negative WD_E* code with err set. */
int wd_store_admin_log_open(const char *dir, char *err, size_t errlen);
/* Writes data (whole lines) in one write and fsyncs it. */
int wd_store_admin_log_write(int fd, const char *data, size_t len);
/* Open, write, fsync, close: for writers that record rarely (the admin API). */
int wd_store_admin_log_append(const char *dir, const char *data, size_t len, char *err, size_t errlen);

/* ---- API keys ------------------------------------------------------------------------------------- */

typedef struct {
    char id[16];
    char name[128];
    uint8_t hash[32];
    char *roles;      /* JSON array text */
    char *models;     /* JSON array text or NULL (no narrowing) */
    char *ips;        /* JSON array text or NULL */
    char *limits;     /* JSON object {"rpm","tpm","concurrent","tokens_per_day","tokens_per_month"} or NULL */
    int64_t created_at, expires_at, revoked_at, grace_until, last_used_at; /* unix seconds, 0 = none */
    char rotated_to[16];
} wd_key_rec_t;

void wd_key_rec_free(wd_key_rec_t *k);
int wd_store_key_insert(wd_store_t *s, const wd_key_rec_t *k, char *err, size_t errlen);
int wd_store_key_get(wd_store_t *s, const char *id, wd_key_rec_t *out); /* WD_ENOTFOUND */
/* Calls cb for every key (including revoked ones), ordered by creation. */
int wd_store_key_each(wd_store_t *s, int (*cb)(void *ud, const wd_key_rec_t *k), void *ud);
int wd_store_key_revoke(wd_store_t *s, const char *id, int64_t now, char *err, size_t errlen);
/* Marks `old_id` as rotated to `new_id`, valid until grace_until; inserts the new key; one transaction. */
int wd_store_key_rotate(wd_store_t *s, const char *old_id, const wd_key_rec_t *new_key, int64_t grace_until,
                        char *err, size_t errlen);
/* Batched last-used update: ids[i] used at times[i]; one transaction. */
int wd_store_key_touch(wd_store_t *s, const char *const *ids, const int64_t *times, size_t n);

/* ---- users ------------------------------------------------------------------------------------------ */

typedef struct {
    int64_t id;
    char name[128];
    char *roles;         /* JSON array text */
    char pw_hash[128];
    uint8_t *totp_sealed; /* sealed secret or NULL */
    size_t totp_sealed_len;
    bool mfa_enabled;
    int64_t totp_last_step;
    int64_t failed_count, locked_until, disabled_at, created_at;
} wd_user_rec_t;

void wd_user_rec_free(wd_user_rec_t *u);
int wd_store_user_insert(wd_store_t *s, const wd_user_rec_t *u, char *err, size_t errlen);
int wd_store_user_get(wd_store_t *s, const char *name, wd_user_rec_t *out); /* WD_ENOTFOUND */
int wd_store_user_each(wd_store_t *s, int (*cb)(void *ud, const wd_user_rec_t *u), void *ud);
int wd_store_user_set_password(wd_store_t *s, const char *name, const char *pw_hash, char *err, size_t errlen);
int wd_store_user_disable(wd_store_t *s, const char *name, int64_t now, char *err, size_t errlen);
/* Stores a new sealed TOTP secret and recovery-code hashes (replacing old ones); MFA enabled. */
int wd_store_user_set_mfa(wd_store_t *s, int64_t user_id, const uint8_t *sealed, size_t len,
                          const uint8_t (*codes)[32], size_t ncodes, char *err, size_t errlen);
/* Lockout policy: the max_failures-th consecutive failure locks the account for lockout_ms, each
 * further failure doubles the lock, capped at lockout_max_ms (locks are whole seconds, rounded up). */
typedef struct {
    uint32_t max_failures, lockout_ms, lockout_max_ms;
} wd_lockout_t;

/* Records a failed login at `now` in one statement: the failure count is incremented in the database
 * (never written back from a value read earlier, so parallel failures on several threads or replicas
 * all count) and the lock is computed from the incremented count; an existing longer lock is kept.
 * Returns the new count and lock end (0 = not locked) through the optional out pointers;
 * WD_ENOTFOUND for an unknown user. */
int wd_store_user_login_failed(wd_store_t *s, int64_t user_id, int64_t now, const wd_lockout_t *policy,
                               int64_t *failed_count, int64_t *locked_until);
/* Records a successful login at `now`. With totp_step > 0 it is a compare-and-set: it succeeds only if
 * the stored last-used step is lower, so a TOTP code is accepted once even across concurrent logins
 * and replicas (WD_EEXIST when the step was already used). It also fails, with WD_EAGAIN, while the
 * account is locked: a lock set by parallel failures while this login's password was being checked
 * stops it too. Resets the failure count; on failure changes nothing. */
int wd_store_user_login_ok(wd_store_t *s, int64_t user_id, int64_t totp_step, int64_t now);
/* Consumes a recovery code (by hash) if present and unused; WD_ENOTFOUND otherwise. */
int wd_store_recovery_use(wd_store_t *s, int64_t user_id, const uint8_t hash[32], int64_t now);

/* ---- tokens ----------------------------------------------------------------------------------------- */

int wd_store_token_revoke(wd_store_t *s, const char *jti, int64_t expires_at, char *err, size_t errlen);
int wd_store_revoked_each(wd_store_t *s, int64_t now, int (*cb)(void *ud, const char *jti), void *ud);

#endif

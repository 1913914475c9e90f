#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Migrations run in order; user_version records how many have been applied. Never edit a shipped
 * entry: add a new one. */
static const char *const migrations[] = {
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, hash BLOB NOT NULL, roles TEXT NOT NULL,"
    "  models TEXT, ips TEXT, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0, grace_until INTEGER NOT NULL DEFAULT 0,"
    "  rotated_to TEXT NOT NULL DEFAULT '', last_used_at INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, roles TEXT NOT NULL, pw_hash TEXT NOT NULL,"
    "  totp_sealed BLOB, mfa_enabled INTEGER NOT NULL DEFAULT 0, totp_last_step INTEGER NOT NULL DEFAULT 0,"
    "  failed_count INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0,"
    "  disabled_at INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) STRICT;"
    "CREATE TABLE recovery_codes ("
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE, hash BLOB NOT NULL,"
    "  used_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, hash)) STRICT;"
    "CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT;",
    /* 2: per-key rate limits that narrow the roles' limits (JSON object, NULL = none) */
    "ALTER TABLE api_keys ADD COLUMN limits TEXT;",
};

static int sqlerr(wd_store_t *s, char *err, size_t errlen, const char *what)
{
    return wd_errf(err, errlen, WD_EIO, "%s: %s", what, s && s->db ? sqlite3_errmsg(s->db) : "no database");
}

/* ---- files ------------------------------------------------------------------------------------------ */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Writes a new secret file atomically (temp file, fsync, link into place): a crash leaves either
 * no file or a complete one, and an existing file is never replaced. */
static int write_secret_file(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp) return WD_ENOMEM;
    snprintf(tmp, n, "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = WD_OK;
    if (fd < 0) rc = wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", tmp, strerror(errno));
    else {
        if (write(fd, data, len) != (ssize_t)len || fsync(fd) != 0)
            rc = wd_errf(err, errlen, WD_EIO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        if (rc == WD_OK && link(tmp, path) != 0)
            rc = wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

static int read_secret_file(const char *path, void *out, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return wd_errf(err, errlen, WD_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int rc = WD_OK;
    if (fstat(fd, &st) != 0) rc = wd_errf(err, errlen, WD_EIO, "cannot stat %s", path);
    else if (st.st_mode & 077)
        rc = wd_errf(err, errlen, WD_EINVAL, "%s is readable by group or others (mode %03o); run chmod 600 %s", path,
                     (unsigned)(st.st_mode & 0777), path);
    else if ((size_t)st.st_size != len)
        rc = wd_errf(err, errlen, WD_EINVAL, "%s must be exactly %zu bytes (it has %lld)", path, len,
                     (long long)st.st_size);
    else if (read(fd, out, len) != (ssize_t)len)
        rc = wd_errf(err, errlen, WD_EIO, "cannot read %s", path);
    close(fd);
    return rc;
}

static const char *master_key_path(const char *dir, char **owned)
{
    const char *env = getenv("WARDEN_MASTER_KEY_FILE");
    *owned = NULL;
    if (env && *env) return env;
    *owned = path_join(dir, "master.key");
    return *owned;
}

static int open_db(wd_store_t *s, const char *dir, bool create, char *err, size_t errlen)
{
    char *p = path_join(dir, "warden.db");
    if (!p) return WD_ENOMEM;
    if (create) {
        /* SQLite would create the file 0644 (less umask) and gives -wal/-shm the database's mode, so
         * create it 0600 first: the database holds hashes and sealed secrets, for the owner only. */
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) {
            int rc = wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", p, strerror(errno));
            free(p);
            return rc;
        }
        if (fd >= 0) close(fd);
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(p, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = wd_errf(err, errlen, WD_EIO, "cannot open %s: %s", p, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        free(p);
        return rc;
    }
    free(p);
    sqlite3_busy_timeout(s->db, 5000);
    if (wd_store_exec(s, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;", err,
                      errlen))
        return WD_EIO;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return sqlerr(s, err, errlen, "reading schema version");
    int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    int known = (int)WD_ARRAY_LEN(migrations);
    if (version > known)
        return wd_errf(err, errlen, WD_EINVAL,
                       "warden.db has schema version %d, newer than this warden understands (%d)", version, known);
    for (int v = version; v < known; v++) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d;", v + 1);
        if (wd_store_exec(s, "BEGIN IMMEDIATE;", err, errlen)) return WD_EIO;
        if (wd_store_exec(s, migrations[v], err, errlen) || wd_store_exec(s, sql, err, errlen)) {
            wd_store_exec(s, "ROLLBACK;", NULL, 0);
            return WD_EIO;
        }
        if (wd_store_exec(s, "COMMIT;", err, errlen)) return WD_EIO;
    }
    return WD_OK;
}

int wd_store_init(const char *dir, char *err, size_t errlen)
{
    if (sodium_init() < 0) return wd_errf(err, errlen, WD_EIO, "libsodium failed to initialise");
    bool created = false;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0700) != 0) return wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", dir, strerror(errno));
        created = true;
    } else if (!S_ISDIR(st.st_mode)) {
        return wd_errf(err, errlen, WD_EINVAL, "%s exists and is not a directory", dir);
    } else if (st.st_mode & 077) {
        return wd_errf(err, errlen, WD_EINVAL, "%s is accessible by group or others (mode %03o); run chmod 700 %s",
                       dir, (unsigned)(st.st_mode & 0777), dir);
    }
    int rc = WD_OK;
    char *owned;
    const char *mk = master_key_path(dir, &owned);
    char *sk = path_join(dir, "signing.key");
    char *audit = path_join(dir, "audit");
    if (!mk || !sk || !audit) rc = WD_ENOMEM;
    if (rc == WD_OK && access(mk, F_OK) != 0) {
        if (getenv("WARDEN_MASTER_KEY_FILE") && *getenv("WARDEN_MASTER_KEY_FILE"))
            rc = wd_errf(err, errlen, WD_EINVAL, "WARDEN_MASTER_KEY_FILE names %s, which does not exist", mk);
        else {
            uint8_t key[32];
            randombytes_buf(key, sizeof key);
            rc = write_secret_file(mk, key, sizeof key, err, errlen);
            sodium_memzero(key, sizeof key);
            created = true;
        }
    }
    if (rc == WD_OK && access(sk, F_OK) != 0) {
        uint8_t pk[32], skb[64];
        crypto_sign_keypair(pk, skb);
        rc = write_secret_file(sk, skb, sizeof skb, err, errlen);
        sodium_memzero(skb, sizeof skb);
        created = true;
    }
    if (rc == WD_OK && stat(audit, &st) != 0) {
        if (mkdir(audit, 0700) != 0) rc = wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", audit, strerror(errno));
        created = true;
    }
    if (rc == WD_OK) {
        char *db = path_join(dir, "warden.db");
        bool had_db = db && access(db, F_OK) == 0;
        free(db);
        wd_store_t *s = NULL;
        if (!had_db) {
            wd_store_t tmp;
            memset(&tmp, 0, sizeof tmp);
            rc = open_db(&tmp, dir, true, err, errlen);
            if (tmp.db) sqlite3_close(tmp.db);
            created = true;
        } else {
            rc = wd_store_open(dir, &s, err, errlen); /* runs pending migrations, checks keys */
            wd_store_close(s);
        }
    }
    free(owned);
    free(sk);
    free(audit);
    if (rc != WD_OK) return rc;
    return created ? WD_OK : WD_EEXIST;
}

void wd_store_paserk_pid(const uint8_t pk[32], char out[64])
{
    char b64[64], pub[96];
    sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int n = snprintf(pub, sizeof pub, "k4.pid.k4.public.%s", b64);
    uint8_t d[33];
    crypto_generichash(d, sizeof d, (const uint8_t *)pub, (size_t)n, NULL, 0);
    /* 33 bytes -> 44 base64url characters: "k4.pid." + 44 + NUL fits in 64 */
    memcpy(out, "k4.pid.", 7);
    sodium_bin2base64(out + 7, 64 - 7, d, sizeof d, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int wd_store_open(const char *dir, wd_store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (sodium_init() < 0) return wd_errf(err, errlen, WD_EIO, "libsodium failed to initialise");
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return wd_errf(err, errlen, WD_ENOTFOUND, "state directory %s does not exist; run: warden init --state-dir %s",
                       dir, dir);
    /* the same rule as wd_store_init: a directory init would refuse must not be served from either */
    if (st.st_mode & 077)
        return wd_errf(err, errlen, WD_EINVAL, "%s is accessible by group or others (mode %03o); run chmod 700 %s",
                       dir, (unsigned)(st.st_mode & 0777), dir);
    wd_store_t *s = sodium_malloc(sizeof *s);
    if (!s) return WD_ENOMEM;
    memset(s, 0, sizeof *s);
    s->dir = strdup(dir);
    char *owned, *sk = path_join(dir, "signing.key");
    const char *mk = master_key_path(dir, &owned);
    int rc = !s->dir || !sk || !mk ? WD_ENOMEM : WD_OK;
    if (rc == WD_OK) rc = read_secret_file(mk, s->master, sizeof s->master, err, errlen);
    if (rc == WD_OK) rc = read_secret_file(sk, s->sign_sk, sizeof s->sign_sk, err, errlen);
    free(owned);
    free(sk);
    if (rc == WD_OK) {
        crypto_sign_ed25519_sk_to_pk(s->sign_pk, s->sign_sk);
        wd_store_paserk_pid(s->sign_pk, s->kid);
        crypto_kdf_derive_from_key(s->key_hash_key, 32, 1, "wdapikey", s->master);
        crypto_kdf_derive_from_key(s->totp_key, 32, 2, "wdtotp__", s->master);
        crypto_kdf_derive_from_key(s->recovery_key, 32, 3, "wdrecov_", s->master);
        crypto_kdf_derive_from_key(s->guard_hash_key, 32, 4, "wdguardh", s->master);
        char *db = path_join(dir, "warden.db");
        if (!db) rc = WD_ENOMEM;
        else if (access(db, F_OK) != 0)
            rc = wd_errf(err, errlen, WD_ENOTFOUND, "%s does not exist; run: warden init --state-dir %s", db, dir);
        free(db);
    }
    if (rc == WD_OK) rc = open_db(s, dir, false, err, errlen);
    if (rc != WD_OK) {
        wd_store_close(s);
        return rc;
    }
    *out = s;
    return WD_OK;
}

void wd_store_close(wd_store_t *s)
{
    if (!s) return;
    if (s->db) sqlite3_close(s->db);
    free(s->dir);
    sodium_free(s); /* zeroes the keys */
}

int64_t wd_store_data_version(wd_store_t *s)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK) return -1;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

int wd_store_exec(wd_store_t *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        wd_errf(err, errlen, WD_EIO, "database: %s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return WD_EIO;
    }
    return WD_OK;
}

/* ---- admin log -------------------------------------------------------------------------------------- */

int wd_store_admin_log_open(const char *dir, char *err, size_t errlen)
{
    char *adir = path_join(dir, "audit"), *p = path_join(dir, WD_STORE_ADMIN_LOG);
    int rc = WD_OK;
    if (!adir || !p) rc = WD_ENOMEM;
    else if (mkdir(adir, 0700) != 0 && errno != EEXIST)
        rc = wd_errf(err, errlen, WD_EIO, "cannot create %s: %s", adir, strerror(errno));
    else {
        int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) rc = wd_errf(err, errlen, WD_EIO, "cannot open the admin log %s: %s", p, strerror(errno));
        else rc = fd;
    }
    free(adir);
    free(p);
    return rc;
}

int wd_store_admin_log_write(int fd, const char *data, size_t len)
{
    /* one write per call: with O_APPEND a whole line lands after every earlier one, never inside it */
    ssize_t n;
    do n = write(fd, data, len);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)len) return WD_EIO;
    return fsync(fd) == 0 ? WD_OK : WD_EIO;
}

int wd_store_admin_log_append(const char *dir, const char *data, size_t len, char *err, size_t errlen)
{
    int fd = wd_store_admin_log_open(dir, err, errlen);
    if (fd < 0) return fd;
    int rc = wd_store_admin_log_write(fd, data, len);
    if (rc) wd_errf(err, errlen, rc, "cannot write the admin log in %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* ---- statements --------------------------------------------------------------------------------- */

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t n)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

/* Runs a prepared write; returns WD_ENOTFOUND when it changed no row and `must_change` is set. */
static int step_done(wd_store_t *s, sqlite3_stmt *st, bool must_change, char *err, size_t errlen, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sqlerr(s, err, errlen, what);
    if (must_change && sqlite3_changes(s->db) == 0) return wd_errf(err, errlen, WD_ENOTFOUND, "%s: not found", what);
    return WD_OK;
}

void wd_key_rec_free(wd_key_rec_t *k)
{
    free(k->roles);
    free(k->models);
    free(k->ips);
    free(k->limits);
    k->roles = k->models = k->ips = k->limits = NULL;
}

int wd_store_key_insert(wd_store_t *s, const wd_key_rec_t *k, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO api_keys (id, name, hash, roles, models, ips, created_at, expires_at, limits) "
                           "VALUES (?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return sqlerr(s, err, errlen, "adding key");
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, k->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 3, k->hash, 32, SQLITE_TRANSIENT);
    bind_text(st, 4, k->roles);
    bind_text(st, 5, k->models);
    bind_text(st, 6, k->ips);
    sqlite3_bind_int64(st, 7, k->created_at);
    sqlite3_bind_int64(st, 8, k->expires_at);
    bind_text(st, 9, k->limits);
    return step_done(s, st, false, err, errlen, "adding key");
}

#define KEY_COLS                                                                                                   \
    "id, name, hash, roles, models, ips, created_at, expires_at, revoked_at, grace_until, rotated_to, last_used_at, " \
    "limits"

static void key_from_row(sqlite3_stmt *st, wd_key_rec_t *k)
{
    memset(k, 0, sizeof *k);
    col_copy(st, 0, k->id, sizeof k->id);
    col_copy(st, 1, k->name, sizeof k->name);
    if (sqlite3_column_bytes(st, 2) == 32) memcpy(k->hash, sqlite3_column_blob(st, 2), 32);
    k->roles = col_dup(st, 3);
    k->models = col_dup(st, 4);
    k->ips = col_dup(st, 5);
    k->created_at = sqlite3_column_int64(st, 6);
    k->expires_at = sqlite3_column_int64(st, 7);
    k->revoked_at = sqlite3_column_int64(st, 8);
    k->grace_until = sqlite3_column_int64(st, 9);
    col_copy(st, 10, k->rotated_to, sizeof k->rotated_to);
    k->last_used_at = sqlite3_column_int64(st, 11);
    k->limits = col_dup(st, 12);
}

int wd_store_key_get(wd_store_t *s, const char *id, wd_key_rec_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) key_from_row(st, out);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? WD_OK : rc == SQLITE_DONE ? WD_ENOTFOUND : WD_EIO;
}

int wd_store_key_each(wd_store_t *s, int (*cb)(void *ud, const wd_key_rec_t *k), void *ud)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " KEY_COLS " FROM api_keys ORDER BY created_at, id", -1, &st, NULL) !=
        SQLITE_OK)
        return WD_EIO;
    int rc, out = WD_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        wd_key_rec_t k;
        key_from_row(st, &k);
        out = cb(ud, &k);
        wd_key_rec_free(&k);
        if (out) break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) out = WD_EIO;
    sqlite3_finalize(st);
    return out;
}

int wd_store_key_revoke(wd_store_t *s, const char *id, int64_t now, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at = 0", -1, &st,
                           NULL) != SQLITE_OK)
        return sqlerr(s, err, errlen, "revoking key");
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    return step_done(s, st, true, err, errlen, "revoking key (unknown or already revoked)");
}

int wd_store_key_rotate(wd_store_t *s, const char *old_id, const wd_key_rec_t *new_key, int64_t grace_until,
                        char *err, size_t errlen)
{
    if (wd_store_exec(s, "BEGIN IMMEDIATE;", err, errlen)) return WD_EIO;
    sqlite3_stmt *st;
    int rc = WD_OK;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE api_keys SET rotated_to = ?, grace_until = ? "
                           "WHERE id = ? AND revoked_at = 0 AND rotated_to = ''",
                           -1, &st, NULL) != SQLITE_OK)
        rc = sqlerr(s, err, errlen, "rotating key");
    else {
        sqlite3_bind_text(st, 1, new_key->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, grace_until);
        sqlite3_bind_text(st, 3, old_id, -1, SQLITE_TRANSIENT);
        rc = step_done(s, st, true, err, errlen, "rotating key (unknown, revoked or already rotated)");
    }
    if (rc == WD_OK) rc = wd_store_key_insert(s, new_key, err, errlen);
    if (rc == WD_OK) return wd_store_exec(s, "COMMIT;", err, errlen);
    wd_store_exec(s, "ROLLBACK;", NULL, 0);
    return rc;
}

int wd_store_key_touch(wd_store_t *s, const char *const *ids, const int64_t *times, size_t n)
{
    if (!n) return WD_OK;
    if (wd_store_exec(s, "BEGIN;", NULL, 0)) return WD_EIO;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND last_used_at < ?", -1, &st,
                           NULL) != SQLITE_OK) {
        wd_store_exec(s, "ROLLBACK;", NULL, 0);
        return WD_EIO;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, times[i]);
        sqlite3_bind_text(st, 2, ids[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, times[i]);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return wd_store_exec(s, "COMMIT;", NULL, 0);
}

/* ---- users --------------------------------------------------------------------------------------- */

void wd_user_rec_free(wd_user_rec_t *u)
{
    free(u->roles);
    u->roles = NULL;
    if (u->totp_sealed) sodium_memzero(u->totp_sealed, u->totp_sealed_len);
    free(u->totp_sealed);
    u->totp_sealed = NULL;
    sodium_memzero(u->pw_hash, sizeof u->pw_hash);
}

int wd_store_user_insert(wd_store_t *s, const wd_user_rec_t *u, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO users (name, roles, pw_hash, created_at) VALUES (?,?,?,?)", -1, &st,
                           NULL) != SQLITE_OK)
        return sqlerr(s, err, errlen, "adding user");
    sqlite3_bind_text(st, 1, u->name, -1, SQLITE_TRANSIENT);
    bind_text(st, 2, u->roles);
    sqlite3_bind_text(st, 3, u->pw_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, u->created_at);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_CONSTRAINT) return wd_errf(err, errlen, WD_EEXIST, "user %s already exists", u->name);
    if (rc != SQLITE_DONE) return sqlerr(s, err, errlen, "adding user");
    return WD_OK;
}

#define USER_COLS                                                                                                  \
    "id, name, roles, pw_hash, totp_sealed, mfa_enabled, totp_last_step, failed_count, locked_until, disabled_at, " \
    "created_at"

static void user_from_row(sqlite3_stmt *st, wd_user_rec_t *u)
{
    memset(u, 0, sizeof *u);
    u->id = sqlite3_column_int64(st, 0);
    col_copy(st, 1, u->name, sizeof u->name);
    u->roles = col_dup(st, 2);
    col_copy(st, 3, u->pw_hash, sizeof u->pw_hash);
    int n = sqlite3_column_bytes(st, 4);
    if (n > 0) {
        u->totp_sealed = malloc((size_t)n);
        if (u->totp_sealed) {
            memcpy(u->totp_sealed, sqlite3_column_blob(st, 4), (size_t)n);
            u->totp_sealed_len = (size_t)n;
        }
    }
    u->mfa_enabled = sqlite3_column_int(st, 5) != 0;
    u->totp_last_step = sqlite3_column_int64(st, 6);
    u->failed_count = sqlite3_column_int64(st, 7);
    u->locked_until = sqlite3_column_int64(st, 8);
    u->disabled_at = sqlite3_column_int64(st, 9);
    u->created_at = sqlite3_column_int64(st, 10);
}

int wd_store_user_get(wd_store_t *s, const char *name, wd_user_rec_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " USER_COLS " FROM users WHERE name = ?", -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) user_from_row(st, out);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? WD_OK : rc == SQLITE_DONE ? WD_ENOTFOUND : WD_EIO;
}

int wd_store_user_each(wd_store_t *s, int (*cb)(void *ud, const wd_user_rec_t *u), void *ud)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " USER_COLS " FROM users ORDER BY name", -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    int rc, out = WD_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        wd_user_rec_t u;
        user_from_row(st, &u);
        out = cb(ud, &u);
        wd_user_rec_free(&u);
        if (out) break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) out = WD_EIO;
    sqlite3_finalize(st);
    return out;
}

static int user_update(wd_store_t *s, const char *sql, const char *name, const char *text, int64_t num, char *err,
                       size_t errlen, const char *what)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return sqlerr(s, err, errlen, what);
    int i = 1;
    if (text) sqlite3_bind_text(st, i++, text, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_int64(st, i++, num);
    sqlite3_bind_text(st, i, name, -1, SQLITE_TRANSIENT);
    return step_done(s, st, true, err, errlen, what);
}

int wd_store_user_set_password(wd_store_t *s, const char *name, const char *pw_hash, char *err, size_t errlen)
{
    return user_update(s, "UPDATE users SET pw_hash = ?, failed_count = 0, locked_until = 0 WHERE name = ?", name,
                       pw_hash, 0, err, errlen, "changing password (unknown user)");
}

int wd_store_user_disable(wd_store_t *s, const char *name, int64_t now, char *err, size_t errlen)
{
    return user_update(s, "UPDATE users SET disabled_at = ? WHERE name = ? AND disabled_at = 0", name, NULL, now, err,
                       errlen, "disabling user (unknown or already disabled)");
}

int wd_store_user_set_mfa(wd_store_t *s, int64_t user_id, const uint8_t *sealed, size_t len,
                          const uint8_t (*codes)[32], size_t ncodes, char *err, size_t errlen)
{
    if (wd_store_exec(s, "BEGIN IMMEDIATE;", err, errlen)) return WD_EIO;
    sqlite3_stmt *st = NULL;
    int rc = WD_OK;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE users SET totp_sealed = ?, mfa_enabled = 1, totp_last_step = 0 WHERE id = ?", -1,
                           &st, NULL) != SQLITE_OK)
        rc = sqlerr(s, err, errlen, "enrolling MFA");
    else {
        sqlite3_bind_blob(st, 1, sealed, (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, user_id);
        rc = step_done(s, st, true, err, errlen, "enrolling MFA (unknown user)");
    }
    if (rc == WD_OK) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM recovery_codes WHERE user_id = %lld;", (long long)user_id);
        rc = wd_store_exec(s, sql, err, errlen);
    }
    for (size_t i = 0; rc == WD_OK && i < ncodes; i++) {
        if (sqlite3_prepare_v2(s->db, "INSERT INTO recovery_codes (user_id, hash) VALUES (?, ?)", -1, &st, NULL) !=
            SQLITE_OK) {
            rc = sqlerr(s, err, errlen, "storing recovery codes");
            break;
        }
        sqlite3_bind_int64(st, 1, user_id);
        sqlite3_bind_blob(st, 2, codes[i], 32, SQLITE_TRANSIENT);
        rc = step_done(s, st, false, err, errlen, "storing recovery codes");
    }
    if (rc == WD_OK) return wd_store_exec(s, "COMMIT;", err, errlen);
    wd_store_exec(s, "ROLLBACK;", NULL, 0);
    return rc;
}

int wd_store_user_login_failed(wd_store_t *s, int64_t user_id, int64_t now, const wd_lockout_t *policy,
                               int64_t *failed_count, int64_t *locked_until)
{
    /* One UPDATE, so the read-increment-write and the lock decision are atomic under SQLite's write
     * lock whatever the threads and processes sharing the database. SET expressions see the old row;
     * the shift is capped at 30 so lockout_ms (< 2^27) << 30 cannot overflow before MIN caps it. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE users SET failed_count = failed_count + 1, locked_until = CASE "
                           "WHEN failed_count + 1 >= ?1 THEN MAX(locked_until, ?2 + "
                           "(MIN(?3 << MIN(failed_count + 1 - ?1, 30), ?4) + 999) / 1000) "
                           "ELSE locked_until END WHERE id = ?5 RETURNING failed_count, locked_until",
                           -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_int64(st, 1, policy->max_failures);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, policy->lockout_ms);
    sqlite3_bind_int64(st, 4, policy->lockout_max_ms);
    sqlite3_bind_int64(st, 5, user_id);
    int rc = sqlite3_step(st);
    int out = rc == SQLITE_ROW ? WD_OK : rc == SQLITE_DONE ? WD_ENOTFOUND : WD_EIO;
    if (rc == SQLITE_ROW) {
        if (failed_count) *failed_count = sqlite3_column_int64(st, 0);
        if (locked_until) *locked_until = sqlite3_column_int64(st, 1);
        /* RETURNING rows are all computed by the first step; the second finishes the statement */
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) out = WD_EIO;
    }
    sqlite3_finalize(st);
    return out;
}

int wd_store_user_login_ok(wd_store_t *s, int64_t user_id, int64_t totp_step, int64_t now)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE users SET failed_count = 0, locked_until = 0, "
                           "totp_last_step = MAX(totp_last_step, ?1) WHERE id = ?2 AND locked_until <= ?3 "
                           "AND (?1 = 0 OR totp_last_step < ?1)",
                           -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_int64(st, 1, totp_step);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, now);
    int rc = step_done(s, st, true, NULL, 0, "login");
    if (rc != WD_ENOTFOUND) return rc;
    /* nothing changed: say why (the update above decided; this read only names the reason) */
    if (sqlite3_prepare_v2(s->db, "SELECT locked_until FROM users WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_int64(st, 1, user_id);
    int step = sqlite3_step(st);
    int64_t until = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (step == SQLITE_DONE) return WD_ENOTFOUND;
    if (step != SQLITE_ROW) return WD_EIO;
    return until > now ? WD_EAGAIN : WD_EEXIST;
}

int wd_store_recovery_use(wd_store_t *s, int64_t user_id, const uint8_t hash[32], int64_t now)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND hash = ? AND used_at = 0", -1,
                           &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_blob(st, 3, hash, 32, SQLITE_TRANSIENT);
    return step_done(s, st, true, NULL, 0, "recovery code");
}

/* ---- tokens --------------------------------------------------------------------------------------- */

int wd_store_token_revoke(wd_store_t *s, const char *jti, int64_t expires_at, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) "
                           "ON CONFLICT (jti) DO UPDATE SET expires_at = MAX(expires_at, ?2)", -1, &st,
                           NULL) != SQLITE_OK)
        return sqlerr(s, err, errlen, "revoking token");
    sqlite3_bind_text(st, 1, jti, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, expires_at);
    return step_done(s, st, false, err, errlen, "revoking token");
}

int wd_store_revoked_each(wd_store_t *s, int64_t now, int (*cb)(void *ud, const char *jti), void *ud)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT jti FROM revoked_tokens WHERE expires_at >= ?", -1, &st, NULL) != SQLITE_OK)
        return WD_EIO;
    sqlite3_bind_int64(st, 1, now);
    int rc, out = WD_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        out = cb(ud, (const char *)sqlite3_column_text(st, 0));
        if (out) break;
    }
    /* a failed read must not look like "nothing is revoked" */
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) out = WD_EIO;
    sqlite3_finalize(st);
    return out;
}

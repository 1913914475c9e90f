/* store: the state directory (modes, key files, idempotent init, WARDEN_MASTER_KEY_FILE), the PASERK
 * kid against the official k4.pid vectors, every key/user/token operation including the
 * compare-and-set and single-use rules, cross-connection change detection and refusing a database
 * newer than the code. Each test works in its own mkdtemp directory. */
#include <setjmp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "store/store.h"

#define PID_JSON "../shared/data/conformance/paseto/k4.pid.json"

typedef struct {
    char root[64];  /* mkdtemp directory */
    char dir[96];   /* root/state: created by wd_store_init */
    char path[160]; /* scratch for file names */
    char err[512];
} fx_t;

static const char *fpath(fx_t *f, const char *name)
{
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    return f->path;
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->root, sizeof f->root, "/tmp/wd_test_store_XXXXXX");
    if (!mkdtemp(f->root)) return -1;
    snprintf(f->dir, sizeof f->dir, "%s/state", f->root);
    unsetenv("WARDEN_MASTER_KEY_FILE");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];
    unsetenv("WARDEN_MASTER_KEY_FILE");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static void init_ok(fx_t *f)
{
    int rc = wd_store_init(f->dir, f->err, sizeof f->err);
    if (rc != WD_OK) fail_msg("wd_store_init: %d %s", rc, f->err);
}

static wd_store_t *open_ok(fx_t *f)
{
    wd_store_t *s = NULL;
    int rc = wd_store_open(f->dir, &s, f->err, sizeof f->err);
    if (rc != WD_OK) fail_msg("wd_store_open: %d %s", rc, f->err);
    assert_non_null(s);
    return s;
}

static void expect_open_fails(fx_t *f, int code, const char *want)
{
    wd_store_t *s = (wd_store_t *)0x1;
    f->err[0] = 0;
    int rc = wd_store_open(f->dir, &s, f->err, sizeof f->err);
    if (rc != code || !strstr(f->err, want))
        fail_msg("wd_store_open: got %d \"%s\", wanted %d with \"%s\"", rc, f->err, code, want);
    assert_null(s);
}

static void read_file(const char *path, uint8_t *out, size_t len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(out, 1, len, fp), len);
    assert_int_equal(fgetc(fp), EOF); /* exactly len bytes */
    fclose(fp);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
}

static void expect_mode(const char *path, mode_t type, unsigned mode, off_t size)
{
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("%s: missing", path);
    assert_int_equal(st.st_mode & S_IFMT, type);
    if ((st.st_mode & 0777) != mode) fail_msg("%s: mode %03o, wanted %03o", path, st.st_mode & 0777, mode);
    if (size >= 0) assert_int_equal(st.st_size, size);
}

/* ---- state directory ---------------------------------------------------------------------------- */

static void test_init_creates(void **state)
{
    fx_t *f = *state;
    mode_t old = umask(022); /* a common umask; the files must be private anyway */
    init_ok(f);
    umask(old);
    expect_mode(f->dir, S_IFDIR, 0700, -1);
    expect_mode(fpath(f, "master.key"), S_IFREG, 0600, 32);
    expect_mode(fpath(f, "signing.key"), S_IFREG, 0600, 64);
    expect_mode(fpath(f, "warden.db"), S_IFREG, 0600, -1);
    expect_mode(fpath(f, "audit"), S_IFDIR, 0700, -1);
    assert_int_equal(access(fpath(f, "master.key.tmp"), F_OK), -1); /* no temp file left behind */

    /* the signing key file is an Ed25519 secret key (seed || public key) */
    uint8_t sk[64], pk[32], seed_pk[32], master[32];
    read_file(fpath(f, "signing.key"), sk, sizeof sk);
    read_file(fpath(f, "master.key"), master, sizeof master);
    assert_int_equal(crypto_sign_ed25519_sk_to_pk(pk, sk), 0);
    uint8_t seed[32];
    crypto_sign_ed25519_sk_to_seed(seed, sk);
    uint8_t sk2[64];
    crypto_sign_seed_keypair(seed_pk, sk2, seed);
    assert_memory_equal(seed_pk, pk, 32);

    wd_store_t *s = open_ok(f);
    assert_string_equal(s->dir, f->dir);
    assert_memory_equal(s->master, master, 32);
    assert_memory_equal(s->sign_sk, sk, 64);
    assert_memory_equal(s->sign_pk, pk, 32);
    /* derived keys come from the master key and are distinct from it and from each other */
    uint8_t k[32];
    crypto_kdf_derive_from_key(k, 32, 1, "wdapikey", master);
    assert_memory_equal(s->key_hash_key, k, 32);
    assert_memory_not_equal(s->key_hash_key, s->totp_key, 32);
    assert_memory_not_equal(s->totp_key, s->recovery_key, 32);
    assert_memory_not_equal(s->key_hash_key, s->master, 32);
    wd_store_close(s);
    wd_store_close(NULL);
}

static void test_init_twice(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    uint8_t mk1[32], sk1[64], mk2[32], sk2[64];
    read_file(fpath(f, "master.key"), mk1, sizeof mk1);
    read_file(fpath(f, "signing.key"), sk1, sizeof sk1);
    wd_store_t *s = open_ok(f);
    char kid[64];
    snprintf(kid, sizeof kid, "%s", s->kid);
    wd_key_rec_t k = {.id = "k1", .name = "kept", .roles = "[\"a\"]", .created_at = 1};
    assert_int_equal(wd_store_key_insert(s, &k, f->err, sizeof f->err), WD_OK);
    wd_store_close(s);

    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EEXIST);
    read_file(fpath(f, "master.key"), mk2, sizeof mk2);
    read_file(fpath(f, "signing.key"), sk2, sizeof sk2);
    assert_memory_equal(mk1, mk2, 32);
    assert_memory_equal(sk1, sk2, 64);
    s = open_ok(f);
    assert_string_equal(s->kid, kid);
    wd_key_rec_t got;
    assert_int_equal(wd_store_key_get(s, "k1", &got), WD_OK); /* the database was kept too */
    wd_key_rec_free(&got);
    wd_store_close(s);

    /* a missing piece is recreated without touching the keys */
    assert_int_equal(rmdir(fpath(f, "audit")), 0);
    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_OK);
    expect_mode(fpath(f, "audit"), S_IFDIR, 0700, -1);
    read_file(fpath(f, "master.key"), mk2, sizeof mk2);
    assert_memory_equal(mk1, mk2, 32);

    /* a path that is a file is not a state directory */
    snprintf(f->path, sizeof f->path, "%s/plain", f->root);
    write_file(f->path, "x", 1, 0600);
    assert_int_equal(wd_store_init(f->path, f->err, sizeof f->err), WD_EINVAL);
    assert_non_null(strstr(f->err, "is not a directory"));
}

static void test_permissions_refused(void **state)
{
    fx_t *f = *state;
    init_ok(f);

    /* group-readable state directory */
    assert_int_equal(chmod(f->dir, 0750), 0);
    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EINVAL);
    assert_non_null(strstr(f->err, "accessible by group or others (mode 750)"));
    assert_non_null(strstr(f->err, "chmod 700"));
    expect_open_fails(f, WD_EINVAL, "accessible by group or others (mode 750)");
    assert_int_equal(chmod(f->dir, 0700), 0);

    /* group-readable key files */
    static const char *const keys[] = {"master.key", "signing.key"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(chmod(fpath(f, keys[i]), 0640), 0);
        char want[256];
        snprintf(want, sizeof want, "%s is readable by group or others (mode 640); run chmod 600", f->path);
        expect_open_fails(f, WD_EINVAL, want);
        assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EINVAL);
        assert_non_null(strstr(f->err, want));
        assert_int_equal(chmod(fpath(f, keys[i]), 0604), 0); /* others only */
        expect_open_fails(f, WD_EINVAL, "readable by group or others (mode 604)");
        assert_int_equal(chmod(fpath(f, keys[i]), 0600), 0);
    }
    wd_store_close(open_ok(f));

    /* a truncated key file is refused, not padded */
    uint8_t mk[32];
    read_file(fpath(f, "master.key"), mk, sizeof mk);
    write_file(fpath(f, "master.key"), mk, 31, 0600);
    expect_open_fails(f, WD_EINVAL, "must be exactly 32 bytes (it has 31)");
    write_file(fpath(f, "master.key"), mk, 32, 0600);
    wd_store_close(open_ok(f));

    /* no state directory, or one without a database */
    snprintf(f->dir, sizeof f->dir, "%s/none", f->root);
    expect_open_fails(f, WD_ENOTFOUND, "warden init --state-dir");
}

static void test_master_key_env(void **state)
{
    fx_t *f = *state;
    char ext[128];
    snprintf(ext, sizeof ext, "%s/external.key", f->root);

    /* named but missing: an error, and no key is invented in its place */
    setenv("WARDEN_MASTER_KEY_FILE", ext, 1);
    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EINVAL);
    assert_non_null(strstr(f->err, "WARDEN_MASTER_KEY_FILE"));
    assert_non_null(strstr(f->err, "does not exist"));
    assert_int_equal(access(ext, F_OK), -1);
    unsetenv("WARDEN_MASTER_KEY_FILE");

    /* the default master key */
    init_ok(f);
    wd_store_t *s = open_ok(f);
    uint8_t def_hash[32], def_totp[32], def_recovery[32];
    memcpy(def_hash, s->key_hash_key, 32);
    memcpy(def_totp, s->totp_key, 32);
    memcpy(def_recovery, s->recovery_key, 32);
    wd_store_close(s);

    /* a valid external key is used instead of master.key */
    uint8_t key[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(0xa0 + i);
    write_file(ext, key, sizeof key, 0600);
    setenv("WARDEN_MASTER_KEY_FILE", ext, 1);
    s = open_ok(f);
    assert_memory_equal(s->master, key, 32);
    uint8_t want[32];
    crypto_kdf_derive_from_key(want, 32, 1, "wdapikey", key);
    assert_memory_equal(s->key_hash_key, want, 32);
    crypto_kdf_derive_from_key(want, 32, 2, "wdtotp__", key);
    assert_memory_equal(s->totp_key, want, 32);
    crypto_kdf_derive_from_key(want, 32, 3, "wdrecov_", key);
    assert_memory_equal(s->recovery_key, want, 32);
    assert_memory_not_equal(s->key_hash_key, def_hash, 32);
    assert_memory_not_equal(s->totp_key, def_totp, 32);
    assert_memory_not_equal(s->recovery_key, def_recovery, 32);
    wd_store_close(s);
    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EEXIST);

    /* the external file obeys the same rules */
    assert_int_equal(chmod(ext, 0644), 0);
    expect_open_fails(f, WD_EINVAL, "readable by group or others (mode 644)");
    write_file(ext, key, 16, 0600);
    expect_open_fails(f, WD_EINVAL, "must be exactly 32 bytes");
    unlink(ext);
    expect_open_fails(f, WD_EIO, "cannot open");

    /* a fresh directory initialised with an external key gets no master.key of its own */
    write_file(ext, key, sizeof key, 0600);
    snprintf(f->dir, sizeof f->dir, "%s/state2", f->root);
    init_ok(f);
    assert_int_equal(access(fpath(f, "master.key"), F_OK), -1);
    s = open_ok(f);
    assert_memory_equal(s->master, key, 32);
    wd_store_close(s);
}

/* ---- PASERK kid ------------------------------------------------------------------------------------ */

/* The k4.pid method, written out independently of store.c. */
static void pid_reference(const uint8_t pk[32], char out[64])
{
    char b64[64], msg[96];
    sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int n = snprintf(msg, sizeof msg, "k4.pid.k4.public.%s", b64);
    uint8_t d[33];
    crypto_generichash(d, sizeof d, (const uint8_t *)msg, (size_t)n, NULL, 0);
    memcpy(out, "k4.pid.", 7);
    sodium_bin2base64(out + 7, 64 - 7, d, sizeof d, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static bool is_b64url(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '_'))
            return false;
    return true;
}

static void test_kid_vectors(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(PID_JSON, 0, &jerr);
    if (!root) fail_msg("cannot load %s: %s (run from the project root)", PID_JSON, jerr.text);
    size_t i, checked = 0;
    json_t *t;
    bool saw2 = false;
    json_array_foreach(json_object_get(root, "tests"), i, t)
    {
        if (json_is_true(json_object_get(t, "expect-fail"))) continue; /* malformed keys: not a pk[32] */
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *hex = json_string_value(json_object_get(t, "key"));
        const char *want = json_string_value(json_object_get(t, "paserk"));
        assert_non_null(name);
        assert_non_null(hex);
        assert_non_null(want);
        uint8_t pk[32];
        size_t got = 0;
        assert_int_equal(sodium_hex2bin(pk, sizeof pk, hex, strlen(hex), NULL, &got, NULL), 0);
        assert_int_equal(got, 32);
        char a[64], b[64];
        memset(a, 'X', sizeof a);
        wd_store_paserk_pid(pk, a);
        pid_reference(pk, b);
        if (strcmp(a, want) != 0) fail_msg("%s: wd_store_paserk_pid gave %s, wanted %s", name, a, want);
        assert_string_equal(b, want);
        if (strcmp(name, "k4.pid-2") == 0) {
            assert_string_equal(a, "k4.pid.9ShR3xc8-qVJ_di0tc9nx0IDIqbatdeM2mqLFBJsKRHs");
            saw2 = true;
        }
        checked++;
    }
    assert_true(saw2);
    assert_int_equal(checked, 3);
    json_decref(root);
}

static void test_kid_of_store(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    assert_int_equal(strlen(s->kid), 7 + 44);
    assert_memory_equal(s->kid, "k4.pid.", 7);
    assert_true(is_b64url(s->kid + 7, 44));
    char want[64];
    uint8_t sk[64];
    read_file(fpath(f, "signing.key"), sk, sizeof sk);
    pid_reference(sk + 32, want); /* the public half of the key on disk */
    assert_string_equal(s->kid, want);
    wd_store_close(s);
}

/* ---- API keys -------------------------------------------------------------------------------------- */

static wd_key_rec_t mkkey(const char *id, const char *name, int64_t created, uint8_t fill)
{
    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    snprintf(k.id, sizeof k.id, "%s", id);
    snprintf(k.name, sizeof k.name, "%s", name);
    memset(k.hash, fill, sizeof k.hash);
    k.roles = "[\"clinician\"]";
    k.created_at = created;
    return k;
}

typedef struct {
    char ids[8][128];
    int64_t revoked[8];
    size_t n;
    size_t stop_after;
} collect_t;

static int collect_key(void *ud, const wd_key_rec_t *k)
{
    collect_t *c = ud;
    if (c->n >= 8) return -99;
    snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", k->id);
    c->revoked[c->n] = k->revoked_at;
    c->n++;
    return c->stop_after && c->n == c->stop_after ? 42 : 0;
}

static void test_keys(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    wd_key_rec_t a = mkkey("kA", "app-a", 200, 0xaa), b = mkkey("kB", "app-b", 100, 0xbb);
    a.models = "[\"med-large\"]";
    a.ips = "[\"10.0.0.0/8\"]";
    a.expires_at = 5000;
    assert_int_equal(wd_store_key_insert(s, &a, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_key_insert(s, &b, f->err, sizeof f->err), WD_OK);
    assert_int_not_equal(wd_store_key_insert(s, &b, f->err, sizeof f->err), WD_OK); /* same id */

    wd_key_rec_t g;
    assert_int_equal(wd_store_key_get(s, "kA", &g), WD_OK);
    assert_string_equal(g.id, "kA");
    assert_string_equal(g.name, "app-a");
    assert_memory_equal(g.hash, a.hash, 32);
    assert_string_equal(g.roles, "[\"clinician\"]");
    assert_string_equal(g.models, "[\"med-large\"]");
    assert_string_equal(g.ips, "[\"10.0.0.0/8\"]");
    assert_int_equal(g.created_at, 200);
    assert_int_equal(g.expires_at, 5000);
    assert_int_equal(g.revoked_at, 0);
    assert_int_equal(g.grace_until, 0);
    assert_int_equal(g.last_used_at, 0);
    assert_string_equal(g.rotated_to, "");
    wd_key_rec_free(&g);
    assert_null(g.roles);
    assert_int_equal(wd_store_key_get(s, "kB", &g), WD_OK);
    assert_null(g.models); /* no narrowing stays NULL, not "" */
    assert_null(g.ips);
    wd_key_rec_free(&g);
    assert_int_equal(wd_store_key_get(s, "nope", &g), WD_ENOTFOUND);

    /* each: creation order, revoked keys included, a non-zero callback result stops and is returned */
    collect_t c = {0};
    assert_int_equal(wd_store_key_each(s, collect_key, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ids[0], "kB");
    assert_string_equal(c.ids[1], "kA");

    assert_int_equal(wd_store_key_revoke(s, "kB", 300, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_key_revoke(s, "kB", 400, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_non_null(strstr(f->err, "already revoked"));
    assert_int_equal(wd_store_key_revoke(s, "nope", 400, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_int_equal(wd_store_key_get(s, "kB", &g), WD_OK);
    assert_int_equal(g.revoked_at, 300); /* the second revoke did not move it */
    wd_key_rec_free(&g);
    memset(&c, 0, sizeof c);
    assert_int_equal(wd_store_key_each(s, collect_key, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.revoked[0], 300);
    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    assert_int_equal(wd_store_key_each(s, collect_key, &c), 42);
    assert_int_equal(c.n, 1);

    /* touch: batched, only moves forward, unknown ids are ignored */
    const char *ids[] = {"kA", "nope", "kB"};
    const int64_t times[] = {1000, 1000, 900};
    assert_int_equal(wd_store_key_touch(s, ids, times, 3), WD_OK);
    const int64_t older[] = {500, 500, 950};
    assert_int_equal(wd_store_key_touch(s, ids, older, 3), WD_OK);
    assert_int_equal(wd_store_key_touch(s, ids, older, 0), WD_OK);
    assert_int_equal(wd_store_key_get(s, "kA", &g), WD_OK);
    assert_int_equal(g.last_used_at, 1000);
    wd_key_rec_free(&g);
    assert_int_equal(wd_store_key_get(s, "kB", &g), WD_OK);
    assert_int_equal(g.last_used_at, 950);
    wd_key_rec_free(&g);
    assert_int_equal(wd_store_key_get(s, "nope", &g), WD_ENOTFOUND); /* touch created nothing */
    wd_store_close(s);
}

static void test_key_rotate(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    wd_key_rec_t old = mkkey("kOld", "app", 100, 1), nk = mkkey("kNew", "app", 200, 2),
                 n2 = mkkey("kNew2", "app", 300, 3), dup = mkkey("kOld", "dup", 300, 4);
    assert_int_equal(wd_store_key_insert(s, &old, f->err, sizeof f->err), WD_OK);

    /* the update fails (unknown id): nothing is inserted */
    assert_int_equal(wd_store_key_rotate(s, "ghost", &nk, 999, f->err, sizeof f->err), WD_ENOTFOUND);
    wd_key_rec_t g;
    assert_int_equal(wd_store_key_get(s, "kNew", &g), WD_ENOTFOUND);

    /* the insert fails (id taken): the update is rolled back */
    assert_int_not_equal(wd_store_key_rotate(s, "kOld", &dup, 999, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_key_get(s, "kOld", &g), WD_OK);
    assert_string_equal(g.rotated_to, "");
    assert_int_equal(g.grace_until, 0);
    assert_string_equal(g.name, "app");
    wd_key_rec_free(&g);

    assert_int_equal(wd_store_key_rotate(s, "kOld", &nk, 999, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_key_get(s, "kOld", &g), WD_OK);
    assert_string_equal(g.rotated_to, "kNew");
    assert_int_equal(g.grace_until, 999);
    assert_int_equal(g.revoked_at, 0);
    wd_key_rec_free(&g);
    assert_int_equal(wd_store_key_get(s, "kNew", &g), WD_OK);
    assert_memory_equal(g.hash, nk.hash, 32);
    assert_int_equal(g.created_at, 200);
    wd_key_rec_free(&g);

    /* rotating the same key again fails, and its would-be successor is not inserted */
    assert_int_equal(wd_store_key_rotate(s, "kOld", &n2, 1999, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_non_null(strstr(f->err, "already rotated"));
    assert_int_equal(wd_store_key_get(s, "kNew2", &g), WD_ENOTFOUND);
    assert_int_equal(wd_store_key_get(s, "kOld", &g), WD_OK);
    assert_string_equal(g.rotated_to, "kNew");
    assert_int_equal(g.grace_until, 999);
    wd_key_rec_free(&g);

    /* a revoked key cannot be rotated */
    assert_int_equal(wd_store_key_revoke(s, "kNew", 500, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_key_rotate(s, "kNew", &n2, 1999, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_int_equal(wd_store_key_get(s, "kNew2", &g), WD_ENOTFOUND);

    /* no transaction was left open by the failures: a plain write still works */
    assert_int_equal(wd_store_key_insert(s, &n2, f->err, sizeof f->err), WD_OK);
    wd_store_close(s);
}

/* ---- users ------------------------------------------------------------------------------------------ */

static int collect_user(void *ud, const wd_user_rec_t *u)
{
    collect_t *c = ud;
    if (c->n >= 8) return -99;
    snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", u->name);
    c->n++;
    return 0;
}

static void test_users(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    wd_user_rec_t u;
    memset(&u, 0, sizeof u);
    snprintf(u.name, sizeof u.name, "zoe");
    u.roles = "[\"clinician\"]";
    snprintf(u.pw_hash, sizeof u.pw_hash, "$argon2id$v=19$m=65536,t=2,p=1$aaaa$bbbb");
    u.created_at = 77;
    assert_int_equal(wd_store_user_insert(s, &u, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_user_insert(s, &u, f->err, sizeof f->err), WD_EEXIST);
    assert_non_null(strstr(f->err, "user zoe already exists"));
    snprintf(u.name, sizeof u.name, "adam");
    u.roles = "[]";
    assert_int_equal(wd_store_user_insert(s, &u, f->err, sizeof f->err), WD_OK);

    wd_user_rec_t g;
    assert_int_equal(wd_store_user_get(s, "zoe", &g), WD_OK);
    int64_t zoe = g.id;
    assert_true(zoe > 0);
    assert_string_equal(g.name, "zoe");
    assert_string_equal(g.roles, "[\"clinician\"]");
    assert_string_equal(g.pw_hash, "$argon2id$v=19$m=65536,t=2,p=1$aaaa$bbbb");
    assert_null(g.totp_sealed);
    assert_int_equal(g.totp_sealed_len, 0);
    assert_false(g.mfa_enabled);
    assert_int_equal(g.totp_last_step, 0);
    assert_int_equal(g.failed_count, 0);
    assert_int_equal(g.locked_until, 0);
    assert_int_equal(g.disabled_at, 0);
    assert_int_equal(g.created_at, 77);
    wd_user_rec_free(&g);
    assert_null(g.roles);
    assert_int_equal(wd_store_user_get(s, "nobody", &g), WD_ENOTFOUND);

    collect_t c = {0};
    assert_int_equal(wd_store_user_each(s, collect_user, &c), WD_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ids[0], "adam"); /* by name */
    assert_string_equal(c.ids[1], "zoe");

    /* failures, then a password change clears the lock */
    const wd_lockout_t lp = {3, 4000, 60000};
    for (int i = 0; i < 3; i++)
        assert_int_equal(wd_store_user_login_failed(s, zoe, 1000, &lp, NULL, NULL), WD_OK);
    assert_int_equal(wd_store_user_get(s, "zoe", &g), WD_OK);
    assert_int_equal(g.failed_count, 3);
    assert_int_equal(g.locked_until, 1004);
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_set_password(s, "zoe", "$argon2id$new", f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_user_set_password(s, "nobody", "$argon2id$new", f->err, sizeof f->err),
                     WD_ENOTFOUND);
    assert_int_equal(wd_store_user_get(s, "zoe", &g), WD_OK);
    assert_string_equal(g.pw_hash, "$argon2id$new");
    assert_int_equal(g.failed_count, 0);
    assert_int_equal(g.locked_until, 0);
    wd_user_rec_free(&g);

    /* disable once */
    assert_int_equal(wd_store_user_disable(s, "adam", 123, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_user_disable(s, "adam", 456, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_int_equal(wd_store_user_disable(s, "nobody", 456, f->err, sizeof f->err), WD_ENOTFOUND);
    assert_int_equal(wd_store_user_get(s, "adam", &g), WD_OK);
    assert_int_equal(g.disabled_at, 123);
    wd_user_rec_free(&g);
    wd_store_close(s);
}

static void test_mfa_and_logins(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    wd_user_rec_t u, g;
    memset(&u, 0, sizeof u);
    snprintf(u.name, sizeof u.name, "ann");
    u.roles = "[\"ops\"]";
    snprintf(u.pw_hash, sizeof u.pw_hash, "$argon2id$x");
    assert_int_equal(wd_store_user_insert(s, &u, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    int64_t id = g.id;
    wd_user_rec_free(&g);

    uint8_t sealed[57], codes[3][32], other[32];
    randombytes_buf(sealed, sizeof sealed);
    for (int i = 0; i < 3; i++)
        memset(codes[i], 0x10 + i, 32);
    memset(other, 0x77, 32);
    assert_int_equal(wd_store_user_set_mfa(s, id + 100, sealed, sizeof sealed, (const uint8_t(*)[32])codes, 3,
                                           f->err, sizeof f->err),
                     WD_ENOTFOUND);
    assert_int_equal(wd_store_recovery_use(s, id + 100, codes[0], 1), WD_ENOTFOUND);
    assert_int_equal(wd_store_user_set_mfa(s, id, sealed, sizeof sealed, (const uint8_t(*)[32])codes, 3,
                                           f->err, sizeof f->err),
                     WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_true(g.mfa_enabled);
    assert_int_equal(g.totp_sealed_len, sizeof sealed);
    assert_memory_equal(g.totp_sealed, sealed, sizeof sealed);
    assert_int_equal(g.totp_last_step, 0);
    wd_user_rec_free(&g);
    assert_null(g.totp_sealed);

    /* each recovery code works once, for its own user only */
    assert_int_equal(wd_store_recovery_use(s, id, codes[1], 10), WD_OK);
    assert_int_equal(wd_store_recovery_use(s, id, codes[1], 11), WD_ENOTFOUND);
    assert_int_equal(wd_store_recovery_use(s, id, other, 12), WD_ENOTFOUND);
    assert_int_equal(wd_store_recovery_use(s, id + 1, codes[0], 12), WD_ENOTFOUND);
    assert_int_equal(wd_store_recovery_use(s, id, codes[0], 13), WD_OK);

    /* TOTP step compare-and-set */
    const wd_lockout_t lp = {2, 1000, 8000};
    assert_int_equal(wd_store_user_login_failed(s, id, 900, &lp, NULL, NULL), WD_OK);
    assert_int_equal(wd_store_user_login_failed(s, id, 900, &lp, NULL, NULL), WD_OK);
    assert_int_equal(wd_store_user_login_ok(s, id, 1000, 5000), WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_int_equal(g.totp_last_step, 1000);
    assert_int_equal(g.failed_count, 0); /* a success resets failures */
    assert_int_equal(g.locked_until, 0);
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_login_ok(s, id, 1000, 5000), WD_EEXIST); /* replay */
    assert_int_equal(wd_store_user_login_failed(s, id, 900, &lp, NULL, NULL), WD_OK);
    assert_int_equal(wd_store_user_login_ok(s, id, 999, 5000), WD_EEXIST); /* older step */
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_int_equal(g.failed_count, 1); /* a refused step is not a success */
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_login_ok(s, id, 0, 5000), WD_OK); /* password-only login */
    assert_int_equal(wd_store_user_login_ok(s, id, 0, 5000), WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_int_equal(g.totp_last_step, 1000); /* step 0 never lowers it */
    assert_int_equal(g.failed_count, 0);
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_login_ok(s, id, 1001, 5000), WD_OK);
    assert_int_equal(wd_store_user_login_ok(s, id, 1001, 5000), WD_EEXIST);

    /* re-enrolling replaces the codes and restarts the step */
    uint8_t fresh[1][32];
    memset(fresh[0], 0x55, 32);
    assert_int_equal(
        wd_store_user_set_mfa(s, id, sealed, 40, (const uint8_t(*)[32])fresh, 1, f->err, sizeof f->err),
        WD_OK);
    assert_int_equal(wd_store_recovery_use(s, id, codes[2], 20),
                     WD_ENOTFOUND); /* old, never used, now gone */
    assert_int_equal(wd_store_recovery_use(s, id, fresh[0], 21), WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_int_equal(g.totp_sealed_len, 40);
    assert_int_equal(g.totp_last_step, 0);
    wd_user_rec_free(&g);

    /* duplicate codes in one enrolment fail as a whole: the previous enrolment stays */
    uint8_t twice[2][32];
    memset(twice, 0x66, sizeof twice);
    assert_int_not_equal(
        wd_store_user_set_mfa(s, id, sealed, 30, (const uint8_t(*)[32])twice, 2, f->err, sizeof f->err),
        WD_OK);
    assert_int_equal(wd_store_user_get(s, "ann", &g), WD_OK);
    assert_int_equal(g.totp_sealed_len, 40);
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_login_ok(s, id, 5, 5000), WD_OK); /* and no transaction is left open */
    wd_store_close(s);
}

static int64_t add_user(fx_t *f, wd_store_t *s, const char *name)
{
    wd_user_rec_t u, g;
    memset(&u, 0, sizeof u);
    snprintf(u.name, sizeof u.name, "%s", name);
    u.roles = "[\"ops\"]";
    snprintf(u.pw_hash, sizeof u.pw_hash, "$argon2id$x");
    assert_int_equal(wd_store_user_insert(s, &u, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_user_get(s, name, &g), WD_OK);
    int64_t id = g.id;
    wd_user_rec_free(&g);
    return id;
}

/* The lock starts at the max_failures-th failure and doubles with each further one, up to the cap; the
 * clock is the caller's `now`, so the schedule is checked exactly. */
static void test_lockout_backoff(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    int64_t id = add_user(f, s, "bea");
    const wd_lockout_t lp = {3, 1500, 10000}; /* 1.5 s rounds up to 2 s */
    int64_t n = -1, until = -1;
    assert_int_equal(wd_store_user_login_failed(s, id, 100, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(until, 0);
    assert_int_equal(wd_store_user_login_failed(s, id, 101, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 2);
    assert_int_equal(until, 0); /* below max_failures: no lock */
    assert_int_equal(wd_store_user_login_failed(s, id, 102, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 3);
    assert_int_equal(until, 102 + 2); /* first lock: 1.5 s, whole seconds */
    int64_t first = until - 102;
    /* the lock has passed; the next failure locks for twice as long */
    assert_int_equal(wd_store_user_login_failed(s, id, 110, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 4);
    assert_int_equal(until, 110 + 3);
    assert_true(until - 110 > first);
    assert_int_equal(wd_store_user_login_failed(s, id, 120, &lp, &n, &until), WD_OK);
    assert_int_equal(until, 120 + 6);
    assert_int_equal(wd_store_user_login_failed(s, id, 130, &lp, &n, &until), WD_OK);
    assert_int_equal(until, 130 + 10); /* 12 s capped at 10 s */
    for (int i = 0; i < 60; i++)       /* far past the cap: no overflow, still the cap */
        assert_int_equal(wd_store_user_login_failed(s, id, 200, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 66);
    assert_int_equal(until, 210);
    /* an earlier `now` (another replica's clock) never shortens a longer lock already in place */
    assert_int_equal(wd_store_user_login_failed(s, id, 150, &lp, &n, &until), WD_OK);
    assert_int_equal(until, 210);
    wd_user_rec_t g;
    assert_int_equal(wd_store_user_get(s, "bea", &g), WD_OK);
    assert_int_equal(g.failed_count, 67);
    assert_int_equal(g.locked_until, 210);
    wd_user_rec_free(&g);
    /* a login whose checks passed while the lock landed is refused and changes nothing, TOTP step
     * included; the same login after the lock succeeds */
    assert_int_equal(wd_store_user_login_ok(s, id, 0, 209), WD_EAGAIN);
    assert_int_equal(wd_store_user_login_ok(s, id, 77, 209), WD_EAGAIN);
    assert_int_equal(wd_store_user_get(s, "bea", &g), WD_OK);
    assert_int_equal(g.failed_count, 67);
    assert_int_equal(g.locked_until, 210);
    assert_int_equal(g.totp_last_step, 0);
    wd_user_rec_free(&g);
    assert_int_equal(wd_store_user_login_ok(s, id + 99, 0, 5000), WD_ENOTFOUND);
    assert_int_equal(wd_store_user_login_ok(s, id, 77, 210), WD_OK); /* the lock ends at locked_until */
    /* a success resets the count: the schedule starts over */
    assert_int_equal(wd_store_user_login_ok(s, id, 0, 5000), WD_OK);
    assert_int_equal(wd_store_user_login_failed(s, id, 300, &lp, &n, &until), WD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(until, 0);
    assert_int_equal(wd_store_user_login_failed(s, id + 99, 300, &lp, &n, &until), WD_ENOTFOUND);
    wd_store_close(s);
}

enum { RACE_THREADS = 6, RACE_EACH = 25 };

typedef struct {
    wd_store_t *s; /* shared (the gateway's thread pool) or the thread's own (another process) */
    int64_t id;
    int rc;
    pthread_barrier_t *go;
} race_t;

static void *race_fail(void *arg)
{
    race_t *r = arg;
    const wd_lockout_t lp = {1000, 1000, 1000}; /* never locks: only the count is under test */
    pthread_barrier_wait(r->go);
    for (int i = 0; i < RACE_EACH && r->rc == WD_OK; i++)
        r->rc = wd_store_user_login_failed(r->s, r->id, 1, &lp, NULL, NULL);
    return NULL;
}

/* Failures recorded in parallel, on one shared connection and on separate connections, all count. */
static void test_login_failed_parallel(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    int64_t id = add_user(f, s, "max");
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RACE_THREADS);
    pthread_t th[RACE_THREADS];
    race_t r[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        r[i] = (race_t){i % 2 ? open_ok(f) : s, id, WD_OK, &go};
        assert_int_equal(pthread_create(&th[i], NULL, race_fail, &r[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, WD_OK);
        if (r[i].s != s) wd_store_close(r[i].s);
    }
    pthread_barrier_destroy(&go);
    wd_user_rec_t g;
    assert_int_equal(wd_store_user_get(s, "max", &g), WD_OK);
    assert_int_equal(g.failed_count, RACE_THREADS * RACE_EACH);
    wd_user_rec_free(&g);
    wd_store_close(s);
}

/* ---- tokens, change detection, schema version -------------------------------------------------------- */

static int collect_jti(void *ud, const char *jti)
{
    collect_t *c = ud;
    if (c->n >= 8) return -99;
    snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", jti);
    c->n++;
    return 0;
}

static bool has_id(const collect_t *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->ids[i], id) == 0) return true;
    return false;
}

static void test_revoked_tokens(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    assert_int_equal(wd_store_token_revoke(s, "j-past", 50, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_token_revoke(s, "j-now", 100, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_token_revoke(s, "j-later", 200, f->err, sizeof f->err), WD_OK);
    /* revoking again never shortens the record */
    assert_int_equal(wd_store_token_revoke(s, "j-later", 20, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_token_revoke(s, "j-past", 150, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_token_revoke(s, "j-gone", 99, f->err, sizeof f->err), WD_OK);

    collect_t c = {0};
    assert_int_equal(wd_store_revoked_each(s, 100, collect_jti, &c), WD_OK);
    assert_int_equal(c.n, 3);
    assert_true(has_id(&c, "j-now"));
    assert_true(has_id(&c, "j-later"));
    assert_true(has_id(&c, "j-past")); /* extended to 150 */
    assert_false(has_id(&c, "j-gone"));
    memset(&c, 0, sizeof c);
    assert_int_equal(wd_store_revoked_each(s, 201, collect_jti, &c), WD_OK);
    assert_int_equal(c.n, 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(wd_store_revoked_each(s, 151, collect_jti, &c), WD_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ids[0], "j-later");
    wd_store_close(s);
}

static void test_data_version(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *a = open_ok(f), *b = open_ok(f);
    int64_t va = wd_store_data_version(a);
    assert_true(va >= 0);

    /* a's own writes do not move a's counter */
    wd_key_rec_t k = mkkey("k1", "own", 1, 1);
    assert_int_equal(wd_store_key_insert(a, &k, f->err, sizeof f->err), WD_OK);
    assert_int_equal(wd_store_token_revoke(a, "j1", 10, f->err, sizeof f->err), WD_OK);
    assert_true(wd_store_data_version(a) == va);

    /* b's commit does, and b sees a's */
    int64_t vb = wd_store_data_version(b);
    k = mkkey("k2", "other", 2, 2);
    assert_int_equal(wd_store_key_insert(b, &k, f->err, sizeof f->err), WD_OK);
    int64_t va2 = wd_store_data_version(a);
    assert_true(va2 != va);
    assert_true(wd_store_data_version(a) == va2); /* stable until the next foreign commit */
    assert_true(wd_store_data_version(b) == vb);
    assert_int_equal(wd_store_key_revoke(a, "k2", 5, f->err, sizeof f->err), WD_OK);
    assert_true(wd_store_data_version(b) != vb);
    /* the other connection sees the data too */
    wd_key_rec_t g;
    assert_int_equal(wd_store_key_get(b, "k1", &g), WD_OK);
    wd_key_rec_free(&g);
    assert_int_equal(wd_store_key_get(b, "k2", &g), WD_OK);
    assert_int_equal(g.revoked_at, 5);
    wd_key_rec_free(&g);
    wd_store_close(b);
    wd_store_close(a);
}

static void test_schema_version(void **state)
{
    fx_t *f = *state;
    init_ok(f);
    wd_store_t *s = open_ok(f);
    /* a fresh database is at the newest version the code knows */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int known = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    assert_true(known >= 1);
    /* STRICT tables refuse a wrongly typed value rather than storing it */
    assert_int_not_equal(wd_store_exec(s,
                                       "INSERT INTO revoked_tokens (jti, expires_at) VALUES ('x', 'soon');",
                                       f->err, sizeof f->err),
                         WD_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d;", known + 1);
    assert_int_equal(wd_store_exec(s, sql, f->err, sizeof f->err), WD_OK);
    wd_store_close(s);

    char want[128];
    snprintf(want, sizeof want, "schema version %d, newer than this warden understands (%d)", known + 1,
             known);
    expect_open_fails(f, WD_EINVAL, want);
    assert_int_equal(wd_store_init(f->dir, f->err, sizeof f->err), WD_EINVAL);
    assert_non_null(strstr(f->err, want));
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_creates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permissions_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_master_key_env, setup, teardown),
        cmocka_unit_test(test_kid_vectors),
        cmocka_unit_test_setup_teardown(test_kid_of_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_rotate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mfa_and_logins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lockout_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_failed_parallel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_version, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

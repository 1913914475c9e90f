/* guard/hscache: see hscache.h. */
#include "guard/hscache.h"

#include "core/core.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* An entry: MAGIC, the name's key, BLAKE2b-256 of the payload, the payload's length (u64 LE), the
 * payload (hs_serialize_database's bytes). */
#define MAGIC "WDHSDB01"
#define HEAD (8 + 32 + 32 + 8)
#define MAX_PAYLOAD ((size_t)256 << 20) /* the full default set's largest database: 2.8 MB */
#define SUFFIX ".hsdb"

static void note(wd_hs_cache_t *st, const char *fmt, ...)
{
    if (st->problem[0]) return; /* the first reason is the one worth reading */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->problem, sizeof st->problem, fmt, ap);
    va_end(ap);
}

static void put_u64(crypto_generichash_state *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(h, b, sizeof b);
}

/* What every key of this process shares: Hyperscan's version and library file (its build, not only
 * its version: a patched libhs, or, statically linked, a rebuilt warden, keeping the version string is
 * a different file) and the CPU features it compiles for. */
static void base_key(const hs_platform_info_t *plat, uint8_t base[32])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    static const char tag[] = "warden hs cache 1";
    const char *ver = hs_version();
    crypto_generichash_update(&h, (const uint8_t *)tag, sizeof tag);
    crypto_generichash_update(&h, (const uint8_t *)ver, strlen(ver) + 1);
    Dl_info di;
    struct stat sb;
    if (dladdr((void *)hs_compile_multi, &di) && di.dli_fname && stat(di.dli_fname, &sb) == 0) {
        crypto_generichash_update(&h, (const uint8_t *)di.dli_fname, strlen(di.dli_fname) + 1);
        put_u64(&h, (uint64_t)sb.st_dev);
        put_u64(&h, (uint64_t)sb.st_ino);
        put_u64(&h, (uint64_t)sb.st_size);
        put_u64(&h, (uint64_t)sb.st_mtim.tv_sec);
        put_u64(&h, (uint64_t)sb.st_mtim.tv_nsec);
    }
    put_u64(&h, plat->tune);
    put_u64(&h, plat->cpu_features);
    crypto_generichash_final(&h, base, 32);
}

static void compile_key(const uint8_t base[32], const char *const *pats, const unsigned *flags,
                        const unsigned *ids, unsigned n, unsigned mode, uint8_t key[32])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    crypto_generichash_update(&h, base, 32);
    put_u64(&h, mode);
    put_u64(&h, n);
    for (unsigned i = 0; i < n; i++) {
        size_t len = strlen(pats[i]);
        put_u64(&h, ids[i]);
        put_u64(&h, flags[i]);
        put_u64(&h, len);
        crypto_generichash_update(&h, (const uint8_t *)pats[i], len);
    }
    crypto_generichash_final(&h, key, 32);
}

/* Creates the missing directories of path (mode 0700), like mkdir -p. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = len ? ENAMETOOLONG : ENOENT;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* The directory as an fd, if it belongs to this user and only this user can write to it. */
static int open_dir(const char *dir, wd_hs_cache_t *st)
{
    if (make_dirs(dir) != 0) {
        note(st, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        note(st, "cannot open %s: %s", dir, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    if (sb.st_uid != geteuid() || (sb.st_mode & 022)) {
        note(st, "%s is not used: it %s", dir,
             sb.st_uid != geteuid() ? "belongs to another user" : "is writable by group or others");
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads or writes all n bytes (0), or fails (-1, errno set; a short read is EIO). */
static int io_full(int fd, uint8_t *p, size_t n, bool writing)
{
    while (n) {
        ssize_t r = writing ? write(fd, p, n) : read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The entry `name`, if it is there and sound. An absent entry is a plain miss; any other failure is
 * noted. */
static hs_database_t *load(int dfd, const char *name, const uint8_t key[32], wd_hs_cache_t *st)
{
    /* O_NONBLOCK: a FIFO planted at the name must not hang the start (a regular file reads as usual) */
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) note(st, "cache entry %s: %s", name, strerror(errno));
        return NULL;
    }
    hs_database_t *db = NULL;
    uint8_t *buf = NULL;
    const char *why = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        why = "not a regular file";
    else if (sb.st_uid != geteuid() || (sb.st_mode & 022))
        why = sb.st_uid != geteuid() ? "belongs to another user" : "is writable by group or others";
    else if (sb.st_size < HEAD || (uint64_t)sb.st_size - HEAD > MAX_PAYLOAD)
        why = "wrong size";
    else if (!(buf = malloc((size_t)sb.st_size)))
        why = "out of memory";
    else if (io_full(fd, buf, (size_t)sb.st_size, false) != 0)
        why = "cannot be read";
    if (!why) {
        size_t plen = (size_t)sb.st_size - HEAD;
        uint64_t stated = 0;
        for (int i = 0; i < 8; i++)
            stated |= (uint64_t)buf[72 + i] << (8 * i);
        uint8_t sum[32];
        crypto_generichash(sum, 32, buf + HEAD, plen, NULL, 0);
        if (memcmp(buf, MAGIC, 8) != 0 || memcmp(buf + 8, key, 32) != 0 || stated != plen)
            why = "bad header";
        else if (sodium_memcmp(buf + 40, sum, 32) != 0)
            why = "content does not match its hash";
        else if (hs_deserialize_database((const char *)buf + HEAD, plen, &db) != HS_SUCCESS)
            why = "rejected by Hyperscan";
        else
            futimens(fd, NULL); /* in use: keeps it from ageing out */
    }
    if (why) note(st, "cache entry %s %s; compiled again", name, why);
    free(buf);
    close(fd);
    return db;
}

/* Removes entries (and temporary files left by a crash) not used for WD_HS_CACHE_MAX_AGE_DAYS. An
 * entry another process uses or replaces between the check and the unlink is removed all the same;
 * that costs the next start one compile, nothing else. */
static void prune(int dfd)
{
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return;
    }
    time_t old = time(NULL) - (time_t)WD_HS_CACHE_MAX_AGE_DAYS * 86400;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        bool ours = (len > strlen(SUFFIX) && strcmp(e->d_name + len - strlen(SUFFIX), SUFFIX) == 0) ||
                    strstr(e->d_name, SUFFIX ".tmp.");
        struct stat sb;
        if (ours && fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && sb.st_mtime < old)
            unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
}

static void store(int dfd, const char *name, const uint8_t key[32], const hs_database_t *db,
                  wd_hs_cache_t *st)
{
    char *bytes = NULL;
    size_t len = 0;
    if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS) {
        note(st, "cannot serialize a compiled database");
        return;
    }
    uint8_t head[HEAD];
    memcpy(head, MAGIC, 8);
    memcpy(head + 8, key, 32);
    crypto_generichash(head + 40, 32, (const uint8_t *)bytes, len, NULL, 0);
    for (int i = 0; i < 8; i++)
        head[72 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%08x", name, (long)getpid(), randombytes_random());
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    /* synced before the rename: after a power loss an entry is whole or absent */
    bool ok = fd >= 0 && io_full(fd, head, sizeof head, true) == 0 &&
              io_full(fd, (uint8_t *)bytes, len, true) == 0 && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (ok && renameat(dfd, tmp, dfd, name) != 0) ok = false;
    free(bytes); /* hs_serialize_database allocates with the misc allocator, malloc by default */
    if (!ok) {
        note(st, "cannot write cache entry %s: %s", name, strerror(errno));
        if (fd >= 0) unlinkat(dfd, tmp, 0);
        return;
    }
    prune(dfd);
}

void wd_hs_cache_open(wd_hs_cache_t *c, const char *dir)
{
    *c = (wd_hs_cache_t){.dfd = -1};
    if (!dir) return;
    if (hs_populate_platform(&c->plat) != HS_SUCCESS) {
        note(c, "Hyperscan cannot tell this CPU's features; the cache is not used");
        return;
    }
    if ((c->dfd = open_dir(dir, c)) >= 0) base_key(&c->plat, c->base);
}

void wd_hs_cache_close(wd_hs_cache_t *c)
{
    if (c->dfd >= 0) close(c->dfd);
    c->dfd = -1;
}

hs_error_t wd_hs_cache_compile(wd_hs_cache_t *c, const char *const *pats, const unsigned *flags,
                               const unsigned *ids, unsigned n, unsigned mode, hs_database_t **out,
                               hs_compile_error_t **herr)
{
    uint8_t key[32];
    char name[2 * 32 + sizeof SUFFIX];
    if (c->dfd >= 0) {
        compile_key(c->base, pats, flags, ids, n, mode, key);
        sodium_bin2hex(name, sizeof name, key, sizeof key);
        strcat(name, SUFFIX);
        if ((*out = load(c->dfd, name, key, c))) {
            c->loaded++;
            return HS_SUCCESS;
        }
    }
    hs_error_t rc = hs_compile_multi(pats, flags, ids, n, mode, c->dfd >= 0 ? &c->plat : NULL, out, herr);
    if (rc == HS_SUCCESS) {
        c->compiled++;
        if (c->dfd >= 0) store(c->dfd, name, key, *out, c);
    }
    return rc;
}

bool wd_hs_cache_default_dir(char *out, size_t outlen)
{
    const char *v = getenv("CACHE_DIRECTORY");
    int len = -1;
    if (v && v[0] == '/')
        len = snprintf(out, outlen, "%.*s", (int)strcspn(v, ":"), v);
    else if ((v = getenv("XDG_CACHE_HOME")) && v[0] == '/')
        len = snprintf(out, outlen, "%s/warden", v);
    else if ((v = getenv("HOME")) && v[0] == '/')
        len = snprintf(out, outlen, "%s/.cache/warden", v);
    return len > 0 && (size_t)len < outlen;
}

/* guard/hscache: compiled Hyperscan databases kept on disk, so a process that compiles the rule set a
 * second time (the next `warden scan`, a restart, a reload with the same rules) loads it in
 * milliseconds instead of compiling it for seconds.
 *
 * An entry is named by a BLAKE2b-256 hash of everything the compile depends on: the Hyperscan version
 * and library file, the CPU features it targets, the mode and every pattern with its flags and id. A
 * changed rule is a new name; the old entry ages out (entries not used for WD_HS_CACHE_MAX_AGE_DAYS
 * are removed when a new one is written). An entry is trusted only when the directory and the file
 * belong to this process's user and neither is writable by group or others, the file is a regular
 * file (not a symlink or FIFO), and its content hash checks; any other entry is ignored, compiled
 * afresh and replaced (written to a temporary file, fsynced, then renamed).
 * The cache never decides what is found: a miss or a broken entry costs only the compile time. */
#ifndef WD_GUARD_HSCACHE_H
#define WD_GUARD_HSCACHE_H

#include <hs/hs.h>
#include <stdbool.h>

#define WD_HS_CACHE_MAX_AGE_DAYS 30

/* A cache opened for the compiles of one rule set. loaded and compiled count what it did; problem is
 * the first reason an entry or the directory could not be used ("" if none), for a warning, never an
 * error. */
typedef struct {
    int dfd; /* the directory; -1: no cache (compiles only) */
    hs_platform_info_t plat;
    unsigned char base[32]; /* the part of every key that is the same for this process */
    unsigned loaded, compiled;
    char problem[256];
} wd_hs_cache_t;

/* Opens the cache in dir (created with mode 0700 if missing; NULL: none). Always usable: a cache that
 * cannot be opened only compiles, and says why in problem. */
void wd_hs_cache_open(wd_hs_cache_t *c, const char *dir);
/* hs_compile_multi through the cache. The result and herr are those of hs_compile_multi; a database
 * loaded from the cache is the same one. */
hs_error_t wd_hs_cache_compile(wd_hs_cache_t *c, const char *const *pats, const unsigned *flags,
                               const unsigned *ids, unsigned n, unsigned mode, hs_database_t **out,
                               hs_compile_error_t **herr);
/* Closes the directory; the counts and problem stay. */
void wd_hs_cache_close(wd_hs_cache_t *c);

/* The default cache directory: $CACHE_DIRECTORY (systemd's CacheDirectory=, its first entry), else
 * $XDG_CACHE_HOME/warden, else $HOME/.cache/warden. False if none of these is set (no cache). */
bool wd_hs_cache_default_dir(char *out, size_t outlen);

#endif

/* Unit tests for the compiled-database cache (guard/hscache.h): a second compile of the same rules
 * loads every database and finds the same; a changed rule is compiled afresh; an entry that is
 * corrupt, truncated, a symlink, or writable by others, and a directory writable by others, are never
 * used (the rules are compiled instead and the reason is reported); old entries age out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "guard/guard.h"
#include "guard/hscache.h"

#define ERRLEN 512

/* plain, context-gated (a block database of its own) and output (stream) rules: several databases */
static const char RULES[] = "version: 1\nrules:\n"
                            "  - id: t.alpha\n    type: A\n    class: test\n    pattern: 'alpha[0-9]+'\n"
                            "  - id: t.beta\n    type: B\n    class: test\n    pattern: 'beta[a-z]{2,8}'\n"
                            "  - id: t.gin\n    type: G\n    class: test\n    context: [pin]\n"
                            "    context_required: true\n    pattern: '[0-9]{4}'\n";
static const char TEXT[] = "alpha12 betaxyz 1234 pin 5678 alpha";

typedef struct {
    char root[64], dir[96];
} fx_t;

static int setup(void **state)
{
    fx_t *x = calloc(1, sizeof *x);
    strcpy(x->root, "/tmp/wd-hscache-XXXXXX");
    if (!mkdtemp(x->root)) return -1;
    snprintf(x->dir, sizeof x->dir, "%s/a/b", x->root); /* created on first use, parents too */
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx_t *x = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", x->root);
    int rc = system(cmd);
    free(x);
    return rc;
}

typedef struct {
    unsigned loaded, compiled;
    char problem[256];
    char found[256]; /* rule:start-end ... */
} run_t;

/* Compiles rules through the cache in dir and scans TEXT for every purpose. */
static run_t run(const char *dir, const char *rules)
{
    char err[ERRLEN];
    run_t r = {0};
    wd_guard_db_t *db = wd_guard_db_parse_buf("r.yaml", rules, strlen(rules), err, sizeof err);
    if (!db) fail_msg("%s", err);
    assert_int_equal(wd_guard_db_set_uses(db, 0, WD_GUARD_INPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 1, WD_GUARD_INPUT | WD_GUARD_OUTPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_uses(db, 2, WD_GUARD_INPUT), WD_OK);
    assert_int_equal(wd_guard_db_set_cache(db, dir), WD_OK);
    assert_int_equal(wd_guard_db_compile(db, err, sizeof err), WD_OK);
    assert_int_equal(wd_guard_db_set_cache(db, dir), WD_EINVAL); /* too late */
    const char *problem;
    r.loaded = wd_guard_db_cache_stats(db, &r.compiled, &problem);
    if (problem) snprintf(r.problem, sizeof r.problem, "%s", problem);
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    wd_findings_t f;
    wd_findings_init(&f);
    assert_int_equal(wd_guard_scan_for(db, s, WD_GUARD_ANY, TEXT, strlen(TEXT), 0, &f), WD_OK);
    for (size_t k = 0; k < f.n; k++) {
        size_t used = strlen(r.found);
        snprintf(r.found + used, sizeof r.found - used, "%s%s:%u-%u", k ? " " : "",
                 wd_guard_db_rule(db, f.v[k].rule)->id, f.v[k].start, f.v[k].end);
    }
    /* the output rules also run as a stream, which needs a stream-mode database */
    wd_guard_stream_t *st = wd_guard_stream_open_for(db, WD_GUARD_OUTPUT, 0);
    assert_non_null(st);
    assert_int_equal(wd_guard_stream_feed(st, s, TEXT, strlen(TEXT), &f), WD_OK);
    size_t n = f.n;
    assert_int_equal(wd_guard_stream_finish(st, s, &f), WD_OK);
    assert_int_equal(n + f.n, 1); /* betaxyz */
    wd_guard_stream_free(st);
    wd_findings_free(&f);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
    return r;
}

/* The entries in dir (name ending .hsdb), their count, and the first one's path in first. */
static unsigned entries(const char *dir, char *first, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".hsdb") != 0) continue;
        if (!n++ && first) snprintf(first, len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    return n;
}

static void expect_problem(const run_t *r, const char *want)
{
    if (!strstr(r->problem, want)) fail_msg("problem '%s' does not say '%s'", r->problem, want);
}

static void test_second_compile_loads(void **state)
{
    fx_t *x = *state;
    run_t none = run(NULL, RULES);
    assert_int_equal(none.loaded, 0);
    assert_true(none.compiled >= 3);
    assert_string_equal(none.problem, "");
    assert_string_equal(none.found, "t.alpha:0-7 t.beta:8-15 t.gin:16-20 t.gin:25-29");

    run_t first = run(x->dir, RULES);
    assert_int_equal(first.loaded, 0);
    assert_int_equal(first.compiled, none.compiled);
    assert_string_equal(first.problem, "");
    assert_int_equal(entries(x->dir, NULL, 0), first.compiled);
    struct stat sb;
    assert_int_equal(stat(x->dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    char path[512];
    entries(x->dir, path, sizeof path);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    run_t second = run(x->dir, RULES);
    assert_int_equal(second.loaded, first.compiled);
    assert_int_equal(second.compiled, 0);
    assert_string_equal(second.problem, "");
    assert_string_equal(second.found, none.found);

    /* one pattern changed: its database is compiled (a new entry), the others still load */
    char changed[sizeof RULES];
    strcpy(changed, RULES);
    memcpy(strstr(changed, "{2,8}"), "{2,9}", 5);
    run_t third = run(x->dir, changed);
    assert_true(third.compiled >= 1 && third.compiled < first.compiled);
    assert_int_equal(third.loaded + third.compiled, first.compiled);
    assert_int_equal(entries(x->dir, NULL, 0), first.compiled + third.compiled);
}

/* Rewrites one byte of the file at off (from the end if negative), or truncates it to len. */
static void poke(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, off, off < 0 ? SEEK_END : SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, -1, SEEK_CUR), 0);
    fputc(c ^ 0x55, f);
    fclose(f);
}

static void test_broken_entries_are_compiled_again(void **state)
{
    fx_t *x = *state;
    run_t first = run(x->dir, RULES);
    unsigned n = first.compiled;
    char path[512];
    entries(x->dir, path, sizeof path);
    static const struct {
        long off; /* byte to change (0: truncate instead) */
        const char *why;
    } cases[] = {
        {-1, "content does not match its hash"}, {3, "bad header"}, {20, "bad header"}, {0, "wrong size"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].off)
            poke(path, cases[i].off);
        else
            assert_int_equal(truncate(path, 40), 0);
        run_t r = run(x->dir, RULES);
        assert_int_equal(r.loaded, n - 1);
        assert_int_equal(r.compiled, 1);
        expect_problem(&r, cases[i].why);
        assert_string_equal(r.found, first.found);
        run_t again = run(x->dir, RULES); /* the entry was replaced */
        assert_int_equal(again.loaded, n);
        assert_string_equal(again.problem, "");
    }

    /* an entry writable by others is not trusted, nor is a symlink (even to a sound entry) */
    assert_int_equal(chmod(path, 0620), 0);
    run_t r = run(x->dir, RULES);
    assert_int_equal(r.compiled, 1);
    expect_problem(&r, "writable by group or others");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600); /* replaced by a private one */
    char moved[600];
    snprintf(moved, sizeof moved, "%s.real", path);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(symlink(moved, path), 0);
    r = run(x->dir, RULES);
    assert_int_equal(r.compiled, 1);
    assert_int_equal(r.loaded, n - 1);
    expect_problem(&r, "symbolic links");
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode)); /* the link was replaced by an entry */
}

static void test_directory_writable_by_others_is_not_used(void **state)
{
    fx_t *x = *state;
    run_t first = run(x->dir, RULES);
    assert_int_equal(chmod(x->dir, 0770), 0);
    run_t r = run(x->dir, RULES);
    assert_int_equal(r.loaded, 0);
    assert_int_equal(r.compiled, first.compiled);
    expect_problem(&r, "is not used: it is writable by group or others");
    assert_string_equal(r.found, first.found);
    /* a path that is a file cannot be a cache */
    char file[200];
    snprintf(file, sizeof file, "%s/file", x->root);
    FILE *f = fopen(file, "w");
    fclose(f);
    r = run(file, RULES);
    assert_int_equal(r.loaded, 0);
    expect_problem(&r, "cannot open");
    assert_string_equal(r.found, first.found);
}

/* Writing an entry removes the entries and temporary files not used for WD_HS_CACHE_MAX_AGE_DAYS. */
static void test_old_entries_age_out(void **state)
{
    fx_t *x = *state;
    run(x->dir, RULES);
    static const char *const names[] = {"old.hsdb", "old.hsdb.tmp.1.2", "recent.hsdb", "old-not-ours"};
    static const int days[] = {WD_HS_CACHE_MAX_AGE_DAYS + 1, WD_HS_CACHE_MAX_AGE_DAYS + 1,
                               WD_HS_CACHE_MAX_AGE_DAYS - 1, WD_HS_CACHE_MAX_AGE_DAYS + 1};
    for (size_t i = 0; i < 4; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", x->dir, names[i]);
        FILE *f = fopen(p, "w");
        fclose(f);
        struct timespec t[2] = {{.tv_sec = time(NULL) - days[i] * 86400L},
                                {.tv_sec = time(NULL) - days[i] * 86400L}};
        assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
    }
    /* the entries in use are just as old, but a load refreshes them */
    DIR *d = opendir(x->dir);
    struct dirent *e;
    unsigned aged = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l != 64 + 5 || strcmp(e->d_name + 64, ".hsdb") != 0) continue;
        char p[300];
        snprintf(p, sizeof p, "%s/%s", x->dir, e->d_name);
        struct timespec t[2] = {{.tv_sec = time(NULL) - 40 * 86400L}, {.tv_sec = time(NULL) - 40 * 86400L}};
        assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
        aged++;
    }
    closedir(d);
    assert_int_equal(run(x->dir, RULES).loaded, aged);
    char changed[sizeof RULES];
    strcpy(changed, RULES);
    memcpy(strstr(changed, "[0-9]+"), "[0-8]+", 6);
    assert_true(run(x->dir, changed).compiled >= 1); /* writes an entry */
    for (size_t i = 0; i < 4; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", x->dir, names[i]);
        bool gone = access(p, F_OK) != 0;
        if (gone != (i < 2)) fail_msg("%s: %s", names[i], gone ? "removed" : "kept");
    }
    assert_int_equal(run(x->dir, RULES).loaded, aged); /* still there */
}

/* Compiles yaml with rule i serving uses[i] through the cache in dir; *loaded and *compiled say how. */
static void counts(const char *dir, const char *yaml, const unsigned *uses, size_t n, unsigned *loaded,
                   unsigned *compiled)
{
    char err[ERRLEN];
    wd_guard_db_t *db = wd_guard_db_parse_buf("r.yaml", yaml, strlen(yaml), err, sizeof err);
    if (!db) fail_msg("%s", err);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(wd_guard_db_set_uses(db, i, uses[i]), WD_OK);
    assert_int_equal(wd_guard_db_set_cache(db, dir), WD_OK);
    assert_int_equal(wd_guard_db_compile(db, err, sizeof err), WD_OK);
    const char *problem;
    *loaded = wd_guard_db_cache_stats(db, compiled, &problem);
    if (problem) fail_msg("unexpected cache problem: %s", problem);
    wd_guard_db_unref(db);
}

/* An entry is found again only for the same patterns with the same flags, ids and mode: a rule made
 * caseless, two rules swapped, or the same rules compiled for streams are each a database of their own
 * (loading one for the other would match differently). */
static void test_key_covers_flags_ids_and_mode(void **state)
{
    fx_t *x = *state;
#define TWO(a, b) "version: 1\nrules:\n" a b
#define ALPHA "  - id: t.alpha\n    type: A\n    class: test\n    pattern: 'alpha[0-9]+'\n"
#define ALPHA_CI ALPHA "    caseless: true\n"
#define BETA "  - id: t.beta\n    type: B\n    class: test\n    pattern: 'beta[a-z]+'\n"
    static const unsigned in[] = {WD_GUARD_INPUT, WD_GUARD_INPUT}, out[] = {WD_GUARD_OUTPUT, WD_GUARD_OUTPUT};
    static const struct {
        const char *yaml;
        const unsigned *uses;
    } variants[] = {
        {TWO(ALPHA, BETA), in}, {TWO(ALPHA_CI, BETA), in}, {TWO(BETA, ALPHA), in}, {TWO(ALPHA, BETA), out}};
    unsigned loaded, compiled;
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        counts(x->dir, variants[i].yaml, variants[i].uses, 2, &loaded, &compiled);
        if (loaded != 0 || compiled != 1)
            fail_msg("variant %zu: loaded %u, compiled %u", i, loaded, compiled);
    }
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        counts(x->dir, variants[i].yaml, variants[i].uses, 2, &loaded, &compiled);
        if (loaded != 1 || compiled != 0)
            fail_msg("variant %zu again: loaded %u, compiled %u", i, loaded, compiled);
    }
    assert_int_equal(entries(x->dir, NULL, 0), 4);
#undef TWO
#undef ALPHA
#undef ALPHA_CI
#undef BETA
}

/* What sits at an entry's name and is not a private regular file of this user is never read: a FIFO
 * (opening it must not wait for a writer), and, when the tests run as root, a file or directory of
 * another user. */
static void test_not_a_private_file(void **state)
{
    fx_t *x = *state;
    run_t first = run(x->dir, RULES);
    char path[512];
    entries(x->dir, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    run_t r = run(x->dir, RULES);
    assert_int_equal(r.compiled, 1);
    expect_problem(&r, "not a regular file");
    assert_string_equal(r.found, first.found);
    if (geteuid() != 0) return; /* chown needs root */
    assert_int_equal(chown(path, 65534, 65534), 0);
    r = run(x->dir, RULES);
    assert_int_equal(r.compiled, 1);
    expect_problem(&r, "belongs to another user");
    assert_int_equal(chown(x->dir, 65534, 65534), 0);
    r = run(x->dir, RULES);
    assert_int_equal(r.loaded, 0);
    expect_problem(&r, "is not used: it belongs to another user");
    assert_string_equal(r.found, first.found);
}

static void test_default_dir(void **state)
{
    (void)state;
    char out[256];
    unsetenv("CACHE_DIRECTORY");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/u", 1);
    assert_true(wd_hs_cache_default_dir(out, sizeof out));
    assert_string_equal(out, "/home/u/.cache/warden");
    setenv("XDG_CACHE_HOME", "relative", 1); /* not absolute: ignored, as the XDG spec says */
    assert_true(wd_hs_cache_default_dir(out, sizeof out));
    assert_string_equal(out, "/home/u/.cache/warden");
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    assert_true(wd_hs_cache_default_dir(out, sizeof out));
    assert_string_equal(out, "/xdg/warden");
    setenv("CACHE_DIRECTORY", "/var/cache/warden:/var/cache/other", 1);
    assert_true(wd_hs_cache_default_dir(out, sizeof out));
    assert_string_equal(out, "/var/cache/warden");
    assert_false(wd_hs_cache_default_dir(out, 8)); /* does not fit */
    unsetenv("CACHE_DIRECTORY");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    assert_false(wd_hs_cache_default_dir(out, sizeof out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_second_compile_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_entries_are_compiled_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_writable_by_others_is_not_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_entries_age_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_covers_flags_ids_and_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_private_file, setup, teardown),
        cmocka_unit_test(test_default_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

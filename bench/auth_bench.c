/* Authentication + authorization microbenchmark: the CPU time of what the authenticate and authorize
 * stages do for a request carrying a valid API key — frame the key, look it up in the in-memory
 * snapshot, keyed BLAKE2b over it and a constant-time compare (wd_authdb_check_key), then the RBAC
 * decision for the requested model and endpoint (wd_policy_decide). The snapshot is loaded from a
 * real state directory (a temporary one, made with the same calls as `warden init` and `warden key
 * create`) holding `--keys N` keys (default 1000), so the lookup is not a one-element search.
 *
 *   auth_bench [seconds per measurement, default 1] [--keys N]
 *
 * Prints "name value" lines: nanoseconds per request (best of 3, per CPU second of the measuring
 * thread, so other load on the machine does not inflate it), for a valid key and for a wrong one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/authdb.h"
#include "auth/keyops.h"
#include "policy/policy.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "auth_bench: %s: %s\n", what, err);
    exit(1);
}

/* One request's worth of work; returns whether it was allowed. */
static bool request(const wd_authdb_t *db, const wd_role_t *roles, size_t nroles, const char *key, size_t len)
{
    const wd_authkey_t *k;
    const char *code;
    char reason[200];
    if (wd_authdb_check_key(db, key, len, 1700000000, &k, &code, reason, sizeof reason) != WD_OK) return false;
    wd_principal_t p = {.kind = "key", .id = k->id, .roles = (const char *const *)k->roles, .nroles = k->nroles,
                        .models = (const char *const *)k->models, .nmodels = k->nmodels, .ips = k->ips,
                        .nips = k->nips};
    wd_decision_t d;
    return wd_policy_decide(roles, nroles, &p, WD_EP_CHAT, "gpt-4o-mini", 11, "127.0.0.1", &d);
}

static double ns_per_request(const wd_authdb_t *db, const wd_role_t *roles, size_t nroles, const char *key,
                             double secs, bool expect)
{
    double best = 0;
    size_t len = strlen(key);
    for (int run = 0; run < 3; run++) {
        double t0 = cpu_s(), t;
        unsigned long n = 0;
        do {
            for (int i = 0; i < 1024; i++, n++)
                if (request(db, roles, nroles, key, len) != expect) die("request", "unexpected decision");
        } while ((t = cpu_s() - t0) < secs);
        double ns = t * 1e9 / (double)n;
        if (best == 0 || ns < best) best = ns;
    }
    return best;
}

int main(int argc, char **argv)
{
    double secs = 1;
    long nkeys = 1000;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            nkeys = strtol(argv[++i], &end, 10);
            if (*end || nkeys < 1 || nkeys > 1000000) die("--keys", "expected 1..1000000");
        } else {
            secs = strtod(argv[i], &end);
            if (*end || !(secs > 0 && secs <= 60)) die(argv[i], "expected seconds per measurement (0-60] or --keys N");
        }
    }
    char dir[] = "/tmp/warden-auth-bench-XXXXXX", err[256];
    if (!mkdtemp(dir)) die("mkdtemp", "failed");
    char state[sizeof dir + 8];
    snprintf(state, sizeof state, "%s/state", dir);
    wd_store_t *s;
    if (wd_store_init(state, err, sizeof err) != WD_OK) die("init", err);
    if (wd_store_open(state, &s, err, sizeof err) != WD_OK) die("open", err);
    char key[WD_APIKEY_MAX], first[WD_APIKEY_MAX] = "";
    if (wd_store_exec(s, "BEGIN", err, sizeof err) != WD_OK) die("begin", err);
    for (long i = 0; i < nkeys; i++) {
        wd_key_rec_t rec = {.roles = "[\"bench\"]", .created_at = 1700000000};
        snprintf(rec.name, sizeof rec.name, "bench-%ld", i);
        if (wd_keyops_create(s, &rec, key, err, sizeof err) != WD_OK) die("key create", err);
        if (i == nkeys / 2) memcpy(first, key, sizeof key);
    }
    if (wd_store_exec(s, "COMMIT", err, sizeof err) != WD_OK) die("commit", err);
    wd_authdb_t *db = wd_authdb_load(s, err, sizeof err);
    if (!db) die("load", err);

    char *models[] = {"gpt-4o-mini"};
    wd_role_t roles[] = {
        {.name = "other", .models = (char *[]){"llama-*"}, .nmodels = 1, .endpoints = WD_EP_ALL},
        {.name = "bench", .models = models, .nmodels = 1, .endpoints = WD_EP_CHAT},
    };
    char wrong[WD_APIKEY_MAX];
    memcpy(wrong, first, sizeof wrong);
    wrong[30] = wrong[30] == 'A' ? 'B' : 'A'; /* a secret character: same id, the hash decides */

    printf("auth_keys %ld\n", nkeys);
    printf("auth_valid_key_ns %.0f\n", ns_per_request(db, roles, 2, first, secs, true));
    printf("auth_wrong_key_ns %.0f\n", ns_per_request(db, roles, 2, wrong, secs, false));

    wd_authdb_unref(db);
    wd_store_close(s);
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}

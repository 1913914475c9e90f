/* Local limiter microbenchmark: decisions per second (wd_limiter_admit) on one thread with one scope
 * (rpm + tpm) and with three scopes (key rpm+tpm, role rpm, ip rpm), one thread doing admit+finish
 * pairs (a whole request's limiter cost), and two threads on distinct keys that live on distinct
 * shards (they must scale, not contend). Time advances 100 ns per decision against limits of
 * 10^9 per minute, so the decisions are admissions (the commit path, the expensive one).
 *
 *   limit_bench [seconds per measurement, default 1]
 *
 * Prints one "name value" line per figure (best of 3 runs). Rates are per CPU second of the
 * measuring thread (what one core does, unaffected by other load on the machine); the *_wall lines
 * are per elapsed second and drop when the machine is busy. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "limit/limit.h"

#define STEP_NS 100
#define BATCH 4096

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static wd_limit_scope_t scope(const char *key, uint32_t rpm, uint32_t tpm)
{
    wd_limit_scope_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.key, sizeof s.key, "%s", key);
    s.lim.rpm = rpm;
    s.lim.tpm = tpm;
    return s;
}

typedef struct {
    wd_limiter_t *l;
    wd_limit_scope_t scopes[WD_LIMIT_MAX_SCOPES];
    size_t n;
    bool finish;
    double seconds;
    uint64_t decisions, admitted;
    double rate;      /* per CPU second of this thread: what one core does */
    double wall_rate; /* per elapsed second: lower when the machine is busy with other work */
} run_t;

static void *run(void *arg)
{
    run_t *r = arg;
    int64_t now = wall_ns();
    uint64_t ops = 0, ok = 0;
    double start = clock_s(CLOCK_MONOTONIC), end = start + r->seconds, t = start;
    double cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    wd_limit_decision_t d;
    while (t < end) {
        for (int i = 0; i < BATCH; i++) {
            now += STEP_NS;
            wd_limiter_admit(r->l, r->scopes, r->n, 1, now, &d);
            if (d.outcome == WD_LIMIT_OK) {
                ok++;
                if (r->finish) wd_limiter_finish(r->l, r->scopes, r->n, 1, 1, now);
            }
        }
        ops += BATCH;
        t = clock_s(CLOCK_MONOTONIC);
    }
    r->decisions = ops;
    r->admitted = ok;
    r->rate = (double)ops / (clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0);
    r->wall_rate = (double)ops / (t - start);
    return NULL;
}

/* A key named prefix-N that lands on a shard not in `avoid` (the hash seed is random per limiter). */
static void key_on_own_shard(wd_limiter_t *l, const char *prefix, size_t *used, size_t nused, char out[64])
{
    for (unsigned i = 0;; i++) {
        snprintf(out, 64, "%s-%u", prefix, i);
        size_t sh = wd_limiter_shard_of(l, out), k;
        for (k = 0; k < nused && used[k] != sh; k++) {
        }
        if (k == nused) {
            used[nused] = sh;
            return;
        }
    }
}

static double best_of(run_t *tmpl, int threads, double *per_thread, double *wall)
{
    double best = 0, best_pt = 0, best_wall = 0;
    for (int round = 0; round < 3; round++) {
        run_t r[2];
        pthread_t th[2];
        double total = 0, min_pt = 0, total_wall = 0;
        for (int i = 0; i < threads; i++) {
            r[i] = tmpl[i];
            if (pthread_create(&th[i], NULL, run, &r[i]) != 0) {
                fprintf(stderr, "limit_bench: pthread_create failed\n");
                exit(1);
            }
        }
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            total += r[i].rate;
            total_wall += r[i].wall_rate;
            if (i == 0 || r[i].rate < min_pt) min_pt = r[i].rate;
            if (r[i].admitted * 100 < r[i].decisions * 99) {
                fprintf(
                    stderr,
                    "limit_bench: only %llu of %llu admitted; the benchmark is not measuring admissions\n",
                    (unsigned long long)r[i].admitted, (unsigned long long)r[i].decisions);
                exit(1);
            }
        }
        if (total > best) {
            best = total;
            best_pt = min_pt;
        }
        if (total_wall > best_wall) best_wall = total_wall;
    }
    if (per_thread) *per_thread = best_pt;
    if (wall) *wall = best_wall;
    return best;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(seconds > 0 && seconds <= 60)) {
        fprintf(stderr, "usage: limit_bench [seconds per measurement, 0 < s <= 60]\n");
        return 2;
    }
    wd_limiter_t *l = wd_limiter_new(64);
    if (!l) {
        fprintf(stderr, "limit_bench: cannot create the limiter\n");
        return 1;
    }
    const uint32_t big = 1000000000; /* 10^9 a minute: T = 60 ns < STEP_NS, so every decision admits */
    size_t used[8], nused = 0;
    char k1[64], k2[64], role[64], ip[64];
    key_on_own_shard(l, "key:bench", used, nused++, k1);
    key_on_own_shard(l, "key:bench", used, nused++, k2);
    key_on_own_shard(l, "role:bench", used, nused++, role);
    key_on_own_shard(l, "ip:10.0.0", used, nused++, ip);

    run_t t[2];
    double v, wall, per;
    memset(t, 0, sizeof t);
    t[0] = (run_t){.l = l, .n = 1, .seconds = seconds};
    t[0].scopes[0] = scope(k1, big, big);
    v = best_of(t, 1, NULL, &wall);
    printf("local_decisions_per_sec_1thread %.0f\nlocal_decisions_per_sec_1thread_wall %.0f\n", v, wall);

    t[0].n = 3;
    t[0].scopes[1] = scope(role, big, 0);
    t[0].scopes[2] = scope(ip, big, 0);
    v = best_of(t, 1, NULL, &wall);
    printf(
        "local_decisions_per_sec_1thread_3scopes %.0f\nlocal_decisions_per_sec_1thread_3scopes_wall %.0f\n",
        v, wall);

    t[0].n = 1;
    t[0].finish = true;
    t[0].scopes[0].lim.concurrent = 64;
    v = best_of(t, 1, NULL, &wall);
    printf(
        "local_admit_finish_pairs_per_sec_1thread %.0f\nlocal_admit_finish_pairs_per_sec_1thread_wall %.0f\n",
        v, wall);

    t[0] = (run_t){.l = l, .n = 1, .seconds = seconds};
    t[0].scopes[0] = scope(k1, big, big);
    t[1] = t[0];
    t[1].scopes[0] = scope(k2, big, big);
    v = best_of(t, 2, &per, &wall);
    printf("local_decisions_per_sec_2threads %.0f\nlocal_decisions_per_sec_2threads_slowest_thread %.0f\n"
           "local_decisions_per_sec_2threads_wall %.0f\n",
           v, per, wall);
    printf("local_limiter_entries %zu\n", wd_limiter_entries(l));
    wd_limiter_free(l);
    return 0;
}

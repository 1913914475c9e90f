/* limit: rate limits and token quotas that a client cannot outrun. Requests per minute and tokens
 * per minute are GCRA limiters (generic cell rate algorithm: one "theoretical arrival time" per
 * scope, no counters to reset, exact at any rate); concurrency is an in-flight counter; daily and
 * monthly token budgets are fixed UTC windows. A decision covers every scope of a request at once
 * (key, user, role, client IP) and is all-or-nothing: nothing is charged unless every scope admits.
 * Token use is reserved at admission (estimate) and reconciled at the end (actual usage; an
 * admitted stream is never cut for its own overrun — the overrun is charged).
 * Backends: local (in-process, sharded) and redis (one Lua script per decision, see limit_redis.h);
 * both implement exactly the arithmetic below. Knows nothing about HTTP. */
#ifndef WD_LIMIT_H
#define WD_LIMIT_H

#include "core/core.h"

/* 0 = no limit of that kind. */
typedef struct {
    uint32_t rpm;               /* requests per minute; burst = rpm */
    uint32_t tpm;               /* tokens per minute; burst = tpm */
    uint32_t concurrent;        /* requests in flight */
    uint64_t tokens_per_day;    /* UTC day */
    uint64_t tokens_per_month;  /* UTC calendar month */
} wd_limits_t;

#define WD_LIMIT_MAX_SCOPES 4
#define WD_LIMIT_KEY_MAX 200 /* holds "user:" + any principal id */

typedef struct {
    char key[WD_LIMIT_KEY_MAX]; /* e.g. "key:abc123", "user:alice", "role:clinician", "ip:10.0.0.1" */
    wd_limits_t lim;
    uint8_t kind; /* the caller's label for the scope (the gateway's metrics index); limiters ignore it */
} wd_limit_scope_t;

/* Sets a scope's key to prefix + id (the two need not be NUL-terminated), cut to WD_LIMIT_KEY_MAX - 1
 * bytes and NUL-terminated, and its limits. Built on every limited request, hence no printf. */
void wd_limit_scope_set(wd_limit_scope_t *s, const char *prefix, size_t plen, const char *id, size_t idlen,
                        const wd_limits_t *lim);

typedef enum {
    WD_LIMIT_OK = 0,
    WD_LIMIT_REQUESTS,    /* rate_limit_exceeded */
    WD_LIMIT_TOKENS,      /* tokens_exceeded */
    WD_LIMIT_CONCURRENCY, /* concurrency_exceeded */
    WD_LIMIT_BUDGET,      /* budget_exceeded */
    WD_LIMIT_UNAVAILABLE, /* backend unreachable (redis) */
} wd_limit_outcome_t;

const char *wd_limit_code(wd_limit_outcome_t o); /* "rate_limit_exceeded", ... */

/* The outcome plus what OpenAI's x-ratelimit-* headers report, for the most constrained scope that
 * has a limit of each kind (-1 when no scope limits that kind). */
typedef struct {
    wd_limit_outcome_t outcome;
    int scope;                 /* index of the scope that refused, -1 if allowed */
    int64_t retry_after_ms;    /* when refused: how long until the same request could pass; -1 = never
                                * (its cost exceeds a limit or a whole budget: retrying cannot help) */
    int64_t limit_requests, remaining_requests, reset_requests_ms;
    int64_t limit_tokens, remaining_tokens, reset_tokens_ms;
} wd_limit_decision_t;
/* OpenAI's x-ratelimit-* response header lines ("name: value\r\n") for a decision: limit, remaining
 * and reset of requests when limit_requests >= 0, then the same for tokens when limit_tokens >= 0.
 * Counts are decimal (negative ones as 0), resets in OpenAI's duration style ("250ms", "1.5s",
 * "6m0s"). Writes at most WD_LIMIT_HEADERS_MAX bytes (no NUL) and returns how many: one block that
 * the caller appends at once. */
#define WD_LIMIT_HEADERS_MAX 320
size_t wd_limit_headers(const wd_limit_decision_t *d, char *out);

/* Decision rules both backends follow (so they decide identically):
 * - a scope whose limits are all 0 is ignored;
 * - requests cost 1 rpm cell, tokens cost `tokens` tpm cells; concurrency refuses when in-flight >=
 *   concurrent (retry_after 1000 ms); a budget refuses when used + tokens > budget (retry_after =
 *   until its UTC window ends, -1 if tokens alone exceed the budget);
 * - when several limits refuse, the decision reports the one with the longest retry_after ("never"
 *   first; ties: lowest scope index, then requests, tokens, concurrency, day, month);
 * - the x-ratelimit figures come from the scope with the least remaining (ties: longest reset),
 *   rounded up to whole ms; when refused they describe the uncharged state;
 * - local backend: WD_LIMIT_UNAVAILABLE (retry_after 1000 ms, scope = the new key) when a shard is
 *   full and the request needs a new entry; nothing is charged. */

/* ---- GCRA arithmetic (shared by both backends; unit-tested on its own) ----------------------------
 * Parameters for `limit` cells per `period_ns`: emission interval T = period/limit (integer division,
 * at least 1 ns; a limit <= 0 admits nothing), burst tolerance
 * tau = T * (limit - 1) (so a full window's worth may arrive at once).
 * Taking `cost` cells at time now with state tat (0 = fresh):
 *     tat0 = max(tat, now);  new_tat = tat0 + cost*T
 *     allowed iff new_tat - now <= tau + T          (i.e. new_tat - (tau + T) <= now)
 *     if allowed: tat = new_tat
 *     remaining = floor((now + tau + T - new_tat) / T) when allowed (else computed from tat0)
 *     retry_after = new_tat - (tau + T) - now       when refused (> 0)
 *     reset_after = new_tat - now (allowed) / tat0 - now (refused): time until the bucket is full again
 * A clock that goes backwards (now < a previous now) cannot grant extra cells: tat only moves forward.
 * A cost larger than limit can never pass; callers report that as exceeding the limit, and
 * retry_after is then -1 ("never"). A negative cost counts as 0. Products use 128-bit arithmetic and
 * results saturate at INT64_MAX, so limits up to 10^9 and any int64 cost are safe. */
typedef struct {
    int64_t T;   /* emission interval, ns */
    int64_t tau; /* burst tolerance, ns */
    int64_t limit;
} wd_gcra_t;

void wd_gcra_init(wd_gcra_t *g, int64_t limit, int64_t period_ns);
/* Returns true and updates *tat if allowed; fills remaining / retry / reset either way. */
bool wd_gcra_take(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t cost, int64_t *remaining,
                  int64_t *retry_after_ns, int64_t *reset_after_ns);
/* Reconciliation: charge (delta > 0) or refund (delta < 0) cells without a decision. A refund never
 * moves tat below now (unused reservation cannot be banked for later bursts).
 *     charge: tat = max(tat, now) + delta*T (saturating; may exceed now + tau + T: the overrun
 *             delays later requests)
 *     refund: if tat > now: tat = max(tat + delta*T, now); else unchanged */
void wd_gcra_adjust(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t delta);

/* ---- the local backend ---------------------------------------------------------------------------- */

typedef struct wd_limiter wd_limiter_t;

/* shards: a power of two; each shard has its own lock and table, so worker threads rarely meet.
 * Entries idle for longer than their longest window are evicted lazily. */
wd_limiter_t *wd_limiter_new(size_t shards);
void wd_limiter_free(wd_limiter_t *l);

/* Admission of one request for every scope at once (all-or-nothing). `tokens` is the reservation
 * (estimate); now_ns is CLOCK_REALTIME-based nanoseconds (budget windows are UTC calendar days and
 * months). On success the concurrency slots are taken and the tokens reserved. */
void wd_limiter_admit(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t tokens, int64_t now_ns,
                      wd_limit_decision_t *d);

/* End of an admitted request: releases concurrency and charges actual - reserved tokens (may be
 * negative: refund) to the tpm limiter and the budgets of every scope. Pass the same scopes (same
 * limits) as at admission. Budget reconciliation lands in the window current at finish (usage may
 * exceed the budget: the overrun is charged; a refund never takes usage below 0). */
void wd_limiter_finish(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t reserved, int64_t actual,
                       int64_t now_ns);

/* Usage of a request that was never admitted (let through because the limiter could not decide and
 * the caller fails open): charges `tokens` (> 0) to the tpm limiter and the budgets of every scope,
 * like an overrun, and touches no concurrency slot. A key the full shard cannot take is not charged. */
void wd_limiter_charge(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t tokens, int64_t now_ns);

/* Number of live entries (for tests and metrics). */
size_t wd_limiter_entries(wd_limiter_t *l);

/* A shard never holds more entries than this; a request needing a new key in a full shard gets
 * WD_LIMIT_UNAVAILABLE (keys already present keep working), so memory stays bounded under a flood
 * of distinct client addresses: per shard at most 2 * WD_LIMITER_SHARD_CAP table slots of 88 bytes
 * (11.5 MB) plus the keys. Idle entries (fully recovered) are dropped when a shard's table fills. */
#define WD_LIMITER_SHARD_CAP 65536u

/* Which shard a scope key lives in (benchmarks and tests pick keys on distinct shards with it). */
size_t wd_limiter_shard_of(wd_limiter_t *l, const char *key);

#endif

/* limit_redis: the Redis backend of the limiter, for limits that hold exactly across replicas.
 * Every admission is one Lua script that reads Redis' clock (TIME), evaluates every scope's GCRA,
 * concurrency and budget checks with the arithmetic of limit.h and commits all or nothing, so two
 * replicas can never both spend the last cell. A second script reconciles tokens and releases
 * concurrency at the end of a request; a third renews the leases of requests still in flight.
 *
 * Keys share one hash tag, "{<key_prefix>}:<kind>:<scope key>", so a decision over up to four
 * scopes touches a single Redis Cluster slot (a script may not span slots). In-flight requests are
 * members of a sorted set scored by a lease deadline that this instance renews while the request
 * lives; a replica that dies stops renewing and its slots come back within one lease.
 *
 * One instance per worker thread: it owns one hiredis async connection attached to that worker's
 * uv loop and must only be used from that loop's thread. Nothing here blocks: host names are
 * resolved with uv_getaddrinfo, the connection is non-blocking, every admission has a deadline,
 * and a dropped connection is re-established with backoff while requests get
 * WD_LIMIT_UNAVAILABLE (the caller applies its configured fail open / fail closed). */
#ifndef WD_LIMIT_REDIS_H
#define WD_LIMIT_REDIS_H

#include <uv.h>

#include "limit/limit.h"

typedef struct wd_limit_redis wd_limit_redis_t; /* one per worker thread: its own connection on that worker's uv loop */

/* Counters are updated with relaxed atomics, so a metrics thread may read them without locking. */
typedef struct {
    uint64_t decisions;      /* answers computed by Redis (admitted or refused) */
    uint64_t errors;         /* connection failures, error replies, dropped finish/renew calls */
    uint64_t timeouts;       /* admissions answered UNAVAILABLE because Redis missed timeout_ms */
    uint64_t reconnects;     /* successful connections after the first */
    uint64_t latency_ns_sum; /* admission round trips that made it in time */
    uint64_t latency_count;
} wd_limit_redis_stats_t;

#define WD_LIMIT_REDIS_PREFIX_MAX 64
#define WD_LIMIT_REDIS_LEASE_MS 30000 /* concurrency lease; renewed every third of it */

/* url: redis://[[user]:password@]host[:port][/db] (host may be a name, an IPv4 or [IPv6] literal;
 * port 6379 by default) or unix:///path/to/socket. key_prefix: 1..64 characters without '{' or '}'
 * (it becomes the hash tag). timeout_ms: per admission, 1..60000. The connection is opened
 * asynchronously; admissions made before it is up wait for it (within their deadline).
 * Returns NULL with a message in err on bad arguments or allocation failure. */
wd_limit_redis_t *wd_limit_redis_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms, const char *key_prefix,
                                     char *err, size_t errlen);

typedef void (*wd_limit_cb)(void *ud, const wd_limit_decision_t *d);

/* Exactly one callback per successful call, on the loop thread, later (never re-entrantly inside
 * the call); outcome WD_LIMIT_UNAVAILABLE when Redis is unreachable or does not answer within
 * timeout_ms. Returns <0 (and no callback) only on bad arguments: n outside 1..4, a scope key that
 * is empty or not NUL-terminated within WD_LIMIT_KEY_MAX, tokens < 0, cb NULL. The decision is the
 * one wd_limiter_admit makes for the same state, scopes, tokens and instant (Redis' clock).
 * Reservations above 2^50 tokens are clamped to 2^50 (no configurable limit reaches that). */
int wd_limit_redis_admit(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t tokens,
                         wd_limit_cb cb, void *ud);

/* Cancels the pending callback for ud (the request went away). If Redis admits it anyway (the
 * script already ran or runs later), this instance releases the reservation itself as soon as
 * the answer arrives; a finish call the caller makes with actual = 0 is then harmless. */
void wd_limit_redis_cancel(wd_limit_redis_t *r, void *ud);

/* End of a request (fire and forget). When this instance admitted a request with the same scope
 * keys and reservation it is reconciled: actual - reserved is charged (or refunded) to every
 * scope's tpm and budgets and its concurrency slot is released. Otherwise (the admission was
 * refused, cancelled, or answered UNAVAILABLE and the caller failed open) `actual` is charged
 * as plain usage and no slot is touched. Dropped, and counted as an error, while disconnected. */
void wd_limit_redis_finish(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t reserved,
                           int64_t actual);

/* Usage of a request that Redis never admitted (answered UNAVAILABLE and the caller failed open):
 * charges `tokens` to every scope's tpm and budgets as plain usage, never touching a concurrency
 * slot or another request's reservation (unlike finish, which would take a hold with the same keys
 * and reservation). Fire and forget; dropped, and counted as an error, while disconnected. */
void wd_limit_redis_charge(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t tokens);

const wd_limit_redis_stats_t *wd_limit_redis_stats(const wd_limit_redis_t *r);

/* Last connection or server error (no secrets), "" if none. Only from the loop's thread. */
const char *wd_limit_redis_last_error(const wd_limit_redis_t *r);

/* Whether this instance can decide now: true once the connection is up and its set-up (AUTH,
 * SELECT, script loading) went through or a script answered, until the connection drops, a reply
 * is an error or an admission misses timeout_ms. When false and why is given, the last error (no
 * secrets: server and socket messages, never the URL's password) is copied there. Safe from any
 * thread (readiness probes run on the admin thread). */
bool wd_limit_redis_healthy(wd_limit_redis_t *r, char *why, size_t whylen);

/* Concurrency lease (default WD_LIMIT_REDIS_LEASE_MS, 300..3600000): how long a slot held by a
 * replica that died stays taken. Applies to later admissions. */
int wd_limit_redis_set_lease_ms(wd_limit_redis_t *r, uint32_t lease_ms);

/* Testing only: pins the clock the scripts use to now_ns (CLOCK_REALTIME nanoseconds) instead of
 * Redis' TIME, so decisions can be compared with the local backend at identical instants.
 * 0 returns to Redis' clock. Never used by the gateway. */
void wd_limit_redis_pin_clock(wd_limit_redis_t *r, int64_t now_ns);

/* Pending callbacks are called with WD_LIMIT_UNAVAILABLE before this returns (so no paused request
 * waits forever); the connection is closed and the instance's uv handles are closed, so the loop
 * must run once more before uv_loop_close. Safe to call from inside a callback (the teardown is
 * then deferred to the next loop iteration). */
void wd_limit_redis_free(wd_limit_redis_t *r);

#endif

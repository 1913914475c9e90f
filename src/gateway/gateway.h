/* gateway: glue between the network layer and the stage chain: routes, the handler for client
 * connections, error responses in OpenAI's shape, per-request events and metrics, and the admin
 * listener. Policy, guards and limits live in their own modules and reach requests as stages. */
#ifndef WD_GATEWAY_H
#define WD_GATEWAY_H

#include "audit/event.h"
#include "gateway/exchange.h"
#include "monitor/metrics.h"
#include "limit/limit.h"
#include "limit/limit_redis.h"
#include "net/net.h"

#define WD_TOKEN_CACHE 1024

/* A verified token, remembered so repeat use costs a hash, not an Ed25519 verification. */
typedef struct {
    uint8_t digest[16]; /* BLAKE2b-128 of the token */
    bool used;
    wd_claims_t claims;
} wd_token_slot_t;

/* Per-worker gateway state (hung off wd_worker_t.app). */
typedef struct {
    wd_metrics_t metrics;
    wd_event_writer_t events;
    uv_timer_t flush;
    wd_authdb_t *authdb;   /* current identity snapshot (owned reference), NULL when auth is off */
    wd_token_slot_t tokens[WD_TOKEN_CACHE];
    wd_limit_redis_t *redis; /* rate_limits.backend redis: this worker's own connection */
    wd_guard_db_t *guard_db;            /* rules the scratch below was made for (held reference) */
    wd_guard_scratch_t *guard_scratch;
    const uint8_t *guard_hash_key;      /* keyed-hash action; NULL without a state dir */
} wd_gw_worker_t;

extern const wd_stage_t wd_stage_authenticate;
extern const wd_stage_t wd_stage_authorize;
extern const wd_stage_t wd_stage_limit;
extern const wd_stage_t wd_stage_guard;

/* The process-wide local limiter (limits backend "local"); set once before workers start. */
void wd_gateway_set_limiter(wd_limiter_t *l);

/* The store the login endpoint and admin API use (NULL when auth is off). Thread-safe (SQLite
 * serialized mode); set once before workers start. */
void wd_gateway_set_store(wd_store_t *s);
wd_store_t *wd_gateway_store(void);
/* Replaces a worker's identity snapshot (call on the worker's thread; takes a reference). */
void wd_gateway_set_authdb(wd_worker_t *w, wd_authdb_t *db);
/* POST /v1/auth/token: password + TOTP -> PASETO token, off the event loop. */
wd_stage_rc_t wd_gw_login(wd_exchange_t *x);

extern const wd_handler_t wd_gateway_handler;
extern const wd_handler_t wd_admin_handler;

int wd_gateway_worker_init(wd_worker_t *w);
void wd_gateway_worker_stop(wd_worker_t *w); /* flushes events; call on the worker thread */
void wd_gateway_worker_free(wd_worker_t *w);

/* Process-wide counters read by the admin listener and the drain logic. */
uint64_t wd_gateway_inflight(void);

/* What the admin listener needs to render /metrics and /readyz (set up by `warden serve`). */
typedef struct {
    wd_worker_t **workers;
    size_t nworkers;
    bool draining;
    uint64_t reloads, reload_failures;
    wd_store_t *store;        /* NULL when auth.mode is none */
    wd_authdb_t **authdb;     /* the main thread's current identity snapshot */
    wd_event_writer_t events; /* admin actions */
    /* called after the admin API changed the store, so the new snapshot reaches workers at once
     * (the store's change counter only moves for other connections' writes) */
    void (*changed)(void *ud);
    void *changed_ud;
} wd_admin_ctx_t;

/* ---- response helpers used by stages ---------------------------------------------------------- */

/* Starts a streamed (chunked, text/event-stream) answer: the head goes into x->out and leaves with the
 * first events, so a short stream is one write. */
void wd_gw_begin_stream(wd_exchange_t *x);
/* Writes bytes to the client; returns true if the output buffer is over its limit (pause producers). */
bool wd_gw_send(wd_exchange_t *x, const char *p, size_t len);
/* Sends a complete response (head and body in one write). */
void wd_gw_respond(wd_exchange_t *x, int status, const char *json, size_t len);
void wd_gw_respond_type(wd_exchange_t *x, int status, const char *content_type, const char *body, size_t len);
/* Sends the recorded rejection (wd_exchange_reject) in OpenAI's error shape, if nothing was sent yet. */
void wd_gw_send_rejection(wd_exchange_t *x);
/* Sends the recorded rejection (wd_exchange_reject) and completes the exchange; for stages that
 * decide asynchronously, after a WD_PAUSE. */
void wd_gw_reject_now(wd_exchange_t *x);
/* The exchange is over: run on_done stages, emit the event, free it. */
void wd_gw_complete(wd_exchange_t *x);
/* Writes an OpenAI-shaped error body for the recorded rejection into out. */
void wd_gw_error_json(wd_buf_t *out, const char *type, const char *code, const char *message, const char *param);

#endif

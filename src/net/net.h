/* net: the event-loop side of warden. It owns worker threads (one libuv loop each), listening
 * sockets (SO_REUSEPORT, one per worker), client connections (strict HTTP/1.1 framing, keep-alive,
 * pipelining, timeouts, backpressure) and upstream connections (keep-alive pools per worker).
 * It knows nothing about models, policy or guards: a complete request is handed to a handler, and
 * the handler answers through wd_conn_* calls. */
#ifndef WD_NET_H
#define WD_NET_H

#include <uv.h>

#include "config/config.h"
#include "core/core.h"
#include "http/http.h"

typedef struct wd_worker wd_worker_t;
typedef struct wd_conn wd_conn_t;
typedef struct wd_upreq wd_upreq_t;
typedef struct wd_server wd_server_t;

/* A handler receives each complete request (head + decoded body). It must eventually finish the
 * response with wd_conn_finish (or the connection closes and on_abort runs). */
typedef struct {
    void (*on_request)(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body);
    /* The client went away (or timed out) while its request was being answered. Release the
     * request's resources; the connection is freed right after. */
    void (*on_abort)(wd_conn_t *c);
    /* Output to the client drained below the write buffer limit after wd_conn_write said it was
     * full; the handler may resume whatever produces output. */
    void (*on_drain)(wd_conn_t *c);
    /* The request could not be parsed: answer with this status (the connection then closes). */
    void (*on_bad_request)(wd_conn_t *c, int status, const char *reason);
} wd_handler_t;

/* ---- workers -------------------------------------------------------------------------------- */

typedef void (*wd_worker_fn)(wd_worker_t *w, void *arg);

struct wd_worker {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;  /* runs queued cross-thread calls */
    uv_timer_t sweep;   /* deadline checks for connections and upstream requests */
    uv_mutex_t qlock;
    struct wd_call *queue;

    wd_config_t *cfg;   /* current snapshot for new requests (owned reference) */
    wd_server_t *servers;
    void *pools;        /* upstream connection pools (net/upstream.c) */
    struct wd_conn *conns;     /* all client connections of this worker (intrusive list) */
    struct wd_upreq *upreqs;   /* active upstream requests (intrusive list) */
    void *app;          /* the gateway's per-worker state */
    bool draining;
    size_t nconns;      /* open client connections (atomic: read by the draining main thread) */
    uint64_t seq;       /* request counter for ids */
    uint64_t rng;       /* xorshift state, seeded from the kernel */
    uint64_t reads;     /* socket read callbacks (busy polling spins on while they come) */
};

/* Initialises a worker's loop on the calling thread (no thread started). */
int wd_worker_init(wd_worker_t *w, int id, wd_config_t *cfg, char *err, size_t errlen);
int wd_worker_start(wd_worker_t *w); /* runs the loop on a new thread */
/* Runs fn(w, arg) on the worker's thread, soon. Safe from any thread. */
int wd_worker_call(wd_worker_t *w, wd_worker_fn fn, void *arg);
/* Replaces the worker's config snapshot (call on the worker thread; takes its own reference). */
void wd_worker_set_config(wd_worker_t *w, wd_config_t *cfg);
/* Stops accepting, closes idle keep-alive connections, lets requests in flight finish and closes
 * each connection after its current response. */
void wd_worker_drain(wd_worker_t *w);
/* Closes everything and stops the loop (the thread then exits). */
void wd_worker_stop(wd_worker_t *w);
void wd_worker_join(wd_worker_t *w);
void wd_worker_free(wd_worker_t *w);
size_t wd_worker_conn_count(const wd_worker_t *w); /* safe from any thread */
uint64_t wd_worker_rand(wd_worker_t *w);

/* ---- listeners and client connections --------------------------------------------------------- */

/* Fails if something already listens on addr (call once before the workers bind it). */
int wd_server_probe(const wd_addr_t *addr, char *err, size_t errlen);

/* Which TLS context a listener's new connections use. It is looked up in the worker's current
 * snapshot at every accept, so after a reload new connections get the new certificate while open
 * ones keep theirs. NULL as the function: the listener speaks plain HTTP. */
typedef struct ssl_ctx_st *(*wd_tls_select_fn)(const wd_config_t *cfg);

/* Opens a listening socket on addr (SO_REUSEPORT so every worker can bind the same address) and
 * serves it with handler on worker w, over TLS when tls is not NULL. */
int wd_server_listen(wd_worker_t *w, const wd_addr_t *addr, wd_tls_select_fn tls, const wd_handler_t *handler,
                     void *handler_ud, char *err, size_t errlen);

typedef enum {
    WD_CONN_HEAD,    /* waiting for (more of) a request head; idle when nothing received yet */
    WD_CONN_BODY,    /* reading a request body */
    WD_CONN_BUSY,    /* request handed to the handler, response not finished */
    WD_CONN_CLOSING,
} wd_conn_state_t;

struct wd_conn {
    uv_tcp_t tcp;
    struct wd_tls *tls;       /* NULL on plain HTTP listeners */
    wd_worker_t *w;
    wd_server_t *srv;
    const wd_handler_t *h;
    void *hud;                /* the handler's per-listener context */
    struct wd_conn *next, *prev;
    wd_conn_state_t state;
    wd_buf_t in;              /* received bytes not yet consumed */
    wd_buf_t body;            /* decoded request body */
    wd_http_msg_t req;        /* views point into `head` */
    wd_buf_t head;            /* copy of the current request's head bytes */
    wd_http_chunked_t chunked;
    uint64_t body_left;       /* Content-Length bytes still to read */
    uint64_t deadline_ns;     /* 0 = none; meaning depends on state */
    uint64_t send_deadline_ns;
    uint64_t req_start_ns;    /* first byte of the current request */
    uint64_t bytes_in, bytes_out; /* for the current request */
    size_t queued;            /* bytes handed to uv_write and not yet written */
    bool reading;
    bool keep_alive;          /* the current request allows reuse */
    bool close_after;         /* close once the current response is written */
    bool want_drain;          /* handler was told the output buffer is full */
    bool output_full;         /* pipelined requests wait (and reading stops) until the output drains */
    bool eof;                 /* client half-closed or gone */
    bool in_process;          /* re-entrancy guard for the request loop */
    bool tls_plain;           /* TLS failed on a plaintext request: the 400 goes out unencrypted */
    char peer[64];            /* client address text, e.g. "127.0.0.1" */
    void *ud;                 /* the handler's per-request state */
};

/* Queues bytes for the client (copied if they cannot be written at once). Returns the number of
 * bytes queued but unwritten; when that exceeds limits.write_buffer_bytes the handler should pause
 * its producer until on_drain. Returns a negative code if the connection is closing. */
ssize_t wd_conn_write(wd_conn_t *c, const char *p, size_t len);
/* The response is complete. Keep-alive connections move on to the next (possibly pipelined)
 * request; others close after the output is flushed. */
void wd_conn_finish(wd_conn_t *c, bool keep_alive);
/* Aborts the connection now (no more output). The handler's on_abort is not called. */
void wd_conn_close(wd_conn_t *c);
/* Same, but first tells the handler (on_abort) if a request was being answered. */
void wd_conn_abort(wd_conn_t *c);

/* ---- upstream client -------------------------------------------------------------------------- */

typedef enum {
    WD_UP_OK = 0,
    WD_UP_ECONNECT,  /* refused / unreachable */
    WD_UP_ETIMEOUT,  /* connect, TLS handshake, response head or body gap timed out */
    WD_UP_ERESET,    /* upstream closed or reset the connection */
    WD_UP_EPROTO,    /* malformed or oversized response */
    WD_UP_ETLS,      /* TLS handshake or record failure (wd_upreq_t.error says why) */
    WD_UP_ECANCEL,   /* cancelled by us */
} wd_up_status_t;

const char *wd_up_status_text(wd_up_status_t s);

struct wd_upreq {
    /* set by the caller */
    const wd_upstream_cfg_t *up;
    wd_buf_t request;  /* complete request bytes (head + body); owned, freed by wd_upreq_free */
    void (*on_head)(wd_upreq_t *r, const wd_http_msg_t *head);
    /* Decoded body bytes. Returns false when the callback cancelled the request (r may be freed:
     * the client layer must not touch it again). */
    bool (*on_data)(wd_upreq_t *r, const char *p, size_t len);
    void (*on_done)(wd_upreq_t *r, wd_up_status_t st);         /* exactly once, unless cancelled */
    void *ud;
    /* private */
    wd_worker_t *w;
    struct wd_upconn *uc;
    struct wd_upreq *next, *prev;
    uint64_t deadline_ns;
    uint64_t start_ns, end_ns;
    bool head_seen;
    bool final;   /* set before on_data when these bytes complete the response (on_done follows) */
    bool paused;
    bool retried;
    bool active;
    char error[224];   /* detail of a WD_UP_ETLS failure, e.g. "certificate verify failed: ..." */
};

/* Sends r->request to r->up on a pooled or new connection. On failure to start it returns a negative
 * code and no callback runs. */
int wd_upreq_start(wd_worker_t *w, wd_upreq_t *r);
/* Cancels an active request: its connection is closed (never reused); no callback runs after. */
void wd_upreq_cancel(wd_upreq_t *r);
/* Backpressure: stop / resume reading the upstream's response. */
void wd_upreq_pause(wd_upreq_t *r);
void wd_upreq_resume(wd_upreq_t *r);
void wd_upreq_free(wd_upreq_t *r);

/* Internal to net: */
void wd_upstream_sweep(wd_worker_t *w, uint64_t now);
void wd_upstream_pools_free(wd_worker_t *w);
void wd_upstream_prune(wd_worker_t *w); /* after a config change: retire pools no upstream uses */
void wd_server_sweep(wd_worker_t *w, uint64_t now);
uint64_t wd_server_connections(void); /* open client connections, all listeners */

#endif

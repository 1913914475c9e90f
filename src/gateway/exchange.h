/* gateway/exchange: the contract every stage shares (DESIGN.md §2). One wd_exchange_t is one client
 * request from its first byte to its last; stages run in order on the request, see the response head
 * and every response chunk (whole SSE events on streams), and on_done runs for every exchange, in
 * reverse order, rejected or not, so accounting and audit never skip. */
#ifndef WD_EXCHANGE_H
#define WD_EXCHANGE_H

#include "audit/event.h"
#include "auth/authdb.h"
#include "config/config.h"
#include "core/json.h"
#include "http/http.h"
#include "net/net.h"

typedef enum { WD_CONTINUE = 0, WD_REJECT = 1, WD_PAUSE = 2 } wd_stage_rc_t;

typedef enum {
    WD_ROUTE_NONE = 0,
    WD_ROUTE_CHAT,
    WD_ROUTE_COMPLETIONS,
    WD_ROUTE_EMBEDDINGS,
    WD_ROUTE_MODELS,
    WD_ROUTE_TOKEN,
    WD_ROUTE__COUNT
} wd_route_id_t;

typedef struct {
    wd_route_id_t id;
    const char *name;       /* metrics/event label */
    const char *path;       /* client path */
    wd_http_method_t method;
    const char *upstream_suffix; /* appended to the upstream base path; NULL = answered by warden */
    bool json_body;         /* body is a JSON object naming a model */
    bool can_stream;
    uint32_t endpoint;      /* WD_EP_* bit checked by RBAC; 0 = public (no authentication) */
} wd_route_t;

typedef struct wd_exchange wd_exchange_t;

typedef struct {
    const char *name;
    /* Request phase: inspect or rewrite the request. */
    wd_stage_rc_t (*on_request)(wd_exchange_t *x);
    /* The upstream's status and headers are known (x->resp_status, x->streaming). */
    wd_stage_rc_t (*on_response_head)(wd_exchange_t *x);
    /* A chunk of response body: a whole SSE event on streams, the whole body otherwise. The stage may
     * rewrite `chunk` (or empty it to hold bytes back). WD_REJECT ends the response: non-streamed with
     * the rejection, streamed with an error event. */
    wd_stage_rc_t (*on_response_data)(wd_exchange_t *x, wd_buf_t *chunk);
    /* Always runs, in reverse order, once per exchange. */
    void (*on_done)(wd_exchange_t *x);
} wd_stage_t;

struct wd_exchange {
    wd_worker_t *w;
    wd_conn_t *conn;        /* NULL once the client is gone */
    wd_config_t *cfg;       /* the snapshot this exchange started with (owned reference) */
    char id[20];
    const wd_route_t *route;
    wd_http_msg_t *req;
    wd_buf_t *body;         /* the client's body (owned by the connection) */

    /* identity (authenticate stage) */
    wd_authdb_t *authdb;       /* snapshot held for the request */
    bool authenticated;
    wd_principal_t principal;
    const wd_authkey_t *key;   /* when an API key was presented */
    wd_claims_t claims;        /* when a token was presented */
    const char *role_ptrs[32];

    /* privacy guard (guard stage) */
    void *guard;

    /* rate limits (limit stage) */
    wd_limit_scope_t limit_scopes[WD_LIMIT_MAX_SCOPES];
    size_t nlimit_scopes;
    int64_t limit_reserved;   /* tokens reserved at admission */
    int64_t prompt_estimate;  /* tokens, from the body size (the reservation's prompt part) */
    int64_t prompt_text_tokens; /* tokens, from the prompt's text (usage when the upstream reports none) */
    uint64_t answer_text_bytes; /* answer text seen so far (same purpose) */
    bool limit_admitted;
    bool limit_fail_open;     /* let through unadmitted (rate_limits.fail: open): usage charged at the end */
    bool limit_redis;         /* decided by the Redis backend */
    uint16_t limit_headers_len;
    char limit_headers[WD_LIMIT_HEADERS_MAX]; /* the x-ratelimit-* lines, written with the head: kept here
                                                 rather than in resp_headers, which then stays unallocated */

    /* JSON view of the body (json_body routes) */
    wd_json_doc_t doc;
    wd_json_tok_t *toks;
    wd_json_tok_t toks_inline[128];
    size_t toks_cap;
    const wd_model_cfg_t *model; /* NULL until found (or when the name is unknown) */
    char model_name[128];        /* as the client asked, decoded */
    size_t model_name_len;
    bool stream;              /* client asked for a stream */
    bool client_wants_usage;  /* client itself asked for stream_options.include_usage */
    wd_buf_t upstream_body;   /* rewritten body sent upstream */

    /* forward */
    wd_upreq_t up;
    bool up_started;

    /* response */
    int resp_status;
    bool streaming;          /* relaying an SSE stream (head already sent) */
    bool head_sent;
    wd_buf_t resp_body;      /* non-streamed body being collected */
    wd_buf_t resp_headers;   /* extra response header lines added by stages ("Name: value\r\n") */
    wd_buf_t out;            /* output being assembled for one write */
    wd_buf_t chunk;          /* scratch for one SSE event */
    wd_sse_parser_t sse;
    bool stream_failed;
    uint64_t resp_bytes;     /* upstream body bytes received */

    /* rejection (set by wd_exchange_reject) */
    int reject_status;
    const char *reject_type;
    char retry_after[24];

    bool work_pending;       /* a thread-pool job holds the exchange (login) */
    bool aborted;            /* the client left while work was pending */
    size_t stage;            /* next stage to run */
    bool done;
    uint64_t t_start, t_up_start, t_up_end, t_first_out;
    wd_event_t ev;
    void *stage_data[8];     /* per-stage state, indexed by stage position */
};

/* Records a rejection: status, OpenAI error code, human reason and the rule that decided (may be NULL).
 * The stage then returns WD_REJECT; the gateway writes the error and runs on_done. */
void wd_exchange_reject(wd_exchange_t *x, int status, const char *code, const char *reason, const char *rule);
/* Resumes an exchange whose stage returned WD_PAUSE (call from the exchange's worker thread). */
void wd_exchange_resume(wd_exchange_t *x);
/* Adds a response header line for the client (name and value must be safe header text). */
int wd_exchange_add_header(wd_exchange_t *x, const char *name, const char *value);

/* The stages that make up the chain, in order (gateway/stages.c). */
extern const wd_stage_t *const wd_stages[];
extern const size_t wd_nstages;

/* Routes (gateway/routes.c). */
const wd_route_t *wd_route_match(const wd_http_msg_t *req, bool *method_mismatch);
extern const wd_route_t wd_routes[WD_ROUTE__COUNT];

#endif

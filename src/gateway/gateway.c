/* The client-facing handler: one exchange per request, the stage chain runner, OpenAI-shaped errors,
 * and the per-request event and metrics written when the exchange ends. */
#include "gateway/gateway.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t g_inflight; /* atomic */

uint64_t wd_gateway_inflight(void) { return __atomic_load_n(&g_inflight, __ATOMIC_RELAXED); }

static wd_gw_worker_t *gw(wd_worker_t *w) { return w->app; }

/* ---- routes ---------------------------------------------------------------------------------------- */

const wd_route_t wd_routes[WD_ROUTE__COUNT] = {
    [WD_ROUTE_NONE] = {WD_ROUTE_NONE, "none", NULL, WD_HTTP_OTHER, NULL, false, false, 0},
    [WD_ROUTE_CHAT] = {WD_ROUTE_CHAT, "chat", "/v1/chat/completions", WD_HTTP_POST, "/chat/completions", true, true,
                       WD_EP_CHAT},
    [WD_ROUTE_COMPLETIONS] = {WD_ROUTE_COMPLETIONS, "completions", "/v1/completions", WD_HTTP_POST, "/completions",
                              true, true, WD_EP_COMPLETIONS},
    [WD_ROUTE_EMBEDDINGS] = {WD_ROUTE_EMBEDDINGS, "embeddings", "/v1/embeddings", WD_HTTP_POST, "/embeddings", true,
                             false, WD_EP_EMBEDDINGS},
    [WD_ROUTE_MODELS] = {WD_ROUTE_MODELS, "models", "/v1/models", WD_HTTP_GET, NULL, false, false, WD_EP_MODELS},
    [WD_ROUTE_TOKEN] = {WD_ROUTE_TOKEN, "token", "/v1/auth/token", WD_HTTP_POST, NULL, false, false, 0},
};

const wd_route_t *wd_route_match(const wd_http_msg_t *req, bool *method_mismatch)
{
    *method_mismatch = false;
    for (size_t i = 1; i < WD_ROUTE__COUNT; i++) {
        if (!wd_str_eq(req->path, wd_strz(wd_routes[i].path))) continue;
        if (req->method == wd_routes[i].method) return &wd_routes[i];
        *method_mismatch = true;
    }
    return &wd_routes[WD_ROUTE_NONE];
}

/* ---- responses ------------------------------------------------------------------------------------- */

void wd_gw_error_json(wd_buf_t *o, const char *type, const char *code, const char *message, const char *param)
{
    wd_buf_append_str(o, "{\"error\":{\"message\":\"");
    wd_buf_append_json_str(o, message, strlen(message));
    wd_buf_append_str(o, "\",\"type\":\"");
    wd_buf_append_json_str(o, type, strlen(type));
    wd_buf_append_str(o, "\",\"param\":");
    if (param) {
        wd_buf_append(o, "\"", 1);
        wd_buf_append_json_str(o, param, strlen(param));
        wd_buf_append(o, "\"", 1);
    } else {
        wd_buf_append_str(o, "null");
    }
    wd_buf_append_str(o, ",\"code\":");
    if (code) {
        wd_buf_append(o, "\"", 1);
        wd_buf_append_json_str(o, code, strlen(code));
        wd_buf_append(o, "\"", 1);
    } else {
        wd_buf_append_str(o, "null");
    }
    wd_buf_append_str(o, "}}");
}

static bool conn_will_close(const wd_exchange_t *x)
{
    const wd_conn_t *c = x->conn;
    return !c->keep_alive || c->close_after || c->w->draining;
}

/* A head without the stages' lines fits in this: status line, Content-Type (counted apart), length or
 * chunked coding, request id, Retry-After, Connection. */
#define HEAD_FIXED_MAX 256

/* Makes room in the empty x->out for a head and `body` more bytes in one allocation: growing by
 * doubling would reallocate and copy on the way, and glibc's realloc bypasses its per-thread cache
 * (measured: a limited response's longer head pushed every answer through that slow path). */
static void reserve_out(wd_exchange_t *x, const char *content_type, size_t body)
{
    wd_buf_reserve(&x->out,
                   HEAD_FIXED_MAX + strlen(content_type) + x->resp_headers.len + x->limit_headers_len + body);
}

/* Appends the response head to x->out. */
static void build_head(wd_exchange_t *x, int status, const char *content_type, int64_t len)
{
    x->head_sent = true;
    x->resp_status = status;
    wd_buf_t *o = &x->out;
    /* appends, not printf: this runs for every response */
    wd_buf_append_str(o, "HTTP/1.1 ");
    wd_buf_append_u64(o, (uint64_t)status);
    wd_buf_append_str(o, " ");
    wd_buf_append_str(o, wd_http_status_text(status));
    wd_buf_append_str(o, "\r\nContent-Type: ");
    wd_buf_append_str(o, content_type);
    if (len >= 0) {
        wd_buf_append_str(o, "\r\nContent-Length: ");
        wd_buf_append_u64(o, (uint64_t)len);
        wd_buf_append_str(o, "\r\n");
    } else {
        wd_buf_append_str(o, "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    }
    wd_buf_append_str(o, "x-warden-request-id: ");
    wd_buf_append_str(o, x->id);
    if (x->retry_after[0]) {
        wd_buf_append_str(o, "\r\nRetry-After: ");
        wd_buf_append_str(o, x->retry_after);
    }
    wd_buf_append_str(o, "\r\n");
    wd_buf_append(o, x->resp_headers.data, x->resp_headers.len);
    wd_buf_append(o, x->limit_headers, x->limit_headers_len);
    if (conn_will_close(x)) wd_buf_append_str(o, "Connection: close\r\n");
    wd_buf_append_str(o, "\r\n");
    if (x->t_first_out == 0) x->t_first_out = wd_now_ns();
}

void wd_gw_begin_stream(wd_exchange_t *x)
{
    if (!x->conn || x->head_sent) return;
    wd_buf_reset(&x->out);
    reserve_out(x, "text/event-stream", 0);
    build_head(x, 200, "text/event-stream", -1);
}

bool wd_gw_send(wd_exchange_t *x, const char *p, size_t len)
{
    if (!x->conn || !len) return false;
    ssize_t q = wd_conn_write(x->conn, p, len);
    return q < 0 || (size_t)q >= x->cfg->limits.write_buffer_bytes;
}

void wd_gw_respond(wd_exchange_t *x, int status, const char *json, size_t len)
{
    wd_gw_respond_type(x, status, "application/json", json, len);
}

void wd_gw_respond_type(wd_exchange_t *x, int status, const char *content_type, const char *json, size_t len)
{
    if (!x->conn || x->head_sent) return;
    /* head and body leave in one write: one syscall, one segment for small answers */
    wd_buf_reset(&x->out);
    reserve_out(x, content_type, len);
    build_head(x, status, content_type, (int64_t)len);
    /* a HEAD answer carries the Content-Length a GET would have, but never the body (RFC 9110 §9.3.2) */
    if (!x->req || x->req->method != WD_HTTP_HEAD) wd_buf_append(&x->out, json, len);
    wd_conn_write(x->conn, x->out.data, x->out.len);
}

static const char *error_type(int status)
{
    if (status == 401) return "authentication_error";
    if (status == 403) return "permission_error";
    if (status == 404) return "not_found_error";
    if (status == 429) return "rate_limit_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

void wd_exchange_reject(wd_exchange_t *x, int status, const char *code, const char *reason, const char *rule)
{
    x->reject_status = status;
    x->reject_type = error_type(status);
    wd_event_copy(x->ev.code, sizeof x->ev.code, code, strlen(code));
    wd_event_copy(x->ev.reason, sizeof x->ev.reason, reason, strlen(reason));
    if (rule) wd_event_copy(x->ev.rule, sizeof x->ev.rule, rule, strlen(rule));
    x->ev.decision = status >= 500 ? "error" : (strcmp(code, "content_blocked") == 0 ? "block" : "deny");
}

int wd_exchange_add_header(wd_exchange_t *x, const char *name, const char *value)
{
    return wd_buf_printf(&x->resp_headers, "%s: %s\r\n", name, value);
}

/* Writes the recorded rejection as the response (before anything else was sent). */
void wd_gw_send_rejection(wd_exchange_t *x)
{
    wd_buf_t body;
    wd_buf_init(&body, 0);
    const char *param = NULL;
    if (strcmp(x->ev.code, "model_not_found") == 0 || strcmp(x->ev.code, "missing_model") == 0) param = "model";
    wd_gw_error_json(&body, x->reject_type, x->ev.code, x->ev.reason, param);
    wd_gw_respond(x, x->reject_status, body.data, body.len);
    wd_buf_free(&body);
}

void wd_gw_reject_now(wd_exchange_t *x)
{
    wd_gw_send_rejection(x);
    wd_gw_complete(x);
}

/* ---- the exchange ---------------------------------------------------------------------------------- */

static void exchange_free(wd_exchange_t *x)
{
    if (x->up_started) wd_upreq_free(&x->up);
    else wd_buf_free(&x->up.request);
    if (x->toks != x->toks_inline) free(x->toks);
    wd_buf_free(&x->upstream_body);
    wd_buf_free(&x->resp_body);
    wd_buf_free(&x->resp_headers);
    wd_buf_free(&x->out);
    wd_buf_free(&x->chunk);
    wd_sse_free(&x->sse);
    wd_config_unref(x->cfg);
    free(x);
}

static uint64_t us(uint64_t ns) { return ns / 1000; }

void wd_gw_complete(wd_exchange_t *x)
{
    if (x->done) return;
    x->done = true;
    for (size_t i = x->stage; i-- > 0;)
        if (wd_stages[i]->on_done) wd_stages[i]->on_done(x);

    uint64_t now = wd_now_ns();
    wd_event_t *e = &x->ev;
    if (!e->status) e->status = x->resp_status ? x->resp_status : x->reject_status;
    if (x->conn) {
        e->bytes_in = x->conn->bytes_in;
        e->bytes_out = x->conn->bytes_out;
    }
    uint64_t total = now - x->t_start;
    uint64_t upstream = x->t_up_start && x->t_up_end >= x->t_up_start ? x->t_up_end - x->t_up_start : 0;
    if (x->t_up_start && !x->t_up_end) upstream = now - x->t_up_start;
    e->total_us = us(total);
    e->upstream_us = us(upstream);
    e->overhead_us = us(total > upstream ? total - upstream : 0);
    e->ttfb_us = x->t_first_out ? us(x->t_first_out - x->t_start) : 0;

    wd_gw_worker_t *g = gw(x->w);
    wd_metrics_t *m = &g->metrics;
    int st = e->status >= 0 && e->status < 600 ? e->status : 0;
    size_t r = x->route ? (size_t)x->route->id : 0;
    WD_METRIC_ADD(m->requests[r][st], 1);
    wd_hist_observe(&m->duration[r], total);
    wd_hist_observe(&m->overhead[r], total > upstream ? total - upstream : 0);
    if (x->t_up_start) wd_hist_observe(&m->upstream[r], upstream);
    WD_METRIC_ADD(m->bytes_in, e->bytes_in);
    WD_METRIC_ADD(m->bytes_out, e->bytes_out);
    WD_METRIC_ADD(m->stream_events, e->stream_events);
    wd_event_emit(&g->events, e);

    if (x->conn) {
        x->conn->ud = NULL;
        wd_conn_finish(x->conn, true);
    }
    __atomic_sub_fetch(&g_inflight, 1, __ATOMIC_RELAXED);
    exchange_free(x);
}

/* Runs stages from x->stage until one pauses, rejects, or the chain ends. */
static void run_chain(wd_exchange_t *x)
{
    while (x->stage < wd_nstages) {
        const wd_stage_t *s = wd_stages[x->stage];
        x->stage++;
        if (!s->on_request) continue;
        wd_stage_rc_t rc = s->on_request(x);
        if (rc == WD_PAUSE) return;
        if (rc == WD_REJECT) {
            wd_gw_reject_now(x);
            return;
        }
        if (x->done) return;
    }
}

void wd_exchange_resume(wd_exchange_t *x) { run_chain(x); }

static void new_request_id(wd_worker_t *w, char out[20])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = wd_worker_rand(w);
    for (int i = 0; i < 16; i++) out[i] = hex[(v >> (i * 4)) & 15];
    out[16] = 0;
}

static wd_exchange_t *exchange_new(wd_conn_t *c)
{
    wd_exchange_t *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->w = c->w;
    x->conn = c;
    x->cfg = wd_config_ref(c->w->cfg);
    x->t_start = c->req_start_ns ? c->req_start_ns : wd_now_ns();
    x->toks = x->toks_inline;
    new_request_id(c->w, x->id);
    wd_buf_init(&x->upstream_body, 0);
    wd_buf_init(&x->resp_body, x->cfg->limits.max_response_bytes);
    wd_buf_init(&x->resp_headers, 4096);
    wd_buf_init(&x->out, 0);
    wd_buf_init(&x->chunk, 0);
    wd_buf_init(&x->up.request, 0);
    wd_sse_init(&x->sse, x->cfg->limits.max_sse_event_bytes);
    wd_event_init(&x->ev);
    memcpy(x->ev.request_id, x->id, sizeof x->id);
    x->ev.wall_ms = wd_wall_ms();
    wd_event_copy(x->ev.client_ip, sizeof x->ev.client_ip, c->peer, strlen(c->peer));
    c->ud = x;
    __atomic_add_fetch(&g_inflight, 1, __ATOMIC_RELAXED);
    return x;
}

static void on_request(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body)
{
    wd_exchange_t *x = exchange_new(c);
    if (!x) {
        wd_conn_close(c);
        return;
    }
    x->req = req;
    x->body = body;
    wd_event_copy(x->ev.method, sizeof x->ev.method, req->method_str.p, req->method_str.len);
    wd_event_copy(x->ev.path, sizeof x->ev.path, req->path.p, req->path.len);
    bool method_mismatch;
    x->route = wd_route_match(req, &method_mismatch);
    x->ev.route = x->route->name;
    if (x->route->id == WD_ROUTE_NONE) {
        char msg[200];
        if (method_mismatch) {
            snprintf(msg, sizeof msg, "Method %.*s is not allowed on %.*s", (int)req->method_str.len,
                     req->method_str.p, (int)WD_MIN(req->path.len, 120), req->path.p);
            for (size_t i = 1; i < WD_ROUTE__COUNT; i++)
                if (wd_str_eq(req->path, wd_strz(wd_routes[i].path)))
                    wd_exchange_add_header(x, "Allow", wd_routes[i].method == WD_HTTP_GET ? "GET" : "POST");
            wd_exchange_reject(x, 405, "method_not_allowed", msg, NULL);
        } else {
            snprintf(msg, sizeof msg, "Unknown request URL: %.*s %.*s", (int)req->method_str.len,
                     req->method_str.p, (int)WD_MIN(req->path.len, 120), req->path.p);
            wd_exchange_reject(x, 404, "unknown_url", msg, NULL);
        }
        wd_gw_send_rejection(x);
        wd_gw_complete(x);
        return;
    }
    run_chain(x);
}

static void on_abort(wd_conn_t *c)
{
    wd_exchange_t *x = c->ud;
    if (!x) return;
    x->conn = NULL;
    if (x->work_pending) { /* the job's completion finishes the exchange */
        x->aborted = true;
        x->ev.status = 499;
        return;
    }
    if (x->up_started) wd_upreq_cancel(&x->up);
    x->ev.status = 499; /* nginx's "client closed request", even if a stream had begun */
    if (!x->ev.code[0]) {
        wd_event_copy(x->ev.code, sizeof x->ev.code, "client_closed", 13);
        wd_event_copy(x->ev.reason, sizeof x->ev.reason, "client closed the connection", 28);
    }
    x->ev.bytes_in = c->bytes_in;
    x->ev.bytes_out = c->bytes_out;
    wd_gw_complete(x);
}

static void on_drain(wd_conn_t *c)
{
    wd_exchange_t *x = c->ud;
    if (x && x->up_started) wd_upreq_resume(&x->up);
}

/* For the event of a request that failed to parse: the method and target from its first line, if
 * that much arrived (an investigator wants to know what a smuggling attempt aimed at). */
static void note_request_line(wd_exchange_t *x, const wd_conn_t *c)
{
    const wd_buf_t *b = c->head.len ? &c->head : &c->in;
    size_t n = WD_MIN(b->len, (size_t)512);
    const char *p = b->data, *eol = n ? memchr(p, '\n', n) : NULL;
    if (!eol) return;
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1) return;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2) return;
    wd_event_copy(x->ev.method, sizeof x->ev.method, p, (size_t)(sp1 - p));
    wd_event_copy(x->ev.path, sizeof x->ev.path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
}

static void on_bad_request(wd_conn_t *c, int status, const char *reason)
{
    wd_exchange_t *x = exchange_new(c);
    if (!x) {
        wd_conn_close(c);
        return;
    }
    x->route = &wd_routes[WD_ROUTE_NONE];
    note_request_line(x, c);
    const char *code = status == 413 ? "request_too_large"
                       : status == 408 ? "request_timeout"
                       : status == 431 ? "headers_too_large"
                       : status == 414 ? "uri_too_long"
                                       : "invalid_request";
    wd_exchange_reject(x, status, code, reason, NULL);
    wd_gw_send_rejection(x);
    wd_gw_complete(x);
}

const wd_handler_t wd_gateway_handler = {on_request, on_abort, on_drain, on_bad_request};

/* ---- per-worker state ------------------------------------------------------------------------------ */

static void on_flush(uv_timer_t *t)
{
    wd_gw_worker_t *g = t->data;
    wd_event_flush(&g->events);
}

int wd_gateway_worker_init(wd_worker_t *w)
{
    wd_gw_worker_t *g = calloc(1, sizeof *g);
    if (!g) return WD_ENOMEM;
    wd_event_writer_init(&g->events);
    uv_timer_init(&w->loop, &g->flush);
    g->flush.data = g;
    uv_timer_start(&g->flush, on_flush, 200, 200);
    uv_unref((uv_handle_t *)&g->flush);
    w->app = g;
    return WD_OK;
}

void wd_gateway_worker_stop(wd_worker_t *w)
{
    wd_gw_worker_t *g = gw(w);
    if (!g) return;
    if (g->redis) { /* answers pending decisions with "unavailable" */
        wd_limit_redis_free(g->redis);
        g->redis = NULL;
    }
    wd_event_flush(&g->events);
}

void wd_gateway_worker_free(wd_worker_t *w)
{
    wd_gw_worker_t *g = gw(w);
    if (!g) return;
    if (g->redis) wd_limit_redis_free(g->redis);
    wd_guard_scratch_free(g->guard_scratch);
    wd_guard_db_unref(g->guard_db);
    wd_event_writer_free(&g->events);
    for (size_t i = 0; i < WD_TOKEN_CACHE; i++)
        if (g->tokens[i].used) wd_claims_free(&g->tokens[i].claims);
    wd_authdb_unref(g->authdb);
    free(g);
    w->app = NULL;
}

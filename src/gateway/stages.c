/* The stage chain and the two stages the gateway core provides: `request` (strict JSON, model
 * mapping, body rewrite) and `forward` (the upstream call and the response relay, SSE event by event).
 * Authentication, authorization, limits and guards are inserted between them by their modules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"

/* ---- request: parse and rewrite the JSON body ----------------------------------------------------- */

static bool is_json_type(const wd_http_msg_t *req)
{
    const wd_http_header_t *h = wd_http_header(req, "content-type");
    if (!h) return true; /* many clients omit it; the body is still parsed strictly */
    wd_str_t v = h->value;
    size_t n = 0;
    while (n < v.len && v.p[n] != ';' && v.p[n] != ' ' && v.p[n] != '\t') n++;
    return wd_str_ieq_z(wd_str(v.p, n), "application/json");
}

static wd_stage_rc_t parse_body(wd_exchange_t *x)
{
    char err[160];
    const wd_buf_t *b = x->body;
    if (!is_json_type(x->req)) {
        wd_exchange_reject(x, 415, "unsupported_media_type", "Content-Type must be application/json", NULL);
        return WD_REJECT;
    }
    if (b->len == 0) {
        wd_exchange_reject(x, 400, "invalid_json", "The request body is empty; expected a JSON object", NULL);
        return WD_REJECT;
    }
    x->toks_cap = WD_ARRAY_LEN(x->toks_inline);
    int rc = wd_json_parse(&x->doc, b->data, b->len, x->toks, x->toks_cap, 0, err, sizeof err);
    if (rc == WD_E2BIG && b->len < UINT32_MAX) {
        size_t cap = b->len / 2 + 2;
        x->toks = malloc(cap * sizeof *x->toks);
        x->toks_cap = cap;
        if (!x->toks) {
            x->toks = x->toks_inline;
            wd_exchange_reject(x, 500, "internal_error", "out of memory", NULL);
            return WD_REJECT;
        }
        rc = wd_json_parse(&x->doc, b->data, b->len, x->toks, cap, 0, err, sizeof err);
    }
    if (rc != WD_OK) {
        char msg[224];
        snprintf(msg, sizeof msg, "We could not parse the JSON body of your request: %s",
                 rc == WD_E2BIG ? "too deeply nested" : err);
        wd_exchange_reject(x, 400, "invalid_json", msg, NULL);
        return WD_REJECT;
    }
    return WD_CONTINUE;
}

static wd_stage_rc_t reject_param(wd_exchange_t *x, const char *code, const char *msg)
{
    wd_exchange_reject(x, 400, code, msg, NULL);
    return WD_REJECT;
}

static void reject_unknown_model(wd_exchange_t *x)
{
    char msg[220];
    snprintf(msg, sizeof msg, "The model `%s` does not exist or you do not have access to it.", x->ev.model);
    wd_exchange_reject(x, 404, "model_not_found", msg, NULL);
}

static wd_stage_rc_t request_on_request(wd_exchange_t *x)
{
    if (!x->route->json_body) return WD_CONTINUE;
    wd_stage_rc_t rc = parse_body(x);
    if (rc != WD_CONTINUE) return rc;
    const wd_json_doc_t *d = &x->doc;
    if (d->toks[0].type != WD_JSON_OBJECT) return reject_param(x, "invalid_json", "The request body must be a JSON object");

    int m = wd_json_obj_get(d, 0, "model");
    if (m < 0 || d->toks[m].type != WD_JSON_STRING)
        return reject_param(x, "missing_model", "You must provide a model parameter (a string)");
    wd_buf_t name;
    wd_buf_init(&name, sizeof x->model_name - 1);
    if (wd_json_str_decode(d, m, &name) != WD_OK || memchr(name.data, 0, name.len)) {
        wd_buf_free(&name);
        return reject_param(x, "invalid_model", "The model name is too long or contains NUL");
    }
    memcpy(x->model_name, name.data, name.len);
    x->model_name[name.len] = 0;
    x->model_name_len = name.len;
    wd_buf_free(&name);
    wd_event_copy(x->ev.model, sizeof x->ev.model, x->model_name, x->model_name_len);

    int s = wd_json_obj_get(d, 0, "stream");
    if (s >= 0) {
        uint8_t t = d->toks[s].type;
        if (t != WD_JSON_TRUE && t != WD_JSON_FALSE && t != WD_JSON_NULL)
            return reject_param(x, "invalid_type", "stream must be a boolean");
        x->stream = t == WD_JSON_TRUE;
    }
    if (x->stream && !x->route->can_stream)
        return reject_param(x, "invalid_type", "stream is not supported on this endpoint");
    x->ev.stream = x->stream;
    int so = wd_json_obj_get(d, 0, "stream_options");
    if (so >= 0 && d->toks[so].type != WD_JSON_OBJECT && d->toks[so].type != WD_JSON_NULL)
        return reject_param(x, "invalid_type", "stream_options must be an object");

    x->model = wd_config_model(x->cfg, x->model_name, x->model_name_len);
    if (!x->model) {
        /* with authentication on, authorization decides first, so callers cannot probe which models exist */
        if (wd_config_auth_required(x->cfg)) return WD_CONTINUE;
        reject_unknown_model(x);
        return WD_REJECT;
    }
    wd_event_copy(x->ev.upstream, sizeof x->ev.upstream, x->model->upstream->name, strlen(x->model->upstream->name));
    wd_event_copy(x->ev.upstream_model, sizeof x->ev.upstream_model, x->model->upstream_model,
                  strlen(x->model->upstream_model));
    return WD_CONTINUE;
}

/* The upstream's view of the body: its model name, and usage reporting on streams so tokens are
 * always known. Everything else is preserved byte for byte (spans spliced, nothing re-serialised). */
static int rewrite_body(wd_exchange_t *x)
{
    const wd_json_doc_t *d = &x->doc;
    int m = wd_json_obj_get(d, 0, "model");
    wd_buf_t model_json, so_scratch;
    wd_buf_init(&model_json, 0);
    wd_buf_init(&so_scratch, 0);
    wd_buf_append(&model_json, "\"", 1);
    wd_buf_append_json_str(&model_json, x->model->upstream_model, strlen(x->model->upstream_model));
    wd_buf_append(&model_json, "\"", 1);
    wd_json_edit_t edits[2];
    size_t nedits = 0;
    edits[nedits++] = (wd_json_edit_t){d->toks[m].start - 1, d->toks[m].end + 1,
                                       wd_str(model_json.data, model_json.len)};
    int rc = WD_OK;
    if (x->stream) {
        int so = wd_json_obj_get(d, 0, "stream_options");
        if (so >= 0 && d->toks[so].type == WD_JSON_OBJECT) {
            int iu = wd_json_obj_get(d, so, "include_usage");
            x->client_wants_usage = iu >= 0 && d->toks[iu].type == WD_JSON_TRUE;
            if (!x->client_wants_usage) rc = wd_json_edit_set(d, so, "include_usage", WD_STR("true"), &edits[nedits++],
                                                               &so_scratch);
        } else if (so >= 0) { /* null */
            edits[nedits++] = (wd_json_edit_t){d->toks[so].start, d->toks[so].end, WD_STR("{\"include_usage\":true}")};
        } else {
            rc = wd_json_edit_set(d, 0, "stream_options", WD_STR("{\"include_usage\":true}"), &edits[nedits++],
                                  &so_scratch);
        }
    }
    if (nedits == 2 && edits[1].start < edits[0].start) {
        wd_json_edit_t t = edits[0];
        edits[0] = edits[1];
        edits[1] = t;
    }
    if (rc == WD_OK) rc = wd_json_apply_edits(x->body->data, x->body->len, edits, nedits, &x->upstream_body);
    wd_buf_free(&model_json);
    wd_buf_free(&so_scratch);
    return rc;
}

static const wd_stage_t stage_request = {"request", request_on_request, NULL, NULL, NULL};

/* ---- forward: the upstream call ------------------------------------------------------------------- */

typedef struct {
    char content_type[64];
    bool upstream_auth_failed;
} fwd_state_t;

static void models_list(wd_exchange_t *x)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    for (size_t i = 0; i < x->cfg->nmodels; i++) {
        const wd_model_cfg_t *m = &x->cfg->models[i];
        if (x->authenticated &&
            !wd_policy_model_visible(x->cfg->roles, x->cfg->nroles, &x->principal, m->name, x->ev.client_ip))
            continue; /* list only what the caller may use */
        if (!first) wd_buf_append(&b, ",", 1);
        first = false;
        wd_buf_append_str(&b, "{\"id\":\"");
        wd_buf_append_json_str(&b, m->name, strlen(m->name));
        wd_buf_append_str(&b, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"");
        wd_buf_append_json_str(&b, m->upstream->name, strlen(m->upstream->name));
        wd_buf_append_str(&b, "\"}");
    }
    wd_buf_append_str(&b, "]}");
    wd_gw_respond(x, 200, b.data, b.len);
    wd_buf_free(&b);
    wd_gw_complete(x);
}

/* Sends an OpenAI-style error event on a stream that is already under way, then ends the stream.
 * SDKs raise the `error` object as an exception. */
static void stream_fail(wd_exchange_t *x, const char *code, const char *message)
{
    if (x->stream_failed) return;
    x->stream_failed = true;
    wd_buf_t ev, body;
    wd_buf_init(&ev, 0);
    wd_buf_init(&body, 0);
    wd_gw_error_json(&body, "server_error", code, message, NULL);
    wd_buf_append_str(&ev, "data: ");
    wd_buf_append(&ev, body.data, body.len);
    wd_buf_append_str(&ev, "\n\n");
    /* after whatever is still pending (head, events): one write */
    wd_http_chunk_encode(&x->out, ev.data, ev.len);
    wd_http_chunk_encode(&x->out, NULL, 0);
    wd_gw_send(x, x->out.data, x->out.len);
    wd_buf_reset(&x->out);
    wd_buf_free(&ev);
    wd_buf_free(&body);
    if (!x->ev.code[0]) {
        wd_event_copy(x->ev.code, sizeof x->ev.code, code, strlen(code));
        wd_event_copy(x->ev.reason, sizeof x->ev.reason, message, strlen(message));
    }
    if (strcmp(x->ev.decision, "block") != 0) x->ev.decision = "error";
}

/* Token counts from a JSON `usage` object, when the upstream reports them. Returns true when the
 * object is the usage-only chunk ("choices": []) that include_usage adds at the end of a stream. */
static bool take_usage(wd_exchange_t *x, const char *p, size_t len)
{
    wd_json_tok_t toks[256];
    wd_json_doc_t d;
    if (wd_json_parse(&d, p, len, toks, WD_ARRAY_LEN(toks), 0, NULL, 0) != WD_OK) return false;
    if (toks[0].type != WD_JSON_OBJECT) return false;
    int u = wd_json_obj_get(&d, 0, "usage");
    if (u < 0 || toks[u].type != WD_JSON_OBJECT) return false;
    int64_t v;
    int pt = wd_json_obj_get(&d, u, "prompt_tokens"), ct = wd_json_obj_get(&d, u, "completion_tokens");
    if (pt >= 0 && wd_json_int(&d, pt, &v) == WD_OK) x->ev.prompt_tokens = v;
    if (ct >= 0 && wd_json_int(&d, ct, &v) == WD_OK) x->ev.completion_tokens = v;
    x->ev.usage_reported = true;
    int c = wd_json_obj_get(&d, 0, "choices");
    return c >= 0 && toks[c].type == WD_JSON_ARRAY && toks[c].size == 0;
}

/* Whether an event's JSON carries a usage object (not "usage":null, which every chunk of a stream
 * with include_usage has): a byte search, so ordinary events are never parsed. */
static bool has_usage_object(const char *p, size_t len)
{
    const char *end = p + len;
    while ((p = memmem(p, (size_t)(end - p), "\"usage\"", 7))) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')) p++;
        if (p < end && *p == '{') return true;
    }
    return false;
}

static size_t fwd_index(void);

static wd_stage_rc_t response_data(wd_exchange_t *x, wd_buf_t *chunk)
{
    size_t self = fwd_index();
    for (size_t i = 0; i < self; i++) {
        if (!wd_stages[i]->on_response_data) continue;
        wd_stage_rc_t rc = wd_stages[i]->on_response_data(x, chunk);
        if (rc != WD_CONTINUE) return rc;
    }
    return WD_CONTINUE;
}

static int on_sse_event(void *ud, const wd_sse_event_t *ev)
{
    wd_exchange_t *x = ud;
    if (ev->has_data && ev->data.len && ev->data.p[0] == '{' && has_usage_object(ev->data.p, ev->data.len)) {
        bool usage_only = take_usage(x, ev->data.p, ev->data.len);
        if (usage_only && !x->client_wants_usage) return 0; /* we asked for it, not them */
    }
    wd_buf_reset(&x->chunk);
    wd_buf_append(&x->chunk, ev->raw.p, ev->raw.len);
    wd_stage_rc_t rc = response_data(x, &x->chunk);
    if (rc == WD_REJECT) return 1;
    x->ev.stream_events++;
    if (x->chunk.len) wd_http_chunk_encode(&x->out, x->chunk.data, x->chunk.len);
    return 0;
}

static void up_on_head(wd_upreq_t *r, const wd_http_msg_t *head)
{
    wd_exchange_t *x = r->ud;
    fwd_state_t *fs = x->stage_data[fwd_index()];
    x->resp_status = head->status;
    const wd_http_header_t *ct = wd_http_header(head, "content-type");
    wd_event_copy(fs->content_type, sizeof fs->content_type, ct ? ct->value.p : "application/json",
                  ct ? ct->value.len : 16);
    if (head->status == 401 || head->status == 403) fs->upstream_auth_failed = true;
    bool sse = ct && ct->value.len >= 17 && wd_str_ieq(wd_str(ct->value.p, 17), WD_STR("text/event-stream"));
    for (size_t i = 0; i < fwd_index(); i++)
        if (wd_stages[i]->on_response_head) wd_stages[i]->on_response_head(x);
    if (x->stream && sse && head->status == 200) {
        x->streaming = true;
        x->resp_status = 0;
        wd_gw_begin_stream(x);
    }
}

/* Returns false once the exchange is over (completed and freed here). */
static bool up_on_data(wd_upreq_t *r, const char *p, size_t len)
{
    wd_exchange_t *x = r->ud;
    if (!x->conn) return true;
    x->resp_bytes += len;
    if (!x->streaming) {
        if (wd_buf_append(&x->resp_body, p, len) != WD_OK) {
            wd_upreq_cancel(r);
            x->t_up_end = wd_now_ns();
            wd_exchange_reject(x, 502, "upstream_response_too_large",
                               "The upstream's answer exceeds limits.max_response_bytes", NULL);
            wd_gw_send_rejection(x);
            wd_gw_complete(x);
            return false;
        }
        return true;
    }
    /* x->out may already hold the head or earlier events; when these bytes end the response, the
     * end of stream is added by on_done and everything leaves in one write */
    int rc = wd_sse_feed(&x->sse, p, len, on_sse_event, x);
    bool full = false;
    if (!r->final || rc != WD_OK) {
        full = wd_gw_send(x, x->out.data, x->out.len);
        wd_buf_reset(&x->out);
    }
    if (rc != WD_OK) {
        wd_upreq_cancel(r);
        x->t_up_end = wd_now_ns();
        if (rc == WD_E2BIG) stream_fail(x, "upstream_event_too_large", "An upstream event exceeds limits.max_sse_event_bytes");
        else if (x->reject_status) stream_fail(x, x->ev.code, x->ev.reason);
        else stream_fail(x, "stream_aborted", "The stream was ended by warden");
        wd_gw_complete(x);
        return false;
    }
    if (full) wd_upreq_pause(r);
    return true;
}

static void up_on_done(wd_upreq_t *r, wd_up_status_t st)
{
    wd_exchange_t *x = r->ud;
    fwd_state_t *fs = x->stage_data[fwd_index()];
    x->t_up_end = wd_now_ns();
    wd_gw_worker_t *g = x->w->app;
    if (st != WD_UP_OK) {
        WD_METRIC_ADD(g->metrics.upstream_errors[st], 1);
        x->ev.upstream_error = wd_up_status_text(st);
        if (x->streaming) {
            stream_fail(x, st == WD_UP_ETIMEOUT ? "upstream_timeout" : "upstream_disconnected",
                        st == WD_UP_ETIMEOUT ? "The upstream stopped sending in the middle of the stream"
                                             : "The upstream connection ended in the middle of the stream");
        } else {
            int status = st == WD_UP_ETIMEOUT ? 504 : 502;
            char msg[512];
            snprintf(msg, sizeof msg, "Upstream '%s': %s%s%s", x->model->upstream->name, wd_up_status_text(st),
                     r->error[0] ? ": " : "", r->error);
            wd_exchange_reject(x, status, st == WD_UP_ETIMEOUT ? "upstream_timeout" : "upstream_unavailable", msg,
                               NULL);
            x->resp_status = 0;
            wd_gw_send_rejection(x);
        }
        wd_gw_complete(x);
        return;
    }
    if (x->streaming) {
        int rc = wd_sse_finish(&x->sse, on_sse_event, x);
        if (rc != WD_OK) stream_fail(x, x->reject_status ? x->ev.code : "stream_aborted",
                                     x->reject_status ? x->ev.reason : "The stream was ended by warden");
        else if (wd_sse_pending(&x->sse))
            stream_fail(x, "upstream_truncated", "The upstream ended in the middle of an event");
        else {
            wd_http_chunk_encode(&x->out, NULL, 0);
            wd_gw_send(x, x->out.data, x->out.len);
            wd_buf_reset(&x->out);
        }
        x->ev.status = 200;
        wd_gw_complete(x);
        return;
    }
    if (fs->upstream_auth_failed) {
        /* the upstream refused warden's credential: not the client's fault, and not theirs to see */
        wd_exchange_reject(x, 502, "upstream_auth_failed", "The upstream rejected the gateway's credentials", NULL);
        x->resp_status = 0;
        wd_gw_send_rejection(x);
        wd_gw_complete(x);
        return;
    }
    int status = x->resp_status;
    if (status == 200) (void)take_usage(x, x->resp_body.data, x->resp_body.len);
    wd_stage_rc_t rc = response_data(x, &x->resp_body);
    x->resp_status = 0;
    if (rc == WD_REJECT) {
        wd_gw_send_rejection(x);
    } else {
        if (status >= 400 && !x->ev.code[0]) {
            x->ev.decision = "error";
            wd_event_copy(x->ev.code, sizeof x->ev.code, "upstream_error", 14);
            snprintf(x->ev.reason, sizeof x->ev.reason, "upstream answered %d", status);
        }
        wd_gw_respond_type(x, status, fs->content_type, x->resp_body.data, x->resp_body.len);
    }
    wd_gw_complete(x);
}

static wd_stage_rc_t forward_on_request(wd_exchange_t *x)
{
    if (x->route->id == WD_ROUTE_TOKEN) return wd_gw_login(x);
    if (!x->route->upstream_suffix) {
        models_list(x);
        return WD_PAUSE; /* complete already */
    }
    if (!x->model) { /* authorization let an unknown name through: the caller may use that namespace */
        reject_unknown_model(x);
        return WD_REJECT;
    }
    if (rewrite_body(x) != WD_OK) {
        wd_exchange_reject(x, 500, "internal_error", "could not rewrite the request body", NULL);
        return WD_REJECT;
    }
    fwd_state_t *fs = calloc(1, sizeof *fs);
    if (!fs) {
        wd_exchange_reject(x, 500, "internal_error", "out of memory", NULL);
        return WD_REJECT;
    }
    x->stage_data[fwd_index()] = fs;
    const wd_upstream_cfg_t *u = x->model->upstream;
    wd_buf_t *q = &x->up.request;
    wd_buf_printf(q,
                  "POST %s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Accept: %s\r\nx-warden-request-id: %s\r\n",
                  u->base_path, x->route->upstream_suffix, u->host_header, x->upstream_body.len,
                  x->stream ? "text/event-stream" : "application/json", x->id);
    if (u->api_key) wd_buf_printf(q, "Authorization: Bearer %s\r\n", u->api_key);
    wd_buf_append_str(q, "\r\n");
    if (wd_buf_append(q, x->upstream_body.data, x->upstream_body.len) != WD_OK) {
        wd_exchange_reject(x, 500, "internal_error", "out of memory", NULL);
        return WD_REJECT;
    }
    x->up.up = u;
    x->up.on_head = up_on_head;
    x->up.on_data = up_on_data;
    x->up.on_done = up_on_done;
    x->up.ud = x;
    x->t_up_start = wd_now_ns();
    if (wd_upreq_start(x->w, &x->up) != WD_OK) {
        wd_exchange_reject(x, 502, "upstream_unavailable", "could not start the upstream request", NULL);
        return WD_REJECT;
    }
    x->up_started = true;
    return WD_PAUSE;
}

static void forward_on_done(wd_exchange_t *x)
{
    size_t i = fwd_index();
    free(x->stage_data[i]);
    x->stage_data[i] = NULL;
    /* scrub the upstream credential from the request copy before it is freed */
    if (x->up.request.data) explicit_bzero(x->up.request.data, x->up.request.len);
}

static const wd_stage_t stage_forward = {"forward", forward_on_request, NULL, NULL, forward_on_done};

/* ---- the chain ------------------------------------------------------------------------------------- */

const wd_stage_t *const wd_stages[] = {&wd_stage_authenticate, &stage_request, &wd_stage_authorize, &wd_stage_limit,
                                       &wd_stage_guard, &stage_forward};
const size_t wd_nstages = WD_ARRAY_LEN(wd_stages);

/* The forward stage is always last; response hooks run for the stages before it. */
static size_t fwd_index(void) { return wd_nstages - 1; }

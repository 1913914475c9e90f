/* The admin listener: health, readiness and Prometheus metrics. It runs on the main thread's loop,
 * never on a worker, so a slow scrape cannot delay client traffic. */
#include <stdio.h>

#include "gateway/gateway.h"


static void reply(wd_conn_t *c, int status, const char *ctype, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                     status, wd_http_status_text(status), ctype, len, c->keep_alive ? "" : "Connection: close\r\n");
    wd_conn_write(c, head, (size_t)n);
    if (len) wd_conn_write(c, body, len);
    wd_conn_finish(c, true);
}

static void admin_request(wd_conn_t *c, wd_http_msg_t *req, wd_buf_t *body)
{
    WD_UNUSED(body);
    wd_admin_ctx_t *ctx = c->hud;
    static const char json[] = "application/json";
    if (req->method != WD_HTTP_GET) {
        static const char m[] = "{\"error\":{\"message\":\"only GET is allowed here\",\"type\":\"invalid_request_error\","
                                "\"param\":null,\"code\":\"method_not_allowed\"}}";
        reply(c, 405, json, m, sizeof m - 1);
        return;
    }
    if (wd_str_eq(req->path, WD_STR("/healthz"))) {
        static const char ok[] = "{\"status\":\"ok\"}";
        reply(c, 200, json, ok, sizeof ok - 1);
    } else if (wd_str_eq(req->path, WD_STR("/readyz"))) {
        static const char ok[] = "{\"status\":\"ready\"}", no[] = "{\"status\":\"draining\"}";
        if (ctx->draining) reply(c, 503, json, no, sizeof no - 1);
        else reply(c, 200, json, ok, sizeof ok - 1);
    } else if (wd_str_eq(req->path, WD_STR("/metrics"))) {
        wd_metrics_t *ms[256];
        size_t n = WD_MIN(ctx->nworkers, WD_ARRAY_LEN(ms));
        for (size_t i = 0; i < n; i++) ms[i] = &((wd_gw_worker_t *)ctx->workers[i]->app)->metrics;
        wd_metrics_info_t info = {.active_connections = wd_server_connections(),
                                  .inflight = wd_gateway_inflight(),
                                  .config_reloads = ctx->reloads,
                                  .config_reload_failures = ctx->reload_failures};
        for (size_t r = 0; r < WD_ROUTE__COUNT && r < WD_METRICS_ROUTES; r++) info.route_names[r] = wd_routes[r].name;
        for (int s = WD_UP_ECONNECT; s <= WD_UP_EPROTO; s++) info.upstream_error_names[s] = wd_up_status_text(s);
        wd_buf_t out;
        wd_buf_init(&out, 0);
        if (wd_metrics_render(ms, n, &info, &out) == WD_OK)
            reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
        else
            reply(c, 500, "text/plain", "out of memory\n", 14);
        wd_buf_free(&out);
    } else {
        static const char nf[] = "{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\","
                                 "\"param\":null,\"code\":\"unknown_url\"}}";
        reply(c, 404, json, nf, sizeof nf - 1);
    }
}

static void admin_bad(wd_conn_t *c, int status, const char *reason)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_gw_error_json(&b, "invalid_request_error", "invalid_request", reason, NULL);
    reply(c, status, "application/json", b.data, b.len);
    wd_buf_free(&b);
}

const wd_handler_t wd_admin_handler = {admin_request, NULL, NULL, admin_bad};

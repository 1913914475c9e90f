#include "monitor/metrics.h"

#include <stdlib.h>

/* seconds: 100 µs .. 60 s, dense where gateway overhead lives */
static const double bucket_s[WD_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                 0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                 1,      2.5,     5,      10,    30,     60};

void wd_hist_observe(wd_hist_t *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    size_t i = 0;
    while (i < WD_HIST_BUCKETS && s > bucket_s[i]) i++;
    WD_METRIC_ADD(h->buckets[i], 1);
    WD_METRIC_ADD(h->sum_ns, ns);
    WD_METRIC_ADD(h->count, 1);
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static void sum_hist(wd_hist_t *dst, const wd_hist_t *src)
{
    for (size_t i = 0; i <= WD_HIST_BUCKETS; i++) dst->buckets[i] += LOAD(src->buckets[i]);
    dst->sum_ns += LOAD(src->sum_ns);
    dst->count += LOAD(src->count);
}

static void render_hist(wd_buf_t *out, const char *name, const char *route, const wd_hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < WD_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        wd_buf_printf(out, "%s_bucket{route=\"%s\",le=\"%g\"} %llu\n", name, route, bucket_s[i],
                      (unsigned long long)cum);
    }
    cum += h->buckets[WD_HIST_BUCKETS];
    wd_buf_printf(out, "%s_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", name, route, (unsigned long long)cum);
    wd_buf_printf(out, "%s_sum{route=\"%s\"} %.9f\n", name, route, (double)h->sum_ns / 1e9);
    wd_buf_printf(out, "%s_count{route=\"%s\"} %llu\n", name, route, (unsigned long long)h->count);
}

int wd_metrics_render(wd_metrics_t *const *workers, size_t n, const wd_metrics_info_t *info, wd_buf_t *out)
{
    wd_metrics_t *t = calloc(1, sizeof *t);
    if (!t) return WD_ENOMEM;
    for (size_t w = 0; w < n; w++) {
        const wd_metrics_t *m = workers[w];
        for (size_t r = 0; r < WD_METRICS_ROUTES; r++) {
            for (size_t s = 0; s < 600; s++) t->requests[r][s] += LOAD(m->requests[r][s]);
            sum_hist(&t->duration[r], &m->duration[r]);
            sum_hist(&t->overhead[r], &m->overhead[r]);
            sum_hist(&t->upstream[r], &m->upstream[r]);
        }
        for (size_t i = 0; i < 8; i++) t->upstream_errors[i] += LOAD(m->upstream_errors[i]);
        t->bytes_in += LOAD(m->bytes_in);
        t->bytes_out += LOAD(m->bytes_out);
        t->stream_events += LOAD(m->stream_events);
        for (size_t k = 0; k < 4; k++)
            for (size_t i = 0; i < 6; i++) t->limit_decisions[k][i] += LOAD(m->limit_decisions[k][i]);
    }

    wd_buf_append_str(out, "# HELP warden_requests_total Client requests by route and HTTP status.\n"
                           "# TYPE warden_requests_total counter\n");
    for (size_t r = 0; r < WD_METRICS_ROUTES; r++) {
        if (!info->route_names[r]) continue;
        for (size_t s = 0; s < 600; s++)
            if (t->requests[r][s])
                wd_buf_printf(out, "warden_requests_total{route=\"%s\",status=\"%zu\"} %llu\n",
                              info->route_names[r], s, (unsigned long long)t->requests[r][s]);
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"warden_request_duration_seconds", "Time from the first request byte to the last response byte.",
         offsetof(wd_metrics_t, duration)},
        {"warden_gateway_overhead_seconds", "Request duration minus time spent waiting on the upstream.",
         offsetof(wd_metrics_t, overhead)},
        {"warden_upstream_duration_seconds", "Time from sending the upstream request to its last byte.",
         offsetof(wd_metrics_t, upstream)},
    };
    for (size_t k = 0; k < WD_ARRAY_LEN(hists); k++) {
        wd_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hists[k].name, hists[k].help, hists[k].name);
        const wd_hist_t *arr = (const wd_hist_t *)((const char *)t + hists[k].off);
        for (size_t r = 0; r < WD_METRICS_ROUTES; r++)
            if (info->route_names[r] && arr[r].count) render_hist(out, hists[k].name, info->route_names[r], &arr[r]);
    }
    wd_buf_append_str(out, "# HELP warden_upstream_errors_total Upstream failures by kind.\n"
                           "# TYPE warden_upstream_errors_total counter\n");
    for (size_t i = 0; i < 8; i++)
        if (info->upstream_error_names[i])
            wd_buf_printf(out, "warden_upstream_errors_total{kind=\"%s\"} %llu\n", info->upstream_error_names[i],
                          (unsigned long long)t->upstream_errors[i]);
    wd_buf_append_str(out, "# HELP warden_limit_decisions_total Rate-limit decisions by scope kind and outcome (an "
                           "admitted request counts once for each scope kind it was checked against).\n"
                           "# TYPE warden_limit_decisions_total counter\n");
    for (size_t k = 0; k < 4; k++)
        for (size_t i = 0; i < 6; i++)
            if (info->limit_outcome_names[i] && info->limit_scope_names[k] && t->limit_decisions[k][i])
                wd_buf_printf(out, "warden_limit_decisions_total{scope=\"%s\",outcome=\"%s\"} %llu\n",
                              info->limit_scope_names[k], info->limit_outcome_names[i],
                              (unsigned long long)t->limit_decisions[k][i]);
    wd_buf_printf(out,
                  "# HELP warden_redis_requests_total Rate-limit scripts sent to Redis.\n"
                  "# TYPE warden_redis_requests_total counter\nwarden_redis_requests_total %llu\n"
                  "# HELP warden_redis_errors_total Redis errors (including unreachable).\n"
                  "# TYPE warden_redis_errors_total counter\nwarden_redis_errors_total %llu\n"
                  "# HELP warden_redis_timeouts_total Redis decisions that timed out.\n"
                  "# TYPE warden_redis_timeouts_total counter\nwarden_redis_timeouts_total %llu\n"
                  "# HELP warden_redis_reconnects_total Reconnections to Redis.\n"
                  "# TYPE warden_redis_reconnects_total counter\nwarden_redis_reconnects_total %llu\n"
                  "# HELP warden_redis_latency_seconds Time from sending a limit script to its answer.\n"
                  "# TYPE warden_redis_latency_seconds summary\nwarden_redis_latency_seconds_sum %.9f\n"
                  "warden_redis_latency_seconds_count %llu\n",
                  (unsigned long long)info->redis_decisions, (unsigned long long)info->redis_errors,
                  (unsigned long long)info->redis_timeouts, (unsigned long long)info->redis_reconnects,
                  (double)info->redis_latency_ns_sum / 1e9, (unsigned long long)info->redis_latency_count);
    wd_buf_printf(out,
                  "# HELP warden_received_bytes_total Bytes received from clients.\n"
                  "# TYPE warden_received_bytes_total counter\nwarden_received_bytes_total %llu\n"
                  "# HELP warden_sent_bytes_total Bytes sent to clients.\n"
                  "# TYPE warden_sent_bytes_total counter\nwarden_sent_bytes_total %llu\n"
                  "# HELP warden_stream_events_total SSE events relayed to clients.\n"
                  "# TYPE warden_stream_events_total counter\nwarden_stream_events_total %llu\n"
                  "# HELP warden_active_connections Open client connections.\n"
                  "# TYPE warden_active_connections gauge\nwarden_active_connections %llu\n"
                  "# HELP warden_inflight_requests Requests being answered.\n"
                  "# TYPE warden_inflight_requests gauge\nwarden_inflight_requests %llu\n"
                  "# HELP warden_config_reloads_total Successful configuration reloads.\n"
                  "# TYPE warden_config_reloads_total counter\nwarden_config_reloads_total %llu\n"
                  "# HELP warden_config_reload_failures_total Refused configuration reloads.\n"
                  "# TYPE warden_config_reload_failures_total counter\nwarden_config_reload_failures_total %llu\n",
                  (unsigned long long)t->bytes_in, (unsigned long long)t->bytes_out,
                  (unsigned long long)t->stream_events, (unsigned long long)info->active_connections,
                  (unsigned long long)info->inflight, (unsigned long long)info->config_reloads,
                  (unsigned long long)info->config_reload_failures);
    free(t);
    return out->len ? WD_OK : WD_ENOMEM;
}

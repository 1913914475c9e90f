/* monitor/metrics: per-worker counters and histograms (one writer each, so no contended cache
 * lines on the hot path) summed at scrape time into Prometheus text exposition format 0.0.4. */
#ifndef WD_METRICS_H
#define WD_METRICS_H

#include "core/core.h"

#define WD_METRICS_ROUTES 8   /* route ids 0..7, named by the caller at render time */
#define WD_HIST_BUCKETS 18

typedef struct {
    uint64_t buckets[WD_HIST_BUCKETS + 1]; /* last one is +Inf */
    uint64_t sum_ns;
    uint64_t count;
} wd_hist_t;

typedef struct {
    uint64_t requests[WD_METRICS_ROUTES][600]; /* by route and HTTP status (0..599) */
    wd_hist_t duration[WD_METRICS_ROUTES];     /* whole request, first byte in to last byte out */
    wd_hist_t overhead[WD_METRICS_ROUTES];     /* duration minus the time waiting on the upstream */
    wd_hist_t upstream[WD_METRICS_ROUTES];     /* upstream request start to its last byte */
    uint64_t upstream_errors[8];               /* by wd_up_status_t */
    uint64_t bytes_in, bytes_out;
    uint64_t stream_events;
    uint64_t limit_decisions[4][6];            /* by scope kind (key, user, role, ip) and wd_limit_outcome_t */
} wd_metrics_t;

/* Single-writer increments: a relaxed atomic store keeps concurrent scrapes free of torn reads. */
#define WD_METRIC_ADD(field, v) __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)

void wd_hist_observe(wd_hist_t *h, uint64_t ns);

typedef struct {
    const char *route_names[WD_METRICS_ROUTES];
    const char *upstream_error_names[8];
    uint64_t active_connections;
    uint64_t inflight;
    uint64_t config_reloads, config_reload_failures;
    const char *limit_outcome_names[6];
    const char *limit_scope_names[4];
    /* Redis limiter, summed over workers */
    uint64_t redis_decisions, redis_errors, redis_timeouts, redis_reconnects, redis_latency_ns_sum,
        redis_latency_count;
} wd_metrics_info_t;

/* Sums the workers' metrics and renders them. */
int wd_metrics_render(wd_metrics_t *const *workers, size_t n, const wd_metrics_info_t *info, wd_buf_t *out);

#endif

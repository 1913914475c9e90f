#include "audit/event.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#define FLUSH_AT 32768

static pthread_mutex_t g_sink_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_sink_fd = -1;
static bool g_sink_owned;

void wd_event_init(wd_event_t *e)
{
    memset(e, 0, sizeof *e);
    e->prompt_tokens = e->completion_tokens = -1;
    e->decision = "allow";
    e->route = "none";
}

void wd_event_copy(char *dst, size_t dstlen, const char *p, size_t len)
{
    if (!dstlen) return;
    if (len >= dstlen) len = dstlen - 1;
    if (len) memcpy(dst, p, len);
    dst[len] = 0;
}

/* The line is built with appends that stop at the first failure (*rc), so the caller can take back
 * the whole line: the log never gets half an event. */
static void put(wd_buf_t *o, int *rc, const char *p, size_t n)
{
    if (!*rc) *rc = wd_buf_append(o, p, n);
}

#define PUT(o, rc, lit) put((o), (rc), (lit), sizeof(lit) - 1)

/* ,"k":"v" with v escaped, or ,"k":null */
static void kv_str(wd_buf_t *o, int *rc, const char *k, const char *v)
{
    PUT(o, rc, ",\"");
    put(o, rc, k, strlen(k));
    if (!v) {
        PUT(o, rc, "\":null");
        return;
    }
    PUT(o, rc, "\":\"");
    if (!*rc) *rc = wd_buf_append_json_str(o, v, strlen(v));
    PUT(o, rc, "\"");
}

/* ,"k":n; k is a literal */
#define KV_NUM(o, rc, k, fn, v)                                                                              \
    do {                                                                                                     \
        PUT(o, rc, ",\"" k "\":");                                                                           \
        if (!*(rc)) *(rc) = fn((o), (v));                                                                    \
    } while (0)
#define KV_BOOL(o, rc, k, v)                                                                                 \
    do {                                                                                                     \
        if (v)                                                                                               \
            PUT(o, rc, ",\"" k "\":true");                                                                   \
        else                                                                                                 \
            PUT(o, rc, ",\"" k "\":false");                                                                  \
    } while (0)

int wd_event_to_json(const wd_event_t *e, wd_buf_t *o)
{
    char ts[32];
    wd_format_rfc3339(e->wall_ms, ts);
    size_t before = o->len;
    int rc = WD_OK;
    PUT(o, &rc, "{\"ts\":\"");
    put(o, &rc, ts, strlen(ts));
    PUT(o, &rc, "\",\"type\":\"request\"");
    kv_str(o, &rc, "request_id", e->request_id);
    kv_str(o, &rc, "client_ip", e->client_ip);
    kv_str(o, &rc, "method", e->method);
    kv_str(o, &rc, "path", e->path);
    kv_str(o, &rc, "route", e->route);
    if (e->principal[0]) {
        kv_str(o, &rc, "principal", e->principal);
        kv_str(o, &rc, "roles", e->roles);
        KV_BOOL(o, &rc, "mfa", e->mfa);
    }
    kv_str(o, &rc, "model", e->model[0] ? e->model : NULL);
    kv_str(o, &rc, "upstream", e->upstream[0] ? e->upstream : NULL);
    kv_str(o, &rc, "upstream_model", e->upstream_model[0] ? e->upstream_model : NULL);
    KV_NUM(o, &rc, "status", wd_buf_append_i64, e->status);
    kv_str(o, &rc, "decision", e->decision);
    if (e->code[0]) {
        kv_str(o, &rc, "code", e->code);
        kv_str(o, &rc, "reason", e->reason);
    }
    if (e->rule[0]) kv_str(o, &rc, "rule", e->rule); /* also on allowed requests, e.g. limit:fail-open */
    if (e->upstream_error) kv_str(o, &rc, "upstream_error", e->upstream_error);
    if (e->guard_profile[0]) {
        kv_str(o, &rc, "guard_profile", e->guard_profile);
        kv_str(o, &rc, "guard", e->guard);
    }
    KV_BOOL(o, &rc, "stream", e->stream);
    if (e->stream) KV_NUM(o, &rc, "stream_events", wd_buf_append_u64, e->stream_events);
    if (e->prompt_tokens >= 0 || e->completion_tokens >= 0) {
        PUT(o, &rc, ",\"usage\":{\"prompt_tokens\":");
        if (!rc) rc = wd_buf_append_i64(o, e->prompt_tokens);
        KV_NUM(o, &rc, "completion_tokens", wd_buf_append_i64, e->completion_tokens);
        KV_BOOL(o, &rc, "reported", e->usage_reported);
        PUT(o, &rc, "}");
    }
    KV_NUM(o, &rc, "bytes_in", wd_buf_append_u64, e->bytes_in);
    KV_NUM(o, &rc, "bytes_out", wd_buf_append_u64, e->bytes_out);
    KV_NUM(o, &rc, "duration_us", wd_buf_append_u64, e->total_us);
    KV_NUM(o, &rc, "upstream_us", wd_buf_append_u64, e->upstream_us);
    KV_NUM(o, &rc, "overhead_us", wd_buf_append_u64, e->overhead_us);
    KV_NUM(o, &rc, "ttfb_us", wd_buf_append_u64, e->ttfb_us);
    PUT(o, &rc, "}\n");
    if (rc) o->len = before;
    return rc;
}

int wd_event_sink_open(const char *path, char *err, size_t errlen)
{
    int fd = -1;
    bool owned = false;
    if (path && strcmp(path, "-") == 0) fd = STDOUT_FILENO;
    else if (path) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0) return wd_errf(err, errlen, WD_EIO, "cannot open audit file %s: %s", path, strerror(errno));
        owned = true;
    }
    pthread_mutex_lock(&g_sink_lock);
    if (g_sink_owned && g_sink_fd >= 0) close(g_sink_fd);
    __atomic_store_n(&g_sink_fd, fd, __ATOMIC_RELAXED);
    g_sink_owned = owned;
    pthread_mutex_unlock(&g_sink_lock);
    return WD_OK;
}

void wd_event_sink_close(void) { wd_event_sink_open(NULL, NULL, 0); }

void wd_event_writer_init(wd_event_writer_t *w) { wd_buf_init(&w->buf, 0); }

void wd_event_flush(wd_event_writer_t *w)
{
    if (!w->buf.len) return;
    pthread_mutex_lock(&g_sink_lock);
    size_t off = 0;
    while (g_sink_fd >= 0 && off < w->buf.len) {
        ssize_t n = write(g_sink_fd, w->buf.data + off, w->buf.len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* a full disk must not stop the gateway; metrics and stderr still work */
        }
        off += (size_t)n;
    }
    pthread_mutex_unlock(&g_sink_lock);
    wd_buf_reset(&w->buf);
}

int wd_event_emit(wd_event_writer_t *w, const wd_event_t *e)
{
    if (__atomic_load_n(&g_sink_fd, __ATOMIC_RELAXED) < 0) return WD_OK;
    int rc = wd_event_to_json(e, &w->buf);
    if (w->buf.len >= FLUSH_AT) wd_event_flush(w);
    return rc;
}

void wd_event_writer_free(wd_event_writer_t *w)
{
    wd_event_flush(w);
    wd_buf_free(&w->buf);
}

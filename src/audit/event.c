#include "audit/event.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
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

static void kv_str(wd_buf_t *o, const char *k, const char *v)
{
    wd_buf_printf(o, ",\"%s\":", k);
    if (!v) {
        wd_buf_append_str(o, "null");
        return;
    }
    wd_buf_append(o, "\"", 1);
    wd_buf_append_json_str(o, v, strlen(v));
    wd_buf_append(o, "\"", 1);
}

int wd_event_to_json(const wd_event_t *e, wd_buf_t *o)
{
    char ts[32];
    wd_format_rfc3339(e->wall_ms, ts);
    size_t before = o->len;
    wd_buf_printf(o, "{\"ts\":\"%s\",\"type\":\"request\"", ts);
    kv_str(o, "request_id", e->request_id);
    kv_str(o, "client_ip", e->client_ip);
    kv_str(o, "method", e->method);
    kv_str(o, "path", e->path);
    kv_str(o, "route", e->route);
    if (e->principal[0]) {
        kv_str(o, "principal", e->principal);
        kv_str(o, "roles", e->roles);
        wd_buf_printf(o, ",\"mfa\":%s", e->mfa ? "true" : "false");
    }
    kv_str(o, "model", e->model[0] ? e->model : NULL);
    kv_str(o, "upstream", e->upstream[0] ? e->upstream : NULL);
    kv_str(o, "upstream_model", e->upstream_model[0] ? e->upstream_model : NULL);
    wd_buf_printf(o, ",\"status\":%d", e->status);
    kv_str(o, "decision", e->decision);
    if (e->code[0]) {
        kv_str(o, "code", e->code);
        kv_str(o, "reason", e->reason);
    }
    if (e->rule[0]) kv_str(o, "rule", e->rule); /* also on allowed requests, e.g. limit:fail-open */
    if (e->upstream_error) kv_str(o, "upstream_error", e->upstream_error);
    if (e->guard_profile[0]) {
        kv_str(o, "guard_profile", e->guard_profile);
        kv_str(o, "guard", e->guard);
    }
    wd_buf_printf(o, ",\"stream\":%s", e->stream ? "true" : "false");
    if (e->stream) wd_buf_printf(o, ",\"stream_events\":%u", e->stream_events);
    if (e->prompt_tokens >= 0 || e->completion_tokens >= 0)
        wd_buf_printf(o, ",\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"reported\":%s}",
                      (long long)e->prompt_tokens, (long long)e->completion_tokens,
                      e->usage_reported ? "true" : "false");
    wd_buf_printf(o,
                  ",\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_us\":%llu,\"upstream_us\":%llu,"
                  "\"overhead_us\":%llu,\"ttfb_us\":%llu}\n",
                  (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
                  (unsigned long long)e->total_us, (unsigned long long)e->upstream_us,
                  (unsigned long long)e->overhead_us, (unsigned long long)e->ttfb_us);
    if (o->len == before) return WD_ENOMEM;
    return WD_OK;
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

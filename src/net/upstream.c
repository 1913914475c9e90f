/* Upstream HTTP/1.1 client with per-worker keep-alive pools. A request is sent whole (the gateway
 * has already read and rewritten the body); the response is parsed with the same strict parser as
 * client requests and handed over as decoded body bytes. A pooled connection that turns out to be
 * stale (closed before any response byte) is retried once on a fresh connection, as nginx does.
 *
 * https:// upstreams run TLS over the same connections (net/tls.h): the handshake follows the TCP
 * connect within the same connect_timeout_ms, the request goes out once it completes, and pooled
 * connections stay TLS sessions (an idle one may receive session tickets; anything else retires it).
 * A pool is keyed by address and TLS context, so connections made under one trust setting (CA, name,
 * verify) are never handed to an upstream configured with another; after a reload, pools no upstream
 * of the new snapshot uses are retired: idle connections close, busy ones close when done. Each pool
 * keeps the newest session ticket, so a new connection to the same upstream resumes instead of
 * running a full handshake. */
#include <stdlib.h>

#include "net/net.h"
#include "net/tls.h"

#define MAX_RESPONSE_HEAD 65536

typedef struct pool {
    struct sockaddr_storage sa;
    socklen_t salen;
    SSL_CTX *tls_ctx;      /* part of the key; NULL for http:// (never dereferenced) */
    SSL_SESSION *session;  /* newest ticket for resumption (TLS) */
    struct wd_upconn *idle;
    size_t nidle;
    size_t nconns;         /* connections that point here, idle or not */
    bool retired;          /* not matched any more; freed when nconns drops to 0 */
    struct pool *next;
} pool_t;

typedef struct {
    uv_write_t req;
    struct wd_upconn *uc;
    char data[];
} tls_write_t;

typedef struct wd_upconn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    wd_tls_t *tls;         /* https:// upstreams */
    wd_worker_t *w;
    pool_t *pool;
    wd_upreq_t *r;
    wd_buf_t in;
    wd_buf_t decoded;
    wd_http_msg_t head;
    wd_http_chunked_t chunked;
    int64_t body_left; /* -1: until close */
    bool head_done;
    bool no_body;
    bool reused;
    bool got_bytes;
    bool closing;
    bool reading;
    struct wd_upconn *next; /* idle list */
} upconn_t;

const char *wd_up_status_text(wd_up_status_t s)
{
    switch (s) {
    case WD_UP_OK: return "ok";
    case WD_UP_ECONNECT: return "upstream connection failed";
    case WD_UP_ETIMEOUT: return "upstream timed out";
    case WD_UP_ERESET: return "upstream closed the connection";
    case WD_UP_EPROTO: return "upstream sent an invalid response";
    case WD_UP_ETLS: return "upstream TLS error";
    case WD_UP_ECANCEL: return "cancelled";
    }
    return "unknown";
}

static bool pool_is(const pool_t *p, const wd_addr_t *a, const SSL_CTX *ctx)
{
    return p->salen == a->salen && p->tls_ctx == ctx && memcmp(&p->sa, &a->sa, a->salen) == 0;
}

static bool pool_in_config(const pool_t *p, const wd_config_t *cfg)
{
    for (size_t i = 0; cfg && i < cfg->nupstreams; i++)
        if (pool_is(p, &cfg->upstreams[i].addr, cfg->upstreams[i].tls.ctx)) return true;
    return false;
}

static pool_t *find_pool(wd_worker_t *w, const wd_upstream_cfg_t *up)
{
    for (pool_t *p = w->pools; p; p = p->next)
        if (!p->retired && pool_is(p, &up->addr, up->tls.ctx)) return p;
    pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    memcpy(&p->sa, &up->addr.sa, up->addr.salen);
    p->salen = up->addr.salen;
    p->tls_ctx = up->tls.ctx;
    /* a request that started under an older snapshot: its connections are not kept */
    p->retired = !pool_in_config(p, w->cfg);
    p->next = w->pools;
    w->pools = p;
    return p;
}

static void pool_free(wd_worker_t *w, pool_t *p)
{
    for (pool_t **pp = (pool_t **)&w->pools; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (p->session) SSL_SESSION_free(p->session);
    free(p);
}

static bool keep_session(void *ud, SSL_SESSION *sess)
{
    pool_t *p = ud;
    if (p->retired) return false;
    if (p->session) SSL_SESSION_free(p->session);
    p->session = sess;
    return true;
}

static void pool_remove(upconn_t *uc)
{
    pool_t *p = uc->pool;
    for (upconn_t **pp = &p->idle; *pp; pp = &(*pp)->next) {
        if (*pp == uc) {
            *pp = uc->next;
            p->nidle--;
            break;
        }
    }
    uc->next = NULL;
}

static void on_uc_closed(uv_handle_t *h)
{
    upconn_t *uc = h->data;
    wd_buf_free(&uc->in);
    wd_buf_free(&uc->decoded);
    if (uc->tls) {
        wd_tls_free(uc->tls);
        free(uc->tls);
    }
    pool_t *p = uc->pool;
    if (--p->nconns == 0 && p->retired) pool_free(uc->w, p);
    free(uc);
}

static void uc_close(upconn_t *uc)
{
    if (uc->closing) return;
    uc->closing = true;
    if (uc->r) {
        uc->r->uc = NULL;
        uc->r = NULL;
    }
    uv_close((uv_handle_t *)&uc->tcp, on_uc_closed);
}

static void list_remove(wd_upreq_t *r)
{
    if (!r->active) return;
    r->active = false;
    if (r->prev) r->prev->next = r->next;
    else r->w->upreqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

static void finish(wd_upreq_t *r, wd_up_status_t st)
{
    if (st == WD_UP_ETLS && r->uc && r->uc->tls && !r->error[0])
        snprintf(r->error, sizeof r->error, "%s", r->uc->tls->err[0] ? r->uc->tls->err : "TLS error");
    list_remove(r);
    r->end_ns = wd_now_ns();
    if (r->uc) uc_close(r->uc);
    r->on_done(r, st);
}

static uint64_t ms(uint32_t v) { return (uint64_t)v * 1000000ull; }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static int uc_start_new(wd_upreq_t *r);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Reading is switched only when it must change: a pooled connection keeps reading while idle (so an
 * upstream close is noticed at once) and while in use, which saves two epoll_ctl calls a request. */
static void uc_read(upconn_t *uc, bool on)
{
    if (uc->closing || uc->reading == on) return;
    uc->reading = on;
    if (on) uv_read_start((uv_stream_t *)&uc->tcp, on_alloc, on_read);
    else uv_read_stop((uv_stream_t *)&uc->tcp);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    WD_UNUSED(suggested);
    upconn_t *uc = h->data;
    if (uc->tls) { /* ciphertext goes to the thread's scratch buffer, plaintext to `in` */
        buf->base = wd_tls_scratch_in();
        buf->len = WD_TLS_SCRATCH;
        return;
    }
    if (wd_buf_reserve(&uc->in, 65536)) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = uc->in.data + uc->in.len;
    buf->len = uc->in.cap - uc->in.len;
}

/* The response is complete: the connection goes back to the pool if it can be reused. */
static void complete(upconn_t *uc)
{
    wd_upreq_t *r = uc->r;
    bool reuse = uc->head.keep_alive && uc->body_left >= 0 && uc->in.len == 0 &&
                 uc->pool->nidle < r->up->max_idle && !r->w->draining && !uc->pool->retired &&
                 (!uc->tls || wd_tls_established(uc->tls));
    uc->r = NULL;
    r->uc = NULL;
    if (reuse) {
        uc->head_done = false;
        uc->got_bytes = false;
        wd_buf_reset(&uc->in);
        uc->next = uc->pool->idle;
        uc->pool->idle = uc;
        uc->pool->nidle++;
        /* keep reading: an idle connection the upstream closes must leave the pool at once */
        uc_read(uc, true);
    } else {
        uc_close(uc);
    }
    list_remove(r);
    r->end_ns = wd_now_ns();
    r->on_done(r, WD_UP_OK);
}

/* Parses and delivers what is buffered. Returns false if the request ended (uc may be gone). */
static bool pump(upconn_t *uc)
{
    wd_upreq_t *r = uc->r;
    while (!uc->head_done) {
        wd_http_limits_t lim = {8192, MAX_RESPONSE_HEAD, WD_HTTP_MAX_HEADERS};
        wd_http_error_t e;
        int rc = wd_http_parse_response(uc->in.data, uc->in.len, &lim, &uc->head, &e);
        if (rc == WD_EAGAIN) return true;
        if (rc != WD_OK) {
            finish(r, WD_UP_EPROTO);
            return false;
        }
        if (uc->head.status >= 100 && uc->head.status < 200) { /* interim response: skip it */
            wd_buf_consume(&uc->in, uc->head.head_len);
            continue;
        }
        uc->head_done = true;
        r->head_seen = true;
        int st = uc->head.status;
        uc->no_body = st == 204 || st == 304;
        if (uc->no_body) uc->body_left = 0;
        else if (uc->head.chunked) {
            wd_http_chunked_init(&uc->chunked);
            uc->body_left = 0;
        } else uc->body_left = uc->head.content_length; /* -1: until close */
        r->on_head(r, &uc->head);
        if (!r->active) return false; /* cancelled from the callback */
        wd_buf_consume(&uc->in, uc->head.head_len);
        if (uc->no_body || (!uc->head.chunked && uc->body_left == 0)) {
            complete(uc);
            return false;
        }
    }
    if (uc->in.len == 0) return true;
    if (uc->head.chunked) {
        size_t used = 0;
        wd_http_error_t e;
        wd_buf_reset(&uc->decoded);
        int rc = wd_http_chunked_decode(&uc->chunked, uc->in.data, uc->in.len, &used, &uc->decoded, &e);
        wd_buf_consume(&uc->in, used);
        if (rc != WD_OK && rc != WD_EAGAIN) {
            finish(r, WD_UP_EPROTO);
            return false;
        }
        if (uc->decoded.len) {
            r->final = rc == WD_OK;
            if (!r->on_data(r, uc->decoded.data, uc->decoded.len)) return false; /* r may be gone */
        }
        if (rc == WD_OK) {
            if (uc->in.len) uc->head.keep_alive = false; /* junk after the body */
            complete(uc);
            return false;
        }
        return true;
    }
    size_t n = uc->in.len;
    if (uc->body_left >= 0 && (uint64_t)n > (uint64_t)uc->body_left) n = (size_t)uc->body_left;
    r->final = uc->body_left >= 0 && (uint64_t)n == (uint64_t)uc->body_left;
    if (!r->on_data(r, uc->in.data, n)) return false; /* r may be gone */
    wd_buf_consume(&uc->in, n);
    if (uc->body_left >= 0) {
        uc->body_left -= (int64_t)n;
        if (uc->body_left == 0) {
            if (uc->in.len) uc->head.keep_alive = false;
            complete(uc);
            return false;
        }
    }
    return true;
}

/* The connection ended (EOF, reset, or a TLS close_notify or failure) while r was using it. */
static void conn_ended(upconn_t *uc, bool eof, wd_up_status_t st)
{
    wd_upreq_t *r = uc->r;
    if (!uc->got_bytes && uc->reused && !r->retried) {
        /* a stale keep-alive connection: try once more on a fresh one */
        r->retried = true;
        uc_close(uc);
        if (uc_start_new(r) != WD_OK) finish(r, WD_UP_ECONNECT);
        return;
    }
    if (uc->head_done && uc->body_left < 0 && !uc->head.chunked && eof) {
        uc->head.keep_alive = false;
        complete(uc);
        return;
    }
    finish(r, st);
}

/* `added` response bytes were appended to uc->in. */
static void got_bytes(upconn_t *uc, size_t added)
{
    wd_upreq_t *r = uc->r;
    if (!added) return;
    uc->got_bytes = true;
    if (!r->paused) r->deadline_ns = wd_now_ns() + ms(r->up->timeout_ms);
    if (uc->head_done && uc->in.len > 0) { /* fall through to pump */
    } else if (!uc->head_done && uc->in.len > MAX_RESPONSE_HEAD + 8192) {
        finish(r, WD_UP_EPROTO);
        return;
    }
    pump(uc);
}

static void send_request(upconn_t *uc);

/* Sends the ciphertext OpenSSL produced. Returns 0 or a libuv error (the caller decides). */
static void on_tls_written(uv_write_t *req, int status);
static int tls_send(upconn_t *uc)
{
    char *buf = wd_tls_scratch_out();
    size_t n;
    while ((n = wd_tls_take(uc->tls, buf, WD_TLS_SCRATCH)) > 0) {
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        /* libuv refuses (EAGAIN) while earlier writes are queued, which keeps the order */
        int w = uv_try_write((uv_stream_t *)&uc->tcp, &b, 1);
        if (w < 0 && w != UV_EAGAIN) return w;
        size_t off = w > 0 ? (size_t)w : 0;
        if (off == n) continue;
        tls_write_t *wr = malloc(sizeof *wr + (n - off));
        if (!wr) return UV_ENOMEM;
        wr->uc = uc;
        memcpy(wr->data, buf + off, n - off);
        b = uv_buf_init(wr->data, (unsigned)(n - off));
        int rc = uv_write(&wr->req, (uv_stream_t *)&uc->tcp, &b, 1, on_tls_written);
        if (rc) {
            free(wr);
            return rc;
        }
    }
    return 0;
}

static void tls_in(upconn_t *uc, const char *p, size_t n)
{
    wd_upreq_t *r = uc->r;
    bool was_up = wd_tls_established(uc->tls);
    size_t before = uc->in.len;
    int rc = wd_tls_feed(uc->tls, p, n);
    if (rc == WD_OK) rc = was_up ? wd_tls_read(uc->tls, &uc->in) : wd_tls_handshake(uc->tls);
    int sent = tls_send(uc); /* handshake messages, alerts */
    if (!r) { /* idle in the pool: a session ticket is fine, anything else retires it */
        if (rc != WD_OK || uc->in.len != before || sent) {
            pool_remove(uc);
            uc_close(uc);
        }
        return;
    }
    if (sent) {
        finish(r, WD_UP_ERESET);
        return;
    }
    if (!was_up) {
        if (rc == WD_EAGAIN) return;
        if (rc != WD_OK) {
            finish(r, WD_UP_ETLS);
            return;
        }
        send_request(uc); /* handshake complete */
        return;
    }
    if (rc == WD_TLS_EOF) {
        conn_ended(uc, true, WD_UP_ERESET);
        return;
    }
    if (rc != WD_OK) {
        conn_ended(uc, false, WD_UP_ETLS);
        return;
    }
    got_bytes(uc, uc->in.len - before);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    upconn_t *uc = s->data;
    wd_upreq_t *r = uc->r;
    if (nread == 0) return;
    uc->w->reads++;
    if (nread > 0 && uc->tls) {
        tls_in(uc, buf->base, (size_t)nread);
        return;
    }
    if (!r) { /* idle in the pool: EOF, error or unsolicited bytes all retire it */
        pool_remove(uc);
        uc_close(uc);
        return;
    }
    if (nread < 0) {
        if (uc->tls && !wd_tls_established(uc->tls)) {
            snprintf(r->error, sizeof r->error, "the upstream closed the connection during the TLS handshake");
            finish(r, WD_UP_ETLS);
            return;
        }
        conn_ended(uc, nread == UV_EOF, WD_UP_ERESET);
        return;
    }
    uc->in.len += (size_t)nread;
    got_bytes(uc, (size_t)nread);
}

/* A write to the upstream failed: a stale pooled connection gets one retry on a fresh one. */
static void write_failed(upconn_t *uc)
{
    wd_upreq_t *r = uc->r;
    if (uc->reused && !uc->got_bytes && !r->retried) {
        r->retried = true;
        uc_close(uc);
        if (uc_start_new(r) != WD_OK) finish(r, WD_UP_ECONNECT);
        return;
    }
    finish(r, WD_UP_ERESET);
}

static void on_written(uv_write_t *req, int status)
{
    upconn_t *uc = req->data;
    if (status < 0 && uc->r && !uc->closing) write_failed(uc);
}

static void on_tls_written(uv_write_t *req, int status)
{
    tls_write_t *wr = (tls_write_t *)req;
    upconn_t *uc = wr->uc;
    free(wr);
    if (status < 0 && uc->r && !uc->closing) write_failed(uc);
}

static void send_request(upconn_t *uc)
{
    wd_upreq_t *r = uc->r;
    r->deadline_ns = wd_now_ns() + ms(r->up->timeout_ms);
    if (uc->tls) {
        if (wd_tls_write(uc->tls, r->request.data, r->request.len) != WD_OK) {
            finish(r, WD_UP_ETLS);
            return;
        }
        if (tls_send(uc) != 0) {
            write_failed(uc);
            return;
        }
        if (!r->paused) uc_read(uc, true);
        return;
    }
    uv_buf_t b = uv_buf_init(r->request.data, (unsigned)r->request.len);
    /* try a direct write first: a request that fits the socket buffer (nearly all) then costs no
     * write request and no epoll_ctl */
    int n = uv_try_write((uv_stream_t *)&uc->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        write_failed(uc);
        return;
    }
    if (n != (int)b.len) {
        if (n > 0) b = uv_buf_init(b.base + n, b.len - (unsigned)n);
        uc->write.data = uc;
        /* the request buffer lives in r until wd_upreq_free, and r outlives the connection's use of it */
        if (uv_write(&uc->write, (uv_stream_t *)&uc->tcp, &b, 1, on_written) != 0) {
            finish(r, WD_UP_ERESET);
            return;
        }
    }
    if (!r->paused) uc_read(uc, true);
}

static void on_connect(uv_connect_t *req, int status)
{
    upconn_t *uc = req->data;
    if (uc->closing) return;
    if (status < 0) {
        finish(uc->r, WD_UP_ECONNECT);
        return;
    }
    uv_tcp_nodelay(&uc->tcp, 1);
    const wd_upstream_cfg_t *up = uc->r->up;
    if (up->tls.ctx) { /* the handshake runs within what is left of connect_timeout_ms */
        wd_tls_t *t = malloc(sizeof *t);
        if (!t || wd_tls_init_client(t, up->tls.ctx, up->tls.server_name, up->tls.verify) != WD_OK) {
            free(t);
            snprintf(uc->r->error, sizeof uc->r->error, "cannot set up TLS (out of memory?)");
            finish(uc->r, WD_UP_ETLS);
            return;
        }
        uc->tls = t;
        t->on_session = keep_session;
        t->session_ud = uc->pool;
        if (uc->pool->session) SSL_set_session(t->ssl, uc->pool->session);
        int rc = wd_tls_handshake(t); /* ClientHello */
        if (rc != WD_EAGAIN && rc != WD_OK) {
            finish(uc->r, WD_UP_ETLS);
            return;
        }
        if (tls_send(uc) != 0) {
            finish(uc->r, WD_UP_ECONNECT);
            return;
        }
        uc_read(uc, true);
        return;
    }
    send_request(uc);
}

static upconn_t *uc_new(wd_worker_t *w, pool_t *p)
{
    upconn_t *uc = calloc(1, sizeof *uc);
    if (!uc) return NULL;
    uc->w = w;
    uc->pool = p;
    p->nconns++;
    wd_buf_init(&uc->in, 0);
    wd_buf_init(&uc->decoded, 0);
    uv_tcp_init(&w->loop, &uc->tcp);
    uc->tcp.data = uc;
    return uc;
}

static int uc_start_new(wd_upreq_t *r)
{
    pool_t *p = find_pool(r->w, r->up);
    if (!p) return WD_ENOMEM;
    upconn_t *uc = uc_new(r->w, p);
    if (!uc) return WD_ENOMEM;
    uc->r = r;
    r->uc = uc;
    uc->connect.data = uc;
    r->deadline_ns = wd_now_ns() + ms(r->up->connect_timeout_ms);
    int rc = uv_tcp_connect(&uc->connect, &uc->tcp, (const struct sockaddr *)&r->up->addr.sa, on_connect);
    if (rc) {
        r->uc = NULL;
        uc->r = NULL;
        uc_close(uc);
        return WD_EIO;
    }
    return WD_OK;
}

int wd_upreq_start(wd_worker_t *w, wd_upreq_t *r)
{
    r->w = w;
    r->start_ns = wd_now_ns();
    r->head_seen = false;
    r->retried = false;
    r->paused = false;
    r->error[0] = '\0';
    pool_t *p = find_pool(w, r->up);
    if (!p) return WD_ENOMEM;
    int rc;
    if (p->idle) {
        upconn_t *uc = p->idle;
        pool_remove(uc);
        uc->reused = true;
        uc->r = r;
        r->uc = uc;
        rc = WD_OK;
    } else {
        rc = uc_start_new(r);
        if (rc) return rc;
    }
    r->active = true;
    r->prev = NULL;
    r->next = w->upreqs;
    if (r->next) r->next->prev = r;
    w->upreqs = r;
    if (r->uc->reused) send_request(r->uc);
    return WD_OK;
}

void wd_upreq_cancel(wd_upreq_t *r)
{
    if (!r->active) return;
    list_remove(r);
    if (r->uc) uc_close(r->uc);
}

void wd_upreq_pause(wd_upreq_t *r)
{
    if (r->paused) return;
    r->paused = true;
    r->deadline_ns = 0; /* our own backpressure is not the upstream's delay */
    if (r->uc) uc_read(r->uc, false);
}

void wd_upreq_resume(wd_upreq_t *r)
{
    if (!r->paused) return;
    r->paused = false;
    if (!r->active || !r->uc) return;
    r->deadline_ns = wd_now_ns() + ms(r->up->timeout_ms);
    uc_read(r->uc, true);
}

void wd_upreq_free(wd_upreq_t *r)
{
    wd_upreq_cancel(r);
    wd_buf_free(&r->request);
}

void wd_upstream_sweep(wd_worker_t *w, uint64_t now)
{
    wd_upreq_t *r = w->upreqs;
    while (r) {
        wd_upreq_t *n = r->next;
        if (r->deadline_ns && now > r->deadline_ns) {
            if (r->uc && r->uc->tls && !wd_tls_established(r->uc->tls))
                snprintf(r->error, sizeof r->error, "the TLS handshake did not finish within connect_timeout_ms (%u ms)",
                         r->up->connect_timeout_ms);
            finish(r, WD_UP_ETIMEOUT);
        }
        r = n;
    }
}

/* Retires a pool: its idle connections close now, busy ones when their request ends, and the pool
 * itself goes with its last connection. */
static void pool_retire(wd_worker_t *w, pool_t *p)
{
    p->retired = true;
    if (p->session) {
        SSL_SESSION_free(p->session);
        p->session = NULL;
    }
    while (p->idle) {
        upconn_t *uc = p->idle;
        pool_remove(uc);
        uc_close(uc);
    }
    if (p->nconns == 0) pool_free(w, p);
}

void wd_upstream_prune(wd_worker_t *w)
{
    pool_t *p = w->pools;
    while (p) {
        pool_t *n = p->next;
        if (!p->retired && !pool_in_config(p, w->cfg)) pool_retire(w, p);
        p = n;
    }
}

void wd_upstream_pools_free(wd_worker_t *w)
{
    pool_t *p = w->pools;
    while (p) {
        pool_t *n = p->next;
        pool_retire(w, p); /* connections still closing free theirs from their close callbacks */
        p = n;
    }
}

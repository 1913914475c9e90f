/* Listeners and client connections: HTTP/1.1 framing (head, Content-Length and chunked bodies,
 * Expect: 100-continue, keep-alive, pipelining), timeouts checked by the worker's sweep, and output
 * backpressure. One request per connection is in progress at a time; pipelined bytes wait in `in`. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net.h"
#include "net/tls.h"

#define READ_CHUNK 16384
#define KEEP_BODY_CAP 65536

struct wd_server {
    uv_tcp_t tcp;
    wd_worker_t *w;
    wd_tls_select_fn tls;
    const wd_handler_t *h;
    void *hud;
    struct wd_server *next;
    bool closed;
};

typedef struct {
    uv_write_t req;
    wd_conn_t *c;
    size_t len;
    char data[];
} write_req_t;

static int g_connections; /* process-wide, atomic */

static void process(wd_conn_t *c);

static const wd_server_limits_t *limits(const wd_conn_t *c) { return &c->w->cfg->limits; }

/* ---- listening ---------------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    wd_conn_t *c = h->data;
    if (c->tls) {
        wd_tls_free(c->tls);
        free(c->tls);
        c->tls = NULL;
    }
    wd_buf_free(&c->in);
    wd_buf_free(&c->body);
    wd_buf_free(&c->head);
    __atomic_sub_fetch(&c->w->nconns, 1, __ATOMIC_RELAXED);
    free(c);
    __atomic_sub_fetch(&g_connections, 1, __ATOMIC_RELAXED);
}

static void unlink_conn(wd_conn_t *c)
{
    if (c->prev) c->prev->next = c->next;
    else if (c->w->conns == c) c->w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

void wd_conn_close(wd_conn_t *c)
{
    if (c->state == WD_CONN_CLOSING) return;
    c->state = WD_CONN_CLOSING;
    unlink_conn(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* The client is gone or hopeless: tell the handler if it was answering, then close. */
void wd_conn_abort(wd_conn_t *c)
{
    if (c->state == WD_CONN_BUSY && c->h->on_abort) c->h->on_abort(c);
    wd_conn_close(c);
}

static void tls_input(wd_conn_t *c, const char *p, size_t n);
static void bad_request(wd_conn_t *c, int status, const char *reason);

/* TLS connections read ciphertext into the thread's scratch buffer; the plaintext lands in `in`. */
static bool tls_active(const wd_conn_t *c) { return c->tls && !c->tls_plain; }
static bool tls_handshaking(const wd_conn_t *c) { return tls_active(c) && !wd_tls_established(c->tls); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    WD_UNUSED(suggested);
    wd_conn_t *c = h->data;
    if (tls_active(c)) {
        buf->base = wd_tls_scratch_in();
        buf->len = WD_TLS_SCRATCH;
        return;
    }
    if (wd_buf_reserve(&c->in, READ_CHUNK) != WD_OK) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->in.data + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wd_conn_t *c = s->data;
    if (nread == 0) return;
    c->w->reads++;
    if (nread < 0) {
        /* UV_ENOBUFS (allocation failed) or EOF/reset: either way the conversation is over */
        c->eof = true;
        wd_conn_abort(c);
        return;
    }
    if (tls_active(c)) {
        tls_input(c, buf->base, (size_t)nread);
        return;
    }
    if (c->tls_plain) return; /* the TLS port's answer to a plaintext request is on its way; nothing more is read */
    c->in.len += (size_t)nread;
    c->bytes_in += (uint64_t)nread;
    process(c);
}

static void set_reading(wd_conn_t *c, bool on)
{
    if (c->state == WD_CONN_CLOSING || c->reading == on) return;
    c->reading = on;
    if (on) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_connection(uv_stream_t *ls, int status)
{
    wd_server_t *srv = ls->data;
    if (status < 0) return;
    wd_conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(&srv->w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        free(c); /* never initialised a close cb */
        return;
    }
    c->w = srv->w;
    c->srv = srv;
    c->h = srv->h;
    c->hud = srv->hud;
    int n = __atomic_add_fetch(&g_connections, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->w->nconns, 1, __ATOMIC_RELAXED);
    c->state = WD_CONN_HEAD;
    c->next = c->w->conns;
    if (c->next) c->next->prev = c;
    c->w->conns = c;
    if ((uint32_t)n > limits(c)->max_connections || c->w->draining) {
        wd_conn_close(c);
        return;
    }
    if (srv->tls) {
        SSL_CTX *ctx = srv->tls(c->w->cfg);
        c->tls = ctx ? malloc(sizeof *c->tls) : NULL;
        if (!c->tls || wd_tls_init_server(c->tls, ctx) != WD_OK) {
            free(c->tls);
            c->tls = NULL;
            wd_conn_close(c);
            return;
        }
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
    }
    wd_buf_init(&c->in, 0);
    wd_buf_init(&c->body, 0);
    wd_buf_init(&c->head, 0);
    /* a TLS handshake must finish within header_timeout_ms (a slow handshake is a slowloris too);
     * after it, the connection is idle like any other */
    uint32_t first_ms = c->tls ? limits(c)->header_timeout_ms : limits(c)->idle_timeout_ms;
    c->deadline_ns = wd_now_ns() + (uint64_t)first_ms * 1000000ull;
    set_reading(c, true);
}

int wd_server_probe(const wd_addr_t *addr, char *err, size_t errlen)
{
    /* SO_REUSEPORT would let a second warden (or anything else running as the same user) silently
     * share the port and take part of the traffic; bind once without it to make sure nobody is there. */
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return wd_errf(err, errlen, WD_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr->sa.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = WD_OK;
    if (bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) != 0)
        rc = wd_errf(err, errlen, WD_EIO, "cannot listen on %s: %s", addr->text, strerror(errno));
    close(fd);
    return rc;
}

int wd_server_listen(wd_worker_t *w, const wd_addr_t *addr, wd_tls_select_fn tls, const wd_handler_t *handler,
                     void *handler_ud, char *err, size_t errlen)
{
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return wd_errf(err, errlen, WD_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        close(fd);
        return wd_errf(err, errlen, WD_EIO, "SO_REUSEPORT: %s", strerror(errno));
    }
    if (addr->sa.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        return wd_errf(err, errlen, WD_EIO, "cannot listen on %s: %s", addr->text, strerror(e));
    }
    wd_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) {
        close(fd);
        return WD_ENOMEM;
    }
    srv->w = w;
    srv->tls = tls;
    srv->h = handler;
    srv->hud = handler_ud;
    uv_tcp_init(&w->loop, &srv->tcp);
    srv->tcp.data = srv;
    int rc = uv_tcp_open(&srv->tcp, fd);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->tcp, 4096, on_connection);
    if (rc) {
        uv_close((uv_handle_t *)&srv->tcp, (uv_close_cb)free);
        return wd_errf(err, errlen, WD_EIO, "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    }
    srv->next = w->servers;
    w->servers = srv;
    return WD_OK;
}

static void on_server_closed(uv_handle_t *h) { free(h->data); }

void wd_worker_drain(wd_worker_t *w)
{
    w->draining = true;
    for (wd_server_t *s = w->servers; s; s = s->next) {
        if (!s->closed) {
            s->closed = true;
            uv_close((uv_handle_t *)&s->tcp, on_server_closed);
        }
    }
    w->servers = NULL;
    /* idle keep-alive connections close now; busy ones after their current response */
    wd_conn_t *c = w->conns;
    while (c) {
        wd_conn_t *n = c->next;
        if (c->state == WD_CONN_HEAD && c->in.len == 0) wd_conn_close(c);
        else c->close_after = true;
        c = n;
    }
}

/* ---- writing ------------------------------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    WD_UNUSED(status);
    wd_conn_t *c = req->data;
    free(req);
    /* conn_end already marked the connection closing and unlinked it; only the handle is left */
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* All output is written and the connection should end: send FIN, then close. */
static ssize_t tls_flush(wd_conn_t *c);

static void conn_end(wd_conn_t *c)
{
    if (c->state == WD_CONN_CLOSING) return;
    set_reading(c, false);
    if (tls_active(c)) { /* close_notify, so the client can tell our end from a truncation */
        wd_tls_close_notify(c->tls);
        if (tls_flush(c) < 0) {
            wd_conn_close(c);
            return;
        }
    }
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        wd_conn_close(c);
        return;
    }
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        wd_conn_close(c);
        return;
    }
    /* the shutdown callback closes; until then nothing else may touch the connection */
    c->state = WD_CONN_CLOSING;
    unlink_conn(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req_t *wr = (write_req_t *)req;
    wd_conn_t *c = wr->c;
    c->queued -= wr->len;
    free(wr);
    if (c->state == WD_CONN_CLOSING) return;
    if (status < 0) {
        wd_conn_abort(c);
        return;
    }
    uint64_t now = wd_now_ns();
    c->send_deadline_ns = c->queued ? now + (uint64_t)limits(c)->send_timeout_ms * 1000000ull : 0;
    if (c->want_drain && c->queued < limits(c)->write_buffer_bytes) {
        c->want_drain = false;
        if (c->h->on_drain) c->h->on_drain(c);
        if (c->state == WD_CONN_CLOSING) return;
    }
    if (c->close_after && c->queued == 0 && c->state != WD_CONN_BUSY) conn_end(c);
    else if (c->output_full && c->queued <= limits(c)->write_buffer_bytes / 2 && c->state == WD_CONN_HEAD) {
        /* half empty, not merely below the limit: each resume then answers many requests, not one */
        c->output_full = false;
        set_reading(c, true);
        if (!c->in_process) process(c);
    }
}

/* Bytes for the socket as they are (plaintext, or ciphertext from tls_flush): written at once when
 * nothing is queued, the rest copied into a queued write. Returns the bytes queued, or < 0. */
static ssize_t sock_write(wd_conn_t *c, const char *p, size_t len)
{
    if (c->queued == 0) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)len) return 0;
        if (n < 0 && n != UV_EAGAIN) return WD_EIO; /* the read side will see the reset and abort */
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    write_req_t *wr = malloc(sizeof *wr + len);
    if (!wr) return WD_ENOMEM;
    wr->c = c;
    wr->len = len;
    memcpy(wr->data, p, len);
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(wr);
        return WD_EIO;
    }
    c->queued += len;
    if (!c->send_deadline_ns) c->send_deadline_ns = wd_now_ns() + (uint64_t)limits(c)->send_timeout_ms * 1000000ull;
    if (c->queued >= limits(c)->write_buffer_bytes) c->want_drain = true;
    return (ssize_t)c->queued;
}

/* Sends the ciphertext OpenSSL has produced (records, handshake messages, alerts, tickets). */
static ssize_t tls_flush(wd_conn_t *c)
{
    char *buf = wd_tls_scratch_out();
    size_t n;
    while ((n = wd_tls_take(c->tls, buf, WD_TLS_SCRATCH)) > 0) {
        ssize_t q = sock_write(c, buf, n);
        if (q < 0) return q;
    }
    return (ssize_t)c->queued;
}

ssize_t wd_conn_write(wd_conn_t *c, const char *p, size_t len)
{
    if (c->state == WD_CONN_CLOSING) return WD_EIO;
    c->bytes_out += len;
    if (tls_active(c)) {
        if (wd_tls_write(c->tls, p, len) != WD_OK) return WD_EIO;
        return tls_flush(c);
    }
    return sock_write(c, p, len);
}

/* Ciphertext arrived: run the handshake or decrypt, send what OpenSSL has to say back, and hand
 * any plaintext to the request loop. */
static void tls_input(wd_conn_t *c, const char *p, size_t n)
{
    bool was_up = wd_tls_established(c->tls);
    size_t before = c->in.len;
    int rc = wd_tls_feed(c->tls, p, n);
    if (rc == WD_OK) rc = wd_tls_read(c->tls, &c->in);
    if (tls_flush(c) < 0) {
        wd_conn_abort(c);
        return;
    }
    if (c->state == WD_CONN_CLOSING) return;
    if (rc == WD_TLS_EOF) { /* close_notify: the client is done, as with a TCP EOF */
        c->eof = true;
        wd_conn_abort(c);
        return;
    }
    if (rc != WD_OK) {
        if (!was_up && wd_tls_got_http(c->tls) && c->state == WD_CONN_HEAD) {
            /* plain HTTP on the TLS port: tell the client in its own protocol, then close */
            c->tls_plain = true;
            bad_request(c, 400, "This port requires TLS: use https:// (the request was sent as plain HTTP)");
            return;
        }
        wd_log(WD_LOG_DEBUG, "TLS %s with %s failed: %s", was_up ? "connection" : "handshake", c->peer, c->tls->err);
        if (c->state == WD_CONN_BUSY) wd_conn_abort(c);
        else conn_end(c); /* the alert (if any) is queued; FIN after it */
        return;
    }
    if (!was_up && wd_tls_established(c->tls) && c->state == WD_CONN_HEAD && !c->req_start_ns)
        c->deadline_ns = wd_now_ns() + (uint64_t)limits(c)->idle_timeout_ms * 1000000ull;
    size_t got = c->in.len - before;
    if (!got) return;
    c->bytes_in += got;
    process(c);
}

void wd_conn_finish(wd_conn_t *c, bool keep_alive)
{
    if (c->state == WD_CONN_CLOSING) return;
    c->ud = NULL;
    if (!keep_alive || !c->keep_alive || c->close_after || c->eof || c->w->draining) {
        c->close_after = true;
        c->state = WD_CONN_HEAD; /* no longer busy: abort callbacks must not fire */
        c->deadline_ns = 0;      /* the send deadline covers the flush */
        if (c->queued == 0) conn_end(c);
        else set_reading(c, false);
        return;
    }
    c->state = WD_CONN_HEAD;
    c->req_start_ns = 0;
    c->bytes_in = c->in.len; /* pipelined bytes already received belong to the next request */
    c->bytes_out = 0;
    wd_buf_reset(&c->head);
    if (c->body.cap > KEEP_BODY_CAP) wd_buf_free(&c->body);
    wd_buf_reset(&c->body);
    c->deadline_ns = wd_now_ns() + (uint64_t)limits(c)->idle_timeout_ms * 1000000ull;
    set_reading(c, true);
    if (!c->in_process) process(c);
}

/* ---- reading requests ------------------------------------------------------------------------------ */

static void rebase(wd_str_t *s, const char *from, const char *to)
{
    if (s->p) s->p = to + (s->p - from);
}

/* Moves the parsed head out of `in` (which keeps growing with pipelined bytes) into its own buffer. */
static int keep_head(wd_conn_t *c)
{
    wd_buf_reset(&c->head);
    if (wd_buf_append(&c->head, c->in.data, c->req.head_len)) return WD_ENOMEM;
    const char *from = c->in.data, *to = c->head.data;
    wd_http_msg_t *m = &c->req;
    rebase(&m->method_str, from, to);
    rebase(&m->target, from, to);
    rebase(&m->path, from, to);
    rebase(&m->reason, from, to);
    for (size_t i = 0; i < m->nheaders; i++) {
        rebase(&m->headers[i].name, from, to);
        rebase(&m->headers[i].value, from, to);
    }
    wd_buf_consume(&c->in, m->head_len);
    return WD_OK;
}

static void bad_request(wd_conn_t *c, int status, const char *reason)
{
    if (tls_handshaking(c)) { /* nothing can be said before the handshake: just close */
        wd_conn_close(c);
        return;
    }
    /* nothing after a framing error can be trusted: answer, then close */
    c->keep_alive = false;
    c->close_after = true;
    c->state = WD_CONN_BUSY;
    set_reading(c, false);
    c->h->on_bad_request(c, status, reason);
}

static void dispatch(wd_conn_t *c)
{
    c->state = WD_CONN_BUSY;
    c->deadline_ns = 0;
    c->h->on_request(c, &c->req, &c->body);
}

static void process(wd_conn_t *c)
{
    c->in_process = true;
    const wd_server_limits_t *lim = limits(c);
    for (;;) {
        if (c->state == WD_CONN_HEAD) {
            if (c->in.len == 0 || c->close_after) break;
            if (c->queued >= lim->write_buffer_bytes) {
                /* the client pipelines requests but does not read the answers: answering more would
                 * only grow the output queue, so stop reading until it drains (on_write resumes) */
                c->output_full = true;
                c->deadline_ns = 0; /* the send deadline covers a client that stopped reading */
                set_reading(c, false);
                break;
            }
            uint64_t now = wd_now_ns();
            if (!c->req_start_ns) {
                c->req_start_ns = now;
                c->deadline_ns = now + (uint64_t)lim->header_timeout_ms * 1000000ull;
            }
            wd_http_limits_t hl = {lim->max_request_line, lim->max_header_bytes, lim->max_headers};
            wd_http_error_t e = {0, NULL};
            int rc = wd_http_parse_request(c->in.data, c->in.len, &hl, &c->req, &e);
            if (rc == WD_EAGAIN) break;
            if (rc != WD_OK) {
                bad_request(c, e.status ? e.status : 400, e.reason ? e.reason : "malformed request");
                break;
            }
            if (keep_head(c)) {
                bad_request(c, 500, "out of memory");
                break;
            }
            c->keep_alive = c->req.keep_alive;
            c->body.limit = lim->max_body_bytes;
            if (c->req.upgrade) {
                bad_request(c, 400, "protocol upgrade is not supported");
                break;
            }
            if (c->req.content_length > (int64_t)lim->max_body_bytes) {
                bad_request(c, 413, "request body exceeds limits.max_body_bytes");
                break;
            }
            bool has_body = c->req.chunked || c->req.content_length > 0;
            if (!has_body) {
                dispatch(c);
                continue;
            }
            if (c->req.chunked) wd_http_chunked_init(&c->chunked);
            else c->body_left = (uint64_t)c->req.content_length;
            c->state = WD_CONN_BODY;
            c->deadline_ns = now + (uint64_t)lim->body_timeout_ms * 1000000ull;
            if (c->req.expect_continue && c->in.len == 0) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                wd_conn_write(c, cont, sizeof cont - 1);
                c->bytes_out = 0;
            }
            continue;
        }
        if (c->state == WD_CONN_BODY) {
            if (c->in.len == 0) break;
            if (c->req.chunked) {
                size_t used = 0;
                wd_http_error_t e = {0, NULL};
                int rc = wd_http_chunked_decode(&c->chunked, c->in.data, c->in.len, &used, &c->body, &e);
                wd_buf_consume(&c->in, used);
                if (rc == WD_EAGAIN) break;
                if (rc == WD_E2BIG) {
                    bad_request(c, 413, "request body exceeds limits.max_body_bytes");
                    break;
                }
                if (rc != WD_OK) {
                    bad_request(c, e.status ? e.status : 400, e.reason ? e.reason : "malformed chunked body");
                    break;
                }
            } else {
                size_t n = (size_t)WD_MIN((uint64_t)c->in.len, c->body_left);
                if (wd_buf_append(&c->body, c->in.data, n)) {
                    bad_request(c, 413, "request body exceeds limits.max_body_bytes");
                    break;
                }
                wd_buf_consume(&c->in, n);
                c->body_left -= n;
                if (c->body_left) break;
            }
            dispatch(c);
            continue;
        }
        if (c->state == WD_CONN_BUSY) {
            /* pipelined requests wait; stop reading if the client sends too far ahead */
            if (c->in.len > lim->max_header_bytes) set_reading(c, false);
        }
        break;
    }
    c->in_process = false;
}

/* ---- deadlines ------------------------------------------------------------------------------------- */

void wd_server_sweep(wd_worker_t *w, uint64_t now)
{
    wd_conn_t *c = w->conns;
    while (c) {
        wd_conn_t *n = c->next;
        if (c->send_deadline_ns && now > c->send_deadline_ns) {
            wd_conn_abort(c); /* the client stopped reading our output */
        } else if (c->deadline_ns && now > c->deadline_ns) {
            if (c->state == WD_CONN_HEAD && c->in.len == 0 && !c->req_start_ns) wd_conn_close(c); /* idle */
            else if (c->state == WD_CONN_HEAD || c->state == WD_CONN_BODY)
                bad_request(c, 408, c->state == WD_CONN_HEAD ? "request head not received in time"
                                                              : "request body not received in time");
        }
        c = n;
    }
}

uint64_t wd_server_connections(void) { return (uint64_t)__atomic_load_n(&g_connections, __ATOMIC_RELAXED); }

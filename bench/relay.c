/*
 * relay: the least a proxy can do, for bench/run.sh's "relay" target. It accepts TCP connections on
 * 127.0.0.1:LISTEN_PORT, opens one connection to 127.0.0.1:UPSTREAM_PORT for each, and copies bytes
 * both ways without looking at them: no HTTP parsing, no headers, no buffering beyond one read. One
 * thread, level-triggered epoll, TCP_NODELAY, one read and one write per message in each direction
 * (the same four system calls per request that warden makes). Its added latency is the floor that
 * loopback TCP and the scheduler of the machine put under any proxy on the same CPU layout.
 *
 *   relay LISTEN_PORT UPSTREAM_PORT
 *
 * Exits 2 with a message on bad arguments or when it cannot listen. Not part of warden.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536

/* One direction of a connection pair: bytes read from `fd` that its peer could not take yet. */
typedef struct side {
    int fd;
    struct side *peer;
    char *pend; /* unwritten bytes for peer->fd, NULL when none */
    size_t pend_off, pend_len;
} side_t;

static int g_ep;
static side_t *g_closed[64]; /* pairs closed during this batch of events, freed after it */
static int g_nclosed;

static int port_arg(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v < 65536) ? (int)v : -1;
}

static void tune(int fd)
{
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void watch(side_t *s, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(g_ep, op, s->fd, &ev);
}

/* Closes both sockets; the pair is freed after the batch, whose later events may still name it. */
static void close_pair(side_t *s)
{
    side_t *p = s->peer;
    close(s->fd);
    close(p->fd);
    s->fd = p->fd = -1;
    free(s->pend);
    free(p->pend);
    s->pend = p->pend = NULL;
    g_closed[g_nclosed++] = s < p ? s : p; /* both sides live in one allocation */
}

/* Writes what `s` holds for its peer. Returns 0 when all is written, 1 when some waits, -1 on error. */
static int flush(side_t *s)
{
    while (s->pend_off < s->pend_len) {
        ssize_t n = write(s->peer->fd, s->pend + s->pend_off, s->pend_len - s->pend_off);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 1 : -1;
        s->pend_off += (size_t)n;
    }
    free(s->pend);
    s->pend = NULL;
    return 0;
}

/* What `s` waits for: reads unless it holds bytes its peer has not taken; writes while its peer
 * holds bytes for it. */
static void update(side_t *s)
{
    watch(s, EPOLL_CTL_MOD, (s->pend ? 0 : EPOLLIN) | (s->peer->pend ? EPOLLOUT : 0));
}

/* `s` is readable and holds nothing: read once, write to the peer; what the peer cannot take waits. */
static void on_readable(side_t *s, char *buf)
{
    ssize_t n = read(s->fd, buf, BUF_SIZE);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_pair(s);
        return;
    }
    if (n < 0) return;
    ssize_t w = write(s->peer->fd, buf, (size_t)n);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        close_pair(s);
        return;
    }
    if (w < 0) w = 0;
    if (w == n) return;
    s->pend = malloc((size_t)(n - w));
    if (!s->pend) {
        close_pair(s);
        return;
    }
    memcpy(s->pend, buf + w, (size_t)(n - w));
    s->pend_off = 0;
    s->pend_len = (size_t)(n - w);
    update(s);
    update(s->peer);
}

/* `s` is writable again: write what its peer holds for it. */
static void on_writable(side_t *s)
{
    int r = s->peer->pend ? flush(s->peer) : 0;
    if (r < 0) {
        close_pair(s);
        return;
    }
    update(s);
    update(s->peer);
}

static void on_accept(int lfd, const struct sockaddr_in *up)
{
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) return;
        int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        side_t *pair = calloc(2, sizeof *pair);
        if (u < 0 || !pair || connect(u, (const struct sockaddr *)up, sizeof *up) < 0) {
            fprintf(stderr, "relay: cannot reach the upstream: %s\n", strerror(errno));
            close(c);
            if (u >= 0) close(u);
            free(pair);
            continue;
        }
        tune(c);
        tune(u);
        pair[0] = (side_t){.fd = c, .peer = &pair[1]};
        pair[1] = (side_t){.fd = u, .peer = &pair[0]};
        watch(&pair[0], EPOLL_CTL_ADD, EPOLLIN);
        watch(&pair[1], EPOLL_CTL_ADD, EPOLLIN);
    }
}

int main(int argc, char **argv)
{
    int lport = argc == 3 ? port_arg(argv[1]) : -1, uport = argc == 3 ? port_arg(argv[2]) : -1;
    if (lport < 0 || uport < 0) {
        fprintf(stderr, "usage: relay LISTEN_PORT UPSTREAM_PORT (ports 1-65535, on 127.0.0.1)\n");
        return 2;
    }
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lport)};
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons((uint16_t)uport)};
    la.sin_addr.s_addr = ua.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an EPIPE for that pair, not the end of the relay */
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || g_ep < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "relay: cannot listen on 127.0.0.1:%d: %s\n", lport, strerror(errno));
        return 2;
    }
    static side_t listener; /* data.ptr of the listening socket */
    listener.fd = lfd;
    watch(&listener, EPOLL_CTL_ADD, EPOLLIN);
    static char buf[BUF_SIZE];
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(g_ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            side_t *s = evs[i].data.ptr;
            if (s->fd < 0) continue;
            if (s == &listener) {
                on_accept(lfd, &ua);
                continue;
            }
            if (evs[i].events & EPOLLERR) {
                close_pair(s);
                continue;
            }
            if (evs[i].events & EPOLLOUT) on_writable(s);
            if (s->fd >= 0 && !s->pend && (evs[i].events & (EPOLLIN | EPOLLHUP))) on_readable(s, buf);
        }
        while (g_nclosed)
            free(g_closed[--g_nclosed]);
    }
}

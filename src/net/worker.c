/* Worker threads: one libuv loop each. Other threads talk to a worker only through wd_worker_call,
 * so no state of a worker is ever touched by two threads. */
#include <stdlib.h>

#include "net/net.h"

#define SWEEP_MS 100

struct wd_call {
    wd_worker_fn fn;
    void *arg;
    struct wd_call *next;
};

static void on_wakeup(uv_async_t *a)
{
    wd_worker_t *w = a->data;
    uv_mutex_lock(&w->qlock);
    struct wd_call *q = w->queue;
    w->queue = NULL;
    uv_mutex_unlock(&w->qlock);
    /* the queue is LIFO; reverse so calls run in the order they were made */
    struct wd_call *rev = NULL;
    while (q) {
        struct wd_call *n = q->next;
        q->next = rev;
        rev = q;
        q = n;
    }
    while (rev) {
        struct wd_call *n = rev->next;
        rev->fn(w, rev->arg);
        free(rev);
        rev = n;
    }
}

static void on_sweep(uv_timer_t *t)
{
    wd_worker_t *w = t->data;
    uint64_t now = wd_now_ns();
    wd_server_sweep(w, now);
    wd_upstream_sweep(w, now);
}

int wd_worker_init(wd_worker_t *w, int id, wd_config_t *cfg, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    int rc = uv_loop_init(&w->loop);
    if (rc) return wd_errf(err, errlen, WD_EIO, "uv_loop_init: %s", uv_strerror(rc));
    uv_mutex_init(&w->qlock);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->sweep);
    w->sweep.data = w;
    uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&w->sweep);
    w->cfg = wd_config_ref(cfg);
    if (wd_random(&w->rng, sizeof w->rng) || w->rng == 0) w->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)id;
    return WD_OK;
}

uint64_t wd_worker_rand(wd_worker_t *w)
{
    /* xorshift64*: request ids and sampling only, never secrets */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* busy_poll_us: a worker that wakes up keeps polling without sleeping until that long has passed
 * without a socket read. On a virtual machine a sleeping CPU takes tens of microseconds to wake for
 * the next packet (measured here: a 58 µs median round trip between threads on two CPUs that sleep,
 * 12 µs when the reader spins), and a request through the proxy pays that at least twice (the
 * client's request, the upstream's answer). Only a wake-up that read from a socket starts polling
 * (timers do not). The price is CPU time spent polling while requests keep coming; an idle worker
 * still sleeps. Read at every wake-up, so a reload changes it. */
static void thread_main(void *arg)
{
    wd_worker_t *w = arg;
    for (uint64_t seen = w->reads; uv_run(&w->loop, UV_RUN_ONCE); seen = w->reads) {
        uint64_t spin = (uint64_t)w->cfg->busy_poll_us * 1000;
        if (!spin || w->reads == seen) continue; /* a timer or a cross-thread call: sleep again */
        seen = w->reads;
        uint64_t until = wd_now_ns() + spin;
        while (uv_run(&w->loop, UV_RUN_NOWAIT)) {
            uint64_t now = wd_now_ns();
            if (w->reads != seen) {
                seen = w->reads;
                until = now + spin;
            } else if (now >= until) {
                break;
            }
        }
    }
}

int wd_worker_start(wd_worker_t *w)
{
    return uv_thread_create(&w->thread, thread_main, w) ? WD_EIO : WD_OK;
}

int wd_worker_call(wd_worker_t *w, wd_worker_fn fn, void *arg)
{
    struct wd_call *c = malloc(sizeof *c);
    if (!c) return WD_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    uv_mutex_lock(&w->qlock);
    c->next = w->queue;
    w->queue = c;
    uv_mutex_unlock(&w->qlock);
    uv_async_send(&w->wakeup);
    return WD_OK;
}

void wd_worker_set_config(wd_worker_t *w, wd_config_t *cfg)
{
    wd_config_t *old = w->cfg;
    w->cfg = wd_config_ref(cfg);
    wd_upstream_prune(w); /* before `old` can go: pool keys hold its TLS contexts' addresses */
    wd_config_unref(old);
}

size_t wd_worker_conn_count(const wd_worker_t *w) { return __atomic_load_n(&w->nconns, __ATOMIC_RELAXED); }

static void close_walk(uv_handle_t *h, void *arg)
{
    WD_UNUSED(arg);
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void wd_worker_stop(wd_worker_t *w)
{
    /* listeners, connections and upstream requests free themselves from their close callbacks */
    wd_worker_drain(w);
    while (w->conns) wd_conn_abort(w->conns);
    while (w->upreqs) wd_upreq_cancel(w->upreqs);
    wd_upstream_pools_free(w);
    uv_walk(&w->loop, close_walk, NULL);
}

void wd_worker_join(wd_worker_t *w) { uv_thread_join(&w->thread); }

void wd_worker_free(wd_worker_t *w)
{
    /* let close callbacks run, then the loop can be closed */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->qlock);
    while (w->queue) {
        struct wd_call *n = w->queue->next;
        free(w->queue);
        w->queue = n;
    }
    wd_config_unref(w->cfg);
    w->cfg = NULL;
}

/* Redis limiter backend against a private redis-server on a free loopback port: the limiter's
 * spec scenarios (burst, all-or-nothing, token reservation, reconciliation, concurrency, budgets),
 * two replicas sharing one limit exactly, outage (kill, hang) and recovery, cancellation, key TTLs
 * and argument checking. Skipped only when redis-server is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "limit/limit_redis.h"

/* ---- the private redis-server ------------------------------------------------------------------ */

static pid_t srv_pid = -1;
static int srv_port;
static char srv_url[64];
static bool have_redis;

static int64_t mono_ms(void) { return (int64_t)(wd_now_ns() / 1000000); }

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *sync_conn(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static bool server_ready(void)
{
    redisContext *c = sync_conn();
    if (!c)
        return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static void server_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", srv_port);
    srv_pid = fork();
    if (srv_pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    assert_true(srv_pid > 0);
    for (int i = 0; i < 500 && !server_ready(); i++)
        usleep(10000);
    assert_true(server_ready());
}

static void server_kill(void)
{
    if (srv_pid > 0) {
        kill(srv_pid, SIGKILL);
        waitpid(srv_pid, NULL, 0);
        srv_pid = -1;
    }
}

static void *sync_cmd(const char *fmt, ...)
{
    redisContext *c = sync_conn();
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(rep);
    return rep;
}

static int group_setup(void **state)
{
    (void)state;
    have_redis = system("command -v redis-server >/dev/null 2>&1") == 0;
    if (!have_redis)
        return 0;
    signal(SIGPIPE, SIG_IGN);
    srv_port = free_port();
    snprintf(srv_url, sizeof srv_url, "redis://127.0.0.1:%d", srv_port);
    server_start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_kill();
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    if (have_redis) {
        if (srv_pid < 0)
            server_start();
        freeReplyObject(sync_cmd("FLUSHALL"));
    }
    return 0;
}

#define NEED_REDIS()                                                                                     \
    do {                                                                                                 \
        if (!have_redis) {                                                                               \
            print_message("redis-server is not installed: skipping\n");                                  \
            skip();                                                                                      \
        }                                                                                                \
    } while (0)

/* ---- loops and results ------------------------------------------------------------------------- */

typedef struct {
    int calls;
    wd_limit_decision_t d;
    int64_t at_ms;
} res_t;

static bool in_call; /* set around admit(): a callback seen while set is re-entrant */
static bool reentered;

static void on_res(void *ud, const wd_limit_decision_t *d)
{
    res_t *res = ud;
    if (in_call)
        reentered = true;
    res->calls++;
    res->d = *d;
    res->at_ms = mono_ms();
}

static void pump(uv_loop_t *loop, int ms)
{
    int64_t end = mono_ms() + ms;
    while (mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(500);
    }
}

static bool pump_until(uv_loop_t *loop, const int *count, int want, int ms)
{
    int64_t end = mono_ms() + ms;
    while (*count < want && mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(200);
    }
    return *count >= want;
}

typedef struct {
    uv_loop_t loop;
    wd_limit_redis_t *r;
    int done;
} ctx_t;

/* for the replica threads: no shared globals */
static void on_count(void *ud, const wd_limit_decision_t *d)
{
    res_t *res = ud;
    res->calls++;
    res->d = *d;
}

static void ctx_open(ctx_t *c, uint32_t timeout_ms)
{
    char err[256] = "";
    assert_int_equal(uv_loop_init(&c->loop), 0);
    c->r = wd_limit_redis_new(&c->loop, srv_url, timeout_ms, "wd", err, sizeof err);
    assert_non_null(c->r);
}

static void ctx_close(ctx_t *c)
{
    wd_limit_redis_free(c->r);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0); /* every handle closed */
}

static wd_limit_scope_t scope(const char *key, uint32_t rpm, uint32_t tpm, uint32_t conc, uint64_t day, uint64_t month)
{
    wd_limit_scope_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.key, sizeof s.key, "%s", key);
    s.lim = (wd_limits_t){rpm, tpm, conc, day, month};
    return s;
}

/* One admission, waited for. */
static wd_limit_decision_t admit1(ctx_t *c, const wd_limit_scope_t *s, size_t n, int64_t tokens)
{
    res_t res = {0};
    in_call = true;
    assert_int_equal(wd_limit_redis_admit(c->r, s, n, tokens, on_res, &res), 0);
    in_call = false;
    assert_int_equal(res.calls, 0);
    assert_true(pump_until(&c->loop, &res.calls, 1, 3000));
    pump(&c->loop, 2);
    assert_int_equal(res.calls, 1);
    return res.d;
}

/* 2024-02-28T12:00:00Z, a leap year */
#define T_FEB28_NOON (INT64_C(1709121600) * 1000000000)

/* ---- scenarios --------------------------------------------------------------------------------- */

static void test_burst_rpm60(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:burst", 60, 0, 0, 0, 0);
    res_t res[100];
    memset(res, 0, sizeof res);
    int total = 0;
    for (int i = 0; i < 100; i++)
        assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res[i]), 0);
    for (int spin = 0; spin < 5000 && total < 100; spin++) {
        uv_run(&c.loop, UV_RUN_NOWAIT);
        usleep(1000);
        total = 0;
        for (int i = 0; i < 100; i++)
            total += res[i].calls;
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(res[i].calls, 1);
        if (res[i].d.outcome == WD_LIMIT_OK) {
            ok++;
            assert_int_equal(res[i].d.retry_after_ms, 0);
        } else {
            assert_int_equal(res[i].d.outcome, WD_LIMIT_REQUESTS);
            assert_int_equal(res[i].d.scope, 0);
            assert_true(res[i].d.retry_after_ms > 0 && res[i].d.retry_after_ms <= 1000);
            refused++;
        }
        assert_int_equal(res[i].d.limit_requests, 60);
        assert_int_equal(res[i].d.limit_tokens, -1);
    }
    assert_int_equal(ok, 60);
    assert_int_equal(refused, 40);
    assert_int_equal(res[0].d.remaining_requests, 59);
    assert_int_equal(res[59].d.remaining_requests, 0);
    assert_int_equal(wd_limit_redis_stats(c.r)->decisions, 100);
    ctx_close(&c);
}

/* Exact arithmetic at a pinned instant: remaining, reset and retry follow limit.h to the ms. */
static void test_gcra_exact_pinned(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    wd_limit_scope_t s = scope("key:exact", 60, 0, 0, 0, 0);
    wd_limit_decision_t d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    assert_int_equal(d.remaining_requests, 59);
    assert_int_equal(d.reset_requests_ms, 1000); /* one cell of 1 s to refill */
    for (int i = 0; i < 59; i++)
        assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_REQUESTS);
    assert_int_equal(d.retry_after_ms, 1000);
    assert_int_equal(d.remaining_requests, 0);
    assert_int_equal(d.reset_requests_ms, 60000);
    /* 1.5 s later exactly one more cell is free, and the next is 0.5 s away */
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON + INT64_C(1500000000));
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_REQUESTS);
    assert_int_equal(d.retry_after_ms, 500);
    /* a clock that goes backwards grants nothing */
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON - INT64_C(30000000000));
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_REQUESTS);
    /* rpm 7: T = floor(60e9 / 7) ns, so 7 pass at once and the 8th waits T */
    wd_limit_scope_t s7 = scope("key:seven", 7, 0, 0, 0, 0);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    for (int i = 0; i < 7; i++)
        assert_int_equal(admit1(&c, &s7, 1, 0).outcome, WD_LIMIT_OK);
    d = admit1(&c, &s7, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_REQUESTS);
    assert_int_equal(d.retry_after_ms, (8571428571 + 999999) / 1000000);
    ctx_close(&c);
}

static void test_all_or_nothing(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    wd_limit_scope_t two[2] = {scope("user:a", 10, 0, 0, 0, 0), scope("ip:1.2.3.4", 1, 0, 0, 0, 0)};
    wd_limit_decision_t d = admit1(&c, two, 2, 0);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    assert_int_equal(d.limit_requests, 1); /* the most constrained scope's view */
    assert_int_equal(d.remaining_requests, 0);
    d = admit1(&c, two, 2, 0);
    assert_int_equal(d.outcome, WD_LIMIT_REQUESTS);
    assert_int_equal(d.scope, 1);
    /* the refused decision charged user:a nothing: 9 of its 10 cells are left */
    for (int i = 0; i < 9; i++)
        assert_int_equal(admit1(&c, two, 1, 0).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, two, 1, 0).outcome, WD_LIMIT_REQUESTS);

    /* same for tokens, concurrency and budgets: scope 1's budget refuses, scope 0 keeps everything */
    wd_limit_scope_t mix[2] = {scope("key:m", 0, 1000, 1, 0, 0), scope("role:m", 0, 0, 0, 100, 0)};
    d = admit1(&c, mix, 2, 200);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.scope, 1);
    d = admit1(&c, mix, 1, 1000);
    assert_int_equal(d.outcome, WD_LIMIT_OK); /* all 1000 tokens and the one slot were still free */
    assert_int_equal(d.remaining_tokens, 0);
    ctx_close(&c);
}

static void test_token_reservation(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    wd_limit_scope_t s = scope("key:tok", 0, 1000, 0, 0, 0);
    wd_limit_decision_t d = admit1(&c, &s, 1, 600);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    assert_int_equal(d.limit_tokens, 1000);
    assert_int_equal(d.remaining_tokens, 400);
    assert_int_equal(d.limit_requests, -1);
    d = admit1(&c, &s, 1, 500);
    assert_int_equal(d.outcome, WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 6000); /* 100 tokens at 60 ms each */
    assert_int_equal(d.remaining_tokens, 400);
    assert_int_equal(admit1(&c, &s, 1, 400).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, &s, 1, 1).outcome, WD_LIMIT_TOKENS);
    /* more than the whole limit can never pass, even on a fresh scope: retry "never" (-1) */
    wd_limit_scope_t f = scope("key:fresh", 0, 1000, 0, 0, 0);
    d = admit1(&c, &f, 1, 1001);
    assert_int_equal(d.outcome, WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, -1);
    assert_int_equal(d.remaining_tokens, 1000);
    assert_int_equal(admit1(&c, &f, 1, 1000).outcome, WD_LIMIT_OK);
    ctx_close(&c);
}

static void test_reconciliation(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    /* refund: reserved 600, used 100 -> 900 left */
    wd_limit_scope_t s = scope("key:rec", 0, 1000, 0, 5000, 0); /* budget roomy: tpm decides */
    assert_int_equal(admit1(&c, &s, 1, 600).outcome, WD_LIMIT_OK);
    wd_limit_redis_finish(c.r, &s, 1, 600, 100);
    assert_int_equal(admit1(&c, &s, 1, 901).outcome, WD_LIMIT_TOKENS);
    assert_int_equal(admit1(&c, &s, 1, 900).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, &s, 1, 1).outcome, WD_LIMIT_TOKENS);

    /* charge: reserved 100, used 700 -> 300 left; the overrun is charged to the budget too */
    wd_limit_scope_t o = scope("key:over", 0, 1000, 0, 1000, 0);
    assert_int_equal(admit1(&c, &o, 1, 100).outcome, WD_LIMIT_OK);
    wd_limit_redis_finish(c.r, &o, 1, 100, 700);
    /* 301 fails tpm (60 ms away) and the day budget (12 h away): the longer refusal is reported */
    assert_int_equal(admit1(&c, &o, 1, 301).outcome, WD_LIMIT_BUDGET);
    assert_int_equal(admit1(&c, &o, 1, 300).outcome, WD_LIMIT_OK);
    /* the day budget saw 100 + 600 + 300 = 1000: tpm refills a minute later, the budget does not */
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON + INT64_C(60000000000));
    wd_limit_decision_t d = admit1(&c, &o, 1, 1);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);

    /* an overrun beyond the whole window puts the scope in debt: even 0 tokens wait */
    wd_limit_scope_t debt = scope("key:debt", 0, 1000, 0, 0, 0);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    assert_int_equal(admit1(&c, &debt, 1, 1000).outcome, WD_LIMIT_OK);
    wd_limit_redis_finish(c.r, &debt, 1, 1000, 3000);
    d = admit1(&c, &debt, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 120000);

    /* a refund never banks capacity beyond a full bucket */
    wd_limit_scope_t bank = scope("key:bank", 0, 1000, 0, 0, 0);
    assert_int_equal(admit1(&c, &bank, 1, 10).outcome, WD_LIMIT_OK);
    wd_limit_redis_finish(c.r, &bank, 1, 10, 0);
    assert_int_equal(admit1(&c, &bank, 1, 1001).outcome, WD_LIMIT_TOKENS);
    assert_int_equal(admit1(&c, &bank, 1, 1000).outcome, WD_LIMIT_OK);

    /* finish for an admission that never succeeded charges plain usage, refunds nothing */
    wd_limit_scope_t fo = scope("key:failopen", 0, 1000, 0, 0, 0);
    wd_limit_redis_finish(c.r, &fo, 1, 500, 200);
    assert_int_equal(admit1(&c, &fo, 1, 801).outcome, WD_LIMIT_TOKENS);
    assert_int_equal(admit1(&c, &fo, 1, 800).outcome, WD_LIMIT_OK);
    ctx_close(&c);
}

static void test_concurrency(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:conc", 0, 0, 2, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    wd_limit_decision_t d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_CONCURRENCY);
    assert_true(d.retry_after_ms > 0);
    /* a finish that matches no admission of ours (other reservation) releases nothing */
    wd_limit_redis_finish(c.r, &s, 1, 77, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_CONCURRENCY);
    wd_limit_redis_finish(c.r, &s, 1, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_CONCURRENCY);
    wd_limit_redis_finish(c.r, &s, 1, 0, 0);
    wd_limit_redis_finish(c.r, &s, 1, 0, 0);
    wd_limit_scope_t barrier = scope("key:barrier", 1, 0, 0, 0, 0);
    admit1(&c, &barrier, 1, 0); /* finish is fire and forget: same connection, so this orders it */
    redisReply *rep = sync_cmd("ZCARD {wd}:conc:key:conc");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    ctx_close(&c);
}

/* Usage of a request let through unadmitted (fail open): charged as plain usage, and never taken
 * from an admitted request with the same keys and reservation (finish() would release that one's
 * slot and refund its reservation). */
static void test_charge_unadmitted(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("ip:open", 0, 600, 1, 1000, 0); /* T = 100 ms a token */
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);  /* holds the only slot, reserves 0 */
    wd_limit_redis_charge(c.r, &s, 1, 300);
    wd_limit_redis_charge(c.r, &s, 1, 0);    /* nothing to send */
    wd_limit_redis_charge(c.r, &s, 1, -5);   /* bad argument: ignored */
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_CONCURRENCY); /* the slot is still held */
    wd_limit_redis_finish(c.r, &s, 1, 0, 0);
    wd_limit_decision_t d = admit1(&c, &s, 1, 300); /* 300 of 600 were charged */
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    assert_true(d.remaining_tokens <= 1); /* Redis' clock moves between calls: at most a token refilled */
    wd_limit_redis_finish(c.r, &s, 1, 300, 300);
    wd_limit_scope_t barrier = scope("key:barrier", 1, 0, 0, 0, 0);
    admit1(&c, &barrier, 1, 0); /* finish is fire and forget: same connection, so this orders it */
    redisReply *rep = sync_cmd("HGET {wd}:day:ip:open u");
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(rep->str, "600");
    freeReplyObject(rep);
    rep = sync_cmd("ZCARD {wd}:conc:ip:open");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    ctx_close(&c);
}

/* A replica that dies holding a slot loses it after one lease; a live one keeps renewing it. */
static void test_concurrency_lease(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t a, b;
    ctx_open(&a, 2000);
    ctx_open(&b, 2000);
    assert_int_equal(wd_limit_redis_set_lease_ms(a.r, 299), WD_EINVAL);
    assert_int_equal(wd_limit_redis_set_lease_ms(a.r, 300), 0);
    wd_limit_scope_t s = scope("key:lease", 0, 0, 1, 0, 0);
    assert_int_equal(admit1(&a, &s, 1, 0).outcome, WD_LIMIT_OK);
    /* a stays alive for 3 leases: its renewals keep b out */
    int64_t end = mono_ms() + 900;
    while (mono_ms() < end) {
        uv_run(&a.loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(admit1(&b, &s, 1, 0).outcome, WD_LIMIT_CONCURRENCY);
    /* a dies without finishing (no release is sent): within one lease b gets the slot */
    ctx_close(&a);
    assert_int_equal(admit1(&b, &s, 1, 0).outcome, WD_LIMIT_CONCURRENCY);
    usleep(400000);
    assert_int_equal(admit1(&b, &s, 1, 0).outcome, WD_LIMIT_OK);
    ctx_close(&b);
}

static void test_budgets(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    wd_limit_scope_t day = scope("key:day", 0, 0, 0, 1000, 0);
    assert_int_equal(admit1(&c, &day, 1, 700).outcome, WD_LIMIT_OK);
    wd_limit_decision_t d = admit1(&c, &day, 1, 400);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 12 * 3600 * 1000); /* to the next UTC midnight */
    assert_int_equal(admit1(&c, &day, 1, 300).outcome, WD_LIMIT_OK);
    assert_int_equal(admit1(&c, &day, 1, 1).outcome, WD_LIMIT_BUDGET);
    assert_int_equal(admit1(&c, &day, 1, 0).outcome, WD_LIMIT_OK); /* nothing reserved, nothing exceeded */
    /* next UTC day: a new window */
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON + INT64_C(12) * 3600 * 1000000000);
    assert_int_equal(admit1(&c, &day, 1, 1000).outcome, WD_LIMIT_OK);

    /* month: 2024 is a leap year, so from Feb 28 noon the window ends 36 h later */
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    wd_limit_scope_t mon = scope("key:mon", 0, 0, 0, 0, 5000);
    assert_int_equal(admit1(&c, &mon, 1, 5000).outcome, WD_LIMIT_OK);
    d = admit1(&c, &mon, 1, 1);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 36 * 3600 * 1000);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON + INT64_C(24) * 3600 * 1000000000); /* Feb 29 */
    assert_int_equal(admit1(&c, &mon, 1, 1).outcome, WD_LIMIT_BUDGET);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON + INT64_C(36) * 3600 * 1000000000); /* Mar 1 00:00 */
    assert_int_equal(admit1(&c, &mon, 1, 5000).outcome, WD_LIMIT_OK);
    wd_limit_redis_pin_clock(c.r, T_FEB28_NOON);
    /* a reservation larger than the budget can never pass */
    wd_limit_scope_t big = scope("key:big", 0, 0, 0, 100, 0);
    d = admit1(&c, &big, 1, 101);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, -1);
    /* several refusals: the one that lasts longest is reported (the budget, not the 1 s rpm wait) */
    wd_limit_scope_t two[2] = {scope("key:r1", 1, 0, 0, 0, 0), scope("key:b1", 0, 0, 0, 10, 0)};
    assert_int_equal(admit1(&c, two, 2, 10).outcome, WD_LIMIT_OK);
    d = admit1(&c, two, 2, 10);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.scope, 1);
    assert_int_equal(d.retry_after_ms, 12 * 3600 * 1000);
    /* December rolls into January of the next year */
    int64_t dec31 = INT64_C(1704063600) * 1000000000; /* 2023-12-31T23:00:00Z */
    wd_limit_scope_t ye = scope("key:ye", 0, 0, 0, 0, 10);
    wd_limit_redis_pin_clock(c.r, dec31);
    assert_int_equal(admit1(&c, &ye, 1, 10).outcome, WD_LIMIT_OK);
    d = admit1(&c, &ye, 1, 1);
    assert_int_equal(d.outcome, WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 3600 * 1000);
    ctx_close(&c);
}

/* ---- two replicas ------------------------------------------------------------------------------ */

typedef struct {
    ctx_t c;
    res_t res[100];
    int ok, failed;
    pthread_barrier_t *round; /* shared by the two replicas */
} replica_t;

static void *replica_run(void *arg)
{
    replica_t *rp = arg;
    wd_limit_scope_t s = scope("key:shared", 50, 0, 0, 0, 0);
    /* batches of 5, sent (the loop run) and then waited for by the other replica, so the two replicas'
     * scripts interleave however the threads are scheduled (a replica running ahead alone could take
     * all 50 on a loaded machine); a failed call is counted, not returned on, so both reach every round */
    for (int i = 0; i < 100; i += 5) {
        for (int j = i; j < i + 5; j++)
            rp->failed += wd_limit_redis_admit(rp->c.r, &s, 1, 0, on_count, &rp->res[j]) != 0;
        uv_run(&rp->c.loop, UV_RUN_NOWAIT);
        usleep(300);
        pthread_barrier_wait(rp->round);
    }
    int64_t end = mono_ms() + 5000;
    for (;;) {
        int done = 0;
        for (int i = 0; i < 100; i++)
            done += rp->res[i].calls;
        if (done == 100 || mono_ms() > end)
            break;
        uv_run(&rp->c.loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    for (int i = 0; i < 100; i++)
        rp->ok += rp->res[i].calls == 1 && rp->res[i].d.outcome == WD_LIMIT_OK;
    return NULL;
}

static void test_two_replicas_exact(void **state)
{
    (void)state;
    NEED_REDIS();
    replica_t *rp = calloc(2, sizeof *rp);
    assert_non_null(rp);
    ctx_open(&rp[0].c, 3000);
    ctx_open(&rp[1].c, 3000);
    pthread_barrier_t round;
    assert_int_equal(pthread_barrier_init(&round, NULL, 2), 0);
    rp[0].round = rp[1].round = &round;
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, replica_run, &rp[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&round);
    assert_int_equal(rp[0].failed + rp[1].failed, 0);
    int answered = 0;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 100; i++)
            answered += rp[k].res[i].calls;
    assert_int_equal(answered, 200);
    assert_int_equal(rp[0].ok + rp[1].ok, 50);
    /* both really took part (a replica admitting all 50 alone would prove nothing) */
    assert_true(rp[0].ok > 0 && rp[1].ok > 0);
    ctx_close(&rp[0].c);
    ctx_close(&rp[1].c);
    free(rp);
}

/* ---- outages ------------------------------------------------------------------------------------ */

static void test_kill_and_restart(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 300);
    wd_limit_scope_t s = scope("key:outage", 1000, 0, 0, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);

    server_kill();
    for (int i = 0; i < 5; i++) {
        res_t res = {0};
        int64_t t0 = mono_ms();
        in_call = true;
        assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res), 0);
        in_call = false;
        assert_int_equal(res.calls, 0);
        assert_true(pump_until(&c.loop, &res.calls, 1, 2000));
        assert_int_equal(res.d.outcome, WD_LIMIT_UNAVAILABLE);
        assert_int_equal(res.d.scope, -1);
        assert_int_equal(res.d.retry_after_ms, 1000);
        assert_int_equal(res.d.limit_requests, -1);
        /* within the timeout, plus scheduling slack: a sanitized build sharing 2 cores with other
         * tests was once seen past 150 ms of slack; a hang would be the 2 s of pump_until */
        if (res.at_ms - t0 > 300 + 400) fail_msg("answered after %lld ms", (long long)(res.at_ms - t0));
        pump(&c.loop, 20);
        assert_int_equal(res.calls, 1);
    }
    assert_false(reentered);
    assert_true(wd_limit_redis_stats(c.r)->errors > 0);
    assert_true(wd_limit_redis_last_error(c.r)[0] != '\0');

    server_start(); /* same port, empty data set, empty script cache */
    bool back = false;
    int64_t end = mono_ms() + 8000;
    while (!back && mono_ms() < end) {
        res_t res = {0};
        assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res), 0);
        assert_true(pump_until(&c.loop, &res.calls, 1, 2000));
        back = res.d.outcome == WD_LIMIT_OK;
        if (!back)
            pump(&c.loop, 50);
    }
    assert_true(back);
    assert_true(wd_limit_redis_stats(c.r)->reconnects >= 1);
    ctx_close(&c);
}

/* A server that stops answering (SIGSTOP) is a timeout, not a hang; its late "admitted" is given back. */
static void test_hung_server_timeout(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 200);
    wd_limit_scope_t s = scope("key:hung", 0, 0, 1, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    wd_limit_redis_finish(c.r, &s, 1, 0, 0);
    pump(&c.loop, 50);

    kill(srv_pid, SIGSTOP);
    res_t res = {0};
    int64_t t0 = mono_ms();
    assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res), 0);
    assert_true(pump_until(&c.loop, &res.calls, 1, 2000));
    int64_t took = res.at_ms - t0;
    assert_int_equal(res.d.outcome, WD_LIMIT_UNAVAILABLE);
    if (took < 190 || took > 200 + 400) fail_msg("timed out after %lld ms, not 200", (long long)took); /* slack: above */
    assert_int_equal(wd_limit_redis_stats(c.r)->timeouts, 1);
    kill(srv_pid, SIGCONT);

    /* the script still ran and took the only slot; the instance releases it on the late reply */
    pump(&c.loop, 200);
    assert_int_equal(res.calls, 1);
    wd_limit_decision_t d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    ctx_close(&c);
}

/* Readiness: unhealthy (with the reason, never the password) until the set-up went through,
 * healthy while Redis answers, unhealthy again once the connection is lost. */
static void test_healthy(void **state)
{
    (void)state;
    NEED_REDIS();
    char url[96], err[256], why[200];
    snprintf(url, sizeof url, "redis://:pw-Secret-77a1@127.0.0.1:%d", free_port()); /* nothing listens */
    uv_loop_t loop;
    uv_loop_init(&loop);
    wd_limit_redis_t *r = wd_limit_redis_new(&loop, url, 500, "wd", err, sizeof err);
    assert_non_null(r);
    assert_false(wd_limit_redis_healthy(r, why, sizeof why));
    assert_string_equal(why, "redis: not connected yet");
    for (int i = 0; i < 150; i++) { /* refused at once, or timed out after the 1 s connect deadline */
        pump(&loop, 20);
        wd_limit_redis_healthy(r, why, sizeof why);
        if (strcmp(why, "redis: not connected yet") != 0) break;
    }
    assert_false(wd_limit_redis_healthy(r, why, sizeof why));
    if (!strstr(why, "redis connect")) fail_msg("why: %s", why);
    assert_null(strstr(why, "pw-Secret"));
    wd_limit_redis_free(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:h", 10, 0, 0, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    assert_true(wd_limit_redis_healthy(c.r, why, sizeof why));
    assert_string_equal(why, "");
    server_kill();
    for (int i = 0; i < 50 && wd_limit_redis_healthy(c.r, NULL, 0); i++)
        pump(&c.loop, 20);
    assert_false(wd_limit_redis_healthy(c.r, why, sizeof why));
    assert_non_null(strstr(why, "redis"));
    ctx_close(&c);
    server_start();
}

static void test_unreachable_never_reentrant(void **state)
{
    (void)state;
    NEED_REDIS();
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port()); /* nothing listens */
    uv_loop_t loop;
    uv_loop_init(&loop);
    wd_limit_redis_t *r = wd_limit_redis_new(&loop, url, 500, "wd", err, sizeof err);
    assert_non_null(r);
    wd_limit_scope_t s = scope("key:x", 1, 0, 0, 0, 0);
    res_t res[3];
    memset(res, 0, sizeof res);
    reentered = false;
    for (int i = 0; i < 3; i++) {
        in_call = true;
        assert_int_equal(wd_limit_redis_admit(r, &s, 1, 0, on_res, &res[i]), 0);
        in_call = false;
        pump(&loop, i * 200); /* before the connect failed, and after */
    }
    pump(&loop, 600);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].d.outcome, WD_LIMIT_UNAVAILABLE);
    }
    assert_false(reentered);
    wd_limit_redis_free(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- cancellation, teardown, scripts, keys ------------------------------------------------------ */

static void test_cancel_releases(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:cancel", 0, 1000, 1, 0, 0);
    res_t res = {0};
    assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 400, on_res, &res), 0);
    wd_limit_redis_cancel(c.r, &res);
    wd_limit_redis_finish(c.r, &s, 1, 400, 0); /* what the caller does; harmless */
    pump(&c.loop, 200);
    assert_int_equal(res.calls, 0);
    /* the slot and the 400 tokens came back */
    wd_limit_decision_t d = admit1(&c, &s, 1, 1000);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    ctx_close(&c);
}

static int freed_in_cb;
static wd_limit_redis_t *free_target;

static void on_free_in_cb(void *ud, const wd_limit_decision_t *d)
{
    on_res(ud, d);
    if (free_target) {
        wd_limit_redis_free(free_target);
        free_target = NULL;
        freed_in_cb++;
    }
}

static void test_free_answers_pending(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:free", 100, 0, 0, 0, 0);
    res_t res[3];
    memset(res, 0, sizeof res);
    for (int i = 0; i < 3; i++)
        assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res[i]), 0);
    ctx_close(&c); /* nothing ran yet: everyone is answered, once */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].d.outcome, WD_LIMIT_UNAVAILABLE);
    }
    /* free from inside a callback is deferred, and the other pending caller is still answered */
    ctx_open(&c, 2000);
    memset(res, 0, sizeof res);
    free_target = c.r;
    freed_in_cb = 0;
    assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_free_in_cb, &res[0]), 0);
    assert_int_equal(wd_limit_redis_admit(c.r, &s, 1, 0, on_res, &res[1]), 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(freed_in_cb, 1);
    assert_int_equal(res[0].calls, 1);
    assert_int_equal(res[0].d.outcome, WD_LIMIT_OK);
    assert_int_equal(res[1].calls, 1);
    assert_int_equal(uv_loop_close(&c.loop), 0);
}

static void test_noscript_fallback(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s = scope("key:ns", 5, 0, 0, 0, 0);
    assert_int_equal(admit1(&c, &s, 1, 0).outcome, WD_LIMIT_OK);
    freeReplyObject(sync_cmd("SCRIPT FLUSH"));
    wd_limit_decision_t d = admit1(&c, &s, 1, 0);
    assert_int_equal(d.outcome, WD_LIMIT_OK);
    assert_int_equal(d.remaining_requests, 3);
    wd_limit_redis_finish(c.r, &s, 1, 0, 0); /* no slot, no tokens: nothing to send */
    freeReplyObject(sync_cmd("SCRIPT FLUSH"));
    wd_limit_scope_t t = scope("key:ns2", 0, 100, 0, 0, 0);
    assert_int_equal(admit1(&c, &t, 1, 100).outcome, WD_LIMIT_OK);
    freeReplyObject(sync_cmd("SCRIPT FLUSH"));
    wd_limit_redis_finish(c.r, &t, 1, 100, 0); /* finish goes through EVAL too */
    assert_int_equal(admit1(&c, &t, 1, 100).outcome, WD_LIMIT_OK);
    ctx_close(&c);
}

static void test_keys_have_ttls_and_one_tag(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 2000);
    wd_limit_scope_t s[2] = {scope("key:ttl", 60, 1000, 2, 5000, 50000), scope("user:ttl", 10, 0, 1, 0, 0)};
    assert_int_equal(admit1(&c, s, 2, 100).outcome, WD_LIMIT_OK);
    struct {
        const char *key;
        long long max_ms;
    } want[] = {{"{wd}:rpm:key:ttl", 60000}, {"{wd}:tpm:key:ttl", 60000}, {"{wd}:conc:key:ttl", WD_LIMIT_REDIS_LEASE_MS},
                {"{wd}:day:key:ttl", 86400000}, {"{wd}:mon:key:ttl", 31LL * 86400000}, {"{wd}:rpm:user:ttl", 60000},
                {"{wd}:conc:user:ttl", WD_LIMIT_REDIS_LEASE_MS}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        redisReply *rep = sync_cmd("PTTL %s", want[i].key);
        assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
        if (rep->integer <= 0 || rep->integer > want[i].max_ms)
            fail_msg("%s: pttl %lld, want 1..%lld", want[i].key, rep->integer, want[i].max_ms);
        freeReplyObject(rep);
    }
    /* every key there is carries the one hash tag and an expiry */
    redisReply *keys = sync_cmd("KEYS *");
    assert_int_equal(keys->elements, 7); /* user:ttl has no tpm or budgets: no keys for them */
    for (size_t i = 0; i < keys->elements; i++) {
        assert_memory_equal(keys->element[i]->str, "{wd}:", 5);
        redisReply *rep = sync_cmd("PTTL %s", keys->element[i]->str);
        assert_true(rep->integer > 0);
        freeReplyObject(rep);
    }
    freeReplyObject(keys);
    /* finishing removes the slots; what is left still expires */
    wd_limit_redis_finish(c.r, s, 2, 100, 100);
    admit1(&c, &s[1], 1, 0);
    redisReply *rep = sync_cmd("EXISTS {wd}:conc:key:ttl");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    ctx_close(&c);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *bad_urls[] = {"http://x", "redis://", "redis://h:0", "redis://h:65536", "redis://h:12a",
                              "redis://[::1", "redis://h/x", "unix://", "unix://rel/path"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        err[0] = '\0';
        assert_null(wd_limit_redis_new(&loop, bad_urls[i], 100, "wd", err, sizeof err));
        assert_true(err[0] != '\0');
    }
    assert_null(wd_limit_redis_new(&loop, "redis://127.0.0.1", 100, "", err, sizeof err));
    assert_null(wd_limit_redis_new(&loop, "redis://127.0.0.1", 100, "a{b", err, sizeof err));
    assert_null(wd_limit_redis_new(&loop, "redis://127.0.0.1", 0, "wd", err, sizeof err));
    assert_null(wd_limit_redis_new(&loop, "redis://127.0.0.1", 60001, "wd", err, sizeof err));
    /* a password never shows up in an error */
    assert_null(wd_limit_redis_new(&loop, "redis://:hunter2@h:99999", 100, "wd", err, sizeof err));
    assert_null(strstr(err, "hunter2"));

    wd_limit_redis_t *r = wd_limit_redis_new(&loop, "redis://127.0.0.1:1/2", 100, "wd", err, sizeof err);
    assert_non_null(r);
    res_t res = {0};
    wd_limit_scope_t s[5] = {scope("a", 1, 0, 0, 0, 0), scope("b", 1, 0, 0, 0, 0), scope("c", 1, 0, 0, 0, 0),
                             scope("d", 1, 0, 0, 0, 0), scope("e", 1, 0, 0, 0, 0)};
    assert_true(wd_limit_redis_admit(r, s, 0, 0, on_res, &res) < 0);
    assert_true(wd_limit_redis_admit(r, s, 5, 0, on_res, &res) < 0);
    assert_true(wd_limit_redis_admit(r, s, 1, -1, on_res, &res) < 0);
    assert_true(wd_limit_redis_admit(r, s, 1, 0, NULL, &res) < 0);
    assert_true(wd_limit_redis_admit(r, NULL, 1, 0, on_res, &res) < 0);
    wd_limit_scope_t empty = scope("", 1, 0, 0, 0, 0);
    assert_true(wd_limit_redis_admit(r, &empty, 1, 0, on_res, &res) < 0);
    wd_limit_scope_t full = scope("", 1, 0, 0, 0, 0);
    memset(full.key, 'k', sizeof full.key); /* no terminator inside the array */
    assert_true(wd_limit_redis_admit(r, &full, 1, 0, on_res, &res) < 0);
    pump(&loop, 50);
    assert_int_equal(res.calls, 0);
    /* four scopes are fine (and answered, here UNAVAILABLE: nothing listens on port 1) */
    assert_int_equal(wd_limit_redis_admit(r, s, 4, 0, on_res, &res), 0);
    assert_true(pump_until(&loop, &res.calls, 1, 1000));
    assert_int_equal(res.d.outcome, WD_LIMIT_UNAVAILABLE);
    wd_limit_redis_free(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static wd_limit_decision_t admit_on(uv_loop_t *loop, wd_limit_redis_t *r, const wd_limit_scope_t *s)
{
    res_t res = {0};
    assert_int_equal(wd_limit_redis_admit(r, s, 1, 0, on_res, &res), 0);
    assert_true(pump_until(loop, &res.calls, 1, 3000));
    return res.d;
}

/* A host name (resolved off the loop; every address is tried in turn), a database number, and a
 * unix socket on a second private server. */
static void test_url_db_and_unix(void **state)
{
    (void)state;
    NEED_REDIS();
    char url[160], err[256];
    snprintf(url, sizeof url, "redis://localhost:%d/3", srv_port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    wd_limit_redis_t *r = wd_limit_redis_new(&loop, url, 2000, "other", err, sizeof err);
    assert_non_null(r);
    wd_limit_scope_t s = scope("key:db", 5, 0, 0, 0, 0);
    bool ok = false;
    for (int i = 0; i < 40 && !ok; i++) {
        ok = admit_on(&loop, r, &s).outcome == WD_LIMIT_OK;
        if (!ok)
            pump(&loop, 100); /* localhost may be ::1 first, where this server does not listen */
    }
    assert_true(ok);
    redisContext *sc = sync_conn();
    freeReplyObject(redisCommand(sc, "SELECT 3"));
    redisReply *rep = redisCommand(sc, "EXISTS {other}:rpm:key:db");
    assert_int_equal(rep->integer, 1);
    freeReplyObject(rep);
    freeReplyObject(redisCommand(sc, "SELECT 0"));
    rep = redisCommand(sc, "EXISTS {other}:rpm:key:db");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    redisFree(sc);
    wd_limit_redis_free(r);

    char sock[108];
    snprintf(sock, sizeof sock, "/tmp/wd-test-redis-%d.sock", (int)getpid());
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
               (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    snprintf(url, sizeof url, "unix://%s", sock);
    r = wd_limit_redis_new(&loop, url, 2000, "wd", err, sizeof err);
    assert_non_null(r);
    ok = false;
    for (int i = 0; i < 50 && !ok; i++) {
        ok = admit_on(&loop, r, &s).outcome == WD_LIMIT_OK;
        if (!ok)
            pump(&loop, 100); /* the server may still be starting */
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(sock);
    assert_true(ok);
    wd_limit_redis_free(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- identical decisions to the local backend ------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

typedef struct {
    wd_limit_scope_t s[WD_LIMIT_MAX_SCOPES];
    size_t n;
    int64_t tokens;
} held_t;

static void test_differential_vs_local(void **state)
{
    (void)state;
    NEED_REDIS();
    ctx_t c;
    ctx_open(&c, 5000);
    assert_int_equal(wd_limit_redis_set_lease_ms(c.r, 3600000), 0); /* simulated time < 1 h */
    wd_limiter_t *l = wd_limiter_new(4);
    assert_non_null(l);
    const wd_limit_scope_t pool[] = {
        scope("key:a", 5, 1000, 2, 5000, 20000), scope("user:b", 3, 0, 0, 0, 3000), scope("role:c", 0, 500, 1, 0, 0),
        scope("ip:d", 7, 0, 0, 2000, 0),         scope("key:e", 0, 0, 0, 0, 0),     scope("key:f", 1, 50, 3, 60, 0),
    };
    const size_t npool = sizeof pool / sizeof pool[0];
    held_t held[16];
    size_t nheld = 0;
    int64_t now = INT64_C(1709251080) * 1000000000; /* 2024-02-29T23:58:00Z: a day and a month end soon */
    int compared = 0, admitted = 0, refused_kinds[6] = {0};
    for (int step = 0; step < 1500; step++) {
        now += rnd(20) == 0 ? -(int64_t)rnd(2000) * 1000000 : (int64_t)(1 + rnd(3000)) * 1000000 + (int64_t)rnd(1000000);
        wd_limit_redis_pin_clock(c.r, now);
        if (rnd(10) < 7 || nheld == 0) {
            held_t h = {.n = 1 + rnd(4), .tokens = rnd(4) == 0 ? 0 : (int64_t)rnd(700)};
            for (size_t i = 0; i < h.n; i++)
                h.s[i] = pool[rnd(npool)]; /* duplicates allowed: both backends share the state */
            wd_limit_decision_t dl, dr;
            wd_limiter_admit(l, h.s, h.n, h.tokens, now, &dl);
            dr = admit1(&c, h.s, h.n, h.tokens);
            compared++;
            if (memcmp(&dl, &dr, sizeof dl) != 0)
                fail_msg("step %d (n=%zu tokens=%lld): local {%d %d %lld | %lld %lld %lld | %lld %lld %lld} "
                         "redis {%d %d %lld | %lld %lld %lld | %lld %lld %lld}",
                         step, h.n, (long long)h.tokens, dl.outcome, dl.scope, (long long)dl.retry_after_ms,
                         (long long)dl.limit_requests, (long long)dl.remaining_requests,
                         (long long)dl.reset_requests_ms, (long long)dl.limit_tokens,
                         (long long)dl.remaining_tokens, (long long)dl.reset_tokens_ms, dr.outcome, dr.scope,
                         (long long)dr.retry_after_ms, (long long)dr.limit_requests,
                         (long long)dr.remaining_requests, (long long)dr.reset_requests_ms,
                         (long long)dr.limit_tokens, (long long)dr.remaining_tokens, (long long)dr.reset_tokens_ms);
            refused_kinds[dl.outcome]++;
            if (dl.outcome == WD_LIMIT_OK) {
                admitted++;
                if (nheld == 16) { /* finish the oldest to make room */
                    wd_limiter_finish(l, held[0].s, held[0].n, held[0].tokens, held[0].tokens, now);
                    wd_limit_redis_finish(c.r, held[0].s, held[0].n, held[0].tokens, held[0].tokens);
                    memmove(&held[0], &held[1], 15 * sizeof held[0]);
                    nheld--;
                }
                held[nheld++] = h;
            }
        } else {
            size_t i = rnd(nheld);
            int64_t actual = (int64_t)rnd(1200);
            wd_limiter_finish(l, held[i].s, held[i].n, held[i].tokens, actual, now);
            wd_limit_redis_finish(c.r, held[i].s, held[i].n, held[i].tokens, actual);
            held[i] = held[--nheld];
        }
    }
    /* the sequence exercised every outcome, not just the easy one */
    assert_true(admitted > 100);
    for (int k = WD_LIMIT_REQUESTS; k <= WD_LIMIT_BUDGET; k++)
        if (refused_kinds[k] == 0)
            fail_msg("outcome %d never happened in %d decisions", k, compared);
    wd_limiter_free(l);
    ctx_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test_setup(test_burst_rpm60, test_setup),
        cmocka_unit_test_setup(test_gcra_exact_pinned, test_setup),
        cmocka_unit_test_setup(test_all_or_nothing, test_setup),
        cmocka_unit_test_setup(test_token_reservation, test_setup),
        cmocka_unit_test_setup(test_reconciliation, test_setup),
        cmocka_unit_test_setup(test_concurrency, test_setup),
        cmocka_unit_test_setup(test_charge_unadmitted, test_setup),
        cmocka_unit_test_setup(test_concurrency_lease, test_setup),
        cmocka_unit_test_setup(test_budgets, test_setup),
        cmocka_unit_test_setup(test_differential_vs_local, test_setup),
        cmocka_unit_test_setup(test_two_replicas_exact, test_setup),
        cmocka_unit_test_setup(test_cancel_releases, test_setup),
        cmocka_unit_test_setup(test_free_answers_pending, test_setup),
        cmocka_unit_test_setup(test_noscript_fallback, test_setup),
        cmocka_unit_test_setup(test_keys_have_ttls_and_one_tag, test_setup),
        cmocka_unit_test_setup(test_url_db_and_unix, test_setup),
        cmocka_unit_test_setup(test_unreachable_never_reentrant, test_setup),
        cmocka_unit_test_setup(test_healthy, test_setup),
        cmocka_unit_test_setup(test_hung_server_timeout, test_setup),
        cmocka_unit_test_setup(test_kill_and_restart, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

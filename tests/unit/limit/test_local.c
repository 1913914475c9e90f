/* The local limiter: all-or-nothing admission across scopes, concurrency, token reservation and
 * reconciliation, UTC day/month budget windows, the x-ratelimit figures, bounded memory under many
 * distinct keys (eviction and the per-shard cap), and atomicity under threads. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <cmocka.h>

#include "limit/limit.h"

#define S INT64_C(1000000000)
#define MS INT64_C(1000000)
#define T0 (INT64_C(1700000000) * S)

static wd_limit_scope_t sc(const char *key, uint32_t rpm, uint32_t tpm, uint32_t conc, uint64_t day,
                           uint64_t month)
{
    wd_limit_scope_t s;
    memset(&s, 0, sizeof s);
    snprintf(s.key, sizeof s.key, "%s", key);
    s.lim = (wd_limits_t){
        .rpm = rpm, .tpm = tpm, .concurrent = conc, .tokens_per_day = day, .tokens_per_month = month};
    return s;
}

static wd_limit_outcome_t admit(wd_limiter_t *l, const wd_limit_scope_t *s, size_t n, int64_t tokens,
                                int64_t now, wd_limit_decision_t *out)
{
    wd_limit_decision_t d;
    wd_limiter_admit(l, s, n, tokens, now, &d);
    if (out) *out = d;
    if (d.outcome == WD_LIMIT_OK) {
        assert_int_equal(d.scope, -1);
    } else {
        assert_true(d.retry_after_ms > 0 || d.retry_after_ms == -1);
    }
    return d.outcome;
}

/* Admits one-scope requests at `now` until refused; returns how many passed (bounded). */
static int drain(wd_limiter_t *l, const wd_limit_scope_t *s, int64_t tokens, int64_t now)
{
    int n = 0;
    while (n < 100000 && admit(l, s, 1, tokens, now, NULL) == WD_LIMIT_OK)
        n++;
    return n;
}

static int64_t utc(int y, int mon, int d, int h, int mi, int sec)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    return (int64_t)timegm(&tm) * S;
}

static void test_no_scopes_and_bad_input(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(8);
    assert_non_null(l);
    wd_limit_decision_t d;
    assert_int_equal(admit(l, NULL, 0, 100, T0, &d), WD_LIMIT_OK);
    assert_int_equal(d.limit_requests, -1);
    assert_int_equal(d.remaining_requests, -1);
    assert_int_equal(d.limit_tokens, -1);
    wd_limit_scope_t s[5] = {sc("a", 0, 0, 0, 0, 0), sc("b", 0, 0, 0, 0, 0)};
    assert_int_equal(admit(l, s, 2, 100, T0, &d), WD_LIMIT_OK); /* no limits: nothing stored */
    assert_int_equal(wd_limiter_entries(l), 0);
    for (int i = 0; i < 5; i++)
        s[i] = sc("x", 10, 0, 0, 0, 0);
    assert_int_equal(admit(l, s, 5, 1, T0, &d), WD_LIMIT_UNAVAILABLE); /* more than MAX_SCOPES */
    assert_int_equal(wd_limiter_entries(l), 0);
    wd_limiter_finish(l, s, 5, 1, 1, T0); /* ignored */
    /* keys filling all 160 bytes without a NUL are distinct from their 159-byte prefix */
    wd_limit_scope_t a = sc("", 1, 0, 0, 0, 0), b = sc("", 1, 0, 0, 0, 0);
    memset(a.key, 'k', sizeof a.key);
    memset(b.key, 'k', sizeof b.key - 1);
    assert_int_equal(admit(l, &a, 1, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &b, 1, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &a, 1, 0, T0, NULL), WD_LIMIT_REQUESTS);
    assert_int_equal(wd_limiter_entries(l), 2);
    wd_limiter_free(l);
    wd_limiter_free(NULL);
    l = wd_limiter_new(0); /* default shard count */
    assert_non_null(l);
    wd_limiter_free(l);
}

static void test_all_or_nothing(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(16);
    wd_limit_scope_t s[2] = {sc("key:a", 10, 0, 0, 0, 0), sc("role:r", 1, 0, 0, 0, 0)};
    wd_limit_decision_t d;
    assert_int_equal(admit(l, s, 2, 0, T0, &d), WD_LIMIT_OK);
    assert_int_equal(d.limit_requests, 1); /* the most constrained scope */
    assert_int_equal(d.remaining_requests, 0);
    assert_int_equal(d.reset_requests_ms, 60000);
    assert_int_equal(d.limit_tokens, -1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(admit(l, s, 2, 0, T0 + i * S, &d), WD_LIMIT_REQUESTS);
        assert_int_equal(d.scope, 1);
        assert_int_equal(d.retry_after_ms, 60000 - i * 1000);
    }
    /* key:a was charged once only: 9 more pass on their own (10 - 1), not 4 */
    assert_int_equal(drain(l, &s[0], 0, T0), 9);

    /* refusal by the first scope leaves the second uncharged too */
    wd_limit_scope_t t[2] = {sc("key:b", 1, 0, 0, 0, 0), sc("role:q", 3, 0, 0, 0, 0)};
    assert_int_equal(admit(l, t, 2, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, t, 2, 0, T0, &d), WD_LIMIT_REQUESTS);
    assert_int_equal(d.scope, 0);
    assert_int_equal(d.remaining_requests, 0);
    assert_int_equal(drain(l, &t[1], 0, T0), 2);

    /* a scope list naming one key twice is charged twice, never over the limit */
    wd_limit_scope_t dup[2] = {sc("key:dup", 3, 0, 0, 0, 0), sc("key:dup", 3, 0, 0, 0, 0)};
    assert_int_equal(admit(l, dup, 2, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, dup, 2, 0, T0, NULL), WD_LIMIT_REQUESTS);
    assert_int_equal(drain(l, &dup[0], 0, T0), 1);
    wd_limiter_free(l);
}

static void test_longest_refusal_reported(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s[3] = {sc("key:c", 0, 0, 1, 0, 0), sc("user:u", 12, 0, 0, 0, 0),
                             sc("ip:1", 0, 100, 0, 0, 0)};
    wd_limit_decision_t d;
    assert_int_equal(admit(l, s, 2, 0, T0, NULL), WD_LIMIT_OK); /* takes the only slot of key:c */
    for (int i = 0; i < 11; i++)
        assert_int_equal(admit(l, &s[1], 1, 0, T0, NULL), WD_LIMIT_OK);
    /* concurrency says 1 s, rpm says 5 s (T = 5 s): the request can pass only after both */
    assert_int_equal(admit(l, s, 2, 0, T0, &d), WD_LIMIT_REQUESTS);
    assert_int_equal(d.scope, 1);
    assert_int_equal(d.retry_after_ms, 5000);
    assert_int_equal(admit(l, s, 2, 0, T0 + 4500 * MS, &d), WD_LIMIT_CONCURRENCY);
    assert_int_equal(d.scope, 0);
    assert_int_equal(d.retry_after_ms, 1000);
    /* a cost that can never pass outranks everything */
    assert_int_equal(admit(l, s, 3, 101, T0, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.scope, 2);
    assert_int_equal(d.retry_after_ms, -1);
    assert_int_equal(d.limit_tokens, 100);
    assert_int_equal(d.remaining_tokens, 100);
    wd_limiter_free(l);
}

static void test_concurrency(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s = sc("key:c", 0, 0, 2, 0, 0);
    wd_limit_decision_t d;
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 0, T0, &d), WD_LIMIT_CONCURRENCY);
    assert_int_equal(d.retry_after_ms, 1000);
    assert_int_equal(d.scope, 0);
    wd_limiter_finish(l, &s, 1, 0, 0, T0);
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_CONCURRENCY);
    /* releasing more than was taken never goes below zero: still exactly 2 slots */
    for (int i = 0; i < 5; i++)
        wd_limiter_finish(l, &s, 1, 0, 0, T0);
    assert_int_equal(drain(l, &s, 0, T0), 2);
    /* a refusal by another scope does not take a slot */
    wd_limit_scope_t two[2] = {sc("key:d", 0, 0, 1, 0, 0), sc("role:z", 1, 0, 0, 0, 0)};
    assert_int_equal(admit(l, two, 2, 0, T0, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, two, 2, 0, 0, T0);
    assert_int_equal(admit(l, two, 2, 0, T0, NULL), WD_LIMIT_REQUESTS);
    assert_int_equal(admit(l, &two[0], 1, 0, T0, NULL), WD_LIMIT_OK);
    wd_limiter_free(l);
}

static void test_token_reservation(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s = sc("key:t", 2, 1000, 0, 0, 0);
    wd_limit_decision_t d;
    assert_int_equal(admit(l, &s, 1, 600, T0, &d), WD_LIMIT_OK);
    assert_int_equal(d.limit_tokens, 1000);
    assert_int_equal(d.remaining_tokens, 400);
    assert_int_equal(d.reset_tokens_ms, 36000); /* 600 tokens * 60 ms */
    assert_int_equal(d.remaining_requests, 1);
    /* 500 > 400 left: refused before anything is charged (neither tokens nor the request) */
    assert_int_equal(admit(l, &s, 1, 500, T0, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 6000); /* (600 + 500 - 1000) * 60 ms */
    assert_int_equal(d.remaining_tokens, 400);
    assert_int_equal(d.remaining_requests, 1);
    assert_int_equal(admit(l, &s, 1, 400, T0, &d), WD_LIMIT_OK);
    assert_int_equal(d.remaining_tokens, 0);
    assert_int_equal(d.remaining_requests, 0);
    /* more than the whole tpm can never pass */
    wd_limit_scope_t big = sc("key:big", 0, 1000, 0, 0, 0);
    assert_int_equal(admit(l, &big, 1, 1001, T0, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, -1);
    assert_int_equal(admit(l, &big, 1, 1000, T0, NULL), WD_LIMIT_OK);
    wd_limiter_free(l);
}

static void test_reconciliation(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s = sc("key:r", 0, 600, 0, 0, 0); /* T = 100 ms a token */
    wd_limit_decision_t d;
    /* overrun: reserved 100, used 700 -> 600 more charged: tat = T0 + 70 s */
    assert_int_equal(admit(l, &s, 1, 100, T0, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, &s, 1, 100, 700, T0 + 2 * S);
    assert_int_equal(admit(l, &s, 1, 1, T0 + 10 * S, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 100); /* 70.1 - 60 - 10 s */
    assert_int_equal(d.remaining_tokens, 0);
    assert_int_equal(admit(l, &s, 1, 1, T0 + 10100 * MS, NULL), WD_LIMIT_OK);

    /* refund: the whole minute reserved, 100 used -> 500 come back at once */
    wd_limit_scope_t r = sc("key:refund", 0, 600, 0, 0, 0);
    assert_int_equal(admit(l, &r, 1, 600, T0, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &r, 1, 1, T0, NULL), WD_LIMIT_TOKENS);
    wd_limiter_finish(l, &r, 1, 600, 100, T0);
    assert_int_equal(admit(l, &r, 1, 500, T0, &d), WD_LIMIT_OK);
    assert_int_equal(d.remaining_tokens, 0);
    /* a refund is not banked: after full recovery, refunding leaves exactly the limit */
    wd_limiter_finish(l, &r, 1, 10000, 0, T0 + 3600 * S);
    assert_int_equal(admit(l, &r, 1, 601, T0 + 3600 * S, NULL), WD_LIMIT_TOKENS);
    assert_int_equal(admit(l, &r, 1, 600, T0 + 3600 * S, NULL), WD_LIMIT_OK);

    /* an overrun on an entry evicted meanwhile is still charged */
    wd_limiter_t *one = wd_limiter_new(1);
    wd_limit_scope_t e = sc("key:evicted", 0, 600, 0, 0, 0);
    assert_int_equal(admit(one, &e, 1, 10, T0, NULL), WD_LIMIT_OK);
    char k[32];
    for (int i = 0; i < 200; i++) { /* later keys push the shard into rebuilds that drop key:evicted */
        snprintf(k, sizeof k, "ip:%d", i);
        wd_limit_scope_t x = sc(k, 60, 0, 0, 0, 0);
        assert_int_equal(admit(one, &x, 1, 0, T0 + 100 * S + i * S, NULL), WD_LIMIT_OK);
    }
    assert_true(wd_limiter_entries(one) < 200);
    wd_limiter_finish(one, &e, 1, 10, 610, T0 + 400 * S); /* 600 over: a full minute's worth */
    assert_int_equal(admit(one, &e, 1, 1, T0 + 400 * S, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 100);
    wd_limiter_free(one);
    wd_limiter_free(l);
}

/* A request let through unadmitted (fail open) is charged what it used: tokens and budgets move like
 * an overrun, and no concurrency slot is released (it never took one), nor anything refunded. */
static void test_charge_unadmitted(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s = sc("ip:open", 0, 600, 1, 1000, 0); /* T = 100 ms a token, one in flight */
    wd_limit_decision_t d;
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_OK); /* holds the only slot */
    wd_limiter_charge(l, &s, 1, 300, T0);
    assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_CONCURRENCY); /* the slot is still held */
    wd_limiter_finish(l, &s, 1, 0, 0, T0);                                 /* the admitted one ends */
    assert_int_equal(admit(l, &s, 1, 300, T0, &d), WD_LIMIT_OK);           /* 300 of 600 were charged */
    assert_int_equal(d.remaining_tokens, 0);
    wd_limiter_finish(l, &s, 1, 300, 300, T0);
    /* the day budget saw 300 + 300: 400 left */
    assert_int_equal(admit(l, &s, 1, 401, T0 + 3600 * S, &d), WD_LIMIT_BUDGET);
    assert_int_equal(admit(l, &s, 1, 400, T0 + 3600 * S, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, &s, 1, 400, 400, T0 + 3600 * S);
    /* nothing, or a negative figure, charges nothing (never a refund) */
    wd_limiter_charge(l, &s, 1, 0, T0 + 3600 * S);
    wd_limiter_charge(l, &s, 1, -500, T0 + 3600 * S);
    assert_int_equal(admit(l, &s, 1, 1, T0 + 3600 * S, NULL), WD_LIMIT_BUDGET);
    /* a charge to an unknown key creates it (like an overrun on an evicted entry) */
    wd_limit_scope_t n = sc("ip:new", 0, 600, 0, 0, 0);
    wd_limiter_charge(l, &n, 1, 660, T0);
    assert_int_equal(admit(l, &n, 1, 1, T0, &d), WD_LIMIT_TOKENS);
    assert_int_equal(d.retry_after_ms, 6100); /* 66.1 - 60 s */
    wd_limiter_free(l);
}

static void test_day_budget(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_scope_t s = sc("key:day", 0, 0, 0, 1000, 0);
    wd_limit_decision_t d;
    int64_t eve = utc(2024, 2, 29, 23, 59, 59); /* leap day, one second to midnight */
    assert_int_equal(admit(l, &s, 1, 800, eve - 3600 * S, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 300, eve, &d), WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 1000);
    assert_int_equal(admit(l, &s, 1, 300, eve + 250 * MS, &d), WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 750);
    assert_int_equal(admit(l, &s, 1, 200, eve, NULL), WD_LIMIT_OK); /* exactly the budget */
    assert_int_equal(admit(l, &s, 1, 1, eve + S - 1, NULL), WD_LIMIT_BUDGET);
    int64_t midnight = utc(2024, 3, 1, 0, 0, 0);
    assert_int_equal(midnight, eve + S);
    assert_int_equal(admit(l, &s, 1, 1000, midnight, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 1, midnight, &d), WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, 86400000);
    /* more than the whole budget: never */
    assert_int_equal(admit(l, &s, 1, 1001, midnight + 86400 * S, &d), WD_LIMIT_BUDGET);
    assert_int_equal(d.retry_after_ms, -1);

    /* reconciliation: overrun charged (usage may exceed the budget), refund gives back, not below 0 */
    wd_limit_scope_t r = sc("key:dayr", 0, 0, 0, 1000, 0);
    assert_int_equal(admit(l, &r, 1, 500, midnight, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, &r, 1, 500, 1200, midnight);
    assert_int_equal(admit(l, &r, 1, 0, midnight, &d), WD_LIMIT_BUDGET); /* 1200 > 1000 */
    wd_limiter_finish(l, &r, 1, 1200, 0, midnight);                      /* refund 1200: used back to 0 */
    assert_int_equal(admit(l, &r, 1, 900, midnight, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, &r, 1, 900, 100, midnight); /* used 100 */
    assert_int_equal(admit(l, &r, 1, 901, midnight, NULL), WD_LIMIT_BUDGET);
    assert_int_equal(admit(l, &r, 1, 900, midnight, NULL), WD_LIMIT_OK);
    wd_limiter_finish(l, &r, 1, 100000, 0, midnight); /* refund larger than used: 0, never negative */
    assert_int_equal(admit(l, &r, 1, 1001, midnight, NULL), WD_LIMIT_BUDGET);
    assert_int_equal(admit(l, &r, 1, 1000, midnight, NULL), WD_LIMIT_OK);
    wd_limiter_free(l);
}

static void test_month_budget(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(4);
    wd_limit_decision_t d;
    static const int cases[][3] = {
        {2024, 1, 31}, {2024, 2, 29}, {2023, 2, 28}, {2023, 12, 31}, {2024, 4, 30}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[32];
        snprintf(key, sizeof key, "user:m%zu", i);
        wd_limit_scope_t s = sc(key, 0, 0, 0, 0, 5000);
        int y = cases[i][0], m = cases[i][1];
        int64_t start = utc(y, m, 1, 0, 0, 0), last = utc(y, m, cases[i][2], 23, 59, 59);
        int64_t next = utc(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1, 0, 0, 0);
        assert_int_equal(admit(l, &s, 1, 3000, start, NULL), WD_LIMIT_OK);
        assert_int_equal(admit(l, &s, 1, 2000, start + 10 * 86400 * S, NULL), WD_LIMIT_OK);
        assert_int_equal(admit(l, &s, 1, 1, last, &d), WD_LIMIT_BUDGET);
        assert_int_equal(d.retry_after_ms, 1000);
        assert_int_equal(admit(l, &s, 1, 1, start + 7 * S, &d), WD_LIMIT_BUDGET);
        assert_int_equal(d.retry_after_ms, (next - start - 7 * S) / MS);
        assert_int_equal(admit(l, &s, 1, 5000, next, NULL), WD_LIMIT_OK); /* the new month is fresh */
        assert_int_equal(admit(l, &s, 1, 1, next, NULL), WD_LIMIT_BUDGET);
    }
    /* day and month together: the day resets at midnight, the month does not */
    wd_limit_scope_t s = sc("user:dm", 0, 0, 0, 100, 250);
    int64_t t = utc(2025, 6, 10, 12, 0, 0);
    assert_int_equal(admit(l, &s, 1, 100, t, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 100, t, NULL), WD_LIMIT_BUDGET);
    assert_int_equal(admit(l, &s, 1, 100, t + 86400 * S, NULL), WD_LIMIT_OK);
    assert_int_equal(admit(l, &s, 1, 100, t + 2 * 86400 * S, &d), WD_LIMIT_BUDGET); /* month: 300 > 250 */
    assert_int_equal(d.retry_after_ms, (utc(2025, 7, 1, 0, 0, 0) - t - 2 * 86400 * S) / MS);
    assert_int_equal(admit(l, &s, 1, 50, t + 2 * 86400 * S, NULL), WD_LIMIT_OK);
    wd_limiter_free(l);
}

static void test_eviction_bounded(void **state)
{
    (void)state;
    /* 10^6 distinct client addresses, one request each at rpm 60, 10 us apart: an entry recovers
     * after T = 1 s, so about 10^5 are live at any time, never the 10^6 seen */
    wd_limiter_t *l = wd_limiter_new(16);
    char key[32];
    size_t max = 0;
    for (int i = 0; i < 1000000; i++) {
        snprintf(key, sizeof key, "ip:10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        wd_limit_scope_t s = sc(key, 60, 0, 0, 0, 0);
        assert_int_equal(admit(l, &s, 1, 0, T0 + (int64_t)i * 10000, NULL), WD_LIMIT_OK);
        if (i % 4096 == 0) {
            size_t n = wd_limiter_entries(l);
            if (n > max) max = n;
        }
    }
    assert_true(max > 50000);  /* live ones are kept */
    assert_true(max < 250000); /* idle ones are dropped */
    wd_limiter_free(l);
}

static void test_shard_cap_fails_closed(void **state)
{
    (void)state;
    wd_limiter_t *l = wd_limiter_new(1);
    char key[32];
    wd_limit_decision_t d;
    /* fixed time, rpm 60: nothing recovers, so the one shard fills up to its cap */
    for (unsigned i = 0; i < WD_LIMITER_SHARD_CAP; i++) {
        snprintf(key, sizeof key, "ip:%u", i);
        wd_limit_scope_t s = sc(key, 60, 0, 0, 0, 0);
        assert_int_equal(admit(l, &s, 1, 0, T0, NULL), WD_LIMIT_OK);
    }
    assert_int_equal(wd_limiter_entries(l), WD_LIMITER_SHARD_CAP);
    wd_limit_scope_t two[2] = {sc("ip:0", 60, 0, 0, 0, 0), sc("ip:new", 60, 0, 0, 0, 0)};
    assert_int_equal(admit(l, two, 2, 0, T0, &d), WD_LIMIT_UNAVAILABLE);
    assert_int_equal(d.scope, 1);
    assert_int_equal(d.retry_after_ms, 1000);
    assert_int_equal(wd_limiter_entries(l), WD_LIMITER_SHARD_CAP);
    /* known keys keep working, and the refused request charged ip:0 nothing: 59 left of 60 */
    assert_int_equal(drain(l, &two[0], 0, T0), 59);
    /* once entries have recovered (T = 1 s each, full after 60 s), new keys are admitted again and
     * the table shrinks back */
    assert_int_equal(admit(l, &two[1], 1, 0, T0 + 120 * S, NULL), WD_LIMIT_OK);
    assert_true(wd_limiter_entries(l) < 10);
    wd_limiter_free(l);
}

/* ---- threads ------------------------------------------------------------------------------------- */

typedef struct {
    wd_limiter_t *l;
    int id;
    int admitted;
} worker_t;

#define THREADS 4
#define PER_THREAD 100000
#define SHARED_RPM 1000

static void *hammer_one_key(void *arg)
{
    worker_t *w = arg;
    wd_limit_scope_t s = sc("key:shared", SHARED_RPM, 0, 0, 0, 0);
    for (int i = 0; i < PER_THREAD; i++)
        w->admitted += admit(w->l, &s, 1, 0, T0, NULL) == WD_LIMIT_OK;
    return NULL;
}

static void *hammer_two_scopes(void *arg)
{
    worker_t *w = arg;
    char key[32];
    snprintf(key, sizeof key, "key:own%d", w->id);
    wd_limit_scope_t s[2] = {sc(key, 1000000, 0, 0, 0, 0), sc("role:pool", SHARED_RPM, 0, 0, 0, 0)};
    for (int i = 0; i < PER_THREAD; i++)
        w->admitted += admit(w->l, s, 2, 0, T0, NULL) == WD_LIMIT_OK;
    return NULL;
}

static atomic_int in_flight, max_in_flight;

static void *hammer_concurrency(void *arg)
{
    worker_t *w = arg;
    wd_limit_scope_t s = sc("key:conc", 0, 0, 3, 0, 0);
    for (int i = 0; i < PER_THREAD / 2; i++) {
        if (admit(w->l, &s, 1, 0, T0, NULL) != WD_LIMIT_OK) continue;
        int now = atomic_fetch_add(&in_flight, 1) + 1;
        int m = atomic_load(&max_in_flight);
        while (now > m && !atomic_compare_exchange_weak(&max_in_flight, &m, now)) {
        }
        w->admitted++;
        atomic_fetch_sub(&in_flight, 1);
        wd_limiter_finish(w->l, &s, 1, 0, 0, T0);
    }
    return NULL;
}

static int run_threads(wd_limiter_t *l, void *(*fn)(void *), worker_t *w)
{
    pthread_t th[THREADS];
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){l, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += w[i].admitted;
    }
    return total;
}

static void test_threads_exact(void **state)
{
    (void)state;
    worker_t w[THREADS];
    wd_limiter_t *l = wd_limiter_new(64);
    assert_int_equal(run_threads(l, hammer_one_key, w), SHARED_RPM);

    /* two scopes: the shared pool admits exactly its limit, and each thread's own key was charged for
     * exactly the requests that passed (no partial charges from refusals) */
    assert_int_equal(run_threads(l, hammer_two_scopes, w), SHARED_RPM);
    for (int i = 0; i < THREADS; i++) {
        char key[32];
        snprintf(key, sizeof key, "key:own%d", i);
        wd_limit_scope_t s = sc(key, 1000000, 0, 0, 0, 0);
        wd_limit_decision_t d;
        assert_int_equal(admit(l, &s, 1, 0, T0, &d), WD_LIMIT_OK);
        assert_int_equal(d.remaining_requests, 1000000 - w[i].admitted - 1);
    }

    atomic_store(&in_flight, 0);
    atomic_store(&max_in_flight, 0);
    assert_true(run_threads(l, hammer_concurrency, w) > 0);
    assert_true(atomic_load(&max_in_flight) <= 3);
    wd_limit_scope_t c = sc("key:conc", 0, 0, 3, 0, 0);
    assert_int_equal(drain(l, &c, 0, T0), 3); /* every slot came back */
    wd_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_scopes_and_bad_input),
        cmocka_unit_test(test_all_or_nothing),
        cmocka_unit_test(test_longest_refusal_reported),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_token_reservation),
        cmocka_unit_test(test_reconciliation),
        cmocka_unit_test(test_charge_unadmitted),
        cmocka_unit_test(test_day_budget),
        cmocka_unit_test(test_month_budget),
        cmocka_unit_test(test_eviction_bounded),
        cmocka_unit_test(test_shard_cap_fails_closed),
        cmocka_unit_test(test_threads_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

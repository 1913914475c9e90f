/* GCRA arithmetic (limit.h): burst, steady rate, exact remaining/reset/retry figures, a clock going
 * backwards, costs above the limit, reconciliation charges and refunds, overflow at the extremes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "limit/limit.h"

#define S INT64_C(1000000000)
#define MS INT64_C(1000000)
#define T0 (INT64_C(1700000000) * S) /* 2023-11-14, a realistic CLOCK_REALTIME */

static wd_gcra_t per_minute(int64_t limit)
{
    wd_gcra_t g;
    wd_gcra_init(&g, limit, 60 * S);
    return g;
}

static void test_init(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(60);
    assert_int_equal(g.T, S);
    assert_int_equal(g.tau, 59 * S);
    assert_int_equal(g.limit, 60);
    g = per_minute(7); /* T does not divide the period: integer division, tau + T <= period */
    assert_int_equal(g.T, INT64_C(8571428571));
    assert_int_equal(g.tau, 6 * INT64_C(8571428571));
    g = per_minute(1000000000);
    assert_int_equal(g.T, 60);
    assert_int_equal(g.tau, 60 * INT64_C(999999999));
    wd_gcra_init(&g, 10, 5); /* more cells than ns in the period: T clamps to 1 ns */
    assert_int_equal(g.T, 1);
    assert_int_equal(g.tau, 9);
}

static void test_burst_admits_exactly_limit(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(60);
    int64_t tat = 0, rem, retry, reset;
    int admitted = 0;
    for (int i = 0; i < 100; i++) {
        bool ok = wd_gcra_take(&g, &tat, T0, 1, &rem, &retry, &reset);
        if (ok) {
            admitted++;
            assert_int_equal(rem, 60 - admitted);
            assert_int_equal(reset, admitted * S); /* full again after admitted * T */
            assert_int_equal(retry, 0);
        } else {
            assert_int_equal(rem, 0);
            assert_int_equal(retry, S); /* the next cell frees after exactly T */
            assert_int_equal(reset, 60 * S);
        }
    }
    assert_int_equal(admitted, 60);
    assert_int_equal(tat, T0 + 60 * S); /* refusals did not move tat */
    /* one ns before the retry time still refused, at it admitted */
    assert_false(wd_gcra_take(&g, &tat, T0 + S - 1, 1, &rem, &retry, NULL));
    assert_int_equal(retry, 1);
    assert_true(wd_gcra_take(&g, &tat, T0 + S, 1, &rem, NULL, NULL));
    assert_int_equal(rem, 0);
}

static void test_steady_rate_always_admitted(void **state)
{
    (void)state;
    /* from fresh, and right after an exhausted burst: one request every T always passes */
    wd_gcra_t g = per_minute(7);
    int64_t tat = 0;
    for (int i = 0; i < 10000; i++)
        assert_true(wd_gcra_take(&g, &tat, T0 + i * g.T, 1, NULL, NULL, NULL));
    tat = 0;
    for (int i = 0; i < 7; i++)
        assert_true(wd_gcra_take(&g, &tat, T0, 1, NULL, NULL, NULL));
    assert_false(wd_gcra_take(&g, &tat, T0, 1, NULL, NULL, NULL));
    for (int i = 1; i < 10000; i++)
        assert_true(wd_gcra_take(&g, &tat, T0 + i * g.T, 1, NULL, NULL, NULL));
    /* 10% faster than T: request i (from 0) needs (i+1)T - 0.9iT <= 7T, so i <= 60 pass */
    tat = 0;
    int i = 0;
    while (i < 1000 && wd_gcra_take(&g, &tat, T0 + i * (g.T - g.T / 10), 1, NULL, NULL, NULL))
        i++;
    assert_int_equal(i, 61);
}

static void test_exact_figures(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(60);
    int64_t tat = 0, rem, retry, reset;
    assert_true(wd_gcra_take(&g, &tat, T0, 10, &rem, &retry, &reset)); /* 10 cells at once */
    assert_int_equal(tat, T0 + 10 * S);
    assert_int_equal(rem, 50);
    assert_int_equal(reset, 10 * S);
    /* 2.5 s later: tat0 = T0+10s, new_tat = T0+11s; remaining = floor((2.5+60-11)/1) = 51 */
    assert_true(wd_gcra_take(&g, &tat, T0 + 2500 * MS, 1, &rem, &retry, &reset));
    assert_int_equal(rem, 51);
    assert_int_equal(reset, 8500 * MS);
    /* take the rest at T0+2.5s: 51 more pass, the 52nd is refused with retry 1 s */
    assert_true(wd_gcra_take(&g, &tat, T0 + 2500 * MS, 51, &rem, &retry, &reset));
    assert_int_equal(rem, 0);
    assert_int_equal(tat, T0 + 62 * S);
    assert_false(wd_gcra_take(&g, &tat, T0 + 2700 * MS, 3, &rem, &retry, &reset));
    /* new_tat = T0+65s, retry = 65 - 60 - 2.7 = 2.3 s; uncharged state: remaining floor(0.7) = 0 */
    assert_int_equal(retry, 2300 * MS);
    assert_int_equal(rem, 0);
    assert_int_equal(reset, 62 * S - 2700 * MS);
    assert_int_equal(tat, T0 + 62 * S);
    /* a cost-0 take is a pure query of the state */
    assert_true(wd_gcra_take(&g, &tat, T0 + 12 * S, 0, &rem, &retry, &reset));
    assert_int_equal(rem, 10);
    assert_int_equal(reset, 50 * S);
    assert_int_equal(tat, T0 + 62 * S);
    /* fully recovered: remaining is the limit, reset 0 */
    assert_true(wd_gcra_take(&g, &tat, T0 + 100 * S, 0, &rem, NULL, &reset));
    assert_int_equal(rem, 60);
    assert_int_equal(reset, 0);
    /* non-dividing T: limit 7 -> T = 8571428571 ns; after 7 cells retry is exactly T */
    g = per_minute(7);
    tat = 0;
    assert_true(wd_gcra_take(&g, &tat, T0, 7, &rem, NULL, &reset));
    assert_int_equal(rem, 0);
    assert_int_equal(reset, 7 * g.T);
    assert_false(wd_gcra_take(&g, &tat, T0, 1, &rem, &retry, NULL));
    assert_int_equal(retry, g.T);
}

static void test_clock_backwards_never_grants(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(60);
    int64_t tat = 0, retry;
    for (int i = 0; i < 60; i++)
        assert_true(wd_gcra_take(&g, &tat, T0 + 100 * S, 1, NULL, NULL, NULL));
    /* a minute earlier the state is even fuller: nothing passes, and the wait is longer */
    assert_false(wd_gcra_take(&g, &tat, T0 + 40 * S, 1, NULL, &retry, NULL));
    assert_int_equal(retry, 61 * S);
    assert_int_equal(tat, T0 + 160 * S);
    /* partial use then a step back: the step back admits fewer, never more */
    tat = 0;
    assert_true(wd_gcra_take(&g, &tat, T0 + 100 * S, 30, NULL, NULL, NULL));
    int64_t tat2 = tat;
    int back = 0, fwd = 0;
    while (wd_gcra_take(&g, &tat, T0 + 50 * S, 1, NULL, NULL, NULL))
        back++;
    while (wd_gcra_take(&g, &tat2, T0 + 100 * S, 1, NULL, NULL, NULL))
        fwd++;
    assert_int_equal(fwd, 30);
    assert_true(back < fwd);
    /* a random walk with backward steps never admits more than a monotonic clock at its maximum */
    tat = 0;
    uint64_t x = 88172645463325252u;
    int64_t now = T0, lo = T0, hi = T0;
    int64_t admitted = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        now += (int64_t)(x % (3 * S)) - S - S / 2; /* steps of -1.5 s .. +1.5 s */
        lo = now < lo ? now : lo;
        hi = now > hi ? now : hi;
        admitted += wd_gcra_take(&g, &tat, now, 1, NULL, NULL, NULL);
    }
    assert_true(admitted <= 60 + (hi - lo) / S);
}

static void test_cost_above_limit_never_passes(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(100);
    int64_t tat = 0, rem, retry, reset;
    assert_false(wd_gcra_take(&g, &tat, T0, 101, &rem, &retry, &reset));
    assert_int_equal(retry, -1);
    assert_int_equal(rem, 100);
    assert_int_equal(reset, 0);
    assert_int_equal(tat, 0);
    assert_false(wd_gcra_take(&g, &tat, T0 + 1000 * S, INT64_MAX, &rem, &retry, NULL));
    assert_int_equal(retry, -1);
    assert_true(wd_gcra_take(&g, &tat, T0, 100, &rem, &retry, NULL)); /* exactly the limit: once */
    assert_int_equal(rem, 0);
    assert_false(wd_gcra_take(&g, &tat, T0, 1, NULL, NULL, NULL));
    /* a limiter with limit 0 admits nothing */
    wd_gcra_init(&g, 0, 60 * S);
    tat = 0;
    assert_false(wd_gcra_take(&g, &tat, T0, 1, &rem, &retry, NULL));
    assert_int_equal(retry, -1);
    /* negative cost counts as zero */
    g = per_minute(10);
    tat = 0;
    assert_true(wd_gcra_take(&g, &tat, T0, -5, &rem, NULL, NULL));
    assert_int_equal(rem, 10);
    assert_int_equal(tat, T0);
}

static void test_adjust_charge_and_refund(void **state)
{
    (void)state;
    wd_gcra_t g = per_minute(60);
    int64_t tat = 0, retry;
    assert_true(wd_gcra_take(&g, &tat, T0, 10, NULL, NULL, NULL));
    wd_gcra_adjust(&g, &tat, T0, 20); /* charge */
    assert_int_equal(tat, T0 + 30 * S);
    wd_gcra_adjust(&g, &tat, T0, -5); /* partial refund */
    assert_int_equal(tat, T0 + 25 * S);
    wd_gcra_adjust(&g, &tat, T0 + 5 * S, -100); /* big refund stops at now */
    assert_int_equal(tat, T0 + 5 * S);
    wd_gcra_adjust(&g, &tat, T0 + 10 * S, -100); /* nothing outstanding: unchanged, never banked */
    assert_int_equal(tat, T0 + 5 * S);
    wd_gcra_adjust(&g, &tat, T0 + 10 * S, 0);
    assert_int_equal(tat, T0 + 5 * S);
    wd_gcra_adjust(&g, &tat, T0 + 10 * S, 3); /* charge on a recovered state starts at now */
    assert_int_equal(tat, T0 + 13 * S);

    /* overrun: a full bucket charged 30 more delays the next request by 30 T */
    tat = 0;
    assert_true(wd_gcra_take(&g, &tat, T0, 60, NULL, NULL, NULL));
    wd_gcra_adjust(&g, &tat, T0, 30);
    assert_int_equal(tat, T0 + 90 * S);
    int64_t rem = -5;
    assert_false(wd_gcra_take(&g, &tat, T0 + 29 * S, 1, &rem, &retry, NULL));
    assert_int_equal(retry, 2 * S);
    assert_int_equal(rem, 0); /* the debt beyond the window does not go negative */
    assert_false(wd_gcra_take(&g, &tat, T0 + 31 * S - 1, 1, NULL, NULL, NULL));
    assert_true(wd_gcra_take(&g, &tat, T0 + 31 * S, 1, NULL, NULL, NULL));

    /* refund gives back capacity: full bucket, refund 50 -> 50 more pass at once */
    tat = 0;
    assert_true(wd_gcra_take(&g, &tat, T0, 60, NULL, NULL, NULL));
    wd_gcra_adjust(&g, &tat, T0, -50);
    int n = 0;
    while (wd_gcra_take(&g, &tat, T0, 1, NULL, NULL, NULL))
        n++;
    assert_int_equal(n, 50);
}

static void test_extremes_no_overflow(void **state)
{
    (void)state;
    /* 10^9 per minute with a 10^9 cost: the whole window at once, then exactly T to the next cell */
    wd_gcra_t g = per_minute(1000000000);
    int64_t tat = 0, rem, retry, reset;
    assert_true(wd_gcra_take(&g, &tat, T0, 1000000000, &rem, &retry, &reset));
    assert_int_equal(rem, 0);
    assert_int_equal(reset, 60 * S);
    assert_false(wd_gcra_take(&g, &tat, T0, 1, NULL, &retry, NULL));
    assert_int_equal(retry, 60);
    assert_false(wd_gcra_take(&g, &tat, T0, 1000000001, NULL, &retry, NULL));
    assert_int_equal(retry, -1);
    /* 1 per minute charged 10^9 (6e19 ns: more than int64): saturates, blocks, reports saturated */
    g = per_minute(1);
    tat = 0;
    wd_gcra_adjust(&g, &tat, T0, 1000000000);
    assert_int_equal(tat, INT64_MAX);
    assert_false(wd_gcra_take(&g, &tat, T0, 1, &rem, &retry, &reset));
    assert_true(retry > 0);
    assert_int_equal(rem, 0);
    assert_int_equal(reset, INT64_MAX - T0);
    wd_gcra_adjust(&g, &tat, T0, INT64_MAX);
    assert_int_equal(tat, INT64_MAX);
    wd_gcra_adjust(&g, &tat, T0, INT64_MIN); /* refund all: back to now, not below */
    assert_int_equal(tat, T0);
    /* near the end of the int64 clock */
    tat = 0;
    g = per_minute(1000);
    assert_true(wd_gcra_take(&g, &tat, INT64_MAX - 10 * S, 1000, &rem, NULL, &reset));
    assert_int_equal(rem, 0);
    assert_false(wd_gcra_take(&g, &tat, INT64_MAX - 10 * S, 1000, NULL, &retry, NULL));
    assert_true(retry > 0);
}

static void test_codes(void **state)
{
    (void)state;
    assert_string_equal(wd_limit_code(WD_LIMIT_REQUESTS), "rate_limit_exceeded");
    assert_string_equal(wd_limit_code(WD_LIMIT_TOKENS), "tokens_exceeded");
    assert_string_equal(wd_limit_code(WD_LIMIT_CONCURRENCY), "concurrency_exceeded");
    assert_string_equal(wd_limit_code(WD_LIMIT_BUDGET), "budget_exceeded");
    assert_string_equal(wd_limit_code(WD_LIMIT_UNAVAILABLE), "limits_unavailable");
    assert_string_equal(wd_limit_code((wd_limit_outcome_t)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_burst_admits_exactly_limit),
        cmocka_unit_test(test_steady_rate_always_admitted),
        cmocka_unit_test(test_exact_figures),
        cmocka_unit_test(test_clock_backwards_never_grants),
        cmocka_unit_test(test_cost_above_limit_never_passes),
        cmocka_unit_test(test_adjust_charge_and_refund),
        cmocka_unit_test(test_extremes_no_overflow),
        cmocka_unit_test(test_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

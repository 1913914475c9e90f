/* The x-ratelimit-* header block (wd_limit_headers) and scope keys (wd_limit_scope_set): exact text for
 * every duration style, negative figures, the kinds a decision may omit, the longest possible block,
 * and keys cut exactly where snprintf("%s%s") cut them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "limit/limit.h"

static wd_limit_decision_t none(void)
{
    return (wd_limit_decision_t){.outcome = WD_LIMIT_OK, .scope = -1, .limit_requests = -1, .remaining_requests = -1,
                                 .reset_requests_ms = -1, .limit_tokens = -1, .remaining_tokens = -1,
                                 .reset_tokens_ms = -1};
}

/* The block as a NUL-terminated string; a guard pattern past WD_LIMIT_HEADERS_MAX must stay intact. */
static const char *render(const wd_limit_decision_t *d)
{
    static char buf[WD_LIMIT_HEADERS_MAX + 16];
    memset(buf, '#', sizeof buf);
    size_t n = wd_limit_headers(d, buf);
    assert_true(n <= WD_LIMIT_HEADERS_MAX);
    for (size_t i = WD_LIMIT_HEADERS_MAX; i < sizeof buf; i++) assert_int_equal(buf[i], '#');
    buf[n] = 0;
    return buf;
}

static void test_both_kinds(void **state)
{
    (void)state;
    wd_limit_decision_t d = none();
    d.limit_requests = 60;
    d.remaining_requests = 59;
    d.reset_requests_ms = 1000;
    d.limit_tokens = 150000;
    d.remaining_tokens = 149000;
    d.reset_tokens_ms = 400;
    assert_string_equal(render(&d), "x-ratelimit-limit-requests: 60\r\n"
                                    "x-ratelimit-remaining-requests: 59\r\n"
                                    "x-ratelimit-reset-requests: 1s\r\n"
                                    "x-ratelimit-limit-tokens: 150000\r\n"
                                    "x-ratelimit-remaining-tokens: 149000\r\n"
                                    "x-ratelimit-reset-tokens: 400ms\r\n");
}

static void test_one_kind_or_none(void **state)
{
    (void)state;
    wd_limit_decision_t d = none();
    assert_string_equal(render(&d), "");
    d.limit_tokens = 10;
    d.remaining_tokens = 0;
    d.reset_tokens_ms = 0;
    assert_string_equal(render(&d), "x-ratelimit-limit-tokens: 10\r\n"
                                    "x-ratelimit-remaining-tokens: 0\r\n"
                                    "x-ratelimit-reset-tokens: 0ms\r\n");
    d = none();
    d.limit_requests = 0; /* a zero limit is still a limit of that kind */
    d.remaining_requests = -5;
    d.reset_requests_ms = -1;
    assert_string_equal(render(&d), "x-ratelimit-limit-requests: 0\r\n"
                                    "x-ratelimit-remaining-requests: 0\r\n"
                                    "x-ratelimit-reset-requests: 0ms\r\n");
}

static const char *reset_of(int64_t ms)
{
    wd_limit_decision_t d = none();
    d.limit_requests = 1;
    d.remaining_requests = 1;
    d.reset_requests_ms = ms;
    const char *s = render(&d);
    static char v[64];
    const char *p = strstr(s, "reset-requests: ");
    assert_non_null(p);
    p += strlen("reset-requests: ");
    size_t n = strcspn(p, "\r");
    assert_true(n < sizeof v);
    memcpy(v, p, n);
    v[n] = 0;
    return v;
}

static void test_durations(void **state)
{
    (void)state;
    assert_string_equal(reset_of(0), "0ms");
    assert_string_equal(reset_of(1), "1ms");
    assert_string_equal(reset_of(999), "999ms");
    assert_string_equal(reset_of(1000), "1s");
    assert_string_equal(reset_of(1500), "1.5s");
    assert_string_equal(reset_of(1050), "1.05s");
    assert_string_equal(reset_of(1001), "1.001s");
    assert_string_equal(reset_of(59999), "59.999s");
    assert_string_equal(reset_of(60000), "1m0s");
    assert_string_equal(reset_of(360000), "6m0s");
    assert_string_equal(reset_of(361999), "6m1s"); /* whole seconds only past a minute */
    assert_string_equal(reset_of(86400000), "1440m0s");
    assert_string_equal(reset_of(-7), "0ms");
    assert_string_equal(reset_of(INT64_MAX), "153722867280912m55s");
}

/* Every decimal length, both sides of each power of ten and of the 32-bit boundary. */
static void test_counts_every_length(void **state)
{
    (void)state;
    int64_t vals[64];
    size_t n = 0;
    for (int64_t p = 1; n < 40; p *= 10) {
        vals[n++] = p - 1;
        vals[n++] = p;
        vals[n++] = p + 1;
        if (p > INT64_MAX / 10) break;
    }
    vals[n++] = INT64_C(4294967295);
    vals[n++] = INT64_C(4294967296);
    vals[n++] = INT64_C(1999999504);
    vals[n++] = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        wd_limit_decision_t d = none();
        d.limit_tokens = vals[i];
        d.remaining_tokens = 7;
        d.reset_tokens_ms = 5;
        char want[160];
        snprintf(want, sizeof want,
                 "x-ratelimit-limit-tokens: %lld\r\nx-ratelimit-remaining-tokens: 7\r\nx-ratelimit-reset-tokens: 5ms\r\n",
                 (long long)vals[i]);
        assert_string_equal(render(&d), want);
    }
}

static void test_longest_block_fits(void **state)
{
    (void)state;
    wd_limit_decision_t d = none();
    d.limit_requests = d.remaining_requests = d.reset_requests_ms = INT64_MAX;
    d.limit_tokens = d.remaining_tokens = d.reset_tokens_ms = INT64_MAX;
    const char *s = render(&d);
    assert_int_equal(strlen(s), 296);
    assert_non_null(strstr(s, "x-ratelimit-remaining-tokens: 9223372036854775807\r\n"));
}

static void test_scope_set(void **state)
{
    (void)state;
    wd_limit_scope_t s;
    wd_limits_t lim = {.rpm = 7, .tokens_per_month = 9};
    memset(&s, 'z', sizeof s);
    wd_limit_scope_set(&s, "ip:", 3, "10.0.0.1 and more", 8, &lim); /* inputs need no NUL */
    assert_string_equal(s.key, "ip:10.0.0.1");
    assert_int_equal(s.lim.rpm, 7);
    assert_int_equal(s.lim.tokens_per_month, 9);
    wd_limit_scope_set(&s, "", 0, "key:abc", 7, &lim);
    assert_string_equal(s.key, "key:abc");

    /* too long: cut to WD_LIMIT_KEY_MAX - 1 bytes, like snprintf into the key */
    char id[WD_LIMIT_KEY_MAX * 2], want[WD_LIMIT_KEY_MAX + 8];
    memset(id, 'a', sizeof id);
    wd_limit_scope_set(&s, "role:", 5, id, sizeof id, &lim);
    memcpy(want, "role:", 5);
    memset(want + 5, 'a', WD_LIMIT_KEY_MAX - 1 - 5);
    want[WD_LIMIT_KEY_MAX - 1] = 0;
    assert_int_equal(strlen(s.key), WD_LIMIT_KEY_MAX - 1);
    assert_string_equal(s.key, want);
    char pre[WD_LIMIT_KEY_MAX + 10];
    memset(pre, 'p', sizeof pre);
    wd_limit_scope_set(&s, pre, sizeof pre, "x", 1, &lim); /* even the prefix alone is cut */
    assert_int_equal(strlen(s.key), WD_LIMIT_KEY_MAX - 1);
    assert_int_equal(s.key[WD_LIMIT_KEY_MAX - 2], 'p');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_kinds),
        cmocka_unit_test(test_one_kind_or_none),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_counts_every_length),
        cmocka_unit_test(test_longest_block_fits),
        cmocka_unit_test(test_scope_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

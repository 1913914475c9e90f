/* Tests for src/core/core.c: string views, capped buffers, JSON string escaping, time formatting,
 * random bytes and error formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core.h"
#include "core/json.h"

static void test_str(void **state)
{
    (void)state;
    assert_true(wd_str_eq(WD_STR("abc"), wd_strz("abc")));
    assert_false(wd_str_eq(WD_STR("abc"), WD_STR("abd")));
    assert_false(wd_str_eq(WD_STR("abc"), WD_STR("ab")));
    assert_true(wd_str_eq(wd_str(NULL, 0), WD_STR(""))); /* empty views compare equal whatever the pointer */
    assert_true(wd_str_eq(wd_strz(NULL), wd_str(NULL, 0)));
    assert_int_equal(wd_strz(NULL).len, 0);
    assert_true(wd_str_ieq(WD_STR("Content-Length"), WD_STR("content-LENGTH")));
    assert_false(wd_str_ieq(WD_STR("abc"), WD_STR("abcd")));
    assert_false(wd_str_ieq(WD_STR("a["), WD_STR("A{"))); /* only letters fold: '[' + 32 is '{' */
    assert_false(wd_str_ieq(WD_STR("\xc3\xa9"), WD_STR("\xc3\x89"))); /* ASCII only */
    assert_true(wd_str_ieq_z(WD_STR("Bearer"), "bEARER"));
    assert_false(wd_str_ieq_z(WD_STR("Bearer"), "Bearer "));
}

static void test_buf_basic(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_null(b.data);
    assert_int_equal(wd_buf_append(&b, NULL, 0), WD_OK);
    assert_null(b.data); /* nothing allocated for nothing */
    assert_int_equal(wd_buf_append(&b, "hello", 5), WD_OK);
    assert_int_equal(wd_buf_append_str(&b, " world"), WD_OK);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "hello world", 11);
    /* Growth keeps the content. */
    char big[5000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)('a' + i % 26);
    assert_int_equal(wd_buf_append(&b, big, sizeof big), WD_OK);
    assert_int_equal(b.len, 11 + sizeof big);
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.data, "hello world", 11);
    assert_memory_equal(b.data + 11, big, sizeof big);

    wd_buf_consume(&b, 6);
    assert_int_equal(b.len, 5 + sizeof big);
    assert_memory_equal(b.data, "world", 5);
    wd_buf_consume(&b, 0);
    assert_int_equal(b.len, 5 + sizeof big);
    wd_buf_consume(&b, 1u << 20); /* more than held: empties */
    assert_int_equal(b.len, 0);
    assert_int_equal(wd_buf_append(&b, "x", 1), WD_OK);
    wd_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data);
    wd_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    wd_buf_free(&b); /* idempotent */
}

static void test_buf_limit(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 10);
    assert_int_equal(wd_buf_append(&b, "0123456789", 10), WD_OK); /* exactly the limit */
    assert_true(b.cap <= 10);
    assert_int_equal(wd_buf_append(&b, "x", 1), WD_E2BIG);
    assert_int_equal(b.len, 10); /* unchanged on failure */
    assert_memory_equal(b.data, "0123456789", 10);
    wd_buf_consume(&b, 4);
    assert_int_equal(wd_buf_append(&b, "abcd", 4), WD_OK);
    assert_memory_equal(b.data, "456789abcd", 10);
    assert_int_equal(wd_buf_reserve(&b, 1), WD_E2BIG);
    assert_int_equal(wd_buf_reserve(&b, 0), WD_OK);
    /* extra large enough to overflow len + extra */
    assert_int_equal(wd_buf_reserve(&b, SIZE_MAX), WD_E2BIG);
    assert_int_equal(wd_buf_reserve(&b, SIZE_MAX - 5), WD_E2BIG);
    wd_buf_free(&b);

    wd_buf_t u;
    wd_buf_init(&u, 0);
    assert_int_equal(wd_buf_append(&u, "ab", 2), WD_OK);
    assert_int_equal(wd_buf_reserve(&u, SIZE_MAX - 1), WD_E2BIG); /* overflow guard without a limit */
    assert_int_equal(u.len, 2);
    /* A limit above the first allocation step grows past 256 and stops at the limit. */
    wd_buf_t c;
    wd_buf_init(&c, 300);
    char tmp[300];
    memset(tmp, 'q', sizeof tmp);
    assert_int_equal(wd_buf_append(&c, tmp, 200), WD_OK);
    assert_int_equal(wd_buf_append(&c, tmp, 100), WD_OK);
    assert_int_equal(c.cap, 300);
    assert_int_equal(wd_buf_append(&c, tmp, 1), WD_E2BIG);
    wd_buf_free(&c);
    wd_buf_free(&u);
}

static void test_buf_printf(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_buf_printf(&b, "%s=%d", "n", 42), WD_OK);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "n=42", 4);
    /* Longer than the 512-byte stack fast path. */
    char big[2000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(wd_buf_printf(&b, "[%s]", big), WD_OK);
    assert_int_equal(b.len, 4 + 2 + sizeof big - 1);
    assert_int_equal(b.data[4], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    assert_int_equal(b.data[b.len - 2], 'z');
    wd_buf_free(&b);

    wd_buf_t l;
    wd_buf_init(&l, 8);
    assert_int_equal(wd_buf_printf(&l, "%d", 1234567), WD_OK);
    assert_int_equal(wd_buf_printf(&l, "%d", 12), WD_E2BIG);
    assert_int_equal(l.len, 7);
    assert_int_equal(wd_buf_printf(&l, "%d", 1), WD_OK); /* fills exactly to the limit */
    assert_memory_equal(l.data, "12345671", 8);
    wd_buf_free(&l);

    /* A long formatted string that fits the limit exactly (no room for vsnprintf's NUL). */
    wd_buf_t x;
    wd_buf_init(&x, 1000);
    char s[1001];
    memset(s, 'y', 1000);
    s[1000] = 0;
    assert_int_equal(wd_buf_printf(&x, "%s", s), WD_OK);
    assert_int_equal(x.len, 1000);
    assert_memory_equal(x.data, s, 1000);
    assert_int_equal(wd_buf_printf(&x, "%s", "a"), WD_E2BIG);
    wd_buf_free(&x);
    wd_buf_init(&x, 999);
    assert_int_equal(wd_buf_printf(&x, "%s", s), WD_E2BIG);
    assert_int_equal(x.len, 0);
    wd_buf_free(&x);
}

/* Parses "\"" + escaped + "\"" with the strict scanner and returns the decoded bytes. */
static void roundtrip(const char *in, size_t n)
{
    wd_buf_t b, dec;
    wd_buf_init(&b, 0);
    wd_buf_init(&dec, 0);
    assert_int_equal(wd_buf_append(&b, "\"", 1), WD_OK);
    assert_int_equal(wd_buf_append_json_str(&b, in, n), WD_OK);
    assert_int_equal(wd_buf_append(&b, "\"", 1), WD_OK);
    wd_json_tok_t toks[2];
    wd_json_doc_t d;
    char err[128];
    if (wd_json_parse(&d, b.data, b.len, toks, 2, 0, err, sizeof err) != WD_OK)
        fail_msg("escaped output is not a JSON string: %s: %.*s", err, (int)b.len, b.data);
    assert_int_equal(wd_json_str_decode(&d, 0, &dec), WD_OK);
    assert_int_equal(dec.len, n);
    if (n) assert_memory_equal(dec.data, in, n);
    wd_buf_free(&b);
    wd_buf_free(&dec);
}

static void test_json_str(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_buf_append_json_str(&b, "plain text", 10), WD_OK);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "plain text", 10);
    wd_buf_reset(&b);
    const char in[] = "q\"b\\n\nr\rt\tb\bf\fz\x01\x1f\x7f/\xc3\xa9";
    assert_int_equal(wd_buf_append_json_str(&b, in, sizeof in - 1), WD_OK);
    const char want[] = "q\\\"b\\\\n\\nr\\rt\\tb\\u0008f\\u000cz\\u0001\\u001f\x7f/\xc3\xa9";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, b.len);
    /* Embedded NUL is escaped, not a terminator. */
    wd_buf_reset(&b);
    assert_int_equal(wd_buf_append_json_str(&b, "a\0b", 3), WD_OK);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "a\\u0000b", 8);
    /* Empty input appends nothing. */
    wd_buf_reset(&b);
    assert_int_equal(wd_buf_append_json_str(&b, "", 0), WD_OK);
    assert_int_equal(b.len, 0);
    /* ... also from an empty buffer's NULL data (clang's UBSan flags NULL + 0) */
    assert_int_equal(wd_buf_append_json_str(&b, NULL, 0), WD_OK);
    assert_int_equal(b.len, 0);
    wd_buf_free(&b);

    /* Every ASCII byte, and multi-byte UTF-8, survives escape + strict parse + decode unchanged. */
    char all[128];
    for (int i = 0; i < 128; i++) all[i] = (char)i;
    roundtrip(all, sizeof all);
    roundtrip("\xf0\x9f\x98\x80 \xe2\x82\xac \xf4\x8f\xbf\xbf \"\\", 17);
    roundtrip("", 0);

    /* Eight bytes at a time: a byte that needs escaping (and its neighbours in value, which do not)
     * at every offset of a run longer than two words is escaped exactly once, wherever it falls. */
    static const unsigned char probes[] = {'"', '\\', 0x00, 0x1f, 0x20, 0x21, '!',
                                           '#', '[',  ']',  0x7f, 0x80, 0xff};
    for (size_t k = 0; k < sizeof probes; k++) {
        unsigned char c = probes[k];
        bool esc = c < 0x20 || c == '"' || c == '\\';
        for (size_t at = 0; at < 24; at++) {
            char run[24];
            memset(run, 'a', sizeof run);
            run[at] = (char)c;
            wd_buf_reset(&b);
            assert_int_equal(wd_buf_append_json_str(&b, run, sizeof run), WD_OK);
            size_t want_len = sizeof run + (esc ? (c == '"' || c == '\\' ? 1 : 5) : 0);
            if (b.len != want_len)
                fail_msg("byte 0x%02x at %zu: %zu bytes, want %zu", c, at, b.len, want_len);
            assert_memory_equal(b.data, run, at);
            assert_int_equal(b.data[at], esc ? '\\' : (char)c);
        }
    }
    wd_buf_free(&b);

    /* The limit is honoured. */
    wd_buf_t l;
    wd_buf_init(&l, 4);
    assert_int_equal(wd_buf_append_json_str(&l, "\n\n\n", 3), WD_E2BIG);
    wd_buf_free(&l);
}

static void test_time(void **state)
{
    (void)state;
    char out[32];
    wd_format_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    wd_format_rfc3339(1700000000123ull, out);
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
    wd_format_rfc3339(951782400999ull, out); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00.999Z");
    /* RFC 3339 has four-digit years: far-future times clamp rather than overflow the format. */
    wd_format_rfc3339(UINT64_MAX, out);
    assert_int_equal(strlen(out), 24);
    assert_memory_equal(out, "9999-12-31T23:59:59.", 20);
    wd_format_rfc3339(253402300800000ull, out); /* 10000-01-01 */
    assert_memory_equal(out, "9999-12-31T23:59:59.", 20);
    wd_format_rfc3339(253402300799000ull, out); /* the last representable second */
    assert_string_equal(out, "9999-12-31T23:59:59.000Z");

    /* Every day boundary of years 1970..2400 and pseudo-random instants up to 9999, against gmtime_r. */
    uint64_t x = 88172645463325252ull;
    for (uint64_t i = 0; i < 400000; i++) {
        uint64_t ms;
        if (i < 157000) {
            ms = i * 86400000ull - (i & 1); /* the last ms of the day before, or midnight */
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ms = x % 253402300800000ull;
        }
        time_t s = (time_t)(ms / 1000);
        struct tm tm;
        assert_non_null(gmtime_r(&s, &tm));
        char want[64];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
        wd_format_rfc3339(ms, out);
        if (strcmp(out, want) != 0) fail_msg("%llu: %s, want %s", (unsigned long long)ms, out, want);
    }

    uint64_t a = wd_now_ns(), b2 = wd_now_ns();
    assert_true(b2 >= a);
    assert_true(wd_wall_ms() > 1700000000000ull);
}

static void test_buf_numbers(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_buf_append_u64(&b, 0), 0);
    assert_int_equal(wd_buf_append_str(&b, " "), 0);
    assert_int_equal(wd_buf_append_u64(&b, UINT64_MAX), 0);
    assert_int_equal(wd_buf_append_str(&b, " "), 0);
    assert_int_equal(wd_buf_append_i64(&b, INT64_MIN), 0);
    assert_int_equal(wd_buf_append_str(&b, " "), 0);
    assert_int_equal(wd_buf_append_i64(&b, -1), 0);
    assert_int_equal(wd_buf_append_str(&b, " "), 0);
    assert_int_equal(wd_buf_append_i64(&b, INT64_MAX), 0);
    assert_int_equal(wd_buf_append_str(&b, " "), 0);
    assert_int_equal(wd_buf_append_u64(&b, 1000000007), 0);
    const char *want = "0 18446744073709551615 -9223372036854775808 -1 9223372036854775807 1000000007";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    wd_buf_free(&b);
    /* a number that does not fit is not cut: nothing is appended, the sign included */
    wd_buf_init(&b, 3);
    assert_int_equal(wd_buf_append_i64(&b, -123), WD_E2BIG);
    assert_int_equal(wd_buf_append_u64(&b, 1234), WD_E2BIG);
    assert_int_equal(b.len, 0);
    assert_int_equal(wd_buf_append_i64(&b, -12), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "-12", 3);
    wd_buf_free(&b);
}

static void test_random(void **state)
{
    (void)state;
    unsigned char a[64], b[64], zero[64] = {0};
    assert_int_equal(wd_random(a, sizeof a), WD_OK);
    assert_int_equal(wd_random(b, sizeof b), WD_OK);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_int_equal(wd_random(a, 0), WD_OK);
    /* Large requests are looped until filled (getrandom returns at most 32 MiB - 1 per call). */
    size_t n = 1u << 20;
    unsigned char *big = calloc(1, n);
    assert_non_null(big);
    assert_int_equal(wd_random(big, n), WD_OK);
    size_t zeros = 0;
    for (size_t i = n - 4096; i < n; i++) zeros += big[i] == 0;
    assert_true(zeros < 100); /* ~16 expected; an unfilled tail would be 4096 */
    free(big);
}

static void test_errf(void **state)
{
    (void)state;
    char err[16];
    assert_int_equal(wd_errf(err, sizeof err, WD_EINVAL, "line %d: %s", 7, "bad"), WD_EINVAL);
    assert_string_equal(err, "line 7: bad");
    assert_int_equal(wd_errf(err, sizeof err, WD_E2BIG, "%s", "a very long message indeed"), WD_E2BIG);
    assert_string_equal(err, "a very long mes"); /* truncated and terminated */
    assert_int_equal(wd_errf(NULL, 0, WD_ENOMEM, "x"), WD_ENOMEM);
    err[0] = 'Z';
    assert_int_equal(wd_errf(err, 0, WD_EIO, "x"), WD_EIO);
    assert_int_equal(err[0], 'Z');
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/wd-test-readfile-XXXXXX", err[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(wd_read_file(path, 5, &buf, &len, err, sizeof err), WD_OK);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello"); /* NUL-terminated */
    free(buf);
    /* one byte over the limit: refused with the size, nothing handed out */
    buf = NULL;
    assert_int_equal(wd_read_file(path, 4, &buf, &len, err, sizeof err), WD_E2BIG);
    assert_null(buf);
    char want[320];
    snprintf(want, sizeof want, "%s: file too large (5 bytes; the limit is 4)", path);
    assert_string_equal(err, want);
    /* an empty file is read as empty */
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(wd_read_file(path, 4, &buf, &len, err, sizeof err), WD_OK);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
    unlink(path);
    assert_int_equal(wd_read_file(path, 4, &buf, &len, err, sizeof err), WD_EIO);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(wd_read_file("/tmp", 4, &buf, &len, err, sizeof err), WD_EINVAL);
    assert_string_equal(err, "/tmp: not a regular file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str),         cmocka_unit_test(test_buf_basic),
        cmocka_unit_test(test_buf_limit),   cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_json_str),    cmocka_unit_test(test_time),
        cmocka_unit_test(test_buf_numbers), cmocka_unit_test(test_random),
        cmocka_unit_test(test_errf),        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

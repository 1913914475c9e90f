/* Request events: the exact JSON line for a full and a minimal event (every optional field, nulls,
 * unknown token counts, escaping), and nothing half-written when the buffer cannot take the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "audit/event.h"

static void full_event(wd_event_t *e)
{
    wd_event_init(e);
    strcpy(e->request_id, "rq0123456789abcdef");
    e->wall_ms = 1795633200123ull;
    strcpy(e->client_ip, "::1");
    strcpy(e->method, "POST");
    strcpy(e->path, "/v1/chat/completions");
    e->route = "chat";
    strcpy(e->principal, "key:AbC\"d");
    strcpy(e->roles, "app,ops");
    e->mfa = true;
    strcpy(e->model, "gpt-4o-mini");
    strcpy(e->upstream, "sim");
    strcpy(e->upstream_model, "sim-small");
    e->status = 429;
    e->decision = "deny";
    strcpy(e->code, "rate_limited");
    strcpy(e->reason, "line1\nline2\t\x01");
    strcpy(e->rule, "limit:key:rpm");
    e->upstream_error = "timeout";
    strcpy(e->guard_profile, "strict");
    strcpy(e->guard, "EMAIL:pseudonymize:2");
    e->stream = true;
    e->stream_events = 4294967295u;
    e->prompt_tokens = -1;
    e->completion_tokens = 9223372036854775807ll;
    e->usage_reported = true;
    e->bytes_in = 0;
    e->bytes_out = 18446744073709551615ull;
    e->total_us = 1234567;
    e->upstream_us = 1000000;
    e->overhead_us = 234567;
    e->ttfb_us = 10;
}

static void test_full(void **state)
{
    (void)state;
    wd_event_t e;
    full_event(&e);
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_buf_append_str(&b, "x"), 0);
    assert_int_equal(wd_event_to_json(&e, &b), 0);
    const char *want =
        "x{\"ts\":\"2026-11-25T19:00:00.123Z\",\"type\":\"request\",\"request_id\":\"rq0123456789abcdef\","
        "\"client_ip\":\"::1\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"route\":\"chat\","
        "\"principal\":\"key:AbC\\\"d\",\"roles\":\"app,ops\",\"mfa\":true,\"model\":\"gpt-4o-mini\","
        "\"upstream\":\"sim\",\"upstream_model\":\"sim-small\",\"status\":429,\"decision\":\"deny\","
        "\"code\":\"rate_limited\",\"reason\":\"line1\\nline2\\t\\u0001\",\"rule\":\"limit:key:rpm\","
        "\"upstream_error\":\"timeout\",\"guard_profile\":\"strict\",\"guard\":\"EMAIL:pseudonymize:2\","
        "\"stream\":true,\"stream_events\":4294967295,"
        "\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":9223372036854775807,\"reported\":true},"
        "\"bytes_in\":0,\"bytes_out\":18446744073709551615,\"duration_us\":1234567,\"upstream_us\":1000000,"
        "\"overhead_us\":234567,\"ttfb_us\":10}\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    wd_buf_free(&b);
}

static void test_minimal(void **state)
{
    (void)state;
    wd_event_t e;
    wd_event_init(&e);
    e.wall_ms = 0;
    e.status = 404;
    e.client_ip[0] = 0;
    e.mfa = true; /* only shown with a principal */
    e.prompt_tokens = -1;
    e.completion_tokens = 0;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_event_to_json(&e, &b), 0);
    const char *want =
        "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"type\":\"request\",\"request_id\":\"\",\"client_ip\":\"\","
        "\"method\":\"\",\"path\":\"\",\"route\":\"none\",\"model\":null,\"upstream\":null,\"upstream_model\":null,"
        "\"status\":404,\"decision\":\"allow\",\"stream\":false,"
        "\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":0,\"reported\":false},"
        "\"bytes_in\":0,\"bytes_out\":0,\"duration_us\":0,\"upstream_us\":0,\"overhead_us\":0,\"ttfb_us\":0}\n";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    /* no token count known: no usage object; a negative status is printed as it is */
    wd_buf_reset(&b);
    e.completion_tokens = -1;
    e.status = -1;
    assert_int_equal(wd_event_to_json(&e, &b), 0);
    assert_null(memmem(b.data, b.len, "usage", 5)); /* the buffer is not NUL-terminated */
    assert_non_null(memmem(b.data, b.len, ",\"status\":-1,", 13));
    wd_buf_free(&b);
}

/* A buffer that cannot take the whole line keeps what it had: no partial line reaches the log. */
static void test_no_partial_line(void **state)
{
    (void)state;
    wd_event_t e;
    full_event(&e);
    wd_buf_t whole;
    wd_buf_init(&whole, 0);
    assert_int_equal(wd_event_to_json(&e, &whole), 0);
    for (size_t room = 0; room < whole.len; room += 7) {
        wd_buf_t b;
        wd_buf_init(&b, 3 + room);
        assert_int_equal(wd_buf_append_str(&b, "abc"), 0);
        assert_int_equal(wd_event_to_json(&e, &b), WD_E2BIG);
        assert_int_equal(b.len, 3);
        wd_buf_free(&b);
    }
    wd_buf_t b;
    wd_buf_init(&b, whole.len);
    assert_int_equal(wd_event_to_json(&e, &b), 0);
    assert_memory_equal(b.data, whole.data, whole.len);
    wd_buf_free(&b);
    wd_buf_free(&whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_no_partial_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Admin events: one JSON line with the fixed shape, strings escaped (a hostile name cannot forge a
 * field or a second line), detail optional, required fields enforced, nothing half-written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "audit/admin_event.h"

static void test_shape(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_event_admin_to_json(1795633200123ull, "cli:alice", "key.create", "AbCdEf123456", "ok", NULL, &b),
                     0);
    assert_true(b.len > 0 && b.data[b.len - 1] == '\n');
    assert_null(memchr(b.data, '\n', b.len - 1));
    json_error_t e;
    json_t *o = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "admin");
    assert_string_equal(json_string_value(json_object_get(o, "ts")), "2026-11-25T19:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(o, "actor")), "cli:alice");
    assert_string_equal(json_string_value(json_object_get(o, "action")), "key.create");
    assert_string_equal(json_string_value(json_object_get(o, "target")), "AbCdEf123456");
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "ok");
    assert_null(json_object_get(o, "detail"));
    assert_int_equal(json_object_size(o), 6);
    json_decref(o);
    wd_buf_free(&b);
}

static void test_escaping_and_detail(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    const char *evil = "bob\",\"outcome\":\"ok\"}\n{\"x\":\"";
    assert_int_equal(wd_event_admin_to_json(0, "cli:root", "user.add", evil, "failed", "new key \x01 \\", &b), 0);
    assert_null(memchr(b.data, '\n', b.len - 1)); /* still one line */
    json_t *o = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "target")), evil);
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "failed");
    assert_string_equal(json_string_value(json_object_get(o, "detail")), "new key \x01 \\");
    json_decref(o);
    wd_buf_free(&b);
}

static void test_required_and_atomic(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_event_admin_to_json(0, NULL, "a", "t", "ok", NULL, &b), WD_EINVAL);
    assert_int_equal(wd_event_admin_to_json(0, "x", NULL, "t", "ok", NULL, &b), WD_EINVAL);
    assert_int_equal(wd_event_admin_to_json(0, "x", "a", "t", NULL, NULL, &b), WD_EINVAL);
    assert_int_equal(b.len, 0);
    /* NULL target is written as "" */
    assert_int_equal(wd_event_admin_to_json(0, "x", "a", NULL, "ok", NULL, &b), 0);
    assert_non_null(strstr(b.data, "\"target\":\"\""));
    wd_buf_free(&b);
    /* a capped buffer that cannot take the whole line keeps nothing of it */
    wd_buf_t small;
    wd_buf_init(&small, 64);
    wd_buf_append_str(&small, "prefix");
    assert_int_not_equal(wd_event_admin_to_json(0, "cli:someone-with-a-long-name", "key.create", "target", "ok",
                                                "detail", &small),
                         0);
    assert_int_equal(small.len, 6);
    wd_buf_free(&small);
}

static void test_writer(void **state)
{
    (void)state;
    char path[] = "/tmp/wd_admin_event_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    assert_int_equal(wd_event_sink_open(path, err, sizeof err), 0);
    wd_event_writer_t w;
    wd_event_writer_init(&w);
    assert_int_equal(wd_event_admin(&w, "cli:a", "key.revoke", "id1", "ok", NULL), 0);
    assert_int_equal(wd_event_admin(&w, "cli:a", "key.revoke", "id2", "failed", NULL), 0);
    wd_event_writer_free(&w);
    wd_event_sink_close();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "target")), n ? "id2" : "id1");
        json_decref(o);
        n++;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(n, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_escaping_and_detail),
        cmocka_unit_test(test_required_and_atomic),
        cmocka_unit_test(test_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

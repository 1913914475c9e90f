/* Usage estimates from text (limit/estimate.h): a known answer or prompt text gives a known figure,
 * whatever JSON, SSE framing or escaping carries it, and nothing outside the text counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "limit/estimate.h"

static int64_t answer(const char *s)
{
    return wd_limit_answer_bytes(s, strlen(s));
}

static int64_t sse(const char *s)
{
    wd_buf_t scratch;
    wd_buf_init(&scratch, 0);
    int64_t n = wd_limit_sse_answer_bytes(s, strlen(s), &scratch);
    wd_buf_free(&scratch);
    return n;
}

static int64_t prompt(const char *s)
{
    wd_json_tok_t toks[512];
    wd_json_doc_t d;
    assert_int_equal(wd_json_parse(&d, s, strlen(s), toks, 512, 0, NULL, 0), WD_OK);
    return wd_limit_prompt_tokens(&d);
}

static void test_tokens_of_bytes(void **st)
{
    (void)st;
    assert_int_equal(wd_limit_tokens_of_bytes(0), 0);
    assert_int_equal(wd_limit_tokens_of_bytes(1), 1);
    assert_int_equal(wd_limit_tokens_of_bytes(4), 1);
    assert_int_equal(wd_limit_tokens_of_bytes(5), 2);
    assert_int_equal(wd_limit_tokens_of_bytes(400), 100);
    assert_int_equal(wd_limit_tokens_of_bytes(UINT64_MAX), (int64_t)(UINT64_MAX / 4 + 1));
}

/* A whole chat answer: only the assistant's content counts, not the ~250 bytes of JSON around it. */
static void test_chat_answer_is_its_text(void **st)
{
    (void)st;
    const char *body =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello there, "
        "friend.\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}]}";
    assert_int_equal(answer(body), 20); /* "Hello there, friend." */
    assert_int_equal(wd_limit_tokens_of_bytes((uint64_t)answer(body)), 5);
    /* escapes count as the bytes they decode to: \n 1, \" 1, \u00e9 2 (é), \u4e2d 3, a surrogate pair 4 */
    assert_int_equal(
        answer("{\"choices\":[{\"message\":{\"content\":\"a\\nb\\\"\\u00e9\\u4e2d\\ud83d\\ude00\"}}]}"),
        1 + 1 + 1 + 1 + 2 + 3 + 4);
    /* raw UTF-8 counts its bytes */
    assert_int_equal(answer("{\"choices\":[{\"message\":{\"content\":\"\xc3\xa9\"}}]}"), 2);
    /* refusals, reasoning and tool call arguments are generated text too; names and ids are not */
    assert_int_equal(
        answer("{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"no\",\"reasoning_content\":"
               "\"abc\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
               "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}],\"function_call\":"
               "{\"name\":\"f\",\"arguments\":\"{}\"}}}]}"),
        2 + 3 + 15 + 2);
    /* content as parts, several choices */
    assert_int_equal(answer("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"abcd\"},"
                            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y\"}}]}},"
                            "{\"message\":{\"content\":\"ef\"}}]}"),
                     6);
}

static void test_completions_and_others(void **st)
{
    (void)st;
    assert_int_equal(
        answer("{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"echo: Say "
               "this\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"},{\"text\":\"xy\"}]}"),
        14 + 2);
    /* no choices: an error, an embeddings list, the usage-only chunk */
    assert_int_equal(answer("{\"error\":{\"message\":\"long message text\",\"type\":\"x\",\"code\":null}}"),
                     0);
    assert_int_equal(answer("{\"object\":\"list\",\"data\":[{\"embedding\":[0.1,0.2]}],\"usage\":{}}"), 0);
    assert_int_equal(answer("{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}"), 0);
    /* not JSON (or not one value): unknown */
    assert_int_equal(answer("Internal Server Error"), -1);
    assert_int_equal(answer("{\"choices\":[]} {}"), -1);
    assert_int_equal(answer(""), -1);
}

/* A long answer needs more tokens than the stack array: measured all the same. */
static void test_large_answer(void **st)
{
    (void)st;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    wd_buf_append_str(&b, "{\"choices\":[");
    for (int i = 0; i < 1000; i++) {
        if (i) wd_buf_append_str(&b, ",");
        wd_buf_append_str(&b,
                          "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"0123456789\"}}");
    }
    wd_buf_append_str(&b, "]}");
    assert_int_equal(wd_limit_answer_bytes(b.data, b.len), 10000);
    wd_buf_free(&b);
}

static void test_sse_events(void **st)
{
    (void)st;
    const char *delta =
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"quick \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
    assert_int_equal(sse(delta), 6);
    assert_int_equal(sse("data:{\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\r\n\r\n"),
                     2); /* no space, CRLF */
    assert_int_equal(sse("data: [DONE]\n\n"), 0);
    assert_int_equal(sse(": keep-alive comment\n\n"), 0);
    assert_int_equal(sse("event: ping\ndata:\n\n"), 0);
    assert_int_equal(sse("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"),
                     0);
    /* one JSON value split over two data lines is joined with "\n" */
    assert_int_equal(sse("data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"hello\"}}]}\n\n"), 5);
    /* data that is not JSON is charged whole rather than ignored */
    assert_int_equal(sse("data: plain words\n\n"), 11);
    assert_int_equal(sse("id: 7\ndata: ab\ndata: cd\n\n"), 5); /* "ab\ncd" */
}

static void test_prompt(void **st)
{
    (void)st;
    /* chat: every message's content ("be brief" 8 + "hello there" 11 = 19 bytes -> 5 tokens) */
    assert_int_equal(
        prompt("{\"model\":\"gpt-4o-mini\",\"max_tokens\":500,\"messages\":[{\"role\":\"system\","
               "\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hello there\"}]}"),
        5);
    assert_int_equal(
        prompt("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"abcd\"},"
               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://example.com/x.png\"}},"
               "{\"type\":\"text\",\"text\":\"e\\u00e9\"}]},{\"role\":\"assistant\",\"content\":null}]}"),
        2); /* 4 + 3 bytes */
    /* completions and embeddings: strings, or token ids counted one each */
    assert_int_equal(prompt("{\"model\":\"m\",\"prompt\":\"Say this\"}"), 2);
    assert_int_equal(prompt("{\"model\":\"m\",\"prompt\":[\"a\",\"bcdef\"]}"), 2);
    assert_int_equal(prompt("{\"model\":\"m\",\"prompt\":[1,2,3]}"), 3);
    assert_int_equal(prompt("{\"model\":\"e\",\"input\":[[1,2],[3,4,5]]}"), 5);
    assert_int_equal(prompt("{\"model\":\"e\",\"input\":\"hello world\"}"), 3);
    assert_int_equal(prompt("{\"model\":\"e\"}"), 0);
    assert_int_equal(prompt("[1,2]"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_of_bytes),
        cmocka_unit_test(test_chat_answer_is_its_text),
        cmocka_unit_test(test_completions_and_others),
        cmocka_unit_test(test_large_answer),
        cmocka_unit_test(test_sse_events),
        cmocka_unit_test(test_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

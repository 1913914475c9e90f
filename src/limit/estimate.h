/* limit/estimate: token usage estimated from text, for the requests whose upstream reports no
 * usage. A request's reservation is deliberately generous (the whole body); the estimate charged
 * afterwards counts only what a model reads and writes: the text of the prompt (message contents,
 * prompt strings, embedding inputs) and the text of the answer (message or delta content, refusals,
 * tool call arguments, completion text), at WD_LIMIT_BYTES_PER_TOKEN bytes a token, rounded up once
 * over the whole text. JSON syntax, SSE framing, ids, roles and other metadata are not text and do
 * not count. Knows the OpenAI request and response shapes, nothing about HTTP. */
#ifndef WD_LIMIT_ESTIMATE_H
#define WD_LIMIT_ESTIMATE_H

#include "core/json.h"

#define WD_LIMIT_BYTES_PER_TOKEN 4

/* ceil(bytes / WD_LIMIT_BYTES_PER_TOKEN), saturating at INT64_MAX. */
int64_t wd_limit_tokens_of_bytes(uint64_t bytes);

/* Estimated prompt tokens of a parsed request body (token 0 the root object): the decoded text of
 * messages[].content (a string, or the "text" of each part of an array), of "prompt" (a string or
 * an array of strings) and of "input" (a string or an array of strings), as tokens; token arrays in
 * "prompt" or "input" (arrays of integers, or arrays of them) count one token per integer. */
int64_t wd_limit_prompt_tokens(const wd_json_doc_t *doc);

/* Decoded bytes of answer text in one JSON response object: a whole non-streamed answer or one
 * streamed chunk. Counts, for every choice, message.content / delta.content (a string, or the
 * "text" of each part), .refusal, .reasoning_content, .tool_calls[].function.arguments and
 * .function_call.arguments, and the choice's "text" (completions). An object without choices
 * (an error, an embeddings list, the usage-only chunk) has 0. Returns -1 when p..p+len is not one
 * valid JSON value. */
int64_t wd_limit_answer_bytes(const char *p, size_t len);

/* The same for one raw SSE event ("data: {...}\n\n", several data lines joined by "\n" as the SSE
 * rules say): the answer bytes of its data. An event without data and "[DONE]" have 0; data that is
 * not JSON counts in full (an unknown answer format is charged, not ignored). scratch holds joined
 * data lines and may be reused across calls. */
int64_t wd_limit_sse_answer_bytes(const char *raw, size_t len, wd_buf_t *scratch);

#endif

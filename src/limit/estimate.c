/* Usage estimates from text (see estimate.h). Walks the zero-copy JSON tokens and measures decoded
 * string lengths without decoding them into a buffer: these run on every event of a limited stream
 * whose upstream might not report usage. */
#include <stdlib.h>

#include "limit/estimate.h"

int64_t wd_limit_tokens_of_bytes(uint64_t bytes)
{
    uint64_t t = bytes / WD_LIMIT_BYTES_PER_TOKEN + (bytes % WD_LIMIT_BYTES_PER_TOKEN != 0);
    return t > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)t;
}

static unsigned u4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 4 | (unsigned)wd_hex_digit(p[i]);
    return v;
}

/* UTF-8 length of a string token's decoded value. The parser has validated every escape (complete
 * \u sequences, surrogates in pairs), so this only measures. */
static uint64_t str_bytes(const wd_json_doc_t *d, int tok)
{
    if (tok < 0 || d->toks[tok].type != WD_JSON_STRING) return 0;
    const wd_json_tok_t *t = &d->toks[tok];
    if (!t->escaped) return t->end - t->start;
    const char *p = d->src + t->start, *end = d->src + t->end;
    uint64_t n = 0;
    while (p < end) {
        if (*p != '\\') {
            n++;
            p++;
            continue;
        }
        if (p[1] != 'u') {
            n++;
            p += 2;
            continue;
        }
        unsigned cp = u4(p + 2);
        p += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate: its low half follows as \uXXXX */
            n += 4;
            p += 6;
        } else {
            n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
        }
    }
    return n;
}

/* First element of a container and the one after e (tokens are in document order). */
static int first_child(const wd_json_doc_t *d, int tok)
{
    return d->toks[tok].size ? tok + 1 : -1;
}
static int next_elem(const wd_json_doc_t *d, int e)
{
    return (int)d->toks[e].next;
}

static bool is(const wd_json_doc_t *d, int tok, wd_json_type_t type)
{
    return tok >= 0 && d->toks[tok].type == type;
}

/* A message content: a string, or an array of parts whose "text" counts (images and audio are not
 * text this estimate can measure). */
static uint64_t content_bytes(const wd_json_doc_t *d, int c)
{
    if (is(d, c, WD_JSON_STRING)) return str_bytes(d, c);
    if (!is(d, c, WD_JSON_ARRAY)) return 0;
    uint64_t n = 0;
    int e = first_child(d, c);
    for (uint32_t i = 0; i < d->toks[c].size; i++, e = next_elem(d, e))
        if (is(d, e, WD_JSON_OBJECT)) n += str_bytes(d, wd_json_obj_get(d, e, "text"));
    return n;
}

/* "prompt" or "input": a string, or an array of strings, of integers (token ids) or of arrays of
 * integers. Text goes to *bytes, token ids to *ids. */
static void input_size(const wd_json_doc_t *d, int v, uint64_t *bytes, uint64_t *ids)
{
    if (is(d, v, WD_JSON_STRING)) *bytes += str_bytes(d, v);
    if (!is(d, v, WD_JSON_ARRAY)) return;
    int e = first_child(d, v);
    for (uint32_t i = 0; i < d->toks[v].size; i++, e = next_elem(d, e)) {
        if (is(d, e, WD_JSON_STRING))
            *bytes += str_bytes(d, e);
        else if (is(d, e, WD_JSON_NUMBER))
            *ids += 1;
        else if (is(d, e, WD_JSON_ARRAY))
            *ids += d->toks[e].size;
    }
}

int64_t wd_limit_prompt_tokens(const wd_json_doc_t *d)
{
    if (!d || !d->ntoks || !is(d, 0, WD_JSON_OBJECT)) return 0;
    uint64_t bytes = 0, ids = 0;
    int msgs = wd_json_obj_get(d, 0, "messages");
    if (is(d, msgs, WD_JSON_ARRAY)) {
        int e = first_child(d, msgs);
        for (uint32_t i = 0; i < d->toks[msgs].size; i++, e = next_elem(d, e))
            if (is(d, e, WD_JSON_OBJECT)) bytes += content_bytes(d, wd_json_obj_get(d, e, "content"));
    }
    input_size(d, wd_json_obj_get(d, 0, "prompt"), &bytes, &ids);
    input_size(d, wd_json_obj_get(d, 0, "input"), &bytes, &ids);
    int64_t t = wd_limit_tokens_of_bytes(bytes);
    return ids > (uint64_t)(INT64_MAX - t) ? INT64_MAX : t + (int64_t)ids;
}

/* Generated text of one message or delta object. */
static uint64_t message_bytes(const wd_json_doc_t *d, int m)
{
    if (!is(d, m, WD_JSON_OBJECT)) return 0;
    uint64_t n = content_bytes(d, wd_json_obj_get(d, m, "content"));
    n += str_bytes(d, wd_json_obj_get(d, m, "refusal"));
    n += str_bytes(d, wd_json_obj_get(d, m, "reasoning_content"));
    int tc = wd_json_obj_get(d, m, "tool_calls");
    if (is(d, tc, WD_JSON_ARRAY)) {
        int e = first_child(d, tc);
        for (uint32_t i = 0; i < d->toks[tc].size; i++, e = next_elem(d, e)) {
            int f = is(d, e, WD_JSON_OBJECT) ? wd_json_obj_get(d, e, "function") : -1;
            if (is(d, f, WD_JSON_OBJECT)) n += str_bytes(d, wd_json_obj_get(d, f, "arguments"));
        }
    }
    int fc = wd_json_obj_get(d, m, "function_call");
    if (is(d, fc, WD_JSON_OBJECT)) n += str_bytes(d, wd_json_obj_get(d, fc, "arguments"));
    return n;
}

static uint64_t doc_answer_bytes(const wd_json_doc_t *d)
{
    if (!is(d, 0, WD_JSON_OBJECT)) return 0;
    int ch = wd_json_obj_get(d, 0, "choices");
    if (!is(d, ch, WD_JSON_ARRAY)) return 0;
    uint64_t n = 0;
    int e = first_child(d, ch);
    for (uint32_t i = 0; i < d->toks[ch].size; i++, e = next_elem(d, e)) {
        if (!is(d, e, WD_JSON_OBJECT)) continue;
        n += str_bytes(d, wd_json_obj_get(d, e, "text"));
        n += message_bytes(d, wd_json_obj_get(d, e, "message"));
        n += message_bytes(d, wd_json_obj_get(d, e, "delta"));
    }
    return n;
}

int64_t wd_limit_answer_bytes(const char *p, size_t len)
{
    wd_json_tok_t stack[256];
    wd_json_doc_t d;
    int rc = wd_json_parse(&d, p, len, stack, WD_ARRAY_LEN(stack), 0, NULL, 0);
    if (rc == WD_E2BIG && len < UINT32_MAX) {
        /* a long answer (logprobs, many choices): len/2 + 1 tokens always suffice */
        size_t cap = len / 2 + 1;
        wd_json_tok_t *heap = malloc(cap * sizeof *heap);
        if (!heap) return -1;
        rc = wd_json_parse(&d, p, len, heap, cap, 0, NULL, 0);
        int64_t n = rc == WD_OK ? (int64_t)doc_answer_bytes(&d) : -1;
        free(heap);
        return n;
    }
    return rc == WD_OK ? (int64_t)doc_answer_bytes(&d) : -1;
}

int64_t wd_limit_sse_answer_bytes(const char *raw, size_t len, wd_buf_t *scratch)
{
    const char *data = NULL;
    size_t dlen = 0, nlines = 0;
    const char *p = raw, *end = raw + len;
    while (p < end) {
        const char *eol = p;
        while (eol < end && *eol != '\n' && *eol != '\r')
            eol++;
        size_t l = (size_t)(eol - p);
        if (l >= 4 && memcmp(p, "data", 4) == 0 && (l == 4 || p[4] == ':')) {
            const char *v = l == 4 ? eol : p + 5;
            if (v < eol && *v == ' ') v++;
            if (nlines == 1) { /* a second data line: join them in scratch */
                wd_buf_reset(scratch);
                if (wd_buf_append(scratch, data, dlen) != WD_OK) return (int64_t)len;
            }
            if (nlines >= 1) {
                if (wd_buf_append(scratch, "\n", 1) != WD_OK ||
                    wd_buf_append(scratch, v, (size_t)(eol - v)) != WD_OK)
                    return (int64_t)len; /* cannot measure: charge the whole event */
                data = scratch->data;
                dlen = scratch->len;
            } else {
                data = v;
                dlen = (size_t)(eol - v);
            }
            nlines++;
        }
        p = eol < end && *eol == '\r' && eol + 1 < end && eol[1] == '\n' ? eol + 2 : eol + 1;
    }
    if (!nlines || !dlen || (dlen == 6 && memcmp(data, "[DONE]", 6) == 0)) return 0;
    int64_t n = wd_limit_answer_bytes(data, dlen);
    return n >= 0 ? n : (int64_t)dlen;
}

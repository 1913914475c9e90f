/* libFuzzer driver for the strict JSON scanner, differential against jansson: both must accept or
 * reject the same inputs, and for accepted ones every string value, number, member lookup and array
 * element must agree. Also checks token invariants and that a splice rewrite of an accepted object
 * re-parses. Aborts on any disagreement.
 *
 * Intentional differences (see tests/unit/core/test_json.c for the full note):
 *  - jansson rejects numbers outside int64/double range and "\u0000" in keys: skipped when jansson
 *    reports json_error_numeric_overflow or json_error_null_byte_in_key;
 *  - jansson skips a NUL byte right after a number or literal (lexer bug): such inputs are retried
 *    with that byte removed and must then agree fully. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/json.h"

static void die(const char *what, const uint8_t *s, size_t n)
{
    fprintf(stderr, "json differential mismatch: %s\ninput (%zu bytes): ", what, n);
    for (size_t i = 0; i < n; i++) fprintf(stderr, (s[i] >= 0x20 && s[i] < 0x7f) ? "%c" : "\\x%02x", s[i]);
    fputc('\n', stderr);
    abort();
}

static bool same_value(const wd_json_doc_t *d, int tok, json_t *j);

static bool same_string(const wd_json_doc_t *d, int tok, const char *v, size_t vlen)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    bool ok = wd_json_str_decode(d, tok, &b) == WD_OK && b.len == vlen && (vlen == 0 || memcmp(b.data, v, vlen) == 0);
    wd_buf_free(&b);
    if (ok && !memchr(v, 0, vlen)) ok = wd_json_str_eq(d, tok, v);
    return ok;
}

static bool same_value(const wd_json_doc_t *d, int tok, json_t *j)
{
    if (tok < 0 || (size_t)tok >= d->ntoks) return false;
    const wd_json_tok_t *t = &d->toks[tok];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (t->type != WD_JSON_OBJECT || t->size != json_object_size(j)) return false;
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            int vt = wd_json_obj_get(d, tok, key);
            if (vt < 1 || !wd_json_str_eq(d, vt - 1, key) || !same_value(d, vt, v)) return false;
        }
        int k = tok + 1;
        for (uint32_t i = 0; i < t->size; i++) {
            wd_buf_t b;
            wd_buf_init(&b, 0);
            bool found = wd_json_str_decode(d, k, &b) == WD_OK && json_object_getn(j, b.data ? b.data : "", b.len);
            wd_buf_free(&b);
            if (!found) return false;
            k = (int)d->toks[k + 1].next;
        }
        return true;
    }
    case JSON_ARRAY:
        if (t->type != WD_JSON_ARRAY || t->size != json_array_size(j)) return false;
        for (size_t i = 0; i < json_array_size(j); i++)
            if (!same_value(d, wd_json_arr_get(d, tok, i), json_array_get(j, i))) return false;
        return wd_json_arr_get(d, tok, json_array_size(j)) == -1;
    case JSON_STRING:
        return t->type == WD_JSON_STRING && same_string(d, tok, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: {
        int64_t v;
        return t->type == WD_JSON_NUMBER && wd_json_int(d, tok, &v) == WD_OK && v == json_integer_value(j);
    }
    case JSON_REAL: {
        int64_t v;
        wd_str_t r = wd_json_raw(d, tok);
        if (t->type != WD_JSON_NUMBER || wd_json_int(d, tok, &v) != WD_EINVAL) return false;
        char *z = strndup(r.p, r.len);
        if (!z) abort();
        bool ok = strtod(z, NULL) == json_real_value(j);
        free(z);
        return ok;
    }
    case JSON_TRUE: return t->type == WD_JSON_TRUE;
    case JSON_FALSE: return t->type == WD_JSON_FALSE;
    case JSON_NULL: return t->type == WD_JSON_NULL;
    }
    return false;
}

static bool tokens_ok(const wd_json_doc_t *d)
{
    if (d->ntoks == 0 || d->ntoks > d->len / 2 + 1 || d->toks[0].next != d->ntoks) return false;
    for (size_t i = 0; i < d->ntoks; i++) {
        const wd_json_tok_t *t = &d->toks[i];
        if (t->start > t->end || t->end > d->len || t->next <= i || t->next > d->ntoks) return false;
        if (i == 0 ? t->parent != -1 : (t->parent < 0 || (size_t)t->parent >= i)) return false;
        if (t->type != WD_JSON_OBJECT && t->type != WD_JSON_ARRAY && (t->size != 0 || t->next != i + 1)) return false;
    }
    return true;
}

/* Setting "model" on an accepted root object must yield a document both parsers accept, holding it. */
static void check_edit(const wd_json_doc_t *d, const uint8_t *s, size_t n)
{
    if (d->toks[0].type != WD_JSON_OBJECT) return;
    wd_json_edit_t e;
    wd_buf_t scratch, out;
    wd_buf_init(&scratch, 0);
    wd_buf_init(&out, 0);
    if (wd_json_edit_set(d, 0, "model", WD_STR("\"fuzz\""), &e, &scratch) != WD_OK ||
        wd_json_apply_edits(d->src, d->len, &e, 1, &out) != WD_OK)
        die("edit_set failed", s, n);
    size_t cap = out.len / 2 + 1;
    wd_json_tok_t *toks = malloc(sizeof *toks * cap);
    if (!toks) abort();
    wd_json_doc_t d2;
    char err[256];
    if (wd_json_parse(&d2, out.data, out.len, toks, cap, 2048, err, sizeof err) != WD_OK)
        die("edited document does not parse", s, n);
    if (!wd_json_str_eq(&d2, wd_json_obj_get(&d2, 0, "model"), "fuzz")) die("edited value not found", s, n);
    if (d2.toks[0].size != d->toks[0].size + (wd_json_obj_get(d, 0, "model") < 0)) die("edit changed member count", s, n);
    free(toks);
    wd_buf_free(&scratch);
    wd_buf_free(&out);
}

typedef enum { AGREE, SKIP } verdict_t;

static verdict_t differential(const uint8_t *s, size_t n, const uint8_t *orig, size_t orig_n)
{
    size_t cap = n / 2 + 1;
    wd_json_tok_t *toks = malloc(sizeof *toks * cap);
    if (!toks) abort();
    wd_json_doc_t d;
    char err[256];
    int rc = wd_json_parse(&d, (const char *)s, n, toks, cap, 2048, err, sizeof err);
    if (rc == WD_E2BIG && strstr(err, "tokens")) die("N/2+1 tokens were not enough", orig, orig_n);
    json_error_t je;
    json_t *j = json_loadb((const char *)s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    verdict_t v = AGREE;
    if (!j && (json_error_code(&je) == json_error_numeric_overflow || json_error_code(&je) == json_error_null_byte_in_key)) {
        v = SKIP;
    } else if (rc != WD_OK && j) {
        size_t i = 1;
        while (i < n && !(s[i] == 0 && ((s[i - 1] >= '0' && s[i - 1] <= '9') || (s[i - 1] >= 'a' && s[i - 1] <= 'z')))) i++;
        if (i >= n) die("we reject, jansson accepts", orig, orig_n);
        uint8_t *t = malloc(n);
        if (!t) abort();
        memcpy(t, s, i);
        memcpy(t + i, s + i + 1, n - i - 1);
        differential(t, n - 1, orig, orig_n);
        free(t);
        v = SKIP;
    } else if (rc == WD_OK && !j) {
        die("we accept, jansson rejects", orig, orig_n);
    } else if (rc == WD_OK) {
        if (!tokens_ok(&d)) die("token invariants", orig, orig_n);
        if (!same_value(&d, 0, j)) die("values differ", orig, orig_n);
        check_edit(&d, orig, orig_n);
    }
    json_decref(j);
    free(toks);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    differential(data, size, data, size);
    /* A too-small token array or depth limit must fail cleanly, never overrun. */
    wd_json_tok_t small[4];
    wd_json_doc_t d;
    char err[64];
    int rc = wd_json_parse(&d, (const char *)data, size, small, WD_ARRAY_LEN(small), 3, err, sizeof err);
    if (rc != WD_OK && rc != WD_EINVAL && rc != WD_E2BIG) abort();
    return 0;
}

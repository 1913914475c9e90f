/* json: a strict, zero-copy JSON scanner for the hot path (client bodies, SSE event payloads).
 * One pass validates RFC 8259 completely (UTF-8 included, no trailing commas, no leading zeros, no
 * lone surrogates in \u escapes, nesting bounded) and rejects duplicate keys within an object, a
 * known gateway/upstream parsing-differential attack. It produces a flat array of tokens (spans into
 * the input, like jsmn) instead of a DOM; lookups walk the tokens; rewrites splice spans.
 * jansson remains the JSON library for config, admin API, CLI and tests. */
#ifndef WD_JSON_H
#define WD_JSON_H

#include "core/core.h"

typedef enum {
    WD_JSON_OBJECT = 1,
    WD_JSON_ARRAY,
    WD_JSON_STRING, /* span excludes the quotes; escapes not decoded */
    WD_JSON_NUMBER,
    WD_JSON_TRUE,
    WD_JSON_FALSE,
    WD_JSON_NULL,
} wd_json_type_t;

typedef struct {
    uint8_t type;       /* wd_json_type_t */
    bool escaped;       /* strings: contains at least one backslash escape */
    uint32_t start;     /* offset of the value's first byte (for strings: after the opening quote) */
    uint32_t end;       /* offset one past the value's last byte (for strings: the closing quote) */
    uint32_t size;      /* objects: number of members; arrays: number of elements */
    uint32_t next;      /* index of the token after this value's whole subtree */
    int32_t parent;     /* index of the enclosing object/array, -1 for the root */
} wd_json_tok_t;
/* In an object the tokens are key, value, key, value, ...; keys are WD_JSON_STRING tokens. Tokens are in
 * document order, so a container's first child is at its index + 1 and a value's subtree ends at `next`.
 * A member's value has the object (not the key) as parent. Scalars have size 0 and next = index + 1. */

typedef struct {
    const char *src;
    size_t len;
    wd_json_tok_t *toks;
    size_t ntoks;
    size_t cap;
} wd_json_doc_t;

/* Parses src[0..len) into tokens. toks is caller-provided storage of cap entries (a body of N bytes
 * never needs more than N/2+1 tokens; with that cap, input that would need more is malformed and gets
 * WD_EINVAL, not WD_E2BIG). max_depth bounds nesting (0 = default 64; the root container is depth 1).
 * Returns WD_OK, WD_E2BIG (more tokens than cap or deeper than max_depth, or len >= 4 GiB), or
 * WD_EINVAL with a message naming the byte offset and problem in err, e.g.
 * "offset 17: duplicate key \"model\"" (for duplicates: the offset of the second key's opening quote;
 * the key is quoted as written, shortened to 48 bytes). Whitespace around the root value is allowed;
 * anything else after it is an error. Never allocates. On failure doc->ntoks is 0.
 * Not accepted, beyond the RFC 8259 grammar: invalid UTF-8 anywhere (overlongs, encoded surrogates,
 * > U+10FFFF, truncated sequences), \u escapes forming lone or mismatched surrogates, duplicate keys in
 * one object (compared after decoding, so "a" and "\u0061" collide). Accepted although some parsers
 * refuse them: \u0000 (also in keys) and numbers of any magnitude (wd_json_int reports range). */
int wd_json_parse(wd_json_doc_t *doc, const char *src, size_t len, wd_json_tok_t *toks, size_t cap,
                  unsigned max_depth, char *err, size_t errlen);

/* Index of the value of member `key` in object token `obj`, or -1 (also -1 if obj is not an object).
 * Keys are compared after decoding escapes, so "mod\u0065l" finds "model". */
int wd_json_obj_get(const wd_json_doc_t *doc, int obj, const char *key);

/* Index of element i of array token `arr`, or -1. */
int wd_json_arr_get(const wd_json_doc_t *doc, int arr, size_t i);

/* Appends a string token's decoded value (escapes resolved, surrogate pairs joined, UTF-8 out) to out.
 * Returns WD_OK, WD_EINVAL if tok is not a string, or the wd_buf error (out unchanged then). The result
 * may contain NUL bytes (from \u0000). */
int wd_json_str_decode(const wd_json_doc_t *doc, int tok, wd_buf_t *out);

/* Compares a string token's decoded value with z (false if tok is not a string). */
bool wd_json_str_eq(const wd_json_doc_t *doc, int tok, const char *z);

/* Raw span of a token as it appears in the source (strings include their quotes); {NULL, 0} if tok is
 * out of range. */
wd_str_t wd_json_raw(const wd_json_doc_t *doc, int tok);

/* Parses an integer number token (no fraction/exponent) into *v. Returns WD_EINVAL if tok is not a
 * number or has a fraction or exponent ("1.0", "1e2"), WD_E2BIG if outside int64_t; *v untouched then. */
int wd_json_int(const wd_json_doc_t *doc, int tok, int64_t *v);

/* Splicing rewrites: build a new document from the old one by replacing spans.
 * wd_json_edit_t describes replacing src[start..end) with `with`; edits must not overlap and are
 * applied in ascending order of start. */
typedef struct {
    size_t start, end;
    wd_str_t with;
} wd_json_edit_t;

/* Appends the rewritten document to out. Edits are checked first: each needs start <= end <= len and
 * start >= the previous edit's end (several insertions at one offset are applied in array order); a
 * violation returns WD_EINVAL. Returns WD_OK, WD_EINVAL, or WD_E2BIG/WD_ENOMEM from out; on any failure
 * out is unchanged. */
int wd_json_apply_edits(const char *src, size_t len, wd_json_edit_t *edits, size_t nedits, wd_buf_t *out);

/* Convenience for the common rewrites. Each returns the edit(s) needed for `doc`:
 * - replace the raw value of member key in object obj with a raw JSON value (e.g. "\"llama\""),
 *   or, if absent, insert "key":value as the object's first member (followed by ',' only if the object
 *   has members, so "{}" becomes {"key":value}). The key is matched after decoding and JSON-escaped when
 *   inserted. raw_value must be one valid, non-empty JSON value; it is not re-validated.
 * scratch is reset and receives the replacement text, and edit->with points into scratch->data: the
 * edit stays valid only until scratch is next modified or freed, so use one scratch buffer per edit
 * that is still to be applied. Returns WD_OK, WD_EINVAL (obj not an object, NULL or empty arguments),
 * or the wd_buf error. */
int wd_json_edit_set(const wd_json_doc_t *doc, int obj, const char *key, wd_str_t raw_value,
                     wd_json_edit_t *edit, wd_buf_t *scratch);

#endif

/* http: a strict HTTP/1.1 message parser and the framing codecs warden needs (chunked transfer
 * coding, server-sent events). Strictness is a security feature: anything two implementations could
 * read differently (request smuggling) is rejected, never repaired. The parser is incremental in the
 * sense that it is fed whatever bytes have arrived: it answers "need more" until a complete message
 * head is buffered, and the body decoders consume input piece by piece. It never assumes NUL
 * termination and never allocates: parsed fields are views into the caller's buffer. */
#ifndef WD_HTTP_H
#define WD_HTTP_H

#include "core/core.h"

#define WD_HTTP_MAX_HEADERS 64

typedef enum {
    WD_HTTP_OTHER = 0, /* a syntactically valid token we do not route */
    WD_HTTP_GET,
    WD_HTTP_HEAD,
    WD_HTTP_POST,
    WD_HTTP_PUT,
    WD_HTTP_DELETE,
    WD_HTTP_OPTIONS,
    WD_HTTP_PATCH,
} wd_http_method_t;

typedef struct {
    wd_str_t name;  /* as received (compare case-insensitively) */
    wd_str_t value; /* leading/trailing OWS removed */
} wd_http_header_t;

/* Limits applied while parsing; exceeding one yields the matching status (414/431/413). */
typedef struct {
    size_t max_request_line; /* bytes in the request line, CRLF excluded; default 8192 -> 414 */
    size_t max_head;         /* bytes of request line + headers + final CRLF; default 32768 -> 431 */
    size_t max_headers;      /* number of header fields, <= WD_HTTP_MAX_HEADERS -> 431 */
    /* a zero field means "use the default" */
} wd_http_limits_t;

/* A parsed request head (or response head: see wd_http_parse_response). */
typedef struct {
    /* request */
    wd_http_method_t method;
    wd_str_t method_str;
    wd_str_t target; /* origin-form request target, e.g. "/v1/chat/completions?x=1" */
    wd_str_t path;   /* target without the query */
    /* response */
    int status;
    wd_str_t reason;
    /* both */
    int version_minor; /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
    wd_http_header_t headers[WD_HTTP_MAX_HEADERS];
    size_t nheaders;
    size_t head_len; /* bytes of the head including the blank line */
    /* framing, derived from headers */
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* HTTP/1.1 default on unless "Connection: close"; 1.0 needs keep-alive */
    bool expect_continue;   /* Expect: 100-continue */
    bool upgrade;           /* Connection: upgrade / Upgrade header present */
} wd_http_msg_t;

/* Outcome of a failed parse: the HTTP status warden answers with and a short reason for logs and the
 * error body. After any error the connection must be closed. */
typedef struct {
    int status;         /* 400, 414, 417, 431, 501, 505 (requests); 502 (responses) */
    const char *reason; /* static string, e.g. "duplicate Content-Length" */
} wd_http_error_t;

void wd_http_limits_default(wd_http_limits_t *lim);

/* Parses a request head from p[0..len).
 * Returns WD_OK with msg filled (msg->head_len bytes consumed), WD_EAGAIN when the head is not complete
 * yet (and still within limits), or WD_EINVAL with *err set (status + reason).
 * Rejected: bare CR or LF anywhere in the head; obs-fold; whitespace between field name and colon; empty
 * or non-token field names; control bytes (other than HTAB) or NUL in values; Content-Length together
 * with Transfer-Encoding; more than one Content-Length (even equal values) or a malformed one (sign,
 * spaces, non-digits, overflow); any Transfer-Encoding other than exactly one "chunked" (case-insensitive)
 * -> 501 for unknown codings, 400 otherwise; HTTP versions other than 1.0/1.1 -> 505; a request target
 * that is not origin-form (except "*" with OPTIONS); missing Host on HTTP/1.1 or more than one Host;
 * leading empty lines are tolerated only as RFC 9112 §2.2 allows (at most one CRLF before the request line). */
int wd_http_parse_request(const char *p, size_t len, const wd_http_limits_t *lim, wd_http_msg_t *msg,
                          wd_http_error_t *err);

/* Parses an upstream response head with the same strictness (status must be 3 digits, 100-599).
 * Every rejection reports status 502 (what warden answers its client with); the reason tells why.
 * 1xx, 204 and 304 responses never have content: content_length 0, chunked false.
 * For a response, framing follows RFC 9112 §6.3: chunked if Transfer-Encoding: chunked, else
 * Content-Length, else read-until-close (content_length -1, chunked false). */
int wd_http_parse_response(const char *p, size_t len, const wd_http_limits_t *lim, wd_http_msg_t *msg,
                           wd_http_error_t *err);

/* Finds the first header with this name (case-insensitive); NULL if absent. */
const wd_http_header_t *wd_http_header(const wd_http_msg_t *msg, const char *name);

/* ---- chunked transfer coding ---------------------------------------------------------------- */

/* Incremental decoder. Chunk extensions are parsed and ignored; trailer fields are parsed with the
 * same strictness as headers and dropped. Chunk sizes: 1-16 hex digits, no sign, no whitespace, no
 * overflow; every CRLF must be exactly CRLF. */
typedef struct {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    size_t line_len;    /* length of the current size/trailer line so far (bounded) */
    size_t ndigits;
    size_t trailer_bytes;
    uint64_t total;     /* decoded body bytes so far */
    wd_http_error_t error; /* sticky: once malformed, every later call fails the same way */
} wd_http_chunked_t;

void wd_http_chunked_init(wd_http_chunked_t *c);

/* Decodes from in[0..len). Decoded payload bytes are appended to out (which enforces its own limit,
 * so an oversized body surfaces as WD_E2BIG). *consumed is set to the number of input bytes used.
 * Returns WD_OK when the final chunk and trailers have been read (input after *consumed belongs to
 * the next message), WD_EAGAIN when all input was consumed and more is needed, WD_E2BIG when out's
 * limit was hit, WD_EINVAL with *err on malformed coding. */
int wd_http_chunked_decode(wd_http_chunked_t *c, const char *in, size_t len, size_t *consumed, wd_buf_t *out,
                           wd_http_error_t *err);

/* Appends one chunk (size line, data, CRLF) to out; len 0 writes the last-chunk "0\r\n\r\n". */
int wd_http_chunk_encode(wd_buf_t *out, const char *data, size_t len);

/* ---- server-sent events (text/event-stream) ------------------------------------------------- */

/* Incremental SSE parser following the WHATWG event-stream rules: lines end in CRLF, LF or CR (a CR
 * at the end of one feed followed by LF at the start of the next is one line ending); a blank line
 * ends an event; "data" fields are joined with "\n"; comment lines (":") and unknown fields are kept in
 * the raw bytes but do not become data; a leading UTF-8 BOM is skipped. An event larger than
 * max_event bytes is an error (WD_E2BIG) rather than unbounded growth.
 * Pass-through guarantee: every byte of the stream except a leading BOM lands in exactly one event's
 * raw, in order, so forwarding each raw reproduces the stream. Hence the callback also sees blocks
 * without data (comment-only heartbeats, stray blank lines) with has_data false; WHATWG consumers
 * dispatch only events with has_data. A blank line ended by a CR that is the last byte fed is
 * delivered with the next feed, once it is known whether an LF belongs to it. After WD_E2BIG the
 * parser stays failed. */
typedef struct {
    wd_buf_t raw;        /* raw bytes of the event being assembled, including its terminating blank line */
    wd_buf_t data;       /* joined data fields of the event being assembled, each followed by "\n" */
    size_t line_start;   /* offset in raw of the current (unfinished) line */
    size_t event_off;    /* "event" field value, as a span of raw (raw may move when it grows) */
    size_t event_len;
    size_t max_event;
    int error;           /* sticky WD_E2BIG */
    uint8_t bom_state;   /* leading BOM bytes matched so far; 3 once decided */
    bool has_data;
    bool pending_cr;     /* last byte fed was a CR ending a line; an LF next completes that line ending */
    bool dispatch_pending; /* ...and that line was blank: the event waits for the next byte */
} wd_sse_parser_t;

typedef struct {
    wd_str_t raw;   /* exact bytes of the event as received, including the blank line */
    wd_str_t data;  /* joined data lines (no trailing newline); empty if none */
    wd_str_t event; /* "event:" field value, empty if none */
    bool has_data;  /* at least one data field was present */
} wd_sse_event_t;

/* Called for each complete event; return non-zero to stop parsing (wd_sse_feed returns that value). */
typedef int (*wd_sse_cb)(void *ud, const wd_sse_event_t *ev);

/* max_event 0 selects the default of 1 MiB (there is no unlimited mode). */
void wd_sse_init(wd_sse_parser_t *s, size_t max_event);
void wd_sse_free(wd_sse_parser_t *s);
/* Feeds bytes; calls cb for each completed event. Returns WD_OK, WD_E2BIG, or the callback's value. */
int wd_sse_feed(wd_sse_parser_t *s, const char *p, size_t len, wd_sse_cb cb, void *ud);
/* Bytes buffered for an unfinished event (an upstream that closes mid-event leaves these behind). */
size_t wd_sse_pending(const wd_sse_parser_t *s);
/* End of stream: delivers an event held back only because its blank line ended in a CR that was the
 * last byte fed (no LF can follow now). Call it before checking wd_sse_pending at end of stream.
 * Returns WD_OK, the parser's sticky error, or the callback's value. */
int wd_sse_finish(wd_sse_parser_t *s, wd_sse_cb cb, void *ud);

/* ---- writing -------------------------------------------------------------------------------- */

const char *wd_http_status_text(int status);

#endif

/* http: chunked transfer coding (RFC 9112 §7.1), decoded incrementally.
 *
 * A byte-at-a-time state machine for the framing lines and a bulk copy for chunk data, so feeding
 * one byte per call gives exactly the result of feeding everything at once. Every rule two
 * implementations might read differently is enforced: no whitespace or sign around the size, at most
 * 16 hex digits, CRLF (never bare LF or CR) after size lines, data and trailers, extensions that
 * follow the grammar (so a quoted string cannot hide a line ending), and trailers held to the same
 * rules as header fields. */
#include "http/http.h"

#define MAX_SIZE_LINE 4096 /* size + extensions; extensions are ignored, so bound what we scan */
#define MAX_TRAILERS 32768 /* bytes of trailer section */

enum {
    S_SIZE = 0,        /* hex digits of the chunk size */
    S_EXT_NAME_START,  /* after ';': first byte of an extension name */
    S_EXT_NAME,        /* rest of the name */
    S_EXT_VAL_START,   /* after '=' */
    S_EXT_TOKEN,       /* token value */
    S_EXT_QUOTED,      /* inside a quoted-string value */
    S_EXT_QESC,        /* after a backslash inside it */
    S_EXT_AFTER_QUOTE, /* after the closing quote */
    S_SIZE_LF,         /* after the CR ending the size line */
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TRAILER,         /* start of a trailer line (or the final CRLF) */
    S_TR_NAME,
    S_TR_VALUE,
    S_TR_LF,
    S_END_LF,          /* after the CR of the final blank line */
    S_DONE,
    S_ERROR,
};

static bool is_tchar(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    if (c >= '0' && c <= '9') return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

/* field-vchar / SP / HTAB / obs-text: the bytes a field value (or quoted pair) may carry */
static bool is_vchar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

void wd_http_chunked_init(wd_http_chunked_t *c)
{
    memset(c, 0, sizeof *c);
    c->state = S_SIZE;
}

static int bad(wd_http_chunked_t *c, wd_http_error_t *err, int status, const char *reason)
{
    c->state = S_ERROR;
    c->error.status = status;
    c->error.reason = reason;
    if (err) *err = c->error;
    return WD_EINVAL;
}

/* Explains an unexpected byte on a framing line. */
static int bad_byte(wd_http_chunked_t *c, wd_http_error_t *err, unsigned char ch, const char *dflt)
{
    if (ch == '\n') return bad(c, err, 400, "bare LF in chunked coding");
    if (ch == '\r') return bad(c, err, 400, "unexpected CR in chunked coding");
    return bad(c, err, 400, dflt);
}

int wd_http_chunked_decode(wd_http_chunked_t *c, const char *in, size_t len, size_t *consumed, wd_buf_t *out,
                           wd_http_error_t *err)
{
    size_t i = 0;
    *consumed = 0;
    if (c->state == S_ERROR) {
        if (err) *err = c->error;
        return WD_EINVAL;
    }
    if (c->state == S_DONE) return WD_OK;

    while (i < len) {
        if (c->state == S_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > c->remaining) n = (size_t)c->remaining;
            int rc = wd_buf_append(out, in + i, n);
            if (rc) {
                *consumed = i;
                return rc;
            }
            i += n;
            c->remaining -= n;
            c->total += n;
            if (c->remaining == 0) c->state = S_DATA_CR;
            continue;
        }

        unsigned char ch = (unsigned char)in[i++];
        switch (c->state) {
        case S_SIZE: {
            int v = wd_hex_digit(ch);
            if (v >= 0) {
                if (++c->ndigits > 16) return bad(c, err, 400, "chunk size has more than 16 hex digits");
                c->remaining = (c->remaining << 4) | (uint64_t)v;
                break;
            }
            if (c->ndigits == 0) return bad_byte(c, err, ch, "invalid chunk size");
            if (ch == ';') c->state = S_EXT_NAME_START;
            else if (ch == '\r') c->state = S_SIZE_LF;
            else return bad_byte(c, err, ch, "invalid chunk size");
            break;
        }
        case S_EXT_NAME_START:
            if (!is_tchar(ch)) return bad_byte(c, err, ch, "invalid chunk extension");
            c->state = S_EXT_NAME;
            break;
        case S_EXT_NAME:
            if (is_tchar(ch)) break;
            if (ch == '=') c->state = S_EXT_VAL_START;
            else if (ch == ';') c->state = S_EXT_NAME_START;
            else if (ch == '\r') c->state = S_SIZE_LF;
            else return bad_byte(c, err, ch, "invalid chunk extension");
            break;
        case S_EXT_VAL_START:
            if (ch == '"') c->state = S_EXT_QUOTED;
            else if (is_tchar(ch)) c->state = S_EXT_TOKEN;
            else return bad_byte(c, err, ch, "invalid chunk extension");
            break;
        case S_EXT_TOKEN:
            if (is_tchar(ch)) break;
            if (ch == ';') c->state = S_EXT_NAME_START;
            else if (ch == '\r') c->state = S_SIZE_LF;
            else return bad_byte(c, err, ch, "invalid chunk extension");
            break;
        case S_EXT_QUOTED:
            if (ch == '"') c->state = S_EXT_AFTER_QUOTE;
            else if (ch == '\\') c->state = S_EXT_QESC;
            else if (!is_vchar(ch)) return bad_byte(c, err, ch, "invalid chunk extension");
            break;
        case S_EXT_QESC:
            if (!is_vchar(ch)) return bad_byte(c, err, ch, "invalid chunk extension");
            c->state = S_EXT_QUOTED;
            break;
        case S_EXT_AFTER_QUOTE:
            if (ch == ';') c->state = S_EXT_NAME_START;
            else if (ch == '\r') c->state = S_SIZE_LF;
            else return bad_byte(c, err, ch, "invalid chunk extension");
            break;
        case S_SIZE_LF:
            if (ch != '\n') return bad(c, err, 400, "bare CR in chunked coding");
            c->line_len = 0;
            c->ndigits = 0;
            c->state = c->remaining ? S_DATA : S_TRAILER;
            continue; /* the line is complete: skip the line-length accounting below */
        case S_DATA_CR:
            if (ch != '\r') return bad(c, err, 400, "chunk data not followed by CRLF");
            c->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (ch != '\n') return bad(c, err, 400, "chunk data not followed by CRLF");
            c->state = S_SIZE;
            c->remaining = 0;
            continue;
        case S_TRAILER:
            if (ch == '\r') c->state = S_END_LF;
            else if (ch == ' ' || ch == '\t') return bad(c, err, 400, "obsolete line folding in trailer");
            else if (is_tchar(ch)) c->state = S_TR_NAME;
            else return bad_byte(c, err, ch, "invalid trailer field name");
            break;
        case S_TR_NAME:
            if (is_tchar(ch)) break;
            if (ch == ':') c->state = S_TR_VALUE;
            else if (ch == ' ' || ch == '\t') return bad(c, err, 400, "whitespace before colon in trailer");
            else return bad_byte(c, err, ch, "invalid trailer field name");
            break;
        case S_TR_VALUE:
            if (ch == '\r') c->state = S_TR_LF;
            else if (!is_vchar(ch)) return bad_byte(c, err, ch, "control byte in trailer field value");
            break;
        case S_TR_LF:
            if (ch != '\n') return bad(c, err, 400, "bare CR in chunked coding");
            c->state = S_TRAILER;
            break;
        case S_END_LF:
            if (ch != '\n') return bad(c, err, 400, "bare CR in chunked coding");
            c->state = S_DONE;
            *consumed = i;
            return WD_OK;
        default:
            return bad(c, err, 400, "chunked decoder state corrupt");
        }

        /* bound the framing lines we are willing to scan */
        if (c->state >= S_TRAILER) {
            if (++c->trailer_bytes > MAX_TRAILERS) return bad(c, err, 431, "trailer section too large");
        } else if (c->state != S_DATA_LF) {
            if (++c->line_len > MAX_SIZE_LINE) return bad(c, err, 400, "chunk size line too long");
        }
    }
    *consumed = i;
    return WD_EAGAIN;
}

int wd_http_chunk_encode(wd_buf_t *out, const char *data, size_t len)
{
    char head[24];
    size_t n = 0;
    /* size in lowercase hex without leading zeros */
    int shift = 0;
    while (shift < (int)(sizeof(size_t) * 8) - 4 && (len >> (shift + 4))) shift += 4;
    for (; shift >= 0; shift -= 4) head[n++] = "0123456789abcdef"[(len >> shift) & 15];
    head[n++] = '\r';
    head[n++] = '\n';
    size_t tail = 2; /* CRLF after the data, or the empty trailer section after the last chunk */
    if (len > SIZE_MAX - n - tail) return WD_E2BIG;
    /* reserve first so a chunk is appended whole or not at all */
    int rc = wd_buf_reserve(out, n + len + tail);
    if (rc) return rc;
    wd_buf_append(out, head, n);
    wd_buf_append(out, data, len);
    wd_buf_append(out, "\r\n", 2);
    return WD_OK;
}

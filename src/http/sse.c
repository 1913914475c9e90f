/* http: server-sent events (text/event-stream) parser, WHATWG HTML §9.2.6.
 *
 * The raw buffer holds every byte of the event being assembled; the current line and the "event"
 * value are spans of it, so nothing is copied twice except data values, which must be joined. Line
 * endings are found with memchr, and the position of the next LF is remembered so a run of CR-ended
 * lines does not rescan the same bytes. */
#include "http/http.h"

#define WD_SSE_DEFAULT_MAX_EVENT (1u << 20)

void wd_sse_init(wd_sse_parser_t *s, size_t max_event)
{
    memset(s, 0, sizeof *s);
    s->max_event = max_event ? max_event : WD_SSE_DEFAULT_MAX_EVENT;
    /* data is never longer than raw (each data byte and its "\n" come from raw bytes) */
    wd_buf_init(&s->raw, s->max_event);
    wd_buf_init(&s->data, s->max_event);
}

void wd_sse_free(wd_sse_parser_t *s)
{
    wd_buf_free(&s->raw);
    wd_buf_free(&s->data);
}

size_t wd_sse_pending(const wd_sse_parser_t *s)
{
    /* bytes that might still turn out to be a BOM are buffered too */
    return s->raw.len + (s->bom_state < 3 ? s->bom_state : 0);
}

static int raw_add(wd_sse_parser_t *s, const char *p, size_t n)
{
    int rc = wd_buf_append(&s->raw, p, n);
    if (rc) s->error = rc;
    return rc;
}

static int dispatch(wd_sse_parser_t *s, wd_sse_cb cb, void *ud)
{
    wd_sse_event_t ev;
    ev.raw = wd_str(s->raw.data, s->raw.len);
    ev.has_data = s->has_data;
    /* drop the "\n" that followed the last data line */
    ev.data = s->has_data ? wd_str(s->data.data, s->data.len - 1) : wd_str("", 0);
    ev.event = s->event_len ? wd_str(s->raw.data + s->event_off, s->event_len) : wd_str("", 0);
    int rc = cb ? cb(ud, &ev) : 0;
    s->raw.len = 0;
    s->data.len = 0;
    s->line_start = 0;
    s->event_off = s->event_len = 0;
    s->has_data = false;
    return rc;
}

/* Interprets the line raw[line_start, line_start + n). Returns WD_OK or an error from data growth. */
static int process_line(wd_sse_parser_t *s, size_t n)
{
    const char *l = s->raw.data + s->line_start;
    if (l[0] == ':') return WD_OK; /* comment */
    const char *colon = memchr(l, ':', n);
    size_t fn = colon ? (size_t)(colon - l) : n;
    size_t vs = colon ? fn + 1 : n;
    if (vs < n && l[vs] == ' ') vs++;
    if (fn == 4 && memcmp(l, "data", 4) == 0) {
        int rc = wd_buf_append(&s->data, l + vs, n - vs);
        if (!rc) rc = wd_buf_append(&s->data, "\n", 1);
        if (rc) {
            s->error = rc;
            return rc;
        }
        s->has_data = true;
    } else if (fn == 5 && memcmp(l, "event", 5) == 0) {
        s->event_off = s->line_start + vs;
        s->event_len = n - vs;
    }
    /* "id", "retry" and unknown fields stay in raw only: warden relays, it does not reconnect */
    return WD_OK;
}

static int feed_bytes(wd_sse_parser_t *s, const char *p, size_t len, wd_sse_cb cb, void *ud)
{
    size_t i = 0;
    int rc;
    if (len == 0) return WD_OK;
    if (s->pending_cr) {
        s->pending_cr = false;
        if (p[0] == '\n') {
            if ((rc = raw_add(s, p, 1))) return rc;
            s->line_start = s->raw.len;
            i = 1;
        }
        if (s->dispatch_pending) {
            s->dispatch_pending = false;
            if ((rc = dispatch(s, cb, ud))) return rc;
        }
    }
    const char *end = p + len;
    const char *nl = NULL; /* next LF at or after p + i, or end */
    while (i < len) {
        const char *cur = p + i;
        if (!nl || nl < cur) {
            nl = memchr(cur, '\n', len - i);
            if (!nl) nl = end;
        }
        const char *cr = memchr(cur, '\r', (size_t)(nl - cur));
        const char *eol = cr ? cr : nl;
        size_t run = (size_t)(eol - cur);
        if (eol == end) return raw_add(s, cur, run); /* unfinished line */

        /* the line and its first terminator byte */
        if ((rc = raw_add(s, cur, run + 1))) return rc;
        size_t n = s->raw.len - 1 - s->line_start;
        bool blank = n == 0;
        if (!blank && (rc = process_line(s, n))) return rc;
        i += run + 1;
        if (*eol == '\r') {
            if (i == len) {
                /* whether an LF follows is only known with the next feed */
                s->pending_cr = true;
                s->dispatch_pending = blank;
                s->line_start = s->raw.len;
                return WD_OK;
            }
            if (p[i] == '\n') {
                if ((rc = raw_add(s, p + i, 1))) return rc;
                i++;
            }
        }
        s->line_start = s->raw.len;
        if (blank && (rc = dispatch(s, cb, ud))) return rc;
    }
    return WD_OK;
}

int wd_sse_feed(wd_sse_parser_t *s, const char *p, size_t len, wd_sse_cb cb, void *ud)
{
    static const char bom[3] = {'\xef', '\xbb', '\xbf'};
    if (s->error) return s->error;
    size_t i = 0;
    while (s->bom_state < 3 && i < len) {
        if (p[i] == bom[s->bom_state]) {
            s->bom_state++;
            i++;
            continue;
        }
        /* not a BOM after all: the bytes matched so far are content */
        size_t k = s->bom_state;
        s->bom_state = 3;
        int rc = feed_bytes(s, bom, k, cb, ud);
        if (rc) return rc;
    }
    return feed_bytes(s, p + i, len - i, cb, ud);
}

int wd_sse_finish(wd_sse_parser_t *s, wd_sse_cb cb, void *ud)
{
    if (s->error) return s->error;
    if (!s->dispatch_pending) return WD_OK;
    s->dispatch_pending = false;
    s->pending_cr = false;
    return dispatch(s, cb, ud);
}

/* audit/event: the per-request access record (DESIGN.md §2 wd_event_t) and its JSON-lines sink.
 * Events never carry bodies or credentials. The sink buffers per writer and flushes whole lines,
 * so workers never block one another on the log and lines never interleave. The tamper-evident
 * log will consume the same struct. */
#ifndef WD_EVENT_H
#define WD_EVENT_H

#include "core/core.h"

typedef struct {
    char request_id[20];
    uint64_t wall_ms;
    char client_ip[64];
    char method[16];
    char path[128];
    const char *route;
    char principal[176];      /* "key:<id>" or the token subject; "" when anonymous */
    char roles[160];          /* comma-separated */
    bool mfa;
    char model[128];          /* as the client asked */
    char upstream_model[128]; /* as sent upstream */
    char upstream[64];
    int status;
    const char *decision;     /* allow | deny | block | error */
    char code[48];            /* error code, "" when allowed */
    char reason[256];
    char rule[96];
    bool stream;
    const char *upstream_error; /* NULL, or wd_up_status_text */
    int64_t prompt_tokens, completion_tokens; /* -1 unknown */
    bool usage_reported;      /* from the upstream, not estimated */
    uint64_t bytes_in, bytes_out;
    uint64_t total_us, upstream_us, overhead_us, ttfb_us;
    uint32_t stream_events;
    char guard_profile[64];   /* the guard profile applied, "" when none */
    char guard[512];          /* what the guard did: "TYPE:action:count,...", rule ids, sets (never values) */
} wd_event_t;

void wd_event_init(wd_event_t *e);
/* Appends the event as one JSON object followed by "\n". */
int wd_event_to_json(const wd_event_t *e, wd_buf_t *out);
/* Copies at most dstlen-1 bytes of a view into a fixed field, NUL-terminated. */
void wd_event_copy(char *dst, size_t dstlen, const char *p, size_t len);

/* The sink: one file descriptor shared by all writers, each with its own buffer. */
int wd_event_sink_open(const char *path, char *err, size_t errlen); /* "-" = stdout, NULL = off */
void wd_event_sink_close(void);
typedef struct {
    wd_buf_t buf;
} wd_event_writer_t;
void wd_event_writer_init(wd_event_writer_t *w);
int wd_event_emit(wd_event_writer_t *w, const wd_event_t *e); /* buffers; flushes when large */
void wd_event_flush(wd_event_writer_t *w);
void wd_event_writer_free(wd_event_writer_t *w);

#endif

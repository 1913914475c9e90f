/* core: the few types every module shares — error codes, string views, growable buffers,
 * monotonic time and logging. Nothing here knows about HTTP, libuv or configuration. */
#ifndef WD_CORE_H
#define WD_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Return codes: 0 success, negative on failure (DESIGN.md §5 rule 2). */
enum {
    WD_OK = 0,
    WD_EINVAL = -1,   /* malformed input */
    WD_ENOMEM = -2,   /* allocation failed */
    WD_E2BIG = -3,    /* input exceeds a configured limit */
    WD_EAGAIN = -4,   /* incomplete input: feed more bytes */
    WD_EIO = -5,      /* system call failed (errno kept) */
    WD_ENOTFOUND = -6,
    WD_EEXIST = -7,
};

#define WD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define WD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define WD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define WD_UNUSED(x) ((void)(x))

/* ASCII only, whatever the locale. */
static inline bool wd_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The value of a hexadecimal digit, either case; -1 if c is none. */
static inline int wd_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string view: pointer + length, never assumed NUL-terminated (HAProxy's ist). */
typedef struct {
    const char *p;
    size_t len;
} wd_str_t;

#define WD_STR(lit) ((wd_str_t){(lit), sizeof(lit) - 1})
static inline wd_str_t wd_str(const char *p, size_t len) { return (wd_str_t){p, len}; }
static inline wd_str_t wd_strz(const char *z) { return (wd_str_t){z, z ? strlen(z) : 0}; }
bool wd_str_eq(wd_str_t a, wd_str_t b);
bool wd_str_ieq(wd_str_t a, wd_str_t b);   /* ASCII case-insensitive */
bool wd_str_ieq_z(wd_str_t a, const char *z);

/* A growable byte buffer with a hard cap: append fails with WD_E2BIG rather than grow past it. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* 0 = no limit */
} wd_buf_t;

void wd_buf_init(wd_buf_t *b, size_t limit);
void wd_buf_free(wd_buf_t *b);
int wd_buf_reserve(wd_buf_t *b, size_t extra);
int wd_buf_append(wd_buf_t *b, const void *p, size_t len);
int wd_buf_append_str(wd_buf_t *b, const char *z);
int wd_buf_printf(wd_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a number in decimal, without printf. */
int wd_buf_append_u64(wd_buf_t *b, uint64_t v);
int wd_buf_append_i64(wd_buf_t *b, int64_t v);
/* Appends s as the inside of a JSON string (quotes not included), escaping as RFC 8259 requires. */
int wd_buf_append_json_str(wd_buf_t *b, const char *p, size_t len);
void wd_buf_consume(wd_buf_t *b, size_t n); /* drop the first n bytes */
static inline void wd_buf_reset(wd_buf_t *b) { b->len = 0; }

/* Monotonic and wall clocks. */
uint64_t wd_now_ns(void);     /* CLOCK_MONOTONIC */
uint64_t wd_wall_ms(void);    /* CLOCK_REALTIME, ms since epoch */
void wd_format_rfc3339(uint64_t wall_ms, char out[32]); /* 2026-11-25T19:00:04.123Z */

/* Fills buf with random bytes from the kernel (getrandom). Returns WD_OK or WD_EIO. */
int wd_random(void *buf, size_t len);

/* Process logging for the daemon and CLI (libraries report errors through caller buffers). */
typedef enum { WD_LOG_DEBUG, WD_LOG_INFO, WD_LOG_WARN, WD_LOG_ERROR } wd_log_level_t;
void wd_log_set_level(wd_log_level_t lvl);
void wd_log(wd_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a formatted message into err (truncating safely); returns `code` for tail calls. */
int wd_errf(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Reads a whole regular file of at most `max` bytes into a fresh NUL-terminated buffer (*out, freed
 * by the caller; *len excludes the NUL). A file that grows while it is read is refused rather than
 * chased. Messages start with the path: "<path>: cannot open: ...", "<path>: not a regular file",
 * "<path>: file too large (N bytes; the limit is M)", "<path>: changed while it was being read". */
int wd_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen);

#endif

#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

bool wd_str_eq(wd_str_t a, wd_str_t b) { return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0); }

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

bool wd_str_ieq(wd_str_t a, wd_str_t b)
{
    if (a.len != b.len) return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i])) return false;
    return true;
}

bool wd_str_ieq_z(wd_str_t a, const char *z) { return wd_str_ieq(a, wd_strz(z)); }

void wd_buf_init(wd_buf_t *b, size_t limit)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
}

void wd_buf_free(wd_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int wd_buf_reserve(wd_buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return WD_E2BIG;
    size_t need = b->len + extra;
    if (b->limit && need > b->limit) return WD_E2BIG;
    if (need <= b->cap) return WD_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (b->limit && cap > b->limit) cap = b->limit;
    char *d = realloc(b->data, cap);
    if (!d) return WD_ENOMEM;
    b->data = d;
    b->cap = cap;
    return WD_OK;
}

int wd_buf_append(wd_buf_t *b, const void *p, size_t len)
{
    if (len == 0) return WD_OK;
    int rc = wd_buf_reserve(b, len);
    if (rc) return rc;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return WD_OK;
}

int wd_buf_append_str(wd_buf_t *b, const char *z) { return wd_buf_append(b, z, strlen(z)); }

int wd_buf_append_u64(wd_buf_t *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return wd_buf_append(b, tmp + i, sizeof tmp - i);
}

int wd_buf_append_i64(wd_buf_t *b, int64_t v)
{
    if (v >= 0) return wd_buf_append_u64(b, (uint64_t)v);
    size_t before = b->len;
    int rc = wd_buf_append(b, "-", 1);
    if (!rc) rc = wd_buf_append_u64(b, 0 - (uint64_t)v);
    if (rc) b->len = before;
    return rc;
}

int wd_buf_printf(wd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return WD_EINVAL;
    if ((size_t)n < sizeof tmp) return wd_buf_append(b, tmp, (size_t)n);
    int rc = wd_buf_reserve(b, (size_t)n);
    if (rc) return rc;
    if (b->cap - b->len > (size_t)n) {
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    } else {
        /* The text fits exactly up to the limit, leaving no byte for vsnprintf's NUL. */
        char *t = malloc((size_t)n + 1);
        if (!t) return WD_ENOMEM;
        va_start(ap, fmt);
        vsnprintf(t, (size_t)n + 1, fmt, ap);
        va_end(ap);
        memcpy(b->data + b->len, t, (size_t)n);
        free(t);
    }
    b->len += (size_t)n;
    return WD_OK;
}

/* True if any of the 8 bytes in v is '"', '\\' or below 0x20: the bytes a JSON string must escape
 * (exact, "Bit Twiddling Hacks": haszero and hasless). */
static inline bool json_escape8(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v)) & highs;
}

/* The index of the first byte at or after i that a JSON string must escape, or len: 16 bytes at a
 * time with SSE2, 8 with SWAR, then byte by byte. */
static size_t json_plain_run(const char *p, size_t i, size_t len)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1f);
    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        __m128i esc = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v)); /* v <= 0x1f, unsigned */
        unsigned m = (unsigned)_mm_movemask_epi8(esc);
        if (m) return i + (size_t)__builtin_ctz(m);
    }
#endif
    uint64_t v;
    while (i + 8 <= len && (memcpy(&v, p + i, 8), !json_escape8(v)))
        i += 8;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == '"' || c == '\\') break;
    }
    return i;
}

int wd_buf_append_json_str(wd_buf_t *b, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (len == 0) return WD_OK; /* p may be NULL (an empty wd_buf_t) */
    size_t start = 0;
    for (size_t i = json_plain_run(p, 0, len); i < len; i = json_plain_run(p, i, len)) {
        unsigned char c = (unsigned char)p[i];
        int rc = wd_buf_append(b, p + start, i - start);
        if (rc) return rc;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            n = 6;
        }
        if ((rc = wd_buf_append(b, esc, n))) return rc;
        start = ++i;
    }
    return wd_buf_append(b, p + start, len - start);
}

void wd_buf_consume(wd_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

uint64_t wd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t wd_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static void put_digits(char *p, unsigned v, int n) /* n digits of v, zero-padded */
{
    while (n--) {
        p[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

void wd_format_rfc3339(uint64_t wall_ms, char out[32])
{
    uint64_t s = wall_ms / 1000, z = s / 86400 + 719468; /* days since 0000-03-01 */
    unsigned sod = (unsigned)(s % 86400);
    /* The proleptic Gregorian date of a day count (H. Hinnant's civil_from_days): 400-year eras of
     * 146097 days, years that start on 1 March so that the leap day is the last of the year. */
    uint64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153, day = doy - (153 * mp + 2) / 5 + 1, mon = mp < 10 ? mp + 3 : mp - 9;
    uint64_t year = era * 400 + yoe + (mon <= 2);
    /* RFC 3339 years have four digits: clamp past 9999 instead of printing a longer, invalid timestamp. */
    if (year > 9999) {
        year = 9999;
        mon = 12;
        day = 31;
        sod = 86399;
    }
    put_digits(out, (unsigned)year, 4);
    out[4] = '-';
    put_digits(out + 5, mon, 2);
    out[7] = '-';
    put_digits(out + 8, day, 2);
    out[10] = 'T';
    put_digits(out + 11, sod / 3600, 2);
    out[13] = ':';
    put_digits(out + 14, sod / 60 % 60, 2);
    out[16] = ':';
    put_digits(out + 17, sod % 60, 2);
    out[19] = '.';
    put_digits(out + 20, (unsigned)(wall_ms % 1000), 3);
    out[23] = 'Z';
    out[24] = 0;
}

int wd_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return WD_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return WD_OK;
}

static wd_log_level_t g_level = WD_LOG_INFO;
void wd_log_set_level(wd_log_level_t lvl) { g_level = lvl; }

void wd_log(wd_log_level_t lvl, const char *fmt, ...)
{
    if (lvl < g_level) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char ts[32], msg[1024];
    wd_format_rfc3339(wd_wall_ms(), ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* one fprintf per line so lines from different threads do not interleave */
    fprintf(stderr, "%s warden[%s]: %s\n", ts, names[lvl], msg);
}

int wd_errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int wd_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return wd_errf(err, errlen, WD_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = WD_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        rc = wd_errf(err, errlen, WD_EINVAL, "%s: not a regular file", path);
    else if ((uintmax_t)st.st_size > max)
        rc = wd_errf(err, errlen, WD_E2BIG, "%s: file too large (%lld bytes; the limit is %zu)", path,
                     (long long)st.st_size, max);
    size_t cap = rc ? 0 : (size_t)st.st_size + 1, n = 0; /* one spare byte: the NUL, or proof of growth */
    char *buf = rc ? NULL : malloc(cap);
    if (!rc && !buf) rc = wd_errf(err, errlen, WD_ENOMEM, "%s: out of memory", path);
    while (!rc && n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = wd_errf(err, errlen, WD_EIO, "%s: read failed: %s", path, strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!rc && n == cap) rc = wd_errf(err, errlen, WD_EIO, "%s: changed while it was being read", path);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return WD_OK;
}

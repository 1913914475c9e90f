/* Scope keys and the x-ratelimit-* header text, for both backends' callers. Both run on every limited
 * request, so they write into fixed buffers with plain stores: no printf (its format parsing costs
 * more than the decision itself) and no allocation; the caller appends the header block in one go. */
#include "limit/limit.h"

void wd_limit_scope_set(wd_limit_scope_t *s, const char *prefix, size_t plen, const char *id, size_t idlen,
                        const wd_limits_t *lim)
{
    /* the same cut snprintf("%s%s") made: at most WD_LIMIT_KEY_MAX - 1 bytes */
    size_t room = WD_LIMIT_KEY_MAX - 1;
    if (plen > room) plen = room;
    memcpy(s->key, prefix, plen);
    room -= plen;
    if (idlen > room) idlen = room;
    memcpy(s->key + plen, id, idlen);
    s->key[plen + idlen] = 0;
    s->lim = *lim;
}

/* Decimal digits of v at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do {
        t[sizeof t - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(p, t + sizeof t - n, n);
    return p + n;
}

static char *put_lit(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* OpenAI's duration style: "250ms", "1.5s", "6m0s" (a negative duration reads as 0ms). */
static char *put_duration(char *p, int64_t ms)
{
    uint64_t m = ms < 0 ? 0 : (uint64_t)ms;
    if (m < 1000) {
        p = put_u64(p, m);
        return put_lit(p, "ms", 2);
    }
    if (m < 60000) {
        p = put_u64(p, m / 1000);
        uint64_t frac = m % 1000;
        if (frac) {
            char f[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10), (char)('0' + frac % 10)};
            size_t n = 4;
            while (f[n - 1] == '0') n--;
            p = put_lit(p, f, n);
        }
        return put_lit(p, "s", 1);
    }
    p = put_u64(p, m / 60000);
    *p++ = 'm';
    p = put_u64(p, m % 60000 / 1000);
    *p++ = 's';
    return p;
}

#define LIT(p, s) put_lit((p), s, sizeof s - 1)

static char *put_count(char *p, int64_t v)
{
    return put_u64(p, v < 0 ? 0 : (uint64_t)v);
}

/* Longest output: 170 bytes of names, 4 counts of 19 digits, 2 durations of 19 bytes ("153722867280912m55s"
 * is INT64_MAX ms), 6 CRLFs: 296 <= WD_LIMIT_HEADERS_MAX. */
size_t wd_limit_headers(const wd_limit_decision_t *d, char *out)
{
    char *p = out;
    if (d->limit_requests >= 0) {
        p = LIT(p, "x-ratelimit-limit-requests: ");
        p = put_count(p, d->limit_requests);
        p = LIT(p, "\r\nx-ratelimit-remaining-requests: ");
        p = put_count(p, d->remaining_requests);
        p = LIT(p, "\r\nx-ratelimit-reset-requests: ");
        p = put_duration(p, d->reset_requests_ms);
        p = LIT(p, "\r\n");
    }
    if (d->limit_tokens >= 0) {
        p = LIT(p, "x-ratelimit-limit-tokens: ");
        p = put_count(p, d->limit_tokens);
        p = LIT(p, "\r\nx-ratelimit-remaining-tokens: ");
        p = put_count(p, d->remaining_tokens);
        p = LIT(p, "\r\nx-ratelimit-reset-tokens: ");
        p = put_duration(p, d->reset_tokens_ms);
        p = LIT(p, "\r\n");
    }
    return (size_t)(p - out);
}

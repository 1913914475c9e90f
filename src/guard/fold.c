/* guard/fold: the text the privacy rules read, with the characters that hide an identifier from them
 * removed or mapped to ASCII (see fold.h). */
#include "guard/fold.h"

#include <stdlib.h>
#include <string.h>

static bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t wd_guard_invisible_len(const unsigned char *p, size_t len)
{
    if (len >= 2 && p[0] == 0xC2 && p[1] == 0xAD) return 2;
    if (len < 3) return 0;
    if (p[0] == 0xE1 && p[1] == 0xA0 && p[2] == 0x8E) return 3;
    if (p[0] == 0xE2 && p[1] == 0x80 && ((p[2] >= 0x8B && p[2] <= 0x8F) || (p[2] >= 0xAA && p[2] <= 0xAE))) return 3;
    if (p[0] == 0xE2 && p[1] == 0x81 && ((p[2] >= 0xA0 && p[2] <= 0xA4) || (p[2] >= 0xA6 && p[2] <= 0xA9))) return 3;
    if (p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) return 3;
    return 0;
}

/* The character at p (a lead byte >= 0xC2) folded: returns its length in bytes and sets *c to the ASCII
 * byte it stands for, or to -1 when it is dropped; returns 0 when it stays as it is. */
static size_t fold_at(const unsigned char *p, size_t len, int *c)
{
    size_t n = wd_guard_invisible_len(p, len);
    if (n) {
        *c = -1;
        return n;
    }
    if (len >= 2 && p[0] == 0xC2 && p[1] == 0xA0) { /* no-break space */
        *c = ' ';
        return 2;
    }
    if (len < 3 || !cont(p[1]) || !cont(p[2])) return 0;
    if (p[0] == 0xE2 && p[1] == 0x80) {
        if (p[2] <= 0x8A || p[2] == 0xAF) { /* U+2000..U+200A spaces, U+202F narrow no-break space */
            *c = ' ';
            return 3;
        }
        if (p[2] >= 0x90 && p[2] <= 0x95) { /* U+2010..U+2015 hyphens and dashes */
            *c = '-';
            return 3;
        }
        return 0;
    }
    if (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) { /* U+205F medium mathematical space */
        *c = ' ';
        return 3;
    }
    if (p[0] == 0xE2 && p[1] == 0x88 && p[2] == 0x92) { /* U+2212 minus sign */
        *c = '-';
        return 3;
    }
    if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) { /* U+3000 ideographic space */
        *c = ' ';
        return 3;
    }
    if (p[0] == 0xEF && ((p[1] == 0xBC && p[2] >= 0x81) || (p[1] == 0xBD && p[2] <= 0x9E))) {
        /* U+FF01..U+FF5E fullwidth forms of '!'..'~' */
        *c = 0x21 + (p[1] - 0xBC) * 64 + (p[2] - 0x81);
        return 3;
    }
    if (len < 4 || !cont(p[3])) return 0;
    if (p[0] == 0xF0 && p[1] == 0x9D && p[2] == 0x9F && p[3] >= 0x8E) { /* U+1D7CE..U+1D7FF mathematical digits */
        *c = '0' + (p[3] - 0x8E) % 10;
        return 4;
    }
    if (p[0] == 0xF3 && p[1] == 0xA0 && (p[2] == 0x80 || p[2] == 0x81)) { /* U+E0000..U+E007F tags */
        unsigned v = (p[2] - 0x80u) * 64u + (p[3] - 0x80u);
        *c = v >= 0x20 && v <= 0x7E ? (int)v : -1; /* a tag character carries its ASCII twin, invisibly */
        return 4;
    }
    return 0;
}

/* Offset of the first character at or after i that folds (len if none); with !dashes, one that folds
 * to '-' does not count. */
static size_t next_fold(const unsigned char *u, size_t len, size_t i, bool dashes)
{
    int c = 0;
    while (i < len) {
        size_t end = len - i >= 32 ? i + 32 : len;
        if (end - i == 32) {
            unsigned char any = 0;
            for (size_t k = i; k < end; k++) /* an OR the compiler vectorises */
                any |= u[k];
            if (!(any & 0x80)) { /* 32 ASCII bytes */
                i = end;
                continue;
            }
        }
        for (; i < end; i++)
            if (u[i] >= 0xC2 && fold_at(u + i, len - i, &c) && (dashes || c != '-')) return i;
    }
    return len;
}

bool wd_guard_fold_needed(const char *text, size_t len, bool dashes)
{
    return next_fold((const unsigned char *)text, len, 0, dashes) < len;
}

static int add_ev(wd_fold_stream_t *s, wd_fold_ev_t e)
{
    wd_fold_ev_t *last = s->nev ? &s->ev[s->nev - 1] : NULL;
    if (last && !last->flen && !e.flen && last->f == e.f && last->r + last->rlen == e.r &&
        last->rlen + e.rlen <= UINT16_MAX) { /* a run of dropped characters: one event */
        last->rlen = (uint16_t)(last->rlen + e.rlen);
        return WD_OK;
    }
    if (s->nev == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        wd_fold_ev_t *v = realloc(s->ev, cap * sizeof *v);
        if (!v) return WD_ENOMEM;
        s->ev = v;
        s->cap = cap;
    }
    s->ev[s->nev++] = e;
    return WD_OK;
}

/* Appends u[0..m) folded to out, which has room for m more bytes. map (may be NULL) gets, from
 * map[out->len] on, the offset in u of each folded byte; s (may be NULL) an event per folded
 * character, at its offsets in the stream. *run counts the dropped characters in a row: every
 * WD_FOLD_RUN_BREAK-th of them becomes a NUL byte instead, so a long run of invisible characters
 * still moves a stream scanner's safe offset on (and separates what stands on either side). */
static int fold_run(const unsigned char *u, size_t m, wd_buf_t *out, uint32_t *map, wd_fold_stream_t *s,
                    size_t *run)
{
    size_t i = 0, base = out->len;
    while (i < m) {
        size_t j = next_fold(u, m, i, true);
        if (j > i) *run = 0;
        for (size_t k = i; map && k < j; k++)
            map[out->len + k - i] = (uint32_t)k;
        memcpy(out->data + out->len, u + i, j - i);
        out->len += j - i;
        if (j == m) break;
        int c = -1;
        size_t n = fold_at(u + j, m - j, &c);
        if (c >= 0)
            *run = 0;
        else if (++*run == WD_FOLD_RUN_BREAK)
            c = 0, *run = 0;
        if (s && add_ev(s, (wd_fold_ev_t){s->folded + out->len - base, s->raw + j, (uint16_t)n, c >= 0}))
            return WD_ENOMEM;
        if (c >= 0) {
            if (map) map[out->len] = (uint32_t)j;
            out->data[out->len++] = (char)c;
        }
        i = j + n;
    }
    if (map) map[out->len] = (uint32_t)m;
    return WD_OK;
}

int wd_guard_fold(const char *text, size_t len, wd_buf_t *out, uint32_t **map, size_t *mapcap)
{
    wd_buf_reset(out);
    if (len > UINT32_MAX) return WD_E2BIG;
    if (map && *mapcap < len + 1) {
        uint32_t *m = realloc(*map, (len + 1) * sizeof *m);
        if (!m) return WD_ENOMEM;
        *map = m;
        *mapcap = len + 1;
    }
    if (wd_buf_reserve(out, len + 1)) return WD_ENOMEM; /* folding never lengthens the text */
    size_t run = 0;
    return fold_run((const unsigned char *)text, len, out, map ? *map : NULL, NULL, &run);
}

uint32_t wd_guard_fold_end(const char *text, const wd_buf_t *folded, const uint32_t *map, uint32_t end)
{
    if (end == 0) return map[0];
    uint32_t at = map[end - 1];
    unsigned char s = (unsigned char)text[at];
    if ((unsigned char)folded->data[end - 1] == s) return at + 1; /* copied as it was */
    return at + (s >= 0xF0 ? 4u : s >= 0xE0 ? 3u : 2u);          /* one folded character */
}

/* ---- streams ------------------------------------------------------------------------------------- */

void wd_fold_stream_init(wd_fold_stream_t *s)
{
    memset(s, 0, sizeof *s);
    wd_buf_init(&s->out, 0);
    wd_buf_init(&s->in, 0);
}

static void scrub_buf(wd_buf_t *b)
{
    if (b->data) memset(b->data, 0, b->cap);
    wd_buf_free(b);
}

void wd_fold_stream_free(wd_fold_stream_t *s)
{
    free(s->ev);
    scrub_buf(&s->out);
    scrub_buf(&s->in);
    memset(s, 0, sizeof *s);
}

/* Bytes at the end of p that start a character p does not complete (0 if its last one is whole). */
static size_t cut_tail(const unsigned char *p, size_t len)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        unsigned char c = p[len - k];
        if (cont(c)) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

int wd_fold_stream_feed(wd_fold_stream_t *s, const char *p, size_t len, bool final, const char **fp,
                        size_t *fn)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t m = len;
    if (s->npend) { /* the cut character first */
        wd_buf_reset(&s->in);
        if (wd_buf_append(&s->in, s->pend, s->npend) || wd_buf_append(&s->in, p, len)) return WD_ENOMEM;
        u = (const unsigned char *)s->in.data;
        m = s->in.len;
        s->npend = 0;
    }
    size_t cut = final ? 0 : cut_tail(u, m);
    m -= cut;
    if (cut) memcpy(s->pend, u + m, cut);
    s->npend = cut;
    if ((const char *)u == p && next_fold(u, m, 0, true) == m) { /* nothing folds: the piece itself */
        if (m) s->run = 0;
        s->raw += m;
        s->folded += m;
        *fp = p;
        *fn = m;
        return WD_OK;
    }
    wd_buf_reset(&s->out);
    if (wd_buf_reserve(&s->out, m + 1) || fold_run(u, m, &s->out, NULL, s, &s->run)) return WD_ENOMEM;
    s->raw += m;
    s->folded += s->out.len;
    *fp = s->out.data;
    *fn = s->out.len;
    return WD_OK;
}

/* The last kept event at or before folded offset x, or NULL. */
static const wd_fold_ev_t *ev_at(const wd_fold_stream_t *s, uint64_t x)
{
    size_t lo = 0, hi = s->nev;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ev[mid].f <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? &s->ev[lo - 1] : NULL;
}

static int64_t delta_after(const wd_fold_ev_t *e)
{
    return (int64_t)(e->r + e->rlen) - (int64_t)(e->f + e->flen);
}

uint64_t wd_fold_stream_raw(const wd_fold_stream_t *s, uint64_t x)
{
    const wd_fold_ev_t *e = ev_at(s, x);
    if (!e) return (uint64_t)((int64_t)x + s->delta0);
    if (x < e->f + e->flen) return e->r;
    return (uint64_t)((int64_t)x + delta_after(e));
}

uint64_t wd_fold_stream_raw_end(const wd_fold_stream_t *s, uint64_t x)
{
    const wd_fold_ev_t *e = ev_at(s, x - 1);
    if (e && x - 1 < e->f + e->flen) return e->r + e->rlen;
    return (uint64_t)((int64_t)x + (e ? delta_after(e) : s->delta0));
}

void wd_fold_stream_trim(wd_fold_stream_t *s, uint64_t x)
{
    size_t k = 0;
    while (k < s->nev && s->ev[k].f + s->ev[k].flen <= x)
        k++;
    if (!k) return;
    s->delta0 = delta_after(&s->ev[k - 1]);
    memmove(s->ev, s->ev + k, (s->nev - k) * sizeof *s->ev);
    s->nev -= k;
}

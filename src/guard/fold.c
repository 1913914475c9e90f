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

int wd_guard_fold(const char *text, size_t len, wd_buf_t *out, uint32_t **map, size_t *mapcap)
{
    const unsigned char *u = (const unsigned char *)text;
    wd_buf_reset(out);
    if (len > UINT32_MAX) return WD_E2BIG;
    if (map && *mapcap < len + 1) {
        uint32_t *m = realloc(*map, (len + 1) * sizeof *m);
        if (!m) return WD_ENOMEM;
        *map = m;
        *mapcap = len + 1;
    }
    if (wd_buf_reserve(out, len + 1)) return WD_ENOMEM; /* folding never lengthens the text */
    uint32_t *m = map ? *map : NULL;
    size_t i = 0;
    while (i < len) {
        size_t j = next_fold(u, len, i, true);
        for (size_t k = i; m && k < j; k++) m[out->len + k - i] = (uint32_t)k;
        memcpy(out->data + out->len, text + i, j - i);
        out->len += j - i;
        if (j == len) break;
        int c = -1;
        size_t n = fold_at(u + j, len - j, &c);
        if (c >= 0) {
            if (m) m[out->len] = (uint32_t)j;
            out->data[out->len++] = (char)c;
        }
        i = j + n;
    }
    if (m) m[out->len] = (uint32_t)len;
    return WD_OK;
}

uint32_t wd_guard_fold_end(const char *text, const wd_buf_t *folded, const uint32_t *map, uint32_t end)
{
    if (end == 0) return map[0];
    uint32_t at = map[end - 1];
    unsigned char s = (unsigned char)text[at];
    if ((unsigned char)folded->data[end - 1] == s) return at + 1; /* copied as it was */
    return at + (s >= 0xF0 ? 4u : s >= 0xE0 ? 3u : 2u);          /* one folded character */
}

#include "auth/recovery.h"

#include <sodium.h>

static const char ALPHA[] = "0123456789abcdefghjkmnpqrstvwxyz";
_Static_assert(sizeof ALPHA - 1 == 32, "5 bits per character");

int wd_recovery_generate(char out[WD_RECOVERY_TEXT_LEN + 1])
{
    uint8_t r[8];
    int rc = wd_random(r, sizeof r);
    if (rc) return rc;
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof r; i++) v = v << 8 | r[i];
    sodium_memzero(r, sizeof r);
    size_t o = 0;
    for (int i = 0; i < WD_RECOVERY_CHARS; i++) {
        if (i && i % 4 == 0) out[o++] = '-';
        out[o++] = ALPHA[v & 31]; /* 12 x 5 = 60 of the 64 bits */
        v >>= 5;
    }
    out[o] = '\0';
    sodium_memzero(&v, sizeof v);
    return WD_OK;
}

/* Crockford decoding of one typed character: -1 if it is not part of the alphabet. */
static int canon(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
    if (c == 'o') c = '0';
    if (c == 'i' || c == 'l') c = '1';
    const char *p = c ? strchr(ALPHA, c) : NULL;
    return p ? (int)(p - ALPHA) : -1;
}

int wd_recovery_hash(const uint8_t key[32], const char *p, size_t len, uint8_t out[32])
{
    if (!key || !out || (!p && len) || len > 32) return WD_EINVAL;
    char c[WD_RECOVERY_CHARS];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '-' || p[i] == ' ') continue;
        int v = canon((unsigned char)p[i]);
        if (v < 0 || n == sizeof c) {
            sodium_memzero(c, sizeof c);
            return WD_EINVAL;
        }
        c[n++] = ALPHA[v];
    }
    if (n != sizeof c) {
        sodium_memzero(c, sizeof c);
        return WD_EINVAL;
    }
    crypto_generichash(out, 32, (const uint8_t *)c, sizeof c, key, 32);
    sodium_memzero(c, sizeof c);
    return WD_OK;
}

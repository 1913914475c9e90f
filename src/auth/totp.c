/* HOTP/TOTP codes via liboath, window verification with replay protection, base32, otpauth URIs and
 * terminal QR codes via libqrencode. */
#include "auth/totp.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include <liboath/oath.h>
#include <qrencode.h>
#include <sodium.h>

static pthread_once_t g_oath_once = PTHREAD_ONCE_INIT;
static int g_oath_rc = -1;

static void oath_init_once(void) { g_oath_rc = oath_init(); }

static int oath_ready(void)
{
    pthread_once(&g_oath_once, oath_init_once);
    return g_oath_rc == OATH_OK ? WD_OK : WD_EIO;
}

static int alg_flags(wd_totp_alg_t alg)
{
    switch (alg) {
    case WD_TOTP_SHA1: return 0;
    case WD_TOTP_SHA256: return OATH_TOTP_HMAC_SHA256;
    case WD_TOTP_SHA512: return OATH_TOTP_HMAC_SHA512;
    }
    return -1;
}

static bool digits_ok(unsigned digits) { return digits >= WD_TOTP_MIN_DIGITS && digits <= WD_TOTP_MAX_DIGITS; }

/* liboath takes time_t; a counter or time beyond INT64_MAX cannot be represented there. */
#define TIME_MAX_U ((uint64_t)INT64_MAX)

int wd_totp_code(const uint8_t *key, size_t keylen, uint64_t unix_time, unsigned period, unsigned digits,
                 wd_totp_alg_t alg, char out[16])
{
    int flags = alg_flags(alg);
    if (!key || !keylen || !out || !period || !digits_ok(digits) || flags < 0 || unix_time > TIME_MAX_U)
        return WD_EINVAL;
    int rc = oath_ready();
    if (rc) return rc;
    if (oath_totp_generate2((const char *)key, keylen, (time_t)unix_time, period, 0, digits, flags, out) != OATH_OK)
        return WD_EINVAL;
    out[digits] = '\0';
    return WD_OK;
}

int wd_hotp_code(const uint8_t *key, size_t keylen, uint64_t counter, unsigned digits, wd_totp_alg_t alg,
                 char out[16])
{
    int flags = alg_flags(alg);
    if (!key || !keylen || !out || !digits_ok(digits) || flags < 0) return WD_EINVAL;
    int rc = oath_ready();
    if (rc) return rc;
    int orc;
    if (alg == WD_TOTP_SHA1) {
        orc = oath_hotp_generate((const char *)key, keylen, counter, digits, false, OATH_HOTP_DYNAMIC_TRUNCATION, out);
    } else {
        /* liboath only exposes SHA-256/512 through TOTP; with a 1-second step from epoch 0 the TOTP
         * counter is the time itself, which makes it HOTP with that hash. */
        if (counter > TIME_MAX_U) return WD_EINVAL;
        orc = oath_totp_generate2((const char *)key, keylen, (time_t)counter, 1, 0, digits, flags, out);
    }
    if (orc != OATH_OK) return WD_EINVAL;
    out[digits] = '\0';
    return WD_OK;
}

int wd_totp_verify(const uint8_t *key, size_t keylen, const char *code, size_t codelen, uint64_t unix_time,
                   unsigned period, unsigned digits, wd_totp_alg_t alg, unsigned window, uint64_t last_used_step,
                   uint64_t *matched_step)
{
    if (!key || !keylen || !code || !period || !digits_ok(digits) || alg_flags(alg) < 0 ||
        window > WD_TOTP_MAX_WINDOW)
        return WD_EINVAL;
    if (codelen != digits) return WD_EINVAL;
    for (size_t i = 0; i < codelen; i++)
        if (code[i] < '0' || code[i] > '9') return WD_EINVAL;

    uint64_t now = unix_time / period;
    /* Every step in the window is computed and compared, and results are folded in with masks, so the
     * time taken does not reveal which step (if any) matched. When several fresh steps match (a
     * collision), the highest is recorded: recording a lower one would let the same code be replayed
     * later against the higher step. */
    uint64_t best = 0, fresh_any = 0, stale_any = 0;
    int rc = WD_OK;
    char cand[16];
    for (uint64_t d = 0; d <= 2ULL * window; d++) {
        if (now + d < window) continue; /* steps before the epoch do not exist */
        uint64_t s = now + d - window;
        if ((rc = wd_hotp_code(key, keylen, s, digits, alg, cand))) break;
        uint64_t eq = (uint64_t)(sodium_memcmp(cand, code, digits) == 0);
        uint64_t fresh = (uint64_t)(s > last_used_step);
        uint64_t take = 0 - (eq & fresh); /* all ones when this step is a fresh match */
        best = (best & ~take) | (s & take); /* s increases, so the last fresh match is the highest */
        fresh_any |= eq & fresh;
        stale_any |= eq & (fresh ^ 1);
    }
    sodium_memzero(cand, sizeof cand);
    if (rc) return rc;
    if (fresh_any) {
        if (matched_step) *matched_step = best;
        return WD_OK;
    }
    return stale_any ? WD_EEXIST : WD_EINVAL;
}

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int wd_base32_encode(const uint8_t *p, size_t len, wd_buf_t *out)
{
    if ((!p && len) || !out) return WD_EINVAL;
    if (len > SIZE_MAX / 8 - 1) return WD_E2BIG;
    size_t olen = (len * 8 + 4) / 5;
    int rc = wd_buf_reserve(out, olen + 1);
    if (rc) return rc;
    char *d = out->data + out->len;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            *d++ = B32[(acc >> bits) & 31];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits) *d++ = B32[(acc << (5 - bits)) & 31];
    *d = '\0';
    out->len += olen;
    acc = 0;
    return WD_OK;
}

static int b32_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= '2' && c <= '7') return c - '2' + 26;
    return -1;
}

int wd_base32_decode(const char *p, size_t len, wd_buf_t *out)
{
    if ((!p && len) || !out) return WD_EINVAL;
    size_t dlen = len;
    while (dlen && p[dlen - 1] == '=') dlen--;
    /* Data characters per final group for 1..4 leftover bytes are 2, 4, 5, 7; other remainders cannot
     * come from any byte string. Padding, if present, must complete the last 8-character group. */
    static const bool valid_rem[8] = {true, false, true, false, true, true, false, true};
    if (!valid_rem[dlen % 8]) return WD_EINVAL;
    if (dlen != len && (len % 8 != 0 || len - dlen >= 8 || dlen % 8 == 0)) return WD_EINVAL;
    if (dlen == 0) return WD_OK;
    int rc = wd_buf_reserve(out, dlen * 5 / 8);
    if (rc) return rc;
    uint8_t *d = (uint8_t *)out->data + out->len;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < dlen; i++) {
        int v = b32_val((unsigned char)p[i]);
        if (v < 0) {
            sodium_memzero(d, n);
            return WD_EINVAL;
        }
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            d[n++] = (uint8_t)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    /* Non-zero leftover bits would be a second spelling of the same secret. */
    if (acc) {
        sodium_memzero(d, n);
        return WD_EINVAL;
    }
    out->len += n;
    return WD_OK;
}

static const char *alg_name(wd_totp_alg_t alg)
{
    switch (alg) {
    case WD_TOTP_SHA1: return "SHA1";
    case WD_TOTP_SHA256: return "SHA256";
    case WD_TOTP_SHA512: return "SHA512";
    }
    return NULL;
}

/* RFC 3986 percent-encoding: everything but unreserved characters. */
static int append_pct(wd_buf_t *b, const char *z)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *s = (const unsigned char *)z; *s; s++) {
        unsigned char c = *s;
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                          c == '.' || c == '_' || c == '~';
        char e[3] = {'%', hex[c >> 4], hex[c & 15]};
        int rc = unreserved ? wd_buf_append(b, s, 1) : wd_buf_append(b, e, 3);
        if (rc) return rc;
    }
    return WD_OK;
}

int wd_totp_uri(const char *issuer, const char *account, const uint8_t *key, size_t keylen, unsigned digits,
                unsigned period, wd_totp_alg_t alg, wd_buf_t *out)
{
    const char *an = alg_name(alg);
    if (!account || !*account || !key || !keylen || !out || !digits_ok(digits) || !period || !an) return WD_EINVAL;
    /* The label separates issuer and account with ':'; authenticator apps split on the first (even
     * percent-encoded) colon, so neither part may contain one. */
    if (strchr(account, ':') || (issuer && strchr(issuer, ':'))) return WD_EINVAL;
    bool has_issuer = issuer && *issuer;
    if (strlen(account) > 1024 || (has_issuer && strlen(issuer) > 1024) || keylen > 1024) return WD_E2BIG;

    /* Built in a private buffer sized up front so the secret is never left behind by a realloc; the
     * result is copied once into out. */
    size_t cap = 128 + 3 * strlen(account) + (has_issuer ? 6 * strlen(issuer) : 0) + (keylen * 8 + 4) / 5 + 1;
    wd_buf_t t;
    wd_buf_init(&t, cap);
    int rc = wd_buf_reserve(&t, cap);
    if (rc) return rc;
    rc = wd_buf_append_str(&t, "otpauth://totp/");
    if (!rc && has_issuer) {
        rc = append_pct(&t, issuer);
        if (!rc) rc = wd_buf_append(&t, ":", 1);
    }
    if (!rc) rc = append_pct(&t, account);
    if (!rc) rc = wd_buf_append_str(&t, "?secret=");
    if (!rc) rc = wd_base32_encode(key, keylen, &t);
    if (!rc && has_issuer) {
        rc = wd_buf_append_str(&t, "&issuer=");
        if (!rc) rc = append_pct(&t, issuer);
    }
    if (!rc) rc = wd_buf_printf(&t, "&algorithm=%s&digits=%u&period=%u", an, digits, period);
    if (!rc) rc = wd_buf_reserve(out, t.len + 1);
    if (!rc) {
        memcpy(out->data + out->len, t.data, t.len);
        out->len += t.len;
        out->data[out->len] = '\0';
    }
    sodium_memzero(t.data, t.cap);
    wd_buf_free(&t);
    return rc;
}

#define QUIET 2

int wd_qr_terminal_ex(const char *text, bool dark_on_light, wd_buf_t *out, unsigned *width_modules)
{
    if (!text || !out) return WD_EINVAL;
    errno = 0;
    QRcode *qr = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!qr) return errno == ENOMEM ? WD_ENOMEM : WD_EINVAL;
    int w = qr->width, W = w + 2 * QUIET;
    size_t lines = (size_t)(W + 1) / 2;
    /* each module column is at most 3 UTF-8 bytes; plus a newline per line and the NUL */
    int rc = wd_buf_reserve(out, lines * ((size_t)W * 3 + 1) + 1);
    if (rc) goto done;
    for (int y = 0; y < W; y += 2) {
        for (int x = 0; x < W; x++) {
            bool ink[2];
            for (int k = 0; k < 2; k++) {
                int yy = y + k, mx = x - QUIET, my = yy - QUIET;
                if (yy >= W) {
                    ink[k] = false; /* below the symbol: leave the terminal background */
                    continue;
                }
                bool dark = mx >= 0 && mx < w && my >= 0 && my < w && (qr->data[my * w + mx] & 1);
                ink[k] = dark_on_light ? dark : !dark;
            }
            const char *s = ink[0] ? (ink[1] ? "\u2588" : "\u2580") : (ink[1] ? "\u2584" : " ");
            wd_buf_append_str(out, s);
        }
        wd_buf_append(out, "\n", 1);
    }
    out->data[out->len] = '\0';
    if (width_modules) *width_modules = (unsigned)W;
done:
    QRcode_free(qr);
    return rc;
}

int wd_qr_terminal(const char *text, wd_buf_t *out) { return wd_qr_terminal_ex(text, false, out, NULL); }

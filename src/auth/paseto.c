/* PASETO v4 (local and public) on libsodium, following the spec's pseudo-code step by step so the
 * code can be checked against it. Decoding is strict: one token has exactly one accepted spelling. */
#include "auth/paseto.h"

#include <stdlib.h>

#include <sodium.h>

#define NONCE_LEN 32
#define MAC_LEN 32
#define SIG_LEN crypto_sign_BYTES

static const char HDR_LOCAL[] = WD_PASETO_V4_LOCAL_HDR;
static const char HDR_PUBLIC[] = WD_PASETO_V4_PUBLIC_HDR;
#define HDR_LOCAL_LEN (sizeof HDR_LOCAL - 1)
#define HDR_PUBLIC_LEN (sizeof HDR_PUBLIC - 1)

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_len(size_t n) { return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0); }

/* Keeps text outputs NUL-terminated past len without counting the NUL. */
static int buf_terminate(wd_buf_t *b)
{
    int rc = wd_buf_reserve(b, 1);
    if (rc) return rc;
    b->data[b->len] = '\0';
    return WD_OK;
}

static void le64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

/* LE64 per spec: the top bit is cleared so the value stays representable in signed 64-bit runtimes. */
static void pae_le64(uint8_t out[8], uint64_t v) { le64(out, v & 0x7fffffffffffffffULL); }

int wd_paseto_pae(wd_buf_t *out, size_t n, const wd_str_t *pieces)
{
    size_t total = 8;
    for (size_t i = 0; i < n; i++) {
        if (pieces[i].len > SIZE_MAX - total - 8) return WD_E2BIG;
        total += 8 + pieces[i].len;
    }
    int rc = wd_buf_reserve(out, total);
    if (rc) return rc;
    uint8_t len8[8];
    pae_le64(len8, (uint64_t)n);
    wd_buf_append(out, len8, 8);
    for (size_t i = 0; i < n; i++) {
        pae_le64(len8, (uint64_t)pieces[i].len);
        wd_buf_append(out, len8, 8);
        wd_buf_append(out, pieces[i].p, pieces[i].len);
    }
    return WD_OK;
}

int wd_b64url_encode(const void *p, size_t len, wd_buf_t *out)
{
    const uint8_t *s = p;
    if (len > (SIZE_MAX - 3) / 4 * 3) return WD_E2BIG;
    size_t olen = b64_len(len);
    int rc = wd_buf_reserve(out, olen + 1);
    if (rc) return rc;
    char *d = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = B64URL[v >> 18];
        *d++ = B64URL[(v >> 12) & 63];
        *d++ = B64URL[(v >> 6) & 63];
        *d++ = B64URL[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = B64URL[v >> 18];
        *d++ = B64URL[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = B64URL[v >> 18];
        *d++ = B64URL[(v >> 12) & 63];
        *d++ = B64URL[(v >> 6) & 63];
    }
    out->len += olen;
    *d = '\0';
    return WD_OK;
}

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

int wd_b64url_decode(const char *p, size_t len, wd_buf_t *out)
{
    /* A single leftover character carries only 6 bits: no byte string encodes to it. */
    if (len % 4 == 1) return WD_EINVAL;
    if (len == 0) return WD_OK;
    size_t olen = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    int rc = wd_buf_reserve(out, olen);
    if (rc) return rc;
    uint8_t *d = (uint8_t *)out->data + out->len;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val((unsigned char)p[i]);
        if (v < 0) return WD_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[n++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Canonical encodings leave the unused low bits zero; anything else is a second spelling of the
     * same bytes (test vector 4-F-4). */
    if (acc != 0) return WD_EINVAL;
    out->len += n;
    return WD_OK;
}

/* A parsed token: header checked, body and optional footer located (still base64url). */
typedef struct {
    const char *body;
    size_t body_len;
    const char *foot;
    size_t foot_len;
    bool has_footer;
} tok_parts_t;

static int split_token(const char *tok, size_t tlen, const char *hdr, size_t hlen, tok_parts_t *tp, char *err,
                       size_t errlen)
{
    if (tlen > WD_PASETO_MAX_TOKEN) return wd_errf(err, errlen, WD_E2BIG, "token too long");
    if (!tok || tlen < hlen || memcmp(tok, hdr, hlen) != 0)
        return wd_errf(err, errlen, WD_EINVAL, "token header is not %s", hdr);
    const char *body = tok + hlen;
    size_t rest = tlen - hlen;
    const char *dot = memchr(body, '.', rest);
    tp->body = body;
    tp->body_len = dot ? (size_t)(dot - body) : rest;
    tp->has_footer = dot != NULL;
    tp->foot = dot ? dot + 1 : NULL;
    tp->foot_len = dot ? rest - tp->body_len - 1 : 0;
    /* An empty footer is written without its '.', so "payload." is a second spelling: reject it. */
    if (dot && tp->foot_len == 0) return wd_errf(err, errlen, WD_EINVAL, "empty footer segment");
    return WD_OK;
}

/* Decodes the footer into a fresh buffer; on success the caller owns f. */
static int decode_footer(const tok_parts_t *tp, wd_buf_t *f, char *err, size_t errlen)
{
    wd_buf_init(f, 0);
    if (!tp->has_footer) return WD_OK;
    int rc = wd_b64url_decode(tp->foot, tp->foot_len, f);
    if (rc) {
        wd_buf_free(f);
        return wd_errf(err, errlen, WD_EINVAL, "footer is not canonical base64url");
    }
    return WD_OK;
}

/* Appends raw bytes and a NUL terminator as one reservation so no partial output is left on failure. */
static int append_text(wd_buf_t *b, const void *p, size_t len)
{
    int rc = wd_buf_reserve(b, len + 1);
    if (rc) return rc;
    if (len) memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return WD_OK;
}

/* Producers refuse what consumers would refuse, so we never mint a token that cannot be verified. */
static bool token_fits(size_t hlen, size_t mlen, size_t overhead, size_t flen)
{
    if (mlen > WD_PASETO_MAX_TOKEN || flen > WD_PASETO_MAX_TOKEN) return false;
    return hlen + b64_len(mlen + overhead) + (flen ? 1 + b64_len(flen) : 0) <= WD_PASETO_MAX_TOKEN;
}

static int emit_token(const char *hdr, size_t hlen, const uint8_t *body, size_t blen, const char *footer, size_t flen,
                      wd_buf_t *out)
{
    size_t start = out->len;
    int rc = wd_buf_append(out, hdr, hlen);
    if (!rc) rc = wd_b64url_encode(body, blen, out);
    if (!rc && flen) {
        rc = wd_buf_append(out, ".", 1);
        if (!rc) rc = wd_b64url_encode(footer, flen, out);
    }
    if (!rc) rc = buf_terminate(out);
    if (rc) out->len = start;
    return rc;
}

int wd_paseto_v4_public_sign(const uint8_t sk[64], const void *m, size_t mlen, const char *footer, size_t flen,
                             const char *implicit, size_t ilen, wd_buf_t *out)
{
    if (!sk || (!m && mlen) || (!footer && flen) || (!implicit && ilen) || !out) return WD_EINVAL;
    if (sodium_init() < 0) return WD_EIO;
    if (!token_fits(HDR_PUBLIC_LEN, mlen, SIG_LEN, flen)) return WD_E2BIG;
    wd_str_t pieces[4] = {{HDR_PUBLIC, HDR_PUBLIC_LEN}, {m, mlen}, {footer, flen}, {implicit, ilen}};
    wd_buf_t pae;
    wd_buf_init(&pae, 0);
    int rc = wd_paseto_pae(&pae, 4, pieces);
    if (rc) goto done;
    uint8_t *body = malloc(mlen + SIG_LEN);
    if (!body) {
        rc = WD_ENOMEM;
        goto done;
    }
    if (mlen) memcpy(body, m, mlen);
    crypto_sign_detached(body + mlen, NULL, (const uint8_t *)pae.data, pae.len, sk);
    rc = emit_token(HDR_PUBLIC, HDR_PUBLIC_LEN, body, mlen + SIG_LEN, footer, flen, out);
    free(body);
done:
    wd_buf_free(&pae);
    return rc;
}

int wd_paseto_v4_public_verify(const uint8_t pk[32], const char *tok, size_t tlen, const char *implicit, size_t ilen,
                               wd_buf_t *payload, wd_buf_t *footer, char *err, size_t errlen)
{
    if (!pk || (!implicit && ilen) || !payload) return wd_errf(err, errlen, WD_EINVAL, "invalid arguments");
    if (sodium_init() < 0) return wd_errf(err, errlen, WD_EIO, "libsodium init failed");
    tok_parts_t tp;
    int rc = split_token(tok, tlen, HDR_PUBLIC, HDR_PUBLIC_LEN, &tp, err, errlen);
    if (rc) return rc;
    wd_buf_t f, body, pae;
    wd_buf_init(&body, 0);
    wd_buf_init(&pae, 0);
    if ((rc = decode_footer(&tp, &f, err, errlen))) return rc;
    if (wd_b64url_decode(tp.body, tp.body_len, &body)) {
        rc = wd_errf(err, errlen, WD_EINVAL, "payload is not canonical base64url");
        goto done;
    }
    if (body.len < SIG_LEN) {
        rc = wd_errf(err, errlen, WD_EINVAL, "token too short");
        goto done;
    }
    size_t mlen = body.len - SIG_LEN;
    const uint8_t *sig = (const uint8_t *)body.data + mlen;
    wd_str_t pieces[4] = {{HDR_PUBLIC, HDR_PUBLIC_LEN}, {body.data, mlen}, {f.data, f.len}, {implicit, ilen}};
    if ((rc = wd_paseto_pae(&pae, 4, pieces))) goto done;
    if (crypto_sign_verify_detached(sig, (const uint8_t *)pae.data, pae.len, pk) != 0) {
        rc = wd_errf(err, errlen, WD_EINVAL, "invalid signature");
        goto done;
    }
    size_t pstart = payload->len;
    if ((rc = append_text(payload, body.data, mlen))) goto done;
    if (footer && (rc = append_text(footer, f.data, f.len))) {
        payload->len = pstart;
        goto done;
    }
done:
    wd_buf_free(&f);
    wd_buf_free(&body);
    wd_buf_free(&pae);
    return rc;
}

/* Ek || n2 = BLAKE2b-448(key, "paseto-encryption-key" || n); Ak = BLAKE2b-256(key, "paseto-auth-key-for-aead" || n) */
static void local_keys(const uint8_t key[32], const uint8_t n[NONCE_LEN], uint8_t ek[32], uint8_t n2[24],
                       uint8_t ak[32])
{
    static const char ENC[] = "paseto-encryption-key";
    static const char AUTH[] = "paseto-auth-key-for-aead";
    uint8_t tmp[56];
    crypto_generichash_state st;
    crypto_generichash_init(&st, key, 32, sizeof tmp);
    crypto_generichash_update(&st, (const uint8_t *)ENC, sizeof ENC - 1);
    crypto_generichash_update(&st, n, NONCE_LEN);
    crypto_generichash_final(&st, tmp, sizeof tmp);
    memcpy(ek, tmp, 32);
    memcpy(n2, tmp + 32, 24);
    crypto_generichash_init(&st, key, 32, 32);
    crypto_generichash_update(&st, (const uint8_t *)AUTH, sizeof AUTH - 1);
    crypto_generichash_update(&st, n, NONCE_LEN);
    crypto_generichash_final(&st, ak, 32);
    sodium_memzero(tmp, sizeof tmp);
    sodium_memzero(&st, sizeof st);
}

static int local_mac(const uint8_t ak[32], const uint8_t *n, const uint8_t *c, size_t clen, const char *f, size_t flen,
                     const char *i, size_t ilen, uint8_t t[MAC_LEN])
{
    wd_str_t pieces[5] = {{HDR_LOCAL, HDR_LOCAL_LEN},
                          {(const char *)n, NONCE_LEN},
                          {(const char *)c, clen},
                          {f, flen},
                          {i, ilen}};
    wd_buf_t pae;
    wd_buf_init(&pae, 0);
    int rc = wd_paseto_pae(&pae, 5, pieces);
    if (!rc) crypto_generichash(t, MAC_LEN, (const uint8_t *)pae.data, pae.len, ak, 32);
    wd_buf_free(&pae);
    return rc;
}

int wd_paseto_v4_local_encrypt(const uint8_t key[32], const uint8_t *nonce32_or_null, const void *m, size_t mlen,
                               const char *footer, size_t flen, const char *implicit, size_t ilen, wd_buf_t *out)
{
    if (!key || (!m && mlen) || (!footer && flen) || (!implicit && ilen) || !out) return WD_EINVAL;
    if (sodium_init() < 0) return WD_EIO;
    if (!token_fits(HDR_LOCAL_LEN, mlen, NONCE_LEN + MAC_LEN, flen)) return WD_E2BIG;
    size_t blen = NONCE_LEN + mlen + MAC_LEN;
    uint8_t *body = malloc(blen);
    if (!body) return WD_ENOMEM;
    uint8_t *n = body, *c = body + NONCE_LEN, *t = body + NONCE_LEN + mlen;
    int rc = WD_OK;
    if (nonce32_or_null)
        memcpy(n, nonce32_or_null, NONCE_LEN);
    else if ((rc = wd_random(n, NONCE_LEN)))
        goto done;
    uint8_t ek[32], n2[24], ak[32];
    local_keys(key, n, ek, n2, ak);
    if (mlen) crypto_stream_xchacha20_xor(c, m, mlen, n2, ek);
    rc = local_mac(ak, n, c, mlen, footer, flen, implicit, ilen, t);
    sodium_memzero(ek, sizeof ek);
    sodium_memzero(ak, sizeof ak);
    sodium_memzero(n2, sizeof n2);
    if (!rc) rc = emit_token(HDR_LOCAL, HDR_LOCAL_LEN, body, blen, footer, flen, out);
done:
    free(body);
    return rc;
}

int wd_paseto_v4_local_decrypt(const uint8_t key[32], const char *tok, size_t tlen, const char *implicit, size_t ilen,
                               wd_buf_t *payload, wd_buf_t *footer, char *err, size_t errlen)
{
    if (!key || (!implicit && ilen) || !payload) return wd_errf(err, errlen, WD_EINVAL, "invalid arguments");
    if (sodium_init() < 0) return wd_errf(err, errlen, WD_EIO, "libsodium init failed");
    tok_parts_t tp;
    int rc = split_token(tok, tlen, HDR_LOCAL, HDR_LOCAL_LEN, &tp, err, errlen);
    if (rc) return rc;
    wd_buf_t f, body;
    wd_buf_init(&body, 0);
    if ((rc = decode_footer(&tp, &f, err, errlen))) return rc;
    uint8_t ek[32], n2[24], ak[32], t2[MAC_LEN];
    bool keyed = false;
    if (wd_b64url_decode(tp.body, tp.body_len, &body)) {
        rc = wd_errf(err, errlen, WD_EINVAL, "payload is not canonical base64url");
        goto done;
    }
    if (body.len < NONCE_LEN + MAC_LEN) {
        rc = wd_errf(err, errlen, WD_EINVAL, "token too short");
        goto done;
    }
    const uint8_t *n = (const uint8_t *)body.data;
    const uint8_t *c = n + NONCE_LEN;
    size_t clen = body.len - NONCE_LEN - MAC_LEN;
    const uint8_t *t = c + clen;
    local_keys(key, n, ek, n2, ak);
    keyed = true;
    if ((rc = local_mac(ak, n, c, clen, f.data, f.len, implicit, ilen, t2))) goto done;
    if (sodium_memcmp(t, t2, MAC_LEN) != 0) {
        rc = wd_errf(err, errlen, WD_EINVAL, "invalid authentication tag");
        goto done;
    }
    /* Decrypt straight into the caller's buffer (reserved once) so no plaintext copy is left behind. */
    size_t pstart = payload->len;
    if ((rc = wd_buf_reserve(payload, clen + 1))) goto done;
    if (clen) crypto_stream_xchacha20_xor((uint8_t *)payload->data + pstart, c, clen, n2, ek);
    payload->len += clen;
    payload->data[payload->len] = '\0';
    if (footer && (rc = append_text(footer, f.data, f.len))) {
        sodium_memzero(payload->data + pstart, clen);
        payload->len = pstart;
        goto done;
    }
done:
    if (keyed) {
        sodium_memzero(ek, sizeof ek);
        sodium_memzero(ak, sizeof ak);
        sodium_memzero(n2, sizeof n2);
    }
    wd_buf_free(&f);
    wd_buf_free(&body);
    return rc;
}

int wd_paseto_footer(const char *tok, size_t tlen, wd_buf_t *footer)
{
    if (!tok || !footer) return WD_EINVAL;
    tok_parts_t tp;
    int rc = split_token(tok, tlen, HDR_LOCAL, HDR_LOCAL_LEN, &tp, NULL, 0);
    if (rc == WD_EINVAL) rc = split_token(tok, tlen, HDR_PUBLIC, HDR_PUBLIC_LEN, &tp, NULL, 0);
    if (rc) return rc;
    if (!tp.has_footer) return WD_ENOTFOUND;
    wd_buf_t f;
    if ((rc = decode_footer(&tp, &f, NULL, 0))) return rc;
    rc = append_text(footer, f.data, f.len);
    wd_buf_free(&f);
    return rc;
}

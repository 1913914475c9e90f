/* Master-key helpers on libsodium: KDF, row-bound sealing (XChaCha20-Poly1305), argon2id passwords. */
#include "auth/secret.h"

#include <sodium.h>

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define PW_PREFIX "$argon2id$"

_Static_assert(WD_SEAL_OVERHEAD == NONCE_LEN + TAG_LEN, "seal layout");
_Static_assert(crypto_pwhash_STRBYTES == 128, "password hash buffer");
_Static_assert(crypto_kdf_CONTEXTBYTES == 8 && crypto_kdf_KEYBYTES == 32, "kdf sizes");

int wd_secret_init(void) { return sodium_init() < 0 ? WD_EIO : WD_OK; }

int wd_kdf(const uint8_t master[32], const char ctx[8], uint64_t id, uint8_t out[32])
{
    if (!master || !ctx || !out) return WD_EINVAL;
    if (wd_secret_init()) return WD_EIO;
    return crypto_kdf_derive_from_key(out, 32, id, ctx, master) == 0 ? WD_OK : WD_EINVAL;
}

int wd_seal(const uint8_t key[32], const void *plain, size_t len, const char *ad, wd_buf_t *out)
{
    if (!key || (!plain && len) || !out) return WD_EINVAL;
    if (wd_secret_init()) return WD_EIO;
    if (len > SIZE_MAX - WD_SEAL_OVERHEAD || len > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX)
        return WD_E2BIG;
    int rc = wd_buf_reserve(out, len + WD_SEAL_OVERHEAD);
    if (rc) return rc;
    uint8_t *n = (uint8_t *)out->data + out->len;
    if ((rc = wd_random(n, NONCE_LEN))) return rc;
    unsigned long long clen = 0;
    size_t adlen = ad ? strlen(ad) : 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(n + NONCE_LEN, &clen, plain, len, (const uint8_t *)ad, adlen, NULL, n,
                                               key);
    out->len += NONCE_LEN + (size_t)clen;
    return WD_OK;
}

int wd_unseal(const uint8_t key[32], const void *sealed, size_t len, const char *ad, wd_buf_t *out)
{
    if (!key || !sealed || !out) return WD_EINVAL;
    if (wd_secret_init()) return WD_EIO;
    if (len < WD_SEAL_OVERHEAD) return WD_EINVAL;
    const uint8_t *n = sealed;
    size_t mlen = len - WD_SEAL_OVERHEAD;
    /* Decrypt in place in out, reserved once up front, so the plaintext never gets copied by a realloc. */
    int rc = wd_buf_reserve(out, mlen ? mlen : 1);
    if (rc) return rc;
    uint8_t *m = (uint8_t *)out->data + out->len;
    unsigned long long got = 0;
    size_t adlen = ad ? strlen(ad) : 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(m, &got, NULL, n + NONCE_LEN, len - NONCE_LEN, (const uint8_t *)ad,
                                                   adlen, n, key) != 0) {
        sodium_memzero(m, mlen);
        return WD_EINVAL;
    }
    out->len += (size_t)got;
    return WD_OK;
}

int wd_password_hash(const char *pw, size_t len, char out[128])
{
    if ((!pw && len) || !out) return WD_EINVAL;
    if (len > WD_PASSWORD_MAX) return WD_E2BIG;
    if (wd_secret_init()) return WD_EIO;
    if (crypto_pwhash_str_alg(out, pw ? pw : "", len, WD_PWHASH_OPSLIMIT, WD_PWHASH_MEMLIMIT,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return WD_ENOMEM; /* the only runtime failure is argon2's memory allocation */
    return WD_OK;
}

/* A stored hash must be a NUL-terminated string that fits crypto_pwhash_STRBYTES. */
static bool hash_ok(const char *hash) { return hash && strnlen(hash, crypto_pwhash_STRBYTES) < crypto_pwhash_STRBYTES; }

int wd_password_verify(const char *hash, const char *pw, size_t len)
{
    if (!hash_ok(hash) || (!pw && len) || len > WD_PASSWORD_MAX) return WD_EINVAL;
    if (wd_secret_init()) return WD_EIO;
    /* libsodium also accepts argon2i hashes; we only ever wrote argon2id, so anything else is foreign. */
    if (strncmp(hash, PW_PREFIX, sizeof PW_PREFIX - 1) != 0) return WD_EINVAL;
    return crypto_pwhash_str_verify(hash, pw ? pw : "", len) == 0 ? WD_OK : WD_EINVAL;
}

bool wd_password_needs_rehash(const char *hash)
{
    if (!hash_ok(hash) || strncmp(hash, PW_PREFIX, sizeof PW_PREFIX - 1) != 0) return true;
    if (wd_secret_init()) return true;
    return crypto_pwhash_str_needs_rehash(hash, WD_PWHASH_OPSLIMIT, WD_PWHASH_MEMLIMIT) != 0;
}

/* secret: helpers around the master key — subkey derivation, sealing small secrets at rest (TOTP
 * seeds, upstream credentials) bound to the row they belong to, and password hashing (argon2id).
 * Every function zeroes its temporaries; callers own and zero their inputs.
 * Call sodium_init() (or wd_secret_init()) once before use; the functions call it themselves too. */
#ifndef WD_AUTH_SECRET_H
#define WD_AUTH_SECRET_H

#include "core/core.h"

/* Sealed blob = nonce (24) || ciphertext || tag (16). */
#define WD_SEAL_OVERHEAD (24 + 16)
/* Upper bound on a password accepted for hashing/verification (DoS bound; argon2 cost is per call). */
#define WD_PASSWORD_MAX 1024
/* OWASP argon2id minimum: m = 19 MiB, t = 2, p = 1. */
#define WD_PWHASH_OPSLIMIT 2ULL
#define WD_PWHASH_MEMLIMIT ((size_t)19 * 1024 * 1024)

/* Initialises libsodium; safe to call repeatedly. WD_EIO if it cannot. */
int wd_secret_init(void);

/* Subkey `id` for context ctx (exactly 8 bytes, not NUL-terminated) via crypto_kdf_derive_from_key. */
int wd_kdf(const uint8_t master[32], const char ctx[8], uint64_t id, uint8_t out[32]);

/* XChaCha20-Poly1305-IETF with a random 24-byte nonce prepended; ad (NUL-terminated, NULL = empty)
 * binds the blob to its row, e.g. "totp:user:42", so a blob copied to another row does not open.
 * Both append to out. unseal returns WD_EINVAL for a short, tampered, wrong-key or wrong-AD blob and
 * then appends nothing; it decrypts in place after reserving room once, so no stray plaintext copy is
 * left by a realloc — the caller zeroes out (sodium_memzero) when done. */
int wd_seal(const uint8_t key[32], const void *plain, size_t len, const char *ad, wd_buf_t *out);
int wd_unseal(const uint8_t key[32], const void *sealed, size_t len, const char *ad, wd_buf_t *out);

/* argon2id PHC string ("$argon2id$v=19$m=19456,t=2,p=1$...") NUL-terminated in out. WD_E2BIG if
 * len > WD_PASSWORD_MAX, WD_ENOMEM if argon2 cannot allocate. */
int wd_password_hash(const char *pw, size_t len, char out[128]);
/* 0 on match, WD_EINVAL on mismatch or a malformed hash string. */
int wd_password_verify(const char *hash, const char *pw, size_t len);
/* true if hash was made with other parameters/algorithm than the current ones (rehash at next login). */
bool wd_password_needs_rehash(const char *hash);

#endif

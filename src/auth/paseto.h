/* paseto: PASETO v4 tokens (https://github.com/paseto-standard/paseto-spec), exactly as specified.
 * v4.local  = XChaCha20 + keyed BLAKE2b-256 MAC (encrypt-then-MAC over PAE), keys split with BLAKE2b;
 * v4.public = Ed25519 over PAE(header, message, footer, implicit assertion).
 * Tokens use unpadded base64url; decoding rejects padding, foreign characters and non-canonical
 * trailing bits, so a token has exactly one valid spelling. The footer is authenticated but not
 * encrypted; the implicit assertion is authenticated but never transmitted.
 *
 * Output buffers: every function APPENDS to its wd_buf_t outputs and keeps the appended text
 * NUL-terminated one byte past len (not counted in len), so callers can pass data to string APIs.
 * On failure nothing usable is appended (the buffers may have grown capacity only).
 * Keys: secret keys are libsodium's 64-byte Ed25519 form (seed || public key). */
#ifndef WD_AUTH_PASETO_H
#define WD_AUTH_PASETO_H

#include "core/core.h"

#define WD_PASETO_V4_LOCAL_HDR "v4.local."
#define WD_PASETO_V4_PUBLIC_HDR "v4.public."
/* Upper bound on an accepted token; longer input is rejected before any decoding (WD_E2BIG). */
#define WD_PASETO_MAX_TOKEN (64 * 1024)

/* PAE (pre-authentication encoding, spec "Common"): appends LE64(n) || for each piece LE64(len) || piece. */
int wd_paseto_pae(wd_buf_t *out, size_t n, const wd_str_t *pieces);

/* Unpadded base64url (RFC 4648 §5). decode rejects '=', other alphabets, whitespace, length ≡ 1 (mod 4)
 * and non-zero trailing bits. Both append to out (decode does not NUL-terminate). */
int wd_b64url_encode(const void *p, size_t len, wd_buf_t *out);
int wd_b64url_decode(const char *p, size_t len, wd_buf_t *out);

/* v4.public. sk is 64 bytes (seed || pk). footer/implicit may be NULL when their length is 0. */
int wd_paseto_v4_public_sign(const uint8_t sk[64], const void *m, size_t mlen, const char *footer, size_t flen,
                             const char *implicit, size_t ilen, wd_buf_t *out);
/* Verifies and appends the message to payload and the (verified) footer to footer (footer may be NULL
 * if the caller does not want it). Any failure — wrong header, bad encoding, bad signature — returns
 * WD_EINVAL (WD_E2BIG for oversized tokens) with a reason in err that never contains key material. */
int wd_paseto_v4_public_verify(const uint8_t pk[32], const char *tok, size_t tlen, const char *implicit, size_t ilen,
                               wd_buf_t *payload, wd_buf_t *footer, char *err, size_t errlen);

/* v4.local. nonce32_or_null == NULL draws a random 32-byte nonce (always do this in production);
 * an explicit nonce exists only to reproduce the spec's test vectors. */
int wd_paseto_v4_local_encrypt(const uint8_t key[32], const uint8_t *nonce32_or_null, const void *m, size_t mlen,
                               const char *footer, size_t flen, const char *implicit, size_t ilen, wd_buf_t *out);
int wd_paseto_v4_local_decrypt(const uint8_t key[32], const char *tok, size_t tlen, const char *implicit, size_t ilen,
                               wd_buf_t *payload, wd_buf_t *footer, char *err, size_t errlen);

/* Appends the decoded footer of a v4.local or v4.public token WITHOUT verifying anything — only to pick
 * the key (e.g. by "kid") before verification. WD_ENOTFOUND if the token has no footer, WD_EINVAL if
 * the token is malformed. */
int wd_paseto_footer(const char *tok, size_t tlen, wd_buf_t *footer);

#endif

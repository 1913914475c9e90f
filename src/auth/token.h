/* auth/token: warden's access tokens — PASETO v4.public (Ed25519) with the registered claims sub,
 * iss ("warden"), iat, exp (ISO 8601, UTC), jti, plus roles, mfa and an optional models scope; the
 * footer carries {"kid": PASERK k4.pid of the signing key}. Verification checks signature, kid,
 * times and shape; revocation and "dies with its user or key" are checked by the caller against
 * the live auth snapshot. */
#ifndef WD_AUTH_TOKEN_H
#define WD_AUTH_TOKEN_H

#include "core/core.h"

#define WD_TOKEN_PREFIX "v4.public."

typedef struct {
    char sub[160];      /* "user:<name>" or "key:<id>" */
    char jti[48];
    bool mfa;
    int64_t iat, exp;   /* unix seconds */
    char **roles;
    size_t nroles;
    char **models;      /* NULL: no narrowing */
    size_t nmodels;
} wd_claims_t;

void wd_claims_free(wd_claims_t *c);

/* Signs claims (a fresh random jti is written into c->jti when it is empty). */
int wd_token_mint(const uint8_t sk[64], const char *kid, wd_claims_t *c, wd_buf_t *out);

/* Verifies a token at time `now`. On failure returns WD_EINVAL with *code set to "invalid_token" or
 * "expired_token" and a reason that never echoes the token. */
int wd_token_verify(const uint8_t pk[32], const char *kid, const char *tok, size_t len, int64_t now,
                    wd_claims_t *out, const char **code, char *reason, size_t rlen);

/* ISO 8601 / RFC 3339 UTC timestamps as PASETO claims use them. */
void wd_time_iso(int64_t t, char out[32]);
int wd_time_parse_iso(const char *s, size_t len, int64_t *t);

/* "30d", "12h", "15m", "90s" -> seconds. */
int wd_parse_ttl(const char *s, int64_t *seconds);

#endif

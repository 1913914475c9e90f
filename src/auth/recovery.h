/* auth/recovery: MFA recovery codes — single-use fallbacks printed once at TOTP enrolment.
 * A code is 12 characters of Crockford's base32 alphabet (0-9 a-z without i, l, o, u: nothing a
 * person can misread), 60 random bits, shown as xxxx-xxxx-xxxx. Only a keyed BLAKE2b-256 hash of
 * the canonical 12 characters is stored; wd_recovery_hash canonicalises what a user types (case,
 * dashes, spaces, and the look-alikes o->0, i/l->1) so enrolment and login agree on one hash. */
#ifndef WD_AUTH_RECOVERY_H
#define WD_AUTH_RECOVERY_H

#include "core/core.h"

#define WD_RECOVERY_CHARS 12
#define WD_RECOVERY_TEXT_LEN 14 /* xxxx-xxxx-xxxx */
#define WD_RECOVERY_COUNT 10

/* Writes a fresh code as "xxxx-xxxx-xxxx" and a NUL. WD_EIO if the system RNG fails. */
int wd_recovery_generate(char out[WD_RECOVERY_TEXT_LEN + 1]);

/* Canonicalises p (see above; at most 32 bytes of input) and writes BLAKE2b-256 keyed with key over
 * the 12 canonical characters. WD_EINVAL if p is not a well-formed code. */
int wd_recovery_hash(const uint8_t key[32], const char *p, size_t len, uint8_t out[32]);

#endif

/* totp: one-time passwords for MFA — HOTP (RFC 4226) and TOTP (RFC 6238) via liboath, verification with
 * a step window and replay protection, base32 secrets (RFC 4648), otpauth:// enrolment URIs and a QR
 * code rendered for a terminal (libqrencode).
 *
 * Replay protection is the caller's half of the contract: persist *matched_step after a successful
 * wd_totp_verify and pass it back as last_used_step next time; a code for that step (or any earlier
 * one) is then refused with WD_EEXIST.
 * Outputs are APPENDED to wd_buf_t buffers; text outputs stay NUL-terminated past len. */
#ifndef WD_AUTH_TOTP_H
#define WD_AUTH_TOTP_H

#include "core/core.h"

typedef enum { WD_TOTP_SHA1, WD_TOTP_SHA256, WD_TOTP_SHA512 } wd_totp_alg_t;

#define WD_TOTP_MIN_DIGITS 6
#define WD_TOTP_MAX_DIGITS 8
#define WD_TOTP_MAX_WINDOW 10

/* out receives `digits` decimal digits and a NUL. digits must be 6..8, period > 0, keylen > 0. */
int wd_totp_code(const uint8_t *key, size_t keylen, uint64_t unix_time, unsigned period, unsigned digits,
                 wd_totp_alg_t alg, char out[16]);
int wd_hotp_code(const uint8_t *key, size_t keylen, uint64_t counter, unsigned digits, wd_totp_alg_t alg,
                 char out[16]);

/* Accepts `code` if it equals the code of some step s in [now - window, now + window] with
 * s > last_used_step (pass 0 when nothing was used yet; step 0 is the Unix epoch's first 30 s and is
 * therefore never accepted). Every step in the window is computed and compared in constant time.
 * Returns 0 and sets *matched_step (may be NULL); WD_EEXIST if the code matches only steps
 * <= last_used_step (replay); WD_EINVAL for a wrong code, a code with non-digits or the wrong length,
 * or bad parameters (window > WD_TOTP_MAX_WINDOW). */
int wd_totp_verify(const uint8_t *key, size_t keylen, const char *code, size_t codelen, uint64_t unix_time,
                   unsigned period, unsigned digits, wd_totp_alg_t alg, unsigned window, uint64_t last_used_step,
                   uint64_t *matched_step);

/* Base32, RFC 4648 alphabet A-Z2-7. encode writes no padding. decode is case-insensitive, accepts
 * optional trailing '=' padding (only in a valid amount), rejects any other character and
 * non-canonical trailing bits. Both append to out; encode NUL-terminates. */
int wd_base32_encode(const uint8_t *p, size_t len, wd_buf_t *out);
int wd_base32_decode(const char *p, size_t len, wd_buf_t *out);

/* otpauth://totp/<Issuer>:<account>?secret=<B32>&issuer=<Issuer>&algorithm=SHA1&digits=6&period=30
 * (Key Uri Format); issuer and account are percent-encoded (RFC 3986 unreserved kept as is).
 * issuer must not contain ':'. */
int wd_totp_uri(const char *issuer, const char *account, const uint8_t *key, size_t keylen, unsigned digits,
                unsigned period, wd_totp_alg_t alg, wd_buf_t *out);

/* Renders text as a QR code (ECC level M, 8-bit mode) with a 2-module quiet zone as UTF-8 half blocks:
 * each output line ('\n'-terminated) covers two module rows, each column one module. Terminals are
 * usually light text on a dark background, so LIGHT modules (quiet zone included) are drawn as ink
 * (▀ ▄ █) and dark modules as spaces — that is what phone scanners read. Appends to out
 * (NUL-terminated). WD_EINVAL if text is too long for a QR code. */
int wd_qr_terminal(const char *text, wd_buf_t *out);
/* dark_on_light = true draws DARK modules as ink instead (for light-background terminals and files).
 * *width_modules (may be NULL) receives the symbol width including both quiet zones; the output then
 * has width_modules columns and (width_modules + 1) / 2 lines. */
int wd_qr_terminal_ex(const char *text, bool dark_on_light, wd_buf_t *out, unsigned *width_modules);

#endif

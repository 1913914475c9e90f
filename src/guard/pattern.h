/* guard/pattern: what a rule's pattern can match, read from its text without an engine.
 *
 * The engine confirms each match end Hyperscan reports with PCRE2, searching for the leftmost start
 * in a window of up to the rule's longest span before the end. A match can only be made of the bytes
 * the pattern's atoms consume, so the search may begin after the last byte before the end that no
 * atom can consume: an e-mail address's window then starts at the space before the address, not 254
 * bytes earlier. See docs/rules.md (Performance). */
#ifndef WD_GUARD_PATTERN_H
#define WD_GUARD_PATTERN_H

#include <stdbool.h>
#include <stdint.h>

/* Sets bit c of `bytes` (bytes[c >> 3] & 1 << (c & 7)) for every byte c a match of the pattern
 * (Hyperscan/PCRE2 syntax, byte semantics, no UTF) can contain: the union of what each of its atoms
 * consumes, with both ASCII cases when `caseless` or a (?i) appears. A superset: zero-width parts
 * (assertions, lookaround) only add bytes. Returns false, with every bit set, when the pattern uses
 * syntax this reader does not know for certain (POSIX classes, \p, \Q...\E, \x{...}, extended mode,
 * conditionals, ...): then nothing may be assumed. */
bool wd_pattern_bytes(const char *pat, bool caseless, uint8_t bytes[32]);

static inline bool wd_byte_in(const uint8_t bytes[32], unsigned char c)
{
    return bytes[c >> 3] & (1u << (c & 7));
}

#endif

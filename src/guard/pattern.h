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
#include <stddef.h>
#include <stdint.h>

/* Sets bit c of `bytes` (bytes[c >> 3] & 1 << (c & 7)) for every byte c a match of the pattern
 * (Hyperscan/PCRE2 syntax, byte semantics, no UTF) can contain: the union of what each of its atoms
 * consumes, with both ASCII cases when `caseless` or a (?i) appears. A superset: zero-width parts
 * (assertions, lookaround) only add bytes. Returns false, with every bit set, when the pattern uses
 * syntax this reader does not know for certain (POSIX classes, \p, \Q...\E, \x{...}, extended mode,
 * conditionals, ...): then nothing may be assumed. */
bool wd_pattern_bytes(const char *pat, bool caseless, uint8_t bytes[32]);

/* How many bytes of `set` every match of the pattern certainly holds (caseless as in wd_pattern_bytes):
 * the atoms that must occur and consume only such bytes, counted with their least repetition, the
 * fewest over alternatives. A lower bound: 0 when nothing is certain, also for syntax this reader does
 * not know. "\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b" holds 9 digits; "(?:a1|22)b": 1. */
unsigned long wd_pattern_count(const char *pat, bool caseless, const uint8_t set[32]);

/* Whether every match holds a byte of `set` at all. The engine scans such a rule only around the
 * bytes of the set (engine.c, trigger-gated rules). */
static inline bool wd_pattern_requires(const char *pat, bool caseless, const uint8_t set[32])
{
    return wd_pattern_count(pat, caseless, set) > 0;
}

/* Whether every match of the pattern (a sequence at the top, no alternation there) holds the byte
 * *pivot right after a byte of `before` and right before a byte of `after`: some piece of the
 * sequence is that one byte, always once; what comes before and after it cannot be empty. *once: no
 * other piece can consume the byte, so a match holds it exactly once (such a pivot is preferred). Two
 * capitalised words with a space between them: the space, once, after a lower-case letter, before a
 * capital; a token of dotted parts ("\w+\.\w+\.\w+"): the first dot, not once. False when not
 * certain, as for wd_pattern_requires. */
bool wd_pattern_pivot(const char *pat, bool caseless, unsigned char *pivot, uint8_t before[32],
                      uint8_t after[32], bool *once);

/* The bytes a match can start with (every byte, and false, when not certain or a match can be empty). */
bool wd_pattern_first(const char *pat, bool caseless, uint8_t first[32]);

/* The length of a literal (bytes one after the other, each in one ASCII case or both) every match
 * holds, or of the shortest of a set of literals one of which every match holds ("(?:Server|Host)=":
 * 5): what Hyperscan looks for first. 0 if none or not certain. */
size_t wd_pattern_literal(const char *pat, bool caseless);

static inline bool wd_byte_in(const uint8_t bytes[32], unsigned char c)
{
    return bytes[c >> 3] & (1u << (c & 7));
}

/* The number of bytes in a set. */
static inline unsigned wd_byte_count(const uint8_t bytes[32])
{
    unsigned n = 0;
    for (unsigned k = 0; k < 32; k++)
        n += (unsigned)__builtin_popcount(bytes[k]);
    return n;
}

#endif

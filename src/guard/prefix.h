/* guard/prefix: the prefix pattern of a rule pattern, for holding back streamed text.
 *
 * A streamed answer (SSE) may be forwarded up to the first byte that a match still in progress could
 * cover. To know which rules can have a match in progress at the end of the text received so far,
 * the engine compiles, for each rule pattern R, a pattern P(R) that matches every non-empty prefix of
 * every match of R, and looks for P matches that end at the last byte received. This module owns
 * that construction and nothing else: it parses the pattern subset of docs/rules.md ("Patterns") and
 * writes P; it compiles nothing and keeps no state.
 *
 * P over-approximates: it may match strings that are no prefix of any match (zero-width assertions
 * such as ^ $ \b are dropped, case-changing inline flags are widened across alternatives), which
 * only makes a stream hold back a little more. It never misses a prefix, never matches the empty
 * string, and compiles in Vectorscan and PCRE2 with the same flags as R (byte semantics, no UTF).
 * Its size is at most about the size of R times the depth of R's group nesting. */
#ifndef WD_GUARD_PREFIX_H
#define WD_GUARD_PREFIX_H

#include "core/core.h"

/* Writes into out (NUL-terminated) a pattern matching every non-empty prefix of every match of pat
 * (an over-approximation). Returns WD_OK, or WD_EINVAL with a message in err for syntax it does not
 * support, or WD_E2BIG when out is too small. (WD_ENOMEM if the parse tree cannot be allocated.)
 * pat need not be NUL-terminated. Case-insensitivity given as compile flags applies to P as to R;
 * inline flags in R ((?i), (?i:...), (?s) ...) are carried into P. */
int wd_regex_prefix(const char *pat, size_t len, char *out, size_t cap, char *err, size_t errlen);

#endif

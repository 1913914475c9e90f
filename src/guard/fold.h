/* guard/fold: what the privacy rules read. Identifiers written with characters that look the same to
 * a reader and to a model but not to a pattern (a zero-width space inside an e-mail address, fullwidth
 * digits from an East Asian keyboard, a no-break space or an en dash inside a phone number, digits
 * hidden in Unicode tag characters) are found in a folded copy of the text:
 *  - dropped: invisible and bidi controls (U+00AD, U+180E, U+200B..U+200F, U+202A..U+202E,
 *    U+2060..U+2064, U+2066..U+2069, U+FEFF) and tag characters without an ASCII twin;
 *  - to ' ': U+00A0, U+2000..U+200A, U+202F, U+205F, U+3000;
 *  - to '-': U+2010..U+2015, U+2212;
 *  - to ASCII: fullwidth U+FF01..U+FF5E, mathematical digits U+1D7CE..U+1D7FF, tags U+E0020..U+E007E.
 * Everything else is copied byte for byte. A map leads back from each folded byte to the text, so
 * findings are acted on in the text as it was sent. */
#ifndef WD_GUARD_FOLD_H
#define WD_GUARD_FOLD_H

#include "core/core.h"

/* Length of the invisible or bidi control character at p (0 if none). */
size_t wd_guard_invisible_len(const unsigned char *p, size_t len);

/* Whether text has a character that folds (ASCII text is checked 32 bytes at a time); with !dashes,
 * one that only folds to '-' (which hides no word) does not count. */
bool wd_guard_fold_needed(const char *text, size_t len, bool dashes);

/* Folds text into out (reset first); (*map)[i] is the offset in text of the character folded byte i
 * came from, (*map)[out->len] = len. *map grows as needed (*mapcap entries); map may be NULL when no
 * way back is needed. WD_OK, WD_ENOMEM or WD_E2BIG (text over 4 GiB). */
int wd_guard_fold(const char *text, size_t len, wd_buf_t *out, uint32_t **map, size_t *mapcap);

/* The offset in text where folded bytes [.., end) end: the end of the character byte end-1 came from. */
uint32_t wd_guard_fold_end(const char *text, const wd_buf_t *folded, const uint32_t *map, uint32_t end);

#endif

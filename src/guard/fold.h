/* guard/fold: what the privacy rules read. Identifiers written with characters that look the same to
 * a reader and to a model but not to a pattern (a zero-width space inside an e-mail address, fullwidth
 * digits from an East Asian keyboard, a no-break space or an en dash inside a phone number, digits
 * hidden in Unicode tag characters) are found in a folded copy of the text:
 *  - dropped: invisible and bidi controls (U+00AD, U+180E, U+200B..U+200F, U+202A..U+202E,
 *    U+2060..U+2064, U+2066..U+2069, U+FEFF) and tag characters without an ASCII twin;
 *  - to ' ': U+00A0, U+2000..U+200A, U+202F, U+205F, U+3000;
 *  - to '-': U+2010..U+2015, U+2212;
 *  - to ASCII: fullwidth U+FF01..U+FF5E, mathematical letters and digits (U+1D400..U+1D6A3,
 *    U+1D7CE..U+1D7FF) and the letterlike symbols among them (italic h U+210E, ...), circled and
 *    parenthesized digits and letters (U+2460..U+2468, U+249C..U+24EA), squared and negative
 *    circled/squared letters (U+1F130..U+1F189), tags U+E0020..U+E007E;
 *  - to their Latin twin: Greek and Cyrillic letters drawn alike (Cyrillic "а", "о", "р", "с", Greek
 *    "Α", "ο", ...), but only inside a word that also has an ASCII letter (or is longer than
 *    WD_FOLD_WORD_MAX bytes), so "pаypal" is read as "paypal" and Russian or Greek text stays as it is.
 *    A stream holds a word with look-alikes and no ASCII letter yet back until its end decides.
 * Everything else is copied byte for byte. A map leads back from each folded byte to the text, so
 * findings are acted on in the text as it was sent. Every WD_FOLD_RUN_BREAK-th dropped character in a
 * row becomes a NUL byte: an identifier cut by that many invisible characters is two, and a stream
 * of nothing but invisible characters still moves the stream scanner's safe offset on. */
#ifndef WD_GUARD_FOLD_H
#define WD_GUARD_FOLD_H

#include "core/core.h"

#define WD_FOLD_RUN_BREAK 64
#define WD_FOLD_WORD_MAX 96

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

/* ---- streams ----------------------------------------------------------------------------------------
 * A stream folded piece by piece: the pieces fed to the guard's stream scanner are the folded text, and
 * offsets it reports (folded) map back to the stream as sent (raw). A character cut at a piece's end
 * waits for the next piece, and so does a word of at most WD_FOLD_WORD_MAX bytes at its end that has
 * a look-alike but no ASCII letter yet. Only the folds are recorded, so memory follows the number of
 * folded characters in the window the caller keeps (wd_fold_stream_trim). */
typedef struct {
    uint64_t f, r; /* a folded character (or a run of dropped ones): its folded and raw offsets ... */
    uint16_t rlen; /* ... and lengths (flen 0: dropped) */
    uint8_t flen;
} wd_fold_ev_t;

typedef struct {
    uint64_t raw, folded; /* bytes consumed (without pend) and produced */
    int64_t delta0;       /* raw - folded before the first kept event */
    wd_fold_ev_t *ev;
    size_t nev, cap;
    size_t run;            /* dropped characters in a row (see WD_FOLD_RUN_BREAK) */
    /* what waits for the next piece: a word of look-alikes, a character cut at the last piece's end */
    unsigned char pend[WD_FOLD_WORD_MAX + 4];
    size_t npend;
    size_t word;      /* bytes of the word the last piece ended in (at most WD_FOLD_WORD_MAX + 1) ... */
    bool word_letter; /* ... and whether it has an ASCII letter */
    wd_buf_t out, in; /* the folded piece; the piece after a cut character */
} wd_fold_stream_t;

void wd_fold_stream_init(wd_fold_stream_t *s);
void wd_fold_stream_free(wd_fold_stream_t *s);
/* Folds the next piece (final: no more will come, flush what waits). (*fp, *fn): the folded bytes,
 * p itself when nothing in it folds and nothing waits. WD_OK or WD_ENOMEM. */
int wd_fold_stream_feed(wd_fold_stream_t *s, const char *p, size_t len, bool final, const char **fp,
                        size_t *fn);
/* The raw offset of folded byte x (x == folded: the raw bytes consumed). x must not be before the trim. */
uint64_t wd_fold_stream_raw(const wd_fold_stream_t *s, uint64_t x);
/* The raw offset where folded bytes [.., x) end (x > 0). */
uint64_t wd_fold_stream_raw_end(const wd_fold_stream_t *s, uint64_t x);
/* Forgets what is needed only for folded offsets before x. */
void wd_fold_stream_trim(wd_fold_stream_t *s, uint64_t x);

#endif

/* guard/fold: what the privacy rules read. Identifiers written with characters that look the same to
 * a reader and to a model but not to a pattern (a zero-width space inside an e-mail address, fullwidth
 * digits from an East Asian keyboard, a no-break space or an en dash inside a phone number, digits
 * hidden in Unicode tag characters) are found in a folded copy of the text:
 *  - dropped: invisible and bidi controls (U+00AD, U+034F, U+061C, U+180B..U+180F, U+200B..U+200F,
 *    U+202A..U+202E, U+2060..U+2064, U+2066..U+206F, U+FEFF), fillers (U+115F, U+1160, U+17B4, U+17B5,
 *    U+3164, U+FFA0), variation selectors (U+FE00..U+FE0F, U+E0100..U+E01EF), tag characters without
 *    an ASCII twin and combining marks (U+0300..U+036F, U+1AB0..U+1AFF, U+1DC0..U+1DFF,
 *    U+20D0..U+20FF, U+FE20..U+FE2F);
 *  - to ' ': U+00A0, U+2000..U+200A, U+202F, U+205F, U+3000;
 *  - to '-': U+2010..U+2015, U+2212;
 *  - to ASCII: fullwidth U+FF01..U+FF5E, mathematical letters and digits (U+1D400..U+1D6A3,
 *    U+1D7CE..U+1D7FF) and the letterlike symbols among them (italic h U+210E, ...), circled and
 *    parenthesized letters and circled digits (U+2460..U+2468, U+249C..U+24EA), squared and negative
 *    circled/squared letters (U+1F130..U+1F189), Latin small capitals and modifier, superscript and
 *    subscript letters and digits ("fancy text": ɪɢɴᴏʀᴇ, ᵃˡˡ, ¹²³), tags U+E0020..U+E007E;
 *  - to their Latin twin: letters of Greek, Cyrillic, Armenian, Georgian, Cherokee, Canadian
 *    syllabics, Coptic, Tifinagh and Lisu drawn alike (Cyrillic "а", "о", "р", "с", Greek "Α", "ο",
 *    Armenian "օ", Cherokee "ꭵ", Tifinagh "ⵔ", Lisu "ꓮ", ...), but only inside a word that also has a
 *    visible ASCII letter and no letter of those scripts without a Latin twin (or that is longer than
 *    WD_FOLD_WORD_MAX bytes), so "pаypal" is read as "paypal" and Russian, Greek or Armenian words
 *    stay as they are. A stream holds a word with look-alikes back until its end (or its
 *    WD_FOLD_WORD_MAX + 1st byte) decides.
 * Everything else is copied byte for byte. A map leads back from each folded byte to the text, so
 * findings are acted on in the text as it was sent. Every WD_FOLD_RUN_BREAK-th dropped character in a
 * row becomes a NUL byte: an identifier cut by that many invisible characters is two, and a stream
 * of nothing but invisible characters still moves the stream scanner's safe offset on. */
#ifndef WD_GUARD_FOLD_H
#define WD_GUARD_FOLD_H

#include "core/core.h"

#define WD_FOLD_RUN_BREAK 64
#define WD_FOLD_WORD_MAX 96

/* What counts or folds (wd_guard_fold_needed, wd_guard_fold_as). */
#define WD_FOLD_DASHES 1u          /* a character that only folds to '-' counts (it hides no word) */
#define WD_FOLD_LOOKALIKES 2u      /* look-alikes of other scripts fold in words that let them */
#define WD_FOLD_ONLY_LOOKALIKES 4u /* only those count */
#define WD_FOLD_LOOKALIKES_ANY 8u  /* every look-alike folds, whatever its word (the injection screen) */
#define WD_FOLD_ALL (WD_FOLD_DASHES | WD_FOLD_LOOKALIKES)

/* Whether text has a character that folds and counts for what (ASCII text is checked 32 bytes at a
 * time). */
bool wd_guard_fold_needed(const char *text, size_t len, unsigned what);

/* Folds text into out (reset first); (*map)[i] is the offset in text of the character folded byte i
 * came from, (*map)[out->len] = len. *map grows as needed (*mapcap entries); map may be NULL when no
 * way back is needed. WD_OK, WD_ENOMEM or WD_E2BIG (text over 4 GiB). */
int wd_guard_fold(const char *text, size_t len, wd_buf_t *out, uint32_t **map, size_t *mapcap);
/* The same, look-alikes folded only with WD_FOLD_LOOKALIKES in what (wd_guard_fold: with). */
int wd_guard_fold_as(const char *text, size_t len, unsigned what, wd_buf_t *out, uint32_t **map,
                     size_t *mapcap);

/* The offset in text where folded bytes [.., end) end: the end of the character byte end-1 came from
 * and of the combining marks right after it (they belong to it). */
uint32_t wd_guard_fold_end(const char *text, const wd_buf_t *folded, const uint32_t *map, uint32_t end);

/* ---- streams ----------------------------------------------------------------------------------------
 * A stream folded piece by piece: the pieces fed to the guard's stream scanner are the folded text, and
 * offsets it reports (folded) map back to the stream as sent (raw). A character cut at a piece's end
 * waits for the next piece, and so does a word of at most WD_FOLD_WORD_MAX bytes at its end that has
 * a look-alike. Only the folds are recorded, so memory follows the number of
 * folded characters in the window the caller keeps (wd_fold_stream_trim). */
typedef struct {
    uint64_t f, r; /* a folded character (or a run of dropped ones): its folded and raw offsets ... */
    uint16_t rlen; /* ... and lengths (flen 0: dropped) */
    uint8_t flen;
    uint16_t mlen; /* a dropped run: the bytes of combining marks it starts with */
} wd_fold_ev_t;

/* The code point of the well-formed multi-byte character at p (lead byte >= 0x80): its length, or 0
 * (malformed, overlong, a surrogate, beyond U+10FFFF, or cut by len). */
size_t wd_utf8_decode(const unsigned char *p, size_t len, unsigned *cp);
/* bsearch order of tables of structs whose first member is a uint16_t code point, sorted by it. */
int wd_cmp_cp16(const void *a, const void *b);

/* What a word holds: a visible ASCII letter, a look-alike, a letter of another script without a twin. */
typedef struct {
    bool letter, look, foreign;
} wd_fold_word_t;

typedef struct {
    uint64_t raw, folded; /* bytes consumed (without pend) and produced */
    int64_t delta0;       /* raw - folded before the first kept event */
    wd_fold_ev_t *ev; /* ev[head..nev): the events kept (those before head are trimmed) */
    size_t head, nev, cap;
    size_t run;            /* dropped characters in a row (see WD_FOLD_RUN_BREAK) */
    /* what waits for the next piece: a word of look-alikes, a character cut at the last piece's end */
    unsigned char pend[WD_FOLD_WORD_MAX + 4];
    size_t npend;
    size_t word;           /* bytes of the word the last piece ended in (at most WD_FOLD_WORD_MAX + 1) ... */
    wd_fold_word_t word_h; /* ... and what it holds */
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
/* The raw offset where folded bytes [.., x) end (x > 0), as wd_guard_fold_end: combining marks after
 * the last character included, as far as they have been fed. */
uint64_t wd_fold_stream_raw_end(const wd_fold_stream_t *s, uint64_t x);
/* Forgets what is needed only for folded offsets before x. */
void wd_fold_stream_trim(wd_fold_stream_t *s, uint64_t x);

#endif

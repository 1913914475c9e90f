/* guard/fold: the text the privacy rules read, with the characters that hide an identifier from them
 * removed or mapped to ASCII (see fold.h). */
#include "guard/fold.h"

#include <stdlib.h>
#include <string.h>

static bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t wd_utf8_decode(const unsigned char *p, size_t len, unsigned *cp)
{
    size_t n = p[0] >= 0xC2 && p[0] <= 0xDF   ? 2
               : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
               : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                              : 0;
    if (!n || len < n) return 0;
    for (size_t k = 1; k < n; k++)
        if (!cont(p[k])) return 0;
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) || (p[0] == 0xF0 && p[1] < 0x90) ||
        (p[0] == 0xF4 && p[1] >= 0x90))
        return 0; /* overlong, a surrogate, beyond U+10FFFF */
    unsigned v = p[0] & (n == 2 ? 0x1Fu : n == 3 ? 0x0Fu : 0x07u);
    for (size_t k = 1; k < n; k++)
        v = v << 6 | (p[k] & 0x3Fu);
    *cp = v;
    return n;
}

/* Letterlike symbols U+2100..U+213F that fill the gaps of the mathematical alphabets (italic h is
 * U+210E, script B U+212C, ...), and the Kelvin sign. */
static const char letterlike[64] = {
    [0x02] = 'C', [0x0A] = 'g', [0x0B] = 'H', [0x0C] = 'H', [0x0D] = 'H', [0x0E] = 'h', [0x10] = 'I',
    [0x11] = 'I', [0x12] = 'L', [0x13] = 'l', [0x15] = 'N', [0x19] = 'P', [0x1A] = 'Q', [0x1B] = 'R',
    [0x1C] = 'R', [0x1D] = 'R', [0x24] = 'Z', [0x28] = 'Z', [0x2A] = 'K', [0x2C] = 'B', [0x2D] = 'C',
    [0x2F] = 'e', [0x30] = 'E', [0x31] = 'F', [0x33] = 'M', [0x34] = 'o',
};

/* Letters of "fancy text": Latin small capitals (ɪɢɴᴏʀᴇ) and modifier letters written small and raised
 * (ᵃˡˡ), with the superscript and subscript digits; 0 for any other code point. */
static int small_letter(unsigned cp)
{
    switch (cp) {
    case 0x1D00: case 0x1D43: case 0x2090: return 'a';
    case 0x0299: case 0x1D47: return 'b';
    case 0x1D04: case 0x1D9C: return 'c';
    case 0x1D05: case 0x1D48: return 'd';
    case 0x1D07: case 0x1D49: case 0x2091: return 'e';
    case 0xA730: case 0x1DA0: return 'f';
    case 0x0262: case 0x1D4D: return 'g';
    case 0x029C: case 0x02B0: case 0x2095: return 'h';
    case 0x026A: case 0x2071: case 0x1D62: return 'i';
    case 0x1D0A: case 0x02B2: case 0x2C7C: return 'j';
    case 0x1D0B: case 0x1D4F: case 0x2096: return 'k';
    case 0x029F: case 0x02E1: case 0x2097: return 'l';
    case 0x1D0D: case 0x1D50: case 0x2098: return 'm';
    case 0x0274: case 0x207F: case 0x2099: return 'n';
    case 0x1D0F: case 0x1D52: case 0x2092: return 'o';
    case 0x1D18: case 0x1D56: case 0x209A: return 'p';
    case 0xA7AF: return 'q';
    case 0x0280: case 0x02B3: case 0x1D63: return 'r';
    case 0xA731: case 0x02E2: case 0x209B: return 's';
    case 0x1D1B: case 0x1D57: case 0x209C: return 't';
    case 0x1D1C: case 0x1D58: case 0x1D64: return 'u';
    case 0x1D20: case 0x1D5B: case 0x1D65: return 'v';
    case 0x1D21: case 0x02B7: return 'w';
    case 0x02E3: case 0x2093: return 'x';
    case 0x028F: case 0x02B8: return 'y';
    case 0x1D22: case 0x1DBB: return 'z';
    case 0x2070: case 0x2080: return '0';
    case 0xB9: case 0x2081: return '1';
    case 0xB2: case 0x2082: return '2';
    case 0xB3: case 0x2083: return '3';
    default: return cp >= 0x2074 && cp <= 0x2079 ? (int)('4' + cp - 0x2074)
                  : cp >= 0x2084 && cp <= 0x2089 ? (int)('4' + cp - 0x2084)
                                                 : 0;
    }
}

/* Combining marks: accents written apart, strike-through and underline text, "zalgo". */
static bool combining(unsigned cp)
{
    return (cp >= 0x300 && cp <= 0x36F) || (cp >= 0x1AB0 && cp <= 0x1AFF) || (cp >= 0x1DC0 && cp <= 0x1DFF) ||
           (cp >= 0x20D0 && cp <= 0x20FF) || (cp >= 0xFE20 && cp <= 0xFE2F);
}

/* The length of the combining mark at p, 0 if there is none. */
static size_t mark_at(const unsigned char *p, size_t len)
{
    unsigned cp;
    size_t n = len && p[0] >= 0xCC ? wd_utf8_decode(p, len, &cp) : 0;
    return n && combining(cp) ? n : 0;
}

/* A code point folded without context: the ASCII byte it stands for, -1 when it is dropped, -2 when
 * it stays as it is. */
static int fold_cp(unsigned cp)
{
    if (combining(cp)) return -1;
    if (cp == 0xAD || cp == 0x34F || cp == 0x61C || cp == 0x115F || cp == 0x1160 || cp == 0x17B4 ||
        cp == 0x17B5 || (cp >= 0x180B && cp <= 0x180F) || (cp >= 0x200B && cp <= 0x200F) ||
        (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x206F) ||
        cp == 0x3164 || (cp >= 0xFE00 && cp <= 0xFE0F) || cp == 0xFEFF || cp == 0xFFA0 ||
        (cp >= 0xE0100 && cp <= 0xE01EF))
        return -1; /* invisible and bidi controls, fillers, deprecated format characters, variation
                    * selectors */
    if (cp == 0xA0 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return ' '; /* no-break, typographic, narrow, mathematical and ideographic spaces */
    if ((cp >= 0x2010 && cp <= 0x2015) || cp == 0x2212) return '-'; /* hyphens, dashes, minus sign */
    if (cp >= 0x2100 && cp <= 0x213F) return letterlike[cp - 0x2100] ? letterlike[cp - 0x2100] : -2;
    if (cp >= 0x2460 && cp <= 0x2468) return (int)('1' + cp - 0x2460); /* circled digits */
    if (cp == 0x24EA) return '0';
    if (cp >= 0x249C && cp <= 0x24B5) return (int)('a' + cp - 0x249C); /* parenthesized letters */
    if (cp >= 0x24B6 && cp <= 0x24CF) return (int)('A' + cp - 0x24B6); /* circled letters */
    if (cp >= 0x24D0 && cp <= 0x24E9) return (int)('a' + cp - 0x24D0);
    if (cp >= 0xFF01 && cp <= 0xFF5E) return (int)(cp - 0xFF01 + 0x21); /* fullwidth forms of '!'..'~' */
    if (cp >= 0x1D400 && cp <= 0x1D6A3) { /* mathematical letters: 13 alphabets of A..Z a..z */
        unsigned k = (cp - 0x1D400) % 52;
        return (int)(k < 26 ? 'A' + k : 'a' + k - 26);
    }
    if (cp >= 0x1D7CE && cp <= 0x1D7FF) return (int)('0' + (cp - 0x1D7CE) % 10); /* mathematical digits */
    if ((cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
        (cp >= 0x1F170 && cp <= 0x1F189))
        return (int)('A' + (cp - 0x1F130) % 32); /* squared, negative circled and negative squared letters */
    if (cp >= 0xE0000 && cp <= 0xE007F)          /* a tag character carries its ASCII twin, invisibly */
        return cp >= 0xE0020 && cp <= 0xE007E ? (int)(cp - 0xE0000) : -1;
    int c = small_letter(cp);
    return c ? c : -2;
}

/* The lead bytes of the characters that fold without context: two bytes (U+00A0..U+00BF, small
 * capitals and modifier letters U+0240..U+02FF, combining marks U+0300..U+036F, U+061C), three
 * (U+1xxx, U+2xxx, U+3xxx, U+Axxx, U+Fxxx) and four (mathematical letters, enclosed letters, tags). */
static const bool fold_lead[256] = {
    [0xC2] = true, [0xC9] = true, [0xCA] = true, [0xCB] = true, [0xCC] = true, [0xCD] = true, [0xD8] = true,
    [0xE1] = true, [0xE2] = true, [0xE3] = true, [0xEA] = true, [0xEF] = true, [0xF0] = true, [0xF3] = true,
};

static bool fold_lead2(unsigned char b)
{
    return b < 0xE0 && fold_lead[b];
}

/* The character at p (a lead byte >= 0xC2) folded without context: returns its length in bytes and
 * sets *c to the ASCII byte it stands for, or to -1 when it is dropped; returns 0 when it stays. */
static size_t fold_at(const unsigned char *p, size_t len, int *c)
{
    if (!fold_lead[p[0]]) return 0; /* no character with another lead byte folds */
    unsigned cp;
    size_t n = wd_utf8_decode(p, len, &cp);
    if (!n || (*c = fold_cp(cp)) == -2) return 0;
    return n;
}

/* ---- look-alike letters of other scripts -----------------------------------------------------------
 * Greek, Cyrillic and Armenian letters drawn like Latin ones (U+0370..U+058F; Armenian's from Unicode's
 * confusables), and Georgian, Cherokee, Canadian syllabics, Coptic, Tifinagh and Lisu ones (twins3,
 * below), read as their Latin twin only in a word that has a visible ASCII letter and no letter of
 * those scripts without a twin, or in one longer than WD_FOLD_WORD_MAX bytes: "pаypal" with a
 * Cyrillic "а" or "gօօgle" with Armenian "օ" is folded, Greek, Russian or Armenian words (which have
 * letters with no Latin twin) are left as they are. A word is a run of characters between separators:
 * ASCII punctuation but '.', '@', '-' and '_', spaces, what folds to them, Latin-1 and general
 * punctuation and symbols; invisible characters (tag characters included) belong to the word they are
 * in. */
#define LK(cp) [(cp)-0x370]
static const char lookalike[0x590 - 0x370] = {
    LK(0x391) = 'A', LK(0x392) = 'B', LK(0x395) = 'E', LK(0x396) = 'Z', LK(0x397) = 'H', LK(0x399) = 'I',
    LK(0x39A) = 'K', LK(0x39C) = 'M', LK(0x39D) = 'N', LK(0x39F) = 'O', LK(0x3A1) = 'P', LK(0x3A4) = 'T',
    LK(0x3A5) = 'Y', LK(0x3A7) = 'X', LK(0x3B1) = 'a', LK(0x3B9) = 'i', LK(0x3BD) = 'v', LK(0x3BF) = 'o',
    LK(0x3C1) = 'p', LK(0x3F2) = 'c', LK(0x3F3) = 'j', /* Greek */
    LK(0x405) = 'S', LK(0x406) = 'I', LK(0x408) = 'J', LK(0x410) = 'A', LK(0x412) = 'B', LK(0x415) = 'E',
    LK(0x41A) = 'K', LK(0x41C) = 'M', LK(0x41D) = 'H', LK(0x41E) = 'O', LK(0x420) = 'P', LK(0x421) = 'C',
    LK(0x422) = 'T', LK(0x425) = 'X', LK(0x430) = 'a', LK(0x435) = 'e', LK(0x43E) = 'o', LK(0x440) = 'p',
    LK(0x441) = 'c', LK(0x443) = 'y', LK(0x445) = 'x', LK(0x455) = 's', LK(0x456) = 'i', LK(0x458) = 'j',
    LK(0x4AE) = 'Y', LK(0x4BB) = 'h', LK(0x4C0) = 'I', LK(0x4CF) = 'l', LK(0x501) = 'd', LK(0x51A) = 'Q',
    LK(0x51B) = 'q', LK(0x51C) = 'W', LK(0x51D) = 'w', /* Cyrillic */
    LK(0x54D) = 'U', LK(0x54F) = 'S', LK(0x555) = 'O', LK(0x561) = 'w', LK(0x563) = 'q', LK(0x566) = 'q',
    LK(0x570) = 'h', LK(0x578) = 'n', LK(0x57C) = 'n', LK(0x57D) = 'u', LK(0x581) = 'g', LK(0x584) = 'f',
    LK(0x585) = 'o', /* Armenian */
};
#undef LK

/* The Latin twin of the look-alike letter at p (two bytes), or 0. */
static char lookalike_at(const unsigned char *p, size_t len)
{
    if (len < 2 || p[0] < 0xCD || p[0] > 0xD6 || !cont(p[1])) return 0;
    unsigned cp = (p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu);
    return cp >= 0x370 && cp < 0x370 + sizeof lookalike ? lookalike[cp - 0x370] : 0;
}

/* Letters of three bytes drawn like Latin ones (Unicode's confusables), sorted: Georgian, Cherokee,
 * Canadian syllabics, Coptic, Tifinagh, Lisu. They are read like the two-byte ones: by their twin inside a
 * word that lets them, and the other letters of those scripts (letter3) make a word foreign. */
typedef struct {
    uint16_t cp;
    char c;
} twin3_t;

static const twin3_t twins3[] = {
    {0x10E7, 'y'}, {0x10FF, 'o'}, {0x13A0, 'D'}, {0x13A1, 'R'}, {0x13A2, 'T'}, {0x13A5, 'i'}, {0x13A9, 'Y'},
    {0x13AA, 'A'}, {0x13AB, 'J'}, {0x13AC, 'E'}, {0x13B3, 'W'}, {0x13B7, 'M'}, {0x13BB, 'H'}, {0x13BD, 'Y'},
    {0x13C0, 'G'}, {0x13C2, 'h'}, {0x13C3, 'Z'}, {0x13CF, 'b'}, {0x13D2, 'R'}, {0x13D4, 'W'}, {0x13D5, 'S'},
    {0x13D9, 'V'}, {0x13DA, 'S'}, {0x13DE, 'L'}, {0x13DF, 'C'}, {0x13E2, 'P'}, {0x13E6, 'K'}, {0x13E7, 'd'},
    {0x13F3, 'G'}, {0x13F4, 'B'}, {0x142F, 'V'}, {0x144C, 'U'}, {0x146D, 'P'}, {0x146F, 'd'}, {0x1472, 'b'},
    {0x148D, 'J'}, {0x14AA, 'L'}, {0x1541, 'x'}, {0x157C, 'H'}, {0x157D, 'x'}, {0x1587, 'R'}, {0x15AF, 'b'},
    {0x15B4, 'F'}, {0x15C5, 'A'}, {0x15DE, 'D'}, {0x15EA, 'D'}, {0x15F0, 'M'}, {0x15F7, 'B'}, {0x2C85, 'r'},
    {0x2C8E, 'H'}, {0x2C92, 'l'}, {0x2C94, 'K'}, {0x2C98, 'M'}, {0x2C9A, 'N'}, {0x2C9E, 'O'}, {0x2C9F, 'o'},
    {0x2CA2, 'P'}, {0x2CA3, 'p'}, {0x2CA4, 'C'}, {0x2CA5, 'c'}, {0x2CA6, 'T'}, {0x2CA8, 'Y'}, {0x2CAC, 'X'},
    {0x2CD0, 'L'}, {0x2D38, 'V'}, {0x2D39, 'E'}, {0x2D4F, 'l'}, {0x2D54, 'O'}, {0x2D55, 'Q'}, {0x2D5D, 'X'},
    {0xA4D0, 'B'}, {0xA4D1, 'P'}, {0xA4D2, 'd'}, {0xA4D3, 'D'}, {0xA4D4, 'T'}, {0xA4D6, 'G'}, {0xA4D7, 'K'},
    {0xA4D9, 'J'}, {0xA4DA, 'C'}, {0xA4DC, 'Z'}, {0xA4DD, 'F'}, {0xA4DF, 'M'}, {0xA4E0, 'N'}, {0xA4E1, 'L'},
    {0xA4E2, 'S'}, {0xA4E3, 'R'}, {0xA4E6, 'V'}, {0xA4E7, 'H'}, {0xA4EA, 'W'}, {0xA4EB, 'X'}, {0xA4EC, 'Y'},
    {0xA4EE, 'A'}, {0xA4F0, 'E'}, {0xA4F2, 'l'}, {0xA4F3, 'O'}, {0xA4F4, 'U'}, {0xAB75, 'i'}, {0xAB81, 'r'},
    {0xAB83, 'w'}, {0xAB93, 'z'}, {0xABA9, 'v'}, {0xABAA, 's'}, {0xABAF, 'c'},
};

int wd_cmp_cp16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static char twin3(unsigned cp)
{
    if (cp > UINT16_MAX) return 0;
    const twin3_t key = {.cp = (uint16_t)cp};
    const twin3_t *t = bsearch(&key, twins3, WD_ARRAY_LEN(twins3), sizeof key, wd_cmp_cp16);
    return t ? t->c : 0;
}

/* A letter of Georgian, Cherokee, Canadian syllabics, Coptic, Tifinagh or Lisu (their punctuation, tone
 * letters and symbols are not). */
static bool letter3(unsigned cp)
{
    return (cp >= 0x10A0 && cp <= 0x10FA) || (cp >= 0x10FC && cp <= 0x10FF) ||
           (cp >= 0x13A0 && cp <= 0x13F5) || (cp >= 0x13F8 && cp <= 0x13FD) ||
           (cp >= 0x1401 && cp <= 0x166C) || (cp >= 0x166F && cp <= 0x167F) ||
           (cp >= 0x2C80 && cp <= 0x2CE4) || (cp >= 0x2CEB && cp <= 0x2CEE) ||
           (cp >= 0x2D00 && cp <= 0x2D2D) || (cp >= 0x2D30 && cp <= 0x2D67) || cp == 0x2D6F ||
           (cp >= 0xA4D0 && cp <= 0xA4F7) || (cp >= 0xAB70 && cp <= 0xABBF);
}

/* The Latin twin of the look-alike letter at p (two or three bytes: *n), or 0. */
static char twin_at(const unsigned char *p, size_t len, size_t *n)
{
    unsigned cp;
    char t = lookalike_at(p, len);
    *n = 2;
    if (t || len < 3 || (p[0] != 0xE1 && p[0] != 0xE2 && p[0] != 0xEA)) return t;
    *n = 3;
    return wd_utf8_decode(p, len, &cp) == 3 ? twin3(cp) : 0;
}

/* A character's part in a word; foreign: a letter of one of those scripts without a Latin twin. */
enum { K_SEP, K_WORD, K_LETTER, K_LOOK, K_FOREIGN };

static bool ascii_letter(int c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

/* '.', '@' and '-' join the parts of an address or a host name into one word ("раураӏ.com"). */
static int ascii_kind(int c)
{
    if (ascii_letter(c)) return K_LETTER;
    return (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '@' || c == '-' ? K_WORD : K_SEP;
}

/* The character at u[i] (i < len): its length, and *k its part in a word. A malformed byte is one
 * separator. */
static size_t kind_at(const unsigned char *u, size_t len, size_t i, int *k)
{
    const unsigned char *p = u + i;
    if (p[0] < 0x80) {
        *k = ascii_kind(p[0]);
        return 1;
    }
    int c;
    bool two = p[0] >= 0xC3 && p[0] <= 0xDF; /* two bytes: Latin, Greek, Cyrillic, ... */
    size_t n = fold_at(u + i, len - i, &c);
    if (n) {
        /* dropped and tag characters are invisible, combining marks belong to their letter: they stay
         * inside the word and are no letter */
        *k = c < 0 || p[0] == 0xF3 ? K_WORD : ascii_kind(c);
        return n;
    }
    if (two) {
        if (len - i < 2 || !cont(p[1])) {
            *k = K_SEP;
            return 1;
        }
        unsigned cp = (p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu);
        if (lookalike_at(p, 2))
            *k = K_LOOK;
        else if (cp == 0xD7 || cp == 0xF7 || cp == 0x37E || cp == 0x387 || (cp >= 0x55A && cp <= 0x55F) ||
                 cp == 0x589 || cp == 0x58A)
            *k = K_SEP; /* the multiplication and division signs, Greek and Armenian punctuation */
        else
            *k = (cp >= 0x370 && cp < 0x530) || (cp >= 0x531 && cp <= 0x556) || (cp >= 0x560 && cp <= 0x588)
                     ? K_FOREIGN
                     : K_WORD;
        return 2;
    }
    unsigned cp;
    if (!(n = wd_utf8_decode(u + i, len - i, &cp))) {
        *k = K_SEP;
        return 1;
    }
    if (letter3(cp))
        *k = twin3(cp) ? K_LOOK : K_FOREIGN;
    else if ((cp >= 0x80 && cp <= 0xBF) || (cp >= 0x2000 && cp <= 0x206F) || (cp >= 0x2190 && cp <= 0x2BFF) ||
             (cp >= 0x2E00 && cp <= 0x2E7F) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE6F) ||
             (cp >= 0xFF00 && cp <= 0xFF65) || (cp >= 0x1F000 && cp <= 0x1FAFF))
        *k = K_SEP; /* controls, punctuation and symbols (arrows, box drawing, dingbats, emoji) */
    else
        *k = K_WORD;
    return n;
}

/* Where the character that ends at a (a > 0) starts, if it is whole and part of a word; *k its part.
 * Returns a when it is a separator (or a malformed byte). */
static size_t word_char_before(const unsigned char *u, size_t len, size_t a, int *k)
{
    size_t s = a - 1;
    while (s > 0 && a - s < 4 && cont(u[s]))
        s--;
    if (s + kind_at(u, len, s, k) != a || *k == K_SEP) return a;
    return s;
}

typedef wd_fold_word_t wordkinds_t; /* what a word (or the part of it read so far) holds */

static void note_kind(wordkinds_t *h, int k)
{
    h->letter |= k == K_LETTER;
    h->look |= k == K_LOOK;
    h->foreign |= k == K_FOREIGN;
}

/* Where the word around u[0..e) that ends at e starts (back at most WD_FOLD_WORD_MAX + 1 bytes), and
 * what it holds there. */
static size_t word_start(const unsigned char *u, size_t e, wordkinds_t *h)
{
    size_t a = e;
    *h = (wordkinds_t){false, false, false};
    while (a > 0 && e - a <= WD_FOLD_WORD_MAX) {
        int k;
        size_t s = word_char_before(u, e, a, &k);
        if (s == a) break;
        note_kind(h, k);
        a = s;
    }
    return a;
}

/* What the look-alikes of a text are decided by: the word that goes on from before the text (a stream's
 * earlier pieces), and the last word decided. */
typedef struct {
    size_t open;        /* bytes of the word before u[0] (0: none; at most WD_FOLD_WORD_MAX + 1) */
    wordkinds_t open_h; /* what they hold */
    bool off;           /* look-alikes stay (wd_guard_fold_as without WD_FOLD_LOOKALIKES) */
    bool any;           /* every look-alike folds (WD_FOLD_LOOKALIKES_ANY) */
    size_t lo, hi;      /* the last word decided (or its part from lo to hi) */
    bool fold;
    bool skip; /* !fold, and nothing after the look-alike that decided it folds: skip to hi */
} words_t;

/* Whether a word with a look-alike folds it (see above). */
static bool word_decides_fold(const wordkinds_t *h, size_t len)
{
    return len > WD_FOLD_WORD_MAX || (h->letter && !h->foreign);
}

/* Whether the look-alike at u[j] (n bytes) is folded. Each word is read once (a decided word's part is
 * remembered). */
static bool word_folds(const unsigned char *u, size_t len, size_t j, size_t n, words_t *w)
{
    if (w->any) return true;
    if (j >= w->lo && j < w->hi) return w->fold;
    size_t a = j;
    wordkinds_t h = {false, true, false};
    int k;
    while (a > 0 && j - a <= WD_FOLD_WORD_MAX) {
        if (a == w->hi && w->fold) { /* the same word as the last one, long enough to fold */
            w->hi = j + n;
            return true;
        }
        size_t s = word_char_before(u, len, a, &k);
        if (s == a) break;
        note_kind(&h, k);
        a = s;
    }
    size_t before = a == 0 ? w->open : 0, b = j + n;
    if (a == 0) h.letter |= w->open_h.letter, h.foreign |= w->open_h.foreign;
    bool plain = true; /* no lead byte of a character that folds alone (fold_at) */
    while (b < len && before + b - a <= WD_FOLD_WORD_MAX) {
        if (b + 1 < len && u[b] >= 0xCF && u[b] <= 0xD4 && cont(u[b + 1])) { /* a Greek or Cyrillic letter */
            /* (Armenian, whose block also holds punctuation, takes the general way below) */
            h.foreign = h.foreign || !lookalike_at(u + b, 2);
            b += 2;
            continue;
        }
        plain &= !fold_lead2(u[b]) && u[b] < 0xE0;
        size_t cn = kind_at(u, len, b, &k);
        if (k == K_SEP) break;
        note_kind(&h, k);
        b += cn;
    }
    bool fold = word_decides_fold(&h, before + b - a);
    *w = (words_t){w->open, w->open_h, w->off, false, a, b, fold, !fold && plain};
    return fold;
}

/* The character at u[i] (i < len, u[i] >= 0xC2) if it folds: its length, and *c as fold_at sets it;
 * 0 if it stays. */
static size_t folds_at(const unsigned char *u, size_t len, size_t i, words_t *w, int *c)
{
    size_t n = fold_at(u + i, len - i, c);
    if (n) return n;
    char t = w->off ? 0 : twin_at(u + i, len - i, &n);
    if (!t || !word_folds(u, len, i, n, w)) return 0;
    *c = t;
    return n;
}

/* Offset of the first character at or after i that folds and counts for what (fold.h's WD_FOLD_*; a
 * look-alike folds only if w lets it), len if none. */
static size_t next_fold(const unsigned char *u, size_t len, size_t i, unsigned what, words_t *w)
{
    int c = 0;
    size_t n;
    bool others = !(what & WD_FOLD_ONLY_LOOKALIKES);
    while (i < len) {
        size_t end = len - i >= 32 ? i + 32 : len;
        if (end - i == 32) {
            unsigned char any = 0;
            for (size_t k = i; k < end; k++) /* an OR the compiler vectorises */
                any |= u[k];
            if (!(any & 0x80)) { /* 32 ASCII bytes */
                i = end;
                continue;
            }
        }
        for (; i < end; i++) {
            if (u[i] < 0xC2) continue;
            if (u[i] <= 0xDF && !fold_lead2(u[i])) { /* two bytes: look-alikes */
                if (!w->off && lookalike_at(u + i, len - i) && word_folds(u, len, i, 2, w)) return i;
                if (w->skip && i >= w->lo && i < w->hi) i = w->hi - 1; /* the rest of a word that stays */
                continue;
            }
            if (!w->off && u[i] >= 0xE0 && twin_at(u + i, len - i, &n) && word_folds(u, len, i, n, w))
                return i;
            if (others && fold_at(u + i, len - i, &c) && ((what & WD_FOLD_DASHES) || c != '-')) return i;
        }
    }
    return len;
}

bool wd_guard_fold_needed(const char *text, size_t len, unsigned what)
{
    words_t w = {.off = !(what & (WD_FOLD_LOOKALIKES | WD_FOLD_ONLY_LOOKALIKES | WD_FOLD_LOOKALIKES_ANY)),
                 .any = what & WD_FOLD_LOOKALIKES_ANY};
    return next_fold((const unsigned char *)text, len, 0, what, &w) < len;
}

static int add_ev(wd_fold_stream_t *s, wd_fold_ev_t e)
{
    wd_fold_ev_t *last = s->nev > s->head ? &s->ev[s->nev - 1] : NULL;
    if (last && !last->flen && !e.flen && last->f == e.f && last->r + last->rlen == e.r &&
        last->rlen + e.rlen <= UINT16_MAX) { /* a run of dropped characters: one event */
        if (last->mlen == last->rlen) last->mlen = (uint16_t)(last->mlen + e.mlen);
        last->rlen = (uint16_t)(last->rlen + e.rlen);
        return WD_OK;
    }
    if (s->head && s->nev == s->cap && s->head >= s->cap / 2) { /* reuse the trimmed half: amortised O(1) */
        memmove(s->ev, s->ev + s->head, (s->nev - s->head) * sizeof *s->ev);
        s->nev -= s->head;
        s->head = 0;
    }
    if (s->nev == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        wd_fold_ev_t *v = realloc(s->ev, cap * sizeof *v);
        if (!v) return WD_ENOMEM;
        s->ev = v;
        s->cap = cap;
    }
    s->ev[s->nev++] = e;
    return WD_OK;
}

/* Appends u[0..m) folded to out, which has room for m more bytes. map (may be NULL) gets, from
 * map[out->len] on, the offset in u of each folded byte; s (may be NULL) an event per folded
 * character, at its offsets in the stream. *run counts the dropped characters in a row: every
 * WD_FOLD_RUN_BREAK-th of them becomes a NUL byte instead, so a long run of invisible characters
 * still moves a stream scanner's safe offset on (and separates what stands on either side). */
static int fold_run(const unsigned char *u, size_t m, wd_buf_t *out, uint32_t *map, wd_fold_stream_t *s,
                    size_t *run, words_t *w)
{
    size_t i = 0, base = out->len;
    while (i < m) {
        size_t j = next_fold(u, m, i, WD_FOLD_DASHES, w);
        if (j > i) *run = 0;
        for (size_t k = i; map && k < j; k++)
            map[out->len + k - i] = (uint32_t)k;
        memcpy(out->data + out->len, u + i, j - i);
        out->len += j - i;
        if (j == m) break;
        int c = -1;
        size_t n = folds_at(u, m, j, w, &c);
        if (c >= 0)
            *run = 0;
        else if (++*run == WD_FOLD_RUN_BREAK)
            c = 0, *run = 0;
        uint16_t mlen = c < 0 ? (uint16_t)mark_at(u + j, n) : 0;
        if (s && add_ev(s, (wd_fold_ev_t){s->folded + out->len - base, s->raw + j, (uint16_t)n, c >= 0, mlen}))
            return WD_ENOMEM;
        if (c >= 0) {
            if (map) map[out->len] = (uint32_t)j;
            out->data[out->len++] = (char)c;
        }
        i = j + n;
    }
    if (map) map[out->len] = (uint32_t)m;
    return WD_OK;
}

int wd_guard_fold(const char *text, size_t len, wd_buf_t *out, uint32_t **map, size_t *mapcap)
{
    return wd_guard_fold_as(text, len, WD_FOLD_LOOKALIKES, out, map, mapcap);
}

int wd_guard_fold_as(const char *text, size_t len, unsigned what, wd_buf_t *out, uint32_t **map,
                     size_t *mapcap)
{
    wd_buf_reset(out);
    if (len > UINT32_MAX) return WD_E2BIG;
    if (map && *mapcap < len + 1) {
        uint32_t *m = realloc(*map, (len + 1) * sizeof *m);
        if (!m) return WD_ENOMEM;
        *map = m;
        *mapcap = len + 1;
    }
    if (wd_buf_reserve(out, len + 1)) return WD_ENOMEM; /* folding never lengthens the text */
    size_t run = 0;
    words_t w = {.off = !(what & (WD_FOLD_LOOKALIKES | WD_FOLD_LOOKALIKES_ANY)), .any = what & WD_FOLD_LOOKALIKES_ANY};
    return fold_run((const unsigned char *)text, len, out, map ? *map : NULL, NULL, &run, &w);
}

uint32_t wd_guard_fold_end(const char *text, const wd_buf_t *folded, const uint32_t *map, uint32_t end)
{
    if (end == 0) return map[0];
    uint32_t at = map[end - 1], e;
    unsigned char s = (unsigned char)text[at];
    if ((unsigned char)folded->data[end - 1] == s)
        e = at + 1; /* copied as it was */
    else
        e = at + (s >= 0xF0 ? 4u : s >= 0xE0 ? 3u : 2u); /* one folded character */
    /* the combining marks after it (dropped) belong to it */
    for (size_t n; e < map[end] && (n = mark_at((const unsigned char *)text + e, map[end] - e)) != 0;)
        e += (uint32_t)n;
    return e;
}

/* ---- streams ------------------------------------------------------------------------------------- */

void wd_fold_stream_init(wd_fold_stream_t *s)
{
    memset(s, 0, sizeof *s);
    wd_buf_init(&s->out, 0);
    wd_buf_init(&s->in, 0);
}

static void scrub_buf(wd_buf_t *b)
{
    if (b->data) memset(b->data, 0, b->cap);
    wd_buf_free(b);
}

void wd_fold_stream_free(wd_fold_stream_t *s)
{
    free(s->ev);
    scrub_buf(&s->out);
    scrub_buf(&s->in);
    memset(s, 0, sizeof *s);
}

/* Bytes at the end of p that start a character p does not complete (0 if its last one is whole). */
static size_t cut_tail(const unsigned char *p, size_t len)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        unsigned char c = p[len - k];
        if (cont(c)) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

int wd_fold_stream_feed(wd_fold_stream_t *s, const char *p, size_t len, bool final, const char **fp,
                        size_t *fn)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t m = len;
    if (s->npend) { /* the cut character first */
        wd_buf_reset(&s->in);
        if (wd_buf_append(&s->in, s->pend, s->npend) || wd_buf_append(&s->in, p, len)) return WD_ENOMEM;
        u = (const unsigned char *)s->in.data;
        m = s->in.len;
        s->npend = 0;
    }
    size_t hold = final ? 0 : cut_tail(u, m);
    words_t w = {.open = s->word, .open_h = s->word_h};
    wordkinds_t h;
    size_t a = word_start(u, m - hold, &h); /* the word the piece ends in */
    size_t wlen = m - hold - a + (a ? 0 : s->word);
    if (a == 0) h.letter |= s->word_h.letter, h.foreign |= s->word_h.foreign;
    if (!final && h.look && wlen <= WD_FOLD_WORD_MAX) { /* its look-alikes wait for its end (fold.h) */
        hold = m - a;
        if (a) s->word = 0, s->word_h = (wordkinds_t){false, false, false}; /* a separator before it */
    } else if (m > hold) { /* the word the next piece may go on with */
        s->word = WD_MIN(wlen, (size_t)WD_FOLD_WORD_MAX + 1);
        s->word_h = h;
    }
    m -= hold;
    if (hold) memcpy(s->pend, u + m, hold);
    s->npend = hold;
    if ((const char *)u == p &&
        next_fold(u, m, 0, WD_FOLD_DASHES, &w) == m) { /* nothing folds: the piece itself */
        if (m) s->run = 0;
        s->raw += m;
        s->folded += m;
        *fp = p;
        *fn = m;
        return WD_OK;
    }
    wd_buf_reset(&s->out);
    w = (words_t){.open = w.open, .open_h = w.open_h};
    if (wd_buf_reserve(&s->out, m + 1) || fold_run(u, m, &s->out, NULL, s, &s->run, &w)) return WD_ENOMEM;
    s->raw += m;
    s->folded += s->out.len;
    *fp = s->out.data;
    *fn = s->out.len;
    return WD_OK;
}

/* The last kept event at or before folded offset x, or NULL. */
static const wd_fold_ev_t *ev_at(const wd_fold_stream_t *s, uint64_t x)
{
    size_t lo = s->head, hi = s->nev;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ev[mid].f <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > s->head ? &s->ev[lo - 1] : NULL;
}

static int64_t delta_after(const wd_fold_ev_t *e)
{
    return (int64_t)(e->r + e->rlen) - (int64_t)(e->f + e->flen);
}

uint64_t wd_fold_stream_raw(const wd_fold_stream_t *s, uint64_t x)
{
    const wd_fold_ev_t *e = ev_at(s, x);
    if (!e) return (uint64_t)((int64_t)x + s->delta0);
    if (x < e->f + e->flen) return e->r;
    return (uint64_t)((int64_t)x + delta_after(e));
}

uint64_t wd_fold_stream_raw_end(const wd_fold_stream_t *s, uint64_t x)
{
    const wd_fold_ev_t *e = ev_at(s, x - 1);
    uint64_t end = e && x - 1 < e->f + e->flen ? e->r + e->rlen : (uint64_t)((int64_t)x + (e ? delta_after(e) : s->delta0));
    /* the combining marks after it belong to it */
    const wd_fold_ev_t *next = e ? e + 1 : s->nev > s->head ? s->ev + s->head : NULL;
    if (next && next < s->ev + s->nev && next->f == x && !next->flen && next->r == end) end += next->mlen;
    return end;
}

void wd_fold_stream_trim(wd_fold_stream_t *s, uint64_t x)
{
    size_t k = s->head;
    while (k < s->nev && s->ev[k].f + s->ev[k].flen <= x)
        k++;
    if (k == s->head) return;
    s->delta0 = delta_after(&s->ev[k - 1]);
    s->head = k;
    if (s->head == s->nev) s->head = s->nev = 0;
}

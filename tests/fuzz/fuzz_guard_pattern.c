/* libFuzzer driver for wd_pattern_bytes, wd_pattern_pivot and wd_pattern_count (src/guard/pattern.c)
 * against PCRE2. Input: one flags byte (bit 0: caseless; bits 1-3: the set counted, one of the kinds
 * of bytes the engine counts or the hex digits), a pattern up to the first NUL, then a subject. When PCRE2
 * compiles the pattern (byte semantics, as the engine does) and the reader accepts it, every match
 * PCRE2 finds from any position of the subject may only hold bytes of the reader's set (a byte outside
 * it would make the engine's confirmation start too late and miss a finding), and, when the reader
 * finds a pivot, holds it between bytes of its sets (exactly once if the reader says so): a match
 * without it would be missed by block scans, which run the rule only around its pivot; and holds at least
 * as many bytes of the set as the reader counts (else block scans would skip a run that holds it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "guard/pattern.h"

#define MAX_PATTERN 512
#define MAX_SUBJECT 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    bool caseless = data[0] & 1;
    const uint8_t *p = data + 1, *nul = memchr(p, 0, size - 1);
    size_t plen = nul ? (size_t)(nul - p) : size - 1;
    if (plen > MAX_PATTERN) return 0;
    char pat[MAX_PATTERN + 1];
    memcpy(pat, p, plen);
    pat[plen] = 0;
    const char *subj = nul ? (const char *)nul + 1 : "";
    size_t slen = nul ? size - 1 - plen - 1 : 0;
    if (slen > MAX_SUBJECT) slen = MAX_SUBJECT;

    static const char *const kinds[] = {"0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz",
                                        ".", "-", ":", "/", "0123456789abcdef"};
    uint8_t set[32] = {0};
    for (const char *k = kinds[(data[0] >> 1) & 7]; *k; k++)
        set[(unsigned char)*k >> 3] |= (uint8_t)(1u << (*k & 7));
    unsigned long need = wd_pattern_count(pat, caseless, set);
    uint8_t bytes[32], before[32], after[32];
    bool ok = wd_pattern_bytes(pat, caseless, bytes), once = false;
    unsigned char pivot = 0;
    bool has_pivot = wd_pattern_pivot(pat, caseless, &pivot, before, after, &once);
    if (!ok)
        for (unsigned i = 0; i < 32; i++)
            if (bytes[i] != 0xff) abort(); /* a refusal assumes nothing */
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pat, plen, caseless ? PCRE2_CASELESS : 0, &ecode, &eoff, NULL);
    if (!code) return 0;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (md && mc) {
        pcre2_set_match_limit(mc, 10000); /* fuzzed patterns may backtrack without end */
        pcre2_set_depth_limit(mc, 1000);
        for (size_t s = 0; s <= slen; s++) {
            if (pcre2_match(code, (PCRE2_SPTR)subj, slen, s, PCRE2_ANCHORED, md, mc) < 0) continue;
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (ov[0] > ov[1]) continue; /* \K can put the start after the end */
            size_t pivots = 0, between = 0, held = 0;
            for (size_t i = ov[0]; i < ov[1]; i++) {
                if (!wd_byte_in(bytes, (unsigned char)subj[i])) abort();
                held += wd_byte_in(set, (unsigned char)subj[i]);
                if (!has_pivot || (unsigned char)subj[i] != pivot) continue;
                pivots++;
                between += i > ov[0] && i + 1 < ov[1] && wd_byte_in(before, (unsigned char)subj[i - 1]) &&
                           wd_byte_in(after, (unsigned char)subj[i + 1]);
            }
            if (has_pivot && (!between || (once && pivots != 1))) abort();
            if (held < need) abort();
        }
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    return 0;
}

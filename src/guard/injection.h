/* guard/injection: prompt-injection and jailbreak screening of input text.
 *
 * The signatures are ordinary guard rules of class "injection" (rules/injection.yaml): instruction
 * override and role-play templates, system-prompt extraction, delimiter and special-token injection,
 * invisible and bidirectional Unicode. This module adds what a pattern alone cannot do:
 *
 *  - decoding layers: base64 (and base64url), hex, URL-encoding, rot13 and Unicode tag characters
 *    (U+E0020..E007E "ASCII smuggling") are decoded, and text with invisible or look-alike characters
 *    is also scanned folded (guard/fold.h: zero-width characters dropped, fullwidth forms,
 *    mathematical letters and Unicode spaces read as ASCII), and once more with every Cyrillic/Greek
 *    look-alike read as Latin when it has one (two layers, so a Russian phrase split by invisible
 *    characters is still read in Russian, and "Ignore аӏӏ ..." in Latin); each decoded text is scanned again
 *    with the injection rules, to a depth of 2 (a decoded text may be decoded once more) and at most
 *    WD_INJ_DECODE_BUDGET decoded bytes per request (the budget is shared by all texts of one request
 *    through wd_inj_result_t); identifiers of three or more words (ignore_all_previous_instructions,
 *    ignoreAllPreviousInstructions) are scanned once more as words ("words" layer: like the folded
 *    one outside the budget, and never decoded further);
 *  - a score per request: 1 - prod(1 - s_r) over the distinct rules r that fired anywhere in the
 *    request (in any text and any layer), s_r being the highest score rule r reached. Independent
 *    weak signals add up; one strong signature decides alone.
 *
 * Knows nothing about HTTP, JSON or profiles: the gateway and `warden scan` feed it text and compare
 * the score with a threshold. Results name rule indexes and layers, never matched text. */
#ifndef WD_GUARD_INJECTION_H
#define WD_GUARD_INJECTION_H

#include "guard/guard.h"

#define WD_INJ_CLASS "injection"
#define WD_INJ_DECODE_BUDGET (64u * 1024u) /* decoded bytes per request, all layers together */
#define WD_INJ_MAX_DEPTH 2
#define WD_INJ_MAX_HITS 64 /* distinct rules counted per request; beyond that the score is ~1 anyway */

typedef enum {
    WD_INJ_PLAIN = 0, /* the text as sent */
    WD_INJ_BASE64,
    WD_INJ_HEX,
    WD_INJ_URL,
    WD_INJ_ROT13,
    WD_INJ_TAGS,   /* Unicode tag characters mapped to ASCII */
    WD_INJ_FOLDED, /* guard/fold.h: invisible characters dropped, fullwidth and other forms read as ASCII */
    WD_INJ_LOOKALIKE, /* the same with every look-alike of another script read as Latin */
    WD_INJ_WORDS,     /* identifiers of 3+ words (snake_case, kebab-case, camelCase) as words */
    WD_INJ_FLIPPED,   /* upside-down text ("suoᴉʇɔnɹʇsuᴉ ǝɹouƃᴉ") read backwards, each letter turned back */
    WD_INJ__LAYERS
} wd_inj_layer_t;

const char *wd_inj_layer_name(wd_inj_layer_t l); /* "plain", "base64", ... */

typedef struct {
    uint16_t rule;  /* index into the db's rules */
    uint8_t layer;  /* wd_inj_layer_t of the first text the rule fired in */
    uint8_t depth;  /* 0 = the text itself, 1 = decoded once, 2 = decoded twice */
    float score;    /* the highest score the rule reached */
} wd_inj_hit_t;

/* Accumulates over every text of one request. Initialise with wd_inj_result_init. */
typedef struct {
    wd_inj_hit_t hits[WD_INJ_MAX_HITS];
    size_t nhits;
    size_t decoded_bytes;  /* budget used */
    size_t decoded_folded; /* budget used below the folded layer (a budget of its own, the same size) */
    uint32_t layers_seen;  /* bit per wd_inj_layer_t that produced text to scan */
    bool budget_exhausted; /* the decode budget ran out: later candidate blobs were not decoded */
} wd_inj_result_t;

void wd_inj_result_init(wd_inj_result_t *r);
/* 1 - prod(1 - s_r): 0 when nothing fired. */
float wd_inj_score(const wd_inj_result_t *r);
/* True for rules the injection screen owns (class "injection"). */
bool wd_inj_rule(const wd_rule_t *r);

/* Screens one text and adds what fired to r. plain may hold the findings of a block scan of this very
 * text made with min_score 0 (the gateway scans every string once for all guards); NULL means the
 * text is scanned here. Findings of other classes are ignored. Returns WD_OK or a scan error
 * (WD_E2BIG: findings limit, WD_ENOMEM); a blob that does not fit the decode budget is skipped and
 * recorded in r->budget_exhausted, never an error. */
int wd_inj_scan(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len,
                const wd_findings_t *plain, wd_inj_result_t *r);

/* Whether a member name the privacy rules skip (wd_guard_plain_name) must still be screened: one of
 * at least three words joined by '_' ("ignore_all_previous_instructions"), which the words layer reads
 * as a phrase. */
bool wd_inj_name_screened(const char *name, size_t len);

/* The screen's verdict, the same in the gateway and `warden scan --explain`. */
typedef enum {
    WD_INJ_CLEAN = 0,  /* nothing fired, everything was screened: allow */
    WD_INJ_BELOW,      /* rules fired, score below the threshold: flag (recorded only) */
    WD_INJ_ABOVE,      /* score at or above the threshold: the profile's action */
    WD_INJ_UNSCREENED, /* the decode budget ran out: some encoded text was not screened */
} wd_inj_verdict_t;

/* Decides on r: ABOVE takes `action`; BELOW flags. An exhausted decode budget (r->budget_exhausted)
 * means later payloads were not decoded, so the score cannot rule out an injection hidden there (an
 * attacker can pad a prompt with harmless base64 to use the budget up): fail_open flags it,
 * otherwise it is treated like a score at the threshold and takes `action` (block by default). A
 * verdict ABOVE wins over UNSCREENED. *verdict (may be NULL) says which case decided. */
wd_action_t wd_inj_decide(const wd_inj_result_t *r, float threshold, wd_action_t action, bool fail_open,
                          wd_inj_verdict_t *verdict);

/* One decoding step, exposed for tests and `warden scan --explain`: appends the text the layer
 * decodes from p (for base64/hex/url: the decoded blobs found in p, separated by '\n'; for rot13, tags
 * and folded: the whole transformed text) to out. Returns the number of bytes appended (0 when the
 * layer finds nothing to decode), or a negative WD_E* code. At most max_out bytes are appended. */
long wd_inj_decode(wd_inj_layer_t layer, const char *p, size_t len, size_t max_out, wd_buf_t *out);

/* "rule.id(layer)=0.90,..." in decreasing score (explain and event text; never matched text).
 * Returns the length written (truncated to fit, always NUL-terminated when cap > 0). */
size_t wd_inj_describe(const wd_guard_db_t *db, const wd_inj_result_t *r, char *buf, size_t cap);

#endif

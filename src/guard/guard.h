/* guard: finding personal data, secrets and unsafe content in text, and acting on it.
 *
 * Rules are data (rules/NAME.yaml, see docs/rules.md): each has an id ("pii.email"), an entity type
 * ("EMAIL"), a data class ("pii", "phi", "financial", "secrets", or a content category such as
 * "self_harm"), a Hyperscan pattern, an optional validator (Luhn, mod-97, ...), optional context
 * words and a score. All rules compile into Hyperscan databases once per load (stream-mode ones,
 * which block scans use as streams of one write, plus block-mode ones for the rules a block scan
 * runs only around their context words; see engine.c); scanning never compiles. Matches are found without start-of-match tracking (fast) and each span's start is
 * confirmed with a bounded PCRE2 match only where something matched; validators and context then
 * remove false positives.
 *
 * Knows nothing about HTTP or JSON: the gateway and `warden scan` feed it text. */
#ifndef WD_GUARD_H
#define WD_GUARD_H

#include "core/core.h"

/* ---- rules ------------------------------------------------------------------------------------------ */

typedef enum {
    WD_ACT_ALLOW = 0,
    WD_ACT_FLAG,   /* record only */
    WD_ACT_MASK,   /* keep the last 4 characters: ************1234 */
    WD_ACT_REDACT, /* [EMAIL] */
    WD_ACT_HASH,   /* [EMAIL:3f9a0c1d5e7b2a48] keyed hash (64 bits), stable per deployment */
    WD_ACT_PSEUDO, /* <EMAIL_1>, restored in the answer */
    WD_ACT_BLOCK,  /* refuse the request / end the answer */
} wd_action_t;

const char *wd_action_name(wd_action_t a);
int wd_action_parse(const char *s, size_t len, wd_action_t *out);

typedef struct {
    char *id;          /* unique, e.g. "pii.email" */
    char *type;        /* entity type, e.g. "EMAIL" (also the placeholder name) */
    char *cls;         /* data class / category, e.g. "pii" */
    char *pattern;     /* Hyperscan/PCRE2 syntax */
    bool caseless;
    int validator;     /* index from wd_validator_find, or -1 */
    char **context;    /* lower-case words; one within 64 bytes before or 32 after the span adds 0.25 */
    size_t ncontext;
    bool context_required; /* without a context word the finding is dropped */
    bool gate_trigger;     /* context_required: block scans run it around its trigger, not its words */
    float score;       /* base confidence 0..1 */
    uint32_t max_len;  /* longest span the rule can match (bounds confirmation); default 256 */
    char *severity;    /* content categories: low|medium|high (may be NULL) */
    char *file;        /* where it was defined, for messages */
    char *set;         /* the rule set: its file's name without directory and ".yaml" ("safety_violence") */
    char *set_version; /* the file's set_version ("1.1.0"), NULL when the file has none */
    unsigned line;
    bool boundary;     /* drop spans that start or end inside a run of ASCII letters/digits (default true) */
    uint8_t group; /* 1..9: the finding is this capture group of the match, the rest is a cue; 0: the match */
    char *description; /* optional, for --explain (may be NULL) */
    /* `examples:` strings the rule must find (match) and must not find (no_match); scans ignore them,
     * wd_guard_check_examples (`warden rules check`, the rule-example test) tries them. */
    char **ex_match, **ex_no_match;
    size_t nex_match, nex_no_match;
} wd_rule_t;

/* A compiled, immutable rule set (reference-counted like config snapshots). */
typedef struct wd_guard_db wd_guard_db_t;

/* What a scan is for. Every rule serves some of these purposes (all of them, unless the caller
 * narrows them between parsing and compiling); a scan for some purposes runs only the databases of
 * the rules that serve them, and only those rules compete in overlap resolution. */
#define WD_GUARD_INPUT 1u     /* privacy actions on prompts */
#define WD_GUARD_OUTPUT 2u    /* the output filter on answers */
#define WD_GUARD_INJECTION 4u /* the prompt-injection screen, decoded layers included */
#define WD_GUARD_ANY 7u

/* Loads every *.yaml file in dir (sorted by name) and compiles them, every rule serving every
 * purpose. Errors name file:line:col. */
wd_guard_db_t *wd_guard_db_load(const char *dir, char *err, size_t errlen);
/* Same, from one YAML buffer (tests). */
wd_guard_db_t *wd_guard_db_load_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen);
/* The same in two steps: parse and check every rule (PCRE2 and Hyperscan accept each pattern), let
 * the caller set what each rule is for, then compile. Rules serving no purpose are not compiled at
 * all. A db must be compiled before it is scanned or shared; set_uses after compile is WD_EINVAL. */
wd_guard_db_t *wd_guard_db_parse(const char *dir, char *err, size_t errlen);
wd_guard_db_t *wd_guard_db_parse_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen);
int wd_guard_db_set_uses(wd_guard_db_t *db, size_t rule, unsigned uses);
int wd_guard_db_compile(wd_guard_db_t *db, char *err, size_t errlen);
/* Before compile: keep the compiled databases in dir and reuse them (guard/hscache.h; NULL: compile
 * every time, the default). After compile: how many databases were loaded from the cache (returned)
 * and compiled, and the first reason the cache could not be used (NULL if none), for a warning. */
int wd_guard_db_set_cache(wd_guard_db_t *db, const char *dir);
/* How block scans may look for trigger bytes, at most: 2 (the default) with AVX-512 and, with its byte
 * permutes (VBMI), dropping occurrences that cannot hold a match; 1 with AVX-512 (BW) alone; 0 with the
 * portable loop. Each as far as the CPU has it; tests compare them. Process-wide. */
void wd_guard_simd(unsigned level);
unsigned wd_guard_db_cache_stats(const wd_guard_db_t *db, unsigned *compiled, const char **problem);
wd_guard_db_t *wd_guard_db_ref(wd_guard_db_t *db);
void wd_guard_db_unref(wd_guard_db_t *db);
size_t wd_guard_db_nrules(const wd_guard_db_t *db);
const wd_rule_t *wd_guard_db_rule(const wd_guard_db_t *db, size_t i);
/* Index of the rule with this id, or -1. */
int wd_guard_db_find(const wd_guard_db_t *db, const char *id);
/* The longest span any rule can report (max over rules of max_len, narrowed by what each pattern
 * can match at most). */
size_t wd_guard_db_max_len(const wd_guard_db_t *db);
/* Whether some rule of db uses the validator of that name (wd_validator_find). */
bool wd_guard_db_uses_validator(const wd_guard_db_t *db, const char *name);

/* Checks a compiled rule set against its rules' `examples` (docs/rules.md, "Examples") at min_score,
 * every other rule competing: each `match` string must give a finding of its rule in a block scan
 * and, for the rule's first one, in a stream fed in two pieces split at every position; each
 * `no_match` string no finding of its rule, nor of any rule whose class is in strict[0..nstrict) when
 * its own class is (content categories: a near miss fires none). fail gets each failure as one line,
 * "FILE:LINE: rule ID: ...". Returns WD_OK (with *nchecked examples tried and *nfailed failed) or a
 * scanner error. */
typedef void (*wd_guard_example_fn)(void *ud, const wd_rule_t *rule, const char *msg);
int wd_guard_check_examples(wd_guard_db_t *db, float min_score, const char *const *strict, size_t nstrict,
                            wd_guard_example_fn fail, void *ud, size_t *nchecked, size_t *nfailed);

/* ---- scanning -------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t start, end; /* byte span in the scanned text */
    uint16_t rule;       /* index into the db's rules */
    float score;
} wd_finding_t;

typedef struct {
    wd_finding_t *v;
    size_t n, cap;
    size_t limit; /* at most this many findings are kept (0 = 4096) */
    uint64_t base; /* stream offset of v[].start/end: 0 for block scans; see wd_guard_stream_feed */
} wd_findings_t;

void wd_findings_init(wd_findings_t *f);
void wd_findings_free(wd_findings_t *f);

/* Per-thread scratch (Hyperscan scratch, PCRE2 match data). Allocate one per worker per db. */
typedef struct wd_guard_scratch wd_guard_scratch_t;
wd_guard_scratch_t *wd_guard_scratch_new(const wd_guard_db_t *db);
void wd_guard_scratch_free(wd_guard_scratch_t *s);

/* Finds every validated finding in text (block mode), sorted by start, overlaps resolved (the
 * higher score wins; on a tie the longer span). min_score drops weaker findings.
 * Returns WD_OK or an error (WD_E2BIG when the findings limit was reached: the text is refused). */
int wd_guard_scan(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len, float min_score,
                  wd_findings_t *out);
/* The same with only the rules serving one of the purposes in `uses` (WD_GUARD_* bits). */
int wd_guard_scan_for(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text, size_t len,
                      float min_score, wd_findings_t *out);

/* Overlap resolution as the caller acts on findings. Of overlapping candidates the higher score wins
 * (then the longer span, then the earlier rule) and the others are dropped whole. A caller that lets
 * some findings pass and acts on others (a role entitled to phi, a profile that allows a type) ranks
 * the rules it acts on higher: among equally scored candidates the higher rank wins, so a finding
 * that would pass never hides an equally likely reading that must be rewritten or blocked. A clearly
 * more likely reading still wins (an NHS number next to "NHS number" over the phone number it also
 * looks like). fn is called only for candidates that overlap another. */
typedef struct {
    unsigned (*fn)(void *ud, const wd_rule_t *r);
    void *ud;
} wd_guard_rank_t;

int wd_guard_scan_ranked(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text, size_t len,
                         float min_score, const wd_guard_rank_t *rank, wd_findings_t *out);

/* wd_guard_scan_ranked over the text folded as guard/fold.h describes (invisible characters dropped,
 * look-alike spaces, dashes, fullwidth forms and tag characters read as ASCII), with the findings'
 * spans in the text as given: a span covers whole characters of it, the dropped ones inside included.
 * Text with nothing to fold is scanned as it is. Streams fold their pieces with wd_fold_stream_feed
 * (guard/fold.h) and map the offsets back with it. */
int wd_guard_scan_folded(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text,
                         size_t len, float min_score, const wd_guard_rank_t *rank, wd_findings_t *out);

/* A JSON member name (raw, as written between its quotes) the gateway does not scan in prompts:
 * lower-case ASCII letters and underscores ("messages", "max_tokens"), or up to 7 digits (token ids in
 * logit_bias). No shipped rule that runs on prompts matches such a name (test_guard_rule_examples tries
 * 172,000 words, snake_case joins and numbers); a custom rule for a bare lower-case word would not see it.
 * Every other name is text a model reads (property names of tool and response schemas) and is
 * scanned like a string value. */
bool wd_guard_plain_name(const char *raw, size_t len);

/* ---- stream mode (SSE answers, large files) ---------------------------------------------------------
 *
 * The text arrives in pieces; findings are reported once they are final, with the same spans, scores
 * and overlap resolution as one wd_guard_scan of the whole text would give (see docs/rules.md for the
 * one exception: overlap chains longer than the hold-back are resolved in pieces).
 *
 * A caller that rewrites the text it forwards must hold back the bytes a later finding may still
 * cover: every byte before wd_guard_stream_safe_offset() is final (no finding reported later starts
 * before it), so it may be sent after applying the findings reported so far; bytes from there on
 * must be kept. fed - safe_offset never exceeds wd_guard_db_holdback(db) bytes. */
typedef struct wd_guard_stream wd_guard_stream_t;

/* Bound on the bytes a stream caller must hold back (at most 2 x wd_guard_db_max_len + 35). */
size_t wd_guard_db_holdback(const wd_guard_db_t *db);

/* Opens a stream (takes a reference on db). min_score applies to every finding of the stream.
 * Streams run on answers: NULL if a rule the stream would run does not serve WD_GUARD_OUTPUT (only
 * such rules have stream databases; with the default purposes, every rule does). */
wd_guard_stream_t *wd_guard_stream_open(wd_guard_db_t *db, float min_score);
/* The same with only the rules serving one of the purposes in `uses`. */
wd_guard_stream_t *wd_guard_stream_open_for(wd_guard_db_t *db, unsigned uses, float min_score);
/* Scans the next piece. out is reset and receives the findings that became final, sorted, with
 * absolute stream offsets base + start / base + end (out->base is set; the relative values fit in
 * 32 bits). s is any scratch of the stream's db (streams may move between threads between calls).
 * A piece is at most 1 GiB. Errors (WD_E2BIG: findings limit or a pathological pattern) leave the
 * stream unusable: close or free it. */
int wd_guard_stream_feed(wd_guard_stream_t *st, wd_guard_scratch_t *s, const char *p, size_t len,
                         wd_findings_t *out);
/* Ends the text: reports the remaining findings (matches that needed the end of the text included).
 * After it only wd_guard_stream_free may be called. */
int wd_guard_stream_finish(wd_guard_stream_t *st, wd_guard_scratch_t *s, wd_findings_t *out);
/* Sets the stream's overlap resolution (see wd_guard_rank_t); before the first feed. */
void wd_guard_stream_set_rank(wd_guard_stream_t *st, const wd_guard_rank_t *rank);
uint64_t wd_guard_stream_offset(const wd_guard_stream_t *st);      /* bytes fed so far */
uint64_t wd_guard_stream_safe_offset(const wd_guard_stream_t *st); /* bytes before this are final */
/* Candidates resolved before their overlap chain ended, to keep the hold-back bounded (0 = the
 * findings so far are exactly a block scan's). */
uint64_t wd_guard_stream_forced(const wd_guard_stream_t *st);
void wd_guard_stream_free(wd_guard_stream_t *st);                  /* finished or not */

/* ---- validators (src/guard/validators.c) ---------------------------------------------------------- */

/* A validator inspects a candidate span and returns false to drop it; it may adjust *score. */
typedef bool (*wd_validator_fn)(const char *p, size_t len, float *score);
int wd_validator_find(const char *name); /* -1 if unknown */
wd_validator_fn wd_validator_get(int index);
const char *wd_validator_name(int index);

#endif

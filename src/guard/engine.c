/* guard engine: rule files -> Hyperscan databases -> validated, non-overlapping findings.
 *
 * Loading: each rule file (rules/NAME.yaml) becomes a yamltree (anchors, aliases and tags refused, as in
 * config), every rule is checked key by key with file:line:col errors, and each pattern is compiled
 * twice: by Hyperscan (together with the other rules of its part, see below) and by PCRE2 (one code
 * per rule, JIT when available, end-anchored).
 *
 * Scanning: Hyperscan runs without start-of-match tracking, which is what makes it fast, and reports
 * (rule, end) for every end position of every match. Each end is confirmed by PCRE2 on the window
 * [end - win, end]: the pattern is compiled with PCRE2_ENDANCHORED and the subject is cut at `end`,
 * so an unanchored search finds the leftmost start whose match ends exactly there. The search begins
 * after the last byte before `end` that no match of the pattern can contain (guard/pattern.h): an
 * e-mail address is confirmed from the space before it, not from 254 bytes earlier. Rules whose pattern
 * has a fixed width (Hyperscan tells us) need no confirmation at all: start = end - width. Matches
 * of one rule sharing a start keep the longest end (greedy, as PCRE2 would report). Then, per
 * candidate: the word-boundary check, the validator, the context words, min_score; and finally the
 * overlap resolution (higher score, then longer, then the earlier rule).
 *
 * The databases of rules that serve answers are Hyperscan stream-mode databases (the others are only
 * scanned in blocks and are block-mode ones; see STREAMED). A stream (an SSE answer, a large file) writes
 * each piece to them once, with the same pipeline on a sliding history: Hyperscan reports a match once
 * nothing that follows can change it, and a candidate becomes final once no later match can overlap
 * it and its right-hand context has arrived, so the findings equal a block scan's. A block scan of a
 * stream-mode database is a stream of one write. What a stream must hold back is short: the longest span of
 * the rules with short spans (SHORT_WIN at most), and, for each rule whose spans can be longer (a private
 * key, a JWT, an e-mail address), only from where a match of it is in progress (PCRE2 partial matching).
 *
 * Rules are compiled in parts: by the purposes they serve (prompts, answers, the injection screen;
 * see WD_GUARD_*), so a scan runs only the rules it needs. Inside a part, the rules with
 * context_required, and those whose every match holds a rare trigger (a digit, say), are compiled
 * apart: streams scan them like the others, block scans run them only around their context words or
 * their trigger (see "Gated rules" and "Trigger-gated rules"), with the same findings.
 *
 * A database is immutable after load and shared by all threads; everything mutable lives in the
 * per-thread scratch or in a stream. */
#include "guard/guard.h"
#include "guard/fold.h"
#include "guard/hscache.h"
#include "guard/pattern.h"

#include "config/yamltree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hs/hs.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define CTX_BEFORE 64 /* context words are looked for this many bytes before a span ... */
#define CTX_AFTER 32  /* ... and this many after it */
#define CTX_BOOST 0.25f
#define MAX_RULES 16384 /* wd_finding_t.rule is 16 bits; this also bounds compile time */
#define MAX_FILE_BYTES (4u << 20)
#define MAX_FILES 1024
#define MAX_PATTERN 8192
#define MAX_NAME 64
#define MAX_WORDS 64
#define MAX_WORD 64
#define MAX_DESC 1024
#define MAX_EXAMPLES 64 /* per list of a rule's examples */
#define MAX_SPAN 4096
#define DEFAULT_MAX_LEN 256
#define DEFAULT_SCORE 0.8f
#define DEFAULT_LIMIT 4096
#define CAND_FACTOR 8 /* raw candidates kept per scan: CAND_FACTOR x the findings limit */
#define MAX_PIECE (1u << 30)
/* PCRE2 work per confirmation. A window is at most 4 KiB, so a sane pattern needs a few thousand
 * steps; hitting the limit means a pathological pattern and the text is refused (fail closed). */
/* Streams hold back the last SHORT_WIN bytes for the rules with shorter spans; a rule whose spans can
 * be longer makes them hold back only from where a match of it may be in progress. */
#define SHORT_WIN 128
#define MAX_GROUP 9 /* the highest capture group a rule may report (`group:`) */
#define NO_PENDING UINT64_MAX
#define PCRE_MATCH_LIMIT 200000
#define PCRE_DEPTH_LIMIT 10000

/* ---------------------------------------------------------------------------------------------- */
/* Model */

/* Two byte ranges: c is in them if (unsigned char)(c - lo[k]) <= w[k] for k = 0 or 1. */
typedef struct {
    unsigned char lo[2], w[2];
} ranges2_t;

/* A trigger (see "Trigger-gated rules"): every match of the rules it gates holds a byte in [lo, hi],
 * right after a byte of `before` and right before one of `after` when need_before / need_after.
 * vb and va hold those sets, or more (everything when not needed), for the vector loop; exactly when
 * `exact`. */
typedef struct {
    unsigned char lo, hi;
    bool need_before, need_after, exact;
    uint8_t before[32], after[32];
    ranges2_t vb, va;
} trigger_t;

typedef unsigned char v16_t __attribute__((vector_size(16)));

/* A trigger's ranges in vector lanes (part_t.vt, made when the rules are compiled). */
typedef struct {
    v16_t lo, w, blo[2], bw[2], alo[2], aw[2];
    bool nb, na;
} vtrig_t;

static v16_t splat(unsigned char c)
{
    return (v16_t){c, c, c, c, c, c, c, c, c, c, c, c, c, c, c, c};
}

static void vtrig_make(const trigger_t *tr, vtrig_t *v)
{
    v->lo = splat(tr->lo);
    v->w = splat((unsigned char)(tr->hi - tr->lo));
    for (unsigned k = 0; k < 2; k++) {
        v->blo[k] = splat(tr->vb.lo[k]);
        v->bw[k] = splat(tr->vb.w[k]);
        v->alo[k] = splat(tr->va.lo[k]);
        v->aw[k] = splat(tr->va.w[k]);
    }
    v->nb = tr->need_before;
    v->na = tr->need_after;
}

#define MAX_TRIGGERS 8 /* trigger groups per part; the rules of any more are not gated */

typedef struct {
    pcre2_code *code;  /* end-anchored, for confirmations; NULL when fixed != 0 */
    pcre2_code *pcode; /* longspan rules: not end-anchored, for partial matching (PCRE2 refuses both) */
    uint8_t first[32]; /* longspan rules: bitmap of the bytes a match can start with (all set if unknown) */
    char pre[16];      /* longspan rules: the literal every match starts with (may be empty) ... */
    uint8_t npre;      /* ... and its length; compared ASCII-caselessly when the rule is caseless */
    uint8_t ls_bit;    /* longspan rules, when the db has at most 64: its bit in ls_first */
    uint32_t win;     /* confirmation window: min(max_len, the pattern's longest match) */
    uint32_t minw;    /* the pattern's shortest match */
    uint32_t fixed;   /* every match has exactly this many bytes: start = end - fixed */
    uint8_t group; /* the rule's group (wd_rule_t): the finding is ovector pair `group` of the confirmation */
    bool som;      /* pivot-gated, not fixed, no group: its trigger group's database reports
                      the start (HS_FLAG_SOM_LEFTMOST), the confirmation's (see "Starts") */
    bool narrow;      /* confirmations start after the last byte before the end not in bytes ... */
    uint8_t bytes[32]; /* ... which are all a match can contain (wd_pattern_bytes) */
    wd_validator_fn validate;
    uint8_t ctxlen[MAX_WORDS]; /* strlen of each context word */
    uint64_t *ctxwords; /* rules with context: per pair_bit value, the context words (bit k: word k) that
                           start with such two bytes; a word of one byte is in every entry */
    uint8_t uses;              /* WD_GUARD_* purposes the rule serves; 0 = never scanned */
    bool longspan;             /* win > SHORT_WIN: streams track its match in progress (track_pending) */
    bool tgate;                /* block scans run it only around its trigger (choose_trigger) ... */
    trigger_t trig;            /* ... which is this ... */
    uint8_t span[32];          /* ... and its matches hold only these bytes besides the trigger's ... */
    uint8_t lead[32];          /* ... and start with one of these */
    unsigned pline, pcol;      /* where its pattern is, for compile errors */
} rule_rt_t;

/* The rules that serve the same purposes are compiled together, so a scan for some purposes runs only
 * the databases of the rules it needs (a prompt is not scanned for content categories, an answer not
 * for injection signatures). Streams are for answers: a part whose rules serve WD_GUARD_OUTPUT has
 * stream-mode databases, which streams feed piece by piece and a block scan uses as a stream of one
 * write, reset for the next; any other part is only ever scanned in blocks and has a block-mode one,
 * which Hyperscan runs with less set-up per scan (no stream state to reset). */
#define STREAMED(uses) ((uses)&WD_GUARD_OUTPUT)

typedef struct {
    unsigned uses;
    hs_database_t *hs;  /* HS_MODE_STREAM if STREAMED, else HS_MODE_BLOCK: its rules that are not gated and
                           the context words of its gated rules (match id nrules + index in db->words) */
    hs_database_t *ghs; /* HS_MODE_STREAM: its gated rules, for streams (NULL if none or not STREAMED) */
    uint32_t win;       /* the longest win among its rules */
    uint32_t tg0, ntg;  /* its trigger groups: db->gated[tg0, tg0 + ntg) ... */
    vtrig_t vt[MAX_TRIGGERS]; /* ... and their triggers in vector lanes */
} part_t;

/* The kinds of bytes the run around a trigger's occurrence is counted in (see "Trigger-gated rules"). */
enum { CL_OTHER, CL_DIGIT, CL_UPPER, CL_LOWER, CL_DOT, CL_DASH, CL_COLON, CL_SLASH, NCLS };
#define T_CLS 0x07  /* gated_t.tab: a byte's kind ... */
#define T_LEAD 0x40 /* ... whether a match of the group may start with it ... */
#define T_SPAN 0x80 /* ... and whether one may hold it (besides the trigger's once) */
#define MAX_NEEDS 16

/* Gated rules in block scans, run only on regions of the text (see scan_gated): a rule with
 * context_required, in a block-mode database of its own, around its context words; or the rules of a
 * part with the same trigger, in one block-mode database, around the trigger's occurrences. */
typedef struct {
    uint32_t rule; /* the rule with context_required, or NO_RULE: a trigger group */
    hs_database_t *hs; /* HS_MODE_BLOCK */
    uint32_t win;      /* the longest win of its rules */
    uint32_t minw;     /* trigger group: the shortest match of its rules */
    bool som;          /* trigger group: compiled with HS_FLAG_SOM_LEFTMOST for its rules with rt.som */
    trigger_t trig;    /* trigger group: the trigger ... */
    uint8_t tab[256];  /* ... per byte: its kind, T_LEAD and T_SPAN (the unions of its rules') ... */
    uint8_t nneed;     /* ... and per rule (alike ones once) how many */
    uint8_t need[MAX_NEEDS][NCLS]; /* bytes of each kind its every match holds (capped at 255) */
    bool lead_before; /* trigger group: no trigger byte is T_LEAD, so a match starts before the trigger */
    uint8_t runmin;   /* trigger group: its trigger bytes are T_SPAN; a match's least length (<= 64) ... */
    uint8_t runsh[6]; /* ... shifts that find such runs (long_runs) */
    bool ascii;       /* trigger group: no byte >= 0x80 is T_SPAN or T_LEAD */
} gated_t;
#define NO_RULE UINT32_MAX

/* A context word of some part's gated rules (match id nrules + its index in that part's hs database):
 * the gated rules it serves are wslots[first .. first + n). */
typedef struct {
    const char *s; /* the rule's string */
    uint32_t len, first, n;
} ctxword_t;

#define MAX_PARTS 7 /* one per non-empty combination of the three WD_GUARD_* bits */

struct wd_guard_db {
    atomic_int refs;
    wd_rule_t *rules;
    rule_rt_t *rt;
    size_t nrules;
    part_t parts[MAX_PARTS];
    size_t nparts;
    gated_t *gated; /* every gated rule of every part */
    size_t ngated;
    ctxword_t *words; /* every part's context words */
    size_t nwords;
    uint32_t *wslots; /* indexes into gated */
    bool compiled;
    char *cache_dir; /* compiled databases kept here (hscache.h); NULL: none */
    wd_hs_cache_t cache; /* open while compiling, then what it did */
    uint32_t max_win;    /* max over rules of rt.win */
    uint32_t lookbehind; /* bytes a confirmation may look before its window (PCRE2 lookbehind) */
    uint64_t *ls_first; /* per byte: the longspan rules (rt.ls_bit) a match can start with it; NULL if > 64 */
};

typedef struct {
    uint64_t start, end; /* absolute (stream) offsets */
    uint32_t rule;
    float score;
    unsigned rank; /* overlap resolution: set from the caller's wd_guard_rank_t, higher wins first */
} cand_t;

typedef struct {
    cand_t *v;
    size_t n, cap;
    int32_t *last; /* per rule: index in v of its latest candidate, or -1 */
    cand_t *tmp;   /* sort_dedup's merge buffer */
    size_t tcap;
} candset_t;

/* A stretch of text a gated rule is run on in a block scan. */
typedef struct {
    uint64_t r0, r1;
    uint32_t g; /* index into db->gated */
} region_t;

struct wd_guard_scratch {
    const wd_guard_db_t *db;
    hs_scratch_t *hs;
    hs_stream_t *bst[MAX_PARTS]; /* per part with an hs database, for block scans: reset after each scan */
    region_t *reg; /* block scans: the regions of the gated rules */
    size_t nreg, capreg;
    int32_t *glast; /* per gated rule: its latest region in reg, or -1 */
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    candset_t cs; /* block scans */
    wd_buf_t fold; /* wd_guard_scan_folded: the folded text and its map back */
    uint32_t *fmap;
    size_t fmapcap;
    char *pad; /* a text that ends too close to a page boundary, copied with room after it (hs_block) */
    size_t padcap;
};

struct wd_guard_stream {
    wd_guard_db_t *db;
    unsigned uses;
    uint32_t max_win;   /* the longest win among the rules the stream looks at */
    uint32_t short_win; /* the same among its rules that are not longspan */
    uint32_t *lr;       /* its longspan rules */
    uint64_t *pend;     /* per lr: where a match of it may be in progress, or NO_PENDING */
    size_t nlr;
    uint64_t ls_mine;   /* with db->ls_first: the bits of its longspan rules ... */
    int8_t ls_slot[64]; /* ... and each one's index in lr */
    uint64_t horizon;   /* a candidate is final once fed >= its end + horizon (and no long match pends) */
    uint64_t holdback;  /* fed - safe offset never exceeds this */
    float min_score;
    char *hist; /* bytes [hbase, fed) */
    size_t hcap;
    uint64_t hbase, fed, safe;
    uint64_t taken; /* match ends below this have been collected; later matches end at or after it */
    hs_stream_t *hst[MAX_PARTS]; /* per part the stream looks at, else NULL */
    hs_stream_t *gst[MAX_PARTS]; /* the same for the parts' gated rules */
    candset_t cs; /* pending candidates */
    wd_guard_rank_t rank; /* overlap resolution (fn NULL: score only) */
    uint64_t forced; /* candidates finalized early to keep the hold-back bounded */
    bool finished, failed;
};

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers */

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

void wd_findings_init(wd_findings_t *f)
{
    memset(f, 0, sizeof *f);
}

void wd_findings_free(wd_findings_t *f)
{
    free(f->v);
    f->v = NULL;
    f->n = f->cap = 0;
}

static int findings_push(wd_findings_t *f, wd_finding_t x)
{
    size_t limit = f->limit ? f->limit : DEFAULT_LIMIT;
    if (f->n >= limit) return WD_E2BIG;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        if (cap > limit) cap = limit;
        wd_finding_t *v = realloc(f->v, cap * sizeof *v);
        if (!v) return WD_ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return WD_OK;
}

static int cands_init(candset_t *cs, size_t nrules)
{
    memset(cs, 0, sizeof *cs);
    cs->last = malloc(WD_MAX(nrules, (size_t)1) * sizeof *cs->last);
    if (!cs->last) return WD_ENOMEM;
    for (size_t i = 0; i < nrules; i++)
        cs->last[i] = -1;
    return WD_OK;
}

static void cands_free(candset_t *cs)
{
    free(cs->v);
    free(cs->last);
    free(cs->tmp);
    memset(cs, 0, sizeof *cs);
}

/* Resets only the rules that have candidates, so a scan costs nothing per rule. */
static void cands_clear(candset_t *cs)
{
    for (size_t i = 0; i < cs->n; i++)
        cs->last[cs->v[i].rule] = -1;
    cs->n = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Confirmation (Hyperscan match callback) */

typedef struct {
    const wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    candset_t *cs;
    const char *buf; /* holds stream bytes [base, ...) */
    uint64_t base;
    uint64_t scan_base; /* offset in the text of what Hyperscan calls offset 0 */
    uint64_t zlo, zhi;  /* only candidates starting in [zlo, zhi] are kept (see scan_gated) */
    size_t len;         /* block scans: the text's length */
    bool gate;          /* block scans: context words add regions (add_regions); streams ignore them */
    bool som;           /* the database reports starts of the rules with rt.som */
    size_t max_cands;
    int err;
} match_ctx_t;

static int add_regions(match_ctx_t *m, uint32_t w, uint64_t h);

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *ud)
{
    WD_UNUSED(flags);
    match_ctx_t *m = ud;
    if (id >= m->db->nrules)
        return m->gate ? add_regions(m, id - (unsigned)m->db->nrules, m->scan_base + to) : 0;
    const rule_rt_t *rt = &m->db->rt[id];
    uint64_t end = m->scan_base + to, start;

    if (rt->fixed) {
        if (end < rt->fixed) return 0;
        start = end - rt->fixed;
    } else if (m->som && rt->som && to - from <= rt->win) {
        start = m->scan_base + from;
    } else {
        uint64_t wstart = end > rt->win ? end - rt->win : 0;
        if (wstart < m->base) wstart = m->base; /* cannot happen: the history keeps every window */
        if (rt->narrow) { /* a match holds only its pattern's bytes: none starts before such a run */
            uint64_t x = end;
            while (x > wstart && wd_byte_in(rt->bytes, (unsigned char)m->buf[x - 1 - m->base]))
                x--;
            wstart = x;
        }
        /* Cutting the subject at `end` with an end-anchored pattern makes the unanchored search return
         * the leftmost start whose match ends exactly at `end`. NOTBOL: `^` means the start of the
         * text, which the history no longer holds once it has slid. */
        int rc = pcre2_match(rt->code, (PCRE2_SPTR)m->buf, (PCRE2_SIZE)(end - m->base),
                             (PCRE2_SIZE)(wstart - m->base), m->base ? PCRE2_NOTBOL : 0, m->s->md, m->s->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0; /* the engines disagree (e.g. a span longer than max_len) */
        if (rc < 0) {
            m->err = WD_E2BIG;
            return 1;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->s->md);
        start = m->base + ov[0];
        if (start >= end) return 0;
        if (rt->group && (ov[2 * rt->group] == PCRE2_UNSET || ov[2 * rt->group] >= ov[2 * rt->group + 1]))
            return 0;
    }
    if (start < m->zlo || start > m->zhi) return 0; /* the match's start decides which region owns it */
    if (rt->group) { /* the finding is the group (never a fixed-width rule: the confirmation ran) */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->s->md);
        start = m->base + ov[2 * rt->group];
        end = m->base + ov[2 * rt->group + 1];
    }
    candset_t *cs = m->cs;
    int32_t li = cs->last[id];
    if (li >= 0 && cs->v[li].start == start) {
        if (end > cs->v[li].end) cs->v[li].end = end;
        return 0;
    }
    if (cs->n >= m->max_cands) {
        m->err = WD_E2BIG;
        return 1;
    }
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 64;
        cand_t *v = realloc(cs->v, cap * sizeof *v);
        if (!v) {
            m->err = WD_ENOMEM;
            return 1;
        }
        cs->v = v;
        cs->cap = cap;
    }
    cs->v[cs->n] = (cand_t){.start = start, .end = end, .rule = id, .score = 0};
    cs->last[id] = (int32_t)cs->n++;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Candidates -> findings */

static int cmp_start(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->rule != y->rule) return x->rule < y->rule ? -1 : 1;
    if (x->end != y->end) return x->end > y->end ? -1 : 1; /* longest first */
    return 0;
}

static int cmp_priority(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1;
    uint64_t lx = x->end - x->start, ly = y->end - y->start;
    if (lx != ly) return lx > ly ? -1 : 1;
    if (x->rule != y->rule) return x->rule < y->rule ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return 0;
}

typedef int (*cand_cmp_t)(const void *, const void *);

/* In place and allocation-free (glibc's qsort may malloc a merge buffer), for the small overlap
 * components and for sort_dedup when its buffer cannot grow: insertion sort, and if it has to move
 * too much the rest is heap-sorted, which bounds the worst case at O(n log n). */
static void sift_down(cand_t *v, size_t root, size_t n, cand_cmp_t cmp)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && cmp(&v[child], &v[child + 1]) < 0) child++;
        if (cmp(&v[root], &v[child]) >= 0) return;
        cand_t t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

static void cand_sort(cand_t *v, size_t n, cand_cmp_t cmp)
{
    size_t budget = 8 * n + 64;
    for (size_t i = 1; i < n; i++) {
        cand_t x = v[i];
        size_t j = i;
        while (j > 0 && cmp(&v[j - 1], &x) > 0) {
            v[j] = v[j - 1];
            j--;
            if (--budget == 0) break;
        }
        v[j] = x;
        if (budget == 0) {
            for (size_t k = n / 2; k-- > 0;)
                sift_down(v, k, n, cmp);
            for (size_t end = n; end-- > 1;) {
                cand_t t = v[0];
                v[0] = v[end];
                v[end] = t;
                sift_down(v, 0, end, cmp);
            }
            return;
        }
    }
}

/* Bottom-up merge sort by cmp_start through tmp (room for n): runs of 16 by insertion, then
 * merges; a merge whose halves are already in order is skipped, so input that arrives in sorted
 * stretches (one per database scan) costs little. */
static void merge_sort_start(cand_t *v, cand_t *tmp, size_t n)
{
    enum { RUN = 16 };
    for (size_t lo = 0; lo < n; lo += RUN)
        cand_sort(v + lo, WD_MIN((size_t)RUN, n - lo), cmp_start); /* insertion sort within its budget */
    for (size_t w = RUN; w < n; w *= 2)
        for (size_t lo = 0; lo + w < n; lo += 2 * w) {
            size_t mid = lo + w, hi = WD_MIN(lo + 2 * w, n);
            if (cmp_start(&v[mid - 1], &v[mid]) <= 0) continue;
            /* the left half goes to tmp; the output never overtakes the right half's next entry */
            size_t nl = mid - lo, i = 0, j = mid, k = lo;
            memcpy(tmp, v + lo, nl * sizeof *v);
            while (i < nl && j < hi)
                v[k++] = cmp_start(&v[j], &tmp[i]) < 0 ? v[j++] : tmp[i++];
            while (i < nl)
                v[k++] = tmp[i++];
        }
}

/* Sorts by start and drops repeats of (rule, start), keeping the longest: Hyperscan may report the
 * ends of one rule so that the same start comes back after another one. */
static void sort_dedup(candset_t *cs)
{
    bool sorted = true;
    for (size_t i = 1; i < cs->n && sorted; i++)
        sorted = cmp_start(&cs->v[i - 1], &cs->v[i]) < 0 &&
                 (cs->v[i - 1].start != cs->v[i].start || cs->v[i - 1].rule != cs->v[i].rule);
    if (sorted) return;
    if (cs->tcap < cs->n) {
        cand_t *t = realloc(cs->tmp, cs->cap * sizeof *t);
        if (t) {
            cs->tmp = t;
            cs->tcap = cs->cap;
        }
    }
    if (cs->tcap >= cs->n)
        merge_sort_start(cs->v, cs->tmp, cs->n);
    else
        cand_sort(cs->v, cs->n, cmp_start); /* no memory for the buffer: in place, slower */
    size_t w = 0;
    for (size_t i = 0; i < cs->n; i++) {
        if (w && cs->v[w - 1].start == cs->v[i].start && cs->v[w - 1].rule == cs->v[i].rule) continue;
        cs->v[w++] = cs->v[i];
    }
    cs->n = w;
}

/* The text seen by the filters: bytes [base, avail) of the stream are in buf. */
typedef struct {
    const char *buf;
    uint64_t base, avail;
} view_t;

static inline int byte_at(const view_t *t, uint64_t off)
{
    if (off < t->base || off >= t->avail) return -1;
    return (unsigned char)t->buf[off - t->base];
}

/* Is a span with these first and last bytes glued to letters or digits around it (before, after: the
 * bytes next to it, -1 for none)? Such a span is no whole word: the boundary check drops it, and it
 * is no context word. */
static inline bool glued(int before, unsigned char first, unsigned char last, int after)
{
    return (before >= 0 && wd_is_alnum((unsigned char)before) && wd_is_alnum(first)) ||
           (after >= 0 && wd_is_alnum((unsigned char)after) && wd_is_alnum(last));
}

/* The index in rule_rt_t.ctxwords of a word starting with bytes a, b. */
#define PAIR_SLOTS 512
static inline unsigned pair_bit(unsigned char a, unsigned char b)
{
    return ((a & 15u) << 5 | (b & 31u));
}

/* Is a context word present as a whole word, case-insensitively, inside [lo, hi)? The window is
 * lower-cased once (it is at most CTX_BEFORE bytes); at each position only the words that start
 * with its two bytes' pair_bit value are compared. The positions are tried from hi down when
 * `nearest_last` (a window before a span: its word is most often right before it). */
static bool words_in(const view_t *t, uint64_t lo, uint64_t hi, const wd_rule_t *r, const rule_rt_t *rt,
                     bool nearest_last)
{
    unsigned char win[WD_MAX(CTX_BEFORE, CTX_AFTER) + 1];
    size_t n = (size_t)(hi - lo);
    if (hi <= lo) return false;
    const unsigned char *p = (const unsigned char *)t->buf + (lo - t->base);
    for (size_t i = 0; i < n; i++)
        win[i] = lower(p[i]);
    win[n] = 0;
    for (size_t j = 0; j < n; j++) {
        size_t at = nearest_last ? n - 1 - j : j;
        for (uint64_t ws = rt->ctxwords[pair_bit(win[at], win[at + 1])]; ws; ws &= ws - 1) {
            size_t k = (size_t)__builtin_ctzll(ws);
            const char *w = r->context[k];
            size_t wl = rt->ctxlen[k];
            if (wl > n - at || memcmp(win + at, w, wl) != 0) continue;
            uint64_t abs_at = lo + at;
            int before = abs_at ? byte_at(t, abs_at - 1) : -1, after = byte_at(t, abs_at + wl);
            if (!glued(before, (unsigned char)w[0], (unsigned char)w[wl - 1], after)) return true;
        }
    }
    return false;
}

static bool has_context(const view_t *t, const wd_rule_t *r, const rule_rt_t *rt, uint64_t start,
                        uint64_t end)
{
    uint64_t blo = start > CTX_BEFORE ? start - CTX_BEFORE : 0, ahi = WD_MIN(end + CTX_AFTER, t->avail);
    if (blo < t->base) blo = t->base;
    return words_in(t, blo, start, r, rt, true) || words_in(t, end, ahi, r, rt, false);
}

/* Boundary check, validator, context and min_score, in place on v[0..n). Returns the kept count. */
static size_t filter(const wd_guard_db_t *db, const view_t *t, cand_t *v, size_t n, float min_score)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        cand_t c = v[i];
        const wd_rule_t *r = &db->rules[c.rule];
        const rule_rt_t *rt = &db->rt[c.rule];
        const char *p = t->buf + (c.start - t->base);
        size_t len = (size_t)(c.end - c.start);
        if (r->boundary) {
            int before = c.start ? byte_at(t, c.start - 1) : -1, after = byte_at(t, c.end);
            if (glued(before, (unsigned char)p[0], (unsigned char)p[len - 1], after)) continue;
        }
        float score = r->score;
        if (rt->validate && !rt->validate(p, len, &score)) continue;
        if (r->ncontext) {
            if (has_context(t, r, rt, c.start, c.end))
                score = fminf(1.0f, score + CTX_BOOST);
            else if (r->context_required)
                continue;
        }
        if (!(score >= min_score)) continue;
        c.score = score;
        v[w++] = c;
    }
    return w;
}

/* Greedy selection inside one overlap component: by priority, keep what does not overlap a kept one.
 * The kept spans stay sorted by start in out->v[first..), so each test is a binary search. */
static int resolve_component(const wd_guard_db_t *db, cand_t *v, size_t n, uint64_t out_base,
                             const wd_guard_rank_t *rank, wd_findings_t *out)
{
    for (size_t i = 0; i < n; i++)
        v[i].rank = rank && rank->fn ? rank->fn(rank->ud, &db->rules[v[i].rule]) : 0;
    cand_sort(v, n, cmp_priority);
    size_t first = out->n;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = (uint32_t)(v[i].start - out_base), e = (uint32_t)(v[i].end - out_base);
        size_t lo = first, hi = out->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (out->v[mid].start < s)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo > first && out->v[lo - 1].end > s) continue;
        if (lo < out->n && out->v[lo].start < e) continue;
        int rc = findings_push(out, (wd_finding_t){0});
        if (rc) return rc;
        memmove(&out->v[lo + 1], &out->v[lo], (out->n - 1 - lo) * sizeof *out->v);
        out->v[lo] = (wd_finding_t){.start = s, .end = e, .rule = (uint16_t)v[i].rule, .score = v[i].score};
    }
    return WD_OK;
}

/* v[0..n) sorted by start, forming whole overlap components. */
static int finalize(const wd_guard_db_t *db, const view_t *t, cand_t *v, size_t n, float min_score,
                    uint64_t out_base, const wd_guard_rank_t *rank, wd_findings_t *out)
{
    n = filter(db, t, v, n, min_score);
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        uint64_t maxend = v[i].end;
        while (j < n && v[j].start < maxend) {
            if (v[j].end > maxend) maxend = v[j].end;
            j++;
        }
        int rc;
        if (j == i + 1)
            rc = findings_push(out, (wd_finding_t){.start = (uint32_t)(v[i].start - out_base),
                                                   .end = (uint32_t)(v[i].end - out_base),
                                                   .rule = (uint16_t)v[i].rule,
                                                   .score = v[i].score});
        else
            rc = resolve_component(db, v + i, j - i, out_base, rank, out);
        if (rc) return rc;
        i = j;
    }
    return WD_OK;
}

static size_t max_cands(const wd_findings_t *out)
{
    size_t limit = out->limit ? out->limit : DEFAULT_LIMIT;
    return limit > SIZE_MAX / CAND_FACTOR ? SIZE_MAX : limit * CAND_FACTOR;
}

/* ---------------------------------------------------------------------------------------------- */
/* Running a database */

/* What a scan returns: the error a callback recorded, else Hyperscan's, else WD_OK. */
static int scan_result(int err, hs_error_t hr)
{
    if (err) return err;
    if (hr != HS_SUCCESS) return hr == HS_NOMEM ? WD_ENOMEM : WD_EINVAL;
    return WD_OK;
}

/* Hyperscan 5.4 (Debian's libhs) may load up to 63 bytes past the end of what it is given in its
 * AVX-512 code (the fat Teddy literal matcher; Vectorscan fixed such reads in 5.4.12 and later). Given a
 * text that ends just before an unmapped page, the process would crash, which fuzzing found with text
 * placed at a page end. So no scan ends within HS_OVERREAD bytes of a 4 KiB page boundary: a stream write
 * sends such a tail from a copy on the stack, a block scan scans a copy of the whole text. */
#define HS_OVERREAD 64

static bool tail_at_risk(const char *p, size_t len)
{
    uintptr_t last = (uintptr_t)p + len - 1;
    return len && ((last ^ (last + HS_OVERREAD - 1)) & ~(uintptr_t)4095) != 0;
}

static hs_error_t hs_block(const hs_database_t *hs, wd_guard_scratch_t *s, match_ctx_t *m, const char *p,
                           size_t len)
{
    if (tail_at_risk(p, len)) {
        if (s->padcap < len + HS_OVERREAD) {
            char *np = realloc(s->pad, len + HS_OVERREAD);
            if (!np) return HS_NOMEM;
            s->pad = np;
            s->padcap = len + HS_OVERREAD;
        }
        hs_error_t hr = hs_scan(hs, memcpy(s->pad, p, len), (unsigned int)len, 0, s->hs, on_match, m);
        memset(s->pad, 0, len); /* it held the caller's text */
        return hr;
    }
    return hs_scan(hs, p, (unsigned int)len, 0, s->hs, on_match, m);
}

static hs_error_t hs_write(hs_stream_t *hst, wd_guard_scratch_t *s, match_ctx_t *m, const char *p, size_t len)
{
    size_t head = tail_at_risk(p, len) ? (len > HS_OVERREAD ? len - HS_OVERREAD : 0) : len;
    hs_error_t hr = head ? hs_scan_stream(hst, p, (unsigned int)head, 0, s->hs, on_match, m) : HS_SUCCESS;
    if (hr == HS_SUCCESS && head < len) {
        char tail[2 * HS_OVERREAD];
        memcpy(tail, p + head, len - head);
        hr = hs_scan_stream(hst, tail, (unsigned int)(len - head), 0, s->hs, on_match, m);
        memset(tail, 0, sizeof tail);
    }
    return hr;
}

static int run_block(const hs_database_t *hs, wd_guard_scratch_t *s, match_ctx_t *m, const char *text,
                     size_t len)
{
    m->scan_base = 0;
    return scan_result(m->err, hs_block(hs, s, m, text, len));
}

static int run_db(hs_stream_t *hst, wd_guard_scratch_t *s, match_ctx_t *m, const char *buf, uint64_t babs,
                  size_t from, size_t to)
{
    if (to <= from) return WD_OK;
    if (to - from > UINT32_MAX) return WD_E2BIG;
    m->scan_base = babs + from;
    hs_error_t hr = hs_write(hst, s, m, buf + from, to - from);
    if (hr == HS_SUCCESS) hr = hs_reset_stream(hst, 0, s->hs, on_match, m);
    else hs_reset_stream(hst, 0, s->hs, NULL, NULL); /* stopped mid-write: discard the rest */
    return scan_result(m->err, hr);
}

/* ---------------------------------------------------------------------------------------------- */
/* Gated rules in block scans
 *
 * A rule with context_required only yields findings within reach of one of its context words: a
 * candidate [s, e) is kept only if a word lies wholly inside [s - CTX_BEFORE, s) or [e, e +
 * CTX_AFTER). Scanning the whole text for such rules costs as much as for any other (their patterns
 * are mostly bare digit groups), so the part's database also holds their context words
 * (caseless literals): a block scan notes the regions around the words each gated rule cares about
 * while it scans for the other rules, then runs each gated rule on its regions alone.
 *
 * The candidates are the same as a scan of the whole text would give, among those that can have
 * context: for an occurrence of a word ending at h (a = h - len), those starts s lie in
 * [h - CTX_AFTER - win, a + CTX_BEFORE] (e - s <= win). A region [r0, r1) holds every match that
 * starts at s >= r0 + 1 (the byte before, for \b, is inside) and ends at most win + 1 bytes before
 * r1 (the byte after, likewise), so Hyperscan reports each of its ends there, and the confirmation
 * (PCRE2 on the whole text) gives it the same start. Candidates starting outside that zone may be
 * incomplete (or made up by the region's edges) and are not kept. Regions of one rule that overlap,
 * or nearly touch, are merged; the zone of the union covers those of its parts. A rule that says
 * `gate: trigger` is run around its trigger instead (see "Trigger-gated rules"): its candidates are a
 * whole-text scan's, and filter() drops those without a word. */
#define GATE_GAP 64 /* regions of a rule closer than this are scanned as one */

/* Adds [r0, r1) to the regions of gated entry gi: merged with its latest one when they overlap or
 * nearly touch. */
static int add_region(match_ctx_t *m, uint32_t gi, uint64_t r0, uint64_t r1)
{
    wd_guard_scratch_t *s = m->s;
    int32_t li = s->glast[gi];
    if (li >= 0 && r0 <= s->reg[li].r1 + GATE_GAP && r1 + GATE_GAP >= s->reg[li].r0) {
        s->reg[li].r0 = WD_MIN(s->reg[li].r0, r0);
        s->reg[li].r1 = WD_MAX(s->reg[li].r1, r1);
        return 0;
    }
    if (s->nreg == s->capreg) {
        size_t cap = s->capreg ? s->capreg * 2 : 64;
        region_t *v = realloc(s->reg, cap * sizeof *v);
        if (!v) {
            m->err = WD_ENOMEM;
            return 1;
        }
        s->reg = v;
        s->capreg = cap;
    }
    s->reg[s->nreg] = (region_t){.r0 = r0, .r1 = r1, .g = gi};
    s->glast[gi] = (int32_t)s->nreg++;
    return 0;
}

/* An occurrence of context word w ending at h, reported by the part's database: the regions of the
 * gated rules that list it. */
static int add_regions(match_ctx_t *m, uint32_t w, uint64_t h)
{
    const wd_guard_db_t *db = m->db;
    const ctxword_t *cw = &db->words[w];
    uint64_t a = h - cw->len;
    int before = a > 0 ? (unsigned char)m->buf[a - 1] : -1,
        after = h < m->len ? (unsigned char)m->buf[h] : -1;
    if (glued(before, (unsigned char)m->buf[a], (unsigned char)m->buf[h - 1], after)) return 0;
    for (uint32_t k = 0; k < cw->n; k++) {
        uint32_t gi = db->wslots[cw->first + k];
        uint64_t win = db->gated[gi].win;
        uint64_t r0 = h > CTX_AFTER + 1 + win ? h - CTX_AFTER - 1 - win : 0;
        uint64_t r1 = WD_MIN(a + CTX_BEFORE + 1 + win, (uint64_t)m->len);
        if (add_region(m, gi, r0, r1)) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Trigger-gated rules in block scans
 *
 * Most of what a privacy scan looks for is digits (phone, card, account and record numbers), and a
 * Hyperscan database holding such rules, which have no literal to look for first, runs its automata
 * over every byte of the text. A rule whose every match holds a byte of a rare kind (its trigger,
 * proved from the pattern by guard/pattern.h: a digit; or one byte, such as the space between two
 * capitalised words, between bytes of given kinds) is compiled apart, with the part's other rules of
 * the same trigger, and a block scan runs that database only on the regions around the trigger's
 * occurrences, found by a vector loop. Streams scan these rules like any other.
 *
 * A match holds only bytes of its rule's span (wd_pattern_bytes, less the trigger byte when it occurs
 * once), so the match around an occurrence at i lies in the run of span bytes around i, and, being
 * at most win bytes long, in [i - win + 1, i + win). The region is that run with the byte on each side
 * (for \b), within [i - win, i + win + 1); none when the run is shorter than the group's shortest
 * match, when no byte of it up to i can start one (guard/pattern.h, wd_pattern_first), or when it
 * holds fewer digits, capitals, dots (and so on: NCLS kinds) than every match of some rule of the
 * group does (wd_pattern_count; a year in prose has 4 digits, a phone number at least 6). Every
 * candidate a scan of the whole text gives (confirmed by PCRE2, at most win bytes) holds an
 * occurrence, so it lies in one region with the bytes around it, and the scan of that region reports
 * it with the same start (PCRE2 confirms on the whole text) and the same longest end (a longer match
 * from the same start would hold an occurrence too, whose region overlaps, so the regions were
 * merged). Conversely, whatever Hyperscan reports in a region is a match
 * of the pattern, so it holds an occurrence whose region, merged into this one, holds it and the bytes
 * around it: the region's edges cannot make up a match, and no zone is needed.
 *
 * Starts. A rule of a pivot trigger (a name: "Ada Lovelace") is reported at every letter of its last
 * word, each report a PCRE2 confirmation; its group's database reports the leftmost start instead
 * (HS_FLAG_SOM_LEFTMOST, rt.som), which is the confirmation's whenever the match is at most win bytes
 * long: every start the confirmation could find (a match ending there, within win bytes) lies, with
 * the bytes around it, in the region, so Hyperscan sees it; and the leftmost start Hyperscan reports,
 * for a match within win bytes, is a match of the whole text (as above) that starts after the run's
 * first byte, where the confirmation begins. A longer match is confirmed as before. Digit rules are not
 * given starts: on PII-dense text Hyperscan's start tracking costs more than the confirmations. */

/* Whether position i holds an occurrence of the trigger. */
static bool occurs(const trigger_t *tr, const unsigned char *t, size_t i, size_t len)
{
    return (unsigned char)(t[i] - tr->lo) <= (unsigned char)(tr->hi - tr->lo) &&
           (!tr->need_before || (i > 0 && wd_byte_in(tr->before, t[i - 1]))) &&
           (!tr->need_after || (i + 1 < len && wd_byte_in(tr->after, t[i + 1])));
}

#define VIN(x, lo, w) ((v16_t)((v16_t)((x) - (lo)) <= (w)))

static unsigned movemask(v16_t m)
{
#ifdef __SSE2__
    return (unsigned)_mm_movemask_epi8((__m128i)m);
#else
    unsigned char b[16];
    memcpy(b, &m, sizeof b);
    unsigned bits = 0;
    for (unsigned k = 0; k < 16; k++) /* one bit per lane */
        bits |= (unsigned)(b[k] & 1) << k;
    return bits;
#endif
}

/* The trigger loop looks at the text in blocks of 64 bytes, up to BLOCKS of them at a time: per trigger
 * k, bit j of bits[k][b]: byte j of block b may hold an occurrence (its neighbours checked against vb
 * and va); bit b of any[k]: bits[k][b] is not 0. A block is looked at with the byte before and after
 * it, so the text's first and last blocks are looked at in a copy (edge_bits). The portable loop, and
 * one with AVX-512 (BW) when the CPU has it. */
#define BLOCKS 64

typedef struct {
    uint64_t bits[MAX_TRIGGERS][BLOCKS];
    uint64_t any[MAX_TRIGGERS];
} masks_t;

/* The whole blocks from i on that have a byte after them (t[i - 1] exists), at most BLOCKS; how many. */
static size_t nblocks(size_t i, size_t len)
{
    return i + 65 > len ? 0 : WD_MIN((len - i - 1) / 64, (size_t)BLOCKS);
}

static size_t scan_blocks(const vtrig_t *v, uint32_t n, const unsigned char *t, size_t i, size_t len,
                          masks_t *mk)
{
    size_t nb = nblocks(i, len);
    for (uint32_t k = 0; k < n; k++) {
        mk->any[k] = 0;
        for (size_t b = 0; b < nb; b++) {
            uint64_t bits = 0;
            for (unsigned q = 0; q < 64; q += 16) {
                const unsigned char *p = t + i + 64 * b + q;
                v16_t x, m;
                memcpy(&x, p, 16);
                m = VIN(x, v[k].lo, v[k].w);
                if (v[k].nb) {
                    memcpy(&x, p - 1, 16);
                    m &= VIN(x, v[k].blo[0], v[k].bw[0]) | VIN(x, v[k].blo[1], v[k].bw[1]);
                }
                if (v[k].na) {
                    memcpy(&x, p + 1, 16);
                    m &= VIN(x, v[k].alo[0], v[k].aw[0]) | VIN(x, v[k].alo[1], v[k].aw[1]);
                }
                bits |= (uint64_t)movemask(m) << q;
            }
            mk->bits[k][b] = bits;
            mk->any[k] |= (uint64_t)(bits != 0) << b;
        }
    }
    return nb;
}

/* The shifts long_runs makes for runs of l (2..64) bits: 1, 2, 4 ... while they double up to l, then
 * what is left; 0 (no change) after that. */
static void run_shifts(unsigned l, uint8_t sh[6])
{
    unsigned s = 1, q = 0;
    for (; 2 * s <= l; s *= 2)
        sh[q++] = (uint8_t)s;
    if (s < l) sh[q++] = (uint8_t)(l - s);
    while (q < 6)
        sh[q++] = 0;
}

/* The bits of sp in a run of at least l set bits (sh: run_shifts(l)), or in its first or last run. */
static inline uint64_t long_runs(uint64_t sp, const uint8_t sh[6])
{
    uint64_t a = sp, c; /* a: bit p if bits p .. p + l - 1 are set */
    for (unsigned q = 0; q < 6; q++)
        a &= a >> sh[q];
    c = a; /* bit j if a has a bit in j - l + 1 .. j */
    for (unsigned q = 0; q < 6; q++)
        c |= c << sh[q];
    uint64_t first = sp & ((sp + 1) ^ sp) & -(sp & 1);
    uint64_t last = (~UINT64_C(0) << (63 - __builtin_clzll(~sp | 1)) << 1) & -(sp >> 63); /* bit 0: first's */
    return c | first | last;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512 1
static atomic_uint guard_simd = 2; /* wd_guard_simd */
#define VIN64(p, lo, w) _mm512_cmple_epu8_mask(_mm512_sub_epi8(_mm512_loadu_si512(p), (lo)), (w))
#define SPLAT64(x) _mm512_broadcast_i32x4((__m128i)(x))
__attribute__((target("avx512bw,bmi2"))) static size_t
scan_blocks_avx512(const vtrig_t *v, uint32_t n, const unsigned char *t, size_t i, size_t len, masks_t *mk)
{
    size_t nb = nblocks(i, len);
    for (uint32_t k = 0; k < n; k++) {
        uint64_t any = 0;
        __m512i lo = SPLAT64(v[k].lo), w = SPLAT64(v[k].w), bl0 = SPLAT64(v[k].blo[0]),
                bw0 = SPLAT64(v[k].bw[0]), bl1 = SPLAT64(v[k].blo[1]), bw1 = SPLAT64(v[k].bw[1]),
                al0 = SPLAT64(v[k].alo[0]), aw0 = SPLAT64(v[k].aw[0]), al1 = SPLAT64(v[k].alo[1]),
                aw1 = SPLAT64(v[k].aw[1]);
        bool one = v[k].w[0] == 0, before = v[k].nb, after = v[k].na; /* one: compared as a byte */
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *p = t + i + 64 * b;
            __mmask64 m = ~(__mmask64)0; /* the neighbours first, then the byte itself under their mask */
            if (before) m = _kor_mask64(VIN64(p - 1, bl0, bw0), VIN64(p - 1, bl1, bw1));
            if (after) m = _kand_mask64(m, _kor_mask64(VIN64(p + 1, al0, aw0), VIN64(p + 1, al1, aw1)));
            __m512i x = _mm512_loadu_si512(p);
            m = one ? _mm512_mask_cmpeq_epi8_mask(m, x, lo)
                    : _mm512_mask_cmple_epu8_mask(m, _mm512_sub_epi8(x, lo), w);
            mk->bits[k][b] = m;
        }
        for (size_t b = 0; b < nb; b += 8) { /* which blocks have bits, eight at a time */
            __m512i q = _mm512_maskz_loadu_epi64((__mmask8)(nb - b >= 8 ? 0xff : (1u << (nb - b)) - 1),
                                                 &mk->bits[k][b]);
            any |= (uint64_t)_mm512_test_epi64_mask(q, q) << b;
        }
        mk->any[k] = any;
    }
    return nb;
}

/* The bits of the 64 bytes at p whose entries in a group's tab (tb: its four quarters; ascii: the upper
 * two hold no T_SPAN or T_LEAD) have `bit`, and with lead, those that have T_LEAD: looked up with
 * VBMI's byte permutes. */
__attribute__((target("avx512bw,avx512vbmi,bmi2"))) static inline uint64_t
tab_mask(const __m512i tb[4], bool ascii, const unsigned char *p, uint8_t bit, uint64_t *lead)
{
    __m512i x = _mm512_loadu_si512(p);
    __mmask64 hi = _mm512_movepi8_mask(x);
    __m512i c = ascii ? _mm512_maskz_permutex2var_epi8(~hi, tb[0], x, tb[1])
                      : _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(tb[0], x, tb[1]),
                                               _mm512_permutex2var_epi8(tb[2], x, tb[3]));
    if (lead) *lead = _mm512_test_epi8_mask(c, _mm512_set1_epi8((char)T_LEAD));
    return _mm512_test_epi8_mask(c, _mm512_set1_epi8((char)bit));
}

/* What trigger_region would find out one occurrence at a time, with a walk, checked for 64 at a time
 * where it is cheap to: the bits of occurrences that cannot hold a match are cleared. Runs of span bytes
 * that reach past the block's first or last byte are assumed to pass (trigger_region decides).
 * - lead_before (a name: its trigger, the space between two words, never starts a match; an e-mail
 *   address's @): an occurrence at j needs a byte a match can start with in the run of span bytes that
 *   ends at j - 1 ("in Paris" has none: "in" is no capitalised word).
 * - runmin (a Bitcoin address: 26 bytes or more; the digit rules: 7): the run of span bytes around an
 *   occurrence must be that long (" 1990s " is not).
 * For the blocks of mk from i on (t[i - 1] exists) whose bits are not 0. */
__attribute__((target("avx512bw,avx512vbmi,bmi2"))) static void
vbmi_filter(const gated_t *g0, uint32_t n, const unsigned char *t, size_t i, masks_t *mk)
{
    for (uint32_t k = 0; k < n; k++) {
        const gated_t *g = &g0[k];
        if (!g->lead_before && !g->runmin) continue;
        __m512i tb[4];
        for (unsigned q = 0; q < 4; q++)
            tb[q] = _mm512_loadu_si512(g->tab + 64 * q);
        bool ascii = g->ascii, lead_before = g->lead_before, runs = g->runmin != 0;
        uint8_t sh[6]; /* copied: the stores to mk may alias g */
        memcpy(sh, g->runsh, sizeof sh);
        uint64_t any = mk->any[k];
        for (uint64_t z = any; z; z &= z - 1) {
            size_t b = (size_t)__builtin_ctzll(z);
            const unsigned char *p = t + i + 64 * b;
            uint64_t keep = ~UINT64_C(0);
            if (lead_before) { /* bit j: the byte before position j */
                uint64_t ld, sp = tab_mask(tb, ascii, p - 1, T_SPAN, &ld), nl = sp & ~ld;
                uint64_t starts = sp & ~(sp << 1) & ~UINT64_C(1) & nl; /* runs that start here with no lead */
                keep = sp & ~(nl & ((nl + starts) ^ nl));              /* less their bytes before a lead */
            }
            if (runs) keep &= long_runs(tab_mask(tb, ascii, p, T_SPAN, NULL), sh);
            mk->bits[k][b] &= keep;
            if (!mk->bits[k][b]) any &= ~(UINT64_C(1) << b);
        }
        mk->any[k] = any;
    }
}
#endif

/* The blocks from i on, as scan_blocks; with AVX-512 when wide. */
static size_t block_bits(const vtrig_t *v, uint32_t n, const unsigned char *t, size_t i, size_t len,
                         masks_t *mk, bool wide)
{
#ifdef HAVE_AVX512
    if (wide) return scan_blocks_avx512(v, n, t, i, len, mk);
#endif
    WD_UNUSED(wide);
    return scan_blocks(v, n, t, i, len, mk);
}

void wd_guard_simd(unsigned level)
{
#ifdef HAVE_AVX512
    atomic_store_explicit(&guard_simd, WD_MIN(level, 2u), memory_order_relaxed);
#else
    WD_UNUSED(level);
#endif
}

typedef struct {
    size_t from;   /* its next occurrence is at or after this */
    size_t ka, kb; /* [ka, kb): span bytes already walked */
} walk_t;

/* Whether a run with (cnt >> 8 * k) & 0xff bytes of kind k may hold a match of some rule of group g. */
static bool enough(const gated_t *g, uint64_t cnt)
{
    for (unsigned r = 0; r < g->nneed; r++) {
        unsigned k = 0;
        while (k < NCLS && ((cnt >> 8 * k) & 0xff) >= g->need[r][k])
            k++;
        if (k == NCLS) return true;
    }
    return false;
}

/* The region of trigger group gi around its occurrence at i. */
static int trigger_region(match_ctx_t *m, uint32_t gi, walk_t *w, size_t i)
{
    const gated_t *g = &m->db->gated[gi];
    const unsigned char *t = (const unsigned char *)m->buf;
    size_t len = m->len, lo = i > g->win ? i - g->win : 0, hi = WD_MIN(i + g->win + 1, len), a = i, b = i + 1;
    unsigned x = g->tab[t[i]];
    /* byte k of cnt: the bytes of kind k in [a, b), when whole and b - a < 256 (no byte overflows;
     * in a register, not an array, which would make each count wait for the last) */
#define ONE(x) (UINT64_C(1) << 8 * ((x)&T_CLS))
    uint64_t cnt = ONE(x);
    bool whole = true;
    bool lead = x & T_LEAD;        /* a byte in [a, i] a match can start with */
    if (i >= w->ka && i < w->kb) { /* inside the last run: walk on from its ends */
        a = WD_MAX(w->ka, lo);
        b = WD_MAX(w->kb, b);
        lead = true; /* not known: assumed */
        whole = false;
    }
    for (; a > lo && ((x = g->tab[t[a - 1]]) & T_SPAN); a--) {
        lead = lead || (x & T_LEAD);
        cnt += ONE(x);
    }
    if (!lead) { /* no match around i ("in Paris"); the next occurrence is looked at afresh */
        w->from = i + 1;
        return 0;
    }
    for (; b < hi && ((x = g->tab[t[b]]) & T_SPAN); b++)
        cnt += ONE(x);
#undef ONE
    /* A match around i lies in [a, b) and starts in [a, i]: none when that is shorter than the
     * shortest match (" 2014 " for the digit rules), when nothing there can start one ("in Paris" for
     * two capitalised words), or when it holds fewer bytes of some kind than each rule's matches do
     * (a year: 4 digits, where the shipped digit rules need 5 or more, or 2 capitals, or 3 dots). */
    if (b - a >= g->minw && (!whole || b - a > 255 || enough(g, cnt)) &&
        add_region(m, gi, a > lo ? a - 1 : lo, b < hi ? b + 1 : hi))
        return 1;
    if (g->tab[t[i]] & T_SPAN) {
        w->ka = a;
        w->kb = b;
    }
    /* an occurrence before b in the same run, which ended there, has a region inside this one */
    w->from = b < hi && b > i + 1 ? b : i + 1;
    return 0;
}

/* The occurrences in the blocks from i on (mk: candidates, exact or to check), as regions. */
static int block_regions(match_ctx_t *m, const part_t *pt, walk_t *w, size_t i, const masks_t *mk, bool exact)
{
    const gated_t *g = &m->db->gated[pt->tg0];
    const unsigned char *t = (const unsigned char *)m->buf;
    for (uint32_t k = 0; k < pt->ntg; k++)
        for (uint64_t z = mk->any[k]; z; z &= z - 1) {
            size_t col = (size_t)__builtin_ctzll(z), at0 = i + 64 * col;
            for (uint64_t b = mk->bits[k][col]; b; b &= b - 1) {
                if (w[k].from > at0) /* the occurrences before it are inside the last region */
                    b &= w[k].from - at0 >= 64 ? 0 : ~((UINT64_C(1) << (w[k].from - at0)) - 1);
                if (!b) break;
                size_t at = at0 + (size_t)__builtin_ctzll(b);
                if (!(exact && g[k].trig.exact) && !occurs(&g[k].trig, t, at, m->len)) continue;
                if (trigger_region(m, pt->tg0 + k, &w[k], at)) return 1;
            }
        }
    return 0;
}

/* The text's first block or its last (no byte before it; or not whole, or no byte after it), looked at
 * in a copy with the bytes around it (zeros where there are none), as block 0 of mk; bits to check. */
static void edge_bits(const vtrig_t *v, uint32_t n, const unsigned char *t, size_t i, size_t len, masks_t *mk,
                      bool wide)
{
    size_t nb = WD_MIN(len - i, (size_t)64);
    unsigned char pad[66] = {0};
    if (i) pad[0] = t[i - 1];
    memcpy(pad + 1, t + i, nb);
    if (i + nb < len) pad[nb + 1] = t[i + nb];
    block_bits(v, n, pad, 1, sizeof pad, mk, wide);
    for (uint32_t k = 0; k < n; k++) {
        mk->bits[k][0] &= nb < 64 ? (UINT64_C(1) << nb) - 1 : UINT64_MAX;
        mk->any[k] = mk->bits[k][0] != 0;
    }
}

/* The regions of the part's trigger groups in the text, in one pass. */
static int trigger_regions(match_ctx_t *m, const part_t *pt)
{
    const unsigned char *t = (const unsigned char *)m->buf;
    size_t len = m->len, i = 64;
    uint32_t n = pt->ntg; /* at most MAX_TRIGGERS (compile_gated) */
    if (len == 0) return 0;
    walk_t w[MAX_TRIGGERS] = {0};
    masks_t mk;
    const vtrig_t *v = pt->vt;
    bool wide = false;
#ifdef HAVE_AVX512
    unsigned level = atomic_load_explicit(&guard_simd, memory_order_relaxed);
    wide = level >= 1 && __builtin_cpu_supports("avx512bw");
    bool vbmi = level == 2 && wide && __builtin_cpu_supports("avx512vbmi");
#endif
    edge_bits(v, n, t, 0, len, &mk, wide);
    if (block_regions(m, pt, w, 0, &mk, false)) return 1;
    for (size_t nb; (nb = block_bits(v, n, t, i, len, &mk, wide)) > 0; i += 64 * nb) {
#ifdef HAVE_AVX512
        if (vbmi) vbmi_filter(&m->db->gated[pt->tg0], n, t, i, &mk);
#endif
        if (block_regions(m, pt, w, i, &mk, true)) return 1;
    }
    for (; i < len; i += 64) {
        edge_bits(v, n, t, i, len, &mk, wide);
        if (block_regions(m, pt, w, i, &mk, false)) return 1;
    }
    return 0;
}

static void forget_regions(wd_guard_scratch_t *s)
{
    for (size_t i = 0; i < s->nreg; i++)
        s->glast[s->reg[i].g] = -1;
    s->nreg = 0;
}

/* Runs each gated entry on its regions, which the part's scan (context words) and trigger_regions
 * collected. */
static int scan_gated(const wd_guard_db_t *db, wd_guard_scratch_t *s, match_ctx_t *m, const char *text,
                      size_t len)
{
    hs_error_t hr = HS_SUCCESS;
    for (size_t i = 0; i < s->nreg && hr == HS_SUCCESS; i++) {
        const region_t *r = &s->reg[i];
        const gated_t *g = &db->gated[r->g];
        m->scan_base = r->r0;
        if (g->rule != NO_RULE) { /* a trigger group's regions need no zone (see "Trigger-gated rules") */
            m->zlo = r->r0 ? r->r0 + 1 : 0;
            m->zhi = r->r1 == len ? UINT64_MAX : r->r1 - g->win - 1;
        }
        m->som = g->som;
        hr = hs_block(g->hs, s, m, text + r->r0, r->r1 - r->r0);
        m->zlo = 0;
        m->zhi = UINT64_MAX;
        m->som = false;
    }
    return scan_result(m->err, hr);
}

/* ---------------------------------------------------------------------------------------------- */
/* Block scan */

int wd_guard_scan_for(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text, size_t len,
                      float min_score, wd_findings_t *out)
{
    return wd_guard_scan_ranked(db, s, uses, text, len, min_score, NULL, out);
}

int wd_guard_scan_ranked(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text, size_t len,
                         float min_score, const wd_guard_rank_t *rank, wd_findings_t *out)
{
    out->n = 0;
    out->base = 0;
    if (!db || !s || s->db != db || (!text && len) || !db->compiled) return WD_EINVAL;
    if (len > UINT32_MAX) return WD_E2BIG;
    if (len == 0) return WD_OK;
    candset_t *cs = &s->cs;
    cands_clear(cs);
    match_ctx_t m = {.db = db,
                     .s = s,
                     .cs = cs,
                     .buf = text,
                     .base = 0,
                     .zhi = UINT64_MAX,
                     .len = len,
                     .gate = true,
                     .max_cands = max_cands(out)};
    for (size_t i = 0; i < db->nparts; i++) {
        const part_t *pt = &db->parts[i];
        if (!(pt->uses & uses)) continue;
        int rc = !pt->hs              ? WD_OK
                 : STREAMED(pt->uses) ? run_db(s->bst[i], s, &m, text, 0, 0, len)
                                      : run_block(pt->hs, s, &m, text, len);
        if (pt->ntg && trigger_regions(&m, pt)) rc = m.err;
        if (!rc) rc = scan_gated(db, s, &m, text, len);
        forget_regions(s);
        if (rc) return rc;
    }
    sort_dedup(cs);
    size_t n = cs->n;
    cands_clear(cs); /* before finalize compacts v, which would hide rules from the reset */
    view_t t = {.buf = text, .base = 0, .avail = len};
    return finalize(db, &t, cs->v, n, min_score, 0, rank, out);
}

bool wd_guard_plain_name(const char *raw, size_t len)
{
    bool digits = true, lower = true;
    for (size_t i = 0; i < len && (digits || lower); i++) {
        unsigned char c = (unsigned char)raw[i];
        digits = digits && c >= '0' && c <= '9';
        lower = lower && ((c >= 'a' && c <= 'z') || c == '_');
    }
    return lower || (digits && len <= 7);
}

int wd_guard_scan_folded(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text,
                         size_t len, float min_score, const wd_guard_rank_t *rank, wd_findings_t *out)
{
    if (!s || !text || !wd_guard_fold_needed(text, len, WD_FOLD_ALL))
        return wd_guard_scan_ranked(db, s, uses, text, len, min_score, rank, out);
    out->n = 0;
    out->base = 0;
    int rc = wd_guard_fold(text, len, &s->fold, &s->fmap, &s->fmapcap);
    if (!rc) rc = wd_guard_scan_ranked(db, s, uses, s->fold.data, s->fold.len, min_score, rank, out);
    for (size_t i = 0; !rc && i < out->n; i++) {
        wd_finding_t *f = &out->v[i];
        f->end = wd_guard_fold_end(text, &s->fold, s->fmap, f->end);
        f->start = s->fmap[f->start];
    }
    if (s->fold.data) memset(s->fold.data, 0, s->fold.len); /* it held the caller's text */
    return rc;
}

int wd_guard_scan(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len, float min_score,
                  wd_findings_t *out)
{
    return wd_guard_scan_for(db, s, WD_GUARD_ANY, text, len, min_score, out);
}

/* ---------------------------------------------------------------------------------------------- */
/* Scratch */

wd_guard_scratch_t *wd_guard_scratch_new(const wd_guard_db_t *db)
{
    if (!db) return NULL;
    wd_guard_scratch_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->db = db;
    for (size_t i = 0; i < db->nparts; i++) {
        const part_t *pt = &db->parts[i];
        if (pt->hs && (hs_alloc_scratch(pt->hs, &s->hs) != HS_SUCCESS ||
                       (STREAMED(pt->uses) && hs_open_stream(pt->hs, 0, &s->bst[i]) != HS_SUCCESS)))
            goto fail;
        if (pt->ghs && hs_alloc_scratch(pt->ghs, &s->hs) != HS_SUCCESS) goto fail;
    }
    for (size_t i = 0; i < db->ngated; i++)
        if (hs_alloc_scratch(db->gated[i].hs, &s->hs) != HS_SUCCESS) goto fail;
    if (!(s->glast = malloc(WD_MAX(db->ngated, (size_t)1) * sizeof *s->glast))) goto fail;
    for (size_t i = 0; i < db->ngated; i++)
        s->glast[i] = -1;
    if (!(s->md = pcre2_match_data_create(MAX_GROUP + 1, NULL)) ||
        !(s->mctx = pcre2_match_context_create(NULL)))
        goto fail;
    pcre2_set_match_limit(s->mctx, PCRE_MATCH_LIMIT);
    pcre2_set_depth_limit(s->mctx, PCRE_DEPTH_LIMIT);
    /* the default 32 KiB JIT stack is too small for some bounded repeats over 4 KiB windows */
    s->jit = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    if (s->jit) pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
    if (cands_init(&s->cs, db->nrules)) goto fail;
    return s;
fail:
    wd_guard_scratch_free(s);
    return NULL;
}

void wd_guard_scratch_free(wd_guard_scratch_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < MAX_PARTS; i++)
        if (s->bst[i]) hs_close_stream(s->bst[i], NULL, NULL, NULL);
    if (s->hs) hs_free_scratch(s->hs);
    free(s->reg);
    free(s->glast);
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit);
    cands_free(&s->cs);
    wd_buf_free(&s->fold);
    free(s->fmap);
    free(s->pad);
    free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Stream scan */

/* A candidate is final when no later match can overlap it (later ends >= fed - 1, starts >= end -
 * max_win) and its right-hand context (CTX_AFTER bytes + the byte after, for whole words) is in. */
static uint64_t horizon_of(uint32_t max_win) { return (uint64_t)WD_MAX(max_win, (uint32_t)CTX_AFTER + 1) + 2; }

size_t wd_guard_db_holdback(const wd_guard_db_t *db)
{
    return db ? (size_t)(horizon_of(db->max_win) + db->max_win) : 0;
}
size_t wd_guard_db_max_len(const wd_guard_db_t *db) { return db ? db->max_win : 0; }

wd_guard_stream_t *wd_guard_stream_open_for(wd_guard_db_t *db, unsigned uses, float min_score)
{
    if (!db || !db->compiled) return NULL;
    wd_guard_stream_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    if (cands_init(&st->cs, db->nrules)) {
        free(st);
        return NULL;
    }
    st->db = wd_guard_db_ref(db);
    st->uses = uses;
    for (size_t i = 0; i < db->nparts; i++) {
        const part_t *pt = &db->parts[i];
        if (!(pt->uses & uses)) continue;
        if (!STREAMED(pt->uses) || /* its rules are never run on answers: no stream databases */
            (pt->hs && hs_open_stream(pt->hs, 0, &st->hst[i]) != HS_SUCCESS) ||
            (pt->ghs && hs_open_stream(pt->ghs, 0, &st->gst[i]) != HS_SUCCESS)) {
            wd_guard_stream_free(st);
            return NULL;
        }
        st->max_win = WD_MAX(st->max_win, pt->win);
    }
    if (!(st->lr = malloc(WD_MAX(db->nrules, (size_t)1) * sizeof *st->lr)) ||
        !(st->pend = malloc(WD_MAX(db->nrules, (size_t)1) * sizeof *st->pend))) {
        wd_guard_stream_free(st);
        return NULL;
    }
    for (size_t i = 0; i < db->nrules; i++) {
        if (!(db->rt[i].uses & uses)) continue;
        if (db->rt[i].longspan) {
            if (db->ls_first) {
                st->ls_mine |= 1ull << db->rt[i].ls_bit;
                st->ls_slot[db->rt[i].ls_bit] = (int8_t)st->nlr;
            }
            st->lr[st->nlr] = (uint32_t)i;
            st->pend[st->nlr++] = NO_PENDING;
        } else if (db->rt[i].win > st->short_win) {
            st->short_win = db->rt[i].win;
        }
    }
    st->horizon = horizon_of(st->short_win);
    st->holdback = horizon_of(st->max_win) + st->max_win;
    st->min_score = min_score;
    return st;
}

wd_guard_stream_t *wd_guard_stream_open(wd_guard_db_t *db, float min_score)
{
    return wd_guard_stream_open_for(db, WD_GUARD_ANY, min_score);
}

void wd_guard_stream_set_rank(wd_guard_stream_t *st, const wd_guard_rank_t *rank)
{
    if (st) st->rank = rank ? *rank : (wd_guard_rank_t){NULL, NULL};
}

uint64_t wd_guard_stream_offset(const wd_guard_stream_t *st) { return st ? st->fed : 0; }
uint64_t wd_guard_stream_safe_offset(const wd_guard_stream_t *st) { return st ? st->safe : 0; }
uint64_t wd_guard_stream_forced(const wd_guard_stream_t *st) { return st ? st->forced : 0; }

/* Writes the piece just appended to the history (bytes [fed - len, fed)) to every stream of the
 * stream's parts, or ends them (eod). Hyperscan reports a match once nothing that follows can change
 * it, so the ends reported later are at least fed - 1 (a trailing \b waits for the next byte) and
 * every confirmed span lies inside the history kept (see wd_guard_stream_feed). */
static int stream_scan(wd_guard_stream_t *st, wd_guard_scratch_t *s, size_t len, bool eod, wd_findings_t *out)
{
    const wd_guard_db_t *db = st->db;
    match_ctx_t m = {.db = db, .s = s, .cs = &st->cs, .buf = st->hist, .base = st->hbase, .scan_base = 0,
                     .zhi = UINT64_MAX, .max_cands = max_cands(out)};
    for (size_t i = 0; i < 2 * db->nparts; i++) {
        hs_stream_t **hst = i < db->nparts ? &st->hst[i] : &st->gst[i - db->nparts];
        if (!*hst) continue;
        hs_error_t hr;
        if (eod) {
            hr = hs_close_stream(*hst, s->hs, on_match, &m);
            *hst = NULL;
        } else {
            hr = hs_write(*hst, s, &m, st->hist + (st->fed - len - st->hbase), len);
        }
        int rc = scan_result(m.err, hr);
        if (rc) return rc;
    }
    st->taken = eod || st->fed == 0 ? st->fed : st->fed - 1;
    return WD_OK;
}

/* Can a match of longspan rule `rule`, whole or still in progress, start at h[i] (h has n bytes)? A
 * necessary condition only: its first byte, then its literal prefix as far as the text goes. */
static bool may_start_at(const wd_guard_db_t *db, uint32_t rule, const char *h, size_t i, size_t n)
{
    const rule_rt_t *rt = &db->rt[rule];
    bool caseless = db->rules[rule].caseless;
    unsigned char c = (unsigned char)h[i];
    if (!(rt->first[c >> 3] & (1u << (c & 7)))) return false;
    size_t k = WD_MIN((size_t)rt->npre, n - i);
    for (size_t j = 0; j < k; j++) {
        unsigned char a = (unsigned char)h[i + j], b = (unsigned char)rt->pre[j];
        if (a != b && !(caseless && lower(a) == lower(b))) return false;
    }
    return true;
}

/* For each longspan rule: the leftmost byte from which the text so far could still become a match of
 * it (PCRE2 partial matching: the end of the text is reached while the match could go on). A match
 * that ends later starts there or after it. Only what came since the last feed is searched: where no
 * match was in progress at the previous end, one that is now can only have started since. Returns
 * the lowest such offset, or NO_PENDING.
 * A start within the last short_win bytes changes nothing yet (stream_flush holds back that much
 * anyway, and no candidate it could finalize ends there), so such a possible start is kept as the
 * pending one without asking PCRE2; it is asked once the start is older. The pending offset may thus
 * be lower than the exact one, never higher. */
static int track_pending(wd_guard_stream_t *st, wd_guard_scratch_t *s, uint64_t old_fed, uint64_t *lowest)
{
    const wd_guard_db_t *db = st->db;
    size_t n = (size_t)(st->fed - st->hbase);
    uint64_t from[64], lo = NO_PENDING;
    *lowest = NO_PENDING;
    for (size_t j = 0; j < st->nlr; j++) {
        uint64_t f = st->pend[j] != NO_PENDING ? st->pend[j] : old_fed;
        uint32_t win = db->rt[st->lr[j]].win;
        if (st->fed > win && f < st->fed - win) f = st->fed - win; /* spans are at most win */
        st->pend[j] = f;
        if (f < lo) lo = f;
    }
    if (db->ls_first && st->nlr) { /* every rule's first possible start, in one pass */
        for (size_t j = 0; j < st->nlr; j++)
            from[j] = NO_PENDING;
        uint64_t want = st->ls_mine;
        for (uint64_t i = lo; i < st->fed && want; i++) {
            for (uint64_t m = db->ls_first[(unsigned char)st->hist[i - st->hbase]] & want; m; m &= m - 1) {
                int b = __builtin_ctzll(m), j = st->ls_slot[b];
                if (i >= st->pend[j] && may_start_at(db, st->lr[j], st->hist, (size_t)(i - st->hbase), n)) {
                    from[j] = i;
                    want &= ~(1ull << b);
                }
            }
        }
    }
    for (size_t j = 0; j < st->nlr; j++) {
        const rule_rt_t *rt = &db->rt[st->lr[j]];
        uint64_t at = db->ls_first ? from[j] : st->pend[j];
        st->pend[j] = NO_PENDING;
        for (;;) { /* no match can start before the first byte that passes may_start_at */
            while (at < st->fed && !may_start_at(db, st->lr[j], st->hist, (size_t)(at - st->hbase), n))
                at++;
            if (at >= st->fed) break;
            if (st->fed - at <= st->short_win) { /* see above: not worth knowing yet */
                st->pend[j] = at;
                break;
            }
            int rc = pcre2_match(rt->pcode, (PCRE2_SPTR)st->hist, (PCRE2_SIZE)n, (PCRE2_SIZE)(at - st->hbase),
                                 PCRE2_PARTIAL_HARD | (st->hbase ? PCRE2_NOTBOL : 0), s->md, s->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0 && rc != PCRE2_ERROR_PARTIAL) return WD_E2BIG;
            at = st->hbase + pcre2_get_ovector_pointer(s->md)[0];
            if (rc == PCRE2_ERROR_PARTIAL) {
                st->pend[j] = at;
                break;
            }
            at++; /* a whole match (Hyperscan reports it): look for one in progress after it */
        }
        if (st->pend[j] < *lowest) *lowest = st->pend[j];
    }
    return WD_OK;
}

/* Finalizes the pending candidates that can no longer change: whole overlap components that no later
 * match can reach (fed >= their end + horizon), and, so the hold-back stays bounded, those that start
 * more than holdback bytes back even if their component is still open. */
static int stream_flush(wd_guard_stream_t *st, bool eod, uint64_t long_lo, wd_findings_t *out)
{
    const wd_guard_db_t *db = st->db;
    candset_t *cs = &st->cs;
    sort_dedup(cs);
    size_t k = 0;
    if (eod) {
        k = cs->n;
    } else {
        while (k < cs->n) {
            size_t j = k + 1;
            uint64_t maxend = cs->v[k].end;
            while (j < cs->n && cs->v[j].start < maxend) {
                if (cs->v[j].end > maxend) maxend = cs->v[j].end;
                j++;
            }
            if (maxend + st->horizon <= st->fed && long_lo >= maxend) {
                k = j;
                continue;
            }
            size_t k0 = k;
            while (k < j && cs->v[k].start + st->holdback < st->fed)
                k++;
            st->forced += k - k0;
            break;
        }
    }
    out->base = st->hbase;
    view_t t = {.buf = st->hist, .base = st->hbase, .avail = st->fed};
    /* finalize compacts v[0..k) in place, so the per-rule indexes are rebuilt from what remains */
    for (size_t i = 0; i < cs->n; i++)
        cs->last[cs->v[i].rule] = -1;
    int rc = finalize(db, &t, cs->v, k, st->min_score, st->hbase, &st->rank, out);
    if (rc) return rc;
    if (k && k < cs->n) memmove(cs->v, cs->v + k, (cs->n - k) * sizeof *cs->v);
    cs->n -= k;
    for (size_t i = 0; i < cs->n; i++)
        cs->last[cs->v[i].rule] = (int32_t)i;

    /* Later findings start at a pending candidate, where a longspan match is in progress, or within
     * short_win before a later match end; later ends are >= taken. */
    uint64_t safe = st->taken > (uint64_t)st->short_win + 1 ? st->taken - st->short_win - 1 : 0;
    if (cs->n && cs->v[0].start < safe) safe = cs->v[0].start;
    if (long_lo < safe) safe = long_lo;
    if (eod) safe = st->fed;
    if (safe > st->safe) st->safe = safe;
    return WD_OK;
}

int wd_guard_stream_feed(wd_guard_stream_t *st, wd_guard_scratch_t *s, const char *p, size_t len,
                         wd_findings_t *out)
{
    out->n = 0;
    out->base = st ? st->hbase : 0;
    if (!st || !s || s->db != st->db || (!p && len) || st->finished) return WD_EINVAL;
    if (st->failed) return WD_EINVAL;
    if (len > MAX_PIECE) return WD_E2BIG;
    const wd_guard_db_t *db = st->db;
    if (len == 0) return WD_OK;

    size_t hlen = (size_t)(st->fed - st->hbase);
    if (hlen + len > st->hcap) {
        size_t cap = st->hcap ? st->hcap : 4096;
        while (cap < hlen + len)
            cap *= 2;
        char *h = realloc(st->hist, cap);
        if (!h) return WD_ENOMEM;
        st->hist = h;
        st->hcap = cap;
    }
    memcpy(st->hist + hlen, p, len);
    st->fed += len;
    int rc = stream_scan(st, s, len, false, out);
    uint64_t long_lo = NO_PENDING;
    if (!rc) rc = track_pending(st, s, st->fed - len, &long_lo);
    if (rc) {
        st->failed = true;
        return rc;
    }
    if ((rc = stream_flush(st, false, long_lo, out))) {
        st->failed = true;
        return rc;
    }
    /* Keep what later confirmations and context checks may read: from the earliest byte a future
     * finding may start at, the left context and the lookbehind before it. */
    uint64_t keep = st->safe > (uint64_t)CTX_BEFORE + 2 + db->lookbehind
                        ? st->safe - CTX_BEFORE - 2 - db->lookbehind
                        : 0;
    if (keep > st->hbase) {
        size_t drop = (size_t)(keep - st->hbase);
        memmove(st->hist, st->hist + drop, (size_t)(st->fed - keep));
        st->hbase = keep;
    }
    return WD_OK;
}

int wd_guard_stream_finish(wd_guard_stream_t *st, wd_guard_scratch_t *s, wd_findings_t *out)
{
    out->n = 0;
    out->base = st ? st->hbase : 0;
    if (!st || !s || s->db != st->db || st->finished || st->failed) return WD_EINVAL;
    st->finished = true;
    int rc = stream_scan(st, s, 0, true, out);
    if (rc) return rc;
    return stream_flush(st, true, NO_PENDING, out);
}

void wd_guard_stream_free(wd_guard_stream_t *st)
{
    if (!st) return;
    for (size_t i = 0; i < MAX_PARTS; i++) {
        if (st->hst[i]) hs_close_stream(st->hst[i], NULL, NULL, NULL);
        if (st->gst[i]) hs_close_stream(st->gst[i], NULL, NULL, NULL);
    }
    free(st->lr);
    free(st->pend);
    cands_free(&st->cs);
    free(st->hist);
    wd_guard_db_unref(st->db);
    free(st);
}

/* ---------------------------------------------------------------------------------------------- */
/* Database lifetime */

static void rule_free(wd_rule_t *r)
{
    free(r->id);
    free(r->type);
    free(r->cls);
    free(r->pattern);
    for (size_t i = 0; i < r->ncontext; i++)
        free(r->context[i]);
    free(r->context);
    free(r->severity);
    free(r->file);
    free(r->set);
    free(r->set_version);
    free(r->description);
    for (size_t i = 0; i < r->nex_match; i++)
        free(r->ex_match[i]);
    free(r->ex_match);
    for (size_t i = 0; i < r->nex_no_match; i++)
        free(r->ex_no_match[i]);
    free(r->ex_no_match);
}

static void db_free(wd_guard_db_t *db)
{
    if (!db) return;
    for (size_t i = 0; i < db->nrules; i++) {
        rule_free(&db->rules[i]);
        if (db->rt) {
            pcre2_code_free(db->rt[i].code);
            pcre2_code_free(db->rt[i].pcode);
            free(db->rt[i].ctxwords);
        }
    }
    free(db->rules);
    free(db->rt);
    free(db->ls_first);
    for (size_t i = 0; i < db->nparts; i++) {
        hs_free_database(db->parts[i].hs);
        hs_free_database(db->parts[i].ghs);
    }
    for (size_t i = 0; i < db->ngated; i++)
        hs_free_database(db->gated[i].hs);
    free(db->gated);
    free(db->words);
    free(db->wslots);
    free(db->cache_dir);
    free(db);
}

wd_guard_db_t *wd_guard_db_ref(wd_guard_db_t *db)
{
    if (db) atomic_fetch_add_explicit(&db->refs, 1, memory_order_relaxed);
    return db;
}

void wd_guard_db_unref(wd_guard_db_t *db)
{
    if (db && atomic_fetch_sub_explicit(&db->refs, 1, memory_order_acq_rel) == 1) db_free(db);
}

size_t wd_guard_db_nrules(const wd_guard_db_t *db) { return db ? db->nrules : 0; }

const wd_rule_t *wd_guard_db_rule(const wd_guard_db_t *db, size_t i)
{
    return db && i < db->nrules ? &db->rules[i] : NULL;
}

int wd_guard_db_find(const wd_guard_db_t *db, const char *id)
{
    if (!db || !id) return -1;
    for (size_t i = 0; i < db->nrules; i++)
        if (strcmp(db->rules[i].id, id) == 0) return (int)i;
    return -1;
}

bool wd_guard_db_uses_validator(const wd_guard_db_t *db, const char *name)
{
    int v = wd_validator_find(name);
    for (size_t i = 0; db && v >= 0 && i < db->nrules; i++)
        if (db->rules[i].validator == v) return true;
    return false;
}

/* ---------------------------------------------------------------------------------------------- */
/* Loading: YAML -> rules */

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
    wd_rule_t *rules;
    size_t n, cap;
    const wd_ynode_t **pattern_nodes; /* per rule, for compile errors; valid while its tree lives */
    unsigned *pattern_line, *pattern_col;
    const char *set_version; /* the current file's, NULL when it has none */
} load_t;

__attribute__((format(printf, 4, 5))) static int fail_at(load_t *L, unsigned line, unsigned col, const char *fmt,
                                                         ...)
{
    if (!L->err || !L->errlen) return WD_EINVAL;
    int n = snprintf(L->err, L->errlen, "%s:%u:%u: ", L->file, line, col);
    if (n >= 0 && (size_t)n < L->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err + n, L->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return WD_EINVAL;
}

#define FAIL(L, node, ...) fail_at((L), (node)->line, (node)->col, __VA_ARGS__)
#define SHOWN_MAX 64
#define SHOW(n) (int)WD_MIN((n)->len, (size_t)SHOWN_MAX), (n)->s, ((n)->len > SHOWN_MAX ? "..." : "")

static int want_scalar(load_t *L, const wd_ynode_t *n, const char *key)
{
    if (n->kind != WD_YNODE_SCALAR) return FAIL(L, n, "%s: expected a scalar, got %s", key, wd_ynode_kind_name(n));
    if (wd_ynode_is_null(n) || n->len == 0) return FAIL(L, n, "%s: expected a value", key);
    return WD_OK;
}

/* name: one of the character classes ("a-z0-9._-" style: lower, upper, digit, and the listed punct) */
static int want_name(load_t *L, const wd_ynode_t *n, const char *key, bool lower_ok, bool upper_ok,
                     const char *punct, const char *shape, char **dst)
{
    int rc = want_scalar(L, n, key);
    if (rc) return rc;
    if (n->len > MAX_NAME) return FAIL(L, n, "%s: longer than %d characters", key, MAX_NAME);
    for (size_t i = 0; i < n->len; i++) {
        char c = n->s[i];
        bool ok = (c >= '0' && c <= '9') || (lower_ok && c >= 'a' && c <= 'z') || (upper_ok && c >= 'A' && c <= 'Z') ||
                  (c && strchr(punct, c));
        if (!ok) return FAIL(L, n, "%s '%.*s%s' must match %s", key, SHOW(n), shape);
    }
    if (!(*dst = strdup(n->s))) return FAIL(L, n, "out of memory");
    return WD_OK;
}

static int want_bool(load_t *L, const wd_ynode_t *n, const char *key, bool *dst)
{
    if (n->kind == WD_YNODE_SCALAR && n->plain) {
        if (strcmp(n->s, "true") == 0) return *dst = true, WD_OK;
        if (strcmp(n->s, "false") == 0) return *dst = false, WD_OK;
    }
    return FAIL(L, n, "%s: expected true or false", key);
}

static int want_number(load_t *L, const wd_ynode_t *n, const char *key, double lo, double hi, bool integer,
                       double *dst)
{
    if (n->kind != WD_YNODE_SCALAR || !n->plain || n->len == 0 || n->len > 32)
        return FAIL(L, n, "%s: expected a number", key);
    char *end = NULL;
    errno = 0;
    double v = strtod(n->s, &end);
    if (errno || end != n->s + n->len || !isfinite(v) || (integer && v != floor(v)) ||
        (n->s[0] != '-' && (n->s[0] < '0' || n->s[0] > '9') && n->s[0] != '.'))
        return FAIL(L, n, "%s: expected %s, got '%.*s%s'", key, integer ? "an integer" : "a number", SHOW(n));
    if (v < lo || v > hi)
        return FAIL(L, n, integer ? "%s: %.0f is out of range (%.0f..%.0f)" : "%s: %g is out of range (%g..%g)", key, v,
                    lo, hi);
    *dst = v;
    return WD_OK;
}

static int want_context(load_t *L, const wd_ynode_t *n, wd_rule_t *r)
{
    if (n->kind != WD_YNODE_SEQ) return FAIL(L, n, "context: expected a list of words, got %s", wd_ynode_kind_name(n));
    if (n->n > MAX_WORDS) return FAIL(L, n, "context: more than %d words", MAX_WORDS);
    if (!n->n) return WD_OK;
    if (!(r->context = calloc(n->n, sizeof *r->context))) return FAIL(L, n, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        const wd_ynode_t *w = n->items[i];
        int rc = want_scalar(L, w, "context");
        if (rc) return rc;
        if (w->len > MAX_WORD) return FAIL(L, w, "context: word longer than %d bytes", MAX_WORD);
        for (size_t k = 0; k < w->len; k++) {
            unsigned char c = (unsigned char)w->s[k];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c && strchr(" ._-#/:'", c))))
                return FAIL(L, w, "context word '%.*s%s' must be lower-case ASCII ([a-z0-9 ._-#/:'])", SHOW(w));
        }
        if (w->s[0] == ' ' || w->s[w->len - 1] == ' ') return FAIL(L, w, "context word has surrounding spaces");
        if (!(r->context[r->ncontext] = strdup(w->s))) return FAIL(L, w, "out of memory");
        r->ncontext++;
    }
    return WD_OK;
}

static const char *const rule_keys[] = {
    "id",    "type",    "class",    "pattern",  "caseless",    "validator", "context", "context_required",
    "score", "max_len", "severity", "boundary", "description", "examples",  "group",   "gate"};

static int key_index(const wd_ynode_t *k, const char *const *keys, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++)
        if (strlen(keys[i]) == k->len && memcmp(keys[i], k->s, k->len) == 0) return (int)i;
    return -1;
}

/* Checks the keys of a mapping against a table: every key known, none twice. vals[i] = value node. */
static int map_keys(load_t *L, const wd_ynode_t *map, const char *what, const char *const *keys, size_t nkeys,
                    const wd_ynode_t **vals)
{
    const wd_ynode_t *kn[32] = {0};
    if (nkeys > WD_ARRAY_LEN(kn)) return FAIL(L, map, "internal error: %zu keys for %s", nkeys, what);
    for (size_t i = 0; i < nkeys; i++)
        vals[i] = NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const wd_ynode_t *k = map->items[i];
        if (k->kind != WD_YNODE_SCALAR) return FAIL(L, k, "keys must be plain strings, got %s", wd_ynode_kind_name(k));
        int idx = key_index(k, keys, nkeys);
        if (idx < 0) {
            char allowed[256] = "";
            for (size_t j = 0; j < nkeys; j++) {
                size_t used = strlen(allowed);
                snprintf(allowed + used, sizeof allowed - used, "%s%s", j ? ", " : "", keys[j]);
            }
            return FAIL(L, k, "unknown key '%.*s%s' in %s; allowed keys: %s", SHOW(k), what, allowed);
        }
        if (vals[idx]) return FAIL(L, k, "duplicate key '%s' in %s (first at %u:%u)", keys[idx], what, kn[idx]->line,
                                   kn[idx]->col);
        vals[idx] = map->items[i + 1];
        kn[idx] = k;
    }
    return WD_OK;
}

/* "rules/safety_violence.yaml" -> "safety_violence": what decisions name next to the set's version.
 * Decisions go into headers and events, so a file name's other characters become '_'. */
static char *set_name(const char *file)
{
    const char *b = strrchr(file, '/');
    b = b ? b + 1 : file;
    size_t l = strlen(b);
    if (l > 5 && !strcmp(b + l - 5, ".yaml")) l -= 5;
    if (l > MAX_NAME) l = MAX_NAME;
    char *s = strndup(b, l);
    for (size_t i = 0; s && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!wd_is_alnum(c) && c != '_' && c != '-' && c != '.') s[i] = '_';
    }
    return s;
}

/* set_version: MAJOR.MINOR.PATCH, decimal without leading zeros (semver's core, no pre-release or
 * build suffix), so versions compare as numbers and a typo cannot pass as a version. */
static int want_set_version(load_t *L, const wd_ynode_t *n)
{
    int rc = want_scalar(L, n, "set_version");
    if (rc) return rc;
    const char *s = n->s;
    size_t parts = 0, i = 0;
    bool ok = n->len <= 32;
    while (ok && parts < 3) {
        size_t d = 0;
        while (i < n->len && s[i] >= '0' && s[i] <= '9') i++, d++;
        ok = d >= 1 && d <= 9 && !(d > 1 && s[i - d] == '0');
        parts++;
        if (ok && parts < 3) ok = i < n->len && s[i++] == '.';
    }
    if (!ok || i != n->len)
        return FAIL(L, n, "set_version: expected MAJOR.MINOR.PATCH (e.g. \"1.0.0\"), got '%.*s%s'", SHOW(n));
    return WD_OK;
}

/* examples: { match: [...], no_match: [...] }: non-empty strings, checked by the rule-example test */
static int want_strings(load_t *L, const wd_ynode_t *n, const char *key, char ***dst, size_t *cnt)
{
    if (n->kind != WD_YNODE_SEQ)
        return FAIL(L, n, "%s: expected a list of strings, got %s", key, wd_ynode_kind_name(n));
    if (n->n > MAX_EXAMPLES) return FAIL(L, n, "%s: more than %d examples", key, MAX_EXAMPLES);
    if (!n->n) return WD_OK;
    if (!(*dst = calloc(n->n, sizeof **dst))) return FAIL(L, n, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        const wd_ynode_t *e = n->items[i];
        int rc = want_scalar(L, e, key);
        if (rc) return rc;
        if (e->len > MAX_SPAN) return FAIL(L, e, "%s: example longer than %d bytes", key, MAX_SPAN);
        if (memchr(e->s, '\0', e->len)) return FAIL(L, e, "%s: example contains a NUL byte", key);
        if (!((*dst)[*cnt] = strndup(e->s, e->len))) return FAIL(L, e, "out of memory");
        (*cnt)++;
    }
    return WD_OK;
}

static int want_examples(load_t *L, const wd_ynode_t *n, wd_rule_t *r)
{
    static const char *const keys[] = {"match", "no_match"};
    const wd_ynode_t *v[2];
    if (n->kind != WD_YNODE_MAP)
        return FAIL(L, n, "examples: expected a mapping with match and no_match, got %s",
                    wd_ynode_kind_name(n));
    int rc = map_keys(L, n, "examples", keys, 2, v);
    if (rc) return rc;
    if (!v[0] && !v[1]) return FAIL(L, n, "examples: expected match or no_match");
    if (v[0] && (rc = want_strings(L, v[0], "examples.match", &r->ex_match, &r->nex_match))) return rc;
    if (v[1] && (rc = want_strings(L, v[1], "examples.no_match", &r->ex_no_match, &r->nex_no_match)))
        return rc;
    return WD_OK;
}

static int parse_rule(load_t *L, const wd_ynode_t *n, wd_rule_t *r, const wd_ynode_t **pat_node)
{
    enum {
        K_ID,
        K_TYPE,
        K_CLASS,
        K_PATTERN,
        K_CASELESS,
        K_VALIDATOR,
        K_CONTEXT,
        K_CTXREQ,
        K_SCORE,
        K_MAXLEN,
        K_SEVERITY,
        K_BOUNDARY,
        K_DESC,
        K_EXAMPLES,
        K_GROUP,
        K_GATE,
        K_N
    };
    _Static_assert(K_N == WD_ARRAY_LEN(rule_keys), "rule key table");
    const wd_ynode_t *v[K_N];
    int rc;

    r->validator = -1;
    r->score = DEFAULT_SCORE;
    r->max_len = DEFAULT_MAX_LEN;
    r->boundary = true;
    r->line = n->line;
    if (!(r->file = strdup(L->file))) return FAIL(L, n, "out of memory");
    if (!(r->set = set_name(L->file))) return FAIL(L, n, "out of memory");
    if (L->set_version && !(r->set_version = strdup(L->set_version))) return FAIL(L, n, "out of memory");
    if (n->kind != WD_YNODE_MAP) return FAIL(L, n, "a rule must be a mapping, got %s", wd_ynode_kind_name(n));
    if ((rc = map_keys(L, n, "a rule", rule_keys, K_N, v))) return rc;
    static const char *const required[] = {"id", "type", "class", "pattern"};
    for (size_t i = 0; i < WD_ARRAY_LEN(required); i++)
        if (!v[i]) {
            const wd_ynode_t *id = v[K_ID];
            if (id && id->kind == WD_YNODE_SCALAR)
                return FAIL(L, n, "rule '%.*s%s': missing required key '%s'", SHOW(id), required[i]);
            return FAIL(L, n, "rule: missing required key '%s'", required[i]);
        }
    if ((rc = want_name(L, v[K_ID], "id", true, false, "._-", "[a-z0-9._-]", &r->id)) ||
        (rc = want_name(L, v[K_TYPE], "type", false, true, "_", "[A-Z0-9_]", &r->type)) ||
        (rc = want_name(L, v[K_CLASS], "class", true, false, "_", "[a-z0-9_]", &r->cls)))
        return rc;

    const wd_ynode_t *p = v[K_PATTERN];
    if ((rc = want_scalar(L, p, "pattern"))) return rc;
    if (p->len > MAX_PATTERN) return FAIL(L, p, "pattern: longer than %d bytes", MAX_PATTERN);
    if (memchr(p->s, '\0', p->len)) return FAIL(L, p, "pattern: contains a NUL byte; write \\x00");
    if (!(r->pattern = strdup(p->s))) return FAIL(L, p, "out of memory");
    *pat_node = p;

    if (v[K_CASELESS] && (rc = want_bool(L, v[K_CASELESS], "caseless", &r->caseless))) return rc;
    if (v[K_CTXREQ] && (rc = want_bool(L, v[K_CTXREQ], "context_required", &r->context_required))) return rc;
    if (v[K_BOUNDARY] && (rc = want_bool(L, v[K_BOUNDARY], "boundary", &r->boundary))) return rc;
    if (v[K_VALIDATOR]) {
        const wd_ynode_t *vn = v[K_VALIDATOR];
        if ((rc = want_scalar(L, vn, "validator"))) return rc;
        r->validator = wd_validator_find(vn->s);
        if (r->validator < 0 || !wd_validator_get(r->validator))
            return FAIL(L, vn, "unknown validator '%.*s%s'", SHOW(vn));
    }
    if (v[K_CONTEXT] && (rc = want_context(L, v[K_CONTEXT], r))) return rc;
    if (r->context_required && !r->ncontext)
        return FAIL(L, v[K_CTXREQ], "context_required: the rule has no context words");
    if (v[K_GATE]) {
        const wd_ynode_t *gn = v[K_GATE];
        if ((rc = want_scalar(L, gn, "gate"))) return rc;
        if (!strcmp(gn->s, "trigger"))
            r->gate_trigger = true;
        else if (strcmp(gn->s, "words") != 0)
            return FAIL(L, gn, "gate: expected 'words' or 'trigger', got '%.*s%s'", SHOW(gn));
        if (!r->context_required)
            return FAIL(L, gn,
                        "gate: only for rules with context_required (the others are not run around words)");
    }
    double d;
    if (v[K_SCORE]) {
        if ((rc = want_number(L, v[K_SCORE], "score", 0, 1, false, &d))) return rc;
        r->score = (float)d;
    }
    if (v[K_MAXLEN]) {
        if ((rc = want_number(L, v[K_MAXLEN], "max_len", 1, MAX_SPAN, true, &d))) return rc;
        r->max_len = (uint32_t)d;
    }
    if (v[K_GROUP]) {
        if ((rc = want_number(L, v[K_GROUP], "group", 1, MAX_GROUP, true, &d))) return rc;
        r->group = (uint8_t)d;
    }
    if (v[K_SEVERITY]) {
        const wd_ynode_t *sv = v[K_SEVERITY];
        if ((rc = want_scalar(L, sv, "severity"))) return rc;
        if (strcmp(sv->s, "low") && strcmp(sv->s, "medium") && strcmp(sv->s, "high"))
            return FAIL(L, sv, "severity: expected low, medium or high, got '%.*s%s'", SHOW(sv));
        if (!(r->severity = strdup(sv->s))) return FAIL(L, sv, "out of memory");
    }
    if (v[K_DESC]) {
        const wd_ynode_t *dn = v[K_DESC];
        if ((rc = want_scalar(L, dn, "description"))) return rc;
        if (dn->len > MAX_DESC) return FAIL(L, dn, "description: longer than %d bytes", MAX_DESC);
        if (!(r->description = strndup(dn->s, dn->len))) return FAIL(L, dn, "out of memory");
    }
    if (v[K_EXAMPLES] && (rc = want_examples(L, v[K_EXAMPLES], r))) return rc;
    return WD_OK;
}

/* The literal that every match of pattern p starts with, as far as a plain reading can tell: after an
 * optional \b, the characters up to the first metacharacter (a character under ?, * or {} is left out;
 * one under + is kept, and ends the literal). Empty when the pattern has a top-level alternation. */
static size_t literal_prefix(const char *p, char *out, size_t cap)
{
    int depth = 0;
    for (const char *q = p; *q; q++) { /* a top-level | makes every alternative a possible start */
        if (*q == '\\' && q[1]) {
            q++;
        } else if (*q == '[') {
            q += q[1] == '^' ? 2 : 1;
            if (*q == ']') q++; /* a ] right after [ or [^ is a member */
            while (*q && *q != ']')
                q += *q == '\\' && q[1] ? 2 : 1;
            if (!*q) return 0;
        } else if (*q == '(') {
            depth++;
        } else if (*q == ')') {
            depth--;
        } else if (*q == '|' && depth == 0) {
            return 0;
        }
    }
    if (p[0] == '\\' && p[1] == 'b') p += 2;
    size_t n = 0;
    while (*p && n < cap) {
        char c;
        if (*p == '\\') {
            if (!p[1] || wd_is_alnum((unsigned char)p[1])) break; /* \d, \x41, \b ...: not a plain literal */
            c = p[1];
            p += 2;
        } else if (strchr("^$.[]|()?*+{}", *p)) {
            break;
        } else {
            c = *p++;
        }
        if (*p == '?' || *p == '*' || *p == '{') break;
        out[n++] = c;
        if (*p == '+') break;
    }
    return n;
}

/* Two ranges that hold every byte of the set (and maybe more): its runs, the closest merged. */
static bool cover2(const uint8_t set[32], ranges2_t *r)
{
    unsigned lo[256], hi[256], n = 0;
    for (unsigned c = 0; c < 256; c++)
        if (wd_byte_in(set, (unsigned char)c)) {
            if (n && hi[n - 1] + 1 == c)
                hi[n - 1] = c;
            else
                lo[n] = hi[n] = c, n++;
        }
    bool exact = n <= 2;
    while (n > 2) { /* merge the two runs with the smallest gap between them */
        unsigned k = 0;
        for (unsigned j = 1; j + 1 < n; j++)
            if (lo[j + 1] - hi[j] < lo[k + 1] - hi[k]) k = j;
        hi[k] = hi[k + 1];
        memmove(lo + k + 1, lo + k + 2, (n - k - 2) * sizeof *lo);
        memmove(hi + k + 1, hi + k + 2, (n - k - 2) * sizeof *hi);
        n--;
    }
    for (unsigned k = 0; k < 2; k++) {
        unsigned j = k < n ? k : 0; /* one run (or none: an empty set, never asked) twice */
        r->lo[k] = (unsigned char)(n ? lo[j] : 0);
        r->w[k] = (unsigned char)(n ? hi[j] - lo[j] : 0);
    }
    return exact;
}

/* A byte that is no letter, digit or space and that every match of r holds twice or more (an IPv6
 * address's colon), or 0. Twice: a run around one such byte in prose ("Note: the") holds it once. */
static unsigned char required_sign(const wd_rule_t *r)
{
    for (unsigned c = '!'; c <= '~'; c++) {
        uint8_t one[32] = {0};
        one[c >> 3] = (uint8_t)(1u << (c & 7));
        if (!wd_is_alnum(c) && wd_pattern_count(r->pattern, r->caseless, one) >= 2) return (unsigned char)c;
    }
    return 0;
}

/* Whether block scans run the rule only around a trigger (see "Trigger-gated rules"), and which: a
 * rule with a literal of three bytes or more is left to Hyperscan, which looks for that first, and one
 * with context_required is run around its context words unless it says `gate: trigger` (a short word
 * inside common words, "tel" in "hotel", costs the combined database more than its digits do).
 * - A digit, when the rule's matches hold few lower-case letters (so the run of its bytes around a
 *   digit ends at the first ordinary word).
 * - Else, for a rule without a literal of two bytes (which Hyperscan looks for cheaply enough):
 *   - when every match starts with one of a few digits (a Bitcoin address: 1 or 3), the range of
 *     those: a trigger of its own, so the letters of its span stay out of the digit rules' runs;
 *   - else a byte that is no letter or digit, between bytes of given kinds (the space between two
 *     capitalised words, an e-mail address's @, the first dot of a dotted token);
 *   - else a sign that every match holds twice or more (an IPv6 address's colon). */
static void choose_trigger(const wd_rule_t *r, rule_rt_t *rt)
{
    uint8_t digits[32] = {0}, bytes[32], first[32];
    for (unsigned c = '0'; c <= '9'; c++)
        digits[c >> 3] |= (uint8_t)(1u << (c & 7));
    size_t lit = wd_pattern_literal(r->pattern, r->caseless);
    if ((r->context_required && !r->gate_trigger) || !wd_pattern_bytes(r->pattern, r->caseless, bytes) ||
        lit >= 3)
        return;
    bool led = wd_pattern_first(r->pattern, r->caseless, first); /* else every byte */
    unsigned lower = 0, d0 = 0, d1 = 0;
    for (unsigned c = 'a'; c <= 'z'; c++)
        lower += wd_byte_in(bytes, (unsigned char)c);
    bool digit_led = led;
    for (unsigned c = 0; c < 256 && digit_led; c++) {
        if (!wd_byte_in(first, (unsigned char)c)) continue;
        digit_led = c >= '0' && c <= '9';
        d0 = d0 ? d0 : c;
        d1 = c;
    }
    unsigned char pivot;
    bool once;
    rt->trig.vb = rt->trig.va = (ranges2_t){.w = {255, 255}};
    rt->trig.exact = true;
    if (lower <= 3 && wd_pattern_requires(r->pattern, r->caseless, digits)) {
        rt->trig.lo = '0';
        rt->trig.hi = '9';
        memcpy(rt->span, bytes, 32);
    } else if (lit >= 2) { /* "0x", "hv": Hyperscan looks for the pair first, cheaply enough */
        return;
    } else if (digit_led && d1 - d0 < 9) {
        rt->trig.lo = (unsigned char)d0;
        rt->trig.hi = (unsigned char)d1;
        memcpy(rt->span, bytes, 32);
    } else if (led &&
               wd_pattern_pivot(r->pattern, r->caseless, &pivot, rt->trig.before, rt->trig.after, &once) &&
               !wd_is_alnum(pivot)) {
        rt->trig.lo = rt->trig.hi = pivot;
        rt->trig.need_before = rt->trig.need_after = true;
        bool eb = cover2(rt->trig.before, &rt->trig.vb), ea = cover2(rt->trig.after, &rt->trig.va);
        rt->trig.exact = eb && ea;
        memcpy(rt->span, bytes, 32);
        if (once) rt->span[pivot >> 3] &= (uint8_t) ~(1u << (pivot & 7)); /* it is in a match once: there */
    } else if ((pivot = required_sign(r)) != 0) {
        rt->trig.lo = rt->trig.hi = pivot;
        memcpy(rt->span, bytes, 32);
    } else {
        return;
    }
    memcpy(rt->lead, first, 32);
    rt->tgate = true;
}

/* Per-rule compile checks (each error names the rule's pattern), then the widths that decide how a
 * match is confirmed. */
static int compile_rule(load_t *L, wd_rule_t *r, rule_rt_t *rt, unsigned line, unsigned col)
{
    unsigned flags = r->caseless ? HS_FLAG_CASELESS : 0;
    hs_expr_info_t *info = NULL;
    hs_compile_error_t *herr = NULL;
    if (hs_expression_info(r->pattern, flags, &info, &herr) != HS_SUCCESS) {
        int rc = fail_at(L, line, col, "rule '%s': pattern rejected by Hyperscan: %s", r->id,
                         herr ? herr->message : "unknown error");
        hs_free_compile_error(herr);
        return rc;
    }
    unsigned minw = info->min_width, maxw = info->max_width;
    free(info); /* allocated with the default allocator (misc), which is malloc */
    if (minw > r->max_len)
        return fail_at(L, line, col, "rule '%s': the shortest match (%u bytes) is longer than max_len (%u)", r->id, minw,
                       r->max_len);
    rt->win = maxw < r->max_len ? maxw : r->max_len;
    rt->minw = minw;
    rt->fixed = (minw == maxw && !r->group) ? maxw : 0; /* a group's span needs the confirmation */
    rt->group = r->group;
    if (!rt->fixed && wd_pattern_bytes(r->pattern, r->caseless, rt->bytes))
        for (size_t k = 0; k < sizeof rt->bytes && !rt->narrow; k++)
            rt->narrow = rt->bytes[k] != 0xff; /* with every byte possible, there is nothing to skip */

    int ecode;
    PCRE2_SIZE eoff;
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return fail_at(L, line, col, "out of memory");
    /* byte semantics and LF newlines, the same as Hyperscan without HS_FLAG_UTF8 */
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    uint32_t opts = PCRE2_ENDANCHORED | (r->caseless ? PCRE2_CASELESS : 0);
    rt->code = pcre2_compile((PCRE2_SPTR)r->pattern, PCRE2_ZERO_TERMINATED, opts, &ecode, &eoff, cc);
    pcre2_compile_context_free(cc);
    if (!rt->code) {
        char msg[256];
        pcre2_get_error_message(ecode, (PCRE2_UCHAR *)msg, sizeof msg);
        return fail_at(L, line, col, "rule '%s': pattern rejected by PCRE2 at offset %zu: %s", r->id, (size_t)eoff,
                       msg);
    }
    uint32_t ngroups = 0;
    pcre2_pattern_info(rt->code, PCRE2_INFO_CAPTURECOUNT, &ngroups);
    if (r->group > ngroups)
        return fail_at(L, line, col, "rule '%s': group %u, but the pattern has %u capture group%s", r->id,
                       (unsigned)r->group, ngroups, ngroups == 1 ? "" : "s");
    rt->longspan = rt->win > SHORT_WIN;
    choose_trigger(r, rt);
    if (r->gate_trigger && !rt->tgate)
        return fail_at(
            L, line, col,
            "rule '%s': gate: trigger, but the pattern has a literal of three bytes or more, or no "
            "trigger can be proved from it (docs/rules.md, Performance)",
            r->id);
    rt->som = rt->tgate && !rt->fixed && !rt->group && rt->trig.need_before;
    if (rt->longspan) {
        pcre2_compile_context *pc = pcre2_compile_context_create(NULL);
        if (pc) pcre2_set_newline(pc, PCRE2_NEWLINE_LF);
        rt->pcode = pc ? pcre2_compile((PCRE2_SPTR)r->pattern, PCRE2_ZERO_TERMINATED, opts & ~PCRE2_ENDANCHORED, &ecode,
                                       &eoff, pc)
                       : NULL;
        pcre2_compile_context_free(pc);
        if (!rt->pcode) return fail_at(L, line, col, "out of memory");
        pcre2_jit_compile(rt->pcode, PCRE2_JIT_PARTIAL_HARD); /* falls back to the interpreter on failure */
        uint32_t ftype = 0, funit = 0;
        const uint8_t *bm = NULL;
        memset(rt->first, 0xff, sizeof rt->first);
        if (pcre2_pattern_info(rt->pcode, PCRE2_INFO_FIRSTCODETYPE, &ftype) == 0 && ftype == 1 &&
            pcre2_pattern_info(rt->pcode, PCRE2_INFO_FIRSTCODEUNIT, &funit) == 0 && funit < 256) {
            memset(rt->first, 0, sizeof rt->first);
            unsigned char c = (unsigned char)funit, o = c >= 'a' && c <= 'z' ? c - 32 : c >= 'A' && c <= 'Z' ? c + 32 : c;
            rt->first[c >> 3] |= (uint8_t)(1u << (c & 7));
            rt->first[o >> 3] |= (uint8_t)(1u << (o & 7)); /* the other case, in case the rule is caseless */
        } else if (pcre2_pattern_info(rt->pcode, PCRE2_INFO_FIRSTBITMAP, &bm) == 0 && bm) {
            memcpy(rt->first, bm, sizeof rt->first);
        }
        rt->npre = (uint8_t)literal_prefix(r->pattern, rt->pre, sizeof rt->pre);
    }
    if (rt->fixed) {
        /* no confirmation needed; the compiled code only proved that PCRE2 agrees on the syntax */
        pcre2_code_free(rt->code);
        rt->code = NULL;
    } else {
        pcre2_jit_compile(rt->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter on failure */
    }
    rt->validate = r->validator >= 0 ? wd_validator_get(r->validator) : NULL;
    if (r->ncontext && !(rt->ctxwords = calloc(PAIR_SLOTS, sizeof *rt->ctxwords)))
        return fail_at(L, line, col, "out of memory");
    for (size_t i = 0; i < r->ncontext; i++) {
        const unsigned char *w = (const unsigned char *)r->context[i];
        rt->ctxlen[i] = (uint8_t)strlen(r->context[i]);
        if (rt->ctxlen[i] >= 2)
            rt->ctxwords[pair_bit(w[0], w[1])] |= 1ull << i;
        else
            for (unsigned b = 0; b < PAIR_SLOTS; b++)
                rt->ctxwords[b] |= 1ull << i;
    }
    return WD_OK;
}

static int load_file(load_t *L, const char *name, const char *buf, size_t len)
{
    static const wd_yaml_opts_t yopts = {.doc = "rule", .empty = "empty rule file", .max_depth = 8};
    wd_ynode_t *root = NULL;
    L->file = name;
    if (len > MAX_FILE_BYTES) return wd_errf(L->err, L->errlen, WD_E2BIG, "%s: file too large", name);
    int rc = wd_yaml_parse(name, buf, len, &yopts, &root, L->err, L->errlen);
    if (rc) return rc;
    static const char *const top_keys[] = {"version", "rules", "set_version"};
    const wd_ynode_t *v[3];
    L->set_version = NULL;
    if (wd_ynode_is_null(root))
        rc = FAIL(L, root, "empty rule file");
    else if (root->kind != WD_YNODE_MAP)
        rc = FAIL(L, root, "the top level must be a mapping with version and rules, got %s", wd_ynode_kind_name(root));
    else if (!(rc = map_keys(L, root, "the top level", top_keys, 3, v))) {
        double ver;
        if (!v[0])
            rc = FAIL(L, root, "missing required key 'version'");
        else if (!v[1])
            rc = FAIL(L, root, "missing required key 'rules'");
        else if ((rc = want_number(L, v[0], "version", 1, 1, true, &ver)))
            ;
        else if (v[2] && (rc = want_set_version(L, v[2])))
            ;
        else if (v[2])
            L->set_version = v[2]->s;
        else if (v[1]->kind != WD_YNODE_SEQ && !wd_ynode_is_null(v[1]))
            rc = FAIL(L, v[1], "rules: expected a list of rules, got %s", wd_ynode_kind_name(v[1]));
    }
    for (size_t i = 0; !rc && v[1]->kind == WD_YNODE_SEQ && i < v[1]->n; i++) {
        const wd_ynode_t *rn = v[1]->items[i];
        if (L->n >= MAX_RULES) {
            rc = FAIL(L, rn, "more than %d rules", MAX_RULES);
            break;
        }
        if (L->n == L->cap) {
            size_t cap = L->cap ? L->cap * 2 : 64;
            wd_rule_t *nr = realloc(L->rules, cap * sizeof *nr);
            unsigned *pl = realloc(L->pattern_line, cap * sizeof *pl);
            if (pl) L->pattern_line = pl;
            unsigned *pc = realloc(L->pattern_col, cap * sizeof *pc);
            if (pc) L->pattern_col = pc;
            if (nr) L->rules = nr;
            if (!nr || !pl || !pc) {
                rc = FAIL(L, rn, "out of memory");
                break;
            }
            L->cap = cap;
        }
        wd_rule_t *r = &L->rules[L->n];
        memset(r, 0, sizeof *r);
        L->n++; /* counted now so a half-parsed rule is freed with the others */
        const wd_ynode_t *pn = NULL;
        if ((rc = parse_rule(L, rn, r, &pn))) break;
        L->pattern_line[L->n - 1] = pn->line;
        L->pattern_col[L->n - 1] = pn->col;
        for (size_t j = 0; j + 1 < L->n; j++)
            if (strcmp(L->rules[j].id, r->id) == 0) {
                const wd_ynode_t *idn = wd_ynode_get(rn, "id");
                rc = FAIL(L, idn, "duplicate rule id '%s' (first defined at %s:%u)", r->id, L->rules[j].file,
                          L->rules[j].line);
                break;
            }
    }
    L->set_version = NULL; /* it pointed into the tree */
    wd_ynode_free(root);
    return rc;
}

/* Block scans run a rule with context_required only around its context words, and a trigger-gated
 * one around its trigger (see scan_gated). */
static bool is_gated(const wd_guard_db_t *db, size_t i) { return db->rules[i].context_required || db->rt[i].tgate; }

/* A context word as a Hyperscan pattern: every byte that is not a letter or digit as \xHH. */
static char *word_pattern(const ctxword_t *cw)
{
    char *p = malloc((size_t)cw->len * 4 + 1), *o = p;
    if (!p) return NULL;
    for (uint32_t i = 0; i < cw->len; i++) {
        unsigned char c = (unsigned char)cw->s[i];
        if (wd_is_alnum(c))
            *o++ = (char)c;
        else
            o += sprintf(o, "\\x%02x", c);
    }
    *o = 0;
    return p;
}

/* Which rules compile_rules takes: those of one part (whose uses are exactly `uses`), gated or not;
 * or one rule; or the rules of a trigger group. */
typedef struct {
    unsigned uses;
    enum { PICK_PLAIN, PICK_GATED, PICK_ONE, PICK_TRIGGER } kind;
    size_t one;              /* PICK_ONE */
    const trigger_t *trig;   /* PICK_TRIGGER: with uses */
    bool som;                /* PICK_TRIGGER: HS_FLAG_SOM_LEFTMOST for the rules with rt.som */
} pick_t;

static bool same_trigger(const trigger_t *a, const trigger_t *b) { return memcmp(a, b, sizeof *a) == 0; }

static bool picked(const wd_guard_db_t *db, const pick_t *p, size_t i)
{
    switch (p->kind) {
    case PICK_ONE: return i == p->one;
    case PICK_PLAIN: return db->rt[i].uses == p->uses && !is_gated(db, i);
    case PICK_GATED: return db->rt[i].uses == p->uses && is_gated(db, i);
    case PICK_TRIGGER: return db->rt[i].uses == p->uses && db->rt[i].tgate && same_trigger(&db->rt[i].trig, p->trig);
    }
    return false;
}

/* Compiles the rules `p` picks, with the context words db->words[w0, w1). Match ids are rule
 * indexes, and nrules + the index of a word. Nothing to compile: *out stays NULL. */
static int compile_rules(wd_guard_db_t *db, const pick_t *p, size_t w0, size_t w1, unsigned mode,
                         hs_database_t **out, uint32_t *win, char *err, size_t errlen)
{
    size_t cap = WD_MAX(db->nrules + (w1 - w0), (size_t)1);
    const char **pats = malloc(cap * sizeof *pats);
    unsigned *flags = malloc(cap * sizeof *flags);
    unsigned *ids = malloc(cap * sizeof *ids);
    char **wpats = calloc(WD_MAX(w1 - w0, (size_t)1), sizeof *wpats);
    int rc = WD_OK;
    if (!pats || !flags || !ids || !wpats) {
        rc = wd_errf(err, errlen, WD_ENOMEM, "out of memory");
        goto done;
    }
    unsigned n = 0;
    for (size_t i = 0; i < db->nrules; i++) {
        if (!picked(db, p, i)) continue;
        pats[n] = db->rules[i].pattern;
        flags[n] = (db->rules[i].caseless ? HS_FLAG_CASELESS : 0) |
                   (p->som && db->rt[i].som ? HS_FLAG_SOM_LEFTMOST : 0);
        ids[n++] = (unsigned)i;
        if (db->rt[i].win > *win) *win = db->rt[i].win;
    }
    for (size_t w = w0; w < w1; w++) {
        if (!(wpats[w - w0] = word_pattern(&db->words[w]))) {
            rc = wd_errf(err, errlen, WD_ENOMEM, "out of memory");
            goto done;
        }
        pats[n] = wpats[w - w0];
        flags[n] = HS_FLAG_CASELESS;
        ids[n++] = (unsigned)(db->nrules + w);
    }
    if (n == 0) goto done;
    hs_compile_error_t *herr = NULL;
    if (wd_hs_cache_compile(&db->cache, pats, flags, ids, n, mode, out, &herr) != HS_SUCCESS) {
        if (herr && herr->expression >= 0 && (unsigned)herr->expression < n &&
            ids[herr->expression] < db->nrules) {
            size_t i = ids[herr->expression];
            rc = wd_errf(err, errlen, WD_EINVAL, "%s:%u:%u: rule '%s': pattern rejected by Hyperscan: %s",
                         db->rules[i].file, db->rt[i].pline, db->rt[i].pcol, db->rules[i].id, herr->message);
        } else {
            rc = wd_errf(err, errlen, WD_EINVAL, "rules: Hyperscan cannot compile the rule set: %s",
                         herr ? herr->message : "unknown error");
        }
        hs_free_compile_error(herr);
    }
done:
    for (size_t w = w0; wpats && w < w1; w++)
        free(wpats[w - w0]);
    free(wpats);
    free(pats);
    free(flags);
    free(ids);
    return rc;
}

int wd_guard_db_set_uses(wd_guard_db_t *db, size_t rule, unsigned uses)
{
    if (!db || db->compiled || rule >= db->nrules || (uses & ~WD_GUARD_ANY)) return WD_EINVAL;
    db->rt[rule].uses = (uint8_t)uses;
    return WD_OK;
}

int wd_guard_db_set_cache(wd_guard_db_t *db, const char *dir)
{
    if (!db || db->compiled) return WD_EINVAL;
    free(db->cache_dir);
    db->cache_dir = NULL;
    if (dir && !(db->cache_dir = strdup(dir))) return WD_ENOMEM;
    return WD_OK;
}

unsigned wd_guard_db_cache_stats(const wd_guard_db_t *db, unsigned *compiled, const char **problem)
{
    *compiled = db->cache.compiled;
    *problem = db->cache.problem[0] ? db->cache.problem : NULL;
    return db->cache.loaded;
}

/* A byte's kind (CL_*), in which trigger runs are counted. */
static unsigned byte_kind(unsigned c)
{
    if (c >= '0' && c <= '9') return CL_DIGIT;
    if (c >= 'A' && c <= 'Z') return CL_UPPER;
    if (c >= 'a' && c <= 'z') return CL_LOWER;
    const char *p = c ? strchr(".-:/", (int)c) : NULL;
    return p ? CL_DOT + (unsigned)(p - ".-:/") : CL_OTHER;
}

/* Adds rule r to trigger group g: its span and lead to g->tab, and how many bytes of each kind its
 * every match holds to g->need (a rule that needs none lets every run pass). */
static void group_add(gated_t *g, const wd_rule_t *r, const rule_rt_t *rt)
{
    for (unsigned c = 0; c < 256; c++)
        g->tab[c] |= (uint8_t)((wd_byte_in(rt->span, (unsigned char)c) ? T_SPAN : 0) |
                               (wd_byte_in(rt->lead, (unsigned char)c) ? T_LEAD : 0));
    uint8_t v[NCLS] = {0};
    for (unsigned k = CL_OTHER + 1; k < NCLS; k++) {
        uint8_t set[32] = {0};
        for (unsigned c = 0; c < 256; c++)
            if (byte_kind(c) == k) set[c >> 3] |= (uint8_t)(1u << (c & 7));
        v[k] = (uint8_t)WD_MIN(wd_pattern_count(r->pattern, r->caseless, set), 255ul);
    }
    for (unsigned n = 0; n < g->nneed; n++)
        if (!memcmp(g->need[n], v, NCLS)) return;
    if (g->nneed < MAX_NEEDS) {
        memcpy(g->need[g->nneed++], v, NCLS);
        return;
    }
    for (unsigned k = 0; k < NCLS; k++) /* no room: the last entry needs what both do (fewer counts) */
        g->need[MAX_NEEDS - 1][k] = WD_MIN(g->need[MAX_NEEDS - 1][k], v[k]);
}

/* The rules of a part with context_required, each in a block-mode database of its own, and their
 * distinct context words (appended to db->words), each pointing at the rules that list it; then the
 * part's trigger groups. db->gated, words and wslots have room for every gated rule and context word. */
static int compile_gated(wd_guard_db_t *db, part_t *pt, char *err, size_t errlen)
{
    size_t g0 = db->ngated, w0 = db->nwords;
    const trigger_t *trigs[MAX_TRIGGERS];
    size_t ntrigs = 0;
    for (size_t i = 0; i < db->nrules;
         i++) { /* the rules of a trigger past MAX_TRIGGERS are not gated by it */
        rule_rt_t *rt = &db->rt[i];
        if (rt->uses != pt->uses || !rt->tgate) continue;
        size_t k = 0;
        while (k < ntrigs && !same_trigger(trigs[k], &rt->trig))
            k++;
        if (k < ntrigs) continue;
        if (ntrigs < MAX_TRIGGERS)
            trigs[ntrigs++] = &rt->trig;
        else
            rt->tgate = rt->som = false; /* scanned with the part's other rules, or around its words */
    }
    for (size_t i = 0; i < db->nrules; i++) {
        const wd_rule_t *r = &db->rules[i];
        if (db->rt[i].uses != pt->uses || !r->context_required || db->rt[i].tgate) continue;
        gated_t *g = &db->gated[db->ngated];
        *g = (gated_t){.rule = (uint32_t)i};
        pick_t one = {.kind = PICK_ONE, .one = i};
        int rc = compile_rules(db, &one, 0, 0, HS_MODE_BLOCK, &g->hs, &g->win, err, errlen);
        if (g->hs) db->ngated++;
        if (rc) return rc;
        for (size_t k = 0; k < r->ncontext; k++) {
            size_t w = w0;
            while (w < db->nwords && strcmp(db->words[w].s, r->context[k]) != 0)
                w++;
            if (w == db->nwords)
                db->words[db->nwords++] = (ctxword_t){.s = r->context[k], .len = db->rt[i].ctxlen[k]};
        }
    }
    size_t nslots = 0;
    for (size_t i = 0; i < w0; i++)
        nslots += db->words[i].n;
    for (size_t w = w0; w < db->nwords; w++) {
        ctxword_t *cw = &db->words[w];
        cw->first = (uint32_t)nslots;
        for (size_t gi = g0; gi < db->ngated; gi++) {
            const wd_rule_t *r = &db->rules[db->gated[gi].rule];
            for (size_t k = 0; k < r->ncontext; k++)
                if (strcmp(r->context[k], cw->s) == 0) {
                    db->wslots[nslots++] = (uint32_t)gi;
                    cw->n++;
                    break;
                }
        }
    }

    pt->tg0 = (uint32_t)db->ngated;
    for (size_t i = 0; i < db->nrules; i++) {
        const rule_rt_t *rt = &db->rt[i];
        if (rt->uses != pt->uses || !rt->tgate) continue;
        size_t gi = pt->tg0;
        while (gi < db->ngated && !same_trigger(&db->gated[gi].trig, &rt->trig))
            gi++;
        if (gi < db->ngated) continue; /* its group is compiled */
        gated_t *g = &db->gated[gi];
        *g = (gated_t){.rule = NO_RULE, .trig = rt->trig, .minw = UINT32_MAX};
        for (unsigned c = 0; c < 256; c++)
            g->tab[c] = (uint8_t)byte_kind(c);
        for (size_t j = i; j < db->nrules; j++)
            if (db->rt[j].uses == pt->uses && db->rt[j].tgate && same_trigger(&db->rt[j].trig, &rt->trig)) {
                group_add(g, &db->rules[j], &db->rt[j]);
                g->minw = WD_MIN(g->minw, db->rt[j].minw);
            }
        pick_t grp = {.uses = pt->uses, .kind = PICK_TRIGGER, .trig = &rt->trig, .som = true};
        int rc = compile_rules(db, &grp, 0, 0, HS_MODE_BLOCK, &g->hs, &g->win, err, errlen);
        g->som = rc == WD_OK;
        if (rc) { /* Hyperscan may refuse starts for a pattern: confirmed by PCRE2 then */
            grp.som = false;
            rc = compile_rules(db, &grp, 0, 0, HS_MODE_BLOCK, &g->hs, &g->win, err, errlen);
        }
        if (g->hs) db->ngated++;
        if (rc) return rc;
        bool in_span = true; /* see vbmi_filter */
        g->lead_before = true;
        for (unsigned c = g->trig.lo; c <= g->trig.hi; c++) {
            g->lead_before = g->lead_before && !(g->tab[c] & T_LEAD);
            in_span = in_span && (g->tab[c] & T_SPAN);
        }
        g->ascii = true;
        for (unsigned c = 0x80; c < 256; c++)
            g->ascii = g->ascii && !(g->tab[c] & (T_SPAN | T_LEAD));
        g->runmin = in_span && g->minw > 1 ? (uint8_t)WD_MIN(g->minw, 64u) : 0;
        if (g->runmin) run_shifts(g->runmin, g->runsh);
    }
    pt->ntg = (uint32_t)(db->ngated - pt->tg0);
    for (uint32_t k = 0; k < pt->ntg; k++)
        vtrig_make(&db->gated[pt->tg0 + k].trig, &pt->vt[k]);
    return WD_OK;
}

int wd_guard_db_compile(wd_guard_db_t *db, char *err, size_t errlen)
{
    if (!db || db->compiled) return wd_errf(err, errlen, WD_EINVAL, "rules: already compiled");
    size_t ngated = 0, nwords = 0;
    for (size_t i = 0; i < db->nrules; i++)
        if (db->rt[i].uses && is_gated(db, i)) {
            ngated++; /* at most one entry (its own, or its trigger group's) per gated rule */
            nwords += db->rules[i].ncontext;
        }
    if (!(db->gated = calloc(WD_MAX(ngated, (size_t)1), sizeof *db->gated)) ||
        !(db->words = calloc(WD_MAX(nwords, (size_t)1), sizeof *db->words)) ||
        !(db->wslots = calloc(WD_MAX(nwords, (size_t)1), sizeof *db->wslots)))
        return wd_errf(err, errlen, WD_ENOMEM, "out of memory");
    wd_hs_cache_open(&db->cache, db->cache_dir);
    int rc = WD_OK;
    for (unsigned uses = 1; uses <= WD_GUARD_ANY && !rc; uses++) {
        part_t pt = {.uses = uses};
        unsigned mode = STREAMED(uses) ? HS_MODE_STREAM : HS_MODE_BLOCK;
        size_t w0 = db->nwords;
        rc = compile_gated(db, &pt, err, errlen);
        pick_t plain = {.uses = uses, .kind = PICK_PLAIN}, gated = {.uses = uses, .kind = PICK_GATED};
        if (!rc) rc = compile_rules(db, &plain, w0, db->nwords, mode, &pt.hs, &pt.win, err, errlen);
        if (!rc && STREAMED(uses))
            rc = compile_rules(db, &gated, 0, 0, HS_MODE_STREAM, &pt.ghs, &pt.win, err, errlen);
        if (pt.hs || pt.ghs || pt.ntg) db->parts[db->nparts++] = pt; /* freed with the db, also on error */
    }
    wd_hs_cache_close(&db->cache);
    db->compiled = !rc;
    return rc;
}

/* With at most 64 longspan rules, one table tells for each byte which of them a match can start with,
 * so a stream looks for their possible starts in one pass (track_pending). */
static int longspan_table(wd_guard_db_t *db)
{
    size_t n = 0;
    for (size_t i = 0; i < db->nrules; i++)
        n += db->rt[i].longspan;
    if (n == 0 || n > 64) return WD_OK;
    if (!(db->ls_first = calloc(256, sizeof *db->ls_first))) return WD_ENOMEM;
    uint8_t bit = 0;
    for (size_t i = 0; i < db->nrules; i++) {
        rule_rt_t *rt = &db->rt[i];
        if (!rt->longspan) continue;
        rt->ls_bit = bit++;
        for (unsigned c = 0; c < 256; c++)
            if (rt->first[c >> 3] & (1u << (c & 7))) db->ls_first[c] |= 1ull << rt->ls_bit;
    }
    return WD_OK;
}

/* Checks and prepares every collected rule (each error names its pattern); nothing is compiled by
 * Hyperscan yet. Takes ownership of L->rules. */
static wd_guard_db_t *build(load_t *L)
{
    wd_guard_db_t *db = calloc(1, sizeof *db);
    if (!db) {
        wd_errf(L->err, L->errlen, WD_ENOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&db->refs, 1);
    db->rules = L->rules;
    db->nrules = L->n;
    L->rules = NULL;
    L->n = 0;
    if (db->nrules && !(db->rt = calloc(db->nrules, sizeof *db->rt))) {
        wd_errf(L->err, L->errlen, WD_ENOMEM, "out of memory");
        db_free(db);
        return NULL;
    }

    uint32_t max_lb = 1; /* our own boundary check reads one byte before a span */
    for (size_t i = 0; i < db->nrules; i++) {
        wd_rule_t *r = &db->rules[i];
        rule_rt_t *rt = &db->rt[i];
        L->file = r->file;
        rt->pline = L->pattern_line[i];
        rt->pcol = L->pattern_col[i];
        rt->uses = WD_GUARD_ANY;
        if (compile_rule(L, r, rt, rt->pline, rt->pcol)) {
            db_free(db);
            return NULL;
        }
        if (rt->win > db->max_win) db->max_win = rt->win;
        if (rt->code) {
            uint32_t lb = 0;
            if (pcre2_pattern_info(rt->code, PCRE2_INFO_MAXLOOKBEHIND, &lb) == 0 && lb > max_lb) max_lb = lb;
        }
    }
    db->lookbehind = max_lb;
    if (longspan_table(db)) {
        wd_errf(L->err, L->errlen, WD_ENOMEM, "out of memory");
        db_free(db);
        return NULL;
    }
    return db;
}

/* Parsing and compiling in one step, every rule serving every purpose. */
static wd_guard_db_t *compiled(wd_guard_db_t *db, char *err, size_t errlen)
{
    if (db && wd_guard_db_compile(db, err, errlen)) {
        db_free(db);
        return NULL;
    }
    return db;
}

static void load_cleanup(load_t *L)
{
    for (size_t i = 0; i < L->n; i++)
        rule_free(&L->rules[i]);
    free(L->rules);
    free(L->pattern_line);
    free(L->pattern_col);
    L->rules = NULL;
    L->n = 0;
}

wd_guard_db_t *wd_guard_db_parse_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    load_t L = {.err = err, .errlen = errlen};
    if (err && errlen) err[0] = '\0';
    if (!yaml && len) {
        wd_errf(err, errlen, WD_EINVAL, "%s: no input", name ? name : "<rules>");
        return NULL;
    }
    wd_guard_db_t *db = NULL;
    if (load_file(&L, name ? name : "<rules>", yaml, len) == WD_OK) db = build(&L);
    load_cleanup(&L);
    return db;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

wd_guard_db_t *wd_guard_db_parse(const char *dir, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!dir) {
        wd_errf(err, errlen, WD_EINVAL, "no rules directory");
        return NULL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        wd_errf(err, errlen, WD_EIO, "%s: cannot open rules directory: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool oom = false, too_many = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0) continue;
        if (n == MAX_FILES) {
            too_many = true;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                oom = true;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            oom = true;
            break;
        }
        n++;
    }
    closedir(d);
    wd_guard_db_t *db = NULL;
    load_t L = {.err = err, .errlen = errlen};
    if (oom)
        wd_errf(err, errlen, WD_ENOMEM, "%s: out of memory", dir);
    else if (too_many)
        wd_errf(err, errlen, WD_E2BIG, "%s: more than %d rule files", dir, MAX_FILES);
    else if (n == 0)
        wd_errf(err, errlen, WD_ENOTFOUND, "%s: no *.yaml rule files", dir);
    else {
        qsort(names, n, sizeof *names, cmp_str);
        int rc = WD_OK;
        for (size_t i = 0; !rc && i < n; i++) {
            char path[4096];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path) {
                rc = wd_errf(err, errlen, WD_E2BIG, "%s/%s: path too long", dir, names[i]);
                break;
            }
            char *buf = NULL;
            size_t len = 0;
            if ((rc = wd_read_file(path, MAX_FILE_BYTES, &buf, &len, err, errlen))) break;
            rc = load_file(&L, path, buf, len);
            free(buf);
        }
        if (!rc) db = build(&L);
    }
    load_cleanup(&L);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return db;
}

wd_guard_db_t *wd_guard_db_load(const char *dir, char *err, size_t errlen)
{
    return compiled(wd_guard_db_parse(dir, err, errlen), err, errlen);
}

wd_guard_db_t *wd_guard_db_load_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    return compiled(wd_guard_db_parse_buf(name, yaml, len, err, errlen), err, errlen);
}

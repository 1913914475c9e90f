/* libFuzzer driver for the guard engine's scan. A fixed small rule set (fixed-width and confirmed
 * patterns, a validator, context words, caseless, boundary: false, overlapping rules, rules reporting a
 * capture group, rules block scans run only around a trigger: digits, an @, a space between words, a
 * dot a match may hold twice, a range of leading digits, a colon every match holds twice) is compiled once;
 * the input is the text, and its first byte picks where to split it for the stream scan. Block findings must
 * be in bounds, sorted, non-overlapping and no longer than their rule allows; the stream scan of the same
 * text in two pieces must find the same spans (unless it had to resolve an overlap chain early, which the API
 * reports). The folded scan (guard/fold.h) must map its findings back into the text in order, and equal the
 * block scan when nothing folds; the fold's map must lead from each folded byte to the same byte or to the
 * lead byte of the character it came from, and a stream folded in three pieces must give the same bytes and
 * map back the same way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guard/fold.h"
#include "guard/guard.h"
#include "fuzz_check.h"

static const char rules[] =
    "version: 1\n"
    "rules:\n"
    "  - id: t.email\n    type: EMAIL\n    class: pii\n    caseless: true\n    score: 0.9\n"
    "    pattern: '[a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}'\n    max_len: 64\n"
    "  - id: t.card\n    type: CREDIT_CARD\n    class: financial\n    validator: luhn\n    score: 0.7\n"
    "    pattern: '\\b\\d{4}[ -]?\\d{4}[ -]?\\d{4}[ -]?\\d{4}\\b'\n    context: [card, visa]\n"
    "  - id: t.num\n    type: NUMBER\n    class: test\n    score: 0.5\n    pattern: '\\d{4,}'\n    max_len: "
    "40\n"
    "  - id: t.ssn\n    type: US_SSN\n    class: pii\n    pattern: '\\b\\d{3}-\\d{2}-\\d{4}\\b'\n"
    "    context: [ssn, social security]\n    context_required: true\n"
    "  - id: t.key\n    type: API_KEY\n    class: secrets\n    pattern: 'sk-[A-Za-z0-9]{8}'\n"
    "  - id: t.word\n    type: TERM\n    class: violence\n    caseless: true\n    boundary: false\n"
    "    pattern: 'b[o0]+mb'\n    max_len: 16\n    severity: high\n"
    "  - id: t.ab\n    type: AB\n    class: test\n    boundary: false\n    score: 0.5\n    pattern: "
    "'a[ab]*b'\n"
    "    max_len: 24\n"
    /* findings that are a capture group: after a cue, and before the end of a long-span match */
    "  - id: t.named\n    type: PERSON\n    class: pii\n    group: 1\n    score: 0.6\n"
    "    pattern: '\\b(?i:name is|said)[ ]{1,3}([A-Z][a-z]+)'\n    max_len: 40\n"
    "  - id: t.tail\n    type: ID\n    class: test\n    group: 2\n    boundary: false\n    score: 0.6\n"
    "    pattern: '(id)=([0-9]+)[a-z ]{0,150};'\n    max_len: 200\n"
    /* trigger-gated in block scans (engine.c): a space between a lower-case letter and a capital; the
     * first of two dots; a 1, 2 or 3; a colon */
    "  - id: t.pair\n    type: PERSON\n    class: pii\n    score: 0.6\n"
    "    pattern: '\\b[A-Z][a-z]+ [A-Z][a-z]{1,20}'\n    max_len: 48\n"
    "  - id: t.dots\n    type: TOKEN\n    class: secrets\n"
    "    pattern: '\\b[MN][a-z0-9]{2,4}\\.[a-z0-9.]{2,3}\\.[a-z]{4}'\n"
    "  - id: t.lead\n    type: WALLET\n    class: financial\n    pattern: '\\b[13][a-km-z1-9]{6,9}\\b'\n"
    "  - id: t.v6\n    type: IP_ADDRESS\n    class: pii\n    pattern: "
    "'(?:[0-9a-f]{1,4}:|::?)(?:[0-9a-f]{0,4}:){1,3}[0-9a-f]{1,4}\\b'\n";

static wd_guard_db_t *db;
static wd_guard_scratch_t *scratch;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    db = wd_guard_db_load_buf("fuzz.yaml", rules, sizeof rules - 1, err, sizeof err);
    CHECK(db);
    scratch = wd_guard_scratch_new(db);
    CHECK(scratch);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t cut_sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    wd_findings_t block, piece;
    wd_findings_init(&block);
    wd_findings_init(&piece);
    block.limit = 1u << 20;
    piece.limit = 1u << 20;
    CHECK(wd_guard_scan(db, scratch, text, len, 0.0f, &block) == WD_OK);
    for (size_t i = 0; i < block.n; i++) {
        const wd_finding_t *f = &block.v[i];
        CHECK(f->start < f->end && f->end <= len);
        CHECK(f->rule < wd_guard_db_nrules(db));
        CHECK(f->end - f->start <= wd_guard_db_rule(db, f->rule)->max_len);
        CHECK(f->score >= 0.0f && f->score <= 1.0f);
        if (i) CHECK(block.v[i - 1].end <= f->start); /* sorted and disjoint */
    }

    /* the folded scan, and the fold itself */
    wd_findings_t folded;
    wd_findings_init(&folded);
    folded.limit = 1u << 20;
    CHECK(wd_guard_scan_folded(db, scratch, WD_GUARD_ANY, text, len, 0.0f, NULL, &folded) == WD_OK);
    bool folds = wd_guard_fold_needed(text, len, WD_FOLD_ALL);
    if (!folds) CHECK(folded.n == block.n);
    for (size_t i = 0; i < folded.n; i++) {
        const wd_finding_t *f = &folded.v[i];
        CHECK(f->start < f->end && f->end <= len);
        if (i) CHECK(folded.v[i - 1].end <= f->start);
        if (!folds)
            CHECK(f->start == block.v[i].start && f->end == block.v[i].end && f->rule == block.v[i].rule);
    }
    wd_findings_free(&folded);
    wd_buf_t fb;
    wd_buf_init(&fb, 0);
    uint32_t *map = NULL;
    size_t mapcap = 0;
    CHECK(wd_guard_fold(text, len, &fb, &map, &mapcap) == WD_OK);
    CHECK(fb.len <= len && map[fb.len] == len && (fb.len == len) == !folds);
    for (size_t j = 0; j < fb.len; j++) {
        unsigned char src = (unsigned char)text[map[j]];
        CHECK(map[j] < map[j + 1]);
        CHECK((unsigned char)fb.data[j] == src || (src >= 0xC2 && (unsigned char)fb.data[j] < 0x80));
        CHECK(wd_guard_fold_end(text, &fb, map, (uint32_t)j + 1) <= map[j + 1]);
    }
    /* folded as a stream of three pieces: the same bytes, the same way back */
    size_t fcut[4] = {0, len ? cut_sel * len / 255 : 0, 0, len};
    fcut[2] = fcut[1] + (len - fcut[1]) * ((cut_sel * 7u) % 256u) / 255u;
    wd_fold_stream_t fs;
    wd_fold_stream_init(&fs);
    wd_buf_t joined;
    wd_buf_init(&joined, 0);
    for (int step = 0; step < 4; step++) {
        const char *fp = NULL;
        size_t fn = 0;
        bool last = step == 3;
        CHECK(wd_fold_stream_feed(&fs, last ? NULL : text + fcut[step],
                                  last ? 0 : fcut[step + 1] - fcut[step], last, &fp, &fn) == WD_OK);
        CHECK(wd_buf_append(&joined, fp, fn) == WD_OK);
    }
    CHECK(joined.len == fb.len && (!fb.len || memcmp(joined.data, fb.data, fb.len) == 0));
    for (size_t j = 0; j < fb.len; j++) {
        CHECK(wd_fold_stream_raw(&fs, j) == map[j]);
        CHECK(wd_fold_stream_raw_end(&fs, j + 1) == wd_guard_fold_end(text, &fb, map, (uint32_t)j + 1));
    }
    CHECK(wd_fold_stream_raw(&fs, fb.len) == len);
    wd_buf_free(&joined);
    wd_fold_stream_free(&fs);
    free(map);
    wd_buf_free(&fb);

    /* the same text in two pieces */
    size_t cut = len ? cut_sel * len / 255 : 0;
    wd_guard_stream_t *st = wd_guard_stream_open(db, 0.0f);
    CHECK(st);
    wd_finding_t *got = malloc((block.n + 1) * sizeof *got);
    CHECK(got);
    size_t n = 0;
    bool extra = false;
    for (int step = 0; step < 3; step++) {
        uint64_t safe = wd_guard_stream_safe_offset(st);
        int rc = step == 0   ? wd_guard_stream_feed(st, scratch, text, cut, &piece)
                 : step == 1 ? wd_guard_stream_feed(st, scratch, text + cut, len - cut, &piece)
                             : wd_guard_stream_finish(st, scratch, &piece);
        CHECK(rc == WD_OK);
        CHECK(wd_guard_stream_offset(st) - wd_guard_stream_safe_offset(st) <= wd_guard_db_holdback(db));
        for (size_t i = 0; i < piece.n; i++) {
            uint64_t s = piece.base + piece.v[i].start, e = piece.base + piece.v[i].end;
            CHECK(s >= safe && s < e && e <= len); /* never before what was declared final */
            if (n == block.n) {
                extra = true;
                continue;
            }
            got[n] = piece.v[i];
            got[n].start = (uint32_t)s;
            got[n].end = (uint32_t)e;
            n++;
        }
    }
    if (wd_guard_stream_forced(st) == 0) {
        CHECK(!extra && n == block.n);
        for (size_t i = 0; i < n; i++) {
            CHECK(got[i].start == block.v[i].start && got[i].end == block.v[i].end);
            CHECK(got[i].rule == block.v[i].rule && got[i].score == block.v[i].score);
        }
    }
    wd_guard_stream_free(st);
    free(got);
    wd_findings_free(&block);
    wd_findings_free(&piece);
    return 0;
}

/* Privacy-guard microbenchmark (make bench-guard): what one core does with a rule set.
 *
 *   guard_bench [--rules DIR] [--secs S] [--reps N] [--per-file] [--per-rule] [--top K] [--markdown]
 *               [--prose-file FILE] [--floor]
 *
 * Figures (each the median of --reps runs of at least --secs CPU seconds; rates are per CPU second
 * of the measuring thread, so other load on the machine does not lower them much):
 *   prose_mbps    wd_guard_scan over ~1 MiB of clean English prose, generated here from a word list
 *                 with ordinary sentence structure (sentence-initial capitals, place and month names,
 *                 modal "may", numbers, years, times, percentages, quotes and parentheses), scanned as
 *                 4 KiB blocks (the size of a chat message);
 *   dense_mbps    the same over ~1 MiB of synthetic PII-dense text: a finding about every 40 bytes
 *                 (emails, phone numbers, valid card numbers, IBANs and SSNs, IPs, titled names, cloud
 *                 keys), scanned as 4 KiB blocks;
 *   chat_us       one 4 KiB chat completion request (system prompt + 3 turns, 4 personal values)
 *                 through the gateway's path: JSON parse, walk of every text field, wd_guard_scan,
 *                 pseudonymization (wd_guard_rewrite with a vault), splice of the rewritten strings;
 *   chat_inj_us   the same with the prompt-injection screen (wd_inj_scan) as the gateway runs it;
 *   sse_us        one 20-byte SSE event of an answer through wd_guard_stream_feed;
 *   fold_mbps     the fold check of every text (wd_guard_fold_needed, then wd_guard_fold where it is
 *                 needed) over ~1 MiB of Russian prose with English words, some of them written with
 *                 Cyrillic look-alikes, as 4 KiB blocks (ASCII text costs this check next to nothing);
 *   inj_cyr_mbps  (--phase inj_cyr only) the injection screen (wd_inj_scan) over the Russian prose of
 *                 fold_mbps, as 4 KiB blocks;
 *   fold_stream_mbps (--phase fold_stream only) a worst case of the stream fold: 400 KB of mathematical
 *                 bold letters (every character folds) fed one byte at a time, the offsets of the last
 *                 4 KiB kept (wd_fold_stream_trim after every piece).
 * --per-file repeats prose/dense for each rule file alone; --per-rule for each rule alone (slowest
 * first); --leave-one-out PREFIX measures the whole set without each rule whose id starts with PREFIX
 * (what the rule costs inside the combined database). That is how the expensive patterns are found.
 * --floor prints what Hyperscan alone does with the privacy rules in one database and nothing done per
 * match (floor_rate), on the same prose and dense texts. --prose-file FILE scans FILE in place of the
 * generated prose (in every figure that uses it).
 *
 * The walk is a copy of src/gateway/guard_stage.c's (scan_string/walk), without its profile lookups. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "guard/fold.h"
#include "guard/guard.h"
#include "guard/injection.h"
#include "guard/rewrite.h"

#include <hs/hs.h>

#define BLOCK 4096

/* ---- deterministic generator ------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

#define PICK(a) ((a)[rnd((uint32_t)(sizeof(a) / sizeof *(a)))])

static const char *const det[] = {"the", "the", "the", "a", "a", "this", "that", "every", "some", "their", "our", "its",
                                  "his", "her", "no", "each", "another", "any"};
static const char *const adj[] = {
    "small", "large", "old", "new", "early", "late", "quiet", "bright", "dark", "simple", "common", "rare", "public",
    "private", "local", "national", "final", "first", "last", "long", "short", "strong", "weak", "clear", "open",
    "whole", "different", "important", "difficult", "recent", "modern", "ancient", "careful", "narrow", "wide",
    "heavy", "light", "warm", "cold", "green", "red", "little", "great", "good", "poor", "rich", "young", "free",
    "true", "main", "possible", "certain", "usual", "strange", "familiar", "useful", "serious", "natural", "human",
    "social", "political", "economic", "wooden", "distant", "sudden", "gentle", "patient", "honest", "broad"};
static const char *const noun[] = {
    "house", "river", "village", "city", "road", "market", "garden", "window", "door", "table", "letter", "book",
    "question", "answer", "problem", "system", "report", "school", "teacher", "student", "child", "family", "friend",
    "neighbour", "farmer", "doctor", "engineer", "writer", "reader", "company", "government", "council", "law",
    "court", "history", "story", "idea", "plan", "method", "result", "reason", "change", "decision", "water",
    "field", "forest", "mountain", "valley", "coast", "harbour", "ship", "train", "bridge", "church", "library",
    "museum", "office", "machine", "engine", "light", "winter", "summer", "morning", "evening", "season", "year",
    "week", "month", "century", "language", "word", "voice", "music", "picture", "paper", "money", "price", "trade",
    "work", "industry", "bread", "wine", "weather", "rain", "wind", "stone", "fire", "land", "people", "army",
    "king", "queen", "journey", "meeting", "party", "committee", "evidence", "experiment", "theory", "memory",
    "effort", "community", "region", "border", "wall", "tower", "street", "corner", "station", "newspaper"};
static const char *const nouns[] = {
    "houses", "rivers", "villages", "cities", "roads", "markets", "gardens", "letters", "books", "questions",
    "problems", "schools", "students", "children", "families", "friends", "farmers", "doctors", "engineers",
    "writers", "companies", "laws", "stories", "ideas", "plans", "methods", "results", "reasons", "changes",
    "fields", "forests", "ships", "trains", "bridges", "machines", "years", "weeks", "months", "words", "pictures",
    "prices", "workers", "people", "soldiers", "visitors", "records", "animals", "trees", "streets", "towns"};
static const char *const verb_past[] = {
    "built", "found", "opened", "closed", "carried", "followed", "described", "changed", "reached", "crossed",
    "watched", "visited", "remembered", "answered", "considered", "explained", "reported", "discovered", "left",
    "brought", "kept", "held", "took", "gave", "made", "saw", "heard", "knew", "thought", "wrote", "read", "sold",
    "bought", "moved", "raised", "lost", "won", "met", "started", "finished", "improved", "examined", "repaired",
    "measured", "studied", "covered", "planted", "painted", "cleaned", "checked", "returned", "ignored"};
static const char *const verb_base[] = {
    "build", "find", "open", "close", "carry", "follow", "describe", "change", "reach", "cross", "watch", "visit",
    "remember", "answer", "consider", "explain", "report", "discover", "leave", "bring", "keep", "hold", "take",
    "give", "make", "see", "hear", "know", "write", "read", "sell", "buy", "move", "raise", "lose", "meet", "start",
    "finish", "improve", "examine", "repair", "measure", "study", "cover", "need", "want", "use", "share"};
static const char *const verb_intr[] = {"arrived", "waited", "continued", "returned", "disappeared", "grew", "fell",
                                        "rose", "slept", "worked", "agreed", "laughed", "stayed", "failed",
                                        "succeeded", "changed", "remained", "began", "ended", "improved"};
static const char *const modal[] = {"may", "might", "could", "would", "should", "must", "will", "can", "may not",
                                    "cannot", "will not", "did not", "may well"};
static const char *const adv[] = {"slowly", "quickly", "quietly", "carefully", "often", "rarely", "finally",
                                  "suddenly", "almost", "nearly", "always", "never", "still", "already", "soon",
                                  "later", "again", "together", "probably", "certainly", "simply", "mostly"};
static const char *const prep[] = {"in", "on", "at", "near", "across", "behind", "beyond", "under", "over", "through",
                                   "along", "around", "between", "after", "before", "during", "without", "with",
                                   "from", "towards", "into", "beside", "against", "among"};
static const char *const pron[] = {"he", "she", "they", "we", "it", "you", "I", "nobody", "everyone", "someone"};
static const char *const pron_obj[] = {"him", "her", "them", "us", "it", "you", "me", "everyone", "something"};
static const char *const opener[] = {"However", "Meanwhile", "Afterwards", "In the end", "At first", "Of course",
                                     "For a while", "Even so", "In time", "Later that year", "By then",
                                     "On the other hand", "In practice", "As a rule", "For example", "Still",
                                     "Perhaps", "Yet", "Then", "Indeed", "Nevertheless", "Later", "Once"};
static const char *const conjs[] = {"and", "but", "because", "although", "while", "so", "until", "when", "since",
                                   "as", "before", "after", "if", "though", "unless", "whereas"};
static const char *const place[] = {"London", "Paris", "Europe", "Africa", "Asia", "America", "the Atlantic",
                                    "the Pacific", "the North", "the South", "Rome", "Vienna", "Boston", "Chicago",
                                    "the Alps", "the Thames", "the Rhine", "Scotland", "Ireland", "Spain", "Italy",
                                    "Egypt", "India", "China", "Japan", "Canada", "Mexico", "the Mediterranean"};
static const char *const month[] = {"January", "February", "March", "April", "May", "June", "July", "August",
                                    "September", "October", "November", "December"};
static const char *const day[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};

typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "guard_bench: out of memory\n");
            exit(2);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void sb_fmt(sbuf_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Words are appended with a space before them; cap capitalises the first letter (sentence start). */
static void word(sbuf_t *b, const char *w, bool *cap)
{
    if (b->len && b->p[b->len - 1] != '\n' && b->p[b->len - 1] != '(' && b->p[b->len - 1] != '"')
        sb_add(b, " ", 1);
    if (*cap && w[0] >= 'a' && w[0] <= 'z') {
        char c = (char)(w[0] - 32);
        sb_add(b, &c, 1);
        sb_str(b, w + 1);
    } else {
        sb_str(b, w);
    }
    *cap = false;
}

static void noun_phrase(sbuf_t *b, bool *cap, bool obj)
{
    uint32_t k = rnd(20);
    if (k < 3) {
        word(b, obj ? PICK(pron_obj) : PICK(pron), cap);
    } else if (k < 5) {
        word(b, PICK(place), cap);
    } else if (k < 7) {
        word(b, PICK(adj), cap);
        word(b, PICK(nouns), cap);
    } else {
        word(b, PICK(det), cap);
        if (rnd(2)) word(b, PICK(adj), cap);
        word(b, PICK(noun), cap);
        if (rnd(6) == 0) {
            word(b, "of", cap);
            word(b, "the", cap);
            word(b, PICK(noun), cap);
        }
    }
}

static void time_phrase(sbuf_t *b, bool *cap)
{
    char tmp[64];
    switch (rnd(9)) {
    case 0: snprintf(tmp, sizeof tmp, "in %u", 1700 + rnd(320)); break;
    case 1: snprintf(tmp, sizeof tmp, "in %s %u", PICK(month), 1800 + rnd(220)); break;
    case 2: snprintf(tmp, sizeof tmp, "on %s", PICK(day)); break;
    case 3: snprintf(tmp, sizeof tmp, "at %u:%02u", 1 + rnd(12), rnd(4) * 15); break;
    case 4: snprintf(tmp, sizeof tmp, "for %u years", 2 + rnd(40)); break;
    case 5: snprintf(tmp, sizeof tmp, "by about %u percent", 2 + rnd(60)); break;
    case 6: snprintf(tmp, sizeof tmp, "on %u %s", 1 + rnd(28), PICK(month)); break;
    case 7: snprintf(tmp, sizeof tmp, "in the %uth century", 12 + rnd(9)); break;
    default: snprintf(tmp, sizeof tmp, "for %u,%03u pounds", 1 + rnd(90), rnd(1000)); break;
    }
    word(b, tmp, cap);
}

static void clause(sbuf_t *b, bool *cap)
{
    noun_phrase(b, cap, false);
    switch (rnd(5)) {
    case 0:
        word(b, PICK(modal), cap);
        word(b, PICK(verb_base), cap);
        noun_phrase(b, cap, true);
        break;
    case 1:
        word(b, PICK(verb_intr), cap);
        if (rnd(2)) word(b, PICK(adv), cap);
        break;
    default:
        if (rnd(4) == 0) word(b, PICK(adv), cap);
        word(b, PICK(verb_past), cap);
        noun_phrase(b, cap, true);
    }
    if (rnd(2)) {
        word(b, PICK(prep), cap);
        noun_phrase(b, cap, true);
    }
    if (rnd(4) == 0) time_phrase(b, cap);
}

static void sentence(sbuf_t *b)
{
    bool cap = true;
    uint32_t k = rnd(12);
    bool quote = k == 0;
    if (quote) {
        if (b->len && b->p[b->len - 1] != '\n') sb_add(b, " ", 1);
        sb_add(b, "\"", 1);
    }
    if (k == 1 || k == 2) {
        word(b, PICK(opener), &cap);
        sb_add(b, ",", 1);
    }
    clause(b, &cap);
    if (rnd(3) == 0) {
        if (rnd(2)) sb_add(b, ",", 1);
        word(b, PICK(conjs), &cap);
        clause(b, &cap);
    }
    if (rnd(10) == 0) {
        sb_add(b, " (", 2);
        clause(b, &cap);
        sb_add(b, ")", 1);
    }
    sb_add(b, rnd(15) == 0 ? "?" : ".", 1);
    if (quote) sb_add(b, "\"", 1);
}

/* ~target bytes of paragraphs of 3..8 sentences. */
static void gen_prose(sbuf_t *b, size_t target)
{
    while (b->len < target) {
        uint32_t n = 3 + rnd(6);
        for (uint32_t i = 0; i < n; i++)
            sentence(b);
        sb_add(b, "\n\n", 2);
    }
}

/* ~target bytes of Russian sentences; one in three has an English word, and one English word in ten
 * is written with a Cyrillic look-alike ("sеrver"). */
static void gen_cyrillic(sbuf_t *b, size_t target)
{
    static const char *const ru[] = {"пациент", "поступил", "в", "отделение", "с", "жалобами", "на", "боль",
                                     "груди", "и", "одышку", "после", "нагрузки", "врач", "назначил",
                                     "обследование", "сервер", "журнал", "отчёт", "данные"};
    static const char *const en[] = {"server", "report", "secret", "user", "token", "delete"}; /* each has an "e" */
    while (b->len < target) {
        uint32_t n = 6 + rnd(10);
        for (uint32_t i = 0; i < n; i++) {
            const char *w = ru[rnd(sizeof ru / sizeof *ru)];
            sb_add(b, w, strlen(w));
            sb_add(b, " ", 1);
        }
        if (rnd(3) == 0) {
            const char *w = en[rnd(sizeof en / sizeof *en)];
            if (rnd(10) == 0) { /* its first "e" as Cyrillic U+0435 */
                const char *e = strchr(w, 'e');
                sb_add(b, w, (size_t)(e - w));
                sb_add(b, "\xD0\xB5", 2);
                sb_add(b, e + 1, strlen(e + 1));
            } else
                sb_add(b, w, strlen(w));
        }
        sb_add(b, ".\n", 2);
    }
}

/* ---- PII-dense text ---------------------------------------------------------------------------- */

static void digits(char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + rnd(10));
    out[n] = 0;
}

static void luhn_card(char *out, const char *prefix, size_t len)
{
    size_t pl = strlen(prefix);
    memcpy(out, prefix, pl);
    digits(out + pl, len - pl - 1);
    int sum = 0;
    for (size_t i = 0; i < len - 1; i++) {
        int d = out[len - 2 - i] - '0';
        if (i % 2 == 0) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
    }
    out[len - 1] = (char)('0' + (10 - sum % 10) % 10);
    out[len] = 0;
}

/* German IBAN: DE + check digits + 18 digits (mod 97 == 1). */
static void iban_de(char *out)
{
    char bban[19];
    digits(bban, 18);
    /* BBAN + "DE00" as digits: D=13, E=14 */
    unsigned rem = 0;
    char num[32];
    snprintf(num, sizeof num, "%s131400", bban);
    for (const char *c = num; *c; c++)
        rem = (rem * 10 + (unsigned)(*c - '0')) % 97;
    unsigned check = 98 - rem;
    snprintf(out, 40, "DE%02u %.4s %.4s %.4s %.4s %.2s", check, bban, bban + 4, bban + 8, bban + 12, bban + 16);
}

static void rand_chars(char *out, size_t n, const char *alphabet)
{
    size_t al = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rnd((uint32_t)al)];
    out[n] = 0;
}

static const char *const first[] = {"Alice", "Maria", "James", "Olivia", "Lukas", "Sofia", "Daniel", "Emma",
                                    "Hannah", "Mateo", "Chloe", "Oliver", "Amelia", "Noah", "Isabel", "Peter"};
static const char *const last[] = {"Moreno", "Schmidt", "Okafor", "Johnson", "Lindqvist", "Rossi", "Novak", "Tanaka",
                                   "Dubois", "Fischer", "Kowalski", "Brennan", "Silva", "Andersen", "Walsh", "Baker"};
static const char *const filler[] = {"please note", "as discussed", "see above", "for the file", "updated",
                                     "thanks", "and also", "confirmed", "regarding", "as requested"};

static void gen_dense(sbuf_t *b, size_t target)
{
    char v[256], w[64];
    while (b->len < target) {
        switch (rnd(10)) {
        case 0:
            rand_chars(w, 4 + rnd(6), "abcdefghijklmnopqrstuvwxyz");
            snprintf(v, sizeof v, "mail %s.%s%u@example.org", w, PICK(last), rnd(100));
            break;
        case 1: snprintf(v, sizeof v, "call (%u) 555-%04u", 201 + rnd(700), rnd(10000)); break;
        case 2:
            luhn_card(w, rnd(2) ? "4" : "51", 16);
            snprintf(v, sizeof v, "card %.4s %.4s %.4s %.4s", w, w + 4, w + 8, w + 12);
            break;
        case 3: snprintf(v, sizeof v, "ssn %03u-%02u-%04u", 100 + rnd(565), 10 + rnd(89), 1000 + rnd(8999)); break;
        case 4: snprintf(v, sizeof v, "host %u.%u.%u.%u", 11 + rnd(180), rnd(256), rnd(256), 1 + rnd(254)); break;
        case 5:
            iban_de(w);
            snprintf(v, sizeof v, "iban %s", w);
            break;
        case 6: snprintf(v, sizeof v, "Dr. %s %s", PICK(first), PICK(last)); break;
        case 7:
            rand_chars(w, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
            snprintf(v, sizeof v, "key AKIA%s", w);
            break;
        case 8:
            rand_chars(w, 36, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
            snprintf(v, sizeof v, "token ghp_%s", w);
            break;
        default: snprintf(v, sizeof v, "phone +44 20 7946 %04u", rnd(10000)); break;
        }
        sb_str(b, v);
        sb_str(b, rnd(2) ? ", " : "; ");
        sb_str(b, PICK(filler));
        sb_str(b, rnd(8) ? " " : ".\n");
    }
}

/* ---- timing ------------------------------------------------------------------------------------ */

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double g_secs = 0.3;
static int g_reps = 5;

/* One pass of a measurement over its context. */
typedef void pass_fn(void *ctx);

/* Runs pass again and again for at least g_secs of CPU time, g_reps times (at most 64): the median
 * number of passes per CPU second. */
static double passes_per_sec(pass_fn *pass, void *ctx)
{
    double r[64];
    int reps = g_reps > 64 ? 64 : g_reps;
    for (int k = 0; k < reps; k++) {
        double t0 = cpu_now(), el;
        size_t n = 0;
        do {
            pass(ctx);
            n++;
            el = cpu_now() - t0;
        } while (el < g_secs);
        r[k] = (double)n / el;
    }
    return median(r, reps);
}

/* The length of the next piece of text[off, len): BLOCK bytes, cut after a space (keeping at least half
 * a block when `half`) so words stay whole. */
static size_t piece(const char *text, size_t off, size_t len, bool half)
{
    size_t n = len - off < BLOCK ? len - off : BLOCK;
    while (off + n < len && (!half || n > BLOCK / 2) && text[off + n - 1] != ' ')
        n--;
    return n;
}

/* The data classes of the privacy guard; the other classes are content categories (or injection). */
static bool privacy_class(const char *c)
{
    return !strcmp(c, "pii") || !strcmp(c, "phi") || !strcmp(c, "financial") || !strcmp(c, "secrets");
}

typedef struct {
    const wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    unsigned uses;
    const char *text;
    size_t len, found;
    wd_findings_t f;
} scan_ctx_t;

static void scan_pass(void *ctx)
{
    scan_ctx_t *c = ctx;
    c->found = 0;
    for (size_t off = 0, n; off < c->len; off += n) {
        n = piece(c->text, off, c->len, true);
        int rc = wd_guard_scan_for(c->db, c->s, c->uses, c->text + off, n, 0.0f, &c->f);
        if (rc) {
            fprintf(stderr, "guard_bench: scan failed (%d)\n", rc);
            exit(2);
        }
        c->found += c->f.n;
    }
}

/* Scans text as BLOCK-sized pieces (cut at a space so words stay whole); MB/s per CPU second, and the
 * findings of one pass. */
static double scan_rate(const wd_guard_db_t *db, wd_guard_scratch_t *s, unsigned uses, const char *text, size_t len,
                        size_t *nfindings)
{
    scan_ctx_t c = {.db = db, .s = s, .uses = uses, .text = text, .len = len};
    wd_findings_init(&c.f);
    c.f.limit = 1u << 20;
    double rate = passes_per_sec(scan_pass, &c) * (double)len / 1e6;
    if (nfindings) *nfindings = c.found;
    wd_findings_free(&c.f);
    return rate;
}

/* ---- the floor: Hyperscan alone ------------------------------------------------------------------ */

static int count_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                       void *ud)
{
    (void)id, (void)from, (void)to, (void)flags;
    ++*(size_t *)ud;
    return 0;
}

typedef struct {
    const hs_database_t *hs;
    hs_scratch_t *scratch;
    const char *text;
    size_t len, reports;
} floor_ctx_t;

static void floor_pass(void *ctx)
{
    floor_ctx_t *c = ctx;
    c->reports = 0;
    for (size_t off = 0; off < c->len; off += BLOCK)
        hs_scan(c->hs, c->text + off, (unsigned)(c->len - off < BLOCK ? c->len - off : BLOCK), 0, c->scratch,
                count_match, &c->reports);
}

/* Hyperscan alone over the text as BLOCK-sized pieces: one block-mode database of every rule that
 * scans prompts (what one database per rule set would be), a callback that only counts. What no
 * engine built on that database can beat, whatever it does per match. MB/s per CPU second. */
static double floor_rate(const wd_guard_db_t *db, const char *text, size_t len, size_t *nreports,
                         size_t *nrules)
{
    size_t n = wd_guard_db_nrules(db), k = 0;
    const char **pats = calloc(n, sizeof *pats);
    unsigned *flags = calloc(n, sizeof *flags), *ids = calloc(n, sizeof *ids);
    if (!pats || !flags || !ids) exit(2);
    for (size_t i = 0; i < n; i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        if (wd_inj_rule(r) || !privacy_class(r->cls)) continue;
        pats[k] = r->pattern;
        flags[k] = r->caseless ? HS_FLAG_CASELESS : 0;
        ids[k] = (unsigned)i;
        k++;
    }
    *nrules = k;
    hs_database_t *hs = NULL;
    hs_compile_error_t *herr = NULL;
    hs_scratch_t *scratch = NULL;
    if (hs_compile_multi(pats, flags, ids, (unsigned)k, HS_MODE_BLOCK, NULL, &hs, &herr) != HS_SUCCESS ||
        hs_alloc_scratch(hs, &scratch) != HS_SUCCESS) {
        fprintf(stderr, "guard_bench: %s\n", herr ? herr->message : "cannot compile the floor database");
        exit(2);
    }
    floor_ctx_t c = {.hs = hs, .scratch = scratch, .text = text, .len = len};
    double rate = passes_per_sec(floor_pass, &c) * (double)len / 1e6;
    *nreports = c.reports;
    hs_free_scratch(scratch);
    hs_free_database(hs);
    free(pats);
    free(flags);
    free(ids);
    return rate;
}

/* ---- the gateway's request path ------------------------------------------------------------------- */

typedef struct {
    const wd_guard_db_t *db;
    wd_guard_scratch_t *scratch;
    wd_findings_t findings;
    wd_vault_t vault;
    wd_guard_tally_t tally;
    wd_inj_result_t inj;
    bool do_inj;
    wd_json_edit_t edits[64];
    size_t offs[64];
    size_t nedits;
    wd_buf_t arena, text, out;
    int rc;
    size_t replaced;
} walk_t;

static bool skip_key(const wd_json_doc_t *d, int key)
{
    static const char *const skip[] = {"model", "role", "type", "id", "tool_call_id", "object", "encoding_format",
                                       "service_tier", "user"};
    for (size_t i = 0; i < WD_ARRAY_LEN(skip); i++)
        if (wd_json_str_eq(d, key, skip[i])) return true;
    return false;
}

static wd_action_t pseudo_all(void *ud, const wd_rule_t *r)
{
    (void)ud;
    if (privacy_class(r->cls)) return WD_ACT_PSEUDO;
    return WD_ACT_FLAG;
}

static void scan_string(walk_t *w, const wd_json_doc_t *d, int tok)
{
    wd_buf_reset(&w->text);
    if (wd_json_str_decode(d, tok, &w->text) != WD_OK || w->text.len < 5) return;
    int rc = w->do_inj ? wd_inj_scan(w->db, w->scratch, w->text.data, w->text.len, NULL, &w->inj) : WD_OK;
    if (!rc)
        rc = wd_guard_scan_folded(w->db, w->scratch, WD_GUARD_INPUT, w->text.data, w->text.len, 0.5f, NULL,
                                  &w->findings);
    if (rc || !w->findings.n) {
        w->rc = rc;
        return;
    }
    size_t k = w->findings.n;
    wd_rewrite_opts_t o = {pseudo_all, NULL, NULL, &w->vault};
    wd_buf_reset(&w->out);
    rc = wd_guard_rewrite(w->db, w->text.data, w->text.len, &w->findings, &o, &w->tally, &w->out);
    if (!rc && (w->out.len != w->text.len || memcmp(w->out.data, w->text.data, w->out.len) != 0)) {
        if (w->nedits == WD_ARRAY_LEN(w->edits)) {
            w->rc = WD_E2BIG;
            return;
        }
        const wd_json_tok_t *t = &d->toks[tok];
        size_t at = w->arena.len;
        wd_buf_append(&w->arena, "\"", 1);
        wd_buf_append_json_str(&w->arena, w->out.data, w->out.len);
        rc = wd_buf_append(&w->arena, "\"", 1);
        w->offs[w->nedits] = at;
        w->edits[w->nedits++] = (wd_json_edit_t){t->start - 1, t->end + 1, wd_str(NULL, w->arena.len - at)};
        w->replaced += k;
    }
    w->rc = rc;
}

static void walk(walk_t *w, const wd_json_doc_t *d, int tok, int key)
{
    const wd_json_tok_t *t = &d->toks[tok];
    if (w->rc) return;
    if (t->type == WD_JSON_STRING) {
        if (key < 0 || !skip_key(d, key)) scan_string(w, d, tok);
    } else if (t->type == WD_JSON_OBJECT) {
        int k = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            walk(w, d, k + 1, k);
            k = (int)d->toks[k + 1].next;
        }
    } else if (t->type == WD_JSON_ARRAY) {
        int e = tok + 1;
        for (uint32_t m = 0; m < t->size && !w->rc; m++) {
            walk(w, d, e, key);
            e = (int)d->toks[e].next;
        }
    }
}

/* One request: parse, walk, rewrite, splice. Returns the number of values replaced. */
static size_t chat_once(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *body, size_t len,
                        wd_json_tok_t *toks, size_t ntoks, bool inj, wd_buf_t *result)
{
    wd_json_doc_t d;
    if (wd_json_parse(&d, body, len, toks, ntoks, 0, NULL, 0) != WD_OK) {
        fprintf(stderr, "guard_bench: the chat body does not parse\n");
        exit(2);
    }
    static walk_t w; /* buffers are reused across requests, as the gateway's worker does */
    static bool init;
    if (!init) {
        memset(&w, 0, sizeof w);
        wd_findings_init(&w.findings);
        wd_buf_init(&w.arena, 0);
        wd_buf_init(&w.text, 0);
        wd_buf_init(&w.out, 0);
        init = true;
    }
    w.db = db;
    w.scratch = s;
    w.do_inj = inj;
    w.nedits = 0;
    w.rc = 0;
    w.replaced = 0;
    wd_buf_reset(&w.arena);
    wd_vault_init(&w.vault);
    wd_guard_tally_init(&w.tally);
    wd_inj_result_init(&w.inj);
    walk(&w, &d, 0, -1);
    if (w.rc) {
        fprintf(stderr, "guard_bench: chat scan failed (%d)\n", w.rc);
        exit(2);
    }
    for (size_t i = 0; i < w.nedits; i++)
        w.edits[i].with.p = w.arena.data + w.offs[i];
    wd_buf_reset(result);
    if (w.nedits && wd_json_apply_edits(body, len, w.edits, w.nedits, result) != WD_OK) {
        fprintf(stderr, "guard_bench: splice failed\n");
        exit(2);
    }
    wd_vault_free(&w.vault);
    return w.replaced;
}

static void json_str(sbuf_t *b, const char *s)
{
    wd_buf_t t;
    wd_buf_init(&t, 0);
    wd_buf_append_json_str(&t, s, strlen(s));
    sb_add(b, "\"", 1);
    sb_add(b, t.data, t.len);
    sb_add(b, "\"", 1);
    wd_buf_free(&t);
}

static void prose_piece(sbuf_t *out, size_t n)
{
    sbuf_t p = {0};
    while (p.len < n)
        sentence(&p);
    sb_add(out, p.p, n);
    while (out->len && out->p[out->len - 1] != ' ' && out->p[out->len - 1] != '.')
        out->len--;
    free(p.p);
}

/* A ~4 KiB chat completion body: a system prompt, one earlier exchange and a question carrying an
 * e-mail address, a card number, a phone number and a name. */
static void gen_chat(sbuf_t *b)
{
    sbuf_t sys = {0}, u1 = {0}, a1 = {0}, u2 = {0};
    sb_str(&sys, "You are a careful assistant for a travel company. Answer briefly and politely. ");
    prose_piece(&sys, 900);
    prose_piece(&u1, 700);
    sb_str(&u1, " My e-mail is jane.doe42@example.org if you need it.");
    prose_piece(&a1, 1000);
    sb_str(&u2, "Hello, this is Dr. Maria Moreno again. ");
    prose_piece(&u2, 600);
    sb_str(&u2, " Please charge my card 4111 1111 1111 1111 and call me on (415) 867-2301 to confirm. ");
    prose_piece(&u2, 500);
    sb_str(b, "{\"model\":\"gpt-4o-mini\",\"temperature\":0.2,\"messages\":[{\"role\":\"system\",\"content\":");
    json_str(b, sys.p);
    sb_str(b, "},{\"role\":\"user\",\"content\":");
    json_str(b, u1.p);
    sb_str(b, "},{\"role\":\"assistant\",\"content\":");
    json_str(b, a1.p);
    sb_str(b, "},{\"role\":\"user\",\"content\":");
    json_str(b, u2.p);
    sb_str(b, "}]}");
    free(sys.p);
    free(u1.p);
    free(a1.p);
    free(u2.p);
}

typedef struct {
    const wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    const sbuf_t *body;
    bool inj;
    wd_json_tok_t *toks;
    size_t ntoks, replaced;
    wd_buf_t result;
} chat_ctx_t;

#define CHAT_BATCH 100 /* requests per pass, so the clock is read seldom */

static void chat_pass(void *ctx)
{
    chat_ctx_t *c = ctx;
    for (int i = 0; i < CHAT_BATCH; i++)
        c->replaced = chat_once(c->db, c->s, c->body->p, c->body->len, c->toks, c->ntoks, c->inj, &c->result);
}

static double chat_us(const wd_guard_db_t *db, wd_guard_scratch_t *s, const sbuf_t *body, bool inj,
                      size_t *replaced)
{
    chat_ctx_t c = {.db = db, .s = s, .body = body, .inj = inj, .ntoks = body->len / 2 + 2};
    c.toks = malloc(c.ntoks * sizeof *c.toks);
    if (!c.toks) exit(2);
    wd_buf_init(&c.result, 0);
    double us = 1e6 / (passes_per_sec(chat_pass, &c) * CHAT_BATCH);
    *replaced = c.replaced;
    free(c.toks);
    wd_buf_free(&c.result);
    return us;
}

typedef struct {
    wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    const char *text;
    size_t len, found;
    wd_findings_t f;
} sse_ctx_t;

#define SSE_ANSWER 16384
#define SSE_EVENT 20

static void sse_pass(void *ctx)
{
    sse_ctx_t *c = ctx;
    c->found = 0;
    for (size_t a = 0; a + SSE_ANSWER <= c->len; a += SSE_ANSWER) {
        wd_guard_stream_t *st = wd_guard_stream_open_for(c->db, WD_GUARD_OUTPUT, 0.5f);
        if (!st) exit(2);
        for (size_t off = 0; off < SSE_ANSWER; off += SSE_EVENT) {
            if (wd_guard_stream_feed(st, c->s, c->text + a + off, SSE_EVENT, &c->f)) {
                fprintf(stderr, "guard_bench: stream feed failed\n");
                exit(2);
            }
            c->found += c->f.n;
        }
        if (wd_guard_stream_finish(st, c->s, &c->f)) exit(2);
        c->found += c->f.n;
        wd_guard_stream_free(st);
    }
}

/* An answer streamed as 20-byte events: each goes through wd_guard_stream_feed (a fresh stream per
 * ~16 KiB answer). */
static double sse_us(wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len, size_t *nfound)
{
    sse_ctx_t c = {.db = db, .s = s, .text = text, .len = len > SSE_ANSWER * 8 ? SSE_ANSWER * 8 : len};
    wd_findings_init(&c.f);
    size_t events = c.len / SSE_ANSWER * (SSE_ANSWER / SSE_EVENT);
    double us = 1e6 / (passes_per_sec(sse_pass, &c) * (double)events);
    if (nfound) *nfound = c.found;
    wd_findings_free(&c.f);
    return us;
}

typedef struct {
    const char *text;
    size_t len, mapcap;
    wd_buf_t out;
    uint32_t *map;
} fold_ctx_t;

static void fold_pass(void *ctx)
{
    fold_ctx_t *c = ctx;
    for (size_t off = 0, n; off < c->len; off += n) {
        n = piece(c->text, off, c->len, false);
        if (wd_guard_fold_needed(c->text + off, n, WD_FOLD_ALL) &&
            wd_guard_fold(c->text + off, n, &c->out, &c->map, &c->mapcap))
            exit(2);
    }
}

/* The fold check every text goes through before its scan, over 4 KiB blocks. */
static double fold_rate(const char *text, size_t len)
{
    fold_ctx_t c = {.text = text, .len = len};
    wd_buf_init(&c.out, 0);
    double rate = passes_per_sec(fold_pass, &c) * (double)len / 1e6;
    wd_buf_free(&c.out);
    free(c.map);
    return rate;
}

typedef struct {
    const wd_guard_db_t *db;
    wd_guard_scratch_t *s;
    const char *text;
    size_t len;
} inj_ctx_t;

static void inj_pass(void *ctx)
{
    inj_ctx_t *c = ctx;
    for (size_t off = 0, n; off < c->len; off += n) {
        n = piece(c->text, off, c->len, false);
        wd_inj_result_t ir;
        wd_inj_result_init(&ir);
        if (wd_inj_scan(c->db, c->s, c->text + off, n, NULL, &ir)) exit(2);
    }
}

/* The injection screen over text in 4 KiB blocks (cut at a space). */
static double inj_rate(const wd_guard_db_t *db, wd_guard_scratch_t *s, const char *text, size_t len)
{
    inj_ctx_t c = {.db = db, .s = s, .text = text, .len = len};
    return passes_per_sec(inj_pass, &c) * (double)len / 1e6;
}

#define FOLD_STREAM_LEN 400000

static void fold_stream_pass(void *ctx)
{
    const char *text = ctx;
    wd_fold_stream_t fs;
    wd_fold_stream_init(&fs);
    uint64_t folded = 0;
    for (size_t i = 0; i < FOLD_STREAM_LEN; i++) {
        const char *fp;
        size_t fn;
        if (wd_fold_stream_feed(&fs, text + i, 1, i + 1 == FOLD_STREAM_LEN, &fp, &fn)) exit(2);
        folded += fn;
        if (folded > BLOCK) wd_fold_stream_trim(&fs, folded - BLOCK);
    }
    if (folded != FOLD_STREAM_LEN / 4) exit(3);
    wd_fold_stream_free(&fs);
}

/* The stream fold's worst case: every character folds, 1-byte pieces, trimmed after each. */
static double fold_stream_rate(void)
{
    char *text = malloc(FOLD_STREAM_LEN);
    if (!text) exit(2);
    for (size_t i = 0; i < FOLD_STREAM_LEN; i += 4)
        memcpy(text + i, "\xf0\x9d\x90\x9a", 4); /* U+1D41A, bold a */
    double rate = passes_per_sec(fold_stream_pass, text) * FOLD_STREAM_LEN / 1e6;
    free(text);
    return rate;
}

/* ---- per-file and per-rule runs ---------------------------------------------------------------------- */

static void yaml_quoted(sbuf_t *b, const char *s)
{
    sb_add(b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'') sb_add(b, "'", 1);
        sb_add(b, s, 1);
    }
    sb_add(b, "'", 1);
}

/* The rule as a one-rule YAML file (the loader has no other way in). */
static void rule_yaml(sbuf_t *b, const wd_rule_t *r)
{
    sb_fmt(b, "version: 1\nrules:\n  - id: %s\n    type: %s\n    class: %s\n    pattern: ", r->id, r->type, r->cls);
    yaml_quoted(b, r->pattern);
    sb_fmt(b, "\n    caseless: %s\n    boundary: %s\n    score: %.4f\n    max_len: %u\n", r->caseless ? "true" : "false",
           r->boundary ? "true" : "false", (double)r->score, r->max_len);
    if (r->validator >= 0) sb_fmt(b, "    validator: %s\n", wd_validator_name(r->validator));
    if (r->ncontext) {
        sb_str(b, "    context: [");
        for (size_t i = 0; i < r->ncontext; i++) {
            if (i) sb_str(b, ", ");
            yaml_quoted(b, r->context[i]);
        }
        sb_fmt(b, "]\n    context_required: %s\n", r->context_required ? "true" : "false");
        if (r->gate_trigger) sb_str(b, "    gate: trigger\n");
    }
}

typedef struct {
    char name[128];
    double prose, dense;
    size_t fprose, fdense;
} row_t;

static int cmp_row(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    double cx = 1 / x->prose + 1 / x->dense, cy = 1 / y->prose + 1 / y->dense; /* seconds per MB, both texts */
    return cx > cy ? -1 : cx < cy;
}

static void run_subset(const char *name, const char *yaml, size_t len, const sbuf_t *prose, const sbuf_t *dense,
                       row_t *row)
{
    char err[512];
    wd_guard_db_t *db = wd_guard_db_load_buf(name, yaml, len, err, sizeof err);
    if (!db) {
        fprintf(stderr, "guard_bench: %s\n", err);
        exit(2);
    }
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    snprintf(row->name, sizeof row->name, "%s", name);
    row->prose = scan_rate(db, s, WD_GUARD_ANY, prose->p, prose->len, &row->fprose);
    row->dense = scan_rate(db, s, WD_GUARD_ANY, dense->p, dense->len, &row->fdense);
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
}

static void print_rows_sorted(const row_t *rows, size_t n, size_t top, const sbuf_t *prose, const sbuf_t *dense)
{
    printf("%-40s %12s %12s %12s %12s\n", "subset", "prose_MB/s", "dense_MB/s", "prose_f/MB", "dense_f/MB");
    for (size_t i = 0; i < n && i < top; i++)
        printf("%-40s %12.0f %12.0f %12.0f %12.0f\n", rows[i].name, rows[i].prose, rows[i].dense,
               (double)rows[i].fprose / ((double)prose->len / 1e6), (double)rows[i].fdense / ((double)dense->len / 1e6));
}

static void print_rows(row_t *rows, size_t n, size_t top, const sbuf_t *prose, const sbuf_t *dense)
{
    qsort(rows, n, sizeof *rows, cmp_row);
    print_rows_sorted(rows, n, top, prose, dense);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void per_file(const char *dir, const sbuf_t *prose, const sbuf_t *dense, size_t top)
{
    DIR *d = opendir(dir);
    if (!d) exit(2);
    char *names[1024];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 1024) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 5 && !strcmp(de->d_name + l - 5, ".yaml")) names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    row_t *rows = calloc(n ? n : 1, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) exit(2);
        sbuf_t y = {0};
        char tmp[65536];
        size_t r;
        while ((r = fread(tmp, 1, sizeof tmp, f)) > 0)
            sb_add(&y, tmp, r);
        fclose(f);
        run_subset(names[i], y.p, y.len, prose, dense, &rows[i]);
        free(y.p);
        free(names[i]);
    }
    print_rows(rows, n, top, prose, dense);
    free(rows);
}

static void per_rule(const wd_guard_db_t *db, const sbuf_t *prose, const sbuf_t *dense, size_t top)
{
    size_t n = wd_guard_db_nrules(db);
    row_t *rows = calloc(n ? n : 1, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        sbuf_t y = {0};
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        rule_yaml(&y, r);
        run_subset(r->id, y.p, y.len, prose, dense, &rows[i]);
        free(y.p);
    }
    print_rows(rows, n, top, prose, dense);
    free(rows);
}

/* The whole set without each rule whose id starts with prefix: what a rule costs inside the combined
 * database (Hyperscan shares its literal matcher, so a rule alone can look cheap and still cost). */
static void leave_one_out(const wd_guard_db_t *db, const char *prefix, const sbuf_t *prose, const sbuf_t *dense,
                          size_t top)
{
    size_t n = wd_guard_db_nrules(db), nrows = 0;
    row_t *rows = calloc(n + 1, sizeof *rows);
    for (size_t skip = 0; skip <= n; skip++) {
        if (skip < n && strncmp(wd_guard_db_rule(db, skip)->id, prefix, strlen(prefix)) != 0) continue;
        sbuf_t y = {0};
        sb_str(&y, "version: 1\nrules:\n");
        for (size_t i = 0; i < n; i++) {
            if (i == skip) continue;
            sbuf_t one = {0};
            rule_yaml(&one, wd_guard_db_rule(db, i));
            sb_str(&y, strstr(one.p, "  - id:"));
            free(one.p);
        }
        char name[128];
        snprintf(name, sizeof name, "%s%s", skip < n ? "without " : "(all rules)", skip < n ? wd_guard_db_rule(db, skip)->id : "");
        run_subset(name, y.p, y.len, prose, dense, &rows[nrows++]);
        free(y.p);
    }
    /* fastest first: the rule whose absence helps most costs most */
    for (size_t i = 0; i < nrows; i++) {
        rows[i].prose = 1 / rows[i].prose;
        rows[i].dense = 1 / rows[i].dense;
    }
    qsort(rows, nrows, sizeof *rows, cmp_row);
    for (size_t i = 0; i < nrows; i++) {
        rows[i].prose = 1 / rows[i].prose;
        rows[i].dense = 1 / rows[i].dense;
    }
    print_rows_sorted(rows, nrows, top, prose, dense);
    free(rows);
}

/* ---- main ------------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: guard_bench [--rules DIR] [--secs S] [--reps N] [--per-file] [--per-rule] [--leave-one-out ID-PREFIX] [--top K] "
                    "[--markdown] [--phase prose|dense|chat|chat_inj|sse|fold|fold_stream|inj_cyr] [--dump-prose FILE] [--dump-dense FILE] [--prose-file FILE] [--floor]\n");
    exit(2);
}

static void dump(const char *path, const sbuf_t *b)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f)) {
        fprintf(stderr, "guard_bench: cannot write %s\n", path);
        exit(2);
    }
}

/* A file's bytes in place of the generated prose (--prose-file: your own text). */
static void load(const char *path, sbuf_t *b)
{
    FILE *f = fopen(path, "rb");
    char buf[65536];
    size_t n;
    if (!f) {
        fprintf(stderr, "guard_bench: cannot read %s\n", path);
        exit(2);
    }
    b->len = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sb_add(b, buf, n);
    if (ferror(f) || b->len == 0) {
        fprintf(stderr, "guard_bench: cannot read %s (or it is empty)\n", path);
        exit(2);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *dir = "rules", *dprose = NULL, *ddense = NULL, *phase = NULL, *loo = NULL, *fprose = NULL;
    bool pfile = false, prule = false, md = false, hsfloor = false;
    size_t top = 40;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--rules") && more) dir = argv[++i];
        else if (!strcmp(a, "--secs") && more) g_secs = atof(argv[++i]);
        else if (!strcmp(a, "--reps") && more) g_reps = atoi(argv[++i]);
        else if (!strcmp(a, "--top") && more) top = (size_t)atol(argv[++i]);
        else if (!strcmp(a, "--dump-prose") && more) dprose = argv[++i];
        else if (!strcmp(a, "--dump-dense") && more) ddense = argv[++i];
        else if (!strcmp(a, "--prose-file") && more) fprose = argv[++i];
        else if (!strcmp(a, "--phase") && more) phase = argv[++i];
        else if (!strcmp(a, "--leave-one-out") && more) loo = argv[++i];
        else if (!strcmp(a, "--per-file")) pfile = true;
        else if (!strcmp(a, "--per-rule")) prule = true;
        else if (!strcmp(a, "--floor")) hsfloor = true;
        else if (!strcmp(a, "--markdown")) md = true;
        else usage();
    }
    if (g_reps < 1 || g_secs <= 0) usage();

    sbuf_t prose = {0}, dense = {0}, chat = {0}, cyr = {0};
    if (fprose) load(fprose, &prose);
    else gen_prose(&prose, 1 << 20);
    gen_cyrillic(&cyr, 1 << 20);
    gen_dense(&dense, 1 << 20);
    gen_chat(&chat);
    if (dprose) dump(dprose, &prose);
    if (ddense) dump(ddense, &dense);

    char err[512];
    double t0 = cpu_now();
    wd_guard_db_t *db = wd_guard_db_parse(dir, err, sizeof err);
    if (!db) {
        fprintf(stderr, "guard_bench: %s\n", err);
        return 2;
    }
    /* what each rule is for, as a config whose profiles act on every class would set it */
    for (size_t i = 0; i < wd_guard_db_nrules(db); i++)
        wd_guard_db_set_uses(db, i, wd_inj_rule(wd_guard_db_rule(db, i)) ? WD_GUARD_INJECTION
                                    : privacy_class(wd_guard_db_rule(db, i)->cls) ? WD_GUARD_INPUT | WD_GUARD_OUTPUT
                                                                                  : WD_GUARD_OUTPUT);
    if (wd_guard_db_compile(db, err, sizeof err)) {
        fprintf(stderr, "guard_bench: %s\n", err);
        return 2;
    }
    double load_ms = (cpu_now() - t0) * 1e3;
    wd_guard_scratch_t *s = wd_guard_scratch_new(db);
    if (!s) return 2;

    if (pfile) {
        per_file(dir, &prose, &dense, top);
        return 0;
    }
    if (loo) {
        leave_one_out(db, loo, &prose, &dense, top);
        return 0;
    }
    if (prule) {
        per_rule(db, &prose, &dense, top);
        return 0;
    }
    if (hsfloor) {
        size_t rp = 0, rd = 0, nr = 0;
        double fp = floor_rate(db, prose.p, prose.len, &rp, &nr),
               fd = floor_rate(db, dense.p, dense.len, &rd, &nr);
        printf("floor_rules %zu\nfloor_prose_mbps %.0f (%zu reports)\nfloor_dense_mbps %.0f (%zu reports)\n",
               nr, fp, rp, fd, rd);
        return 0;
    }

    if (phase) { /* one figure alone, for perf record */
        size_t n = 0;
        if (!strcmp(phase, "prose")) printf("prose_mbps %.0f\n", scan_rate(db, s, WD_GUARD_INPUT, prose.p, prose.len, &n));
        else if (!strcmp(phase, "dense")) printf("dense_mbps %.1f\n", scan_rate(db, s, WD_GUARD_INPUT, dense.p, dense.len, &n));
        else if (!strcmp(phase, "chat")) printf("chat_us %.1f\n", chat_us(db, s, &chat, false, &n));
        else if (!strcmp(phase, "chat_inj")) printf("chat_inj_us %.1f\n", chat_us(db, s, &chat, true, &n));
        else if (!strcmp(phase, "sse")) printf("sse_event_us %.2f\n", sse_us(db, s, prose.p, prose.len, &n));
        else if (!strcmp(phase, "fold")) printf("fold_mbps %.0f\n", fold_rate(cyr.p, cyr.len));
        else if (!strcmp(phase, "inj_cyr")) printf("inj_cyr_mbps %.0f\n", inj_rate(db, s, cyr.p, cyr.len));
        else if (!strcmp(phase, "fold_stream")) printf("fold_stream_mbps %.1f\n", fold_stream_rate());
        else usage();
        return 0;
    }
    size_t fp = 0, fd = 0, rep = 0, repi = 0, fs = 0;
    size_t fpo = 0, fdo = 0, fpa = 0, fda = 0;
    double prose_mbps = scan_rate(db, s, WD_GUARD_INPUT, prose.p, prose.len, &fp);
    double dense_mbps = scan_rate(db, s, WD_GUARD_INPUT, dense.p, dense.len, &fd);
    double prose_out = scan_rate(db, s, WD_GUARD_OUTPUT, prose.p, prose.len, &fpo);
    double dense_out = scan_rate(db, s, WD_GUARD_OUTPUT, dense.p, dense.len, &fdo);
    double prose_any = scan_rate(db, s, WD_GUARD_ANY, prose.p, prose.len, &fpa);
    double dense_any = scan_rate(db, s, WD_GUARD_ANY, dense.p, dense.len, &fda);
    double c_us = chat_us(db, s, &chat, false, &rep);
    double ci_us = chat_us(db, s, &chat, true, &repi);
    double s_us = sse_us(db, s, prose.p, prose.len, &fs);
    double f_mbps = fold_rate(cyr.p, cyr.len);
    size_t rfp = 0, rfd = 0, nfloor = 0;
    double floor_p = floor_rate(db, prose.p, prose.len, &rfp, &nfloor),
           floor_d = floor_rate(db, dense.p, dense.len, &rfd, &nfloor);
    double mb_p = (double)prose.len / 1e6, mb_d = (double)dense.len / 1e6;
    if (md) {
        printf("| rules | %zu (load %.0f ms) |\n", wd_guard_db_nrules(db), load_ms);
        printf("| privacy rules (prompts): clean prose, %.2f MB in 4 KiB blocks | **%.0f MB/s** (%.0f findings/MB) |\n",
               mb_p, prose_mbps, (double)fp / mb_p);
        printf("| privacy rules (prompts): PII-dense text, %.2f MB in 4 KiB blocks | **%.0f MB/s** (%.0f findings/MB, one "
               "per %.0f bytes) |\n",
               mb_d, dense_mbps, (double)fd / mb_d, fd ? (double)dense.len / (double)fd : 0.0);
        printf("| Hyperscan alone, the %zu privacy rules in one database, nothing done per match: "
               "prose / dense | %.0f / %.0f MB/s |\n",
               nfloor, floor_p, floor_d);
        printf("| privacy + content rules (answers): prose / dense | %.0f / %.0f MB/s |\n", prose_out, dense_out);
        printf("| every rule, injection included: prose / dense | %.0f / %.0f MB/s |\n", prose_any, dense_any);
        printf("| %zu-byte chat request: parse, scan, pseudonymize, splice | **%.1f µs** (%zu values replaced) |\n",
               chat.len, c_us, rep);
        printf("| the same with the prompt-injection screen | %.1f µs |\n", ci_us);
        printf("| one 20-byte SSE event through wd_guard_stream_feed | %.2f µs |\n", s_us);
        printf("| fold check of Russian prose with English words (look-alikes in some) | %.0f MB/s |\n", f_mbps);
        printf("| LLM Guard (published): anonymize a 317-character prompt on CPU | 177 ms = 177,000 µs |\n");
    } else {
        printf("rules %zu\nload_ms %.0f\n", wd_guard_db_nrules(db), load_ms);
        printf("prose_mbps %.0f\nprose_findings_per_mb %.0f\n", prose_mbps, (double)fp / mb_p);
        printf("dense_mbps %.0f\ndense_findings_per_mb %.0f\n", dense_mbps, (double)fd / mb_d);
        printf("floor_prose_mbps %.0f\nfloor_dense_mbps %.0f\n", floor_p, floor_d);
        printf("output_prose_mbps %.0f\noutput_dense_mbps %.0f\n", prose_out, dense_out);
        printf("any_prose_mbps %.0f\nany_dense_mbps %.0f\n", prose_any, dense_any);
        printf("chat_bytes %zu\nchat_replaced %zu\nchat_us %.1f\nchat_inj_us %.1f\n", chat.len, rep, c_us, ci_us);
        printf("sse_event_us %.2f\nsse_findings %zu\nfold_mbps %.0f\n", s_us, fs, f_mbps);
    }
    wd_guard_scratch_free(s);
    wd_guard_db_unref(db);
    free(prose.p);
    free(dense.p);
    free(chat.p);
    return 0;
}

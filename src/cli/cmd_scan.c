/* warden scan: the privacy guard over files, for preparing training data. Reads plain text, JSON
 * lines or CSV (stdin or files), finds personal data and secrets with the same rules as the gateway,
 * and prints either the findings (one JSON line each, never the value), the data anonymized (same
 * format, record for record) or a human-readable report (--explain).
 *
 * Memory stays bounded whatever the input size: text goes through the guard's stream scanner in
 * 64 KiB blocks and only the bytes a later finding may still cover are held back; JSON lines and
 * CSV records are read one at a time and are bounded by --max-record-bytes. The pseudonym vault is
 * the one structure that grows with the data, and it is capped (--max-pseudonyms); past the cap new
 * values are redacted rather than pseudonymized, never left in clear. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/json.h"
#include "guard/fold.h"
#include "guard/hscache.h"
#include "guard/injection.h"
#include "guard/rewrite.h"
#include "guard/validators.h"

#define BLOCK (64 * 1024)
#define CTX_CHARS 20                /* --explain: characters of surrounding text on each side */
#define CTX_BYTES (CTX_CHARS * 4)   /* ... at most this many bytes of UTF-8 */
#define MASK_MAX 40                 /* --explain: bullets shown for one value at most */
#define MAX_FILES 256
#define DEFAULT_MAX_RECORD (16u << 20)
#define MAX_MAX_RECORD (1u << 30)   /* the block scanner's offsets are 32-bit; the stream's pieces <= 1 GiB */
#define DEFAULT_VAULT 4096
#define MAX_VAULT 65536             /* the vault's lookup is linear: keep it bounded */
#define JSON_DEPTH 128
#define INJ_OVERLAP 4096            /* --explain, text: each 64 KiB block is screened with this much of the last */

typedef enum { FMT_TEXT, FMT_JSONL, FMT_CSV } fmt_t;
typedef enum { OUT_FINDINGS, OUT_ANON, OUT_EXPLAIN } out_t;

typedef struct {
    const char *text; /* as given, for messages */
    char *copy;       /* segments point into it */
    char **seg;
    size_t nseg;
} fpath_t;

typedef struct {
    const char *type, *cls;
    wd_action_t action;
    uint64_t count;
} sum_t;

typedef struct {
    uint64_t s, e;
} span_t;

typedef struct {
    wd_cli_t cli;
    fmt_t fmt;
    out_t out;
    wd_config_t *cfg;
    wd_guard_db_t *db;
    wd_guard_scratch_t *scr;
    const wd_guard_profile_t *profile;
    const char *profile_name;
    unsigned jobs;  /* --jobs: JSON lines files are split among this many processes */
    uint64_t line0; /* lines of the file before this process's part (--jobs) */
    const char *classes[WD_CLI_MAX_VALS * 4]; /* --class: scan only the rules of these classes (none: all) */
    size_t nclasses;
    char *classes_store;
    wd_action_t action; /* without a profile: for every finding */
    bool have_key;
    uint8_t key[32];
    wd_vault_t vault;
    uint64_t degraded; /* values redacted because the vault was full */
    float min_score;
    size_t max_record;
    fpath_t *fields;
    size_t nfields;
    bool allow_missing;
    const char *const *colspec;
    size_t ncolspec;
    bool header;
    const char *file; /* display name of the current input */
    FILE *o;
    uint64_t total;
    size_t nfiles_hit;
    bool file_hit;
    sum_t *sums;
    size_t nsums;
    wd_findings_t f;
    bool in_name;       /* JSON lines: the string being scanned is a member name */
    wd_buf_t tmp, line; /* scratch: one rewritten value; one output line */
    /* --explain: the injection screen, run as the gateway runs it (one request = one text input, one
     * JSON line or one CSV record) with the profile's threshold, action and on_error */
    bool inj_on;
    float inj_thr;
    wd_action_t inj_act;
    bool inj_fail_open;
    wd_inj_result_t inj;
    uint64_t inj_units, inj_flagged; /* requests screened; those the screen did not let pass clean */
} scan_t;

static void usage(FILE *f)
{
    fputs("usage: warden scan [OPTIONS] [FILE...]          (stdin when no FILE, or FILE is -)\n"
          "\n"
          "Finds personal data and secrets in files with the guard's rules and prints the findings (one JSON\n"
          "line each; never the matched value), the anonymized data, or a readable report.\n"
          "\n"
          "rules:\n"
          "  --rules DIR            rule files (default: ./rules)\n"
          "  -c, --config FILE      use FILE's guard section: its rules_dir, min_score and guard_profiles\n"
          "                         (the config loads as for serve: its api_key_env variables must be set)\n"
          "  --min-score F          ignore findings scoring below F, 0..1 (default: the config's, else 0.5)\n"
          "  --cache-dir DIR        keep the compiled rules in DIR and reuse them while the rules are the same\n"
          "                         (default: the config's guard.cache_dir, else $CACHE_DIRECTORY, else\n"
          "                         $XDG_CACHE_HOME/warden, else ~/.cache/warden); entries must belong to\n"
          "                         you and be writable by you only\n"
          "  --no-cache             compile the rules every time (about 2-3 s with the shipped rules)\n"
          "  --class C[,C...]       scan only the rules of these classes (repeatable): pii, phi,\n"
          "                         financial, secrets, injection or a content category (default: all)\n"
          "  -j, --jobs N           JSON lines: scan each regular file in N parts at once, one process\n"
          "                         each (same output; not with --explain or pseudonymize)\n"
          "input:\n"
          "  --format text|jsonl|csv   input format (default text); --jsonl and --csv are short for it\n"
          "  --field PATH           JSON lines: scan this field (repeatable). Dotted path: messages.0.content,\n"
          "                         '*' for every element or member: messages.*.content. A field that is an\n"
          "                         array or object has every string inside it scanned, member names\n"
          "                         too. Default: the whole record, member names included\n"
          "  --column NAME|N        CSV: scan this column (repeatable), by header name or 1-based number;\n"
          "                         default: every column\n"
          "  --no-header            CSV: the first record is data (columns by number only)\n"
          "  --allow-missing        a record without a selected field/column is skipped, not an error\n"
          "  --max-record-bytes N   longest JSON line or CSV record (default 16MiB; suffixes KiB, MiB, GiB)\n"
          "output:\n"
          "  --output findings|anonymized   (default findings)\n"
          "  --explain              a readable report per finding (masked context) and a summary by type\n"
          "  --profile NAME         with -c: act on each finding as guard profile NAME says\n"
          "  --action A             act on every finding with A: redact (default), mask, hash, pseudonymize\n"
          "  --hash-key-file FILE   key for the hash action: 32 bytes (raw, or 64 hex digits); default with -c\n"
          "                         and a state_dir: the gateway's own key (derived from the master key)\n"
          "  --max-pseudonyms N     distinct pseudonymized values kept for the whole run (default 4096, at\n"
          "                         most 65536); later new values are redacted instead\n"
          "\n"
          "Exit status: 0 no findings, 1 findings, 2 error (bad option, unreadable file, invalid record).\n"
          "See docs/detectors.md (\"warden scan\") for the output formats.\n",
          f);
}

static int fail(scan_t *S, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(scan_t *S, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return wd_cli_fail(&S->cli, WD_EXIT_USAGE, "%s", msg);
}

static bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Is rule r scanned (--class)? */
static bool selected(const scan_t *S, const wd_rule_t *r)
{
    for (size_t i = 0; i < S->nclasses; i++)
        if (!strcmp(S->classes[i], r->cls)) return true;
    return S->nclasses == 0;
}

/* ---- actions ----------------------------------------------------------------------------------------- */

/* Is the value p[0..len) on the profile's allow list (it passes whatever its type's action)? */
static bool allowed(const scan_t *S, const char *p, size_t len)
{
    return S->profile && wd_guard_allow_has(S->profile->allow, p, len);
}

/* What the profile (or --action) says for a rule, as reported by --explain. */
static wd_action_t profile_action(const scan_t *S, const wd_rule_t *r)
{
    return S->profile ? wd_profile_action(S->profile, r) : S->action;
}

/* What the anonymizer does: a file has no request to refuse, so block redacts. */
static wd_action_t rewrite_action(void *ud, const wd_rule_t *r)
{
    wd_action_t a = profile_action(ud, r);
    return a == WD_ACT_BLOCK ? WD_ACT_REDACT : a;
}

static bool vault_has(const wd_vault_t *v, const char *type, const char *p, size_t len)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->e[i].vlen == len && !strcmp(v->e[i].type, type) && !memcmp(v->e[i].value, p, len)) return true;
    return false;
}

/* Appends text[0..len) with the single finding covering all of it replaced. */
static int replace_one(scan_t *S, uint16_t rule, float score, const char *p, size_t len, wd_buf_t *out)
{
    const wd_rule_t *r = wd_guard_db_rule(S->db, rule);
    if (rewrite_action(S, r) == WD_ACT_PSEUDO && S->vault.n >= S->vault.max_entries && !vault_has(&S->vault, r->type, p, len))
        S->degraded++;
    wd_finding_t one = {.start = 0, .end = (uint32_t)len, .rule = rule, .score = score};
    wd_findings_t fl = {.v = &one, .n = 1, .cap = 1};
    wd_rewrite_opts_t o = {rewrite_action, S, S->have_key ? S->key : NULL, &S->vault,
                           S->profile ? S->profile->allow : NULL};
    return wd_guard_rewrite(S->db, p, len, &fl, &o, NULL, out);
}

static bool listed(const wd_guard_rule_action_t *v, size_t n, const wd_rule_t *r);

/* What the gateway does with a finding of r under the profile: output categories (classes or types
 * only the profile's output map names, such as violence) are acted on in answers. */
static wd_action_t effective_action(const scan_t *S, const wd_rule_t *r)
{
    if (S->profile && listed(S->profile->output, S->profile->noutput, r) &&
        !listed(S->profile->input, S->profile->ninput, r))
        return wd_profile_output_action(S->profile, r);
    return profile_action(S, r);
}

/* Counts a finding of rule whose text is p[0..len) for the summary and the exit status. */
static int count_finding(scan_t *S, uint16_t rule, const char *p, size_t len)
{
    const wd_rule_t *r = wd_guard_db_rule(S->db, rule);
    wd_action_t a = allowed(S, p, len) ? WD_ACT_ALLOW : effective_action(S, r);
    S->total++;
    if (!S->file_hit) S->nfiles_hit++;
    S->file_hit = true;
    for (size_t i = 0; i < S->nsums; i++)
        if (!strcmp(S->sums[i].type, r->type) && !strcmp(S->sums[i].cls, r->cls) && S->sums[i].action == a) {
            S->sums[i].count++;
            return 0;
        }
    /* (type, class, action) triples are bounded by the rule count, which bounds this array */
    sum_t *n = realloc(S->sums, (S->nsums + 1) * sizeof *n);
    if (!n) return fail(S, "out of memory");
    S->sums = n;
    S->sums[S->nsums++] = (sum_t){r->type, r->cls, a, 1};
    return 0;
}

/* ---- output ------------------------------------------------------------------------------------------ */

static int out_write(scan_t *S, const void *p, size_t len)
{
    if (len && fwrite(p, 1, len, S->o) != len) return fail(S, "writing the output: %s", strerror(errno));
    return 0;
}

/* One finding as a JSON line. loc is "line" or "record"; a structured input names its field (a JSON
 * path) or column (header name, else number: colnum > 0 with name NULL). */
static int out_finding(scan_t *S, const char *loc, uint64_t locn, const char *field, size_t fieldlen,
                       const char *colname, size_t colnum, uint64_t start, uint64_t end, const uint64_t *offset,
                       uint16_t rule, float score)
{
    const wd_rule_t *r = wd_guard_db_rule(S->db, rule);
    wd_buf_t *b = &S->line;
    wd_buf_reset(b);
    int rc = wd_buf_append_str(b, "{\"file\":\"");
    if (!rc) rc = wd_buf_append_json_str(b, S->file, strlen(S->file));
    if (!rc) rc = wd_buf_printf(b, "\",\"%s\":%llu", loc, (unsigned long long)locn);
    if (!rc && field) {
        rc = wd_buf_append_str(b, ",\"field\":\"");
        if (!rc) rc = wd_buf_append_json_str(b, field, fieldlen);
        if (!rc) rc = wd_buf_append_str(b, S->in_name ? "\",\"member_name\":true" : "\"");
    }
    if (!rc && colname) {
        rc = wd_buf_append_str(b, ",\"column\":\"");
        if (!rc) rc = wd_buf_append_json_str(b, colname, strlen(colname));
        if (!rc) rc = wd_buf_append_str(b, "\"");
    } else if (!rc && colnum) {
        rc = wd_buf_printf(b, ",\"column\":%zu", colnum);
    }
    if (!rc)
        rc = wd_buf_printf(b, ",\"start\":%llu,\"end\":%llu", (unsigned long long)start, (unsigned long long)end);
    if (!rc && offset) rc = wd_buf_printf(b, ",\"offset\":%llu", (unsigned long long)*offset);
    if (!rc)
        rc = wd_buf_printf(b, ",\"type\":\"%s\",\"class\":\"%s\",\"rule\":\"%s\",\"score\":%.3g}\n", r->type, r->cls,
                           r->id, (double)score);
    if (rc) return fail(S, "out of memory");
    return out_write(S, b->data, b->len);
}

/* Appends one character of context, made safe for a terminal: line breaks and tabs shown as symbols,
 * other control characters and invalid UTF-8 as '?'. Returns the bytes consumed. */
static size_t ctx_char(wd_buf_t *b, const char *p, size_t avail, bool bullet)
{
    unsigned char c = (unsigned char)p[0];
    size_t n = c < 0x80 ? 1 : c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    bool ok = n && n <= avail;
    for (size_t i = 1; ok && i < n; i++) ok = cont((unsigned char)p[i]);
    if (ok && n >= 3) { /* no overlongs, no surrogates, nothing above U+10FFFF */
        unsigned char d = (unsigned char)p[1];
        ok = !((c == 0xE0 && d < 0xA0) || (c == 0xED && d >= 0xA0) || (c == 0xF0 && d < 0x90) || (c == 0xF4 && d >= 0x90));
    }
    if (!ok) n = 1;
    if (bullet) wd_buf_append_str(b, "\xe2\x80\xa2"); /* U+2022 */
    else if (!ok) wd_buf_append(b, "?", 1);
    else if (c == '\n') wd_buf_append_str(b, "\xe2\x8f\x8e"); /* U+23CE */
    else if (c == '\t') wd_buf_append_str(b, "\xe2\x87\xa5"); /* U+21E5 */
    else if (c < 0x20 || c == 0x7f) wd_buf_append(b, "?", 1);
    else wd_buf_append(b, p, n);
    return n;
}

/* The context line of --explain: up to CTX_CHARS characters each side of the value, the value shown
 * as its first and last character with bullets between (at most MASK_MAX, then an ellipsis), any other
 * finding in the window all bullets. buf holds bytes [bbase, bend) of the text; s..e is the finding. */
static void explain_ctx(wd_buf_t *b, const char *buf, uint64_t bbase, uint64_t bend, uint64_t s, uint64_t e,
                        const span_t *others, size_t nothers)
{
    uint64_t lo = s, hi = e;
    for (int n = 0; lo > bbase && n < CTX_CHARS;) {
        lo--;
        if (!cont((unsigned char)buf[lo - bbase])) n++;
    }
    while (lo < s && cont((unsigned char)buf[lo - bbase])) lo++;
    for (int n = 0; hi < bend && n < CTX_CHARS; n++) {
        hi++;
        while (hi < bend && cont((unsigned char)buf[hi - bbase])) hi++;
    }
    size_t nchars = 0;
    for (uint64_t p = s; p < e; p++) nchars += !cont((unsigned char)buf[p - bbase]);
    if (lo > 0) wd_buf_append_str(b, "\xe2\x80\xa6"); /* ... */
    for (uint64_t p = lo; p < s;) {
        bool other = false;
        for (size_t i = 0; i < nothers && !other; i++) other = p >= others[i].s && p < others[i].e;
        p += ctx_char(b, buf + (p - bbase), (size_t)(s - p), other);
    }
    size_t k = 0;
    for (uint64_t p = s; p < e; k++) {
        bool edge = nchars > 2 && (k == 0 || k == nchars - 1);
        if (edge || k <= MASK_MAX) {
            p += ctx_char(b, buf + (p - bbase), (size_t)(e - p), !edge);
            continue;
        }
        if (k == MASK_MAX + 1) wd_buf_append_str(b, "\xe2\x80\xa6");
        p++;
        while (p < e && cont((unsigned char)buf[p - bbase])) p++;
    }
    for (uint64_t p = e; p < hi;) {
        bool other = false;
        for (size_t i = 0; i < nothers && !other; i++) other = p >= others[i].s && p < others[i].e;
        p += ctx_char(b, buf + (p - bbase), (size_t)(hi - p), other);
    }
    if (hi < bend) wd_buf_append_str(b, "\xe2\x80\xa6");
}

/* The spans of v (sorted, non-overlapping) that can reach into the context window of s..e, so a
 * value with many findings costs O(log n) per entry, not O(n). */
static const span_t *near(const span_t *v, size_t n, uint64_t s, uint64_t e, size_t *count)
{
    uint64_t lo = s > CTX_BYTES ? s - CTX_BYTES : 0, hi = e + CTX_BYTES;
    size_t a = 0, b = n;
    while (a < b) { /* first span ending after lo */
        size_t m = a + (b - a) / 2;
        if (v[m].e <= lo) a = m + 1;
        else b = m;
    }
    /* a stream's findings overlap only where a long overlap chain was resolved in pieces: look back
     * over such neighbours too */
    while (a > 0 && v[a - 1].e > lo) a--;
    size_t z = a;
    while (z < n && v[z].s < hi) z++;
    *count = z - a;
    return v + a;
}

/* Whether a profile's map (input or output) names the rule's type or class. */
static bool listed(const wd_guard_rule_action_t *v, size_t n, const wd_rule_t *r)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].key, r->type) || !strcmp(v[i].key, r->cls)) return true;
    return false;
}

/* The decision text of one finding, as the gateway would act: a profile's output categories (a class
 * or type only its output map names, such as violence) are acted on in answers, so their action is
 * the output one; a class both maps name shows both; injection signatures are decided by the screen
 * (its section follows the request's findings). */
static void action_text(const scan_t *S, const wd_rule_t *r, bool allow, wd_buf_t *b)
{
    if (wd_inj_rule(r) && S->inj_on) {
        wd_buf_append_str(b, "action: see the injection screen");
        return;
    }
    if (allow) {
        wd_buf_printf(b, "action allow (on profile %s's allow list)", S->profile->name);
        return;
    }
    wd_action_t a = profile_action(S, r);
    bool in = S->profile && listed(S->profile->input, S->profile->ninput, r);
    bool out = S->profile && listed(S->profile->output, S->profile->noutput, r);
    if (out) {
        wd_action_t oa = wd_profile_output_action(S->profile, r);
        if (in) wd_buf_printf(b, "action %s, ", wd_action_name(a));
        wd_buf_printf(b, "output action %s", wd_action_name(oa));
        if (!in) a = oa;
    } else {
        wd_buf_printf(b, "action %s", wd_action_name(a));
    }
    if (a == WD_ACT_BLOCK) wd_buf_append_str(b, " (redacted in --output anonymized)");
}

/* ---- --explain: the injection screen ------------------------------------------------------------ */

static void inj_begin(scan_t *S)
{
    if (S->inj_on) wd_inj_result_init(&S->inj);
}

static int inj_add(scan_t *S, const char *p, size_t len)
{
    if (!S->inj_on || !len) return 0;
    int rc = wd_inj_scan(S->db, S->scr, p, len, NULL, &S->inj);
    if (rc)
        return fail(S, "%s: the injection screen failed (%s)", S->file,
                    rc == WD_E2BIG ? "too many findings" : "out of memory");
    return 0;
}

/* The screen's decision for one request: score, threshold, action, the rules that fired (with the
 * layer they fired in) and the layers decoded; nothing when it let the request pass clean. */
static int inj_report(scan_t *S, const char *where)
{
    if (!S->inj_on) return 0;
    S->inj_units++;
    wd_inj_verdict_t v;
    wd_action_t a = wd_inj_decide(&S->inj, S->inj_thr, S->inj_act, S->inj_fail_open, &v);
    if (v == WD_INJ_CLEAN) return 0;
    S->inj_flagged++;
    float score = wd_inj_score(&S->inj);
    wd_buf_t *b = &S->line;
    wd_buf_reset(b);
    wd_buf_printf(b, "%s: injection screen: score %.2f %s threshold %.2f, action %s%s\n", where, (double)score,
                  S->inj.nhits && score + 1e-6f >= S->inj_thr ? ">=" : "<", (double)S->inj_thr, wd_action_name(a),
                  v == WD_INJ_BELOW ? " (below the threshold: recorded only)" : "");
    if (S->inj.nhits) {
        char rules[2048];
        wd_inj_describe(S->db, &S->inj, rules, sizeof rules);
        wd_buf_printf(b, "    rules: %s\n", rules);
    }
    if (S->inj.layers_seen & ~1u) {
        wd_buf_append_str(b, "    decoded layers:");
        for (unsigned l = 1; l < WD_INJ__LAYERS; l++) {
            if (!(S->inj.layers_seen & (1u << l))) continue;
            bool fired = false;
            for (size_t i = 0; i < S->inj.nhits && !fired; i++) fired = S->inj.hits[i].layer == l;
            wd_buf_printf(b, " %s%s", wd_inj_layer_name((wd_inj_layer_t)l), fired ? " (payload found)" : "");
        }
        wd_buf_printf(b, "; %zu decoded bytes screened\n", S->inj.decoded_bytes);
    }
    if (S->inj.budget_exhausted)
        wd_buf_printf(b,
                      "    decode budget exhausted: more than %u KiB of encoded text, later payloads were not decoded "
                      "(on_error: %s, so %s)\n",
                      WD_INJ_DECODE_BUDGET / 1024u, S->inj_fail_open ? "open" : "closed",
                      v == WD_INJ_UNSCREENED ? (S->inj_fail_open ? "flagged" : "treated as at the threshold")
                                             : "the score decided");
    if (!b->data) return fail(S, "out of memory");
    return out_write(S, b->data, b->len);
}

/* One --explain entry: where, what, the action the profile would take, and the masked context. */
static int explain_one(scan_t *S, const char *where, uint16_t rule, float score, const char *buf, uint64_t bbase,
                       uint64_t bend, uint64_t s, uint64_t e, const span_t *others, size_t nothers)
{
    const wd_rule_t *r = wd_guard_db_rule(S->db, rule);
    wd_buf_t *b = &S->line;
    wd_buf_reset(b);
    wd_buf_printf(b, "%s: %s (%s) rule %s", where, r->type, r->cls, r->id);
    if (r->severity) wd_buf_printf(b, ", severity %s", r->severity);
    if (r->set_version) wd_buf_printf(b, ", set %s %s", r->set, r->set_version);
    wd_buf_printf(b, ", score %.2f, ", (double)score);
    action_text(S, r, allowed(S, buf + (s - bbase), (size_t)(e - s)), b);
    wd_buf_append_str(b, "\n");
    if (r->description) wd_buf_printf(b, "    %s\n", r->description);
    wd_buf_append_str(b, "    context: ");
    size_t nnear;
    const span_t *nb = near(others, nothers, s, e, &nnear);
    explain_ctx(b, buf, bbase, bend, s, e, nb, nnear);
    if (wd_buf_append_str(b, "\n")) return fail(S, "out of memory");
    return out_write(S, b->data, b->len);
}

static int cmp_sum(const void *a, const void *b)
{
    const sum_t *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    return c ? c : strcmp(x->cls, y->cls);
}

static int explain_summary(scan_t *S, size_t nfiles)
{
    fprintf(S->o, "\nsummary: %llu finding%s in %zu of %zu input%s\n", (unsigned long long)S->total,
            S->total == 1 ? "" : "s", S->nfiles_hit, nfiles, nfiles == 1 ? "" : "s");
    if (S->nsums) {
        qsort(S->sums, S->nsums, sizeof *S->sums, cmp_sum);
        fprintf(S->o, "  %-28s %-12s %8s  %s\n", "TYPE", "CLASS", "COUNT", "ACTION");
        for (size_t i = 0; i < S->nsums; i++)
            fprintf(S->o, "  %-28s %-12s %8llu  %s\n", S->sums[i].type, S->sums[i].cls,
                    (unsigned long long)S->sums[i].count, wd_action_name(S->sums[i].action));
    }
    if (S->inj_on)
        fprintf(S->o, "injection screen (%s%s, threshold %.2f, action %s, on_error %s): %llu of %llu request%s not clean\n",
                S->profile ? "profile " : "no profile: the defaults", S->profile ? S->profile->name : "",
                (double)S->inj_thr, wd_action_name(S->inj_act), S->inj_fail_open ? "open" : "closed",
                (unsigned long long)S->inj_flagged, (unsigned long long)S->inj_units, S->inj_units == 1 ? "" : "s");
    else if (S->profile)
        fprintf(S->o, "injection screen: off in profile %s\n", S->profile->name);
    /* which version of each rule set decided (rules are grouped by file, in load order; with --class,
     * the sets that have a rule scanned) */
    fputs("rule sets:", S->o);
    const char *last = NULL;
    for (size_t i = 0; i < wd_guard_db_nrules(S->db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(S->db, i);
        if (!selected(S, r) || (last && !strcmp(last, r->set))) continue;
        fprintf(S->o, "%s %s %s", last ? "," : "", r->set, r->set_version ? r->set_version : "(no set_version)");
        last = r->set;
    }
    fputs("\n", S->o);
    return ferror(S->o) ? fail(S, "writing the output: %s", strerror(errno)) : 0;
}

/* ---- input ------------------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    char *buf;
    size_t pos, len;
    bool eof;
    uint64_t left; /* bytes of the input still to read (a part of a file, --jobs) ... */
    int64_t at;    /* ... from this offset with pread (the processes share the file's offset); -1: read */
} rd_t;

static int rd_fill(scan_t *S, rd_t *r)
{
    if (r->eof) return 0;
    if (r->pos == r->len) r->pos = r->len = 0;
    for (;;) {
        size_t want = (size_t)WD_MIN((uint64_t)(BLOCK - r->len), r->left);
        ssize_t n = !want       ? 0
                    : r->at < 0 ? read(r->fd, r->buf + r->len, want)
                                : pread(r->fd, r->buf + r->len, want, r->at);
        if (n > 0) {
            r->left -= (uint64_t)n;
            if (r->at >= 0) r->at += n;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(S, "%s: read error: %s", S->file, strerror(errno));
        if (n == 0) r->eof = true;
        r->len += (size_t)n;
        return 0;
    }
}

/* Reads a full block (short only at end of input), so the stream sees 64 KiB pieces even from a pipe. */
static int rd_block(scan_t *S, rd_t *r)
{
    r->pos = r->len = 0;
    while (r->len < BLOCK && !r->eof)
        if (rd_fill(S, r)) return -1;
    return 0;
}

/* ---- text: the stream scanner ---------------------------------------------------------------------- */

typedef struct {
    uint64_t s, e, line, col;
    uint16_t rule;
    float score;
} xq_t;

typedef struct {
    wd_guard_stream_t *st;
    wd_fold_stream_t fold; /* st scans the text folded; its offsets map back through this */
    wd_buf_t pend;  /* input bytes [pbase, fed): what is not yet output, plus context */
    uint64_t pbase;
    uint64_t lc_off, lc_line, lc_ls; /* line cursor: offset, its line number, that line's first byte */
    uint64_t emit;  /* anonymized: bytes before this have been written */
    xq_t *xq;       /* --explain: findings waiting for their right-hand context */
    size_t nxq, capxq;
    span_t *rec;    /* --explain: recent findings, masked when they appear in another's context */
    size_t nrec, caprec;
} txt_t;

static inline unsigned char tb(const txt_t *T, uint64_t off) { return (unsigned char)T->pend.data[off - T->pbase]; }

static void lc_advance(txt_t *T, uint64_t to)
{
    if (to <= T->lc_off) return;
    const char *p = T->pend.data + (T->lc_off - T->pbase), *end = T->pend.data + (to - T->pbase);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        T->lc_line++;
        T->lc_ls = T->pbase + (uint64_t)(nl - T->pend.data) + 1;
        p = nl + 1;
    }
    T->lc_off = to;
}

/* A character boundary at or before pos (not before emit): a byte that later continues a character
 * whose first bytes were already written would make the output invalid UTF-8 if it were replaced. */
static uint64_t char_floor(const txt_t *T, uint64_t pos, uint64_t fed)
{
    if (pos < fed) {
        for (int i = 0; i < 3 && pos > T->emit && cont(tb(T, pos)); i++) pos--;
        return pos;
    }
    for (uint64_t k = 1; k <= 3 && k <= pos && pos - k >= T->emit; k++) {
        unsigned char c = tb(T, pos - k);
        if (cont(c)) continue;
        uint64_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return k < need ? pos - k : pos;
    }
    return pos;
}

static int txt_anon(scan_t *S, txt_t *T, uint64_t s, uint64_t e, uint16_t rule, float score, uint64_t fed)
{
    if (e <= T->emit) return 0; /* defensive: covered by a previous finding */
    if (s < T->emit) s = T->emit;
    /* widen to character boundaries so a multi-byte character is never split */
    while (s > T->emit && cont(tb(T, s))) s--;
    while (e < fed && cont(tb(T, e))) e++;
    if (out_write(S, T->pend.data + (T->emit - T->pbase), (size_t)(s - T->emit))) return -1;
    wd_buf_reset(&S->tmp);
    if (replace_one(S, rule, score, T->pend.data + (s - T->pbase), (size_t)(e - s), &S->tmp))
        return fail(S, "out of memory");
    T->emit = e;
    return out_write(S, S->tmp.data, S->tmp.len);
}

static int txt_explain_flush(scan_t *S, txt_t *T, uint64_t safe, uint64_t fed, bool eod)
{
    size_t k = 0;
    for (; k < T->nxq && (eod || T->xq[k].e + CTX_BYTES <= safe); k++) {
        const xq_t *x = &T->xq[k];
        char where[4200];
        snprintf(where, sizeof where, "%s line %llu bytes %llu-%llu", S->file, (unsigned long long)x->line,
                 (unsigned long long)x->col, (unsigned long long)(x->col + (x->e - x->s)));
        if (explain_one(S, where, x->rule, x->score, T->pend.data, T->pbase, fed, x->s, x->e, T->rec, T->nrec))
            return -1;
    }
    if (k) memmove(T->xq, T->xq + k, (T->nxq - k) * sizeof *T->xq);
    T->nxq -= k;
    return 0;
}

/* Makes room for one more element in a growable array; vp is the address of the array pointer. */
static int grow(void *vp, size_t n, size_t *cap, size_t sz)
{
    if (n < *cap) return 0;
    void *old;
    memcpy(&old, vp, sizeof old);
    size_t nc = *cap ? *cap * 2 : 64;
    void *nv = realloc(old, nc * sz);
    if (!nv) return WD_ENOMEM;
    memcpy(vp, &nv, sizeof nv);
    *cap = nc;
    return 0;
}

/* Handles the findings one feed (or the finish) made final, then writes and drops what is safe. */
static int txt_batch(scan_t *S, txt_t *T, const wd_findings_t *f, uint64_t ffed, uint64_t fsafe, bool eod)
{
    uint64_t fed = wd_fold_stream_raw(&T->fold, ffed);
    for (size_t i = 0; i < f->n; i++) {
        uint64_t s = wd_fold_stream_raw(&T->fold, f->base + f->v[i].start),
                 e = wd_fold_stream_raw_end(&T->fold, f->base + f->v[i].end);
        uint16_t rule = f->v[i].rule;
        if (count_finding(S, rule, T->pend.data + (s - T->pbase), (size_t)(e - s))) return -1;
        lc_advance(T, s);
        uint64_t col = s >= T->lc_ls ? s - T->lc_ls : 0;
        if (S->out == OUT_FINDINGS) {
            if (out_finding(S, "line", T->lc_line, NULL, 0, NULL, 0, col, col + (e - s), &s, rule, f->v[i].score))
                return -1;
        } else if (S->out == OUT_ANON) {
            if (txt_anon(S, T, s, e, rule, f->v[i].score, fed)) return -1;
        } else {
            xq_t x = {s, e, T->lc_line, col, rule, f->v[i].score};
            span_t sp = {s, e};
            if (grow(&T->xq, T->nxq, &T->capxq, sizeof x) || grow(&T->rec, T->nrec, &T->caprec, sizeof sp))
                return fail(S, "out of memory");
            T->xq[T->nxq++] = x;
            T->rec[T->nrec++] = sp;
        }
    }
    uint64_t safe = eod ? fed : wd_fold_stream_raw(&T->fold, fsafe);
    wd_fold_stream_trim(&T->fold, fsafe);
    lc_advance(T, safe);
    if (S->out == OUT_ANON) {
        uint64_t to = eod ? fed : char_floor(T, safe, fed);
        if (to > T->emit) {
            if (out_write(S, T->pend.data + (T->emit - T->pbase), (size_t)(to - T->emit))) return -1;
            T->emit = to;
        }
    }
    if (S->out == OUT_EXPLAIN && txt_explain_flush(S, T, safe, fed, eod)) return -1;
    /* keep what is unwritten, not yet line-counted, or still context of a waiting --explain entry */
    uint64_t low = T->lc_off;
    if (S->out == OUT_ANON && T->emit < low) low = T->emit;
    if (T->nxq && T->xq[0].s < low) low = T->xq[0].s;
    low = low > CTX_BYTES ? low - CTX_BYTES : 0;
    if (low > T->pbase) {
        wd_buf_consume(&T->pend, (size_t)(low - T->pbase));
        T->pbase = low;
        size_t k = 0;
        while (k < T->nrec && T->rec[k].e <= low) k++;
        if (k) memmove(T->rec, T->rec + k, (T->nrec - k) * sizeof *T->rec);
        T->nrec -= k;
    }
    return 0;
}

/* The findings one feed (or the finish) of the stream made final, as txt_batch takes them. */
static int txt_stream_batch(scan_t *S, txt_t *T, bool eod)
{
    return txt_batch(S, T, &S->f, wd_guard_stream_offset(T->st), wd_guard_stream_safe_offset(T->st), eod);
}

static void txt_free(txt_t *T)
{
    wd_guard_stream_free(T->st);
    wd_fold_stream_free(&T->fold);
    if (T->pend.data) sodium_memzero(T->pend.data, T->pend.cap);
    wd_buf_free(&T->pend);
    free(T->xq);
    free(T->rec);
}

#define WHOLE_MAX (4u << 20) /* a text file up to this size is scanned in one piece (scan_text_whole) */

/* A text file of at most WHOLE_MAX bytes, findings or anonymized: read whole, folded and block-scanned in
 * one piece, which finds what the stream scanner finds (guard.h) but runs each rule only where it can
 * match (trigger gating), as prompts are scanned. Returns 1, having read nothing, when the file is
 * larger than that after all (it grew): the caller streams it. */
static int scan_text_whole(scan_t *S, rd_t *r)
{
    txt_t T = {.lc_line = 1};
    wd_buf_init(&T.pend, 0);
    wd_fold_stream_init(&T.fold);
    int rc = 0;
    for (;;) {
        if (rd_fill(S, r)) {
            rc = -1;
            goto out;
        }
        if (T.pend.len + r->len > WHOLE_MAX) {
            if (lseek(r->fd, 0, SEEK_SET) < 0)
                rc = fail(S, "%s: %s", S->file, strerror(errno));
            else
                rc = 1;
            r->pos = r->len = 0;
            r->eof = false;
            goto out;
        }
        if (wd_buf_append(&T.pend, r->buf, r->len)) {
            rc = fail(S, "out of memory");
            goto out;
        }
        r->pos = r->len = 0;
        if (r->eof) break;
    }
    const char *fp = NULL;
    size_t fn = 0;
    int sr = wd_fold_stream_feed(&T.fold, T.pend.data ? T.pend.data : "", T.pend.len, true, &fp, &fn);
    S->f.limit = fn + 16;
    if (!sr) sr = wd_guard_scan_ranked(S->db, S->scr, WD_GUARD_ANY, fp, fn, S->min_score, NULL, &S->f);
    if (sr)
        rc = fail(S, "%s: scanning failed (%s)", S->file,
                  sr == WD_E2BIG ? "too many findings or candidates" : "scanner error");
    else
        rc = txt_batch(S, &T, &S->f, fn, fn, true);
out:
    txt_free(&T);
    return rc;
}

static int scan_text(scan_t *S, rd_t *r)
{
    txt_t T = {.lc_line = 1};
    wd_buf_init(&T.pend, 0);
    wd_fold_stream_init(&T.fold);
    wd_buf_t win; /* --explain: the block screened for injection, with the tail of the one before */
    wd_buf_init(&win, 0);
    inj_begin(S);
    int rc = 0;
    T.st = wd_guard_stream_open(S->db, S->min_score);
    if (!T.st) {
        rc = fail(S, "out of memory");
        goto out;
    }
    /* every finding one feed reports lies in the block or the hold-back before it */
    S->f.limit = 2 * (BLOCK + wd_guard_db_holdback(S->db)) + 16;
    for (;;) {
        if (rd_block(S, r)) {
            rc = -1;
            goto out;
        }
        if (r->len) {
            if (wd_buf_append(&T.pend, r->buf, r->len)) {
                rc = fail(S, "out of memory");
                goto out;
            }
            if (S->inj_on) {
                /* a signature across a block boundary is caught with the overlap */
                size_t keep = win.len > INJ_OVERLAP ? INJ_OVERLAP : win.len;
                if (keep < win.len) wd_buf_consume(&win, win.len - keep);
                if (wd_buf_append(&win, r->buf, r->len)) {
                    rc = fail(S, "out of memory");
                    goto out;
                }
                if ((rc = inj_add(S, win.data, win.len))) goto out;
            }
            const char *fp = NULL;
            size_t fn = 0;
            int sr = wd_fold_stream_feed(&T.fold, r->buf, r->len, false, &fp, &fn);
            if (!sr) sr = wd_guard_stream_feed(T.st, S->scr, fp, fn, &S->f);
            if (sr) {
                rc = fail(S, "%s: scanning failed near byte %llu (%s)", S->file,
                          (unsigned long long)wd_fold_stream_raw(&T.fold, wd_guard_stream_offset(T.st)),
                          sr == WD_E2BIG ? "too many findings or candidates" : "scanner error");
                goto out;
            }
            if (txt_stream_batch(S, &T, false)) {
                rc = -1;
                goto out;
            }
        }
        if (r->eof) break;
    }
    const char *fp = NULL;
    size_t fn = 0;
    int sr = wd_fold_stream_feed(&T.fold, NULL, 0, true, &fp, &fn); /* what waited: a word, a cut character */
    if (!sr && fn && !(sr = wd_guard_stream_feed(T.st, S->scr, fp, fn, &S->f)) &&
        txt_stream_batch(S, &T, false)) {
        rc = -1;
        goto out;
    }
    if (!sr) sr = wd_guard_stream_finish(T.st, S->scr, &S->f);
    if (sr) {
        rc = fail(S, "%s: scanning failed at the end of the input (%s)", S->file,
                  sr == WD_E2BIG ? "too many findings or candidates" : "scanner error");
        goto out;
    }
    rc = txt_stream_batch(S, &T, true);
    if (!rc) rc = inj_report(S, S->file);
out:
    if (win.data) sodium_memzero(win.data, win.cap);
    wd_buf_free(&win);
    txt_free(&T);
    return rc;
}

/* ---- structured inputs: one value at a time (block scan) ------------------------------------------ */

/* Scans one value (a JSON string's decoded text or a CSV field). With anonymized output, *changed
 * says whether out (reset here) differs from the value. */
static int scan_value(scan_t *S, const char *p, size_t len, const char *loc, uint64_t locn, const char *field,
                      size_t fieldlen, const char *colname, size_t colnum, wd_buf_t *out, bool *changed)
{
    S->f.limit = len + 16;
    if (inj_add(S, p, len)) return -1;
    int sr = wd_guard_scan_folded(S->db, S->scr, WD_GUARD_ANY, p, len, S->min_score, NULL, &S->f);
    if (sr)
        return fail(S, "%s: %s %llu: scanning failed (%s)", S->file, loc, (unsigned long long)locn,
                    sr == WD_E2BIG ? "too many findings or candidates" : "scanner error");
    if (changed) *changed = false;
    span_t *others = NULL;
    if (S->out == OUT_EXPLAIN && S->f.n) {
        others = malloc(S->f.n * sizeof *others);
        if (!others) return fail(S, "out of memory");
        for (size_t i = 0; i < S->f.n; i++) others[i] = (span_t){S->f.v[i].start, S->f.v[i].end};
    }
    int rc = 0;
    for (size_t i = 0; i < S->f.n && !rc; i++) {
        const wd_finding_t *x = &S->f.v[i];
        if ((rc = count_finding(S, x->rule, p + x->start, x->end - x->start))) break;
        if (S->out == OUT_FINDINGS) {
            rc = out_finding(S, loc, locn, field, fieldlen, colname, colnum, x->start, x->end, NULL, x->rule, x->score);
        } else if (S->out == OUT_EXPLAIN) {
            wd_buf_t w;
            wd_buf_init(&w, 0);
            wd_buf_printf(&w, "%s %s %llu ", S->file, loc, (unsigned long long)locn);
            /* names come from the file: shown terminal-safe, like the context */
            if (field) {
                wd_buf_append_str(&w, "field ");
                for (size_t k = 0; k < fieldlen;)
                    k += ctx_char(&w, field + k, fieldlen - k, false);
                if (S->in_name) wd_buf_append_str(&w, " (member name)");
            } else if (colname) {
                wd_buf_append_str(&w, "column ");
                for (size_t k = 0, n = strlen(colname); k < n;)
                    k += ctx_char(&w, colname + k, n - k, false);
            } else {
                wd_buf_printf(&w, "column %zu", colnum);
            }
            /* wd_buf is not NUL-terminated by itself */
            if (wd_buf_printf(&w, " bytes %u-%u", x->start, x->end) || wd_buf_append(&w, "", 1))
                rc = fail(S, "out of memory");
            /* the other findings of this value stay masked in this one's context */
            if (!rc) rc = explain_one(S, w.data ? w.data : "", x->rule, x->score, p, 0, len, x->start, x->end, others, S->f.n);
            wd_buf_free(&w);
        }
    }
    free(others);
    if (rc || S->out != OUT_ANON || !S->f.n) return rc;
    wd_buf_reset(out);
    size_t copied = 0;
    for (size_t i = 0; i < S->f.n; i++) {
        size_t s = S->f.v[i].start, e = S->f.v[i].end;
        if (e <= copied) continue;
        if (s < copied) s = copied;
        while (s > copied && cont((unsigned char)p[s])) s--;
        while (e < len && cont((unsigned char)p[e])) e++;
        if (wd_buf_append(out, p + copied, s - copied) || replace_one(S, S->f.v[i].rule, S->f.v[i].score, p + s, e - s, out))
            return fail(S, "out of memory");
        copied = e;
    }
    if (wd_buf_append(out, p + copied, len - copied)) return fail(S, "out of memory");
    if (changed) *changed = out->len != len || memcmp(out->data, p, len) != 0;
    return 0;
}

/* Reads one line (without its '\n') into rec, bounded by --max-record-bytes. *got is false at end of
 * input; *nl says whether a newline ended it. */
static int read_line(scan_t *S, rd_t *r, wd_buf_t *rec, uint64_t lineno, bool *got, bool *nl)
{
    wd_buf_reset(rec);
    *got = *nl = false;
    for (;;) {
        if (r->pos == r->len) {
            if (r->eof) return 0;
            if (rd_fill(S, r)) return -1;
            continue;
        }
        *got = true;
        const char *p = r->buf + r->pos, *q = memchr(p, '\n', r->len - r->pos);
        size_t n = q ? (size_t)(q - p) : r->len - r->pos;
        if (rec->len + n > S->max_record)
            return fail(S, "%s: line %llu is longer than --max-record-bytes (%zu bytes)", S->file,
                        (unsigned long long)lineno, S->max_record);
        if (wd_buf_append(rec, p, n)) return fail(S, "out of memory");
        r->pos += n + (q ? 1 : 0);
        if (q) {
            *nl = true;
            return 0;
        }
    }
}

/* ---- JSON lines ---------------------------------------------------------------------------------- */

typedef struct {
    int tok;
    size_t path_off, path_len; /* into the path store */
    bool name;                 /* tok is a member name, not a value */
} jstr_t;

typedef struct {
    scan_t *S;
    const wd_json_doc_t *doc;
    wd_buf_t path;  /* the current path while walking */
    wd_buf_t paths; /* the path of every selected string */
    jstr_t *v;
    size_t n, cap;
    bool oom;
    int err; /* a member name could not be scanned */
} jsel_t;

static void jsel_add(jsel_t *J, int tok, bool name)
{
    jstr_t x = {tok, J->paths.len, J->path.len, name};
    if (wd_buf_append(&J->paths, J->path.data, J->path.len) || grow(&J->v, J->n, &J->cap, sizeof x)) {
        J->oom = true;
        return;
    }
    J->v[J->n++] = x;
}

/* Appends a member name to the path. A name with findings at any score appears redacted ("[EMAIL]"):
 * paths are printed, and the output never holds a matched value. */
static void path_push_key(jsel_t *J, int keytok)
{
    if (J->path.len) wd_buf_append(&J->path, ".", 1);
    size_t seg = J->path.len;
    if (wd_json_str_decode(J->doc, keytok, &J->path)) {
        J->oom = true;
        return;
    }
    if (J->err || J->oom) return;
    scan_t *S = J->S;
    size_t len = J->path.len - seg;
    S->f.limit = len + 16;
    if ((J->err =
             wd_guard_scan_folded(S->db, S->scr, WD_GUARD_ANY, J->path.data + seg, len, 0.0f, NULL, &S->f)) ||
        !S->f.n)
        return;
    const char *p = J->path.data + seg;
    wd_buf_reset(&S->tmp);
    size_t copied = 0;
    for (size_t i = 0; i < S->f.n; i++) {
        size_t s = WD_MAX(S->f.v[i].start, copied), e = S->f.v[i].end;
        if (e <= copied) continue;
        while (s > copied && cont((unsigned char)p[s]))
            s--;
        while (e < len && cont((unsigned char)p[e]))
            e++;
        if (wd_buf_append(&S->tmp, p + copied, s - copied) ||
            wd_buf_printf(&S->tmp, "[%s]", wd_guard_db_rule(S->db, S->f.v[i].rule)->type))
            J->oom = true;
        copied = e;
    }
    J->path.len = seg;
    if (wd_buf_append(&S->tmp, p + copied, len - copied) || wd_buf_append(&J->path, S->tmp.data, S->tmp.len))
        J->oom = true;
}

static void path_push_index(jsel_t *J, size_t i)
{
    if (wd_buf_printf(&J->path, "%s%zu", J->path.len ? "." : "", i)) J->oom = true;
}

/* Every string in tok's subtree, member names included: offline, plain identifiers are scanned too
 * (the gateway skips them, see wd_guard_plain_name). */
static void walk_all(jsel_t *J, int tok)
{
    const wd_json_tok_t *t = &J->doc->toks[tok];
    size_t saved = J->path.len;
    if (t->type == WD_JSON_STRING) {
        jsel_add(J, tok, false);
    } else if (t->type == WD_JSON_ARRAY) {
        int c = tok + 1;
        for (uint32_t i = 0; i < t->size; i++) {
            path_push_index(J, i);
            walk_all(J, c);
            J->path.len = saved;
            c = (int)J->doc->toks[c].next;
        }
    } else if (t->type == WD_JSON_OBJECT) {
        int k = tok + 1;
        for (uint32_t i = 0; i < t->size; i++) {
            path_push_key(J, k);
            jsel_add(J, k, true);
            walk_all(J, k + 1);
            J->path.len = saved;
            k = (int)J->doc->toks[k + 1].next;
        }
    }
}

/* Follows path segments from tok, selecting what the path names. A named segment that is absent is
 * "missing" unless a '*' came before it: a wildcard may legitimately meet an empty array or elements
 * without that member (a tool-call message without content). */
static void walk_path(jsel_t *J, int tok, const fpath_t *fp, size_t i, bool after_star, bool *missing)
{
    if (i == fp->nseg) {
        walk_all(J, tok);
        return;
    }
    const wd_json_tok_t *t = &J->doc->toks[tok];
    const char *seg = fp->seg[i];
    size_t saved = J->path.len;
    bool star = !strcmp(seg, "*"), found = false;
    if (t->type == WD_JSON_OBJECT) {
        int k = tok + 1;
        for (uint32_t m = 0; m < t->size && !found; m++) {
            if (star || wd_json_str_eq(J->doc, k, seg)) {
                path_push_key(J, k);
                walk_path(J, k + 1, fp, i + 1, after_star || star, missing);
                J->path.len = saved;
                found = !star; /* keys are unique (the parser refuses duplicates) */
            }
            k = (int)J->doc->toks[k + 1].next;
        }
    } else if (t->type == WD_JSON_ARRAY) {
        char *end = NULL;
        unsigned long idx = star ? 0 : strtoul(seg, &end, 10);
        bool numeric = !star && seg[0] >= '0' && seg[0] <= '9' && end && !*end;
        int c = tok + 1;
        for (uint32_t m = 0; m < t->size && (star || numeric) && !found; m++) {
            if (star || m == idx) {
                path_push_index(J, m);
                walk_path(J, c, fp, i + 1, after_star || star, missing);
                J->path.len = saved;
                found = !star;
            }
            c = (int)J->doc->toks[c].next;
        }
    }
    if (!star && !found && !after_star) *missing = true;
}

static int cmp_jstr(const void *a, const void *b)
{
    const jstr_t *x = a, *y = b;
    return (x->tok > y->tok) - (x->tok < y->tok);
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') return false;
    return true;
}

static int scan_jsonl(scan_t *S, rd_t *r)
{
    wd_buf_t rec, dec, rew, out;
    wd_buf_init(&rec, 0);
    wd_buf_init(&dec, 0);
    wd_buf_init(&rew, 0);
    wd_buf_init(&out, 0);
    jsel_t J = {.S = S};
    wd_buf_init(&J.path, 0);
    wd_buf_init(&J.paths, 0);
    wd_json_tok_t *toks = NULL;
    size_t ntoks = 0;
    wd_json_edit_t *edits = NULL;
    size_t *eoff = NULL;
    int rc = 0;
    for (uint64_t lineno = S->line0 + 1;; lineno++) {
        bool got, nl;
        if ((rc = read_line(S, r, &rec, lineno, &got, &nl))) break;
        if (!got) break;
        if (blank(rec.data, rec.len)) {
            if (S->out == OUT_ANON && ((rc = out_write(S, rec.data, rec.len)) || (nl && (rc = out_write(S, "\n", 1)))))
                break;
            continue;
        }
        /* Most records need far fewer tokens than the parser's worst case (len/2 + 1); try a small
         * array first so memory follows the record's shape, not its size. */
        wd_json_doc_t doc;
        char err[256];
        int pr = WD_E2BIG;
        size_t worst = rec.len / 2 + 1;
        for (size_t want = WD_MIN(worst, rec.len / 16 + 64); pr == WD_E2BIG;) {
            if (want > ntoks) {
                wd_json_tok_t *nt = realloc(toks, want * sizeof *nt);
                if (!nt) {
                    rc = fail(S, "out of memory");
                    goto done;
                }
                toks = nt;
                ntoks = want;
            }
            pr = wd_json_parse(&doc, rec.data, rec.len, toks, want, JSON_DEPTH, err, sizeof err);
            if (pr == WD_E2BIG && want < worst) want = worst;
            else break;
        }
        if (pr == WD_E2BIG) {
            rc = fail(S, "%s: invalid JSON on line %llu: nested deeper than %d levels", S->file,
                      (unsigned long long)lineno, JSON_DEPTH);
            break;
        }
        if (pr) {
            rc = fail(S, "%s: invalid JSON on line %llu: %s", S->file, (unsigned long long)lineno, err);
            break;
        }
        J.doc = &doc;
        J.n = 0;
        wd_buf_reset(&J.paths);
        wd_buf_reset(&J.path);
        if (!S->nfields) walk_all(&J, 0);
        for (size_t i = 0; i < S->nfields; i++) {
            wd_buf_reset(&J.path);
            bool missing = false;
            walk_path(&J, 0, &S->fields[i], 0, false, &missing);
            if (missing && !S->allow_missing) {
                rc = fail(S, "%s: line %llu has no field '%s' (--allow-missing skips such records)", S->file,
                          (unsigned long long)lineno, S->fields[i].text);
                goto done;
            }
        }
        if (J.oom || J.err) {
            rc = J.oom ? fail(S, "out of memory")
                       : fail(S, "%s: line %llu: scanning a member name failed (%s)", S->file,
                              (unsigned long long)lineno,
                              J.err == WD_E2BIG ? "too many findings or candidates" : "scanner error");
            break;
        }
        /* a string selected twice (overlapping --field paths) is scanned once, in document order */
        if (J.n > 1) qsort(J.v, J.n, sizeof *J.v, cmp_jstr); /* J.v is NULL in a record without strings */
        size_t u = 0;
        for (size_t i = 0; i < J.n; i++)
            if (!u || J.v[u - 1].tok != J.v[i].tok) J.v[u++] = J.v[i];
        J.n = u;
        size_t nedits = 0;
        bool name_edited = false;
        wd_buf_reset(&rew);
        inj_begin(S);
        if (S->out == OUT_ANON && J.n) {
            wd_json_edit_t *ne = realloc(edits, J.n * sizeof *ne);
            size_t *no = realloc(eoff, J.n * 2 * sizeof *no);
            if (ne) edits = ne;
            if (no) eoff = no;
            if (!ne || !no) {
                rc = fail(S, "out of memory");
                break;
            }
        }
        for (size_t i = 0; i < J.n; i++) {
            wd_buf_reset(&dec);
            if (wd_json_str_decode(&doc, J.v[i].tok, &dec)) {
                rc = fail(S, "out of memory");
                goto done;
            }
            bool changed = false;
            wd_buf_t val;
            wd_buf_init(&val, 0);
            S->in_name = J.v[i].name;
            rc = scan_value(S, dec.data ? dec.data : "", dec.len, "line", lineno,
                            J.paths.data ? J.paths.data + J.v[i].path_off : "",
                            J.v[i].path_len, NULL, 0, &val, &changed);
            S->in_name = false;
            name_edited |= changed && J.v[i].name;
            if (!rc && changed) {
                /* edits point into rew, which may move while it grows: keep offsets, fix up below */
                const wd_json_tok_t *t = &doc.toks[J.v[i].tok];
                eoff[2 * nedits] = rew.len;
                if (wd_buf_append_json_str(&rew, val.data, val.len)) rc = fail(S, "out of memory");
                eoff[2 * nedits + 1] = rew.len;
                edits[nedits++] = (wd_json_edit_t){t->start, t->end, {NULL, 0}};
            }
            if (val.data) sodium_memzero(val.data, val.cap);
            wd_buf_free(&val);
            if (rc) goto done;
        }
        if (S->inj_on) {
            char where[4200];
            snprintf(where, sizeof where, "%s line %llu", S->file, (unsigned long long)lineno);
            if ((rc = inj_report(S, where))) break;
        }
        if (S->out == OUT_ANON) {
            for (size_t i = 0; i < nedits; i++)
                edits[i].with = wd_str(rew.data + eoff[2 * i], eoff[2 * i + 1] - eoff[2 * i]);
            wd_buf_reset(&out);
            if (wd_json_apply_edits(rec.data, rec.len, edits, nedits, &out)) {
                rc = fail(S, "out of memory");
                break;
            }
            /* strings replaced by strings keep the token count; only names anonymized alike fail */
            if (name_edited && wd_json_parse(&doc, out.data, out.len, toks, ntoks, JSON_DEPTH, NULL, 0)) {
                rc = fail(S,
                          "%s: line %llu: two member names of one object are the same once anonymized "
                          "(pseudonymize keeps distinct names apart while --max-pseudonyms lasts)",
                          S->file, (unsigned long long)lineno);
                break;
            }
            if (nl && wd_buf_append(&out, "\n", 1)) {
                rc = fail(S, "out of memory");
                break;
            }
            if ((rc = out_write(S, out.data, out.len))) break;
        }
    }
done:
    if (rec.data) sodium_memzero(rec.data, rec.cap);
    if (dec.data) sodium_memzero(dec.data, dec.cap);
    wd_buf_free(&rec);
    wd_buf_free(&dec);
    wd_buf_free(&rew);
    wd_buf_free(&out);
    /* paths and the path store held raw member names before they were redacted */
    if (J.path.data) sodium_memzero(J.path.data, J.path.cap);
    if (J.paths.data) sodium_memzero(J.paths.data, J.paths.cap);
    wd_buf_free(&J.path);
    wd_buf_free(&J.paths);
    free(J.v);
    free(toks);
    free(edits);
    free(eoff);
    return rc;
}

/* ---- CSV (RFC 4180) ------------------------------------------------------------------------------ */

typedef struct {
    size_t start, end; /* raw span in the record, quotes included */
    bool quoted;
} cfield_t;

/* Reads one raw record: up to a newline outside quotes (the terminator, "\n" or "\r\n", is left out
 * and reported in *term). Bounded by --max-record-bytes. Only a quote that opens a field starts a
 * quoted section, so a stray quote inside an unquoted field is left for split_record to report. */
static int read_record(scan_t *S, rd_t *r, wd_buf_t *rec, uint64_t recno, uint64_t line, bool *got, const char **term,
                       uint64_t *lines)
{
    enum { F_START, F_PLAIN, F_QUOTED, F_QUOTE } st = F_START; /* F_QUOTE: a quote seen inside quotes */
    wd_buf_reset(rec);
    *got = false;
    *term = "";
    *lines = 0;
    for (;;) {
        if (r->pos == r->len) {
            if (r->eof) break;
            if (rd_fill(S, r)) return -1;
            continue;
        }
        *got = true;
        const char *p = r->buf + r->pos;
        size_t avail = r->len - r->pos, n = 0;
        bool end = false;
        for (; n < avail && !end; n++) {
            char c = p[n];
            if (c == '\n') (*lines)++;
            switch (st) {
            case F_START:
            case F_PLAIN:
                if (c == ',') st = F_START;
                else if (c == '\n') end = true;
                else if (c == '"' && st == F_START) st = F_QUOTED;
                else st = F_PLAIN;
                break;
            case F_QUOTED:
                if (c == '"') st = F_QUOTE;
                break;
            case F_QUOTE:
                if (c == '"') st = F_QUOTED;
                else if (c == ',') st = F_START;
                else if (c == '\n') end = true;
                else st = F_PLAIN;
                break;
            }
        }
        size_t take = end ? n - 1 : n; /* the newline is not part of the record */
        if (rec->len + take > S->max_record)
            return fail(S, "%s: record %llu (line %llu) is longer than --max-record-bytes (%zu bytes)", S->file,
                        (unsigned long long)recno, (unsigned long long)line, S->max_record);
        if (wd_buf_append(rec, p, take)) return fail(S, "out of memory");
        r->pos += n;
        if (end) {
            *term = "\n";
            if (rec->len && rec->data[rec->len - 1] == '\r') {
                rec->len--;
                *term = "\r\n";
            }
            return 0;
        }
    }
    if (st == F_QUOTED)
        return fail(S, "%s: bad CSV quoting at record %llu (line %llu): a quoted field is not closed before the end "
                       "of the input",
                    S->file, (unsigned long long)recno, (unsigned long long)line);
    return 0;
}

/* Splits a record into fields, refusing what RFC 4180 does not allow (a quote inside an unquoted
 * field, text after a closing quote). */
static int split_record(scan_t *S, const char *p, size_t len, uint64_t recno, uint64_t line, cfield_t **fv,
                        size_t *nf, size_t *capf)
{
    *nf = 0;
    size_t i = 0;
    for (;;) {
        cfield_t f = {i, i, false};
        if (i < len && p[i] == '"') {
            f.quoted = true;
            i++;
            for (;;) {
                if (i >= len)
                    return fail(S, "%s: bad CSV quoting at record %llu (line %llu): field %zu is not closed", S->file,
                                (unsigned long long)recno, (unsigned long long)line, *nf + 1);
                if (p[i] == '"') {
                    if (i + 1 < len && p[i + 1] == '"') {
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                i++;
            }
            if (i < len && p[i] != ',')
                return fail(S, "%s: bad CSV quoting at record %llu (line %llu): text after the closing quote of field %zu",
                            S->file, (unsigned long long)recno, (unsigned long long)line, *nf + 1);
        } else {
            while (i < len && p[i] != ',') {
                if (p[i] == '"')
                    return fail(S, "%s: bad CSV quoting at record %llu (line %llu): a quote inside unquoted field %zu",
                                S->file, (unsigned long long)recno, (unsigned long long)line, *nf + 1);
                i++;
            }
        }
        f.end = i;
        if (grow(fv, *nf, capf, sizeof f)) return fail(S, "out of memory");
        (*fv)[(*nf)++] = f;
        if (i >= len) return 0;
        i++; /* the comma */
        if (i == len) {
            if (grow(fv, *nf, capf, sizeof **fv)) return fail(S, "out of memory");
            (*fv)[(*nf)++] = (cfield_t){i, i, false};
            return 0;
        }
    }
}

static int field_value(const char *p, const cfield_t *f, wd_buf_t *out)
{
    wd_buf_reset(out);
    if (f->end == f->start) return WD_OK; /* p may be NULL: an empty header record has no buffer yet */
    if (!f->quoted) return wd_buf_append(out, p + f->start, f->end - f->start);
    for (size_t i = f->start + 1; i + 1 < f->end; i++) {
        if (wd_buf_append(out, p + i, 1)) return WD_ENOMEM;
        if (p[i] == '"') i++; /* "" is one quote */
    }
    return 0;
}

static int append_csv_field(wd_buf_t *b, const char *p, size_t len, bool quote)
{
    for (size_t i = 0; i < len && !quote; i++) quote = p[i] == ',' || p[i] == '"' || p[i] == '\n' || p[i] == '\r';
    if (!quote) return wd_buf_append(b, p, len);
    int rc = wd_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len && !rc; i++) rc = p[i] == '"' ? wd_buf_append(b, "\"\"", 2) : wd_buf_append(b, p + i, 1);
    return rc ? rc : wd_buf_append(b, "\"", 1);
}

static int scan_csv(scan_t *S, rd_t *r)
{
    wd_buf_t rec, val, rew, out, hdr;
    wd_buf_init(&rec, 0);
    wd_buf_init(&val, 0);
    wd_buf_init(&rew, 0);
    wd_buf_init(&out, 0);
    wd_buf_init(&hdr, 0);
    cfield_t *fv = NULL;
    size_t nf = 0, capf = 0;
    size_t *hoff = NULL, nh = 0;   /* header names: offsets into hdr (NUL-terminated) */
    size_t *sel = NULL, nsel = 0;  /* selected columns, 0-based; all when nsel == 0 */
    bool *want = NULL;
    size_t nwant = 0;
    int rc = 0;
    uint64_t line = 1;
    for (uint64_t recno = 1;; recno++) {
        bool got;
        const char *term;
        uint64_t lines;
        if ((rc = read_record(S, r, &rec, recno, line, &got, &term, &lines))) break;
        if (!got) break;
        uint64_t rline = line;
        line += lines;
        bool is_header = S->header && recno == 1;
        if (rec.len == 0 && !is_header) { /* blank line: no fields to scan */
            if (S->out == OUT_ANON && (rc = out_write(S, term, strlen(term)))) break;
            continue;
        }
        if ((rc = split_record(S, rec.data, rec.len, recno, rline, &fv, &nf, &capf))) break;
        if (recno == 1) {
            /* the columns are resolved once per file, against its own header */
            if (S->header) {
                hoff = calloc(nf, sizeof *hoff);
                if (!hoff) {
                    rc = fail(S, "out of memory");
                    break;
                }
                for (size_t i = 0; i < nf && !rc; i++) {
                    hoff[i] = hdr.len;
                    if (field_value(rec.data, &fv[i], &val) || wd_buf_append(&hdr, val.data, val.len) ||
                        wd_buf_append(&hdr, "\0", 1))
                        rc = fail(S, "out of memory");
                }
                nh = nf;
                if (rc) break;
            }
            if (S->ncolspec && !(sel = calloc(S->ncolspec, sizeof *sel))) {
                rc = fail(S, "out of memory");
                break;
            }
            for (size_t i = 0; i < S->ncolspec && !rc; i++) {
                const char *c = S->colspec[i];
                char *end = NULL;
                unsigned long n = c[0] >= '0' && c[0] <= '9' ? strtoul(c, &end, 10) : 0;
                bool numeric = end && !*end;
                if (numeric && !S->header) {
                    if (n == 0) rc = fail(S, "--column %s: columns are numbered from 1", c);
                    sel[nsel++] = n - 1;
                    continue;
                }
                size_t k = 0;
                while (k < nh && strcmp(hdr.data + hoff[k], c) != 0) k++;
                if (k < nh) {
                    sel[nsel++] = k;
                } else if (numeric && n > 0) {
                    sel[nsel++] = n - 1; /* a number that is not also a header name */
                } else if (!S->header) {
                    rc = fail(S, "--column %s: columns are named only with a header (without --no-header); use a "
                                 "1-based number",
                              c);
                } else {
                    wd_buf_t names;
                    wd_buf_init(&names, 4096);
                    for (size_t j = 0; j < nh; j++) wd_buf_printf(&names, "%s%s", j ? ", " : "", hdr.data + hoff[j]);
                    rc = fail(S, "%s: unknown column '%s' (header: %.*s)", S->file, c, (int)WD_MIN(names.len, 800),
                              names.data ? names.data : "");
                    wd_buf_free(&names);
                }
            }
            if (rc) break;
            size_t maxc = 0;
            for (size_t i = 0; i < nsel; i++) maxc = WD_MAX(maxc, sel[i] + 1);
            nwant = maxc;
            if (nwant && !(want = calloc(nwant, sizeof *want))) {
                rc = fail(S, "out of memory");
                break;
            }
            for (size_t i = 0; i < nsel; i++) want[sel[i]] = true;
        }
        if (is_header) {
            if (S->out == OUT_ANON && ((rc = out_write(S, rec.data, rec.len)) || (rc = out_write(S, term, strlen(term)))))
                break;
            continue;
        }
        if (nsel && nf < nwant) {
            size_t missing = 0;
            for (size_t i = 0; i < nsel && !missing; i++)
                if (sel[i] >= nf) missing = sel[i] + 1;
            if (!S->allow_missing) {
                rc = fail(S, "%s: record %llu (line %llu) has %zu field%s; column %zu is missing (--allow-missing skips "
                             "such records)",
                          S->file, (unsigned long long)recno, (unsigned long long)rline, nf, nf == 1 ? "" : "s",
                          missing);
                break;
            }
            if (S->out == OUT_ANON && ((rc = out_write(S, rec.data, rec.len)) || (rc = out_write(S, term, strlen(term)))))
                break;
            continue;
        }
        wd_buf_reset(&out);
        inj_begin(S);
        for (size_t i = 0; i < nf; i++) {
            bool selected = nsel ? (i < nwant && want[i]) : true;
            bool changed = false;
            if (selected) {
                if (field_value(rec.data, &fv[i], &val)) {
                    rc = fail(S, "out of memory");
                    goto done;
                }
                const char *cname = S->header && i < nh ? hdr.data + hoff[i] : NULL;
                rc = scan_value(S, val.data ? val.data : "", val.len, "record", recno, NULL, 0, cname, i + 1, &rew,
                                &changed);
                if (rc) goto done;
            }
            if (S->out != OUT_ANON) continue;
            int wr = i ? wd_buf_append(&out, ",", 1) : 0;
            if (!wr) wr = changed ? append_csv_field(&out, rew.data, rew.len, fv[i].quoted)
                                  : wd_buf_append(&out, rec.data + fv[i].start, fv[i].end - fv[i].start);
            if (wr) {
                rc = fail(S, "out of memory");
                goto done;
            }
        }
        if (S->inj_on) {
            char where[4200];
            snprintf(where, sizeof where, "%s record %llu", S->file, (unsigned long long)recno);
            if ((rc = inj_report(S, where))) break;
        }
        if (S->out == OUT_ANON && ((rc = out_write(S, out.data, out.len)) || (rc = out_write(S, term, strlen(term)))))
            break;
    }
done:
    if (rec.data) sodium_memzero(rec.data, rec.cap);
    if (val.data) sodium_memzero(val.data, val.cap);
    if (rew.data) sodium_memzero(rew.data, rew.cap);
    wd_buf_free(&rec);
    wd_buf_free(&val);
    wd_buf_free(&rew);
    wd_buf_free(&out);
    wd_buf_free(&hdr);
    free(fv);
    free(hoff);
    free(sel);
    free(want);
    return rc;
}

/* ---- setup ------------------------------------------------------------------------------------------- */

static int parse_fields(scan_t *S, const wd_cli_opt_t *o)
{
    if (!o->n) return 0;
    S->fields = calloc(o->n, sizeof *S->fields);
    if (!S->fields) return fail(S, "out of memory");
    for (size_t i = 0; i < o->n; i++) {
        fpath_t *fp = &S->fields[S->nfields++];
        fp->text = o->vals[i];
        size_t n = 1;
        for (const char *c = fp->text; *c; c++) n += *c == '.';
        fp->copy = strdup(fp->text);
        fp->seg = calloc(n, sizeof *fp->seg);
        if (!fp->copy || !fp->seg) return fail(S, "out of memory");
        for (char *c = fp->copy, *tok = c;; c++) {
            if (*c == '.' || !*c) {
                bool last = !*c;
                *c = '\0';
                if (!*tok)
                    return fail(S, "--field '%s': empty path segment (write a.b.0.c, '*' for every element)", fp->text);
                fp->seg[fp->nseg++] = tok;
                tok = c + 1;
                if (last) break;
            }
        }
    }
    return 0;
}

static void free_fields(scan_t *S)
{
    for (size_t i = 0; i < S->nfields; i++) {
        free(S->fields[i].copy);
        free(S->fields[i].seg);
    }
    free(S->fields);
}

/* 32 raw bytes, or 64 hex digits with an optional final newline. */
static int load_key(scan_t *S, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(S, "--hash-key-file %s: %s", path, strerror(errno));
    unsigned char buf[80];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0 || (n += (size_t)k) == sizeof buf) break;
    }
    close(fd);
    int rc = 0;
    if (n == 32) {
        memcpy(S->key, buf, 32);
    } else if (n == 64 || (n == 65 && buf[64] == '\n') || (n == 66 && buf[64] == '\r' && buf[65] == '\n')) {
        for (size_t i = 0; i < 32 && !rc; i++) {
            int hi = wd_hex_digit(buf[2 * i]), lo = wd_hex_digit(buf[2 * i + 1]);
            if (hi < 0 || lo < 0) rc = fail(S, "--hash-key-file %s: 64 characters but not hex digits", path);
            S->key[i] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        rc = fail(S, "--hash-key-file %s: expected 32 bytes (or 64 hex digits), got %zu bytes", path, n);
    }
    sodium_memzero(buf, sizeof buf);
    if (!rc) S->have_key = true;
    return rc;
}

/* The deployment's key (derived from the state directory's master key by the store, as the gateway
 * uses it), so a file hashed here matches what the gateway sends upstream. */
static int deployment_key(scan_t *S)
{
    char err[1024];
    wd_store_t *st = NULL;
    if (wd_store_open(S->cfg->state_dir, &st, err, sizeof err) != WD_OK) return fail(S, "%s", err);
    memcpy(S->key, st->guard_hash_key, sizeof S->key);
    wd_store_close(st);
    S->have_key = true;
    return 0;
}

/* --class: every class named must be some rule's; the other rules are never compiled or scanned. */
static int select_classes(scan_t *S, const char *dir)
{
    size_t n = wd_guard_db_nrules(S->db);
    for (size_t k = 0; k < S->nclasses; k++) {
        size_t i = 0;
        while (i < n && strcmp(wd_guard_db_rule(S->db, i)->cls, S->classes[k]) != 0)
            i++;
        if (i < n) continue;
        wd_buf_t names; /* the classes the directory has, each once, in rule order */
        wd_buf_init(&names, 0);
        for (i = 0; i < n; i++) {
            const char *c = wd_guard_db_rule(S->db, i)->cls;
            size_t j = 0;
            while (j < i && strcmp(wd_guard_db_rule(S->db, j)->cls, c) != 0)
                j++;
            if (j == i) wd_buf_printf(&names, "%s%s", names.len ? ", " : "", c);
        }
        wd_buf_append(&names, "", 1);
        fail(S, "--class '%s': no rule in %s has this class (classes there: %s)", S->classes[k], dir,
             names.len > 1 ? names.data : "none");
        wd_buf_free(&names);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!selected(S, wd_guard_db_rule(S->db, i)) && wd_guard_db_set_uses(S->db, i, 0))
            return fail(S, "out of memory");
    return 0;
}

/* Every rule of dir (--class: of those classes), compiled or loaded from the cache directory (NULL:
 * none); a cache that cannot be used is a warning, never an error. */
static int load_db(scan_t *S, const char *dir, const char *cache)
{
    char err[1024];
    S->db = wd_guard_db_parse(dir, err, sizeof err);
    if (!S->db) return fail(S, "%s", err);
    if (select_classes(S, dir)) return 1;
    if (wd_guard_db_set_cache(S->db, cache)) return fail(S, "out of memory");
    if (wd_guard_db_compile(S->db, err, sizeof err)) return fail(S, "%s", err);
    unsigned compiled;
    const char *problem;
    wd_guard_db_cache_stats(S->db, &compiled, &problem);
    if (problem) fprintf(stderr, "%s: warning: rule cache: %s\n", S->cli.prog, problem);
    return 0;
}

/* The rules: --rules DIR, or the config's guard section (its rules_dir resolved against the config
 * file's directory, as the loader does). Also points the gazetteer at the same directory. The cache:
 * --cache-dir, else the config's (guard.cache, cache_dir), else the environment's; --no-cache: none. */
static int load_rules(scan_t *S, const char *rules_opt, const char *config, const char *cache_opt, bool no_cache)
{
    char err[1024], dir[4096], cdir[4096];
    const char *cache = cache_opt;
    if (!cache && !no_cache && !config && wd_hs_cache_default_dir(cdir, sizeof cdir)) cache = cdir;
    if (config) {
        S->cfg = wd_config_load_ex(config, WD_CONFIG_NO_SCAN, err, sizeof err); /* S->db below scans */
        if (!S->cfg) return fail(S, "%s", err);
        if (!S->cfg->guard_db) return fail(S, "%s has no guard section (guard: { rules_dir: ... })", config);
        const char *rd = S->cfg->guard.rules_dir, *slash = strrchr(config, '/');
        if (rd[0] != '/' && slash) snprintf(dir, sizeof dir, "%.*s/%s", (int)(slash - config), config, rd);
        else snprintf(dir, sizeof dir, "%s", rd);
        if (!cache && !no_cache) cache = S->cfg->guard.cache_dir;
        /* the config's own db holds only the rules its profiles act on; a scan reports every rule */
        if (load_db(S, dir, cache)) return 1;
    } else {
        snprintf(dir, sizeof dir, "%s", rules_opt ? rules_opt : "rules");
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return fail(S, "rules directory '%s' %s (pass --rules DIR or -c CONFIG)", dir,
                        stat(dir, &st) != 0 ? strerror(errno) : "is not a directory");
        if (load_db(S, dir, cache)) return 1;
    }
    wd_validators_set_data_dir(dir);
    /* a missing gazetteer would silently drop every PERSON finding: refuse instead */
    if (wd_guard_db_uses_validator(S->db, "person_name") && wd_validators_load_data(err, sizeof err) != WD_OK)
        return fail(S, "%s", err);
    return 0;
}

static int check_input(scan_t *S, const char *path)
{
    if (!strcmp(path, "-")) return 0;
    struct stat st;
    if (stat(path, &st) != 0) return fail(S, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return fail(S, "%s: is a directory", path);
    if (access(path, R_OK) != 0) return fail(S, "%s: %s", path, strerror(errno));
    return 0;
}

/* ---- --jobs: a JSON lines file in parts, one process each ------------------------------------------ */

#define MIN_PART (256 * 1024) /* a file is split only into parts at least this large */

/* Part k of S->jobs of the file on fd (size bytes): [cut[k], cut[k + 1]), each cut just after a newline,
 * and lines[k], the newlines before cut[k]. Returns the number of parts. */
static int split_points(scan_t *S, int fd, uint64_t size, char *buf, uint64_t *cut, uint64_t *lines,
                        unsigned *nparts)
{
    unsigned n = (unsigned)WD_MIN((uint64_t)S->jobs, size / MIN_PART);
    if (n < 2) {
        *nparts = 1;
        return 0;
    }
    unsigned k = 0;
    uint64_t off = 0, nl = 0;
    cut[0] = lines[0] = 0;
    while (off < size && k + 1 < n) {
        ssize_t got = pread(fd, buf, (size_t)WD_MIN((uint64_t)BLOCK, size - off), (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return fail(S, "%s: read error: %s", S->file, got < 0 ? strerror(errno) : "file shrank");
        for (const char *p = buf, *e = buf + got; (p = memchr(p, '\n', (size_t)(e - p))); p++) {
            nl++;
            uint64_t at = off + (uint64_t)(p - buf) + 1;
            if (k + 1 < n && at >= size / n * (k + 1) && at < size) {
                cut[++k] = at;
                lines[k] = nl;
            }
        }
        off += (uint64_t)got;
    }
    *nparts = k + 1;
    cut[k + 1] = size;
    return 0;
}

/* Copies the temporary file fd to out from its start; closes it. */
static int copy_back(scan_t *S, int fd, FILE *out, char *buf)
{
    int rc = lseek(fd, 0, SEEK_SET) < 0 ? -1 : 0;
    for (ssize_t n; !rc && (n = read(fd, buf, BLOCK)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || fwrite(buf, 1, (size_t)n, out) != (size_t)n) rc = -1;
    }
    close(fd);
    return rc ? fail(S, "%s: collecting a part's output: %s", S->file, strerror(errno)) : 0;
}

static int scan_jsonl(scan_t *S, rd_t *r);

/* An unnamed temporary file in dir: O_TMPFILE, else (a file system without it) a named one unlinked
 * at once. */
static int temp_file(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/warden-scan-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) unlink(path);
    return fd;
}

/* Scans the parts of a JSON lines file in S->jobs processes at once, each writing to a temporary file,
 * and writes their outputs in order: the same bytes, findings and exit status as one process, and on an
 * error in some part, the output before it and its message only. */
static int scan_parts(scan_t *S, int fd, uint64_t size, char *buf)
{
    uint64_t cut[257], lines[257];
    unsigned n = 1;
    if (split_points(S, fd, size, buf, cut, lines, &n)) return -1;
    if (n < 2) {
        rd_t r = {.fd = fd, .buf = buf, .left = UINT64_MAX, .at = -1};
        return scan_jsonl(S, &r);
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    pid_t pid[256];
    int out[256], err[256];
    unsigned started = 0;
    int rc = 0;
    if (fflush(S->o) || fflush(stderr)) return fail(S, "writing the output: %s", strerror(errno));
    for (unsigned k = 0; k < n && !rc; k++) {
        out[k] = temp_file(tmp);
        err[k] = out[k] >= 0 ? temp_file(tmp) : -1;
        if (err[k] < 0) {
            rc = fail(S, "%s: a temporary file in %s: %s", S->file, tmp, strerror(errno));
            if (out[k] >= 0) close(out[k]);
            break;
        }
        pid[k] = fork();
        if (pid[k] < 0) {
            rc = fail(S, "fork: %s", strerror(errno));
            close(out[k]);
            close(err[k]);
            break;
        }
        if (pid[k] == 0) { /* the part: its own output and messages, its exit status as the command's */
            FILE *o = fdopen(out[k], "w");
            if (!o || dup2(err[k], STDERR_FILENO) < 0) _exit(WD_EXIT_USAGE);
            S->o = o;
            S->line0 = lines[k];
            rd_t r = {.fd = fd, .buf = buf, .left = cut[k + 1] - cut[k], .at = (int64_t)cut[k]};
            int crc = scan_jsonl(S, &r);
            if (fflush(o) && !crc) crc = fail(S, "writing the output: %s", strerror(errno));
            _exit(crc ? WD_EXIT_USAGE : S->total ? WD_EXIT_FAIL : WD_EXIT_OK);
        }
        started++;
    }
    /* every process started is waited for; outputs are written in order up to the first failure */
    for (unsigned k = 0; k < started; k++) {
        int st = 0;
        while (waitpid(pid[k], &st, 0) < 0 && errno == EINTR) {
        }
        if (rc) { /* an earlier part failed: nothing of this one is written */
            close(out[k]);
            close(err[k]);
            continue;
        }
        rc = copy_back(S, out[k], S->o, buf); /* closes out[k] */
        if (!rc) rc = copy_back(S, err[k], stderr, buf);
        else close(err[k]);
        if (rc) continue;
        if (WIFEXITED(st) && WEXITSTATUS(st) == WD_EXIT_FAIL)
            S->total++;
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != WD_EXIT_OK)
            rc = WIFEXITED(st)
                     ? -1 /* its message is out */
                     : fail(S, "%s: the process for bytes %llu-%llu ended by signal %d", S->file,
                            (unsigned long long)cut[k], (unsigned long long)cut[k + 1], WTERMSIG(st));
    }
    return rc;
}

static int scan_input(scan_t *S, const char *path, char *buf)
{
    bool in = !strcmp(path, "-");
    rd_t r = {
        .fd = in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC), .buf = buf, .left = UINT64_MAX, .at = -1};
    if (r.fd < 0) return fail(S, "%s: %s", path, strerror(errno));
    S->file = path;
    S->file_hit = false;
    struct stat st;
    if (S->jobs > 1 && S->fmt == FMT_JSONL && fstat(r.fd, &st) == 0 && S_ISREG(st.st_mode)) {
        int rc = scan_parts(S, r.fd, (uint64_t)st.st_size, buf);
        if (!in) close(r.fd);
        if (!rc && fflush(S->o)) rc = fail(S, "writing the output: %s", strerror(errno));
        return rc;
    }
    int rc = 1;
    if (S->fmt == FMT_TEXT && S->out != OUT_EXPLAIN && fstat(r.fd, &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_size <= (off_t)WHOLE_MAX)
        rc = scan_text_whole(S, &r);
    if (rc == 1)
        rc = S->fmt == FMT_TEXT    ? scan_text(S, &r)
             : S->fmt == FMT_JSONL ? scan_jsonl(S, &r)
                                   : scan_csv(S, &r);
    if (!in) close(r.fd);
    if (!rc && fflush(S->o)) rc = fail(S, "writing the output: %s", strerror(errno));
    return rc;
}

int wd_cmd_scan(int argc, char **argv)
{
    scan_t S = {.cli = {.prog = "warden scan"}, .o = stdout, .action = WD_ACT_REDACT, .min_score = -1.0f,
                .max_record = DEFAULT_MAX_RECORD, .header = true};
    wd_cli_opt_t opts[] = {
        {.name = "rules", .arg = true},
        {.name = "config", .short_name = 'c', .arg = true},
        {.name = "min-score", .arg = true},
        {.name = "format", .arg = true},
        {.name = "jsonl"},
        {.name = "csv"},
        {.name = "field", .arg = true, .multi = true},
        {.name = "column", .arg = true, .multi = true},
        {.name = "no-header"},
        {.name = "allow-missing"},
        {.name = "max-record-bytes", .arg = true},
        {.name = "output", .arg = true},
        {.name = "explain"},
        {.name = "profile", .arg = true},
        {.name = "action", .arg = true},
        {.name = "hash-key-file", .arg = true},
        {.name = "max-pseudonyms", .arg = true},
        {.name = "cache-dir", .arg = true},
        {.name = "no-cache"},
        {.name = "class", .arg = true, .multi = true},
        {.name = "jobs", .short_name = 'j', .arg = true},
        {.name = "help", .short_name = 'h'},
    };
    const size_t N = WD_ARRAY_LEN(opts);
    const char *files[MAX_FILES];
    size_t nfiles = 0;
    int rc = wd_cli_parse(&S.cli, argc - 1, argv + 1, opts, N, files, MAX_FILES, &nfiles);
    if (rc) return rc;
    if (wd_cli_flag(opts, N, "help")) {
        usage(stdout);
        return WD_EXIT_OK;
    }
    wd_vault_init(&S.vault);
    S.vault.max_entries = DEFAULT_VAULT;
    wd_findings_init(&S.f);
    wd_buf_init(&S.tmp, 0);
    wd_buf_init(&S.line, 0);
    char *iobuf = NULL;
    rc = WD_EXIT_USAGE;

    /* ---- options: everything is checked before any input is read or output written ---- */
    const char *fmt = wd_cli_val(opts, N, "format"), *outv = wd_cli_val(opts, N, "output");
    bool jsonl = wd_cli_flag(opts, N, "jsonl"), csv = wd_cli_flag(opts, N, "csv");
    if ((jsonl && csv) || (fmt && (jsonl || csv))) {
        fail(&S, "give one input format: --format text|jsonl|csv (or --jsonl, --csv)");
        goto out;
    }
    if (jsonl) fmt = "jsonl";
    if (csv) fmt = "csv";
    if (!fmt || !strcmp(fmt, "text")) S.fmt = FMT_TEXT;
    else if (!strcmp(fmt, "jsonl")) S.fmt = FMT_JSONL;
    else if (!strcmp(fmt, "csv")) S.fmt = FMT_CSV;
    else {
        fail(&S, "--format '%s': expected text, jsonl or csv", fmt);
        goto out;
    }
    if (!outv || !strcmp(outv, "findings")) S.out = OUT_FINDINGS;
    else if (!strcmp(outv, "anonymized") || !strcmp(outv, "anonymised")) S.out = OUT_ANON;
    else {
        fail(&S, "--output '%s': expected findings or anonymized", outv);
        goto out;
    }
    if (wd_cli_flag(opts, N, "explain")) {
        if (S.out == OUT_ANON) {
            fail(&S, "--explain prints a report; it cannot be combined with --output anonymized");
            goto out;
        }
        S.out = OUT_EXPLAIN;
    }
    const wd_cli_opt_t *fo = wd_cli_opt(opts, N, "field"), *co = wd_cli_opt(opts, N, "column");
    if (fo->n && S.fmt != FMT_JSONL) {
        fail(&S, "--field applies to JSON lines (--jsonl)");
        goto out;
    }
    if ((co->n || wd_cli_flag(opts, N, "no-header")) && S.fmt != FMT_CSV) {
        fail(&S, "--column and --no-header apply to CSV (--csv)");
        goto out;
    }
    if (parse_fields(&S, fo)) goto out;
    S.colspec = co->vals;
    S.ncolspec = co->n;
    for (size_t i = 0; i < co->n; i++)
        if (!co->vals[i][0]) {
            fail(&S, "--column: empty column name");
            goto out;
        }
    S.header = !wd_cli_flag(opts, N, "no-header");
    S.allow_missing = wd_cli_flag(opts, N, "allow-missing");
    const char *v = wd_cli_val(opts, N, "max-record-bytes");
    if (v) {
        uint64_t b;
        if (wd_config_parse_bytes(v, strlen(v), &b) || b < 1 || b > MAX_MAX_RECORD) {
            fail(&S, "--max-record-bytes '%s': expected a size from 1 to 1GiB (e.g. 16MiB)", v);
            goto out;
        }
        S.max_record = (size_t)b;
    }
    if ((v = wd_cli_val(opts, N, "max-pseudonyms"))) {
        char *end = NULL;
        unsigned long n = strtoul(v, &end, 10);
        if (!(v[0] >= '0' && v[0] <= '9') || *end || n < 1 || n > MAX_VAULT) {
            fail(&S, "--max-pseudonyms '%s': expected a number from 1 to %d", v, MAX_VAULT);
            goto out;
        }
        S.vault.max_entries = n;
    }
    const char *profile = wd_cli_val(opts, N, "profile"), *action = wd_cli_val(opts, N, "action");
    const char *config = wd_cli_val(opts, N, "config"), *rules = wd_cli_val(opts, N, "rules");
    if (profile && action) {
        fail(&S, "--profile and --action are exclusive: the profile decides the action per type");
        goto out;
    }
    if (profile && !config) {
        fail(&S, "--profile needs -c CONFIG (profiles are defined in its guard_profiles)");
        goto out;
    }
    if (config && rules) {
        fail(&S, "--rules and -c are exclusive: the config names its rules (guard.rules_dir)");
        goto out;
    }
    if (action) {
        static const char *const allowed[] = {"redact", "mask", "hash", "pseudonymize"};
        bool ok = false;
        for (size_t i = 0; i < WD_ARRAY_LEN(allowed) && !ok; i++) ok = !strcmp(action, allowed[i]);
        if (!ok || wd_action_parse(action, strlen(action), &S.action)) {
            fail(&S, "--action '%s': expected redact, mask, hash or pseudonymize", action);
            goto out;
        }
    }
    if ((v = wd_cli_val(opts, N, "min-score")) && wd_cli_min_score(&S.cli, v, &S.min_score)) goto out;
    S.jobs = 1;
    if ((v = wd_cli_val(opts, N, "jobs"))) {
        char *end = NULL;
        unsigned long j = strtoul(v, &end, 10);
        if (!(v[0] >= '0' && v[0] <= '9') || *end || j < 1 || j > 256) {
            fail(&S, "--jobs '%s': expected a number of processes from 1 to 256", v);
            goto out;
        }
        S.jobs = (unsigned)j;
    }
    if (S.jobs > 1 && S.fmt != FMT_JSONL) {
        fail(&S, "--jobs applies to JSON lines (--jsonl)");
        goto out;
    }
    if (S.jobs > 1 && S.out == OUT_EXPLAIN) {
        fail(&S, "--jobs cannot be combined with --explain (its summary and screen cover the whole run)");
        goto out;
    }
    bool stdin_seen = false;
    for (size_t i = 0; i < nfiles; i++) {
        if (!strcmp(files[i], "-")) {
            if (stdin_seen) {
                fail(&S, "stdin (-) given more than once");
                goto out;
            }
            stdin_seen = true;
        }
        /* an unreadable file is reported before anything is written */
        if (check_input(&S, files[i])) goto out;
    }
    if (sodium_init() < 0) {
        fail(&S, "libsodium failed to initialise");
        goto out;
    }
    if ((v = wd_cli_val(opts, N, "hash-key-file")) && load_key(&S, v)) goto out;

    /* ---- rules, profile ---- */
    const wd_cli_opt_t *clo = wd_cli_opt(opts, N, "class");
    if (clo->n) {
        int nc = wd_cli_split(&S.cli, clo, &S.classes_store, S.classes, WD_ARRAY_LEN(S.classes));
        if (nc < 0) goto out;
        S.nclasses = (size_t)nc;
    }
    const char *cache_dir = wd_cli_val(opts, N, "cache-dir");
    if (cache_dir && (wd_cli_flag(opts, N, "no-cache") || !cache_dir[0])) {
        fail(&S, cache_dir[0] ? "--cache-dir and --no-cache are exclusive" : "--cache-dir: empty directory name");
        goto out;
    }
    if (load_rules(&S, rules, config, cache_dir, wd_cli_flag(opts, N, "no-cache"))) goto out;
    if (profile) {
        S.profile = wd_config_profile(S.cfg, profile);
        if (!S.profile) {
            wd_buf_t names;
            wd_buf_init(&names, 0);
            for (size_t i = 0; i < S.cfg->nprofiles; i++)
                wd_buf_printf(&names, "%s%s", i ? ", " : "", S.cfg->profiles[i].name);
            wd_buf_append(&names, "", 1);
            fail(&S, "unknown profile '%s' in %s (defined: %s)", profile, config,
                 names.len > 1 ? names.data : "none");
            wd_buf_free(&names);
            goto out;
        }
    }
    if (S.min_score < 0) S.min_score = S.cfg ? (float)S.cfg->guard.min_score / 100.0f : 0.5f;
    if (S.out == OUT_EXPLAIN) {
        /* the screen as the gateway runs it for this profile; without one, the gateway's defaults */
        const wd_guard_injection_cfg_t *ic = S.profile ? &S.profile->injection : NULL;
        S.inj_on = ic ? ic->enabled && ic->action != WD_ACT_ALLOW : true;
        S.inj_thr = ic ? (float)ic->threshold / 100.0f : 0.7f;
        S.inj_act = ic ? ic->action : WD_ACT_BLOCK;
        S.inj_fail_open = S.profile && S.profile->fail_open;
        bool any = false;
        for (size_t i = 0; i < wd_guard_db_nrules(S.db) && !any; i++) {
            const wd_rule_t *r = wd_guard_db_rule(S.db, i);
            any = wd_inj_rule(r) && selected(&S, r);
        }
        if (!any) S.inj_on = false; /* no injection rules scanned: nothing to screen with */
    }
    for (size_t i = 0; S.jobs > 1 && S.out == OUT_ANON && i < wd_guard_db_nrules(S.db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(S.db, i);
        if (selected(&S, r) && rewrite_action(&S, r) == WD_ACT_PSEUDO) {
            fail(&S,
                 "--jobs with pseudonymize%s%s%s: pseudonyms are numbered across the whole run, which "
                 "separate "
                 "processes cannot do; use --jobs 1 or another action",
                 S.profile ? " (the profile's action for " : "", S.profile ? r->type : "",
                 S.profile ? ")" : "");
            goto out;
        }
    }
    if (S.out == OUT_ANON && !S.have_key) {
        const wd_rule_t *hashed = NULL;
        for (size_t i = 0; i < wd_guard_db_nrules(S.db) && !hashed; i++) {
            const wd_rule_t *r = wd_guard_db_rule(S.db, i);
            if (selected(&S, r) && profile_action(&S, r) == WD_ACT_HASH) hashed = r;
        }
        if (hashed && S.cfg && S.cfg->state_dir) {
            if (deployment_key(&S)) goto out;
        } else if (hashed) {
            /* without a key the keyed hash would fall back to redaction silently; say so instead */
            fail(&S, "the hash action needs a key: pass --hash-key-file FILE (32 random bytes, e.g. from head -c 32 "
                     "/dev/urandom), or -c CONFIG with a state_dir%s%s",
                 S.profile ? "; the profile hashes " : "", S.profile ? hashed->type : "");
            goto out;
        }
    }
    S.scr = wd_guard_scratch_new(S.db);
    iobuf = malloc(BLOCK);
    if (!S.scr || !iobuf) {
        fail(&S, "out of memory");
        goto out;
    }

    /* ---- inputs ---- */
    static const char *const stdin_only[] = {"-"};
    const char *const *in = nfiles ? files : stdin_only;
    size_t nin = nfiles ? nfiles : 1;
    for (size_t i = 0; i < nin; i++)
        if (scan_input(&S, in[i], iobuf)) goto out;
    if (S.out == OUT_EXPLAIN && explain_summary(&S, nin)) goto out;
    if (fflush(S.o)) {
        fail(&S, "writing the output: %s", strerror(errno));
        goto out;
    }
    if (S.degraded)
        fprintf(stderr,
                "warden scan: the pseudonym vault is full (%zu distinct values): %llu later value%s redacted instead "
                "(raise --max-pseudonyms)\n",
                S.vault.max_entries, (unsigned long long)S.degraded, S.degraded == 1 ? " was" : "s were");
    rc = S.total || S.inj_flagged ? WD_EXIT_FAIL : WD_EXIT_OK;
out:
    fflush(S.o);
    sodium_memzero(S.key, sizeof S.key);
    wd_vault_free(&S.vault);
    wd_findings_free(&S.f);
    if (S.tmp.data) sodium_memzero(S.tmp.data, S.tmp.cap);
    if (S.line.data) sodium_memzero(S.line.data, S.line.cap);
    wd_buf_free(&S.tmp);
    wd_buf_free(&S.line);
    free(iobuf);
    free(S.sums);
    free(S.classes_store);
    free_fields(&S);
    wd_guard_scratch_free(S.scr);
    if (S.db) wd_guard_db_unref(S.db);
    if (S.cfg) wd_config_unref(S.cfg);
    wd_validators_cleanup();
    return rc;
}

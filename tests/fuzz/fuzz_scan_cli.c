/* libFuzzer driver for `warden scan` as a whole (src/cli/cmd_scan.c): the input becomes a file, the
 * command runs on it as `warden scan --rules DIR ... FILE` with its stdout and stderr sent to files,
 * and what it printed is checked. This covers the readers of the three formats (the CSV reader and its
 * quoting errors, JSON lines, text streamed in 64 KiB blocks), the rewriters and the exit codes.
 *
 * The first input byte chooses the options (bits 0-1: text, jsonl, csv, csv --no-header; bits 2-3: the
 * action redact, mask, hash or pseudonymize; bit 4: findings instead of the anonymized data; bit 5:
 * --max-record-bytes 64; bit 6: one field or column selected, with --allow-missing; bit 7: --explain);
 * the rest is the file. Checked, aborting on any violation:
 *  - the exit status is 0 (no findings), 1 (findings) or 2 (error); 2 comes with a "warden scan: "
 *    message on stderr, 0 and 1 with nothing on stderr;
 *  - findings: one JSON object per line, and lines exactly when the status is 1;
 *  - anonymized data, status 0: the input unchanged, byte for byte;
 *  - anonymized text: valid UTF-8 when the input is;
 *  - anonymized JSON lines: as many lines as the input, each a JSON value;
 *  - anonymized CSV: valid CSV (RFC 4180 quoting), shown by reading the output again as CSV. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/core.h"
#include "core/json.h"
#include "fuzz_check.h"

/* Small, but with what the scanner treats apart: a validator (luhn), a gated rule (context_required),
 * a rule whose spans are long (streams track its match in progress) and one that can end inside a
 * multi-byte character. */
static const char rules[] =
    "version: 1\n"
    "rules:\n"
    "  - id: t.email\n    type: EMAIL\n    class: pii\n    caseless: true\n    score: 0.9\n"
    "    pattern: '[a-z0-9._%+-]+@[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.[a-z]{2,}'\n    max_len: 64\n"
    "  - id: t.card\n    type: CREDIT_CARD\n    class: financial\n    validator: luhn\n    score: 0.7\n"
    "    pattern: '\\b\\d{4}[ -]?\\d{4}[ -]?\\d{4}[ -]?\\d{4}\\b'\n    context: [card, visa]\n"
    "  - id: t.acct\n    type: ACCOUNT\n    class: financial\n    score: 0.6\n"
    "    pattern: '\\b\\d{6,10}\\b'\n    context: [account, acct]\n    context_required: true\n"
    "  - id: t.key\n    type: API_KEY\n    class: secrets\n"
    "    pattern: 'sk-[A-Za-z0-9]{8,200}'\n    max_len: 203\n"
    "  - id: t.tag\n    type: TAG\n    class: test\n    boundary: false\n    score: 0.6\n"
    "    pattern: 'ID:[^ ,\"]{3}'\n    max_len: 6\n";

static char dir[64], in_path[96], out_path[96], err_path[96], again_path[96], rules_dir[96], key_path[96];

static void cleanup(void)
{
    const char *files[] = {in_path, out_path, err_path, again_path, key_path};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        unlink(files[i]);
    char p[160];
    snprintf(p, sizeof p, "%s/fuzz.yaml", rules_dir);
    unlink(p);
    rmdir(rules_dir);
    rmdir(dir);
}

static void put(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(p, 1, len, f) == len || len == 0);
    CHECK(fclose(f) == 0);
}

static char *get(const char *path, size_t *len)
{
    char *buf, err[256];
    CHECK(wd_read_file(path, 1u << 26, &buf, len, err, sizeof err) == WD_OK);
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/wd-fuzz-scan-XXXXXX");
    CHECK(mkdtemp(dir));
    snprintf(in_path, sizeof in_path, "%s/in", dir);
    snprintf(out_path, sizeof out_path, "%s/out", dir);
    snprintf(err_path, sizeof err_path, "%s/err", dir);
    snprintf(again_path, sizeof again_path, "%s/again", dir);
    snprintf(key_path, sizeof key_path, "%s/key", dir);
    snprintf(rules_dir, sizeof rules_dir, "%s/rules", dir);
    atexit(cleanup);
    CHECK(mkdir(rules_dir, 0700) == 0);
    char p[160];
    snprintf(p, sizeof p, "%s/fuzz.yaml", rules_dir);
    put(p, rules, sizeof rules - 1);
    put(key_path, "0123456789abcdef0123456789abcdef", 32);
    return 0;
}

/* Runs `warden scan ARGS... FILE` with stdout to out and stderr to err; returns its exit status. */
static int run(const char *const *args, size_t nargs, const char *file, const char *out, const char *err)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = "scan";
    argv[n++] = "--rules";
    argv[n++] = rules_dir;
    argv[n++] = "--no-cache"; /* its small rule file compiles in milliseconds; no files outside dir */
    for (size_t i = 0; i < nargs && n < 30; i++)
        argv[n++] = (char *)args[i];
    argv[n++] = (char *)file;
    argv[n] = NULL;
    fflush(stdout);
    int save_out = dup(1), save_err = dup(2);
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600),
        fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(save_out >= 0 && save_err >= 0 && fo >= 0 && fe >= 0);
    CHECK(dup2(fo, 1) == 1 && dup2(fe, 2) == 2);
    close(fo);
    close(fe);
    int rc = wd_cmd_scan((int)n, argv);
    fflush(stdout);
    CHECK(dup2(save_out, 1) == 1 && dup2(save_err, 2) == 2);
    close(save_out);
    close(save_err);
    return rc;
}

static bool json_value(const char *p, size_t len, bool object)
{
    size_t cap = len / 2 + 1;
    wd_json_tok_t *toks = malloc(cap * sizeof *toks);
    wd_json_doc_t d;
    char err[128];
    CHECK(toks);
    bool ok = wd_json_parse(&d, p, len, toks, cap, 128, err, sizeof err) == WD_OK &&
              (!object || toks[0].type == WD_JSON_OBJECT);
    free(toks);
    return ok;
}

/* Calls fn on each line (without its "\n"; a last line without one counts too). Returns the count. */
static size_t lines(const char *p, size_t len, bool (*fn)(const char *, size_t, bool), bool object)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && p[e] != '\n')
            e++;
        if (fn) CHECK(fn(p + i, e - i, object));
        n++;
        i = e + 1;
    }
    return n;
}

static bool blank_or_json(const char *p, size_t len, bool object)
{
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
        i++;
    return i == len || json_value(p, len, object);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0];
    const char *body = (const char *)data + 1;
    size_t blen = size - 1;
    put(in_path, body, blen);

    static const char *const formats[] = {"text", "jsonl", "csv", "csv"};
    static const char *const actions[] = {"redact", "mask", "hash", "pseudonymize"};
    unsigned fmt = mode & 3;
    bool explain = mode & 128, findings = !explain && (mode & 16), anon = !findings && !explain;
    const char *args[16];
    size_t na = 0;
    args[na++] = "--format";
    args[na++] = formats[fmt];
    if (fmt == 3) args[na++] = "--no-header";
    args[na++] = "--min-score";
    args[na++] = "0";
    args[na++] = "--action";
    args[na++] = actions[(mode >> 2) & 3];
    if (((mode >> 2) & 3) == 2) {
        args[na++] = "--hash-key-file";
        args[na++] = key_path;
    }
    if (explain)
        args[na++] = "--explain";
    else if (anon)
        args[na++] = "--output", args[na++] = "anonymized";
    if (mode & 32) args[na++] = "--max-record-bytes", args[na++] = "64";
    if ((mode & 64) && fmt == 1) args[na++] = "--field", args[na++] = "messages.*.content";
    if ((mode & 64) && fmt >= 2) args[na++] = "--column", args[na++] = "2";
    if ((mode & 64) && fmt >= 1) args[na++] = "--allow-missing";

    int rc = run(args, na, in_path, out_path, err_path);
    size_t olen, elen;
    char *out = get(out_path, &olen), *err = get(err_path, &elen);
    if (elen && rc != 2) fprintf(stderr, "warden scan (status %d) printed: %.*s", rc, (int)elen, err);
    CHECK(rc == 0 || rc == 1 || rc == 2);
    if (rc == 2) {
        CHECK(elen > 0 && memmem(err, elen, "warden scan: ", 13));
    } else {
        CHECK(elen == 0);
        if (findings) CHECK((lines(out, olen, json_value, true) > 0) == (rc == 1));
        if (anon && rc == 0) CHECK(olen == blen && memcmp(out, body, blen) == 0);
        if (anon && fmt == 0 && valid_utf8(body, blen)) CHECK(valid_utf8(out, olen));
        if (anon && fmt == 1) {
            CHECK(lines(out, olen, blank_or_json, false) == lines(body, blen, NULL, false));
        }
        if (anon && fmt >= 2) {
            /* the output reads back as CSV: same header handling, findings only, no record limit */
            const char *again[] = {"--format", "csv", "--min-score", "0", "--no-header"};
            int rc2 = run(again, fmt == 3 ? 5 : 4, out_path, again_path, err_path);
            size_t l2;
            char *e2 = get(err_path, &l2);
            if (rc2 == 2) fprintf(stderr, "re-reading the anonymized CSV: %.*s", (int)l2, e2);
            CHECK(rc2 != 2);
            free(e2);
        }
    }
    free(out);
    free(err);
    return 0;
}

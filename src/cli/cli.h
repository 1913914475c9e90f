/* cli: the operator subcommands of the warden binary. main.c dispatches on argv[1] and calls one
 * wd_cmd_<group>(argc - 1, argv + 1), so each handler sees its own name in argv[0]. Handlers print
 * to stdout/stderr and return the process exit status: 0 ok, 1 the operation failed (not found,
 * wrong state, I/O), 2 usage or validation error. Every error is one line on stderr, and a command
 * that fails validation changes no state. */
#ifndef WD_CLI_H
#define WD_CLI_H

#include <stdio.h>

#include "audit/admin_event.h"
#include "config/config.h"
#include "store/store.h"

enum { WD_EXIT_OK = 0, WD_EXIT_FAIL = 1, WD_EXIT_USAGE = 2 };

/* warden config check FILE: loads and validates FILE exactly as `warden serve` would (including
 * reading the api_key_env variables and resolving upstream hosts). Prints "FILE: ok" and a one-line
 * summary on success (exit 0); the file:line:col error on stderr otherwise (exit 2). */
int wd_cmd_config(int argc, char **argv);

/* warden serve -c FILE: runs the gateway until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads. */
int wd_cmd_serve(int argc, char **argv);

/* warden init [--state-dir D | -c FILE]: creates the state directory (idempotent; a second run
 * says "already initialised, nothing changed" and exits 0). */
int wd_cmd_init(int argc, char **argv);

/* warden key create|list|show|revoke|rotate: API keys (the key itself is printed once, at create
 * and rotate; only its keyed hash is stored). */
int wd_cmd_key(int argc, char **argv);

/* warden user add|passwd|disable|list|mfa enroll: users, argon2id passwords (read from the
 * terminal with echo off, or one line of stdin; never argv) and TOTP enrolment. */
int wd_cmd_user(int argc, char **argv);

/* warden token issue|revoke: PASETO v4.public tokens scoped down from an API key; revocation by jti. */
int wd_cmd_token(int argc, char **argv);

/* warden scan [OPTIONS] [FILE...]: the privacy guard over text, JSON lines or CSV (stdin by default);
 * prints findings as JSON lines, the anonymized data, or a report (--explain). Exit 0 no findings,
 * 1 findings, 2 error. */
int wd_cmd_scan(int argc, char **argv);

/* warden rules list|check [--rules DIR]: a rules directory's rules, and each checked against its own
 * examples (wd_guard_check_examples). Exit 0 ok, 1 an example failed, 2 usage or rules not loading. */
int wd_cmd_rules(int argc, char **argv);

/* ---- shared by the identity commands (cli_state.c) ---------------------------------------------- */

/* Where the state lives and what the command may check against. The state directory comes from
 * --state-dir, else -c FILE's state_dir, else $WARDEN_STATE_DIR. Every change is recorded in
 * state_dir/audit/admin.jsonl; with -c, role and model names are also validated against the config
 * and changes are recorded in its audit file too. */
typedef struct {
    const char *prog;          /* "warden key create", prefixes every message */
    const char *state_dir_opt; /* --state-dir */
    const char *config_path;   /* -c / --config */
    const char *state_dir;     /* resolved */
    wd_config_t *cfg;          /* loaded when config_path is set */
    wd_store_t *store;
    bool audit;                /* an audit file is open for this command's events */
    bool admin_log;            /* admin_fd is state_dir/audit/admin.jsonl, open for a change */
    int admin_fd;
    wd_event_writer_t ev;
    char actor[96];            /* "cli:<unix user>" */
} wd_cli_t;

/* Command-line options: name is the long name without "--" (short is 0 or a letter); `arg` takes a
 * value (--x V or --x=V); `multi` may repeat (values gathered in vals, at most WD_CLI_MAX_VALS). */
#define WD_CLI_MAX_VALS 32
typedef struct {
    const char *name;
    char short_name;
    bool arg;
    bool multi;
    const char *vals[WD_CLI_MAX_VALS];
    size_t n;
} wd_cli_opt_t;

/* Parses argv[0..argc) (after the subcommand words) into opts and positional arguments. Returns 0, or
 * prints one line and returns WD_EXIT_USAGE. "--" ends options. Also sets c->state_dir_opt and
 * c->config_path from --state-dir and -c/--config when opts has them. */
int wd_cli_parse(wd_cli_t *c, int argc, char **argv, wd_cli_opt_t *opts, size_t nopts, const char **pos,
                 size_t maxpos, size_t *npos);
/* The option named `name` in opts (NULL if absent from the table). */
wd_cli_opt_t *wd_cli_opt(wd_cli_opt_t *opts, size_t nopts, const char *name);
/* First value of an option or NULL. */
const char *wd_cli_val(wd_cli_opt_t *opts, size_t nopts, const char *name);
bool wd_cli_flag(wd_cli_opt_t *opts, size_t nopts, const char *name);

/* Resolves the state directory, loads the config (-c) and, when need_store, opens the store; a
 * `mutating` command also opens the config's audit file (failing rather than acting unaudited).
 * Returns an exit status (0 on success) after printing any error. */
int wd_cli_begin(wd_cli_t *c, bool need_store, bool mutating);
void wd_cli_end(wd_cli_t *c);

/* Prints "<prog>: <message>" on stderr and returns code. */
int wd_cli_fail(const wd_cli_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records an admin event (no-op without an audit file): ok selects outcome "ok" or "failed". */
void wd_cli_audit(wd_cli_t *c, const char *action, const char *target, bool ok, const char *detail);

/* Name syntax checks (0 or WD_EXIT_USAGE after printing). A role must also exist in the config when
 * one is loaded. */
int wd_cli_check_role(const wd_cli_t *c, const char *role);
/* A model name or `prefix*` pattern: syntax always; with a config, an exact name must be a configured
 * model and be granted by at least one of `roles` (a JSON array text), a pattern must match such a
 * model. A scope may narrow the roles' grants, never widen them. */
int wd_cli_check_model(const wd_cli_t *c, const char *model, const char *roles_json);

/* Splits comma-separated values of a multi option into out (pointers into a copy kept in *storage,
 * which the caller frees). Rejects empty items. Returns count or -1 after printing. */
int wd_cli_split(const wd_cli_t *c, const wd_cli_opt_t *o, char **storage, const char **out, size_t max);

/* --min-score V: a number from 0 to 1 into *out; else WD_EXIT_USAGE after printing. */
int wd_cli_min_score(const wd_cli_t *c, const char *v, float *out);

/* JSON array text (compact) of strings; NULL on allocation failure. */
char *wd_cli_json_array(const char *const *v, size_t n);
/* "a,b,c" from a JSON array text ("-" for NULL/empty); caller frees. */
char *wd_cli_join_json(const char *json);
/* "2026-01-01T00:00:00Z", or `none` for 0. */
const char *wd_cli_time(int64_t t, const char *none, char buf[32]);
int64_t wd_cli_now(void);

/* A small text table: rows of ncols cells, printed with aligned columns. */
typedef struct {
    size_t ncols, nrows, cap;
    char **cells;
} wd_cli_table_t;
void wd_cli_table_init(wd_cli_table_t *t, size_t ncols);
int wd_cli_table_add(wd_cli_table_t *t, const char *const *cells);
void wd_cli_table_print(const wd_cli_table_t *t, FILE *f);
void wd_cli_table_free(wd_cli_table_t *t);

#endif

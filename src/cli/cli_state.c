/* Shared plumbing of the identity commands: option parsing, state directory / config / store
 * resolution, name validation against the config, audit events and table output. */
#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/token.h"
#include "cli/cli.h"

int wd_cli_fail(const wd_cli_t *c, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* one line, whatever the message carried */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "%s: %s\n", c->prog, msg);
    return code;
}

wd_cli_opt_t *wd_cli_opt(wd_cli_opt_t *opts, size_t nopts, const char *name)
{
    for (size_t i = 0; i < nopts; i++)
        if (!strcmp(opts[i].name, name)) return &opts[i];
    return NULL;
}

const char *wd_cli_val(wd_cli_opt_t *opts, size_t nopts, const char *name)
{
    wd_cli_opt_t *o = wd_cli_opt(opts, nopts, name);
    return o && o->n ? o->vals[0] : NULL;
}

bool wd_cli_flag(wd_cli_opt_t *opts, size_t nopts, const char *name)
{
    wd_cli_opt_t *o = wd_cli_opt(opts, nopts, name);
    return o && o->n;
}

int wd_cli_parse(wd_cli_t *c, int argc, char **argv, wd_cli_opt_t *opts, size_t nopts, const char **pos,
                 size_t maxpos, size_t *npos)
{
    *npos = 0;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        /* Short options are one letter, so "-xyz" is a value that happens to start with '-' (a jti is
         * base64url); "--" still ends options for values that start with "--". */
        if (only_pos || a[0] != '-' || !a[1] || (a[1] != '-' && a[2])) {
            if (*npos == maxpos) return wd_cli_fail(c, WD_EXIT_USAGE, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = true;
            continue;
        }
        wd_cli_opt_t *o = NULL;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t nl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            for (size_t k = 0; k < nopts && !o; k++)
                if (strlen(opts[k].name) == nl && !memcmp(opts[k].name, a + 2, nl)) o = &opts[k];
            if (o && eq) {
                if (!o->arg) return wd_cli_fail(c, WD_EXIT_USAGE, "option --%s takes no value", o->name);
                val = eq + 1;
            }
        } else if (!a[2]) {
            for (size_t k = 0; k < nopts && !o; k++)
                if (opts[k].short_name == a[1]) o = &opts[k];
        }
        if (!o) return wd_cli_fail(c, WD_EXIT_USAGE, "unknown option '%s' (see %s --help)", a, c->prog);
        if (o->arg && !val) {
            if (i + 1 >= argc) return wd_cli_fail(c, WD_EXIT_USAGE, "option %s needs a value", a);
            val = argv[++i];
        }
        if (o->n && !o->multi) return wd_cli_fail(c, WD_EXIT_USAGE, "option --%s given more than once", o->name);
        if (o->n == WD_CLI_MAX_VALS)
            return wd_cli_fail(c, WD_EXIT_USAGE, "option --%s given more than %d times", o->name, WD_CLI_MAX_VALS);
        o->vals[o->n++] = o->arg ? val : "";
    }
    /* the options every identity command shares, in one place */
    c->state_dir_opt = wd_cli_val(opts, nopts, "state-dir");
    c->config_path = wd_cli_val(opts, nopts, "config");
    return WD_EXIT_OK;
}

static void set_actor(wd_cli_t *c)
{
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_name)
        snprintf(c->actor, sizeof c->actor, "cli:%s", res->pw_name);
    else
        snprintf(c->actor, sizeof c->actor, "cli:uid%u", (unsigned)getuid());
}

int wd_cli_begin(wd_cli_t *c, bool need_store, bool mutating)
{
    /* Whatever this process creates (database, WAL, audit file) is for the owner alone. */
    umask(077);
    set_actor(c);
    wd_event_writer_init(&c->ev);
    char err[1024];
    if (c->config_path) {
        /* the commands that come through here never scan: the guard's rules are read, not compiled */
        c->cfg = wd_config_load_ex(c->config_path, WD_CONFIG_NO_SCAN, err, sizeof err);
        if (!c->cfg) return wd_cli_fail(c, WD_EXIT_USAGE, "%s", err);
    }
    c->state_dir = c->state_dir_opt;
    if (!c->state_dir && c->cfg) c->state_dir = c->cfg->state_dir;
    if (!c->state_dir) {
        const char *env = getenv("WARDEN_STATE_DIR");
        if (env && *env) c->state_dir = env;
    }
    if (!c->state_dir)
        return wd_cli_fail(c, WD_EXIT_USAGE,
                           "no state directory: pass --state-dir DIR, or -c FILE with state_dir, or set "
                           "WARDEN_STATE_DIR");
    if (need_store && wd_store_open(c->state_dir, &c->store, err, sizeof err) != WD_OK)
        return wd_cli_fail(c, WD_EXIT_FAIL, "%s", err);
    if (mutating && need_store) {
        /* Every change is recorded in the state directory, with or without -c (init records its own
         * once the directory exists). A change that cannot be recorded is not made. */
        int fd = wd_store_admin_log_open(c->state_dir, err, sizeof err);
        if (fd < 0) return wd_cli_fail(c, WD_EXIT_FAIL, "%s", err);
        c->admin_fd = fd;
        c->admin_log = true;
    }
    if (mutating && c->cfg && c->cfg->audit_file && strcmp(c->cfg->audit_file, "-") != 0) {
        /* An operator change that cannot be recorded is not made. ("-" is the daemon's stdout, which
         * a CLI run has no access to.) */
        if (wd_event_sink_open(c->cfg->audit_file, err, sizeof err) != WD_OK)
            return wd_cli_fail(c, WD_EXIT_FAIL, "%s", err);
        c->audit = true;
    }
    return WD_EXIT_OK;
}

void wd_cli_end(wd_cli_t *c)
{
    wd_event_writer_free(&c->ev);
    if (c->audit) wd_event_sink_close();
    c->audit = false;
    if (c->admin_log) close(c->admin_fd);
    c->admin_log = false;
    wd_store_close(c->store);
    c->store = NULL;
    if (c->cfg) wd_config_unref(c->cfg);
    c->cfg = NULL;
}

void wd_cli_audit(wd_cli_t *c, const char *action, const char *target, bool ok, const char *detail)
{
    const char *outcome = ok ? "ok" : "failed";
    if (!c->admin_log && !strcmp(action, "state.init") && c->state_dir) {
        /* init runs before the directory exists, so it opens the log only now */
        char err[256];
        int fd = wd_store_admin_log_open(c->state_dir, err, sizeof err);
        if (fd >= 0) c->admin_fd = fd, c->admin_log = true;
        else wd_cli_fail(c, 0, "warning: %s", err);
    }
    if (c->admin_log) {
        wd_buf_t line;
        wd_buf_init(&line, 256);
        if (wd_event_admin_to_json(wd_wall_ms(), c->actor, action, target, outcome, detail, &line) != WD_OK ||
            wd_store_admin_log_write(c->admin_fd, line.data, line.len) != WD_OK)
            wd_cli_fail(c, 0, "warning: could not record %s %s in %s/%s: %s", action, target ? target : "",
                        c->state_dir, WD_STORE_ADMIN_LOG, strerror(errno));
        wd_buf_free(&line);
    }
    if (!c->audit) return;
    wd_event_admin(&c->ev, c->actor, action, target, outcome, detail);
    wd_event_flush(&c->ev);
}

int wd_cli_check_role(const wd_cli_t *c, const char *role)
{
    size_t n = strlen(role);
    if (!n || n > 64) return wd_cli_fail(c, WD_EXIT_USAGE, "role name must be 1 to 64 characters");
    for (size_t i = 0; i < n; i++) {
        char ch = role[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.'))
            return wd_cli_fail(c, WD_EXIT_USAGE, "invalid role name '%s' (letters, digits, '-', '_', '.')", role);
    }
    if (c->cfg && !wd_policy_role(c->cfg->roles, c->cfg->nroles, role)) {
        char known[512] = "";
        for (size_t i = 0; i < c->cfg->nroles; i++) {
            size_t used = strlen(known);
            snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", c->cfg->roles[i].name);
        }
        return wd_cli_fail(c, WD_EXIT_USAGE, "unknown role '%s' in %s (defined roles: %s)", role, c->config_path,
                           c->cfg->nroles ? known : "none");
    }
    return WD_EXIT_OK;
}

static bool granted_by(const wd_role_t *r, const char *model)
{
    for (size_t i = 0; i < r->nmodels; i++)
        if (wd_model_pattern_match(r->models[i], model, strlen(model))) return true;
    return false;
}

int wd_cli_check_model(const wd_cli_t *c, const char *model, const char *roles_json)
{
    size_t n = strlen(model);
    if (!n || n > 127) return wd_cli_fail(c, WD_EXIT_USAGE, "model name must be 1 to 127 characters");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)model[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == ',' || ch == '"' || ch == '\\' || (ch == '*' && i + 1 != n))
            return wd_cli_fail(c, WD_EXIT_USAGE,
                               "invalid model name '%s' (printable ASCII without spaces or commas; '*' only at the "
                               "end, as a prefix pattern)",
                               model);
    }
    if (!c->cfg) return WD_EXIT_OK;
    json_t *roles = roles_json ? json_loads(roles_json, 0, NULL) : NULL;
    bool is_pattern = model[n - 1] == '*';
    bool known = false, granted = false;
    for (size_t m = 0; m < c->cfg->nmodels; m++) {
        const char *name = c->cfg->models[m].name;
        if (is_pattern ? !wd_model_pattern_match(model, name, strlen(name)) : strcmp(model, name) != 0) continue;
        known = true;
        size_t i;
        json_t *v;
        json_array_foreach(roles, i, v) {
            const wd_role_t *r = wd_policy_role(c->cfg->roles, c->cfg->nroles, json_string_value(v));
            if (r && granted_by(r, name)) granted = true;
        }
    }
    json_decref(roles);
    if (!known)
        return wd_cli_fail(c, WD_EXIT_USAGE, "%s '%s' matches no model configured in %s",
                           is_pattern ? "pattern" : "model", model, c->config_path);
    if (!granted)
        return wd_cli_fail(c, WD_EXIT_USAGE,
                           "model '%s' is not granted by the roles %s: a scope may narrow its roles, never widen them",
                           model, roles_json ? roles_json : "[]");
    return WD_EXIT_OK;
}

int wd_cli_min_score(const wd_cli_t *c, const char *v, float *out)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (!*v || errno || !end || *end || !(d >= 0.0 && d <= 1.0))
        return wd_cli_fail(c, WD_EXIT_USAGE, "--min-score '%s': expected a number from 0 to 1", v);
    *out = (float)d;
    return 0;
}

int wd_cli_split(const wd_cli_t *c, const wd_cli_opt_t *o, char **storage, const char **out, size_t max)
{
    size_t total = 0;
    for (size_t i = 0; i < o->n; i++) total += strlen(o->vals[i]) + 1;
    char *s = *storage = malloc(total ? total : 1);
    if (!s) return wd_cli_fail(c, WD_EXIT_FAIL, "out of memory"), -1;
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) {
        size_t len = strlen(o->vals[i]);
        memcpy(s, o->vals[i], len + 1);
        char *item = s;
        for (;;) {
            char *comma = strchr(item, ',');
            if (comma) *comma = '\0';
            if (!*item) return wd_cli_fail(c, WD_EXIT_USAGE, "--%s: empty item in '%s'", o->name, o->vals[i]), -1;
            for (size_t k = 0; k < n; k++)
                if (!strcmp(out[k], item))
                    return wd_cli_fail(c, WD_EXIT_USAGE, "--%s: '%s' given twice", o->name, item), -1;
            if (n == max) return wd_cli_fail(c, WD_EXIT_USAGE, "--%s: more than %zu items", o->name, max), -1;
            out[n++] = item;
            if (!comma) break;
            item = comma + 1;
        }
        s += len + 1;
    }
    return (int)n;
}

char *wd_cli_json_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i]))) {
            json_decref(a);
            return NULL;
        }
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

char *wd_cli_join_json(const char *json)
{
    json_t *a = json ? json_loads(json, 0, NULL) : NULL;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (i) wd_buf_append(&b, ",", 1);
        if (json_is_string(v)) wd_buf_append_str(&b, json_string_value(v));
    }
    json_decref(a);
    if (!b.len) wd_buf_append(&b, "-", 1);
    wd_buf_append(&b, "", 1);
    return b.data;
}

const char *wd_cli_time(int64_t t, const char *none, char buf[32])
{
    if (!t) return none;
    wd_time_iso(t, buf);
    return buf;
}

int64_t wd_cli_now(void) { return (int64_t)time(NULL); }

void wd_cli_table_init(wd_cli_table_t *t, size_t ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
}

int wd_cli_table_add(wd_cli_table_t *t, const char *const *cells)
{
    if ((t->nrows + 1) * t->ncols > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : t->ncols * 16;
        char **p = realloc(t->cells, cap * sizeof *p);
        if (!p) return WD_ENOMEM;
        t->cells = p;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        char *d = strdup(cells[i] ? cells[i] : "");
        if (!d) {
            while (i--) free(t->cells[t->nrows * t->ncols + i]);
            return WD_ENOMEM;
        }
        t->cells[t->nrows * t->ncols + i] = d;
    }
    t->nrows++;
    return WD_OK;
}

void wd_cli_table_print(const wd_cli_table_t *t, FILE *f)
{
    size_t w[16] = {0};
    size_t nc = WD_MIN(t->ncols, WD_ARRAY_LEN(w));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < nc; i++) w[i] = WD_MAX(w[i], strlen(t->cells[r * t->ncols + i]));
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < nc; i++) {
            const char *cell = t->cells[r * t->ncols + i];
            if (i + 1 == nc) fprintf(f, "%s\n", cell);
            else fprintf(f, "%-*s  ", (int)w[i], cell);
        }
    }
}

void wd_cli_table_free(wd_cli_table_t *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

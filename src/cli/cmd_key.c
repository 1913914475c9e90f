/* warden key: API keys. The key is printed once (create, rotate) and stored only as a keyed hash;
 * listings show public ids, names, scope and state, never secrets or hashes. */
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>

#include "auth/apikey.h"
#include "auth/keyops.h"
#include "auth/token.h"
#include "cli/cli.h"

#define COMMON_OPTS                                                                                          \
    {.name = "state-dir", .arg = true}, {.name = "config", .short_name = 'c', .arg = true},                 \
        {.name = "help", .short_name = 'h'}

#define MAX_GRACE (30 * 86400)

static void usage(FILE *f)
{
    fputs("usage: warden key COMMAND [--state-dir DIR | -c FILE] ...\n"
          "\n"
          "  create --name N --role R [--role R2 ...] [--ttl 30d] [--models a,b] [--ip CIDR ...] [--quiet]\n"
          "         [--rpm N] [--tpm N] [--concurrent N] [--tokens-per-day N] [--tokens-per-month N]\n"
          "                 limits narrow the roles' limits for this key (never widen them)\n"
          "                 creates a key and prints it ONCE on stdout (alone on its line; details on stderr,\n"
          "                 which --quiet omits): KEY=$(warden key create ... --quiet)\n"
          "  list [--json]  every key: id, name, roles, created, expires, last used, status\n"
          "  show ID [--json]\n"
          "  revoke ID      the key stops working (a running server notices within a second)\n"
          "  rotate ID [--grace 24h] [--quiet]\n"
          "                 a new key with the same name, roles, scope and expiry, printed once; the old key\n"
          "                 keeps working until the grace period ends (0 ends it now; at most 30d)\n"
          "\n"
          "  With -c FILE, roles and models are checked against the config and every change is recorded in\n"
          "  its audit file. Exit status: 0 ok, 1 failed (unknown key, wrong state), 2 invalid usage.\n",
          f);
}

static bool valid_id(const char *id)
{
    if (strlen(id) != WD_APIKEY_ID_LEN) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))) return false;
    return true;
}

static json_t *json_or_null(const char *text)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *iso_or_null(int64_t t)
{
    char b[32];
    return t ? json_string(wd_cli_time(t, NULL, b)) : json_null();
}

/* The key's state as a person reads it; `word` gets the machine-readable status. */
static const char *key_status(const wd_key_rec_t *k, int64_t now, char *buf, size_t n, const char **word)
{
    if (k->revoked_at) return *word = "revoked";
    if (k->expires_at && k->expires_at <= now) return *word = "expired";
    if (k->rotated_to[0]) {
        *word = "rotated";
        if (k->grace_until <= now) return "rotated";
        char t[32];
        snprintf(buf, n, "rotated (grace until %s)", wd_cli_time(k->grace_until, "-", t));
        return buf;
    }
    return *word = "active";
}

static json_t *key_json(const wd_key_rec_t *k, int64_t now)
{
    char buf[96];
    const char *word;
    key_status(k, now, buf, sizeof buf, &word);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(k->id));
    json_object_set_new(o, "name", json_string(k->name));
    json_object_set_new(o, "roles", json_or_null(k->roles));
    json_object_set_new(o, "models", json_or_null(k->models));
    json_object_set_new(o, "ips", json_or_null(k->ips));
    json_object_set_new(o, "limits", json_or_null(k->limits));
    json_object_set_new(o, "created_at", iso_or_null(k->created_at));
    json_object_set_new(o, "expires_at", iso_or_null(k->expires_at));
    json_object_set_new(o, "last_used_at", iso_or_null(k->last_used_at));
    json_object_set_new(o, "revoked_at", iso_or_null(k->revoked_at));
    json_object_set_new(o, "rotated_to", k->rotated_to[0] ? json_string(k->rotated_to) : json_null());
    json_object_set_new(o, "grace_until", k->rotated_to[0] ? iso_or_null(k->grace_until) : json_null());
    json_object_set_new(o, "status", json_string(word));
    return o;
}

static void print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
}

/* ---- create ------------------------------------------------------------------------------------------- */

static int check_name(const wd_cli_t *c, const char *name)
{
    size_t n = strlen(name);
    if (!n || n >= sizeof(((wd_key_rec_t *)0)->name))
        return wd_cli_fail(c, WD_EXIT_USAGE, "--name must be 1 to %zu bytes", sizeof(((wd_key_rec_t *)0)->name) - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return wd_cli_fail(c, WD_EXIT_USAGE, "--name must not contain control characters");
    return WD_EXIT_OK;
}

/* Prints a freshly made key once and the facts about it. */
static void show_new_key(const char *key, const wd_key_rec_t *k, bool quiet, const char *verb)
{
    puts(key);
    fflush(stdout);
    if (quiet) return;
    char exp[32];
    char *roles = wd_cli_join_json(k->roles), *models = wd_cli_join_json(k->models), *ips = wd_cli_join_json(k->ips);
    fprintf(stderr,
            "%s key %s (name \"%s\", roles %s, models %s, ips %s, expires %s)\n"
            "store the key now: it is shown only this once and cannot be recovered\n",
            verb, k->id, k->name, roles ? roles : "-", models ? models : "-", ips ? ips : "-",
            wd_cli_time(k->expires_at, "never", exp));
    free(roles);
    free(models);
    free(ips);
}

/* --rpm/--tpm/... -> {"rpm":N,...} (NULL when none given). Checked before anything is opened. */
static int limits_opts(const wd_cli_t *c, wd_cli_opt_t *o, size_t no, char **out)
{
    static const char *const names[][2] = {{"rpm", "rpm"}, {"tpm", "tpm"}, {"concurrent", "concurrent"},
                                            {"tokens-per-day", "tokens_per_day"},
                                            {"tokens-per-month", "tokens_per_month"}};
    json_t *obj = json_object();
    for (size_t i = 0; i < WD_ARRAY_LEN(names); i++) {
        const char *v = wd_cli_val(o, no, names[i][0]);
        if (!v) continue;
        char *end;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || *v == '-' || *v == '+' || n <= 0 || n > 4000000000LL) {
            json_decref(obj);
            return wd_cli_fail(c, WD_EXIT_USAGE, "invalid --%s '%s' (a whole number from 1 to 4000000000)",
                               names[i][0], v);
        }
        json_object_set_new(obj, names[i][1], json_integer(n));
    }
    *out = json_object_size(obj) ? json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(obj);
    return 0;
}

static int key_create(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden key create"};
    wd_cli_opt_t o[] = {COMMON_OPTS,
                        {.name = "name", .arg = true},
                        {.name = "role", .arg = true, .multi = true},
                        {.name = "ttl", .arg = true},
                        {.name = "models", .arg = true, .multi = true},
                        {.name = "ip", .arg = true, .multi = true},
                        {.name = "quiet", .short_name = 'q'},
                        {.name = "rpm", .arg = true},
                        {.name = "tpm", .arg = true},
                        {.name = "concurrent", .arg = true},
                        {.name = "tokens-per-day", .arg = true},
                        {.name = "tokens-per-month", .arg = true}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *pos[1];
    size_t npos;
    char *models_store = NULL, *roles_json = NULL, *models_json = NULL, *ips_json = NULL;
    char key[WD_APIKEY_MAX];
    int rc = wd_cli_parse(&c, argc, argv, o, no, pos, 0, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return 0;
    }
    const char *name = wd_cli_val(o, no, "name"), *ttl = wd_cli_val(o, no, "ttl");
    wd_cli_opt_t *roles = wd_cli_opt(o, no, "role"), *ips = wd_cli_opt(o, no, "ip");
    if (!name) return wd_cli_fail(&c, WD_EXIT_USAGE, "--name is required");
    if (!roles->n) return wd_cli_fail(&c, WD_EXIT_USAGE, "at least one --role is required");
    if ((rc = check_name(&c, name))) return rc;
    char *limits_json = NULL;
    if ((rc = limits_opts(&c, o, no, &limits_json))) return rc;
    int64_t ttl_s = 0;
    if (ttl && wd_parse_ttl(ttl, &ttl_s) != WD_OK)
        return wd_cli_fail(&c, WD_EXIT_USAGE, "invalid --ttl '%s' (a positive number with s, m, h or d, up to 3650d)",
                           ttl);
    for (size_t i = 0; i < ips->n; i++) {
        wd_cidr_t cidr;
        char err[256];
        if (wd_cidr_parse(ips->vals[i], strlen(ips->vals[i]), &cidr, err, sizeof err) != WD_OK)
            return wd_cli_fail(&c, WD_EXIT_USAGE, "invalid --ip '%s': %s", ips->vals[i], err);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ips->vals[i], ips->vals[j]))
                return wd_cli_fail(&c, WD_EXIT_USAGE, "--ip '%s' given twice", ips->vals[i]);
    }
    if ((rc = wd_cli_begin(&c, true, true))) goto out;
    for (size_t i = 0; i < roles->n; i++) {
        if ((rc = wd_cli_check_role(&c, roles->vals[i]))) goto out;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(roles->vals[i], roles->vals[j])) {
                rc = wd_cli_fail(&c, WD_EXIT_USAGE, "--role '%s' given twice", roles->vals[i]);
                goto out;
            }
    }
    roles_json = wd_cli_json_array(roles->vals, roles->n);
    const char *models[WD_CLI_MAX_VALS * 4];
    int nmodels = 0;
    wd_cli_opt_t *mo = wd_cli_opt(o, no, "models");
    if (mo->n) {
        nmodels = wd_cli_split(&c, mo, &models_store, models, WD_ARRAY_LEN(models));
        if (nmodels < 0) {
            rc = WD_EXIT_USAGE;
            goto out;
        }
        for (int i = 0; i < nmodels; i++)
            if ((rc = wd_cli_check_model(&c, models[i], roles_json))) goto out;
        models_json = wd_cli_json_array(models, (size_t)nmodels);
    }
    if (ips->n) ips_json = wd_cli_json_array(ips->vals, ips->n);
    if (!roles_json || (mo->n && !models_json) || (ips->n && !ips_json)) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "out of memory");
        goto out;
    }

    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    snprintf(k.name, sizeof k.name, "%s", name);
    k.roles = roles_json;
    k.models = models_json;
    k.ips = ips_json;
    k.limits = limits_json;
    k.created_at = wd_cli_now();
    k.expires_at = ttl_s ? k.created_at + ttl_s : 0;
    char err[512];
    if (wd_keyops_create(c.store, &k, key, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "key.create", k.id[0] ? k.id : name, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        goto out;
    }
    wd_cli_audit(&c, "key.create", k.id, true, NULL);
    show_new_key(key, &k, wd_cli_flag(o, no, "quiet"), "created");
out:
    sodium_memzero(key, sizeof key);
    free(limits_json);
    free(models_store);
    free(roles_json);
    free(models_json);
    free(ips_json);
    wd_cli_end(&c);
    return rc;
}

/* ---- list / show ------------------------------------------------------------------------------------- */

typedef struct {
    int64_t now;
    json_t *arr;
    wd_cli_table_t t;
} list_t;

static int list_cb(void *ud, const wd_key_rec_t *k)
{
    list_t *l = ud;
    if (l->arr) return json_array_append_new(l->arr, key_json(k, l->now)) ? WD_ENOMEM : WD_OK;
    char created[32], expires[32], used[32], sbuf[96];
    const char *word;
    char *roles = wd_cli_join_json(k->roles);
    const char *row[] = {k->id,
                         k->name,
                         roles ? roles : "-",
                         wd_cli_time(k->created_at, "-", created),
                         wd_cli_time(k->expires_at, "never", expires),
                         wd_cli_time(k->last_used_at, "never", used),
                         key_status(k, l->now, sbuf, sizeof sbuf, &word)};
    int rc = wd_cli_table_add(&l->t, row);
    free(roles);
    return rc;
}

static int key_list(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden key list"};
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "json"}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(&c, argc, argv, o, no, pos, 0, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return 0;
    }
    if ((rc = wd_cli_begin(&c, true, false))) goto out;
    list_t l = {.now = wd_cli_now(), .arr = wd_cli_flag(o, no, "json") ? json_array() : NULL};
    wd_cli_table_init(&l.t, 7);
    const char *hdr[] = {"ID", "NAME", "ROLES", "CREATED", "EXPIRES", "LAST USED", "STATUS"};
    wd_cli_table_add(&l.t, hdr);
    if (wd_store_key_each(c.store, list_cb, &l) != WD_OK) rc = wd_cli_fail(&c, WD_EXIT_FAIL, "cannot read keys");
    else if (l.arr) print_json(l.arr);
    else if (l.t.nrows == 1) fprintf(stderr, "no keys yet; create one with: warden key create --name N --role R\n");
    else wd_cli_table_print(&l.t, stdout);
    json_decref(l.arr);
    wd_cli_table_free(&l.t);
out:
    wd_cli_end(&c);
    return rc;
}

/* Parses "<sub> ID [opts]" into o; *id points at the key id. Returns -1 after printing help. */
static int parse_one(wd_cli_t *c, int argc, char **argv, wd_cli_opt_t *o, size_t no, const char **id)
{
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(c, argc, argv, o, no, pos, 1, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return -1;
    }
    if (npos != 1) return wd_cli_fail(c, WD_EXIT_USAGE, "expects one key id (see warden key list)");
    if (!valid_id(pos[0]))
        return wd_cli_fail(c, WD_EXIT_USAGE, "'%s' is not a key id (12 letters and digits, as in warden key list)",
                           pos[0]);
    *id = pos[0];
    return WD_EXIT_OK;
}

/* Opens the store and loads key `id`. */
static int open_one(wd_cli_t *c, const char *id, bool mutating, wd_key_rec_t *k)
{
    int rc = wd_cli_begin(c, true, mutating);
    if (rc) return rc;
    rc = wd_store_key_get(c->store, id, k);
    if (rc == WD_ENOTFOUND) return wd_cli_fail(c, WD_EXIT_FAIL, "no key with id %s", id);
    if (rc != WD_OK) return wd_cli_fail(c, WD_EXIT_FAIL, "cannot read key %s", id);
    return WD_EXIT_OK;
}

static int one_key(wd_cli_t *c, int argc, char **argv, wd_cli_opt_t *o, size_t no, bool mutating, wd_key_rec_t *k)
{
    const char *id;
    int rc = parse_one(c, argc, argv, o, no, &id);
    return rc ? rc : open_one(c, id, mutating, k);
}

static int key_show(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden key show"};
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "json"}};
    const size_t no = WD_ARRAY_LEN(o);
    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    int rc = one_key(&c, argc, argv, o, no, false, &k);
    if (rc == -1) rc = 0;
    else if (rc == 0) {
        json_t *j = key_json(&k, wd_cli_now());
        if (wd_cli_flag(o, no, "json")) print_json(j);
        else {
            char sbuf[96];
            const char *word;
            char *roles = wd_cli_join_json(k.roles), *models = wd_cli_join_json(k.models),
                 *ips = wd_cli_join_json(k.ips);
            char t1[32], t2[32], t3[32], t4[32];
            printf("id:          %s\n"
                   "name:        %s\n"
                   "status:      %s\n"
                   "roles:       %s\n"
                   "models:      %s\n"
                   "ips:         %s\n"
                   "created:     %s\n"
                   "expires:     %s\n"
                   "last used:   %s\n",
                   k.id, k.name, key_status(&k, wd_cli_now(), sbuf, sizeof sbuf, &word), roles ? roles : "-",
                   k.models ? models : "(all its roles grant)", k.ips ? ips : "(any)",
                   wd_cli_time(k.created_at, "-", t1), wd_cli_time(k.expires_at, "never", t2),
                   wd_cli_time(k.last_used_at, "never", t3));
            printf("limits:      %s\n", k.limits ? k.limits : "(its roles' limits)");
            if (k.revoked_at) printf("revoked:     %s\n", wd_cli_time(k.revoked_at, "-", t4));
            if (k.rotated_to[0])
                printf("rotated to:  %s (old key valid until %s)\n", k.rotated_to,
                       wd_cli_time(k.grace_until, "-", t4));
            free(roles);
            free(models);
            free(ips);
        }
        json_decref(j);
    }
    wd_key_rec_free(&k);
    wd_cli_end(&c);
    return rc;
}

/* ---- revoke / rotate ---------------------------------------------------------------------------------- */

static int key_revoke(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden key revoke"};
    wd_cli_opt_t o[] = {COMMON_OPTS};
    const size_t no = WD_ARRAY_LEN(o);
    wd_key_rec_t k;
    memset(&k, 0, sizeof k);
    int rc = one_key(&c, argc, argv, o, no, true, &k);
    if (rc == -1) rc = 0;
    else if (rc == 0) {
        char err[512], t[32];
        if (k.revoked_at) {
            wd_cli_audit(&c, "key.revoke", k.id, false, "already revoked");
            rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s was already revoked at %s", k.id,
                             wd_cli_time(k.revoked_at, "-", t));
        } else if (wd_store_key_revoke(c.store, k.id, wd_cli_now(), err, sizeof err) != WD_OK) {
            wd_cli_audit(&c, "key.revoke", k.id, false, NULL);
            rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        } else {
            wd_cli_audit(&c, "key.revoke", k.id, true, NULL);
            printf("revoked key %s (%s)\n", k.id, k.name);
        }
    }
    wd_key_rec_free(&k);
    wd_cli_end(&c);
    return rc;
}

static int key_rotate(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden key rotate"};
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "grace", .arg = true}, {.name = "quiet", .short_name = 'q'}};
    const size_t no = WD_ARRAY_LEN(o);
    wd_key_rec_t k, nk;
    memset(&k, 0, sizeof k);
    memset(&nk, 0, sizeof nk);
    char key[WD_APIKEY_MAX];
    const char *id;
    int rc = parse_one(&c, argc, argv, o, no, &id);
    if (rc) return rc == -1 ? 0 : rc;
    /* The grace period is checked before anything is opened: bad input changes nothing. */
    const char *grace = wd_cli_val(o, no, "grace");
    int64_t grace_s = 86400;
    if (grace && !strcmp(grace, "0")) grace_s = 0;
    else if (grace && (wd_parse_ttl(grace, &grace_s) != WD_OK || grace_s > MAX_GRACE))
        return wd_cli_fail(&c, WD_EXIT_USAGE, "invalid --grace '%s' (0, or a duration like 24h, at most 30d)", grace);
    if ((rc = open_one(&c, id, true, &k))) goto out;
    int64_t now = wd_cli_now();
    const char *word;
    char sbuf[96];
    const char *status = key_status(&k, now, sbuf, sizeof sbuf, &word);
    if (strcmp(word, "active") != 0) {
        wd_cli_audit(&c, "key.rotate", k.id, false, "not active");
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "key %s is %s; only an active key can be rotated", k.id, status);
        goto out;
    }
    char err[512], detail[64], t[32];
    if (wd_keyops_rotate(c.store, &k, now, grace_s, &nk, key, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "key.rotate", k.id, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        goto out;
    }
    snprintf(detail, sizeof detail, "new key %s", nk.id);
    wd_cli_audit(&c, "key.rotate", k.id, true, detail);
    bool quiet = wd_cli_flag(o, no, "quiet");
    show_new_key(key, &nk, quiet, "rotated to");
    if (!quiet)
        fprintf(stderr, "the old key %s keeps working until %s\n", k.id,
                grace_s ? wd_cli_time(now + grace_s, "-", t) : "now (no grace period)");
out:
    sodium_memzero(key, sizeof key);
    wd_key_rec_free(&k);
    wd_cli_end(&c);
    return rc;
}

int wd_cmd_key(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? WD_EXIT_USAGE : WD_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "create")) return key_create(argc - 2, argv + 2);
    if (!strcmp(sub, "list")) return key_list(argc - 2, argv + 2);
    if (!strcmp(sub, "show")) return key_show(argc - 2, argv + 2);
    if (!strcmp(sub, "revoke")) return key_revoke(argc - 2, argv + 2);
    if (!strcmp(sub, "rotate")) return key_rotate(argc - 2, argv + 2);
    fprintf(stderr, "warden key: unknown command '%s' (create, list, show, revoke, rotate)\n", sub);
    return WD_EXIT_USAGE;
}

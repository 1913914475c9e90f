/* warden user: people who log in with a password and TOTP (POST /v1/auth/token). Passwords are read
 * from the terminal with echo off or as one line of stdin — never from argv, where every user of the
 * machine could read them — and stored only as argon2id hashes. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include "auth/recovery.h"
#include "auth/secret.h"
#include "auth/token.h"
#include "auth/totp.h"
#include "cli/cli.h"

#define COMMON_OPTS                                                                                          \
    {.name = "state-dir", .arg = true}, {.name = "config", .short_name = 'c', .arg = true},                 \
        {.name = "help", .short_name = 'h'}

#define PW_MIN_CHARS 12
#define TOTP_SECRET_LEN 20

static void usage(FILE *f)
{
    fputs("usage: warden user COMMAND [--state-dir DIR | -c FILE] ...\n"
          "\n"
          "  add NAME --role R [--role R2 ...]   create a user; the password is prompted for (twice, echo off)\n"
          "                                      on a terminal, else read as one line from stdin\n"
          "  passwd NAME                         set a new password (same input rules)\n"
          "  disable NAME                        the user can no longer log in; their tokens stop working\n"
          "  list [--json]                       name, roles, MFA, locked until, disabled\n"
          "  mfa enroll NAME [--no-qr]           new TOTP secret: prints an otpauth:// URI, a QR code and 10\n"
          "                                      single-use recovery codes, once (replaces any earlier ones)\n"
          "\n"
          "  Passwords have at least 12 characters. With -c FILE, roles are checked against the config and\n"
          "  every change is recorded in its audit file. Exit status: 0 ok, 1 failed, 2 invalid usage.\n",
          f);
}

static int check_user_name(const wd_cli_t *c, const char *name)
{
    size_t n = strlen(name);
    if (!n || n > 64) return wd_cli_fail(c, WD_EXIT_USAGE, "user name must be 1 to 64 characters");
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.' || ch == '@'))
            return wd_cli_fail(c, WD_EXIT_USAGE, "invalid user name '%s' (letters, digits, '-', '_', '.', '@')", name);
    }
    if (name[0] == '-' || name[0] == '.') return wd_cli_fail(c, WD_EXIT_USAGE, "a user name cannot start with '%c'", name[0]);
    return WD_EXIT_OK;
}

/* ---- password input ------------------------------------------------------------------------------------ */

static struct termios g_saved_tty;
static volatile sig_atomic_t g_tty_changed;

static void restore_tty_and_die(int sig)
{
    if (g_tty_changed) tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads one line from fd 0 into buf (NUL-terminated, without the newline), byte by byte so no stdio
 * buffer keeps a copy of the secret. Returns its length, -1 on EOF before any byte, -2 if too long,
 * -3 on a read error. */
static ssize_t read_line(char *buf, size_t cap)
{
    size_t n = 0;
    bool any = false, too_long = false;
    for (;;) {
        char ch;
        ssize_t r = read(STDIN_FILENO, &ch, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -3;
        if (r == 0) break;
        any = true;
        if (ch == '\n') break;
        if (n + 1 < cap) buf[n++] = ch;
        else too_long = true;
    }
    if (n && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    if (too_long) return -2;
    return any ? (ssize_t)n : -1;
}

static ssize_t prompt_tty(const char *prompt, char *buf, size_t cap)
{
    struct termios t;
    bool echo_off = tcgetattr(STDIN_FILENO, &g_saved_tty) == 0;
    if (echo_off) {
        t = g_saved_tty;
        t.c_lflag &= ~(tcflag_t)ECHO;
        t.c_lflag |= ECHONL;
        g_tty_changed = 1;
        signal(SIGINT, restore_tty_and_die);
        signal(SIGTERM, restore_tty_and_die);
        signal(SIGTSTP, SIG_IGN);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
    }
    fputs(prompt, stderr);
    fflush(stderr);
    ssize_t n = read_line(buf, cap);
    if (echo_off) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
        g_tty_changed = 0;
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGTSTP, SIG_DFL);
    }
    return n;
}

static size_t utf8_chars(const char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) n++;
    return n;
}

/* Reads and checks a new password into pw (sodium_malloc'd by the caller, WD_PASSWORD_MAX + 2 bytes).
 * Returns its length or a negative exit status after printing. */
static ssize_t read_new_password(const wd_cli_t *c, const char *user, char *pw, char *again)
{
    const size_t cap = WD_PASSWORD_MAX + 2;
    ssize_t n;
    bool tty = isatty(STDIN_FILENO);
    if (tty) {
        char prompt[128];
        snprintf(prompt, sizeof prompt, "new password for %s: ", user);
        n = prompt_tty(prompt, pw, cap);
        if (n >= 0) {
            ssize_t m = prompt_tty("repeat it: ", again, cap);
            if (m != n || sodium_memcmp(pw, again, (size_t)n) != 0)
                return -wd_cli_fail(c, WD_EXIT_USAGE, "the passwords do not match; nothing changed");
        }
    } else {
        n = read_line(pw, cap);
    }
    if (n == -1) return -wd_cli_fail(c, WD_EXIT_USAGE, "no password given on standard input");
    if (n == -2 || n > WD_PASSWORD_MAX) return -wd_cli_fail(c, WD_EXIT_USAGE, "password too long (at most %d bytes)", WD_PASSWORD_MAX);
    if (n < 0) return -wd_cli_fail(c, WD_EXIT_FAIL, "cannot read the password: %s", strerror(errno));
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)pw[i] < 0x20 || pw[i] == 0x7f)
            return -wd_cli_fail(c, WD_EXIT_USAGE, "the password contains a control character");
    if (utf8_chars(pw, (size_t)n) < PW_MIN_CHARS)
        return -wd_cli_fail(c, WD_EXIT_USAGE, "password too short: at least %d characters", PW_MIN_CHARS);
    return n;
}

/* Reads a password and writes its argon2id hash into hash. Returns 0 or an exit status. */
static int new_password_hash(const wd_cli_t *c, const char *user, char hash[128])
{
    const size_t cap = WD_PASSWORD_MAX + 2;
    char *pw = sodium_malloc(cap), *again = sodium_malloc(cap);
    int rc = WD_EXIT_OK;
    if (!pw || !again) rc = wd_cli_fail(c, WD_EXIT_FAIL, "out of memory");
    else {
        ssize_t n = read_new_password(c, user, pw, again);
        if (n < 0) rc = (int)-n;
        else if (wd_password_hash(pw, (size_t)n, hash) != WD_OK)
            rc = wd_cli_fail(c, WD_EXIT_FAIL, "cannot hash the password (out of memory)");
    }
    sodium_free(pw); /* zeroes */
    sodium_free(again);
    return rc;
}

/* ---- subcommands --------------------------------------------------------------------------------------- */

/* Parses "<sub> NAME [opts]", validates NAME and opens the store. Returns -1 after printing help. */
static int parse_user(wd_cli_t *c, int argc, char **argv, wd_cli_opt_t *o, size_t no, const char **name)
{
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(c, argc, argv, o, no, pos, 1, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, no, "help")) {
        usage(stdout);
        return -1;
    }
    if (npos != 1) return wd_cli_fail(c, WD_EXIT_USAGE, "expects one user name");
    if ((rc = check_user_name(c, pos[0]))) return rc;
    *name = pos[0];
    return WD_EXIT_OK;
}

static int get_user(wd_cli_t *c, const char *name, wd_user_rec_t *u)
{
    int rc = wd_store_user_get(c->store, name, u);
    if (rc == WD_ENOTFOUND) return wd_cli_fail(c, WD_EXIT_FAIL, "no user named %s (see warden user list)", name);
    if (rc != WD_OK) return wd_cli_fail(c, WD_EXIT_FAIL, "cannot read user %s", name);
    return WD_EXIT_OK;
}

static int user_add(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden user add"};
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "role", .arg = true, .multi = true}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *name;
    int rc = parse_user(&c, argc, argv, o, no, &name);
    if (rc) return rc == -1 ? 0 : rc;
    wd_cli_opt_t *roles = wd_cli_opt(o, no, "role");
    if (!roles->n) return wd_cli_fail(&c, WD_EXIT_USAGE, "at least one --role is required");
    wd_user_rec_t u;
    memset(&u, 0, sizeof u);
    if ((rc = wd_cli_begin(&c, true, true))) goto out;
    for (size_t i = 0; i < roles->n; i++) {
        if ((rc = wd_cli_check_role(&c, roles->vals[i]))) goto out;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(roles->vals[i], roles->vals[j])) {
                rc = wd_cli_fail(&c, WD_EXIT_USAGE, "--role '%s' given twice", roles->vals[i]);
                goto out;
            }
    }
    wd_user_rec_t existing;
    if (wd_store_user_get(c.store, name, &existing) == WD_OK) {
        wd_user_rec_free(&existing);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "user %s already exists (warden user passwd %s changes the password)", name,
                         name);
        goto out;
    }
    if ((rc = new_password_hash(&c, name, u.pw_hash))) goto out;
    snprintf(u.name, sizeof u.name, "%s", name);
    u.roles = wd_cli_json_array(roles->vals, roles->n);
    u.created_at = wd_cli_now();
    char err[512];
    if (!u.roles) rc = wd_cli_fail(&c, WD_EXIT_FAIL, "out of memory");
    else if (wd_store_user_insert(c.store, &u, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "user.add", name, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
    } else {
        wd_cli_audit(&c, "user.add", name, true, NULL);
        char *r = wd_cli_join_json(u.roles);
        printf("added user %s (roles %s)\n", name, r ? r : "-");
        free(r);
        bool admin = false;
        for (size_t i = 0; c.cfg && i < roles->n; i++) {
            const wd_role_t *role = wd_policy_role(c.cfg->roles, c.cfg->nroles, roles->vals[i]);
            admin |= role && (role->admin || role->require_mfa);
        }
        if (admin || !c.cfg) printf("enrol a second factor with: warden user mfa enroll %s\n", name);
    }
out:
    wd_user_rec_free(&u);
    wd_cli_end(&c);
    return rc;
}

static int user_passwd(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden user passwd"};
    wd_cli_opt_t o[] = {COMMON_OPTS};
    const size_t no = WD_ARRAY_LEN(o);
    const char *name;
    int rc = parse_user(&c, argc, argv, o, no, &name);
    if (rc) return rc == -1 ? 0 : rc;
    wd_user_rec_t u;
    memset(&u, 0, sizeof u);
    char hash[128] = "", err[512];
    if ((rc = wd_cli_begin(&c, true, true)) || (rc = get_user(&c, name, &u))) goto out;
    if ((rc = new_password_hash(&c, name, hash))) goto out;
    if (wd_store_user_set_password(c.store, name, hash, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "user.passwd", name, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
    } else {
        wd_cli_audit(&c, "user.passwd", name, true, NULL);
        printf("changed the password of %s\n", name);
    }
out:
    sodium_memzero(hash, sizeof hash);
    wd_user_rec_free(&u);
    wd_cli_end(&c);
    return rc;
}

static int user_disable(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden user disable"};
    wd_cli_opt_t o[] = {COMMON_OPTS};
    const size_t no = WD_ARRAY_LEN(o);
    const char *name;
    int rc = parse_user(&c, argc, argv, o, no, &name);
    if (rc) return rc == -1 ? 0 : rc;
    wd_user_rec_t u;
    memset(&u, 0, sizeof u);
    char err[512], t[32];
    if ((rc = wd_cli_begin(&c, true, true)) || (rc = get_user(&c, name, &u))) goto out;
    if (u.disabled_at) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "user %s was already disabled at %s", name, wd_cli_time(u.disabled_at, "-", t));
    } else if (wd_store_user_disable(c.store, name, wd_cli_now(), err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "user.disable", name, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
    } else {
        wd_cli_audit(&c, "user.disable", name, true, NULL);
        printf("disabled user %s\n", name);
    }
out:
    wd_user_rec_free(&u);
    wd_cli_end(&c);
    return rc;
}

typedef struct {
    int64_t now;
    json_t *arr;
    wd_cli_table_t t;
} ulist_t;

static int ulist_cb(void *ud, const wd_user_rec_t *u)
{
    ulist_t *l = ud;
    char t1[32], t2[32], t3[32];
    bool locked = u->locked_until > l->now;
    if (l->arr) {
        json_t *o = json_object();
        json_t *roles = u->roles ? json_loads(u->roles, 0, NULL) : NULL;
        json_object_set_new(o, "name", json_string(u->name));
        json_object_set_new(o, "roles", roles ? roles : json_array());
        json_object_set_new(o, "mfa", json_boolean(u->mfa_enabled));
        json_object_set_new(o, "locked_until", locked ? json_string(wd_cli_time(u->locked_until, "", t1)) : json_null());
        json_object_set_new(o, "failed_logins", json_integer(u->failed_count));
        json_object_set_new(o, "disabled", json_boolean(u->disabled_at != 0));
        json_object_set_new(o, "disabled_at", u->disabled_at ? json_string(wd_cli_time(u->disabled_at, "", t2)) : json_null());
        json_object_set_new(o, "created_at", json_string(wd_cli_time(u->created_at, "", t3)));
        return json_array_append_new(l->arr, o) ? WD_ENOMEM : WD_OK;
    }
    char *roles = wd_cli_join_json(u->roles);
    const char *row[] = {u->name, roles ? roles : "-", u->mfa_enabled ? "yes" : "no",
                         locked ? wd_cli_time(u->locked_until, "-", t1) : "-",
                         u->disabled_at ? wd_cli_time(u->disabled_at, "-", t2) : "no"};
    int rc = wd_cli_table_add(&l->t, row);
    free(roles);
    return rc;
}

static int user_list(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden user list"};
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
    ulist_t l = {.now = wd_cli_now(), .arr = wd_cli_flag(o, no, "json") ? json_array() : NULL};
    wd_cli_table_init(&l.t, 5);
    const char *hdr[] = {"NAME", "ROLES", "MFA", "LOCKED UNTIL", "DISABLED"};
    wd_cli_table_add(&l.t, hdr);
    if (wd_store_user_each(c.store, ulist_cb, &l) != WD_OK) rc = wd_cli_fail(&c, WD_EXIT_FAIL, "cannot read users");
    else if (l.arr) {
        char *s = json_dumps(l.arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
    } else if (l.t.nrows == 1) fprintf(stderr, "no users yet; add one with: warden user add NAME --role R\n");
    else wd_cli_table_print(&l.t, stdout);
    json_decref(l.arr);
    wd_cli_table_free(&l.t);
out:
    wd_cli_end(&c);
    return rc;
}

static int user_mfa(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden user mfa enroll"};
    if (argc < 1 || strcmp(argv[0], "enroll") != 0) {
        if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
            usage(stdout);
            return 0;
        }
        c.prog = "warden user mfa";
        return wd_cli_fail(&c, WD_EXIT_USAGE, "expects: warden user mfa enroll NAME");
    }
    wd_cli_opt_t o[] = {COMMON_OPTS, {.name = "no-qr"}};
    const size_t no = WD_ARRAY_LEN(o);
    const char *name;
    int rc = parse_user(&c, argc - 1, argv + 1, o, no, &name);
    if (rc) return rc == -1 ? 0 : rc;
    wd_user_rec_t u;
    memset(&u, 0, sizeof u);
    uint8_t *secret = NULL;
    char codes[WD_RECOVERY_COUNT][WD_RECOVERY_TEXT_LEN + 1];
    uint8_t hashes[WD_RECOVERY_COUNT][32];
    wd_buf_t sealed, uri, qr;
    wd_buf_init(&sealed, 0);
    wd_buf_init(&uri, 0);
    wd_buf_init(&qr, 0);
    if ((rc = wd_cli_begin(&c, true, true)) || (rc = get_user(&c, name, &u))) goto out;
    if (!(secret = sodium_malloc(TOTP_SECRET_LEN))) { /* guarded, mlock'd; after sodium_init (store open) */
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "out of memory");
        goto out;
    }
    if (u.disabled_at) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "user %s is disabled", name);
        goto out;
    }
    char ad[64], err[512];
    snprintf(ad, sizeof ad, "totp:user:%lld", (long long)u.id);
    if (wd_random(secret, TOTP_SECRET_LEN) != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "the system random number generator failed");
        goto out;
    }
    for (size_t i = 0; i < WD_RECOVERY_COUNT; i++) {
        bool dup;
        do { /* 60-bit codes practically never collide, but the table's key would reject a duplicate */
            if (wd_recovery_generate(codes[i]) != WD_OK ||
                wd_recovery_hash(c.store->recovery_key, codes[i], strlen(codes[i]), hashes[i]) != WD_OK) {
                rc = wd_cli_fail(&c, WD_EXIT_FAIL, "the system random number generator failed");
                goto out;
            }
            dup = false;
            for (size_t j = 0; j < i; j++) dup |= !memcmp(hashes[i], hashes[j], 32);
        } while (dup);
    }
    /* Room up front, so no realloc leaves a copy of the secret (the URI and QR encode it) behind. */
    if (wd_buf_reserve(&uri, 1024) != WD_OK || wd_buf_reserve(&qr, 64 * 1024) != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "out of memory");
        goto out;
    }
    if (wd_seal(c.store->totp_key, secret, TOTP_SECRET_LEN, ad, &sealed) != WD_OK ||
        wd_totp_uri("warden", name, secret, TOTP_SECRET_LEN, 6, 30, WD_TOTP_SHA1, &uri) != WD_OK ||
        (!wd_cli_flag(o, no, "no-qr") && wd_qr_terminal(uri.data, &qr) != WD_OK)) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "cannot prepare the TOTP secret");
        goto out;
    }
    if (wd_store_user_set_mfa(c.store, u.id, (const uint8_t *)sealed.data, sealed.len, (const uint8_t(*)[32])hashes,
                              WD_RECOVERY_COUNT, err, sizeof err) != WD_OK) {
        wd_cli_audit(&c, "user.mfa.enroll", name, false, NULL);
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        goto out;
    }
    wd_cli_audit(&c, "user.mfa.enroll", name, true, NULL);
    printf("TOTP enrolled for %s%s. Scan the QR code with an authenticator app, or enter this URI:\n\n",
           name, u.mfa_enabled ? " (the previous secret and recovery codes no longer work)" : "");
    if (qr.len) printf("%s\n", qr.data);
    printf("%s\n\n", uri.data);
    printf("Recovery codes (each works once; store them offline, they are not shown again):\n");
    for (size_t i = 0; i < WD_RECOVERY_COUNT; i++) printf("  %s\n", codes[i]);
    fflush(stdout);
out:
    if (secret) sodium_free(secret);
    sodium_memzero(codes, sizeof codes);
    sodium_memzero(hashes, sizeof hashes);
    if (uri.data) sodium_memzero(uri.data, uri.cap);
    if (qr.data) sodium_memzero(qr.data, qr.cap);
    wd_buf_free(&sealed);
    wd_buf_free(&uri);
    wd_buf_free(&qr);
    wd_user_rec_free(&u);
    wd_cli_end(&c);
    return rc;
}

int wd_cmd_user(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? WD_EXIT_USAGE : WD_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "add")) return user_add(argc - 2, argv + 2);
    if (!strcmp(sub, "passwd")) return user_passwd(argc - 2, argv + 2);
    if (!strcmp(sub, "disable")) return user_disable(argc - 2, argv + 2);
    if (!strcmp(sub, "list")) return user_list(argc - 2, argv + 2);
    if (!strcmp(sub, "mfa")) return user_mfa(argc - 2, argv + 2);
    fprintf(stderr, "warden user: unknown command '%s' (add, passwd, disable, list, mfa enroll)\n", sub);
    return WD_EXIT_USAGE;
}

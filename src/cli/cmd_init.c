/* warden init: creates the state directory, its keys and database; idempotent. */
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fputs("usage: warden init [--state-dir DIR | -c FILE]\n"
          "\n"
          "  Creates the state directory (mode 0700) with warden.db (SQLite), master.key (32 random bytes,\n"
          "  0600; or uses the file named by WARDEN_MASTER_KEY_FILE), signing.key (Ed25519, 0600) and audit/.\n"
          "  Running it again changes nothing. DIR defaults to -c FILE's state_dir, then $WARDEN_STATE_DIR.\n",
          f);
}

static bool exists(const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

int wd_cmd_init(int argc, char **argv)
{
    wd_cli_t c = {.prog = "warden init"};
    wd_cli_opt_t o[] = {{.name = "state-dir", .arg = true}, {.name = "config", .short_name = 'c', .arg = true},
                        {.name = "help", .short_name = 'h'}};
    const char *pos[1];
    size_t npos;
    int rc = wd_cli_parse(&c, argc - 1, argv + 1, o, WD_ARRAY_LEN(o), pos, 0, &npos);
    if (rc) return rc;
    if (wd_cli_flag(o, WD_ARRAY_LEN(o), "help")) {
        usage(stdout);
        return 0;
    }
    if ((rc = wd_cli_begin(&c, false, true))) goto out;

    const char *dir = c.state_dir;
    const char *mkenv = getenv("WARDEN_MASTER_KEY_FILE");
    bool external_mk = mkenv && *mkenv;
    bool had_dir = access(dir, F_OK) == 0;
    bool had_mk = external_mk || exists(dir, "master.key"), had_sk = exists(dir, "signing.key"),
         had_db = exists(dir, "warden.db"), had_audit = exists(dir, "audit");
    char err[1024];
    int src = wd_store_init(dir, err, sizeof err);
    if (src == WD_EEXIST) {
        printf("%s: already initialised, nothing changed\n", dir);
        goto out;
    }
    if (src != WD_OK) {
        rc = wd_cli_fail(&c, WD_EXIT_FAIL, "%s", err);
        goto out;
    }
    printf("initialised warden state in %s\n", dir);
    if (!had_dir) printf("  created %s/ (mode 0700)\n", dir);
    if (!had_mk) printf("  created %s/master.key (32 random bytes, mode 0600): back it up; without it stored secrets "
                        "cannot be used\n", dir);
    else if (external_mk) printf("  using master key %s (WARDEN_MASTER_KEY_FILE)\n", mkenv);
    if (!had_sk) printf("  created %s/signing.key (Ed25519 token signing key, mode 0600)\n", dir);
    if (!had_db) printf("  created %s/warden.db (SQLite database, mode 0600)\n", dir);
    else printf("  brought %s/warden.db up to date\n", dir);
    if (!had_audit) printf("  created %s/audit/\n", dir);

    /* Name a real admin role when the config has one, so the commands can be pasted as they are. */
    const char *admin_role = NULL;
    for (size_t i = 0; c.cfg && i < c.cfg->nroles && !admin_role; i++)
        if (c.cfg->roles[i].admin) admin_role = c.cfg->roles[i].name;
    char where[4200];
    if (c.config_path && !c.state_dir_opt) snprintf(where, sizeof where, "-c %s", c.config_path);
    else if (c.config_path) snprintf(where, sizeof where, "-c %s --state-dir %s", c.config_path, dir);
    else snprintf(where, sizeof where, "--state-dir %s", dir);
    printf("\nnext steps:\n");
    if (!admin_role)
        printf("  define a role with `admin: true` under roles: in your config (it is called admin below)\n");
    printf("  create the first admin user (the password is read from the terminal):\n"
           "    warden user add admin --role %s %s\n"
           "  enrol their second factor (TOTP; needed for admin tokens):\n"
           "    warden user mfa enroll admin %s\n"
           "  or create an API key for an application:\n"
           "    warden key create --name my-app --role ROLE --ttl 90d %s\n",
           admin_role ? admin_role : "admin", where, where, where);
    wd_cli_audit(&c, "state.init", dir, true, NULL);
out:
    wd_cli_end(&c);
    return rc;
}

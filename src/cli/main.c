/* warden: one binary for the daemon (serve), the upstream simulator (sim) and the operator CLI. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "sim/sim.h"

#ifndef WARDEN_VERSION
#define WARDEN_VERSION "dev"
#endif

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"serve", wd_cmd_serve, "run the gateway (warden serve -c FILE)"},
    {"config", wd_cmd_config, "validate a configuration file (warden config check FILE)"},
    {"sim", wd_sim_main, "run the OpenAI-compatible upstream simulator (warden sim --help)"},
    {"init", wd_cmd_init, "create the state directory, keys and database (warden init --state-dir DIR)"},
    {"key", wd_cmd_key, "API keys: create, list, show, revoke, rotate (warden key --help)"},
    {"user", wd_cmd_user, "users: add, passwd, disable, list, mfa enroll (warden user --help)"},
    {"token", wd_cmd_token, "tokens: issue from a key, revoke by jti (warden token --help)"},
    {"scan", wd_cmd_scan, "find or anonymize personal data and secrets in files (warden scan --help)"},
    {"rules", wd_cmd_rules,
     "list a rules directory, check its rules against their examples (warden rules --help)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: warden COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "  version  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("warden %s\n", WARDEN_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "warden: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

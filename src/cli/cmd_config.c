/* warden config ...: operator commands on configuration files. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"

static void usage(FILE *out)
{
    fputs("usage: warden config check FILE\n"
          "\n"
          "  check FILE   validate FILE as `warden serve` would load it: every key, type and bound,\n"
          "               upstream URLs (hosts are resolved) and api_key_env variables (must be set).\n"
          "               Prints \"FILE: ok\" and a summary, or FILE:LINE:COL: message; exit 0 or 2.\n",
          out);
}

static bool is_help(const char *a)
{
    return !strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "help");
}

int wd_cmd_config(int argc, char **argv)
{
    if ((argc == 2 && is_help(argv[1])) || (argc == 3 && !strcmp(argv[1], "check") && is_help(argv[2]))) {
        usage(stdout);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "check") != 0) {
        usage(stderr);
        return 2;
    }
    const char *file = argv[2];
    char err[1024];
    wd_config_t *c = wd_config_load(file, err, sizeof err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    printf("%s: ok\n", file);
    printf("listen %s, admin %s, %zu upstream%s, %zu model%s, %u worker%s, audit %s\n", c->listen.text,
           c->admin.text ? c->admin.text : "off", c->nupstreams, c->nupstreams == 1 ? "" : "s", c->nmodels,
           c->nmodels == 1 ? "" : "s", c->workers, c->workers == 1 ? "" : "s",
           c->audit_file ? (strcmp(c->audit_file, "-") ? c->audit_file : "stdout") : "off");
    wd_config_unref(c);
    return 0;
}

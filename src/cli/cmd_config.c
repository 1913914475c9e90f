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
          "               upstream URLs (hosts are resolved), api_key_env variables (must be set), and\n"
          "               TLS files (certificates, keys and CA bundles are loaded and checked).\n"
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
    size_t ntls = 0;
    for (size_t i = 0; i < c->nupstreams; i++) {
        const wd_upstream_cfg_t *u = &c->upstreams[i];
        if (!u->tls.enabled) continue;
        ntls++;
        if (!u->tls.verify)
            fprintf(stderr, "%s: warning: upstreams[%zu] (%s): tls.verify is false: the upstream's certificate is "
                            "not checked, so anyone on the network path can impersonate it\n", file, i, u->name);
    }
    char ltls[32] = "", atls[32] = "", utls[48] = "";
    if (c->listen_tls.ctx) snprintf(ltls, sizeof ltls, " (TLS %s+)", c->listen_tls.min_version);
    if (c->admin_tls.ctx) snprintf(atls, sizeof atls, " (TLS %s+)", c->admin_tls.min_version);
    if (ntls) snprintf(utls, sizeof utls, " (%zu over TLS)", ntls);
    printf("listen %s%s, admin %s%s, %zu upstream%s%s, %zu model%s, %u worker%s, audit %s\n", c->listen.text, ltls,
           c->admin.text ? c->admin.text : "off", atls, c->nupstreams, c->nupstreams == 1 ? "" : "s", utls, c->nmodels,
           c->nmodels == 1 ? "" : "s", c->workers, c->workers == 1 ? "" : "s",
           c->audit_file ? (strcmp(c->audit_file, "-") ? c->audit_file : "stdout") : "off");
    char rules[4400];
    const char *problem;
    wd_config_rules_summary(c, rules, sizeof rules, &problem);
    if (problem) fprintf(stderr, "%s: warning: rule cache: %s\n", file, problem);
    if (rules[0]) printf("guard: %s\n", rules);
    wd_config_unref(c);
    return 0;
}

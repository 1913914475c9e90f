/* cli: the operator subcommands of the warden binary. main.c dispatches on argv[1] and calls one
 * wd_cmd_<group>(argc - 1, argv + 1), so each handler sees its own name in argv[0]. Handlers print
 * to stdout/stderr and return the process exit status (0 ok, 2 usage or validation error). */
#ifndef WD_CLI_H
#define WD_CLI_H

/* warden config check FILE: loads and validates FILE exactly as `warden serve` would (including
 * reading the api_key_env variables and resolving upstream hosts). Prints "FILE: ok" and a one-line
 * summary on success (exit 0); the file:line:col error on stderr otherwise (exit 2). */
int wd_cmd_config(int argc, char **argv);

/* warden serve -c FILE: runs the gateway until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads. */
int wd_cmd_serve(int argc, char **argv);

#endif

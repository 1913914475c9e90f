/* warden serve: worker threads serving the gateway listener, the admin listener and signal handling
 * on the main thread. SIGHUP reloads the configuration atomically, SIGTERM/SIGINT drain and exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gateway/gateway.h"

typedef struct {
    const char *path;
    wd_worker_t *workers;
    wd_worker_t **wptrs;
    size_t nworkers;
    wd_worker_t admin;   /* the main thread's loop */
    bool admin_listening;
    wd_admin_ctx_t ctx;
    uv_signal_t sighup, sigterm, sigint;
    uv_timer_t drain_timer;
    uv_timer_t auth_timer;     /* polls the store for key/user/token changes */
    wd_store_t *store;         /* NULL when auth.mode is none */
    wd_authdb_t *authdb;       /* current identity snapshot */
    wd_limiter_t *limiter;     /* rate limits, backend local */
    int64_t data_version;
    unsigned ticks;
    uint64_t drain_deadline;
    bool stopping;
} serve_t;

static void usage(void)
{
    fprintf(stderr, "usage: warden serve -c FILE\n"
                    "  Runs the gateway. SIGHUP reloads FILE; SIGTERM or SIGINT drains and exits.\n");
}

static wd_log_level_t parse_level(const char *s)
{
    if (!s) return WD_LOG_INFO;
    if (!strcmp(s, "debug")) return WD_LOG_DEBUG;
    if (!strcmp(s, "warn")) return WD_LOG_WARN;
    if (!strcmp(s, "error")) return WD_LOG_ERROR;
    return WD_LOG_INFO;
}

static struct ssl_ctx_st *listen_tls(const wd_config_t *c) { return c->listen_tls.ctx; }
static struct ssl_ctx_st *admin_tls(const wd_config_t *c) { return c->admin_tls.ctx; }

/* Said at every start and reload, at warn level, for as long as the config keeps it. */
static void warn_insecure(const wd_config_t *c)
{
    for (size_t i = 0; i < c->nupstreams; i++) {
        const wd_upstream_cfg_t *u = &c->upstreams[i];
        if (u->tls.enabled && !u->tls.verify)
            wd_log(WD_LOG_WARN,
                   "INSECURE: upstream '%s' (%s) has tls.verify: false: its certificate is not checked, so anyone "
                   "on the network path can impersonate it and read every prompt, answer and the upstream "
                   "credential", u->name, u->url);
    }
}

/* How the guard's rule databases were had: from the compile cache or compiled (seconds each). */
static void log_rules(const wd_config_t *c)
{
    char line[4400];
    const char *problem;
    wd_config_rules_summary(c, line, sizeof line, &problem);
    if (problem) wd_log(WD_LOG_WARN, "guard: rule cache: %s", problem);
    if (line[0]) wd_log(WD_LOG_INFO, "guard: %s", line);
}

static void set_cfg(wd_worker_t *w, void *arg)
{
    wd_worker_set_config(w, arg);
    wd_config_unref(arg);
}

static void reload(serve_t *s)
{
    char err[512];
    wd_config_t *nc = wd_config_load(s->path, err, sizeof err);
    const char *why = NULL;
    if (!nc) why = err;
    else if (wd_config_check_reload(s->admin.cfg, nc, err, sizeof err) != WD_OK) why = err;
    else if (wd_config_auth_required(nc) != wd_config_auth_required(s->admin.cfg) ||
             (nc->state_dir && s->admin.cfg->state_dir && strcmp(nc->state_dir, s->admin.cfg->state_dir) != 0))
        why = "auth.mode and state_dir cannot change on reload (restart instead)";
    else if (strcmp(nc->rate.backend, s->admin.cfg->rate.backend) != 0 ||
             strcmp(nc->rate.key_prefix, s->admin.cfg->rate.key_prefix) != 0)
        why = "rate_limits.backend and key_prefix cannot change on reload (restart instead)";
    if (why) {
        s->ctx.reload_failures++;
        wd_log(WD_LOG_ERROR, "reload refused, still serving the previous configuration: %s", why);
        if (nc) wd_config_unref(nc);
        return;
    }
    if (wd_event_sink_open(nc->audit_file, err, sizeof err) != WD_OK) {
        s->ctx.reload_failures++;
        wd_log(WD_LOG_ERROR, "reload refused, still serving the previous configuration: %s", err);
        wd_config_unref(nc);
        return;
    }
    wd_log_set_level(parse_level(nc->log_level));
    warn_insecure(nc);
    log_rules(nc);
    for (size_t i = 0; i < s->nworkers; i++) wd_worker_call(&s->workers[i], set_cfg, wd_config_ref(nc));
    wd_worker_set_config(&s->admin, nc);
    wd_config_unref(nc);
    s->ctx.reloads++;
    wd_log(WD_LOG_INFO, "configuration reloaded from %s", s->path);
}

static void set_authdb(wd_worker_t *w, void *arg)
{
    wd_gateway_set_authdb(w, arg);
    wd_authdb_unref(arg);
}

/* Every auth.refresh_ms: if another connection (the CLI, the admin API of another replica) changed
 * the database, rebuild the identity snapshot and hand it to every worker. Every ~5 s: write the
 * keys' last-used times in one transaction. */
static void on_auth_tick(uv_timer_t *t)
{
    serve_t *s = t->data;
    int64_t v = wd_store_data_version(s->store);
    if (v != s->data_version) {
        char err[256];
        wd_authdb_t *db = wd_authdb_load(s->store, err, sizeof err);
        if (!db) {
            wd_log(WD_LOG_ERROR, "identity refresh failed, keeping the previous snapshot: %s", err);
        } else {
            s->data_version = v;
            wd_authdb_flush_last_used(s->authdb, s->store);
            for (size_t i = 0; i < s->nworkers; i++) wd_worker_call(&s->workers[i], set_authdb, wd_authdb_ref(db));
            wd_authdb_unref(s->authdb);
            s->authdb = db;
            wd_log(WD_LOG_DEBUG, "identity snapshot reloaded (%zu keys, %zu users, %zu revoked tokens)", db->nkeys,
                   db->nusers, db->nrevoked);
        }
    }
    uint64_t every = 5000 / (s->admin.cfg->auth.refresh_ms ? s->admin.cfg->auth.refresh_ms : 250);
    if (++s->ticks >= (every ? every : 1)) {
        s->ticks = 0;
        wd_authdb_flush_last_used(s->authdb, s->store);
    }
}

static void auth_changed(void *ud)
{
    serve_t *s = ud;
    s->data_version = -1; /* force a rebuild now */
    on_auth_tick(&s->auth_timer);
}

static void on_sighup(uv_signal_t *h, int sig)
{
    WD_UNUSED(sig);
    serve_t *s = h->data;
    if (!s->stopping) reload(s);
}

static void worker_drain(wd_worker_t *w, void *arg)
{
    WD_UNUSED(arg);
    wd_worker_drain(w);
}

static void worker_stop(wd_worker_t *w, void *arg)
{
    WD_UNUSED(arg);
    wd_gateway_worker_stop(w);
    wd_worker_stop(w);
}

static void stop_all(serve_t *s)
{
    for (size_t i = 0; i < s->nworkers; i++) wd_worker_call(&s->workers[i], worker_stop, NULL);
    for (size_t i = 0; i < s->nworkers; i++) wd_worker_join(&s->workers[i]);
    uv_signal_stop(&s->sighup);
    if (s->authdb) {
        uv_timer_stop(&s->auth_timer);
        wd_authdb_flush_last_used(s->authdb, s->store);
    }
    wd_worker_stop(&s->admin); /* closes every handle on the main loop, so uv_run returns */
}

static void on_drain_tick(uv_timer_t *t)
{
    serve_t *s = t->data;
    size_t open = 0;
    for (size_t i = 0; i < s->nworkers; i++) open += wd_worker_conn_count(&s->workers[i]);
    bool late = wd_now_ns() > s->drain_deadline;
    if (open && !late) return;
    if (open) wd_log(WD_LOG_WARN, "drain deadline reached with %zu connection(s) open; closing them", open);
    else wd_log(WD_LOG_INFO, "drained; exiting");
    uv_timer_stop(t);
    stop_all(s);
}

static void on_sigterm(uv_signal_t *h, int sig)
{
    serve_t *s = h->data;
    if (s->stopping) {
        wd_log(WD_LOG_WARN, "second signal %d: exiting now", sig);
        uv_timer_stop(&s->drain_timer);
        stop_all(s);
        return;
    }
    s->stopping = true;
    s->ctx.draining = true;
    uint32_t ms = s->admin.cfg->limits.drain_timeout_ms;
    wd_log(WD_LOG_INFO, "signal %d: draining (up to %u ms)", sig, ms);
    s->drain_deadline = wd_now_ns() + (uint64_t)ms * 1000000ull;
    for (size_t i = 0; i < s->nworkers; i++) wd_worker_call(&s->workers[i], worker_drain, NULL);
    uv_timer_start(&s->drain_timer, on_drain_tick, 20, 20);
}

static void cleanup(serve_t *s, size_t ninit, bool admin_init)
{
    for (size_t i = 0; i < ninit; i++) {
        wd_worker_t *w = &s->workers[i];
        wd_worker_stop(w);
        wd_worker_free(w);
        wd_gateway_worker_free(w);
    }
    if (admin_init) {
        wd_worker_stop(&s->admin);
        wd_worker_free(&s->admin);
    }
    free(s->workers);
    free(s->wptrs);
    wd_event_writer_free(&s->ctx.events);
    wd_event_sink_close();
    wd_authdb_unref(s->authdb);
    wd_store_close(s->store);
    wd_limiter_free(s->limiter);
}

static int serve(serve_t *s)
{
    char err[512];
    wd_config_t *cfg = wd_config_load(s->path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "warden: %s\n", err);
        return 2;
    }
    wd_log_set_level(parse_level(cfg->log_level));
    if (wd_event_sink_open(cfg->audit_file, err, sizeof err) != WD_OK) {
        fprintf(stderr, "warden: %s\n", err);
        wd_config_unref(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* the state directory: identity (auth.mode required) and the master key the guard's hash
     * action derives its key from */
    if (cfg->state_dir) {
        if (wd_store_open(cfg->state_dir, &s->store, err, sizeof err) != WD_OK ||
            (wd_config_auth_required(cfg) && !(s->authdb = wd_authdb_load(s->store, err, sizeof err)))) {
            fprintf(stderr, "warden: %s\n", err);
            wd_store_close(s->store);
            wd_config_unref(cfg);
            wd_event_sink_close();
            return 1;
        }
    }
    if (s->authdb) {
        s->data_version = wd_store_data_version(s->store);
        wd_gateway_set_store(s->store);
    } else {
        wd_log(WD_LOG_WARN, "auth.mode is none: any client that can reach %s may use every model", cfg->listen.text);
    }
    size_t ninit = 0;
    bool admin_init = false;
    if (!(s->limiter = wd_limiter_new(64))) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    wd_gateway_set_limiter(s->limiter);
    s->nworkers = cfg->workers;
    s->workers = calloc(s->nworkers, sizeof *s->workers);
    s->wptrs = calloc(s->nworkers, sizeof *s->wptrs);
    if (!s->workers || !s->wptrs) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (wd_server_probe(&cfg->listen, err, sizeof err) ||
        (cfg->admin.salen && wd_server_probe(&cfg->admin, err, sizeof err)))
        goto fail;
    if (wd_worker_init(&s->admin, -1, cfg, err, sizeof err)) goto fail;
    wd_event_writer_init(&s->ctx.events);
    admin_init = true;
    for (; ninit < s->nworkers; ninit++) {
        wd_worker_t *w = &s->workers[ninit];
        s->wptrs[ninit] = w;
        if (wd_worker_init(w, (int)ninit, cfg, err, sizeof err)) goto fail;
        if (wd_gateway_worker_init(w) ||
            wd_server_listen(w, &cfg->listen, cfg->listen_tls.ctx ? listen_tls : NULL, &wd_gateway_handler, NULL,
                             err, sizeof err)) {
            ninit++;
            goto fail;
        }
        if (s->authdb) wd_gateway_set_authdb(w, s->authdb);
        if (s->store) ((wd_gw_worker_t *)w->app)->guard_hash_key = s->store->guard_hash_key;
        if (strcmp(cfg->rate.backend, "local") != 0) {
            wd_gw_worker_t *g = w->app;
            char rerr[256];
            if (!(g->redis = wd_limit_redis_new(&w->loop, cfg->rate.backend, cfg->rate.redis_timeout_ms,
                                                cfg->rate.key_prefix, rerr, sizeof rerr))) {
                snprintf(err, sizeof err, "rate_limits.backend: %s", rerr);
                ninit++;
                goto fail;
            }
        }
    }
    s->ctx.workers = s->wptrs;
    s->ctx.nworkers = s->nworkers;
    if (cfg->admin.salen && wd_server_listen(&s->admin, &cfg->admin, cfg->admin_tls.ctx ? admin_tls : NULL,
                                             &wd_admin_handler, &s->ctx, err, sizeof err))
        goto fail;
    uv_signal_init(&s->admin.loop, &s->sighup);
    uv_signal_init(&s->admin.loop, &s->sigterm);
    uv_signal_init(&s->admin.loop, &s->sigint);
    uv_timer_init(&s->admin.loop, &s->drain_timer);
    s->sighup.data = s->sigterm.data = s->sigint.data = s->drain_timer.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_signal_start(&s->sigterm, on_sigterm, SIGTERM);
    uv_signal_start(&s->sigint, on_sigterm, SIGINT);
    if (s->authdb) {
        uv_timer_init(&s->admin.loop, &s->auth_timer);
        s->auth_timer.data = s;
        uv_timer_start(&s->auth_timer, on_auth_tick, cfg->auth.refresh_ms, cfg->auth.refresh_ms);
        s->ctx.store = s->store;
        s->ctx.authdb = &s->authdb;
        s->ctx.changed = auth_changed;
        s->ctx.changed_ud = s;
    }
    for (size_t i = 0; i < s->nworkers; i++) {
        if (wd_worker_start(&s->workers[i]) != WD_OK) {
            /* threads already running would need joining; a failed thread start is fatal */
            fprintf(stderr, "warden: cannot start worker thread\n");
            exit(1);
        }
    }
    wd_log(WD_LOG_INFO, "warden listening on %s%s (%zu workers)%s%s%s", cfg->listen.text,
           cfg->listen_tls.ctx ? " (TLS)" : "", s->nworkers, cfg->admin.salen ? ", admin on " : "",
           cfg->admin.salen ? cfg->admin.text : "", cfg->admin_tls.ctx ? " (TLS)" : "");
    warn_insecure(cfg);
    log_rules(cfg);
    wd_config_unref(cfg);
    uv_run(&s->admin.loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < s->nworkers; i++) {
        wd_worker_free(&s->workers[i]);
        wd_gateway_worker_free(&s->workers[i]);
    }
    wd_worker_free(&s->admin);
    free(s->workers);
    free(s->wptrs);
    wd_event_sink_close();
    wd_event_writer_free(&s->ctx.events);
    wd_authdb_unref(s->authdb);
    wd_store_close(s->store);
    wd_limiter_free(s->limiter);
    return 0;
fail:
    fprintf(stderr, "warden: %s\n", err);
    cleanup(s, ninit, admin_init);
    wd_config_unref(cfg);
    return 1;
}

int wd_cmd_serve(int argc, char **argv)
{
    serve_t s;
    memset(&s, 0, sizeof s);
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) s.path = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "warden serve: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        }
    }
    if (!s.path) {
        fprintf(stderr, "warden serve: -c FILE is required\n");
        usage();
        return 2;
    }
    return serve(&s);
}

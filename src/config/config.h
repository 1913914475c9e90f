/* config: YAML file -> one immutable, typed, validated wd_config_t snapshot. Every key is described
 * once in a table (name, type, bounds, default); unknown keys, wrong types and out-of-range values are
 * errors reported as file:line:col. A snapshot is reference-counted: each exchange holds the snapshot
 * it started with, so a reload (SIGHUP) never changes a request in flight. */
#ifndef WD_CONFIG_H
#define WD_CONFIG_H

#include <netinet/in.h>
#include <sys/socket.h>

#include "core/core.h"
#include "guard/guard.h"
#include "policy/policy.h"

typedef struct {
    char *text;                  /* as written, e.g. "127.0.0.1:8080" or "[::1]:8080" */
    struct sockaddr_storage sa;  /* resolved numerically at load (no DNS for listeners) */
    socklen_t salen;
} wd_addr_t;

struct ssl_ctx_st; /* OpenSSL's SSL_CTX (net/tls.h); config builds the contexts so that a bad
                   * certificate is a config error with a file:line:col, like any other */

/* TLS on a listener (listen.tls, admin.tls). Paths are resolved against the config file's directory. */
typedef struct {
    char *cert;              /* PEM certificate chain, leaf first */
    char *key;               /* PEM private key, unencrypted */
    char *min_version;       /* "1.2" or "1.3" (default) */
    struct ssl_ctx_st *ctx;  /* NULL: the listener speaks plain HTTP */
} wd_tls_listen_cfg_t;

/* TLS to an upstream (https:// URLs). */
typedef struct {
    bool enabled;            /* the URL is https:// */
    bool verify;             /* check the certificate chain and name (default true) */
    char *ca;                /* PEM CA bundle used instead of the system store; NULL: system store */
    char *server_name;       /* sent as SNI and required in the certificate; default: the URL's host */
    struct ssl_ctx_st *ctx;  /* built at load; NULL for http:// */
} wd_upstream_tls_cfg_t;

typedef struct {
    char *name;
    char *url;           /* as written: http(s)://host:port/base */
    char *host;          /* host part (for the Host header) */
    char *host_header;   /* "host:port" as sent in Host */
    uint16_t port;
    char *base_path;     /* path prefix without trailing slash, e.g. "/v1" ("" if none) */
    wd_addr_t addr;      /* resolved at load time (getaddrinfo on the loading thread, never on a worker) */
    char *api_key_env;   /* name of the env var that held the credential (for messages only) */
    char *api_key;       /* the credential itself (NULL if none); never logged */
    uint32_t timeout_ms;         /* max wait for the response head, and max gap between body reads */
    uint32_t connect_timeout_ms;
    uint32_t max_idle;           /* idle keep-alive connections kept per worker */
    wd_upstream_tls_cfg_t tls;
} wd_upstream_cfg_t;

typedef struct {
    char *name;            /* what clients ask for */
    wd_upstream_cfg_t *upstream;
    char *upstream_model;  /* what the upstream is told (defaults to name) */
} wd_model_cfg_t;

typedef struct {
    uint32_t max_connections;     /* per process; further accepts are closed at once */
    uint32_t max_request_line;    /* 414 beyond */
    uint32_t max_header_bytes;    /* 431 beyond */
    uint32_t max_headers;         /* 431 beyond */
    uint32_t max_body_bytes;      /* 413 beyond */
    uint32_t max_response_bytes;  /* non-streamed upstream answers larger than this are a 502 */
    uint32_t max_sse_event_bytes; /* one SSE event larger than this ends the stream with an error */
    uint32_t header_timeout_ms;   /* whole head must arrive within this (slowloris) */
    uint32_t body_timeout_ms;     /* whole body must arrive within this after the head */
    uint32_t idle_timeout_ms;     /* keep-alive connection with no request in progress */
    uint32_t send_timeout_ms;     /* client not reading our output for this long -> close */
    uint32_t drain_timeout_ms;    /* SIGTERM: wait this long for in-flight requests */
    uint32_t write_buffer_bytes;  /* output queued to a slow peer before we stop reading the other side */
} wd_server_limits_t;

typedef struct {
    char *mode;               /* "required" (default): every request needs a key or token; "none": open */
    uint32_t token_ttl_ms;    /* lifetime of tokens from POST /v1/auth/token */
    uint32_t token_max_ttl_ms;/* upper bound for any token warden mints */
    uint32_t max_failures;    /* consecutive failed logins before the account locks */
    uint32_t lockout_ms;      /* first lock duration; doubles with each further failure */
    uint32_t lockout_max_ms;  /* cap on the lock duration */
    uint32_t refresh_ms;      /* how often a running server looks for key/user/token changes */
} wd_auth_cfg_t;

typedef struct {
    char *backend;              /* "local" or a redis:// / unix:// URL */
    char *fail;                 /* "closed" (default) or "open": what to do when the backend is unreachable */
    uint32_t redis_timeout_ms;
    char *key_prefix;           /* Redis hash tag, e.g. "wd" -> keys "{wd}:..." */
    uint32_t default_max_tokens;/* completion reservation when a request names no max_tokens */
    wd_limits_t per_ip;         /* applied to every client address */
} wd_rate_cfg_t;

/* A guard profile: what to do with each kind of finding in prompts. Keys are data classes ("pii")
 * or entity types ("EMAIL"); a type's entry overrides its class's. */
typedef struct {
    char *key;
    wd_action_t action;
} wd_guard_rule_action_t;

/* Prompt-injection screening of a profile (guard/injection.h): the request's score is compared with
 * the threshold; at or above it the action applies. */
typedef struct {
    bool enabled;           /* the profile has an injection section (or input: { injection: ACTION }) */
    uint32_t threshold;     /* percent, default 70 */
    wd_action_t action;     /* allow | flag | block (default block) */
    char **roles;           /* message roles screened; NULL = every role */
    size_t nroles;
} wd_guard_injection_cfg_t;

typedef struct {
    char *name;
    wd_guard_rule_action_t *input;
    size_t ninput;
    bool restore;        /* put pseudonymized values back in answers */
    wd_guard_injection_cfg_t injection;
    wd_guard_rule_action_t *output; /* answers: class or type -> allow|flag|mask|redact|hash|block */
    size_t noutput;
    bool fail_open;      /* on_error: open — an output check that cannot run lets the answer pass */
    /* unreadable_input: what happens to a request carrying what the guard cannot read (token ids, prompt
     * embeddings, non-text content parts, an audio answer) when the profile checks prompts or answers:
     * WD_ACT_BLOCK (default) or WD_ACT_FLAG (passes, recorded in the decision) */
    wd_action_t unreadable;
    struct wd_guard_allow *allow; /* allow: values that pass whatever their type's action (guard/rewrite.h);
                                     NULL: none */
} wd_guard_profile_t;

typedef struct {
    char *rules_dir;       /* resolved against the config file's directory */
    char *default_profile; /* for requests without a role profile (e.g. auth.mode none); NULL = none */
    uint32_t min_score;    /* percent: findings scoring below are ignored */
    bool cache;            /* keep compiled rule databases on disk (guard/hscache.h) */
    char *cache_dir;       /* where: as configured, else the environment's default; NULL = no cache */
} wd_guard_cfg_t;

typedef struct wd_config {
    int refs; /* atomic; use wd_config_ref / wd_config_unref */
    char *path;

    wd_addr_t listen;
    wd_addr_t admin;        /* admin.address; salen 0 when no admin listener */
    wd_tls_listen_cfg_t listen_tls;
    wd_tls_listen_cfg_t admin_tls;
    char *state_dir;        /* may be NULL */
    uint32_t workers;       /* 0 in the file means one per core; resolved here to >= 1 */
    uint32_t busy_poll_us;  /* 0: workers sleep as soon as they are idle */
    wd_server_limits_t limits;

    wd_upstream_cfg_t *upstreams;
    size_t nupstreams;
    wd_model_cfg_t *models;
    size_t nmodels;

    wd_auth_cfg_t auth;
    wd_role_t *roles;
    size_t nroles;
    wd_rate_cfg_t rate;
    wd_guard_cfg_t guard;
    wd_guard_profile_t *profiles;
    size_t nprofiles;
    wd_guard_db_t *guard_db; /* compiled rules (NULL when no guard section) */

    char *audit_file;       /* access/event log: path, or "-" for stdout, NULL to disable */
    char *log_level;        /* debug|info|warn|error */
} wd_config_t;

/* Loads and validates a config file. On failure returns NULL and writes "file:line:col: message"
 * into err. Environment variables named by api_key_env are read here; a missing one is an error. */
wd_config_t *wd_config_load(const char *path, char *err, size_t errlen);
/* Same, from a buffer (name is used in messages). */
wd_config_t *wd_config_load_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen);
/* Same, with WD_CONFIG_* flags. WD_CONFIG_NO_SCAN: the guard's rule files are read and the profiles and
 * roles checked against them, but no Hyperscan database is compiled (about 2 s with the shipped rules),
 * so cfg->guard_db names rules and cannot scan. For commands that never scan (keys, users, tokens);
 * `warden config check` and `warden serve` load everything. */
#define WD_CONFIG_NO_SCAN 1u
wd_config_t *wd_config_load_ex(const char *path, unsigned flags, char *err, size_t errlen);

wd_config_t *wd_config_ref(wd_config_t *c);
void wd_config_unref(wd_config_t *c); /* frees on last reference, zeroing secrets */

const wd_guard_profile_t *wd_config_profile(const wd_config_t *c, const char *name);
/* How the guard's rule databases were had, as one line ("231 rules; 18 databases compiled, 0 loaded
 * from the cache in DIR"; "" without a guard section), and in *problem the first reason the cache
 * could not be used (NULL if none), for a warning. */
void wd_config_rules_summary(const wd_config_t *c, char *buf, size_t len, const char **problem);
/* The action a profile takes for a rule (types before classes; unlisted: allow). */
wd_action_t wd_profile_action(const wd_guard_profile_t *p, const wd_rule_t *r);
/* The same for answers (the profile's output map; unlisted: allow). */
wd_action_t wd_profile_output_action(const wd_guard_profile_t *p, const wd_rule_t *r);
/* Whether the profile screens text of this message role for injection (role as written, not
 * NUL-terminated). */
/* The roles a chat message can have ("function" is the legacy name of tool results), NULL-terminated. */
extern const char *const wd_message_roles[];
bool wd_profile_injection_role(const wd_guard_profile_t *p, const char *role, size_t len);

/* true when requests must authenticate (auth.mode: required) */
static inline bool wd_config_auth_required(const wd_config_t *c) { return c->auth.mode && c->auth.mode[0] == 'r'; }

const wd_model_cfg_t *wd_config_model(const wd_config_t *c, const char *name, size_t len);

/* SIGHUP support: listeners and worker threads are set up once, so a new snapshot that changes the
 * listen or admin address, turns TLS on or off on either, or changes the worker count is refused (WD_EINVAL, message in err) and the caller
 * keeps serving the old one. Returns WD_OK when `next` may replace `old`. */
int wd_config_check_reload(const wd_config_t *old, const wd_config_t *next, char *err, size_t errlen);

/* The value syntaxes the loader accepts, exposed for the CLI and tests. Byte sizes: digits with an
 * optional B, KiB, MiB or GiB suffix. Durations: digits with an optional ms, s, m or h suffix (bare
 * numbers are milliseconds). No sign, no leading zeros, no spaces. Returns WD_OK, WD_EINVAL for bad
 * syntax, WD_E2BIG when the value does not fit in 64 bits. */
int wd_config_parse_bytes(const char *p, size_t len, uint64_t *out);
int wd_config_parse_ms(const char *p, size_t len, uint64_t *out);

#endif

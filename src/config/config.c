/* config: YAML -> wd_config_t.
 *
 * Two passes. First libyaml's event stream is turned into a small tree of plain nodes (scalars,
 * sequences, mappings), each carrying the 1-based line:column where it starts; anything that makes
 * a config ambiguous or expensive is refused here (anchors, aliases, tags, several documents, deep
 * nesting). Then the tree is walked with one table per mapping (wd_cfg_field_t: name, type, bounds,
 * default, offset) that both validates and fills the struct, so every key is described exactly once
 * and every error can name its file:line:col. Loading is all-or-nothing: on any error the partially
 * built snapshot is freed (secrets zeroed) and NULL is returned. */
#include "config/config.h"

#include "config/yamltree.h"
#include "guard/hscache.h"
#include "guard/injection.h"
#include "guard/rewrite.h"
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------- */
/* Errors */

typedef struct {
    const char *file; /* name used in messages */
    char *err;
    size_t errlen;
    wd_config_t *cfg;
    unsigned flags; /* WD_CONFIG_* */
} ctx_t;

static int failv(ctx_t *c, unsigned line, unsigned col, const char *fmt, va_list ap)
{
    if (!c->err || !c->errlen) return WD_EINVAL;
    int n = snprintf(c->err, c->errlen, "%s:%u:%u: ", c->file, line, col);
    if (n >= 0 && (size_t)n < c->errlen) vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    return WD_EINVAL;
}

__attribute__((format(printf, 4, 5))) static int fail_at(ctx_t *c, unsigned line, unsigned col,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = failv(c, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 3, 4))) static int fail(ctx_t *c, const wd_ynode_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = failv(c, n->line, n->col, fmt, ap);
    va_end(ap);
    return rc;
}

/* Scalars quoted into messages are cut short so one bad value cannot flood the error buffer. */
#define SHOWN_MAX 64
#define SHOW(n) (int)WD_MIN((n)->len, (size_t)SHOWN_MAX), (n)->s, ((n)->len > SHOWN_MAX ? "..." : "")

/* ---------------------------------------------------------------------------------------------- */
/* Limits (the YAML tree itself is built by config/yamltree.c, shared with the guard's rule files) */

/* Depth and size caps: a config is a few levels deep and a few KB; anything beyond is a mistake or
 * an attack, and refusing it keeps the recursive tree walk and libyaml's memory bounded. */
#define MAX_DEPTH 16
#define MAX_CONFIG_BYTES (1u << 20)
#define MAX_UPSTREAMS 256
#define MAX_MODELS 4096
#define MAX_NAME 256
#define MAX_FIELDS 32 /* per table; checked at compile time below */

/* ---------------------------------------------------------------------------------------------- */
/* Field tables */

typedef enum {
    F_U32,   /* plain integer */
    F_BYTES, /* integer, optionally with B/KiB/MiB/GiB */
    F_MS,    /* integer milliseconds, or a duration with ms/s/m/h */
    F_STR,   /* non-empty string without control characters; char * at off */
    F_ENUM,  /* one of choices; char * at off */
    F_MAP,   /* nested mapping described by sub, struct at off */
    F_FN,    /* custom handler; called with n == NULL when the key is absent */
    F_BOOL,  /* true/false; bool at off */
} field_type_t;

typedef struct wd_cfg_field wd_cfg_field_t;
typedef int (*field_fn_t)(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f);

typedef struct {
    const char *what; /* for messages: "limits", "an upstream" */
    const wd_cfg_field_t *fields;
    size_t nfields;
} wd_cfg_map_t;

struct wd_cfg_field {
    const char *name;
    field_type_t type;
    bool required;
    size_t off;
    uint32_t min, max, def;     /* numeric types */
    const char *def_str;        /* F_STR / F_ENUM default, NULL for none */
    const char *const *choices; /* F_ENUM, NULL-terminated */
    field_fn_t fn;              /* F_FN */
    const wd_cfg_map_t *sub;    /* F_MAP */
};

static int apply_map(ctx_t *c, const wd_ynode_t *n, const char *path, const wd_cfg_map_t *m, void *base);

static void join_path(char *out, size_t outlen, const char *prefix, const char *key)
{
    if (prefix && *prefix)
        snprintf(out, outlen, "%s.%s", prefix, key);
    else
        snprintf(out, outlen, "%s", key);
}

static int parse_digits(const char *s, size_t len, size_t *used, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
            return WD_E2BIG;
        i++;
    }
    if (i == 0) return WD_EINVAL;
    /* "010" is octal in YAML 1.1 and decimal in 1.2: refuse rather than guess */
    if (i > 1 && s[0] == '0') return WD_EINVAL;
    *used = i;
    *out = v;
    return WD_OK;
}

typedef struct {
    const char *suffix;
    uint64_t mult;
} unit_t;

static const unit_t byte_units[] = {
    {"", 1}, {"B", 1}, {"KiB", 1024ull}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {NULL, 0}};
static const unit_t int_units[] = {{"", 1}, {NULL, 0}};
static const unit_t ms_units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0}};

/* Parses "<digits><unit>" where unit is one of units (the empty unit means the bare number).
 * Returns WD_EINVAL for a malformed value, WD_E2BIG when it does not fit in 64 bits. */
static int parse_with_units(const char *s, size_t len, const unit_t *units, uint64_t *out)
{
    size_t used;
    uint64_t v;
    int rc = parse_digits(s, len, &used, &v);
    if (rc) return rc;
    const char *sfx = s + used;
    size_t sfxlen = len - used;
    for (const unit_t *u = units; u->suffix; u++) {
        if (strlen(u->suffix) != sfxlen || memcmp(u->suffix, sfx, sfxlen) != 0) continue;
        if (__builtin_mul_overflow(v, u->mult, out)) return WD_E2BIG;
        return WD_OK;
    }
    return WD_EINVAL;
}

int wd_config_parse_bytes(const char *s, size_t len, uint64_t *out)
{
    return parse_with_units(s, len, byte_units, out);
}

int wd_config_parse_ms(const char *s, size_t len, uint64_t *out)
{
    return parse_with_units(s, len, ms_units, out);
}

static int field_number(ctx_t *c, const wd_ynode_t *n, const char *path, const wd_cfg_field_t *f, uint32_t *dst)
{
    static const struct {
        const unit_t *units;
        const char *expect;
        const char *unit;
    } kinds[] = {
        [F_U32] = {int_units, "an integer", ""},
        [F_BYTES] = {byte_units, "a byte size (an integer, optionally with B, KiB, MiB or GiB, e.g. 4MiB)",
                     " bytes"},
        [F_MS] = {ms_units, "a duration (milliseconds, or an integer with ms, s, m or h, e.g. 10s)", " ms"},
    };
    const char *expect = kinds[f->type].expect;
    if (n->kind != WD_YNODE_SCALAR) return fail(c, n, "%s: expected %s, got %s", path, expect, wd_ynode_kind_name(n));
    if (!n->plain || wd_ynode_is_null(n))
        return fail(c, n, "%s: expected %s, got %s'%.*s%s'", path, expect, n->plain ? "" : "the string ",
                    SHOW(n));
    uint64_t v;
    int rc = parse_with_units(n->s, n->len, kinds[f->type].units, &v);
    if (rc == WD_EINVAL) return fail(c, n, "%s: expected %s, got '%.*s%s'", path, expect, SHOW(n));
    if (rc || v < f->min || v > f->max)
        return fail(c, n, "%s: %.*s%s is out of range (%u..%u%s)", path, SHOW(n), f->min, f->max,
                    kinds[f->type].unit);
    *dst = (uint32_t)v;
    return WD_OK;
}

/* Strings end up in log lines, Host headers and file paths: no control characters, no NULs. */
static int check_string(ctx_t *c, const wd_ynode_t *n, const char *path)
{
    if (n->kind != WD_YNODE_SCALAR) return fail(c, n, "%s: expected a string, got %s", path, wd_ynode_kind_name(n));
    if (wd_ynode_is_null(n) || n->len == 0) return fail(c, n, "%s: expected a non-empty string", path);
    for (size_t i = 0; i < n->len; i++) {
        unsigned char ch = (unsigned char)n->s[i];
        if (ch < 0x20 || ch == 0x7f) return fail(c, n, "%s: control characters are not allowed", path);
    }
    return WD_OK;
}

static int dup_str(ctx_t *c, const wd_ynode_t *n, const char *s, size_t len, char **dst)
{
    char *p = strndup(s, len);
    if (!p) return n ? fail(c, n, "out of memory") : fail_at(c, 1, 1, "out of memory");
    free(*dst);
    *dst = p;
    return WD_OK;
}

static int apply_default(ctx_t *c, const wd_ynode_t *map, const char *path, const wd_cfg_field_t *f, void *base)
{
    void *dst = (char *)base + f->off;
    switch (f->type) {
    case F_U32:
    case F_BYTES:
    case F_MS: *(uint32_t *)dst = f->def; return WD_OK;
    case F_STR:
    case F_ENUM:
        if (!f->def_str) return WD_OK;
        return dup_str(c, map, f->def_str, strlen(f->def_str), (char **)dst);
    case F_MAP: return apply_map(c, NULL, path, f->sub, dst);
    case F_FN: return f->fn(c, NULL, path, base, f);
    case F_BOOL: *(bool *)dst = f->def != 0; return WD_OK;
    }
    return WD_OK;
}

static int apply_field(ctx_t *c, const wd_ynode_t *n, const char *path, const wd_cfg_field_t *f, void *base)
{
    void *dst = (char *)base + f->off;
    int rc;
    switch (f->type) {
    case F_U32:
    case F_BYTES:
    case F_MS: return field_number(c, n, path, f, dst);
    case F_STR:
        /* an optional string written as null means "not set" */
        if (!f->required && wd_ynode_is_null(n)) return apply_default(c, n, path, f, base);
        if ((rc = check_string(c, n, path))) return rc;
        return dup_str(c, n, n->s, n->len, dst);
    case F_ENUM: {
        char allowed[256] = "";
        for (const char *const *ch = f->choices; *ch; ch++) {
            if (n->kind == WD_YNODE_SCALAR && n->len == strlen(*ch) && memcmp(n->s, *ch, n->len) == 0)
                return dup_str(c, n, n->s, n->len, dst);
            size_t used = strlen(allowed);
            snprintf(allowed + used, sizeof allowed - used, "%s%s", used ? ", " : "", *ch);
        }
        if (n->kind != WD_YNODE_SCALAR)
            return fail(c, n, "%s: expected one of %s, got %s", path, allowed, wd_ynode_kind_name(n));
        return fail(c, n, "%s: expected one of %s, got '%.*s%s'", path, allowed, SHOW(n));
    }
    case F_MAP: return apply_map(c, n, path, f->sub, dst);
    case F_FN: return f->fn(c, n, path, base, f);
    case F_BOOL:
        if (n->kind == WD_YNODE_SCALAR && n->plain && n->len == 4 && memcmp(n->s, "true", 4) == 0) *(bool *)dst = true;
        else if (n->kind == WD_YNODE_SCALAR && n->plain && n->len == 5 && memcmp(n->s, "false", 5) == 0) *(bool *)dst = false;
        else return fail(c, n, "%s: expected true or false", path);
        return WD_OK;
    }
    return WD_OK;
}

/* The single place that walks a mapping: every key must be in the table and appear once; then each
 * field is applied in table order (not file order) so later fields may depend on earlier ones, e.g.
 * models on upstreams. n == NULL means the mapping is absent: defaults only. */
static int apply_map(ctx_t *c, const wd_ynode_t *n, const char *path, const wd_cfg_map_t *m, void *base)
{
    const wd_ynode_t *seen[MAX_FIELDS] = {0}, *seen_key[MAX_FIELDS] = {0};
    char sub[512];
    int rc;

    if (n) {
        if (n->kind != WD_YNODE_MAP) return fail(c, n, "%s: expected a mapping, got %s", path, wd_ynode_kind_name(n));
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            const wd_ynode_t *k = n->items[i];
            if (k->kind != WD_YNODE_SCALAR)
                return fail(c, k, "%s: keys must be plain strings, got %s", path, wd_ynode_kind_name(k));
            size_t idx = m->nfields;
            for (size_t j = 0; j < m->nfields; j++)
                if (strlen(m->fields[j].name) == k->len && memcmp(m->fields[j].name, k->s, k->len) == 0) {
                    idx = j;
                    break;
                }
            if (idx == m->nfields) {
                char allowed[512] = "";
                for (size_t j = 0; j < m->nfields; j++) {
                    size_t used = strlen(allowed);
                    snprintf(allowed + used, sizeof allowed - used, "%s%s", j ? ", " : "", m->fields[j].name);
                }
                return fail(c, k, "unknown key '%.*s%s' in %s; allowed keys: %s", SHOW(k), m->what, allowed);
            }
            if (seen[idx])
                return fail(c, k, "duplicate key '%s' in %s (first at %u:%u)", m->fields[idx].name, m->what,
                            seen_key[idx]->line, seen_key[idx]->col);
            seen[idx] = n->items[i + 1];
            seen_key[idx] = k;
        }
    }
    for (size_t j = 0; j < m->nfields; j++) {
        const wd_cfg_field_t *f = &m->fields[j];
        join_path(sub, sizeof sub, path, f->name);
        if (seen[j]) {
            rc = apply_field(c, seen[j], sub, f, base);
        } else if (f->required) {
            if (n)
                return fail(c, n, "missing required key '%s' in %s", f->name, path && *path ? path : m->what);
            return fail_at(c, 1, 1, "missing required key '%s'", sub);
        } else {
            rc = apply_default(c, n, sub, f, base);
        }
        if (rc) return rc;
    }
    return WD_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Addresses and URLs */

/* Splits "host", "host:port" or "[v6]" / "[v6]:port". Returns NULL or a reason. *port is left alone
 * when no port is written. */
static const char *split_hostport(const char *s, size_t len, char *host, size_t hostcap, bool *v6,
                                  bool *has_port, uint16_t *port)
{
    const char *hs, *he, *rest;
    *v6 = false;
    *has_port = false;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) return "missing ']' after the IPv6 address";
        hs = s + 1;
        he = close;
        rest = close + 1;
        *v6 = true;
    } else {
        const char *colon = memrchr(s, ':', len);
        hs = s;
        he = colon ? colon : s + len;
        rest = he;
        if (memchr(hs, ':', (size_t)(he - hs))) return "IPv6 addresses must be in brackets, e.g. [::1]:8080";
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0) return "missing host";
    if (hl >= hostcap) return "host is too long";
    memcpy(host, hs, hl);
    host[hl] = '\0';
    size_t restlen = (size_t)(s + len - rest);
    if (restlen == 0) return NULL;
    if (rest[0] != ':') return "unexpected characters after the host";
    uint64_t p;
    size_t used;
    if (parse_digits(rest + 1, restlen - 1, &used, &p) || used != restlen - 1 || p < 1 || p > 65535)
        return "the port must be a number between 1 and 65535";
    *port = (uint16_t)p;
    *has_port = true;
    return NULL;
}

static void addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        port = ntohs(s6->sin6_port);
        snprintf(out, outlen, "[%s]:%u", ip, port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        port = ntohs(s4->sin_port);
        snprintf(out, outlen, "%s:%u", ip, port);
    }
}

static bool is_localhost(const char *host)
{
    return strcasecmp(host, "localhost") == 0;
}

static bool looks_ipv4(const char *host)
{
    return strspn(host, "0123456789.") == strlen(host);
}

/* Numeric resolution only: listeners never wait on DNS. "localhost" is pinned to 127.0.0.1 so the
 * result never depends on /etc/hosts ordering of ::1. IPv4 is checked with inet_pton first because
 * getaddrinfo also takes inet_aton's legacy forms ("127.1", "0x7f.1"), which read as typos. */
static int resolve_numeric(const char *host, bool v6, uint16_t port, wd_addr_t *a, const char **why)
{
    memset(&a->sa, 0, sizeof a->sa);
    if (!v6 && is_localhost(host)) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->salen = sizeof *s4;
        return WD_OK;
    }
    struct in_addr tmp;
    if (!v6 && inet_pton(AF_INET, host, &tmp) != 1) {
        *why = "not a numeric IPv4 address";
        return WD_EINVAL;
    }
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = v6 ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0 || !res) {
        *why = v6 ? "not a valid IPv6 address" : "not a valid IPv4 address";
        if (res) freeaddrinfo(res);
        return WD_EINVAL;
    }
    memcpy(&a->sa, res->ai_addr, res->ai_addrlen);
    a->salen = res->ai_addrlen;
    freeaddrinfo(res);
    return WD_OK;
}

static int parse_listen_addr(ctx_t *c, const wd_ynode_t *n, const char *path, wd_addr_t *a)
{
    int rc = check_string(c, n, path);
    if (rc) return rc;
    char host[256];
    bool v6, has_port;
    uint16_t port = 0;
    const char *why = split_hostport(n->s, n->len, host, sizeof host, &v6, &has_port, &port);
    if (!why && !has_port) why = "missing ':port'";
    if (!why && resolve_numeric(host, v6, port, a, &why) == WD_OK)
        return dup_str(c, n, n->s, n->len, &a->text);
    return fail(c, n, "%s: invalid address '%.*s%s': %s (expected IPv4:port, [IPv6]:port or localhost:port)",
                path, SHOW(n), why);
}

static int h_listen_address(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    if (!n) return WD_OK;
    return parse_listen_addr(c, n, path, (wd_addr_t *)((char *)base + f->off));
}

/* A file named in the config. Relative paths are relative to the config file's directory (as
 * guard.rules_dir is), so a config and its certificates can move together. */
static int h_path(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    char **dst = (char **)((char *)base + f->off);
    if (!n) return WD_OK;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    if (n->len > 4000 || memchr(n->s, '\0', n->len)) return fail(c, n, "%s: not a usable file name", path);
    const char *cp = c->cfg->path, *slash = cp ? strrchr(cp, '/') : NULL;
    if (n->s[0] == '/' || !slash) return dup_str(c, n, n->s, n->len, dst);
    char buf[8192];
    int len = snprintf(buf, sizeof buf, "%.*s/%.*s", (int)WD_MIN((size_t)(slash - cp), 4000), cp, (int)n->len, n->s);
    return dup_str(c, n, buf, (size_t)len, dst);
}

static const char *const tls_versions[] = {"1.2", "1.3", NULL};

#define TLF(nm) offsetof(wd_tls_listen_cfg_t, nm)
static const wd_cfg_field_t listen_tls_fields[] = {
    {.name = "cert", .type = F_FN, .required = true, .off = TLF(cert), .fn = h_path},
    {.name = "key", .type = F_FN, .required = true, .off = TLF(key), .fn = h_path},
    {.name = "min_version", .type = F_ENUM, .off = TLF(min_version), .def_str = "1.3", .choices = tls_versions},
};
static const wd_cfg_map_t listen_tls_map = {"a listener's tls", listen_tls_fields, WD_ARRAY_LEN(listen_tls_fields)};

/* The certificate and key are loaded here, at config load, so `warden config check` and a reload
 * catch a missing, unreadable, malformed, expired or mismatched pair before anything serves it. */
static int h_listen_tls(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    if (!n) return WD_OK;
    wd_tls_listen_cfg_t *t = (wd_tls_listen_cfg_t *)((char *)base + f->off);
    int rc = apply_map(c, n, path, &listen_tls_map, t);
    if (rc) return rc;
    char err[512];
    int ver = strcmp(t->min_version, "1.2") == 0 ? WD_TLS_V12 : WD_TLS_V13;
    t->ctx = wd_tls_server_ctx(t->cert, t->key, ver, err, sizeof err);
    if (!t->ctx) {
        const char *which = wd_tls_server_ctx_bad_file() ? "key" : "cert";
        const wd_ynode_t *at = wd_ynode_get(n, which);
        return fail(c, at ? at : n, "%s.%s: %s", path, which, err);
    }
    return WD_OK;
}

typedef struct {
    wd_addr_t addr;
    wd_tls_listen_cfg_t tls;
} listener_t;

static const wd_cfg_field_t listener_fields[] = {
    {.name = "address", .type = F_FN, .required = true, .off = offsetof(listener_t, addr), .fn = h_listen_address},
    {.name = "tls", .type = F_FN, .off = offsetof(listener_t, tls), .fn = h_listen_tls},
};
static const wd_cfg_map_t listener_map = {"a listener", listener_fields, WD_ARRAY_LEN(listener_fields)};

/* Both "listen: 127.0.0.1:8080" and "listen: { address: 127.0.0.1:8080, tls: {...} }": the scalar
 * form is what people type, the mapping form carries listener options. */
static int parse_listener(ctx_t *c, const wd_ynode_t *n, const char *path, wd_addr_t *a, wd_tls_listen_cfg_t *tls)
{
    if (!n) return WD_OK;
    if (n->kind == WD_YNODE_MAP) {
        listener_t l;
        memset(&l, 0, sizeof l);
        int rc = apply_map(c, n, path, &listener_map, &l);
        *a = l.addr; /* moved even on failure: config_free releases whatever was built */
        *tls = l.tls;
        return rc;
    }
    if (n->kind != WD_YNODE_SCALAR)
        return fail(c, n, "%s: expected an address or a mapping with 'address', got %s", path, wd_ynode_kind_name(n));
    return parse_listen_addr(c, n, path, a);
}

static int h_listener(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    return parse_listener(c, n, path, &c->cfg->listen, &c->cfg->listen_tls);
}

static bool addr_equal(const wd_addr_t *a, const wd_addr_t *b)
{
    if (a->salen != b->salen || a->sa.ss_family != b->sa.ss_family) return false;
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa,
                                 *y = (const struct sockaddr_in *)&b->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->sa,
                                  *y = (const struct sockaddr_in6 *)&b->sa;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return a->salen == 0;
}

static int h_admin(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    int rc = parse_listener(c, n, path, &c->cfg->admin, &c->cfg->admin_tls);
    if (rc || !n) return rc;
    if (addr_equal(&c->cfg->admin, &c->cfg->listen))
        return fail(c, n, "%s: the admin listener must not use the same address as 'listen' (%s)", path,
                    c->cfg->listen.text);
    return WD_OK;
}

/* http(s)://host[:port][/base]. Only what a reverse proxy can honour exactly is accepted: userinfo
 * would put a credential in a string we log, and a query or fragment has no meaning as a path prefix. */
static int h_url(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_upstream_cfg_t *u = base;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    const char *s = n->s, *end = n->s + n->len;
    size_t scheme_len;
    if (n->len >= 8 && strncasecmp(s, "https://", 8) == 0) {
        u->tls.enabled = true;
        scheme_len = 8;
    } else if (n->len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        scheme_len = 7;
    } else {
        return fail(c, n, "%s: invalid URL '%.*s%s': expected http://host[:port][/path] or https://...", path, SHOW(n));
    }
    if (memchr(s, ' ', n->len)) return fail(c, n, "%s: spaces are not allowed in URLs", path);
    const char *auth = s + scheme_len, *aend = auth;
    while (aend < end && *aend != '/' && *aend != '?' && *aend != '#')
        aend++;
    if (memchr(auth, '@', (size_t)(aend - auth)))
        return fail(c, n, "%s: credentials in the URL (user@host) are not allowed; use api_key_env", path);
    if (memchr(aend, '?', (size_t)(end - aend)))
        return fail(c, n, "%s: a query string is not allowed in an upstream URL", path);
    if (memchr(aend, '#', (size_t)(end - aend)))
        return fail(c, n, "%s: a fragment (#...) is not allowed in an upstream URL", path);

    char host[256];
    bool v6, has_port;
    uint16_t port = u->tls.enabled ? 443 : 80;
    const char *why = split_hostport(auth, (size_t)(aend - auth), host, sizeof host, &v6, &has_port, &port);
    if (!why && !v6 &&
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != strlen(host))
        why = "the host contains characters not allowed in a host name";
    if (why) return fail(c, n, "%s: invalid URL '%.*s%s': %s", path, SHOW(n), why);

    /* Resolved once here, on the loading thread, so a worker never blocks on DNS. */
    if (v6 || is_localhost(host) || looks_ipv4(host)) {
        if (resolve_numeric(host, v6, port, &u->addr, &why))
            return fail(c, n, "%s: invalid URL '%.*s%s': %s", path, SHOW(n), why);
    } else {
        char portstr[8];
        snprintf(portstr, sizeof portstr, "%u", port);
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        int g = getaddrinfo(host, portstr, &hints, &res);
        if (g != 0 || !res) {
            if (res) freeaddrinfo(res);
            return fail(c, n, "%s: cannot resolve upstream host '%s': %s", path, host,
                        g ? gai_strerror(g) : "no addresses");
        }
        memcpy(&u->addr.sa, res->ai_addr, res->ai_addrlen);
        u->addr.salen = res->ai_addrlen;
        freeaddrinfo(res);
    }
    char text[INET6_ADDRSTRLEN + 16];
    addr_format((const struct sockaddr *)&u->addr.sa, text, sizeof text);
    char hh[sizeof host + 16];
    snprintf(hh, sizeof hh, v6 ? "[%s]:%u" : "%s:%u", host, port);
    const char *p = aend;
    size_t plen = (size_t)(end - aend);
    while (plen && p[plen - 1] == '/')
        plen--;
    u->port = port;
    if ((rc = dup_str(c, n, n->s, n->len, &u->url)) || (rc = dup_str(c, n, host, strlen(host), &u->host)) ||
        (rc = dup_str(c, n, hh, strlen(hh), &u->host_header)) ||
        (rc = dup_str(c, n, p, plen, &u->base_path)) ||
        (rc = dup_str(c, n, text, strlen(text), &u->addr.text)))
        return rc;
    return WD_OK;
}

/* The credential is read from the environment at load so it never sits in the file; its value never
 * appears in a message, only the variable's name. */
static int h_api_key_env(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    if (!n) return WD_OK;
    wd_upstream_cfg_t *u = base;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    bool ok = !(n->s[0] >= '0' && n->s[0] <= '9');
    for (size_t i = 0; ok && i < n->len; i++) {
        char ch = n->s[i];
        ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
    }
    if (!ok)
        return fail(c, n, "%s: '%.*s%s' is not a valid environment variable name (letters, digits and _)",
                    path, SHOW(n));
    const char *v = getenv(n->s);
    if (!v) return fail(c, n, "%s: environment variable %s is not set", path, n->s);
    size_t vlen = strlen(v);
    if (vlen == 0) return fail(c, n, "%s: environment variable %s is empty", path, n->s);
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)v[i];
        /* it goes into a header line: CR/LF would be header injection */
        if (ch < 0x20 || ch == 0x7f)
            return fail(c, n, "%s: environment variable %s contains control characters", path, n->s);
    }
    if ((rc = dup_str(c, n, n->s, n->len, &u->api_key_env))) return rc;
    return dup_str(c, n, v, vlen, &u->api_key);
}

static int h_name(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    int rc = check_string(c, n, path);
    if (rc) return rc;
    if (n->len > MAX_NAME) return fail(c, n, "%s: names are limited to %d bytes", path, MAX_NAME);
    if (memchr(n->s, ' ', n->len)) return fail(c, n, "%s: names must not contain spaces", path);
    return dup_str(c, n, n->s, n->len, (char **)((char *)base + f->off));
}

static int h_model_upstream(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_model_cfg_t *m = base;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    const wd_config_t *cfg = c->cfg;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const char *name = cfg->upstreams[i].name;
        if (name && strlen(name) == n->len && memcmp(name, n->s, n->len) == 0) {
            m->upstream = &cfg->upstreams[i];
            return WD_OK;
        }
    }
    char defined[256] = "";
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        size_t used = strlen(defined);
        snprintf(defined + used, sizeof defined - used, "%s%s", i ? ", " : "", cfg->upstreams[i].name);
    }
    return fail(c, n, "%s: unknown upstream '%.*s%s'; defined upstreams: %s", path, SHOW(n), defined);
}

static int h_audit_file(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    char **dst = (char **)((char *)base + f->off);
    if (!n) return dup_str(c, n, "-", 1, dst);
    if (wd_ynode_is_null(n) || (n->kind == WD_YNODE_SCALAR && n->len == 3 && memcmp(n->s, "off", 3) == 0)) {
        free(*dst);
        *dst = NULL;
        return WD_OK;
    }
    int rc = check_string(c, n, path);
    if (rc) return rc;
    return dup_str(c, n, n->s, n->len, dst);
}

/* ---------------------------------------------------------------------------------------------- */
/* The tables */

#define LIMIT(nm, ty, lo, hi, dflt)                                                                          \
    {                                                                                                        \
        .name = #nm, .type = (ty), .off = offsetof(wd_server_limits_t, nm), .min = (lo), .max = (hi),        \
        .def = (dflt)                                                                                        \
    }

static const wd_cfg_field_t limits_fields[] = {
    LIMIT(max_connections, F_U32, 1, 1000000, 10000),
    LIMIT(max_request_line, F_BYTES, 256, 65536, 8192),
    LIMIT(max_header_bytes, F_BYTES, 1024, 1048576, 32768),
    LIMIT(max_headers, F_U32, 8, 64, 64),
    LIMIT(max_body_bytes, F_BYTES, 1024, 268435456, 4194304),
    LIMIT(max_response_bytes, F_BYTES, 1024, 1073741824, 16777216),
    LIMIT(max_sse_event_bytes, F_BYTES, 1024, 67108864, 1048576),
    LIMIT(header_timeout_ms, F_MS, 100, 3600000, 10000),
    LIMIT(body_timeout_ms, F_MS, 100, 3600000, 30000),
    LIMIT(idle_timeout_ms, F_MS, 100, 3600000, 60000),
    LIMIT(send_timeout_ms, F_MS, 100, 3600000, 60000),
    LIMIT(drain_timeout_ms, F_MS, 0, 3600000, 15000),
    LIMIT(write_buffer_bytes, F_BYTES, 4096, 67108864, 262144),
};
static const wd_cfg_map_t limits_map = {"limits", limits_fields, WD_ARRAY_LEN(limits_fields)};

/* The name an upstream's certificate must carry: a DNS name or an IP address (IPv6 without
 * brackets), nothing that could not appear in a certificate. */
static int h_server_name(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    if (!n) return WD_OK;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, n->s, ip) == 1 || inet_pton(AF_INET6, n->s, ip) == 1;
    if (!is_ip && (n->len > 253 || strspn(n->s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != n->len ||
                   n->s[0] == '.' || n->s[0] == '-'))
        return fail(c, n, "%s: '%.*s%s' is not a DNS name or an IP address", path, SHOW(n));
    return dup_str(c, n, n->s, n->len, (char **)((char *)base + f->off));
}

#define UTF(nm) offsetof(wd_upstream_tls_cfg_t, nm)
static const wd_cfg_field_t upstream_tls_fields[] = {
    {.name = "ca", .type = F_FN, .off = UTF(ca), .fn = h_path},
    {.name = "verify", .type = F_BOOL, .off = UTF(verify), .def = 1},
    {.name = "server_name", .type = F_FN, .off = UTF(server_name), .fn = h_server_name},
};
static const wd_cfg_map_t upstream_tls_map = {"an upstream's tls", upstream_tls_fields,
                                              WD_ARRAY_LEN(upstream_tls_fields)};

static int h_upstream_tls(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_upstream_cfg_t *u = base;
    if (!n) {
        u->tls.verify = true;
        return WD_OK;
    }
    if (!u->tls.enabled)
        return fail(c, n, "%s: TLS settings apply only to https:// upstreams (this url is http://)", path);
    return apply_map(c, n, path, &upstream_tls_map, &u->tls);
}

/* After an upstream's keys are applied: its TLS client context, built now so that a missing or
 * malformed CA file is a config error. */
static int build_upstream_tls(ctx_t *c, const wd_ynode_t *item, const char *path, wd_upstream_cfg_t *u)
{
    if (!u->tls.enabled) return WD_OK;
    const wd_ynode_t *tn = wd_ynode_get(item, "tls"), *ca = wd_ynode_get(tn, "ca");
    if (!u->tls.verify && u->tls.ca)
        return fail(c, ca, "%s.tls.ca: a CA file has no effect with verify: false; remove one of the two", path);
    if (!u->tls.server_name && dup_str(c, item, u->host, strlen(u->host), &u->tls.server_name)) return WD_ENOMEM;
    char err[512];
    u->tls.ctx = wd_tls_client_ctx(u->tls.ca, u->tls.verify, err, sizeof err);
    if (!u->tls.ctx) {
        const wd_ynode_t *at = ca ? ca : tn ? tn : wd_ynode_get(item, "url");
        return fail(c, at ? at : item, "%s.tls%s: %s", path, ca ? ".ca" : "", err);
    }
    return WD_OK;
}

#define UPF(nm) offsetof(wd_upstream_cfg_t, nm)
static const wd_cfg_field_t upstream_fields[] = {
    {.name = "name", .type = F_FN, .required = true, .off = UPF(name), .fn = h_name},
    {.name = "url", .type = F_FN, .required = true, .fn = h_url},
    {.name = "tls", .type = F_FN, .fn = h_upstream_tls},
    {.name = "api_key_env", .type = F_FN, .fn = h_api_key_env},
    {.name = "timeout_ms", .type = F_MS, .off = UPF(timeout_ms), .min = 1, .max = 3600000, .def = 120000},
    {.name = "connect_timeout_ms",
     .type = F_MS,
     .off = UPF(connect_timeout_ms),
     .min = 1,
     .max = 600000,
     .def = 5000},
    {.name = "max_idle", .type = F_U32, .off = UPF(max_idle), .min = 0, .max = 10000, .def = 64},
};
static const wd_cfg_map_t upstream_map = {"an upstream", upstream_fields, WD_ARRAY_LEN(upstream_fields)};

static const wd_cfg_field_t model_fields[] = {
    {.name = "name", .type = F_FN, .required = true, .off = offsetof(wd_model_cfg_t, name), .fn = h_name},
    {.name = "upstream", .type = F_FN, .required = true, .fn = h_model_upstream},
    {.name = "upstream_model", .type = F_STR, .off = offsetof(wd_model_cfg_t, upstream_model)},
};
static const wd_cfg_map_t model_map = {"a model", model_fields, WD_ARRAY_LEN(model_fields)};

static const wd_cfg_field_t audit_fields[] = {
    {.name = "file", .type = F_FN, .off = 0, .fn = h_audit_file},
};
static const wd_cfg_map_t audit_map = {"audit", audit_fields, WD_ARRAY_LEN(audit_fields)};

/* Names of sequence items are unique; the message points at the second one and says where the first is. */
static int check_unique_name(ctx_t *c, const wd_ynode_t *seq, size_t i, const char *path, const char *noun,
                             const char *(*name_at)(const wd_config_t *, size_t))
{
    const char *name_i = name_at(c->cfg, i);
    for (size_t j = 0; j < i; j++) {
        if (strcmp(name_at(c->cfg, j), name_i) != 0) continue;
        const wd_ynode_t *first = wd_ynode_get(seq->items[j], "name"), *again = wd_ynode_get(seq->items[i], "name");
        return fail(c, again, "%s[%zu].name: duplicate %s name '%s' (first defined at %u:%u)", path, i, noun,
                    name_i, first->line, first->col);
    }
    return WD_OK;
}

static const char *upstream_name_at(const wd_config_t *cfg, size_t i)
{
    return cfg->upstreams[i].name;
}
static const char *model_name_at(const wd_config_t *cfg, size_t i)
{
    return cfg->models[i].name;
}

static int check_seq(ctx_t *c, const wd_ynode_t *n, const char *path, size_t max)
{
    if (n->kind != WD_YNODE_SEQ) return fail(c, n, "%s: expected a sequence, got %s", path, wd_ynode_kind_name(n));
    if (n->n == 0) return fail(c, n, "%s: at least one entry is required", path);
    if (n->n > max) return fail(c, n, "%s: at most %zu entries are allowed", path, max);
    return WD_OK;
}

static int h_upstreams(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    wd_config_t *cfg = c->cfg;
    int rc = check_seq(c, n, path, MAX_UPSTREAMS);
    if (rc) return rc;
    if (!(cfg->upstreams = calloc(n->n, sizeof *cfg->upstreams))) return fail(c, n, "out of memory");
    cfg->nupstreams = n->n; /* every slot is zeroed, so freeing a partial load is safe */
    char sub[64];
    for (size_t i = 0; i < n->n; i++) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if ((rc = apply_map(c, n->items[i], sub, &upstream_map, &cfg->upstreams[i]))) return rc;
        if ((rc = build_upstream_tls(c, n->items[i], sub, &cfg->upstreams[i]))) return rc;
        if ((rc = check_unique_name(c, n, i, path, "upstream", upstream_name_at))) return rc;
    }
    return WD_OK;
}

static int h_models(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    wd_config_t *cfg = c->cfg;
    int rc = check_seq(c, n, path, MAX_MODELS);
    if (rc) return rc;
    if (!(cfg->models = calloc(n->n, sizeof *cfg->models))) return fail(c, n, "out of memory");
    cfg->nmodels = n->n;
    char sub[64];
    for (size_t i = 0; i < n->n; i++) {
        wd_model_cfg_t *m = &cfg->models[i];
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if ((rc = apply_map(c, n->items[i], sub, &model_map, m))) return rc;
        if ((rc = check_unique_name(c, n, i, path, "model", model_name_at))) return rc;
        if (!m->upstream_model &&
            (rc = dup_str(c, n->items[i], m->name, strlen(m->name), &m->upstream_model)))
            return rc;
    }
    return WD_OK;
}


/* ---------------------------------------------------------------------------------------------- */
/* Roles and authentication */

/* A sequence of non-empty strings, each checked by `check` (may be NULL). */
static int str_list(ctx_t *c, const wd_ynode_t *n, const char *path, char ***out, size_t *count,
                    int (*check)(ctx_t *, const wd_ynode_t *, const char *, void *), void *arg)
{
    if (n->kind != WD_YNODE_SEQ) return fail(c, n, "%s: expected a list of strings, got %s", path, wd_ynode_kind_name(n));
    if (n->n > MAX_MODELS) return fail(c, n, "%s: at most %d entries are allowed", path, MAX_MODELS);
    *out = calloc(n->n ? n->n : 1, sizeof **out);
    if (!*out) return fail(c, n, "out of memory");
    *count = n->n;
    char sub[300];
    for (size_t i = 0; i < n->n; i++) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        int rc = check_string(c, n->items[i], sub);
        if (!rc && check) rc = check(c, n->items[i], sub, arg);
        if (!rc) rc = dup_str(c, n->items[i], n->items[i]->s, n->items[i]->len, &(*out)[i]);
        if (rc) return rc;
    }
    return WD_OK;
}

static int check_model_ref(ctx_t *c, const wd_ynode_t *n, const char *path, void *arg)
{
    WD_UNUSED(arg);
    const char *star = memchr(n->s, '*', n->len);
    if (star) {
        if (star != n->s + n->len - 1)
            return fail(c, n, "%s: '*' may only end a model pattern (e.g. llama-*)", path);
        return WD_OK;
    }
    if (!wd_config_model(c->cfg, n->s, n->len))
        return fail(c, n, "%s: unknown model '%.*s%s' (not in models:)", path, SHOW(n));
    return WD_OK;
}

static int h_role_models(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_role_t *r = base;
    if (!n) return WD_OK; /* no models: the role grants none (it may still be an admin role) */
    return str_list(c, n, path, &r->models, &r->nmodels, check_model_ref, NULL);
}

static int check_endpoint(ctx_t *c, const wd_ynode_t *n, const char *path, void *arg)
{
    uint32_t bit = wd_endpoint_bit(n->s, n->len);
    if (!bit)
        return fail(c, n, "%s: unknown endpoint '%.*s%s'; endpoints: chat, completions, embeddings, models", path,
                    SHOW(n));
    *(uint32_t *)arg |= bit;
    return WD_OK;
}

static int h_role_endpoints(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_role_t *r = base;
    if (!n) return WD_OK;
    char **names = NULL;
    size_t count = 0;
    int rc = str_list(c, n, path, &names, &count, check_endpoint, &r->endpoints);
    for (size_t i = 0; i < count && names; i++) free(names[i]);
    free(names);
    return rc;
}

static int h_role_ips(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_role_t *r = base;
    if (!n) return WD_OK;
    if (n->kind != WD_YNODE_SEQ) return fail(c, n, "%s: expected a list of address ranges, got %s", path, wd_ynode_kind_name(n));
    if (!(r->ips = calloc(n->n ? n->n : 1, sizeof *r->ips))) return fail(c, n, "out of memory");
    r->nips = n->n;
    char sub[300], why[160];
    for (size_t i = 0; i < n->n; i++) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        int rc = check_string(c, n->items[i], sub);
        if (rc) return rc;
        if (wd_cidr_parse(n->items[i]->s, n->items[i]->len, &r->ips[i], why, sizeof why))
            return fail(c, n->items[i], "%s: %s", sub, why);
    }
    return WD_OK;
}

static const char *const limit_per[] = {"principal", "role", NULL};

typedef struct {
    wd_limits_t lim;
    char *per;
} role_limits_t;

static int h_u64(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    uint64_t *dst = (uint64_t *)((char *)base + f->off);
    if (!n) return WD_OK;
    uint32_t v32 = 0; /* token budgets: 0..4e9, parsed with the integer rules */
    wd_cfg_field_t g = *f;
    g.type = F_U32;
    g.min = 0;
    g.max = 4000000000u;
    int rc = field_number(c, n, path, &g, &v32);
    if (!rc) *dst = v32;
    return rc;
}

#define LF(nm) offsetof(role_limits_t, lim.nm)
static const wd_cfg_field_t limits_role_fields[] = {
    {.name = "rpm", .type = F_U32, .off = LF(rpm), .min = 0, .max = 100000000, .def = 0},
    {.name = "tpm", .type = F_U32, .off = LF(tpm), .min = 0, .max = 2000000000, .def = 0},
    {.name = "concurrent", .type = F_U32, .off = LF(concurrent), .min = 0, .max = 1000000, .def = 0},
    {.name = "tokens_per_day", .type = F_FN, .off = LF(tokens_per_day), .fn = h_u64},
    {.name = "tokens_per_month", .type = F_FN, .off = LF(tokens_per_month), .fn = h_u64},
    {.name = "per", .type = F_ENUM, .off = offsetof(role_limits_t, per), .def_str = "principal", .choices = limit_per},
};
static const wd_cfg_map_t limits_role_map = {"limits", limits_role_fields, WD_ARRAY_LEN(limits_role_fields)};

static int h_role_limits(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_role_t *r = base;
    if (!n) return WD_OK;
    role_limits_t rl;
    memset(&rl, 0, sizeof rl);
    int rc = apply_map(c, n, path, &limits_role_map, &rl);
    if (!rc) {
        r->limits = rl.lim;
        r->limits_shared = rl.per && strcmp(rl.per, "role") == 0;
    }
    free(rl.per);
    return rc;
}

static int h_role_classes(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_role_t *r = base;
    if (!n) return WD_OK;
    return str_list(c, n, path, &r->data_classes, &r->ndata_classes, NULL, NULL);
}

#define RF(nm) offsetof(wd_role_t, nm)
static const wd_cfg_field_t role_fields[] = {
    {.name = "models", .type = F_FN, .fn = h_role_models},
    {.name = "endpoints", .type = F_FN, .fn = h_role_endpoints},
    {.name = "require_mfa", .type = F_BOOL, .off = RF(require_mfa), .def = 0},
    {.name = "admin", .type = F_BOOL, .off = RF(admin), .def = 0},
    {.name = "ips", .type = F_FN, .fn = h_role_ips},
    {.name = "limits", .type = F_FN, .fn = h_role_limits},
    {.name = "guard", .type = F_STR, .off = RF(guard)},
    {.name = "data_classes", .type = F_FN, .fn = h_role_classes},
};
static const wd_cfg_map_t role_map = {"a role", role_fields, WD_ARRAY_LEN(role_fields)};

static int h_roles(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    wd_config_t *cfg = c->cfg;
    if (!n) return WD_OK;
    if (n->kind != WD_YNODE_MAP) return fail(c, n, "%s: expected a mapping of role names to roles, got %s", path, wd_ynode_kind_name(n));
    size_t count = n->n / 2;
    if (!(cfg->roles = calloc(count ? count : 1, sizeof *cfg->roles))) return fail(c, n, "out of memory");
    cfg->nroles = count;
    char sub[300];
    for (size_t i = 0; i < count; i++) {
        const wd_ynode_t *k = n->items[2 * i], *v = n->items[2 * i + 1];
        wd_role_t *r = &cfg->roles[i];
        snprintf(sub, sizeof sub, "%s.%.*s", path, (int)WD_MIN(k->len, 200), k->s);
        static const wd_cfg_field_t name_field = {.name = "name", .type = F_FN, .off = RF(name), .fn = h_name};
        int rc = h_name(c, k, sub, r, &name_field);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->roles[j].name, r->name) == 0)
                return fail(c, k, "%s: duplicate role '%s' (first at %u:%u)", path, r->name, n->items[2 * j]->line,
                            n->items[2 * j]->col);
        if ((rc = apply_map(c, v, sub, &role_map, r))) return rc;
        if (!r->nmodels && !r->admin)
            return fail(c, v, "%s: a role must grant models or admin: true (a role that grants nothing is a mistake)",
                        sub);
        if (r->nmodels && !r->endpoints)
            return fail(c, v, "%s: endpoints is required when a role grants models (chat, completions, embeddings, "
                        "models)", sub);
    }
    return WD_OK;
}

static int h_backend(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    char **dst = (char **)((char *)base + f->off);
    if (!n) return dup_str(c, n, "local", 5, dst);
    int rc = check_string(c, n, path);
    if (rc) return rc;
    bool ok = (n->len == 5 && memcmp(n->s, "local", 5) == 0) || (n->len > 8 && memcmp(n->s, "redis://", 8) == 0) ||
              (n->len > 8 && memcmp(n->s, "unix:///", 8) == 0);
    if (!ok) return fail(c, n, "%s: expected local, redis://HOST:PORT[/DB] or unix:///PATH, got '%.*s%s'", path, SHOW(n));
    return dup_str(c, n, n->s, n->len, dst);
}

static const char *const fail_modes[] = {"closed", "open", NULL};
static const wd_cfg_field_t per_ip_fields[] = {
    {.name = "rpm", .type = F_U32, .off = offsetof(wd_limits_t, rpm), .min = 0, .max = 100000000, .def = 0},
    {.name = "tpm", .type = F_U32, .off = offsetof(wd_limits_t, tpm), .min = 0, .max = 2000000000, .def = 0},
    {.name = "concurrent", .type = F_U32, .off = offsetof(wd_limits_t, concurrent), .min = 0, .max = 1000000,
     .def = 0},
    {.name = "tokens_per_day", .type = F_FN, .off = offsetof(wd_limits_t, tokens_per_day), .fn = h_u64},
    {.name = "tokens_per_month", .type = F_FN, .off = offsetof(wd_limits_t, tokens_per_month), .fn = h_u64},
};
static const wd_cfg_map_t per_ip_map = {"rate_limits.per_ip", per_ip_fields, WD_ARRAY_LEN(per_ip_fields)};
#define RTF(nm) offsetof(wd_rate_cfg_t, nm)
static const wd_cfg_field_t rate_fields[] = {
    {.name = "backend", .type = F_FN, .off = RTF(backend), .fn = h_backend},
    {.name = "fail", .type = F_ENUM, .off = RTF(fail), .def_str = "closed", .choices = fail_modes},
    {.name = "redis_timeout_ms", .type = F_MS, .off = RTF(redis_timeout_ms), .min = 1, .max = 10000, .def = 100},
    {.name = "key_prefix", .type = F_STR, .off = RTF(key_prefix), .def_str = "wd"},
    {.name = "default_max_tokens", .type = F_U32, .off = RTF(default_max_tokens), .min = 0, .max = 10000000,
     .def = 1024},
    {.name = "per_ip", .type = F_MAP, .off = RTF(per_ip), .sub = &per_ip_map},
};
static const wd_cfg_map_t rate_map = {"rate_limits", rate_fields, WD_ARRAY_LEN(rate_fields)};


/* ---- guard ---------------------------------------------------------------------------------------- */

static int h_score(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    uint32_t *dst = (uint32_t *)((char *)base + f->off);
    if (!n) {
        *dst = f->def;
        return WD_OK;
    }
    char buf[16];
    if (n->kind != WD_YNODE_SCALAR || !n->plain || n->len == 0 || n->len >= sizeof buf)
        return fail(c, n, "%s: expected a number from 0 to 1", path);
    memcpy(buf, n->s, n->len);
    buf[n->len] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (*end || v < 0 || v > 1) return fail(c, n, "%s: expected a number from 0 to 1, got '%s'", path, buf);
    *dst = (uint32_t)(v * 100 + 0.5);
    return WD_OK;
}

#define GF(nm) offsetof(wd_guard_cfg_t, nm)
static const wd_cfg_field_t guard_fields[] = {
    {.name = "rules_dir", .type = F_STR, .off = GF(rules_dir), .def_str = "rules"},
    {.name = "default_profile", .type = F_STR, .off = GF(default_profile)},
    {.name = "min_score", .type = F_FN, .off = GF(min_score), .def = 50, .fn = h_score},
    {.name = "cache", .type = F_BOOL, .off = GF(cache), .def = 1},
    {.name = "cache_dir", .type = F_FN, .off = GF(cache_dir), .fn = h_path},
};
static const wd_cfg_map_t guard_map = {"guard", guard_fields, WD_ARRAY_LEN(guard_fields)};

/* A mapping of class or type to action: input: { pii: pseudonymize, EMAIL: redact, ... } and
 * output: { self_harm: block, secrets: redact, ... }. Keys are checked against the rules after they
 * load (resolve_guard). Answers cannot be pseudonymized (there is nothing to restore them). */
static int parse_action_map(ctx_t *c, const wd_ynode_t *n, const char *path, wd_guard_rule_action_t **list,
                            size_t *count_out, bool output)
{
    if (n->kind != WD_YNODE_MAP) return fail(c, n, "%s: expected a mapping of class or type to action", path);
    size_t count = n->n / 2;
    if (!(*list = calloc(count ? count : 1, sizeof **list))) return fail(c, n, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const wd_ynode_t *k = n->items[2 * i], *v = n->items[2 * i + 1];
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%.*s", path, (int)WD_MIN(k->len, 100), k->s);
        int rc = check_string(c, k, path);
        if (!rc) rc = check_string(c, v, sub);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
            if (strlen((*list)[j].key) == k->len && memcmp((*list)[j].key, k->s, k->len) == 0)
                return fail(c, k, "%s: '%.*s%s' is listed twice", path, SHOW(k));
        wd_action_t a;
        if (wd_action_parse(v->s, v->len, &a) != WD_OK || (output && a == WD_ACT_PSEUDO))
            return fail(c, v, output ? "%s: unknown action '%.*s%s'; output actions: allow, flag, mask, redact, hash, block"
                                     : "%s: unknown action '%.*s%s'; actions: allow, flag, mask, redact, hash, "
                                       "pseudonymize, block",
                        sub, SHOW(v));
        (*list)[i].action = a;
        if ((rc = dup_str(c, k, k->s, k->len, &(*list)[i].key))) return rc;
        *count_out = i + 1;
    }
    return WD_OK;
}

static int h_profile_input(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    return n ? parse_action_map(c, n, path, &p->input, &p->ninput, false) : WD_OK;
}

static int h_profile_output(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    return n ? parse_action_map(c, n, path, &p->output, &p->noutput, true) : WD_OK;
}

static int h_inj_action(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    wd_action_t *dst = (wd_action_t *)((char *)base + f->off);
    if (!n) {
        *dst = WD_ACT_BLOCK;
        return WD_OK;
    }
    int rc = check_string(c, n, path);
    if (rc) return rc;
    wd_action_t a;
    if (wd_action_parse(n->s, n->len, &a) != WD_OK || (a != WD_ACT_ALLOW && a != WD_ACT_FLAG && a != WD_ACT_BLOCK))
        return fail(c, n, "%s: expected allow, flag or block, got '%.*s%s'", path, SHOW(n));
    *dst = a;
    return WD_OK;
}

const char *const wd_message_roles[] = {"system", "developer", "user", "assistant", "tool", "function", NULL};

static int h_inj_roles(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_injection_cfg_t *ic = base;
    if (!n) return WD_OK; /* every role */
    if (n->kind != WD_YNODE_SEQ || n->n == 0)
        return fail(c, n, "%s: expected a non-empty list of message roles (system, developer, user, assistant, tool)",
                    path);
    if (!(ic->roles = calloc(n->n, sizeof *ic->roles))) return fail(c, n, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        const wd_ynode_t *r = n->items[i];
        int rc = check_string(c, r, path);
        if (rc) return rc;
        bool known = false;
        for (const char *const *m = wd_message_roles; *m && !known; m++)
            known = strlen(*m) == r->len && memcmp(*m, r->s, r->len) == 0;
        if (!known)
            return fail(c, r, "%s: unknown message role '%.*s%s'; roles: system, developer, user, assistant, tool, function",
                        path, SHOW(r));
        for (size_t j = 0; j < ic->nroles; j++)
            if (strlen(ic->roles[j]) == r->len && memcmp(ic->roles[j], r->s, r->len) == 0)
                return fail(c, r, "%s: '%.*s%s' is listed twice", path, SHOW(r));
        if ((rc = dup_str(c, r, r->s, r->len, &ic->roles[i]))) return rc;
        ic->nroles = i + 1;
    }
    return WD_OK;
}

#define IJF(nm) offsetof(wd_guard_injection_cfg_t, nm)
static const wd_cfg_field_t injection_fields[] = {
    {.name = "threshold", .type = F_FN, .off = IJF(threshold), .def = 70, .fn = h_score},
    {.name = "action", .type = F_FN, .off = IJF(action), .fn = h_inj_action},
    {.name = "roles", .type = F_FN, .fn = h_inj_roles},
};
static const wd_cfg_map_t injection_map = {"injection", injection_fields, WD_ARRAY_LEN(injection_fields)};

static int h_profile_injection(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    if (!n) return WD_OK; /* off, unless input: { injection: ACTION } turns it on (resolve_guard) */
    p->injection.enabled = true;
    return apply_map(c, n, path, &injection_map, &p->injection);
}

static int h_on_error(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    if (!n) return WD_OK; /* closed */
    if (n->kind == WD_YNODE_SCALAR && n->len == 6 && memcmp(n->s, "closed", 6) == 0) p->fail_open = false;
    else if (n->kind == WD_YNODE_SCALAR && n->len == 4 && memcmp(n->s, "open", 4) == 0) p->fail_open = true;
    else return fail(c, n, "%s: expected closed or open", path);
    return WD_OK;
}

static int h_unreadable(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    p->unreadable = WD_ACT_BLOCK;
    if (!n) return WD_OK;
    int rc = check_string(c, n, path);
    if (rc) return rc;
    if (wd_action_parse(n->s, n->len, &p->unreadable) != WD_OK ||
        (p->unreadable != WD_ACT_BLOCK && p->unreadable != WD_ACT_FLAG))
        return fail(c, n, "%s: expected block or flag, got '%.*s%s'", path, SHOW(n));
    return WD_OK;
}

#define MAX_ALLOW 4096 /* entries of a profile's allow list */

/* allow: [support@example.com, "+1 800 555 0100"]: values that pass whatever their type's action. */
static int h_allow(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(f);
    wd_guard_profile_t *p = base;
    if (!n) return WD_OK;
    if (n->kind != WD_YNODE_SEQ || n->n == 0 || n->n > MAX_ALLOW)
        return fail(c, n, "%s: expected a list of 1 to %d values", path, MAX_ALLOW);
    if (!(p->allow = wd_guard_allow_new())) return fail(c, n, "out of memory");
    for (size_t i = 0; i < n->n; i++) {
        const wd_ynode_t *v = n->items[i];
        int rc = check_string(c, v, path);
        if (rc) return rc;
        rc = wd_guard_allow_add(p->allow, v->s, v->len);
        if (rc == WD_EEXIST)
            return fail(c, v,
                        "%s: '%.*s%s' is listed twice (numbers are compared by their digits, other values "
                        "ignoring ASCII case)",
                        path, SHOW(v));
        if (rc == WD_EINVAL)
            return fail(
                c, v,
                "%s: '%.*s%s': expected a value of at most %d bytes with a letter or digit, or *@DOMAIN",
                path, SHOW(v), WD_ALLOW_MAX_LEN);
        if (rc) return fail(c, v, "out of memory");
    }
    return WD_OK;
}

#define PF(nm) offsetof(wd_guard_profile_t, nm)
static const wd_cfg_field_t profile_fields[] = {
    {.name = "input", .type = F_FN, .fn = h_profile_input},
    {.name = "restore", .type = F_BOOL, .off = PF(restore), .def = 1},
    {.name = "injection", .type = F_FN, .fn = h_profile_injection},
    {.name = "output", .type = F_FN, .fn = h_profile_output},
    {.name = "on_error", .type = F_FN, .fn = h_on_error},
    {.name = "unreadable_input", .type = F_FN, .fn = h_unreadable},
    {.name = "allow", .type = F_FN, .fn = h_allow},
};
static const wd_cfg_map_t profile_map = {"a guard profile", profile_fields, WD_ARRAY_LEN(profile_fields)};

static int h_profiles(ctx_t *c, const wd_ynode_t *n, const char *path, void *base, const wd_cfg_field_t *f)
{
    WD_UNUSED(base);
    WD_UNUSED(f);
    wd_config_t *cfg = c->cfg;
    if (!n) return WD_OK;
    if (n->kind != WD_YNODE_MAP) return fail(c, n, "%s: expected a mapping of profile names to profiles", path);
    size_t count = n->n / 2;
    if (!(cfg->profiles = calloc(count ? count : 1, sizeof *cfg->profiles))) return fail(c, n, "out of memory");
    cfg->nprofiles = count;
    for (size_t i = 0; i < count; i++) {
        const wd_ynode_t *k = n->items[2 * i], *v = n->items[2 * i + 1];
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%.*s", path, (int)WD_MIN(k->len, 200), k->s);
        static const wd_cfg_field_t name_field = {.name = "name", .type = F_FN, .off = PF(name), .fn = h_name};
        int rc = h_name(c, k, sub, &cfg->profiles[i], &name_field);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->profiles[j].name, cfg->profiles[i].name) == 0)
                return fail(c, k, "%s: duplicate profile '%s'", path, cfg->profiles[i].name);
        if ((rc = apply_map(c, v, sub, &profile_map, &cfg->profiles[i]))) return rc;
    }
    return WD_OK;
}

static bool db_has_class(const wd_guard_db_t *db, const char *name, bool type)
{
    for (size_t i = 0; db && i < wd_guard_db_nrules(db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(db, i);
        if (strcmp(type ? r->type : r->cls, name) == 0) return true;
    }
    return false;
}

/* What each rule is scanned for, from what the profiles do with it: prompts are scanned only for rules
 * some profile acts on in input (injection rules belong to the injection screen), answers only for
 * rules some profile acts on in output. A rule no profile uses is not compiled. */
static void set_rule_uses(wd_config_t *cfg)
{
    for (size_t i = 0; i < wd_guard_db_nrules(cfg->guard_db); i++) {
        const wd_rule_t *r = wd_guard_db_rule(cfg->guard_db, i);
        bool inj = wd_inj_rule(r);
        unsigned uses = 0;
        for (size_t j = 0; j < cfg->nprofiles; j++) {
            const wd_guard_profile_t *p = &cfg->profiles[j];
            if (!inj && wd_profile_action(p, r) != WD_ACT_ALLOW) uses |= WD_GUARD_INPUT;
            if (wd_profile_output_action(p, r) != WD_ACT_ALLOW) uses |= WD_GUARD_OUTPUT;
            if (inj && p->injection.enabled && p->injection.action != WD_ACT_ALLOW) uses |= WD_GUARD_INJECTION;
        }
        wd_guard_db_set_uses(cfg->guard_db, i, uses);
    }
}

/* After the tree is applied: load the rules, check every name that refers to them, compile them. */
static int resolve_guard(ctx_t *c, const wd_ynode_t *root)
{
    wd_config_t *cfg = c->cfg;
    const wd_ynode_t *g = wd_ynode_get(root, "guard"), *gp = wd_ynode_get(root, "guard_profiles"), *roles = wd_ynode_get(root, "roles");
    if (!g) {
        if (gp) return fail(c, gp, "guard_profiles needs a guard section (guard: { rules_dir: ... })");
        for (size_t i = 0; i < cfg->nroles; i++)
            if (cfg->roles[i].guard || cfg->roles[i].ndata_classes)
                return fail(c, roles, "roles.%s uses guard or data_classes, which need a guard section", cfg->roles[i].name);
        return WD_OK;
    }
    char *dir = cfg->guard.rules_dir;
    char resolved[4096];
    if (dir[0] != '/' && cfg->path && strchr(cfg->path, '/')) {
        const char *slash = strrchr(cfg->path, '/');
        snprintf(resolved, sizeof resolved, "%.*s/%s", (int)(slash - cfg->path), cfg->path, dir);
        dir = resolved;
    }
    char err[512];
    cfg->guard_db = wd_guard_db_parse(dir, err, sizeof err);
    if (!cfg->guard_db) return fail(c, g, "guard.rules_dir: %s", err);
    for (size_t i = 0; i < cfg->nprofiles; i++) {
        wd_guard_profile_t *p = &cfg->profiles[i];
        for (size_t j = 0; j < p->ninput; j++) {
            if (p->input[j].action == WD_ACT_HASH && !cfg->state_dir)
                return fail(c, gp, "guard_profiles.%s.input.%s: the hash action needs state_dir (its key derives from "
                                   "the master key made by `warden init`)", p->name, p->input[j].key);
            if (!db_has_class(cfg->guard_db, p->input[j].key, false) && !db_has_class(cfg->guard_db, p->input[j].key, true))
                return fail(c, gp, "guard_profiles.%s.input: '%s' is neither a data class nor an entity type of the loaded rules",
                            p->name, p->input[j].key);
            /* input: { injection: ACTION } is the short form of injection: { action: ACTION } */
            if (strcmp(p->input[j].key, "injection") == 0) {
                wd_action_t a = p->input[j].action;
                if (p->injection.enabled)
                    return fail(c, gp, "guard_profiles.%s: injection is set both in input and in an injection section; "
                                       "keep the injection section", p->name);
                if (a != WD_ACT_ALLOW && a != WD_ACT_FLAG && a != WD_ACT_BLOCK)
                    return fail(c, gp, "guard_profiles.%s.input.injection: expected allow, flag or block", p->name);
                p->injection.enabled = true;
                p->injection.action = a;
                p->injection.threshold = 70;
            }
        }
        for (size_t j = 0; j < p->noutput; j++)
            if (!db_has_class(cfg->guard_db, p->output[j].key, false) && !db_has_class(cfg->guard_db, p->output[j].key, true))
                return fail(c, gp, "guard_profiles.%s.output: '%s' is neither a data class nor an entity type of the loaded rules",
                            p->name, p->output[j].key);
        if (p->injection.enabled && !db_has_class(cfg->guard_db, "injection", false))
            return fail(c, gp, "guard_profiles.%s.injection: the loaded rules have no rule of class injection "
                               "(rules/injection.yaml)", p->name);
    }
    if (cfg->guard.default_profile && !wd_config_profile(cfg, cfg->guard.default_profile))
        return fail(c, g, "guard.default_profile: unknown profile '%s'", cfg->guard.default_profile);
    for (size_t i = 0; i < cfg->nroles; i++) {
        const wd_role_t *r = &cfg->roles[i];
        if (r->guard && !wd_config_profile(cfg, r->guard))
            return fail(c, roles, "roles.%s.guard: unknown profile '%s'", r->name, r->guard);
        for (size_t j = 0; j < r->ndata_classes; j++)
            if (!db_has_class(cfg->guard_db, r->data_classes[j], false))
                return fail(c, roles, "roles.%s.data_classes: '%s' is not a data class of the loaded rules", r->name,
                            r->data_classes[j]);
    }
    set_rule_uses(cfg);
    /* the directory of compiled databases: cache_dir, else the environment's (hscache.h) */
    char cdir[4096];
    if (!cfg->guard.cache) {
        free(cfg->guard.cache_dir);
        cfg->guard.cache_dir = NULL;
    } else if (!cfg->guard.cache_dir && wd_hs_cache_default_dir(cdir, sizeof cdir) && !(cfg->guard.cache_dir = strdup(cdir)))
        return fail(c, g, "out of memory");
    if (wd_guard_db_set_cache(cfg->guard_db, cfg->guard.cache_dir)) return fail(c, g, "out of memory");
    if (c->flags & WD_CONFIG_NO_SCAN) return WD_OK;
    if (wd_guard_db_compile(cfg->guard_db, err, sizeof err)) return fail(c, g, "guard.rules_dir: %s", err);
    return WD_OK;
}

void wd_config_rules_summary(const wd_config_t *c, char *buf, size_t len, const char **problem)
{
    *problem = NULL;
    if (!c->guard_db) {
        snprintf(buf, len, "%s", "");
        return;
    }
    unsigned compiled, loaded = wd_guard_db_cache_stats(c->guard_db, &compiled, problem);
    snprintf(buf, len, "%zu rules; %u databases compiled, %u loaded from the cache%s%s",
             wd_guard_db_nrules(c->guard_db), compiled, loaded, c->guard.cache_dir ? " in " : " (off)",
             c->guard.cache_dir ? c->guard.cache_dir : "");
}

const wd_guard_profile_t *wd_config_profile(const wd_config_t *c, const char *name)
{
    for (size_t i = 0; name && i < c->nprofiles; i++)
        if (strcmp(c->profiles[i].name, name) == 0) return &c->profiles[i];
    return NULL;
}

wd_action_t wd_profile_action(const wd_guard_profile_t *p, const wd_rule_t *r)
{
    int by_class = -1;
    for (size_t i = 0; i < p->ninput; i++) {
        if (strcmp(p->input[i].key, r->type) == 0) return p->input[i].action;
        if (strcmp(p->input[i].key, r->cls) == 0) by_class = (int)i;
    }
    return by_class >= 0 ? p->input[by_class].action : WD_ACT_ALLOW;
}

wd_action_t wd_profile_output_action(const wd_guard_profile_t *p, const wd_rule_t *r)
{
    int by_class = -1;
    for (size_t i = 0; i < p->noutput; i++) {
        if (strcmp(p->output[i].key, r->type) == 0) return p->output[i].action;
        if (strcmp(p->output[i].key, r->cls) == 0) by_class = (int)i;
    }
    return by_class >= 0 ? p->output[by_class].action : WD_ACT_ALLOW;
}

bool wd_profile_injection_role(const wd_guard_profile_t *p, const char *role, size_t len)
{
    if (!p->injection.roles) return true;
    for (size_t i = 0; i < p->injection.nroles; i++)
        if (strlen(p->injection.roles[i]) == len && memcmp(p->injection.roles[i], role, len) == 0) return true;
    return false;
}

static const char *const auth_modes[] = {"required", "none", NULL};
#define AF(nm) offsetof(wd_auth_cfg_t, nm)
static const wd_cfg_field_t auth_fields[] = {
    {.name = "mode", .type = F_ENUM, .off = AF(mode), .def_str = "required", .choices = auth_modes},
    {.name = "token_ttl_ms", .type = F_MS, .off = AF(token_ttl_ms), .min = 1000, .max = 86400000, .def = 900000},
    {.name = "token_max_ttl_ms", .type = F_MS, .off = AF(token_max_ttl_ms), .min = 1000, .max = 2592000000u,
     .def = 86400000},
    {.name = "max_failures", .type = F_U32, .off = AF(max_failures), .min = 1, .max = 100, .def = 5},
    {.name = "lockout_ms", .type = F_MS, .off = AF(lockout_ms), .min = 1000, .max = 86400000, .def = 30000},
    {.name = "lockout_max_ms", .type = F_MS, .off = AF(lockout_max_ms), .min = 1000, .max = 604800000,
     .def = 3600000},
    {.name = "refresh_ms", .type = F_MS, .off = AF(refresh_ms), .min = 50, .max = 60000, .def = 250},
};
static const wd_cfg_map_t auth_map = {"auth", auth_fields, WD_ARRAY_LEN(auth_fields)};

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define CF(nm) offsetof(wd_config_t, nm)
/* Table order is application order: models are resolved against upstreams, admin against listen. */
static const wd_cfg_field_t root_fields[] = {
    {.name = "listen", .type = F_FN, .required = true, .off = CF(listen), .fn = h_listener},
    {.name = "admin", .type = F_FN, .off = CF(admin), .fn = h_admin},
    {.name = "state_dir", .type = F_STR, .off = CF(state_dir)},
    {.name = "workers", .type = F_U32, .off = CF(workers), .min = 0, .max = 256, .def = 0},
    {.name = "busy_poll_us", .type = F_U32, .off = CF(busy_poll_us), .min = 0, .max = 10000, .def = 0},
    {.name = "log_level", .type = F_ENUM, .off = CF(log_level), .def_str = "info", .choices = log_levels},
    {.name = "limits", .type = F_MAP, .off = CF(limits), .sub = &limits_map},
    {.name = "upstreams", .type = F_FN, .required = true, .fn = h_upstreams},
    {.name = "models", .type = F_FN, .required = true, .fn = h_models},
    {.name = "auth", .type = F_MAP, .off = CF(auth), .sub = &auth_map},
    {.name = "roles", .type = F_FN, .fn = h_roles},
    {.name = "rate_limits", .type = F_MAP, .off = CF(rate), .sub = &rate_map},
    {.name = "guard", .type = F_MAP, .off = CF(guard), .sub = &guard_map},
    {.name = "guard_profiles", .type = F_FN, .fn = h_profiles},
    {.name = "audit", .type = F_MAP, .off = CF(audit_file), .sub = &audit_map},
};
static const wd_cfg_map_t root_map = {"the top level", root_fields, WD_ARRAY_LEN(root_fields)};
_Static_assert(WD_ARRAY_LEN(root_fields) <= MAX_FIELDS && WD_ARRAY_LEN(limits_fields) <= MAX_FIELDS &&
                   WD_ARRAY_LEN(role_fields) <= MAX_FIELDS && WD_ARRAY_LEN(auth_fields) <= MAX_FIELDS &&
                   WD_ARRAY_LEN(rate_fields) <= MAX_FIELDS && WD_ARRAY_LEN(guard_fields) <= MAX_FIELDS &&
                   WD_ARRAY_LEN(upstream_fields) <= MAX_FIELDS && WD_ARRAY_LEN(model_fields) <= MAX_FIELDS &&
                   WD_ARRAY_LEN(listen_tls_fields) <= MAX_FIELDS && WD_ARRAY_LEN(upstream_tls_fields) <= MAX_FIELDS,
               "apply_map tracks at most MAX_FIELDS keys per mapping");

/* ---------------------------------------------------------------------------------------------- */
/* Snapshot lifetime */

static void free_str(char **p)
{
    free(*p);
    *p = NULL;
}

static void config_free(wd_config_t *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        wd_upstream_cfg_t *u = &cfg->upstreams[i];
        if (u->api_key) explicit_bzero(u->api_key, strlen(u->api_key));
        free_str(&u->api_key);
        free_str(&u->api_key_env);
        free_str(&u->name);
        free_str(&u->url);
        free_str(&u->host);
        free_str(&u->host_header);
        free_str(&u->base_path);
        free_str(&u->addr.text);
        free_str(&u->tls.ca);
        free_str(&u->tls.server_name);
        SSL_CTX_free(u->tls.ctx); /* connections still open hold their own references */
        u->tls.ctx = NULL;
    }
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->nmodels; i++) {
        free_str(&cfg->models[i].name);
        free_str(&cfg->models[i].upstream_model);
    }
    free(cfg->models);
    for (size_t i = 0; i < cfg->nroles; i++) {
        wd_role_t *r = &cfg->roles[i];
        for (size_t j = 0; j < r->nmodels; j++) free_str(&r->models[j]);
        free(r->models);
        free(r->ips);
        free_str(&r->name);
        free_str(&r->guard);
        for (size_t j = 0; j < r->ndata_classes; j++) free_str(&r->data_classes[j]);
        free(r->data_classes);
    }
    free(cfg->roles);
    for (size_t i = 0; i < cfg->nprofiles; i++) {
        for (size_t j = 0; j < cfg->profiles[i].ninput; j++) free_str(&cfg->profiles[i].input[j].key);
        free(cfg->profiles[i].input);
        for (size_t j = 0; j < cfg->profiles[i].noutput; j++) free_str(&cfg->profiles[i].output[j].key);
        free(cfg->profiles[i].output);
        for (size_t j = 0; j < cfg->profiles[i].injection.nroles; j++) free_str(&cfg->profiles[i].injection.roles[j]);
        free(cfg->profiles[i].injection.roles);
        wd_guard_allow_free(cfg->profiles[i].allow);
        free_str(&cfg->profiles[i].name);
    }
    free(cfg->profiles);
    free_str(&cfg->guard.rules_dir);
    free_str(&cfg->guard.default_profile);
    free_str(&cfg->guard.cache_dir);
    wd_guard_db_unref(cfg->guard_db);
    free_str(&cfg->auth.mode);
    free_str(&cfg->rate.backend);
    free_str(&cfg->rate.fail);
    free_str(&cfg->rate.key_prefix);
    free_str(&cfg->listen.text);
    free_str(&cfg->admin.text);
    wd_tls_listen_cfg_t *lts[] = {&cfg->listen_tls, &cfg->admin_tls};
    for (size_t i = 0; i < 2; i++) {
        free_str(&lts[i]->cert);
        free_str(&lts[i]->key);
        free_str(&lts[i]->min_version);
        SSL_CTX_free(lts[i]->ctx);
        lts[i]->ctx = NULL;
    }
    free_str(&cfg->state_dir);
    free_str(&cfg->audit_file);
    free_str(&cfg->log_level);
    free_str(&cfg->path);
    explicit_bzero(cfg, sizeof *cfg);
    free(cfg);
}

wd_config_t *wd_config_ref(wd_config_t *c)
{
    if (c) __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void wd_config_unref(wd_config_t *c)
{
    /* acq_rel: the thread that frees must see every other holder's writes made before its unref */
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) config_free(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Loading */

static wd_config_t *load_buf(const char *name, const char *yaml, size_t len, unsigned flags, char *err,
                             size_t errlen)
{
    ctx_t c = {.file = name ? name : "<config>", .err = err, .errlen = errlen, .flags = flags};
    if (err && errlen) err[0] = '\0';
    if (!yaml && len) {
        fail_at(&c, 1, 1, "no input");
        return NULL;
    }
    if (len > MAX_CONFIG_BYTES) {
        wd_errf(err, errlen, WD_E2BIG, "%s: file too large (%zu bytes; the limit is %u)", c.file, len,
                MAX_CONFIG_BYTES);
        return NULL;
    }
    wd_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->path = strdup(c.file))) {
        free(cfg);
        wd_errf(err, errlen, WD_ENOMEM, "%s: out of memory", c.file);
        return NULL;
    }
    c.cfg = cfg;
    wd_ynode_t *root = NULL;
    static const wd_yaml_opts_t yopts = {.doc = "config", .empty = "empty configuration file", .max_depth = MAX_DEPTH};
    int rc = wd_yaml_parse(c.file, yaml ? yaml : "", len, &yopts, &root, err, errlen);
    if (!rc) {
        if (wd_ynode_is_null(root))
            rc = fail(&c, root, "empty configuration file");
        else if (root->kind != WD_YNODE_MAP)
            rc = fail(&c, root, "the top level must be a mapping (key: value), got %s", wd_ynode_kind_name(root));
        else
            rc = apply_map(&c, root, "", &root_map, cfg);
        if (!rc) rc = resolve_guard(&c, root);
        if (!rc && wd_config_auth_required(cfg) && !cfg->state_dir) {
            const wd_ynode_t *at = wd_ynode_get(root, "auth");
            rc = fail(&c, at ? at : root,
                      "authentication is required (auth.mode: required, the default), so state_dir must name the "
                      "directory made by `warden init`; or set auth: { mode: none } to run an open gateway");
        }
        /* Each pair is checked together because a default can conflict with a written value. A token
         * that outlives token_max_ttl_ms would also outlive its revocation record (kept that long). */
        static const struct {
            const char *lo, *hi;
            size_t lo_off, hi_off;
        } pairs[] = {
            {"token_ttl_ms", "token_max_ttl_ms", AF(token_ttl_ms), AF(token_max_ttl_ms)},
            {"lockout_ms", "lockout_max_ms", AF(lockout_ms), AF(lockout_max_ms)},
        };
        for (size_t i = 0; !rc && i < WD_ARRAY_LEN(pairs); i++) {
            uint32_t lo = *(const uint32_t *)((const char *)&cfg->auth + pairs[i].lo_off);
            uint32_t hi = *(const uint32_t *)((const char *)&cfg->auth + pairs[i].hi_off);
            if (lo <= hi) continue;
            const wd_ynode_t *auth = wd_ynode_get(root, "auth"), *at = wd_ynode_get(auth, pairs[i].lo);
            if (!at) at = wd_ynode_get(auth, pairs[i].hi);
            rc = fail(&c, at ? at : auth ? auth : root, "auth.%s (%u ms) must not exceed auth.%s (%u ms)",
                      pairs[i].lo, lo, pairs[i].hi, hi);
        }
    }
    wd_ynode_free(root);
    if (rc) {
        config_free(cfg);
        return NULL;
    }
    if (cfg->workers == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (uint32_t)ncpu;
    }
    cfg->refs = 1;
    return cfg;
}

wd_config_t *wd_config_load_buf(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    return load_buf(name, yaml, len, 0, err, errlen);
}

wd_config_t *wd_config_load_ex(const char *path, unsigned flags, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    char *buf;
    size_t len;
    if (wd_read_file(path, MAX_CONFIG_BYTES, &buf, &len, err, errlen) != WD_OK) return NULL;
    wd_config_t *cfg = load_buf(path, buf, len, flags, err, errlen);
    free(buf);
    return cfg;
}

wd_config_t *wd_config_load(const char *path, char *err, size_t errlen)
{
    return wd_config_load_ex(path, 0, err, errlen);
}

const wd_model_cfg_t *wd_config_model(const wd_config_t *c, const char *name, size_t len)
{
    if (!c || !name) return NULL;
    for (size_t i = 0; i < c->nmodels; i++) {
        const char *m = c->models[i].name;
        if (strlen(m) == len && memcmp(m, name, len) == 0) return &c->models[i];
    }
    return NULL;
}

int wd_config_check_reload(const wd_config_t *old, const wd_config_t *next, char *err, size_t errlen)
{
    static const char *const fmt =
        "%s: reload refused: %s cannot change on reload (%s -> %s); restart warden "
        "to apply it (the running configuration is unchanged)";
    if (!addr_equal(&old->listen, &next->listen))
        return wd_errf(err, errlen, WD_EINVAL, fmt, next->path, "the listen address", old->listen.text,
                       next->listen.text);
    if (!addr_equal(&old->admin, &next->admin))
        return wd_errf(err, errlen, WD_EINVAL, fmt, next->path, "the admin address",
                       old->admin.text ? old->admin.text : "none",
                       next->admin.text ? next->admin.text : "none");
    const struct {
        const char *name;
        bool before, after;
    } tls[] = {{"listen", old->listen_tls.ctx != NULL, next->listen_tls.ctx != NULL},
               {"admin", old->admin_tls.ctx != NULL, next->admin_tls.ctx != NULL}};
    for (size_t i = 0; i < 2; i++)
        if (tls[i].before != tls[i].after)
            return wd_errf(err, errlen, WD_EINVAL,
                           "%s: reload refused: TLS on the %s listener cannot be turned %s on reload (clients "
                           "would meet a different protocol on the same port); restart warden to apply it (the "
                           "running configuration is unchanged)",
                           next->path, tls[i].name, tls[i].after ? "on" : "off");
    if (old->workers != next->workers) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%u", old->workers);
        snprintf(b, sizeof b, "%u", next->workers);
        return wd_errf(err, errlen, WD_EINVAL, fmt, next->path, "workers", a, b);
    }
    return WD_OK;
}

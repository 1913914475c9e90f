/* policy: role-based access control with default deny. A role (from config) grants models (exact
 * names or `prefix-*` patterns), endpoints, optional client-IP ranges, an MFA requirement and the
 * admin API. A principal's effective permission is the union of its roles' grants, narrowed by the
 * key's or token's own scope (models, IPs) — a scope can only take away. Every denial says which
 * rule decided. Knows nothing about HTTP or storage. */
#ifndef WD_POLICY_H
#define WD_POLICY_H

#include <sys/socket.h>

#include "core/core.h"
#include "limit/limit.h"

enum {
    WD_EP_CHAT = 1u << 0,
    WD_EP_COMPLETIONS = 1u << 1,
    WD_EP_EMBEDDINGS = 1u << 2,
    WD_EP_MODELS = 1u << 3,
    WD_EP_ALL = 0xfu,
};
/* "chat" -> WD_EP_CHAT ...; 0 for an unknown name. */
uint32_t wd_endpoint_bit(const char *name, size_t len);
const char *wd_endpoint_name(uint32_t bit);

typedef struct {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix;
    uint8_t addr[16];
} wd_cidr_t;

/* "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits must be zero. */
int wd_cidr_parse(const char *s, size_t len, wd_cidr_t *out, char *err, size_t errlen);
/* ip is a textual address ("127.0.0.1", "::1"); IPv4-mapped IPv6 addresses match IPv4 ranges. */
bool wd_cidr_match(const wd_cidr_t *c, const char *ip);
bool wd_cidr_any(const wd_cidr_t *c, size_t n, const char *ip);

/* `pattern` is an exact name or ends in '*' (prefix match). */
bool wd_model_pattern_match(const char *pattern, const char *name, size_t len);

typedef struct {
    char *name;
    char **models;
    size_t nmodels;
    uint32_t endpoints;
    bool require_mfa;
    bool admin;       /* may use the admin API (with MFA) */
    wd_cidr_t *ips;   /* client ranges this role applies from; none = anywhere */
    size_t nips;
    wd_limits_t limits;  /* 0 fields: unlimited */
    char *guard;         /* guard profile name, NULL = the default profile */
    char **data_classes; /* classes the role may send unchanged (e.g. "phi") */
    size_t ndata_classes;
    bool limits_shared;  /* limits.per: role — one pool for the whole role instead of per principal */
} wd_role_t;

/* Who is calling, after authentication. Pointers stay valid for the request. */
typedef struct {
    const char *kind;        /* "key" | "token" */
    const char *id;          /* public id: key id, or the token's subject */
    const char *const *roles;
    size_t nroles;
    bool mfa;                /* authenticated with a second factor (tokens minted after TOTP) */
    const char *const *models; /* scope narrowing: NULL = none */
    size_t nmodels;
    const wd_cidr_t *ips;    /* scope narrowing: NULL = none */
    size_t nips;
} wd_principal_t;

typedef struct {
    int status;        /* 0 allow, else 401/403 */
    const char *code;  /* model_not_permitted, endpoint_not_permitted, mfa_required, ip_not_permitted, no_role */
    char reason[256];
    char rule[96];     /* e.g. "role:front-desk" or "key-scope:models" */
} wd_decision_t;

/* Decides whether principal p may call `endpoint` (a WD_EP_* bit) for `model` (NULL when the route
 * names no model) from client address `ip`. Returns true to allow; otherwise fills d. */
bool wd_policy_decide(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, uint32_t endpoint,
                      const char *model, size_t model_len, const char *ip, wd_decision_t *d);

/* Whether p may use `model` at all (any endpoint), for filtering GET /v1/models. */
bool wd_policy_model_visible(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, const char *model,
                             const char *ip);

/* Whether p may use the admin API: a role with admin: true that applies (MFA and IP included). */
bool wd_policy_is_admin(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, const char *ip);

const wd_role_t *wd_policy_role(const wd_role_t *roles, size_t nroles, const char *name);

#endif

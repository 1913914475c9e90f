#include "policy/policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const ep_names[] = {"chat", "completions", "embeddings", "models"};

uint32_t wd_endpoint_bit(const char *name, size_t len)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(ep_names); i++)
        if (strlen(ep_names[i]) == len && memcmp(ep_names[i], name, len) == 0) return 1u << i;
    return 0;
}

const char *wd_endpoint_name(uint32_t bit)
{
    for (size_t i = 0; i < WD_ARRAY_LEN(ep_names); i++)
        if (bit == 1u << i) return ep_names[i];
    return "?";
}

int wd_cidr_parse(const char *s, size_t len, wd_cidr_t *out, char *err, size_t errlen)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf) return wd_errf(err, errlen, WD_EINVAL, "invalid address range");
    memcpy(buf, s, len);
    buf[len] = 0;
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        *slash = 0;
        char *end;
        if (!slash[1] || slash[1] == '+' || slash[1] == '-') return wd_errf(err, errlen, WD_EINVAL, "invalid prefix length in '%.*s'", (int)len, s);
        prefix = strtol(slash + 1, &end, 10);
        if (*end) return wd_errf(err, errlen, WD_EINVAL, "invalid prefix length in '%.*s'", (int)len, s);
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        if (prefix < 0) prefix = 32;
        if (prefix > 32) return wd_errf(err, errlen, WD_EINVAL, "prefix /%ld is too long for IPv4", prefix);
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        if (prefix < 0) prefix = 128;
        if (prefix > 128) return wd_errf(err, errlen, WD_EINVAL, "prefix /%ld is too long for IPv6", prefix);
    } else {
        return wd_errf(err, errlen, WD_EINVAL, "'%s' is not an IP address", buf);
    }
    out->prefix = (uint8_t)prefix;
    size_t nbytes = out->family == AF_INET ? 4 : 16;
    for (size_t bit = (size_t)prefix; bit < nbytes * 8; bit++)
        if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
            return wd_errf(err, errlen, WD_EINVAL, "'%.*s' has host bits set (did you mean the network address?)",
                           (int)len, s);
    return WD_OK;
}

bool wd_cidr_match(const wd_cidr_t *c, const char *ip)
{
    uint8_t a[16];
    const uint8_t *p = a;
    if (c->family == AF_INET) {
        if (inet_pton(AF_INET, ip, a) != 1) {
            /* ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket */
            if (inet_pton(AF_INET6, ip, a) != 1) return false;
            static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (memcmp(a, mapped, 12) != 0) return false;
            p = a + 12;
        }
    } else if (inet_pton(AF_INET6, ip, a) != 1) {
        return false;
    }
    size_t full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(p, c->addr, full) != 0) return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((p[full] & mask) != (c->addr[full] & mask)) return false;
    }
    return true;
}

bool wd_cidr_any(const wd_cidr_t *c, size_t n, const char *ip)
{
    for (size_t i = 0; i < n; i++)
        if (wd_cidr_match(&c[i], ip)) return true;
    return false;
}

bool wd_model_pattern_match(const char *pattern, const char *name, size_t len)
{
    size_t pl = strlen(pattern);
    if (pl && pattern[pl - 1] == '*') return len >= pl - 1 && memcmp(pattern, name, pl - 1) == 0;
    return pl == len && memcmp(pattern, name, len) == 0;
}

static bool any_pattern(char *const *patterns, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (wd_model_pattern_match(patterns[i], name, len)) return true;
    return false;
}

const wd_role_t *wd_policy_role(const wd_role_t *roles, size_t nroles, const char *name)
{
    for (size_t i = 0; i < nroles; i++)
        if (strcmp(roles[i].name, name) == 0) return &roles[i];
    return NULL;
}

static void role_list(const wd_principal_t *p, char *out, size_t n)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < p->nroles && used < n; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%s", i ? ", " : "", p->roles[i]);
}

static bool deny(wd_decision_t *d, int status, const char *code, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool deny(wd_decision_t *d, int status, const char *code, const char *rule, const char *fmt, ...)
{
    d->status = status;
    d->code = code;
    snprintf(d->rule, sizeof d->rule, "%s", rule);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
    return false;
}

bool wd_policy_decide(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, uint32_t endpoint,
                      const char *model, size_t model_len, const char *ip, wd_decision_t *d)
{
    memset(d, 0, sizeof *d);
    char rl[160];
    role_list(p, rl, sizeof rl);
    char scope_rule[32];
    if (p->ips && !wd_cidr_any(p->ips, p->nips, ip)) {
        snprintf(scope_rule, sizeof scope_rule, "%s-scope:ips", p->kind);
        return deny(d, 403, "ip_not_permitted", scope_rule, "this %s may not be used from %s", p->kind, ip);
    }
    if (model && p->models) {
        bool ok = false;
        for (size_t i = 0; i < p->nmodels && !ok; i++) ok = wd_model_pattern_match(p->models[i], model, model_len);
        if (!ok) {
            snprintf(scope_rule, sizeof scope_rule, "%s-scope:models", p->kind);
            return deny(d, 403, "model_not_permitted", scope_rule, "this %s is not scoped for model '%.*s'", p->kind,
                        (int)WD_MIN(model_len, 100), model);
        }
    }
    const wd_role_t *mfa_role = NULL, *ip_role = NULL;
    bool known = false, ep_seen = false;
    for (size_t i = 0; i < p->nroles; i++) {
        const wd_role_t *r = wd_policy_role(roles, nroles, p->roles[i]);
        if (!r) continue;
        known = true;
        bool ep_ok = (r->endpoints & endpoint) != 0;
        bool model_ok = !model || any_pattern(r->models, r->nmodels, model, model_len);
        bool ip_ok = r->nips == 0 || wd_cidr_any(r->ips, r->nips, ip);
        bool mfa_ok = !r->require_mfa || p->mfa;
        ep_seen |= ep_ok;
        if (ep_ok && model_ok && ip_ok && mfa_ok) return true;
        if (ep_ok && model_ok && ip_ok && !mfa_ok && !mfa_role) mfa_role = r;
        if (ep_ok && model_ok && !ip_ok && !ip_role) ip_role = r;
    }
    char rule[96];
    if (!known)
        return deny(d, 403, "no_role", "default-deny", "%s %s has no role defined in this gateway (roles: %s)",
                    p->kind, p->id, rl[0] ? rl : "none");
    if (mfa_role) {
        snprintf(rule, sizeof rule, "role:%s:require_mfa", mfa_role->name);
        return deny(d, 403, "mfa_required", rule,
                    "role '%s' requires multi-factor authentication; use a token obtained with a TOTP code",
                    mfa_role->name);
    }
    if (ip_role) {
        snprintf(rule, sizeof rule, "role:%s:ips", ip_role->name);
        return deny(d, 403, "ip_not_permitted", rule, "role '%s' does not allow requests from %s", ip_role->name, ip);
    }
    if (!ep_seen)
        return deny(d, 403, "endpoint_not_permitted", "default-deny", "none of the roles [%s] grants the %s endpoint",
                    rl, wd_endpoint_name(endpoint));
    return deny(d, 403, "model_not_permitted", "default-deny", "none of the roles [%s] grants model '%.*s'", rl,
                (int)WD_MIN(model_len, 100), model ? model : "");
}

bool wd_policy_model_visible(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, const char *model,
                             const char *ip)
{
    wd_decision_t d;
    size_t len = strlen(model);
    for (uint32_t ep = WD_EP_CHAT; ep <= WD_EP_EMBEDDINGS; ep <<= 1)
        if (wd_policy_decide(roles, nroles, p, ep, model, len, ip, &d)) return true;
    return false;
}

bool wd_policy_is_admin(const wd_role_t *roles, size_t nroles, const wd_principal_t *p, const char *ip)
{
    if (!p->mfa) return false;
    if (p->ips && !wd_cidr_any(p->ips, p->nips, ip)) return false;
    for (size_t i = 0; i < p->nroles; i++) {
        const wd_role_t *r = wd_policy_role(roles, nroles, p->roles[i]);
        if (r && r->admin && (r->nips == 0 || wd_cidr_any(r->ips, r->nips, ip))) return true;
    }
    return false;
}

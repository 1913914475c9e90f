#include "auth/token.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "auth/paseto.h"

void wd_claims_free(wd_claims_t *c)
{
    for (size_t i = 0; i < c->nroles; i++) free(c->roles[i]);
    for (size_t i = 0; i < c->nmodels; i++) free(c->models[i]);
    free(c->roles);
    free(c->models);
    c->roles = c->models = NULL;
    c->nroles = c->nmodels = 0;
}

void wd_time_iso(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reads n digits at s; -1 if any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int wd_time_parse_iso(const char *s, size_t len, int64_t *t)
{
    /* Exactly YYYY-MM-DDTHH:MM:SS then Z or +00:00, years 1970-9999 (fractions of a second are not
     * used by warden), so that every time accepted prints back (wd_time_iso) as one that parses to
     * the same second. A day past the month's end or a leap second rolls over, as timegm does. */
    if ((len != 20 && len != 25) || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':')
        return WD_EINVAL;
    if (len == 20 ? s[19] != 'Z' : memcmp(s + 19, "+00:00", 6) != 0) return WD_EINVAL;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2), h = digits(s + 11, 2),
        mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
        sec > 60)
        return WD_EINVAL;
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    int64_t v = (int64_t)timegm(&tm);
    if (v >= 253402300800LL) return WD_EINVAL; /* rolled over into year 10000 */
    *t = v;
    return WD_OK;
}

int wd_parse_ttl(const char *s, int64_t *seconds)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+') return WD_EINVAL;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return WD_EINVAL;
    long long mul = !*end ? 1 : !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600
                    : !strcmp(end, "d") ? 86400 : 0;
    if (!mul || v > 3650LL * 86400 / mul) return WD_EINVAL;
    *seconds = v * mul;
    return WD_OK;
}

static json_t *str_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

int wd_token_mint(const uint8_t sk[64], const char *kid, wd_claims_t *c, wd_buf_t *out)
{
    if (!c->jti[0]) {
        uint8_t r[16];
        randombytes_buf(r, sizeof r);
        sodium_bin2base64(c->jti, sizeof c->jti, r, sizeof r, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    }
    char iat[32], exp[32];
    wd_time_iso(c->iat, iat);
    wd_time_iso(c->exp, exp);
    json_t *o = json_object();
    json_object_set_new(o, "iss", json_string("warden"));
    json_object_set_new(o, "sub", json_string(c->sub));
    json_object_set_new(o, "iat", json_string(iat));
    json_object_set_new(o, "exp", json_string(exp));
    json_object_set_new(o, "jti", json_string(c->jti));
    json_object_set_new(o, "mfa", json_boolean(c->mfa));
    json_object_set_new(o, "roles", str_array(c->roles, c->nroles));
    if (c->models) json_object_set_new(o, "models", str_array(c->models, c->nmodels));
    char *payload = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    json_t *f = json_pack("{s:s}", "kid", kid);
    char *footer = json_dumps(f, JSON_COMPACT);
    json_decref(f);
    int rc = payload && footer ? wd_paseto_v4_public_sign(sk, payload, strlen(payload), footer, strlen(footer), "", 0, out)
                               : WD_ENOMEM;
    free(payload);
    free(footer);
    return rc;
}

static int take_strs(json_t *a, char ***out, size_t *n)
{
    if (!json_is_array(a)) return WD_EINVAL;
    size_t count = json_array_size(a);
    if (count > 256) return WD_EINVAL;
    *out = calloc(count ? count : 1, sizeof **out);
    if (!*out) return WD_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v) || !((*out)[i] = strdup(json_string_value(v)))) {
            *n = i;
            return WD_EINVAL;
        }
    }
    *n = count;
    return WD_OK;
}

static int bad(const char **code, const char *c, char *reason, size_t rlen, const char *why)
{
    *code = c;
    snprintf(reason, rlen, "%s", why);
    return WD_EINVAL;
}

int wd_token_verify(const uint8_t pk[32], const char *kid, const char *tok, size_t len, int64_t now,
                    wd_claims_t *out, const char **code, char *reason, size_t rlen)
{
    memset(out, 0, sizeof *out);
    wd_buf_t payload, footer;
    wd_buf_init(&payload, 65536);
    wd_buf_init(&footer, 4096);
    char err[128];
    int rc = wd_paseto_v4_public_verify(pk, tok, len, "", 0, &payload, &footer, err, sizeof err);
    json_t *f = NULL, *o = NULL;
    if (rc != WD_OK) {
        rc = bad(code, "invalid_token", reason, rlen, "the token's signature or format is invalid");
        goto out;
    }
    f = json_loadb(footer.data, footer.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *k = f ? json_object_get(f, "kid") : NULL;
    if (!json_is_string(k) || strcmp(json_string_value(k), kid) != 0) {
        rc = bad(code, "invalid_token", reason, rlen, "the token was signed by an unknown key");
        goto out;
    }
    o = json_loadb(payload.data, payload.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *sub = json_object_get(o, "sub"), *jti = json_object_get(o, "jti"), *iat = json_object_get(o, "iat"),
           *exp = json_object_get(o, "exp"), *mfa = json_object_get(o, "mfa"), *iss = json_object_get(o, "iss");
    if (!json_is_object(o) || !json_is_string(sub) || !json_is_string(jti) || !json_is_string(iat) ||
        !json_is_string(exp) || !json_is_boolean(mfa) || !json_is_string(iss) ||
        strcmp(json_string_value(iss), "warden") != 0 ||
        wd_time_parse_iso(json_string_value(iat), json_string_length(iat), &out->iat) ||
        wd_time_parse_iso(json_string_value(exp), json_string_length(exp), &out->exp) ||
        json_string_length(sub) >= sizeof out->sub || json_string_length(jti) >= sizeof out->jti ||
        json_string_length(sub) == 0 || json_string_length(jti) == 0 ||
        take_strs(json_object_get(o, "roles"), &out->roles, &out->nroles) != WD_OK) {
        rc = bad(code, "invalid_token", reason, rlen, "the token's claims are malformed");
        goto out;
    }
    json_t *models = json_object_get(o, "models");
    if (models && take_strs(models, &out->models, &out->nmodels) != WD_OK) {
        rc = bad(code, "invalid_token", reason, rlen, "the token's claims are malformed");
        goto out;
    }
    snprintf(out->sub, sizeof out->sub, "%s", json_string_value(sub));
    snprintf(out->jti, sizeof out->jti, "%s", json_string_value(jti));
    out->mfa = json_is_true(mfa);
    if (out->exp <= now) {
        rc = bad(code, "expired_token", reason, rlen, "the token has expired");
        goto out;
    }
    if (out->iat > now + 60) { /* minted in the future beyond clock skew */
        rc = bad(code, "invalid_token", reason, rlen, "the token is not valid yet");
        goto out;
    }
    rc = WD_OK;
out:
    if (rc != WD_OK) wd_claims_free(out);
    json_decref(f);
    json_decref(o);
    wd_buf_free(&payload);
    wd_buf_free(&footer);
    return rc;
}

/* libFuzzer driver for what a client's credential goes through before any lookup: PASETO v4.public
 * tokens (base64url, signature, footer and claims), API key syntax and the claims' timestamps. The
 * first input byte picks the mode, the rest is the input:
 *   0  the input as a token: it must be refused (nobody but this driver holds the key), with
 *      "invalid_token" and a reason, and nothing allocated left behind;
 *   1  the input as the claims JSON of a token signed with the right key and footer: if accepted, the
 *      claims are within their limits, and minting them again gives a token that verifies to the same
 *      claims; if refused, the code is invalid_token or expired_token;
 *   2  the input as the footer of a token with valid claims: accepted only if it names the key;
 *   3  base64url: whatever decodes encodes back to the same text;
 *   4  API keys: a key that parses splits into the same id, and its id and secret lie inside it;
 *   5  timestamps: whatever parses prints as a time that parses to the same second. */
#include <jansson.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/apikey.h"
#include "auth/paseto.h"
#include "auth/token.h"
#include "fuzz_check.h"

#define KID "k4.pid.fuzz"
#define NOW 1800000000 /* 2027-01-15 */

static uint8_t g_pk[32], g_sk[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    uint8_t seed[32] = {7};
    CHECK(sodium_init() >= 0);
    crypto_sign_seed_keypair(g_pk, g_sk, seed);
    return 0;
}

static bool same_strs(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb || (a == NULL) != (b == NULL)) return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0) return false;
    return true;
}

/* Signs payload and footer, verifies the result; on success checks the claims and their round trip. */
static void signed_token(const char *payload, size_t plen, const char *footer, size_t flen, bool kid_ok)
{
    wd_buf_t tok;
    wd_buf_init(&tok, 0);
    CHECK(wd_paseto_v4_public_sign(g_sk, payload, plen, footer, flen, "", 0, &tok) == WD_OK);
    wd_claims_t c;
    const char *code = NULL;
    char reason[128];
    int rc = wd_token_verify(g_pk, KID, tok.data, tok.len, NOW, &c, &code, reason, sizeof reason);
    wd_buf_free(&tok);
    if (rc != WD_OK) {
        CHECK(code && (!strcmp(code, "invalid_token") || !strcmp(code, "expired_token")) && reason[0]);
        CHECK(c.roles == NULL && c.models == NULL);
        return;
    }
    CHECK(kid_ok);
    CHECK(c.exp > NOW && c.iat <= NOW + 60);
    CHECK(strlen(c.sub) < sizeof c.sub && strlen(c.jti) < sizeof c.jti && c.jti[0]);
    CHECK(c.roles != NULL && c.nroles <= 256 && c.nmodels <= 256);
    wd_buf_t again;
    wd_buf_init(&again, 0);
    CHECK(wd_token_mint(g_sk, KID, &c, &again) == WD_OK);
    wd_claims_t d;
    CHECK(wd_token_verify(g_pk, KID, again.data, again.len, NOW, &d, &code, reason, sizeof reason) == WD_OK);
    CHECK(!strcmp(c.sub, d.sub) && !strcmp(c.jti, d.jti) && c.mfa == d.mfa && c.iat == d.iat &&
          c.exp == d.exp);
    CHECK(same_strs(c.roles, c.nroles, d.roles, d.nroles) &&
          same_strs(c.models, c.nmodels, d.models, d.nmodels));
    wd_buf_free(&again);
    wd_claims_free(&c);
    wd_claims_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    static const char footer[] = "{\"kid\":\"" KID "\"}";
    static const char claims[] =
        "{\"iss\":\"warden\",\"sub\":\"user:a\",\"iat\":\"2027-01-15T00:00:00Z\","
        "\"exp\":\"2027-01-16T00:00:00Z\",\"jti\":\"j\",\"mfa\":true,\"roles\":[\"r\"]}";
    switch (data[0] % 6) {
    case 0: {
        wd_claims_t c;
        const char *code = NULL;
        char reason[128] = "";
        CHECK(wd_token_verify(g_pk, KID, p, n, NOW, &c, &code, reason, sizeof reason) != WD_OK);
        CHECK(code && !strcmp(code, "invalid_token") && reason[0]);
        CHECK(c.roles == NULL && c.models == NULL);
        wd_buf_t f;
        wd_buf_init(&f, 0);
        wd_paseto_footer(p, n, &f);
        wd_buf_free(&f);
        break;
    }
    case 1: signed_token(p, n, footer, sizeof footer - 1, true); break;
    case 2: {
        json_t *f = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
        json_t *k = json_object_get(f, "kid");
        bool kid_ok = json_is_string(k) && !strcmp(json_string_value(k), KID);
        json_decref(f);
        signed_token(claims, sizeof claims - 1, p, n, kid_ok);
        break;
    }
    case 3: {
        wd_buf_t dec, enc;
        wd_buf_init(&dec, 0);
        wd_buf_init(&enc, 0);
        if (wd_b64url_decode(p, n, &dec) == WD_OK) {
            CHECK(wd_b64url_encode(dec.data, dec.len, &enc) == WD_OK);
            CHECK(enc.len == n && (n == 0 || memcmp(enc.data, p, n) == 0));
        }
        wd_buf_free(&dec);
        wd_buf_free(&enc);
        break;
    }
    case 4: {
        wd_str_t id, secret, id2;
        if (wd_apikey_parse(p, n, &id, &secret) == WD_OK) {
            CHECK(id.p >= p && id.p + id.len <= p + n && secret.p >= p && secret.p + secret.len <= p + n);
            CHECK(wd_apikey_split(p, n, &id2) == WD_OK && id2.p == id.p && id2.len == id.len);
        }
        break;
    }
    case 5: {
        int64_t t, u;
        char iso[32];
        if (wd_time_parse_iso(p, n, &t) == WD_OK) {
            wd_time_iso(t, iso);
            CHECK(wd_time_parse_iso(iso, strlen(iso), &u) == WD_OK && u == t);
        }
        break;
    }
    }
    return 0;
}

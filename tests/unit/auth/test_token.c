/* Access tokens (auth/token.c): mint and verify, every refusal with its code, the claims' shape, and
 * the strict timestamps and TTLs that tokens and `warden token` take. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/paseto.h"
#include "auth/token.h"

#define KID "k4.pid.test"
#define NOW 1800000000 /* 2027-01-15T08:00:00Z */

static uint8_t pk[32], sk[64];

static int setup(void **state)
{
    (void)state;
    uint8_t seed[32] = {1};
    if (sodium_init() < 0) return -1;
    crypto_sign_seed_keypair(pk, sk, seed);
    return 0;
}

static char *roles[] = {"clinician", "analyst"};

static void mint(wd_claims_t *c, wd_buf_t *tok)
{
    wd_buf_init(tok, 0);
    assert_int_equal(wd_token_mint(sk, KID, c, tok), WD_OK);
}

/* Verifies and returns the code ("ok" on success); claims freed. */
static const char *verify(const char *tok, size_t len, const char *kid, int64_t now)
{
    wd_claims_t c;
    const char *code = NULL;
    char reason[128] = "";
    if (wd_token_verify(pk, kid, tok, len, now, &c, &code, reason, sizeof reason) == WD_OK) {
        wd_claims_free(&c);
        return "ok";
    }
    assert_non_null(code);
    assert_true(reason[0] != '\0');
    assert_null(strstr(reason, "v4.public")); /* never echoes the token */
    assert_null(c.roles);
    return code;
}

static void test_round_trip(void **state)
{
    (void)state;
    wd_claims_t c = {
        .sub = "user:alice", .mfa = true, .iat = NOW - 10, .exp = NOW + 3600, .roles = roles, .nroles = 2};
    wd_buf_t tok;
    mint(&c, &tok);
    assert_true(c.jti[0] != '\0'); /* a fresh jti was drawn */
    wd_claims_t d;
    const char *code;
    char reason[128];
    assert_int_equal(wd_token_verify(pk, KID, tok.data, tok.len, NOW, &d, &code, reason, sizeof reason),
                     WD_OK);
    assert_string_equal(d.sub, "user:alice");
    assert_string_equal(d.jti, c.jti);
    assert_true(d.mfa);
    assert_int_equal(d.iat, NOW - 10);
    assert_int_equal(d.exp, NOW + 3600);
    assert_int_equal(d.nroles, 2);
    assert_string_equal(d.roles[1], "analyst");
    assert_null(d.models); /* no narrowing */
    wd_claims_free(&d);

    /* the refusals */
    assert_string_equal(verify(tok.data, tok.len, "k4.pid.other", NOW), "invalid_token");
    assert_string_equal(verify(tok.data, tok.len, KID, NOW + 3600), "expired_token");
    assert_string_equal(verify(tok.data, tok.len, KID, NOW - 71), "invalid_token"); /* iat beyond the skew */
    assert_string_equal(verify(tok.data, tok.len, KID, NOW - 70), "ok");
    tok.data[tok.len / 2] ^= 1;
    assert_string_equal(verify(tok.data, tok.len, KID, NOW), "invalid_token");
    assert_string_equal(verify("", 0, KID, NOW), "invalid_token");
    wd_buf_free(&tok);
}

/* A token signed with the right key whose claims are `payload`. */
static const char *signed_claims(const char *payload)
{
    static const char footer[] = "{\"kid\":\"" KID "\"}";
    wd_buf_t tok;
    wd_buf_init(&tok, 0);
    assert_int_equal(
        wd_paseto_v4_public_sign(sk, payload, strlen(payload), footer, sizeof footer - 1, "", 0, &tok),
        WD_OK);
    const char *code = verify(tok.data, tok.len, KID, NOW);
    wd_buf_free(&tok);
    return code;
}

static void test_claims_shape(void **state)
{
    (void)state;
#define CLAIMS(sub, jti, extra)                                                                              \
    "{\"iss\":\"warden\",\"sub\":\"" sub                                                                     \
    "\",\"iat\":\"2027-01-15T00:00:00Z\",\"exp\":\"2027-01-16T00:00:00Z\","                                  \
    "\"jti\":\"" jti "\",\"mfa\":false" extra "}"
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", ",\"roles\":[\"r\"]")), "ok");
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", ",\"roles\":[]")), "ok");
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", ",\"roles\":[\"r\"],\"models\":[]")), "ok");
    /* an empty subject or jti (warden never mints one: such a token could not be revoked by its id) */
    assert_string_equal(signed_claims(CLAIMS("", "j1", ",\"roles\":[\"r\"]")), "invalid_token");
    assert_string_equal(signed_claims(CLAIMS("user:a", "", ",\"roles\":[\"r\"]")), "invalid_token");
    /* roles missing or not strings, models not an array, a NUL in a string (jansson refuses it), another
     * issuer */
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", "")), "invalid_token");
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", ",\"roles\":[1]")), "invalid_token");
    assert_string_equal(signed_claims(CLAIMS("user:a", "j1", ",\"roles\":[\"r\"],\"models\":\"m\"")),
                        "invalid_token");
    assert_string_equal(signed_claims(CLAIMS("user:a\\u0000x", "j1", ",\"roles\":[\"r\"]")), "invalid_token");
    assert_string_equal(
        signed_claims("{\"iss\":\"other\",\"sub\":\"user:a\",\"iat\":\"2027-01-15T00:00:00Z\","
                      "\"exp\":\"2027-01-16T00:00:00Z\",\"jti\":\"j\",\"mfa\":false,\"roles\":[]}"),
        "invalid_token");
    assert_string_equal(signed_claims("[]"), "invalid_token");
#undef CLAIMS
}

static void test_time_iso(void **state)
{
    (void)state;
    int64_t t;
    char out[32];
    assert_int_equal(wd_time_parse_iso("2027-01-15T08:00:00Z", 20, &t), WD_OK);
    assert_int_equal(t, NOW);
    assert_int_equal(wd_time_parse_iso("2027-01-15T08:00:00+00:00", 25, &t), WD_OK);
    assert_int_equal(t, NOW);
    wd_time_iso(NOW, out);
    assert_string_equal(out, "2027-01-15T08:00:00Z");
    assert_int_equal(wd_time_parse_iso("1970-01-01T00:00:00Z", 20, &t), WD_OK);
    assert_int_equal(t, 0);
    /* a day past the month's end and a leap second roll over, and print back as what they became */
    assert_int_equal(wd_time_parse_iso("2027-02-31T23:59:60Z", 20, &t), WD_OK);
    wd_time_iso(t, out);
    assert_string_equal(out, "2027-03-04T00:00:00Z");
    static const char *const bad[] = {
        "0027-02-28T23:59:59Z",      /* before 1970: would not print back in four digits */
        "1969-12-31T23:59:59Z",      /* negative */
        "9999-12-31T23:59:60Z",      /* rolls into year 10000 */
        " 2027-01-15T08:00:00Z",     /* strptime skipped spaces */
        "2027-1-15T08:00:00Z",       /* one-digit month */
        "2027-01-15t08:00:00Z",      /* lower-case T */
        "2027-01-15T08:00:00",       /* no zone */
        "2027-01-15T08:00:00+01:00", /* not UTC */
        "2027-01-15T08:00:00.5Z",    /* fractions */
        "2027-13-15T08:00:00Z",
        "2027-01-00T08:00:00Z",
        "2027-01-15T24:00:00Z",
        "2027-01-15T08:60:00Z",
        "2027-01-15T08:00:61Z",
        "+027-01-15T08:00:00Z",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        t = 42;
        if (wd_time_parse_iso(bad[i], strlen(bad[i]), &t) == WD_OK) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(t, 42); /* untouched */
    }
}

static void test_parse_ttl(void **state)
{
    (void)state;
    int64_t s;
    assert_int_equal(wd_parse_ttl("90s", &s), WD_OK);
    assert_int_equal(s, 90);
    assert_int_equal(wd_parse_ttl("15m", &s), WD_OK);
    assert_int_equal(s, 900);
    assert_int_equal(wd_parse_ttl("12h", &s), WD_OK);
    assert_int_equal(s, 43200);
    assert_int_equal(wd_parse_ttl("30d", &s), WD_OK);
    assert_int_equal(s, 30 * 86400);
    assert_int_equal(wd_parse_ttl("3650d", &s), WD_OK);
    assert_int_equal(s, 3650 * 86400);
    static const char *const bad[] = {
        "", "0", "-5m", "+5m", "5w", "5 m", "m", "3651d", "99999999999999999999s"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (wd_parse_ttl(bad[i], &s) == WD_OK) fail_msg("accepted '%s'", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_claims_shape),
        cmocka_unit_test(test_time_iso),
        cmocka_unit_test(test_parse_ttl),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

/* PASETO v4: every official test vector (read in place), plus tampering, truncation, wrong key,
 * wrong implicit assertion, wrong header/purpose and strict base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "auth/paseto.h"

#define V4_JSON "../shared/data/conformance/paseto/v4.json"

static json_t *load_vectors(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(V4_JSON, 0, &jerr);
    if (!root) fail_msg("cannot load %s: %s (run from the project root)", V4_JSON, jerr.text);
    json_t *tests = json_object_get(root, "tests");
    assert_true(json_is_array(tests));
    return root;
}

static void hex(const char *h, uint8_t *out, size_t want)
{
    size_t got = 0;
    assert_non_null(h);
    assert_int_equal(sodium_hex2bin(out, want, h, strlen(h), NULL, &got, NULL), 0);
    assert_int_equal(got, want);
}

static const char *sget(json_t *t, const char *k)
{
    json_t *v = json_object_get(t, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *find_vector(json_t *root, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(root, "tests"), i, t) if (strcmp(sget(t, "name"), name) == 0) return t;
    fail_msg("vector %s not found", name);
    return NULL;
}

static void test_pae_known_answers(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_paseto_pae(&b, 0, NULL), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "\0\0\0\0\0\0\0\0", 8);
    wd_buf_reset(&b);
    wd_str_t one_empty[1] = {{"", 0}};
    assert_int_equal(wd_paseto_pae(&b, 1, one_empty), 0);
    assert_int_equal(b.len, 16);
    assert_memory_equal(b.data, "\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
    wd_buf_reset(&b);
    wd_str_t test[1] = {{"test", 4}};
    assert_int_equal(wd_paseto_pae(&b, 1, test), 0);
    assert_int_equal(b.len, 20);
    assert_memory_equal(b.data, "\x01\0\0\0\0\0\0\0\x04\0\0\0\0\0\0\0test", 20);
    wd_buf_free(&b);
}

static void test_b64url(void **state)
{
    (void)state;
    uint8_t raw[64];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof raw; n++) {
        wd_buf_t e, d;
        wd_buf_init(&e, 0);
        wd_buf_init(&d, 0);
        assert_int_equal(wd_b64url_encode(raw, n, &e), 0);
        assert_int_equal(e.len, (n * 4 + 2) / 3);
        assert_null(memchr(e.data, '=', e.len));
        assert_int_equal(wd_b64url_decode(e.data, e.len, &d), 0);
        assert_int_equal(d.len, n);
        if (n) assert_memory_equal(d.data, raw, n);
        wd_buf_free(&e);
        wd_buf_free(&d);
    }
    wd_buf_t d;
    wd_buf_init(&d, 0);
    assert_int_equal(wd_b64url_decode("-_-_", 4, &d), 0);
    assert_memory_equal(d.data, "\xfb\xff\xbf", 3);
    wd_buf_reset(&d);
    /* padding, the standard alphabet, whitespace, an impossible length, non-zero trailing bits */
    const char *bad[] = {"AA==", "AAA=", "+/+/", "ab/c", "AA AA", "A", "AAAAA", "AB", "AAB", "AA\n"};
    for (size_t i = 0; i < WD_ARRAY_LEN(bad); i++)
        assert_int_equal(wd_b64url_decode(bad[i], strlen(bad[i]), &d), WD_EINVAL);
    assert_int_equal(d.len, 0);
    /* the canonical spellings of the last two */
    assert_int_equal(wd_b64url_decode("AA", 2, &d), 0);
    assert_int_equal(wd_b64url_decode("AAA", 3, &d), 0);
    assert_int_equal(d.len, 3);
    wd_buf_free(&d);
}

typedef struct {
    int local_ok, public_ok, fail;
} counts_t;

static void check_success_vector(json_t *t, counts_t *c)
{
    const char *name = sget(t, "name"), *tok = sget(t, "token"), *payload = sget(t, "payload");
    const char *footer = sget(t, "footer"), *ia = sget(t, "implicit-assertion");
    assert_non_null(tok);
    assert_non_null(payload);
    assert_non_null(footer);
    assert_non_null(ia);
    wd_buf_t out, pl, ft;
    wd_buf_init(&out, 0);
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    char err[128] = "";
    if (strncmp(tok, "v4.local.", 9) == 0) {
        uint8_t key[32], nonce[32];
        hex(sget(t, "key"), key, 32);
        hex(sget(t, "nonce"), nonce, 32);
        assert_int_equal(wd_paseto_v4_local_encrypt(key, nonce, payload, strlen(payload), footer, strlen(footer), ia,
                                                    strlen(ia), &out),
                         0);
        if (strcmp(out.data, tok) != 0) fail_msg("%s: encrypt gave %s", name, out.data);
        int rc = wd_paseto_v4_local_decrypt(key, tok, strlen(tok), ia, strlen(ia), &pl, &ft, err, sizeof err);
        if (rc) fail_msg("%s: decrypt failed: %s", name, err);
        c->local_ok++;
    } else if (strncmp(tok, "v4.public.", 10) == 0) {
        uint8_t sk[64], pk[32];
        hex(sget(t, "secret-key"), sk, 64);
        hex(sget(t, "public-key"), pk, 32);
        assert_int_equal(wd_paseto_v4_public_sign(sk, payload, strlen(payload), footer, strlen(footer), ia,
                                                  strlen(ia), &out),
                         0);
        if (strcmp(out.data, tok) != 0) fail_msg("%s: sign gave %s", name, out.data);
        int rc = wd_paseto_v4_public_verify(pk, tok, strlen(tok), ia, strlen(ia), &pl, &ft, err, sizeof err);
        if (rc) fail_msg("%s: verify failed: %s", name, err);
        c->public_ok++;
    } else {
        fail_msg("%s: unexpected token kind", name);
    }
    assert_int_equal(pl.len, strlen(payload));
    assert_string_equal(pl.data, payload);
    assert_int_equal(ft.len, strlen(footer));
    if (ft.len) assert_string_equal(ft.data, footer);
    wd_buf_free(&out);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
}

static void check_fail_vector(json_t *t, counts_t *c)
{
    const char *name = sget(t, "name"), *tok = sget(t, "token"), *ia = sget(t, "implicit-assertion");
    assert_non_null(tok);
    if (!ia) ia = "";
    int tried = 0;
    wd_buf_t pl, ft;
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    char err[128];
    /* Try every operation the vector provides a key for: each must reject the token. */
    if (sget(t, "key")) {
        uint8_t key[32];
        hex(sget(t, "key"), key, 32);
        err[0] = '\0';
        int rc = wd_paseto_v4_local_decrypt(key, tok, strlen(tok), ia, strlen(ia), &pl, &ft, err, sizeof err);
        if (rc == 0) fail_msg("%s: local decrypt accepted a must-fail token", name);
        assert_true(err[0] != '\0');
        tried++;
    }
    if (sget(t, "public-key")) {
        uint8_t pk[32];
        hex(sget(t, "public-key"), pk, 32);
        err[0] = '\0';
        int rc = wd_paseto_v4_public_verify(pk, tok, strlen(tok), ia, strlen(ia), &pl, &ft, err, sizeof err);
        if (rc == 0) fail_msg("%s: public verify accepted a must-fail token", name);
        assert_true(err[0] != '\0');
        tried++;
    }
    assert_true(tried > 0);
    assert_int_equal(pl.len, 0);
    assert_int_equal(ft.len, 0);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
    c->fail++;
}

static void test_all_vectors(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    counts_t c = {0, 0, 0};
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(root, "tests"), i, t)
    {
        json_t *ef = json_object_get(t, "expect-fail");
        assert_true(json_is_boolean(ef));
        if (json_is_true(ef))
            check_fail_vector(t, &c);
        else
            check_success_vector(t, &c);
    }
    /* the file holds 9 local, 3 public and 5 must-fail vectors; none may be silently skipped */
    assert_int_equal(c.local_ok, 9);
    assert_int_equal(c.public_ok, 3);
    assert_int_equal(c.fail, 5);
    assert_int_equal((size_t)(c.local_ok + c.public_ok + c.fail), json_array_size(json_object_get(root, "tests")));
    json_decref(root);
}

typedef int (*open_fn)(const void *key, const char *tok, size_t tlen, const char *ia, size_t ilen, wd_buf_t *pl,
                       wd_buf_t *ft, char *err, size_t errlen);

static int open_local(const void *key, const char *tok, size_t tlen, const char *ia, size_t ilen, wd_buf_t *pl,
                      wd_buf_t *ft, char *err, size_t errlen)
{
    return wd_paseto_v4_local_decrypt(key, tok, tlen, ia, ilen, pl, ft, err, errlen);
}

static int open_public(const void *key, const char *tok, size_t tlen, const char *ia, size_t ilen, wd_buf_t *pl,
                       wd_buf_t *ft, char *err, size_t errlen)
{
    return wd_paseto_v4_public_verify(key, tok, tlen, ia, ilen, pl, ft, err, errlen);
}

/* Every single-byte change, every truncation and any extension of a valid token must be rejected. */
static void tamper_all(open_fn fn, const void *key, const char *tok, const char *ia)
{
    size_t n = strlen(tok);
    char *m = malloc(n + 2);
    assert_non_null(m);
    wd_buf_t pl, ft;
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    char err[128];
    assert_int_equal(fn(key, tok, n, ia, strlen(ia), &pl, &ft, err, sizeof err), 0);
    static const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(m, tok, n);
            m[i] = (char)(m[i] ^ masks[k]);
            wd_buf_reset(&pl);
            if (fn(key, m, n, ia, strlen(ia), &pl, &ft, err, sizeof err) == 0)
                fail_msg("byte %zu ^ 0x%02x accepted", i, masks[k]);
        }
    }
    for (size_t len = 0; len < n; len++)
        if (fn(key, tok, len, ia, strlen(ia), &pl, &ft, err, sizeof err) == 0) fail_msg("prefix of %zu accepted", len);
    const char extra[] = {'A', '.', '=', '\0', ' '};
    for (size_t k = 0; k < sizeof extra; k++) {
        memcpy(m, tok, n);
        m[n] = extra[k];
        if (fn(key, m, n + 1, ia, strlen(ia), &pl, &ft, err, sizeof err) == 0) fail_msg("extension 0x%02x accepted",
                                                                                        extra[k]);
    }
    free(m);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
}

static void test_tamper_local(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    uint8_t key[32];
    /* with footer and implicit assertion (4-E-9) and without either (4-E-1) */
    const char *names[] = {"4-E-9", "4-E-1"};
    for (size_t i = 0; i < 2; i++) {
        json_t *t = find_vector(root, names[i]);
        hex(sget(t, "key"), key, 32);
        tamper_all(open_local, key, sget(t, "token"), sget(t, "implicit-assertion"));
    }
    json_decref(root);
}

static void test_tamper_public(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    uint8_t pk[32];
    const char *names[] = {"4-S-3", "4-S-1"};
    for (size_t i = 0; i < 2; i++) {
        json_t *t = find_vector(root, names[i]);
        hex(sget(t, "public-key"), pk, 32);
        tamper_all(open_public, pk, sget(t, "token"), sget(t, "implicit-assertion"));
    }
    json_decref(root);
}

static void test_local_roundtrip_and_wrong_inputs(void **state)
{
    (void)state;
    uint8_t key[32], key2[32];
    randombytes_buf(key, sizeof key);
    memcpy(key2, key, sizeof key);
    key2[31] ^= 1;
    const char *msg = "{\"sub\":\"u:42\",\"exp\":\"2030-01-01T00:00:00Z\"}";
    const char *foot = "{\"kid\":\"k1\"}";
    const char *ia = "warden:gw1";
    wd_buf_t a, b, pl, ft;
    wd_buf_init(&a, 0);
    wd_buf_init(&b, 0);
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    assert_int_equal(wd_paseto_v4_local_encrypt(key, NULL, msg, strlen(msg), foot, strlen(foot), ia, strlen(ia), &a), 0);
    assert_int_equal(wd_paseto_v4_local_encrypt(key, NULL, msg, strlen(msg), foot, strlen(foot), ia, strlen(ia), &b), 0);
    assert_int_equal(a.len, strlen(a.data));
    assert_string_not_equal(a.data, b.data); /* random nonce */
    assert_null(strstr(a.data, "u:42"));
    char err[128];
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, ia, strlen(ia), &pl, &ft, err, sizeof err), 0);
    assert_string_equal(pl.data, msg);
    assert_string_equal(ft.data, foot);
    /* footer output is optional */
    wd_buf_reset(&pl);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, ia, strlen(ia), &pl, NULL, err, sizeof err), 0);
    wd_buf_reset(&pl);
    wd_buf_reset(&ft);
    assert_int_equal(wd_paseto_v4_local_decrypt(key2, a.data, a.len, ia, strlen(ia), &pl, &ft, err, sizeof err),
                     WD_EINVAL);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, "warden:gw2", 10, &pl, &ft, err, sizeof err),
                     WD_EINVAL);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, NULL, 0, &pl, &ft, err, sizeof err), WD_EINVAL);
    assert_int_equal(pl.len, 0);
    assert_int_equal(ft.len, 0);
    /* the unverified footer is readable without a key */
    assert_int_equal(wd_paseto_footer(a.data, a.len, &ft), 0);
    assert_string_equal(ft.data, foot);
    /* empty message and no footer */
    wd_buf_reset(&a);
    wd_buf_reset(&pl);
    wd_buf_reset(&ft);
    assert_int_equal(wd_paseto_v4_local_encrypt(key, NULL, NULL, 0, NULL, 0, NULL, 0, &a), 0);
    assert_null(strchr(a.data + 9, '.'));
    assert_int_equal(wd_paseto_footer(a.data, a.len, &ft), WD_ENOTFOUND);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, NULL, 0, &pl, &ft, err, sizeof err), 0);
    assert_int_equal(pl.len, 0);
    assert_int_equal(ft.len, 0);
    /* a trailing '.' (empty footer) is a second spelling and is rejected */
    wd_buf_append(&a, ".", 1);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, a.data, a.len, NULL, 0, &pl, &ft, err, sizeof err), WD_EINVAL);
    wd_buf_free(&a);
    wd_buf_free(&b);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
}

static void test_public_roundtrip_and_wrong_inputs(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], pk2[32], sk2[64];
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    const char *msg = "{\"sub\":\"k:abc\"}", *foot = "{\"kid\":\"2\"}";
    wd_buf_t tok, pl, ft;
    wd_buf_init(&tok, 0);
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    assert_int_equal(wd_paseto_v4_public_sign(sk, msg, strlen(msg), foot, strlen(foot), "ia", 2, &tok), 0);
    char err[128];
    assert_int_equal(wd_paseto_v4_public_verify(pk, tok.data, tok.len, "ia", 2, &pl, &ft, err, sizeof err), 0);
    assert_string_equal(pl.data, msg);
    assert_string_equal(ft.data, foot);
    wd_buf_reset(&pl);
    wd_buf_reset(&ft);
    assert_int_equal(wd_paseto_v4_public_verify(pk2, tok.data, tok.len, "ia", 2, &pl, &ft, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_paseto_v4_public_verify(pk, tok.data, tok.len, "ib", 2, &pl, &ft, err, sizeof err), WD_EINVAL);
    assert_int_equal(wd_paseto_v4_public_verify(pk, tok.data, tok.len, NULL, 0, &pl, &ft, err, sizeof err), WD_EINVAL);
    assert_int_equal(pl.len, 0);
    wd_buf_free(&tok);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
}

/* A token's purpose and version are part of what is authenticated: the same body under another header
 * must never verify, and a local token must never reach the public verifier or vice versa. */
static void test_wrong_header(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    json_t *lt = find_vector(root, "4-E-9"), *pt = find_vector(root, "4-S-3");
    uint8_t key[32], pk[32];
    hex(sget(lt, "key"), key, 32);
    hex(sget(pt, "public-key"), pk, 32);
    const char *ltok = sget(lt, "token"), *ptok = sget(pt, "token");
    const char *lia = sget(lt, "implicit-assertion"), *pia = sget(pt, "implicit-assertion");
    wd_buf_t pl, ft, m;
    wd_buf_init(&pl, 0);
    wd_buf_init(&ft, 0);
    wd_buf_init(&m, 0);
    char err[128];
    /* cross-purpose */
    assert_int_equal(wd_paseto_v4_public_verify(pk, ltok, strlen(ltok), lia, strlen(lia), &pl, &ft, err, sizeof err),
                     WD_EINVAL);
    assert_non_null(strstr(err, "v4.public."));
    assert_int_equal(wd_paseto_v4_local_decrypt(key, ptok, strlen(ptok), pia, strlen(pia), &pl, &ft, err, sizeof err),
                     WD_EINVAL);
    /* other versions, case changes, missing separator: body kept, header swapped */
    const char *lhdrs[] = {"v3.local.", "v2.local.", "V4.local.", "v4.LOCAL.", "v4.local", "v4local.", "v4.public.", ""};
    const char *lbody = ltok + 9;
    for (size_t i = 0; i < WD_ARRAY_LEN(lhdrs); i++) {
        wd_buf_reset(&m);
        wd_buf_append_str(&m, lhdrs[i]);
        wd_buf_append_str(&m, lbody);
        assert_int_equal(wd_paseto_v4_local_decrypt(key, m.data, m.len, lia, strlen(lia), &pl, &ft, err, sizeof err),
                         WD_EINVAL);
    }
    const char *phdrs[] = {"v3.public.", "v4.local.", "V4.public.", "v4.public", ""};
    const char *pbody = ptok + 10;
    for (size_t i = 0; i < WD_ARRAY_LEN(phdrs); i++) {
        wd_buf_reset(&m);
        wd_buf_append_str(&m, phdrs[i]);
        wd_buf_append_str(&m, pbody);
        assert_int_equal(wd_paseto_v4_public_verify(pk, m.data, m.len, pia, strlen(pia), &pl, &ft, err, sizeof err),
                         WD_EINVAL);
    }
    assert_int_equal(pl.len, 0);
    /* footer() accepts either v4 purpose but nothing else */
    assert_int_equal(wd_paseto_footer(ptok, strlen(ptok), &ft), 0);
    assert_string_equal(ft.data, sget(pt, "footer"));
    wd_buf_reset(&ft);
    assert_int_equal(wd_paseto_footer("v3.local.AAAA.eyJ9", 18, &ft), WD_EINVAL);
    assert_int_equal(wd_paseto_footer("v4.local.AAAA.e", 15, &ft), WD_EINVAL);
    assert_int_equal(ft.len, 0);
    wd_buf_free(&pl);
    wd_buf_free(&ft);
    wd_buf_free(&m);
    json_decref(root);
}

static void test_limits(void **state)
{
    (void)state;
    uint8_t key[32] = {0};
    size_t n = WD_PASETO_MAX_TOKEN + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memcpy(big, "v4.local.", 9);
    memset(big + 9, 'A', n - 9);
    wd_buf_t pl;
    wd_buf_init(&pl, 0);
    char err[64];
    assert_int_equal(wd_paseto_v4_local_decrypt(key, big, n, NULL, 0, &pl, NULL, err, sizeof err), WD_E2BIG);
    /* a body shorter than nonce + tag */
    assert_int_equal(wd_paseto_v4_local_decrypt(key, "v4.local.AAAA", 13, NULL, 0, &pl, NULL, err, sizeof err),
                     WD_EINVAL);
    assert_int_equal(wd_paseto_v4_public_verify(key, "v4.public.AAAA", 14, NULL, 0, &pl, NULL, err, sizeof err),
                     WD_EINVAL);
    /* producers refuse to mint a token the consumers would refuse; the largest accepted one round-trips */
    /* unpadded base64 of b bytes is ceil(4b/3) characters; the body is nonce + message + tag */
    size_t maxm = 0;
    while (9 + (4 * (maxm + 1 + 64) + 2) / 3 <= WD_PASETO_MAX_TOKEN) maxm++;
    memset(big, 'm', n);
    wd_buf_t tok;
    wd_buf_init(&tok, 0);
    assert_int_equal(wd_paseto_v4_local_encrypt(key, NULL, big, maxm + 1, NULL, 0, NULL, 0, &tok), WD_E2BIG);
    assert_int_equal(tok.len, 0);
    assert_int_equal(wd_paseto_v4_local_encrypt(key, NULL, big, maxm, NULL, 0, NULL, 0, &tok), 0);
    assert_true(tok.len <= WD_PASETO_MAX_TOKEN);
    assert_int_equal(wd_paseto_v4_local_decrypt(key, tok.data, tok.len, NULL, 0, &pl, NULL, err, sizeof err), 0);
    assert_int_equal(pl.len, maxm);
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    wd_buf_reset(&tok);
    assert_int_equal(wd_paseto_v4_public_sign(sk, big, 10, big, WD_PASETO_MAX_TOKEN, NULL, 0, &tok), WD_E2BIG);
    assert_int_equal(tok.len, 0);
    free(big);
    wd_buf_free(&pl);
    wd_buf_free(&tok);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pae_known_answers),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_all_vectors),
        cmocka_unit_test(test_tamper_local),
        cmocka_unit_test(test_tamper_public),
        cmocka_unit_test(test_local_roundtrip_and_wrong_inputs),
        cmocka_unit_test(test_public_roundtrip_and_wrong_inputs),
        cmocka_unit_test(test_wrong_header),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

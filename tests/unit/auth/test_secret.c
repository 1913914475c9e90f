/* Master-key helpers: KDF separation, sealing round trip / tamper / wrong AD / wrong key, argon2id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/secret.h"

static void test_kdf(void **state)
{
    (void)state;
    uint8_t master[32], a[32], b[32], c[32], d[32];
    for (int i = 0; i < 32; i++) master[i] = (uint8_t)(i * 7);
    assert_int_equal(wd_kdf(master, "wd-totp_", 1, a), 0);
    assert_int_equal(wd_kdf(master, "wd-totp_", 1, b), 0);
    assert_memory_equal(a, b, 32); /* deterministic */
    assert_int_equal(wd_kdf(master, "wd-totp_", 2, c), 0);
    assert_memory_not_equal(a, c, 32); /* id separates */
    assert_int_equal(wd_kdf(master, "wd-apik_", 1, c), 0);
    assert_memory_not_equal(a, c, 32); /* context separates */
    master[0] ^= 1;
    assert_int_equal(wd_kdf(master, "wd-totp_", 1, c), 0);
    assert_memory_not_equal(a, c, 32);
    master[0] ^= 1;
    /* it is exactly libsodium's KDF */
    crypto_kdf_derive_from_key(d, 32, 1, "wd-totp_", master);
    assert_memory_equal(a, d, 32);
    assert_memory_not_equal(a, master, 32);
}

static void test_seal_roundtrip(void **state)
{
    (void)state;
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    const char *plain = "JBSWY3DPEHPK3PXP-totp-seed";
    size_t n = strlen(plain);
    wd_buf_t s1, s2, out;
    wd_buf_init(&s1, 0);
    wd_buf_init(&s2, 0);
    wd_buf_init(&out, 0);
    assert_int_equal(wd_seal(key, plain, n, "totp:user:42", &s1), 0);
    assert_int_equal(s1.len, n + WD_SEAL_OVERHEAD);
    assert_null(memmem(s1.data, s1.len, plain, n));
    assert_int_equal(wd_seal(key, plain, n, "totp:user:42", &s2), 0);
    assert_memory_not_equal(s1.data, s2.data, s1.len); /* random nonce */
    assert_int_equal(wd_unseal(key, s1.data, s1.len, "totp:user:42", &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, plain, n);
    /* appends */
    assert_int_equal(wd_unseal(key, s2.data, s2.len, "totp:user:42", &out), 0);
    assert_int_equal(out.len, 2 * n);
    /* empty plaintext and NULL AD */
    wd_buf_reset(&s2);
    wd_buf_reset(&out);
    assert_int_equal(wd_seal(key, NULL, 0, NULL, &s2), 0);
    assert_int_equal(s2.len, WD_SEAL_OVERHEAD);
    assert_int_equal(wd_unseal(key, s2.data, s2.len, NULL, &out), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(wd_unseal(key, s2.data, s2.len, "", &out), 0); /* NULL AD == empty AD */
    assert_int_equal(wd_unseal(key, s2.data, s2.len, "x", &out), WD_EINVAL);
    wd_buf_free(&s1);
    wd_buf_free(&s2);
    wd_buf_free(&out);
}

static void test_seal_tamper(void **state)
{
    (void)state;
    uint8_t key[32], key2[32];
    randombytes_buf(key, sizeof key);
    memcpy(key2, key, 32);
    key2[5] ^= 0x40;
    const char *plain = "upstream-credential-sk-123";
    wd_buf_t s, out;
    wd_buf_init(&s, 0);
    wd_buf_init(&out, 0);
    assert_int_equal(wd_seal(key, plain, strlen(plain), "totp:user:42", &s), 0);
    /* every bit of nonce, ciphertext and tag is authenticated */
    for (size_t i = 0; i < s.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            s.data[i] ^= (char)(1 << bit);
            if (wd_unseal(key, s.data, s.len, "totp:user:42", &out) != WD_EINVAL) fail_msg("bit %d of byte %zu", bit, i);
            s.data[i] ^= (char)(1 << bit);
        }
    }
    /* a blob moved to another row, another key, truncation, extension */
    assert_int_equal(wd_unseal(key, s.data, s.len, "totp:user:43", &out), WD_EINVAL);
    assert_int_equal(wd_unseal(key, s.data, s.len, "totp:user:4", &out), WD_EINVAL);
    assert_int_equal(wd_unseal(key, s.data, s.len, NULL, &out), WD_EINVAL);
    assert_int_equal(wd_unseal(key2, s.data, s.len, "totp:user:42", &out), WD_EINVAL);
    for (size_t len = 0; len < s.len; len++)
        assert_int_equal(wd_unseal(key, s.data, len, "totp:user:42", &out), WD_EINVAL);
    wd_buf_append(&s, "", 1);
    assert_int_equal(wd_unseal(key, s.data, s.len, "totp:user:42", &out), WD_EINVAL);
    assert_int_equal(out.len, 0);
    /* unchanged blob still opens */
    assert_int_equal(wd_unseal(key, s.data, s.len - 1, "totp:user:42", &out), 0);
    assert_int_equal(out.len, strlen(plain));
    wd_buf_free(&s);
    wd_buf_free(&out);
}

static void test_password(void **state)
{
    (void)state;
    char h1[128], h2[128];
    const char *pw = "correct horse battery staple";
    assert_int_equal(wd_password_hash(pw, strlen(pw), h1), 0);
    const char *pfx = "$argon2id$v=19$m=19456,t=2,p=1$";
    assert_memory_equal(h1, pfx, strlen(pfx));
    assert_null(strstr(h1, pw));
    assert_int_equal(wd_password_hash(pw, strlen(pw), h2), 0);
    assert_string_not_equal(h1, h2); /* random salt */
    assert_int_equal(wd_password_verify(h1, pw, strlen(pw)), 0);
    assert_int_equal(wd_password_verify(h2, pw, strlen(pw)), 0);
    assert_int_equal(wd_password_verify(h1, "correct horse battery stapl", strlen(pw) - 1), WD_EINVAL);
    assert_int_equal(wd_password_verify(h1, "Correct horse battery staple", strlen(pw)), WD_EINVAL);
    assert_int_equal(wd_password_verify(h1, "", 0), WD_EINVAL);
    /* length is explicit: a password with an embedded NUL is not its prefix */
    char withnul[] = "abc\0def";
    assert_int_equal(wd_password_hash(withnul, 7, h2), 0);
    assert_int_equal(wd_password_verify(h2, withnul, 7), 0);
    assert_int_equal(wd_password_verify(h2, "abc", 3), WD_EINVAL);
    assert_false(wd_password_needs_rehash(h1));
    /* tampered or foreign hash strings */
    char t[128];
    memcpy(t, h1, sizeof t);
    t[strlen(t) - 2] = t[strlen(t) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(wd_password_verify(t, pw, strlen(pw)), WD_EINVAL);
    assert_int_equal(wd_password_verify("", pw, strlen(pw)), WD_EINVAL);
    assert_int_equal(wd_password_verify("$2b$10$abcdefghijklmnopqrstuv", pw, strlen(pw)), WD_EINVAL);
    assert_true(wd_password_needs_rehash(""));
    assert_true(wd_password_needs_rehash("$2b$10$abcdefghijklmnopqrstuv"));
    /* an unterminated 128-byte buffer is rejected, not over-read */
    memset(t, 'a', sizeof t);
    assert_int_equal(wd_password_verify(t, pw, strlen(pw)), WD_EINVAL);
    assert_true(wd_password_needs_rehash(t));
    /* weaker parameters (and argon2i) call for a rehash; argon2i is not accepted as ours */
    char weak[crypto_pwhash_STRBYTES];
    assert_int_equal(crypto_pwhash_str_alg(weak, pw, strlen(pw), 1, 8 * 1024 * 1024, crypto_pwhash_ALG_ARGON2ID13), 0);
    assert_true(wd_password_needs_rehash(weak));
    assert_int_equal(wd_password_verify(weak, pw, strlen(pw)), 0);
    assert_int_equal(crypto_pwhash_str_alg(weak, pw, strlen(pw), 3, WD_PWHASH_MEMLIMIT, crypto_pwhash_ALG_ARGON2I13), 0);
    assert_true(wd_password_needs_rehash(weak));
    assert_int_equal(wd_password_verify(weak, pw, strlen(pw)), WD_EINVAL);
    /* DoS bound */
    char *big = calloc(1, WD_PASSWORD_MAX + 1);
    assert_non_null(big);
    assert_int_equal(wd_password_hash(big, WD_PASSWORD_MAX + 1, h2), WD_E2BIG);
    assert_int_equal(wd_password_verify(h1, big, WD_PASSWORD_MAX + 1), WD_EINVAL);
    free(big);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kdf),
        cmocka_unit_test(test_seal_roundtrip),
        cmocka_unit_test(test_seal_tamper),
        cmocka_unit_test(test_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

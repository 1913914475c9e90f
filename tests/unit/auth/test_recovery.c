/* MFA recovery codes: format, entropy alphabet, uniqueness, and the canonical hash that enrolment and
 * login must agree on (case, dashes, spaces, Crockford look-alikes), plus malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/recovery.h"

static const char ALPHA[] = "0123456789abcdefghjkmnpqrstvwxyz";

static void test_generate_format(void **state)
{
    (void)state;
    char seen[200][WD_RECOVERY_TEXT_LEN + 1];
    int used[32] = {0};
    for (int n = 0; n < 200; n++) {
        char *c = seen[n];
        assert_int_equal(wd_recovery_generate(c), 0);
        assert_int_equal(strlen(c), WD_RECOVERY_TEXT_LEN);
        for (int i = 0; i < WD_RECOVERY_TEXT_LEN; i++) {
            if (i == 4 || i == 9) {
                assert_int_equal(c[i], '-');
                continue;
            }
            const char *p = strchr(ALPHA, c[i]);
            assert_non_null(p);
            used[p - ALPHA]++;
        }
        for (int m = 0; m < n; m++) assert_string_not_equal(seen[m], c);
    }
    /* 2400 characters drawn: every one of the 32 symbols shows up (a stuck bit would lose half) */
    for (int i = 0; i < 32; i++) assert_true(used[i] > 0);
    assert_null(strchr(ALPHA, 'i'));
    assert_null(strchr(ALPHA, 'l'));
    assert_null(strchr(ALPHA, 'o'));
    assert_null(strchr(ALPHA, 'u'));
}

static void test_hash_canonical(void **state)
{
    (void)state;
    uint8_t key[32], a[32], b[32];
    randombytes_buf(key, sizeof key);
    assert_int_equal(wd_recovery_hash(key, "ab01-cdef-gh23", 14, a), 0);
    const char *same[] = {"AB01-CDEF-GH23", "ab01cdefgh23", " ab01 cdef gh23 ", "aBOi-cdef-gh23", "ab0L-CDEF-GH23",
                          "abo1-cdef-gh23"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        assert_int_equal(wd_recovery_hash(key, same[i], strlen(same[i]), b), 0);
        assert_memory_equal(a, b, 32);
    }
    /* keyed: another key, another hash; another code, another hash */
    uint8_t key2[32];
    memcpy(key2, key, 32);
    key2[0] ^= 1;
    assert_int_equal(wd_recovery_hash(key2, "ab01-cdef-gh23", 14, b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(wd_recovery_hash(key, "ab01-cdef-gh24", 14, b), 0);
    assert_memory_not_equal(a, b, 32);
    /* exactly BLAKE2b-256 keyed over the 12 canonical characters */
    uint8_t ref[32];
    crypto_generichash(ref, 32, (const uint8_t *)"ab01cdefgh23", 12, key, 32);
    assert_memory_equal(a, ref, 32);
}

static void test_hash_rejects_malformed(void **state)
{
    (void)state;
    uint8_t key[32] = {1}, out[32];
    const char *bad[] = {"", "ab01-cdef-gh2", "ab01-cdef-gh234", "ab01-cdef-gh2u", "ab01-cdef-gh2!", "ab01_cdef_gh23",
                         "ab01-cdef-gh2\xc3\xa9", "------------------------------------"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(wd_recovery_hash(key, bad[i], strlen(bad[i]), out), WD_EINVAL);
    /* not NUL-terminated: only len bytes count */
    assert_int_equal(wd_recovery_hash(key, "ab01-cdef-gh23XYZ", 14, out), 0);
    assert_int_equal(wd_recovery_hash(key, NULL, 0, out), WD_EINVAL);
    assert_int_equal(wd_recovery_hash(NULL, "ab01-cdef-gh23", 14, out), WD_EINVAL);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_format),
        cmocka_unit_test(test_hash_canonical),
        cmocka_unit_test(test_hash_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

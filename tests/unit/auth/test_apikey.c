/* API keys: format, round trip, uniqueness, checksum catches every single-character change, CRC32 KAT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/apikey.h"

static bool is_b62(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

static void test_crc32_kat(void **state)
{
    (void)state;
    assert_int_equal(wd_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(wd_crc32(0, "", 0), 0);
    assert_int_equal(wd_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
    /* incremental == one shot */
    uint32_t c = wd_crc32(0, "12345", 5);
    assert_int_equal(wd_crc32(c, "6789", 4), 0xCBF43926u);
}

static void test_generate_parse(void **state)
{
    (void)state;
    char id[WD_APIKEY_ID_LEN + 1], key[WD_APIKEY_MAX];
    assert_int_equal(wd_apikey_generate(id, key), 0);
    assert_int_equal(strlen(key), WD_APIKEY_LEN);
    assert_int_equal(WD_APIKEY_LEN, 66);
    assert_int_equal(strlen(id), WD_APIKEY_ID_LEN);
    assert_memory_equal(key, "wdk_", 4);
    assert_memory_equal(key + 4, id, WD_APIKEY_ID_LEN);
    assert_int_equal(key[16], '_');
    for (size_t i = 4; i < WD_APIKEY_LEN; i++)
        if (i != 16) assert_true(is_b62(key[i]));
    wd_str_t pid, psec;
    assert_int_equal(wd_apikey_parse(key, strlen(key), &pid, &psec), 0);
    assert_int_equal(pid.len, WD_APIKEY_ID_LEN);
    assert_memory_equal(pid.p, id, WD_APIKEY_ID_LEN);
    assert_ptr_equal(pid.p, key + 4);
    assert_int_equal(psec.len, WD_APIKEY_SECRET_LEN);
    assert_ptr_equal(psec.p, key + 17);
    assert_int_equal(wd_apikey_parse(key, strlen(key), NULL, NULL), 0);
    /* parse must not read past len: the key inside a larger buffer */
    char buf[WD_APIKEY_MAX + 8];
    memcpy(buf, key, WD_APIKEY_LEN);
    memcpy(buf + WD_APIKEY_LEN, "garbage", 8);
    assert_int_equal(wd_apikey_parse(buf, WD_APIKEY_LEN, NULL, NULL), 0);
    sodium_memzero(key, sizeof key);
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, WD_APIKEY_ID_LEN); }

static void test_unique_and_distribution(void **state)
{
    (void)state;
    enum { N = 10000 };
    char(*ids)[WD_APIKEY_ID_LEN + 1] = calloc(N, sizeof *ids);
    char(*secrets)[WD_APIKEY_SECRET_LEN] = calloc(N, sizeof *secrets);
    assert_non_null(ids);
    assert_non_null(secrets);
    unsigned first[62] = {0};
    for (int i = 0; i < N; i++) {
        char key[WD_APIKEY_MAX];
        assert_int_equal(wd_apikey_generate(ids[i], key), 0);
        assert_int_equal(wd_apikey_parse(key, strlen(key), NULL, NULL), 0);
        memcpy(secrets[i], key + 17, WD_APIKEY_SECRET_LEN);
        const char *a = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        first[strchr(a, key[17 + 20]) - a]++; /* a middle secret digit is uniform over base62 */
    }
    qsort(ids, N, sizeof *ids, cmp_id);
    for (int i = 1; i < N; i++) assert_true(memcmp(ids[i - 1], ids[i], WD_APIKEY_ID_LEN) != 0);
    qsort(secrets, N, sizeof *secrets, cmp_id);
    for (int i = 1; i < N; i++) assert_true(memcmp(secrets[i - 1], secrets[i], WD_APIKEY_SECRET_LEN) != 0);
    /* ~161 expected per digit; a broken encoder (e.g. always the same digit) is far outside this */
    for (int d = 0; d < 62; d++) assert_true(first[d] > 60 && first[d] < 300);
    free(ids);
    free(secrets);
}

static void test_every_mutation_fails(void **state)
{
    (void)state;
    char id[WD_APIKEY_ID_LEN + 1], key[WD_APIKEY_MAX], m[WD_APIKEY_MAX];
    for (int round = 0; round < 3; round++) {
        assert_int_equal(wd_apikey_generate(id, key), 0);
        for (size_t i = 0; i < WD_APIKEY_LEN; i++) {
            for (int c = 0; c < 256; c++) {
                if ((char)c == key[i]) continue;
                memcpy(m, key, WD_APIKEY_LEN + 1);
                m[i] = (char)c;
                if (wd_apikey_parse(m, WD_APIKEY_LEN, NULL, NULL) != WD_EINVAL)
                    fail_msg("mutation at %zu to 0x%02x accepted", i, c);
            }
        }
        /* swapping two adjacent different characters also fails */
        for (size_t i = 17; i + 1 < WD_APIKEY_LEN; i++) {
            if (key[i] == key[i + 1]) continue;
            memcpy(m, key, WD_APIKEY_LEN + 1);
            m[i] = key[i + 1];
            m[i + 1] = key[i];
            assert_int_equal(wd_apikey_parse(m, WD_APIKEY_LEN, NULL, NULL), WD_EINVAL);
        }
    }
}

static void test_wrong_prefix_and_length(void **state)
{
    (void)state;
    char id[WD_APIKEY_ID_LEN + 1], key[WD_APIKEY_MAX], m[WD_APIKEY_MAX + 2];
    assert_int_equal(wd_apikey_generate(id, key), 0);
    /* wrong prefixes (same length) */
    const char *prefixes[] = {"wdx_", "WDK_", "sk-_", "wdk-"};
    for (size_t i = 0; i < WD_ARRAY_LEN(prefixes); i++) {
        memcpy(m, key, WD_APIKEY_LEN + 1);
        memcpy(m, prefixes[i], 4);
        assert_int_equal(wd_apikey_parse(m, WD_APIKEY_LEN, NULL, NULL), WD_EINVAL);
    }
    /* every other length */
    for (size_t len = 0; len <= WD_APIKEY_LEN + 1; len++) {
        if (len == WD_APIKEY_LEN) continue;
        memcpy(m, key, WD_APIKEY_LEN + 1);
        m[WD_APIKEY_LEN] = 'A';
        assert_int_equal(wd_apikey_parse(m, len, NULL, NULL), WD_EINVAL);
    }
    assert_int_equal(wd_apikey_parse(NULL, 0, NULL, NULL), WD_EINVAL);
    /* the separator replaced by a base62 character */
    wd_str_t pid = {NULL, 0};
    memcpy(m, key, WD_APIKEY_LEN + 1);
    m[16] = 'a';
    assert_int_equal(wd_apikey_parse(m, WD_APIKEY_LEN, &pid, NULL), WD_EINVAL);
    assert_null(pid.p); /* outputs untouched on failure */
    assert_int_equal(wd_apikey_split(m, WD_APIKEY_LEN, &pid), WD_EINVAL);
    assert_null(pid.p);
    /* a wrong checksum: split (the verification path's framing) accepts it, parse does not, and
     * parse leaves its outputs untouched */
    memcpy(m, key, WD_APIKEY_LEN + 1);
    m[WD_APIKEY_LEN - 1] = m[WD_APIKEY_LEN - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(wd_apikey_parse(m, WD_APIKEY_LEN, &pid, NULL), WD_EINVAL);
    assert_null(pid.p);
    assert_int_equal(wd_apikey_split(m, WD_APIKEY_LEN, &pid), WD_OK);
    assert_ptr_equal(pid.p, m + 4);
    assert_int_equal(pid.len, WD_APIKEY_ID_LEN);
    for (size_t len = 0; len <= WD_APIKEY_LEN + 1; len++)
        if (len != WD_APIKEY_LEN) assert_int_equal(wd_apikey_split(m, len, NULL), WD_EINVAL);
}

static void test_hash(void **state)
{
    (void)state;
    uint8_t hk[32], hk2[32], a[32], b[32], c[32];
    for (int i = 0; i < 32; i++) hk[i] = (uint8_t)i, hk2[i] = (uint8_t)(i + 1);
    const char *k1 = "wdk_000000000000_abc", *k2 = "wdk_000000000000_abd";
    wd_apikey_hash(hk, k1, strlen(k1), a);
    wd_apikey_hash(hk, k1, strlen(k1), b);
    assert_memory_equal(a, b, 32);
    wd_apikey_hash(hk, k2, strlen(k2), c);
    assert_memory_not_equal(a, c, 32);
    wd_apikey_hash(hk2, k1, strlen(k1), c);
    assert_memory_not_equal(a, c, 32);
    /* it is keyed BLAKE2b-256 exactly */
    crypto_generichash(c, 32, (const uint8_t *)k1, strlen(k1), hk, 32);
    assert_memory_equal(a, c, 32);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_kat),           cmocka_unit_test(test_generate_parse),
        cmocka_unit_test(test_unique_and_distribution), cmocka_unit_test(test_every_mutation_fails),
        cmocka_unit_test(test_wrong_prefix_and_length), cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

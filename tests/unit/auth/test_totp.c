/* TOTP/HOTP: RFC 6238 and RFC 4226 vectors (read in place), window, replay, input validation; base32;
 * otpauth URI; terminal QR rendering checked module by module against libqrencode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>
#include <jansson.h>
#include <qrencode.h>
#include <sodium.h>

#include "auth/totp.h"

#define TOTP_JSON "../shared/data/conformance/totp-rfc6238.json"

static json_t *load_vectors(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(TOTP_JSON, 0, &jerr);
    if (!root) fail_msg("cannot load %s: %s (run from the project root)", TOTP_JSON, jerr.text);
    return root;
}

static const char *ALG_NAMES[] = {"SHA1", "SHA256", "SHA512"};
static const wd_totp_alg_t ALGS[] = {WD_TOTP_SHA1, WD_TOTP_SHA256, WD_TOTP_SHA512};

static void test_rfc6238_vectors(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    json_t *seeds = json_object_get(root, "seeds_ascii");
    unsigned digits = (unsigned)json_integer_value(json_object_get(root, "digits"));
    unsigned period = (unsigned)json_integer_value(json_object_get(root, "period"));
    assert_int_equal(digits, 8);
    assert_int_equal(period, 30);
    json_t *rows = json_object_get(root, "totp");
    assert_true(json_array_size(rows) >= 6);
    size_t i, checked = 0;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        uint64_t t = (uint64_t)json_integer_value(json_object_get(row, "time"));
        uint64_t counter = strtoull(json_string_value(json_object_get(row, "counter_hex")), NULL, 16);
        assert_int_equal(counter, t / period);
        for (size_t a = 0; a < 3; a++) {
            const char *seed = json_string_value(json_object_get(seeds, ALG_NAMES[a]));
            const char *want = json_string_value(json_object_get(row, ALG_NAMES[a]));
            assert_non_null(seed);
            assert_non_null(want);
            char code[16];
            assert_int_equal(wd_totp_code((const uint8_t *)seed, strlen(seed), t, period, digits, ALGS[a], code), 0);
            if (strcmp(code, want) != 0) fail_msg("t=%llu %s: got %s want %s", (unsigned long long)t, ALG_NAMES[a], code, want);
            /* HOTP with the same hash at the TOTP counter is the same code */
            assert_int_equal(wd_hotp_code((const uint8_t *)seed, strlen(seed), counter, digits, ALGS[a], code), 0);
            assert_string_equal(code, want);
            uint64_t step = 0;
            assert_int_equal(wd_totp_verify((const uint8_t *)seed, strlen(seed), want, 8, t, period, digits, ALGS[a], 0,
                                            0, &step),
                             0);
            assert_int_equal(step, counter);
            checked++;
        }
    }
    assert_int_equal(checked, 3 * json_array_size(rows));
    /* the file's note: the 20-byte seed with SHA-256 is NOT the table value, so the hash really is used */
    char code[16];
    const char *s20 = json_string_value(json_object_get(seeds, "SHA1"));
    assert_int_equal(wd_totp_code((const uint8_t *)s20, 20, 59, 30, 8, WD_TOTP_SHA256, code), 0);
    assert_string_equal(code, "32247374");
    json_decref(root);
}

static void test_rfc4226_hotp(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    json_t *h = json_object_get(root, "hotp_rfc4226");
    const char *secret = json_string_value(json_object_get(h, "secret_ascii"));
    unsigned digits = (unsigned)json_integer_value(json_object_get(h, "digits"));
    json_t *codes = json_object_get(h, "codes_by_counter");
    assert_int_equal(json_array_size(codes), 10);
    size_t i;
    json_t *c;
    json_array_foreach(codes, i, c)
    {
        char code[16];
        assert_int_equal(wd_hotp_code((const uint8_t *)secret, strlen(secret), i, digits, WD_TOTP_SHA1, code), 0);
        assert_string_equal(code, json_string_value(c));
        assert_int_equal(strlen(code), 6);
    }
    json_decref(root);
}

static const uint8_t KEY[] = "12345678901234567890";
#define KEYLEN 20

static void code_at_step(uint64_t step, char out[16])
{
    assert_int_equal(wd_hotp_code(KEY, KEYLEN, step, 6, WD_TOTP_SHA1, out), 0);
}

static void test_window(void **state)
{
    (void)state;
    const uint64_t now = 1700000015; /* mid-step */
    const uint64_t s = now / 30;
    char code[16];
    uint64_t m = 0;
    for (int d = -3; d <= 3; d++) {
        code_at_step(s + (uint64_t)(int64_t)d, code);
        int rc = wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, &m);
        if (d >= -1 && d <= 1) {
            assert_int_equal(rc, 0);
            assert_int_equal(m, s + (uint64_t)(int64_t)d);
        } else {
            assert_int_equal(rc, WD_EINVAL);
        }
        /* window 0 accepts only the current step */
        rc = wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 0, 0, &m);
        assert_int_equal(rc, d == 0 ? 0 : WD_EINVAL);
    }
    /* the code generated for "now" by wd_totp_code is accepted */
    assert_int_equal(wd_totp_code(KEY, KEYLEN, now, 30, 6, WD_TOTP_SHA1, code), 0);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), 0);
    /* wrong key */
    uint8_t other[KEYLEN];
    memcpy(other, KEY, KEYLEN);
    other[0] ^= 1;
    assert_int_equal(wd_totp_verify(other, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), WD_EINVAL);
    /* same key, another hash */
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA256, 1, 0, NULL), WD_EINVAL);
}

static void test_replay(void **state)
{
    (void)state;
    const uint64_t now = 1700000015, s = now / 30;
    char code[16];
    uint64_t m = 0;
    code_at_step(s, code);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, &m), 0);
    assert_int_equal(m, s);
    /* the same code again, even a few seconds later, is a replay */
    m = 12345;
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now + 5, 30, 6, WD_TOTP_SHA1, 1, s, &m), WD_EEXIST);
    assert_int_equal(m, 12345); /* untouched on failure */
    /* an older (still in-window) code after a newer one was used is a replay too */
    code_at_step(s - 1, code);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, s, &m), WD_EEXIST);
    /* the next step's code is fresh */
    code_at_step(s + 1, code);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, s, &m), 0);
    assert_int_equal(m, s + 1);
    /* a wrong code stays a plain failure, not a replay */
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, "000000", 6, now, 30, 6, WD_TOTP_SHA1, 1, s, &m), WD_EINVAL);
}

static void test_verify_input_validation(void **state)
{
    (void)state;
    const uint64_t now = 1700000015;
    char code[16];
    code_at_step(now / 30, code);
    char buf[16];
    const char *bad[] = {"", "12345", "1234567", "12345a", " 12345", "12345\n", "+12345", "-12345", "１23456"};
    for (size_t i = 0; i < WD_ARRAY_LEN(bad); i++)
        assert_int_equal(wd_totp_verify(KEY, KEYLEN, bad[i], strlen(bad[i]), now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL),
                         WD_EINVAL);
    /* the valid code with one character replaced by a non-digit, and not NUL-terminated at codelen */
    for (size_t i = 0; i < 6; i++) {
        memcpy(buf, code, 7);
        buf[i] = 'x';
        assert_int_equal(wd_totp_verify(KEY, KEYLEN, buf, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), WD_EINVAL);
    }
    memcpy(buf, code, 6);
    buf[6] = '9';
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, buf, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), 0);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, buf, 7, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), WD_EINVAL);
    /* parameters */
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 0, 6, WD_TOTP_SHA1, 1, 0, NULL), WD_EINVAL);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, WD_TOTP_SHA1, WD_TOTP_MAX_WINDOW + 1, 0, NULL),
                     WD_EINVAL);
    assert_int_equal(wd_totp_verify(KEY, 0, code, 6, now, 30, 6, WD_TOTP_SHA1, 1, 0, NULL), WD_EINVAL);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, now, 30, 6, (wd_totp_alg_t)7, 1, 0, NULL), WD_EINVAL);
    assert_int_equal(wd_totp_code(KEY, KEYLEN, now, 30, 5, WD_TOTP_SHA1, buf), WD_EINVAL);
    assert_int_equal(wd_totp_code(KEY, KEYLEN, now, 30, 9, WD_TOTP_SHA1, buf), WD_EINVAL);
    assert_int_equal(wd_totp_code(KEY, KEYLEN, now, 0, 6, WD_TOTP_SHA1, buf), WD_EINVAL);
    assert_int_equal(wd_hotp_code(KEY, KEYLEN, 1, 6, (wd_totp_alg_t)3, buf), WD_EINVAL);
    /* 7 digits work */
    assert_int_equal(wd_totp_code(KEY, KEYLEN, 59, 30, 7, WD_TOTP_SHA1, buf), 0);
    assert_string_equal(buf, "4287082");
    /* near the epoch the window does not wrap around */
    code_at_step(1, code);
    assert_int_equal(wd_totp_verify(KEY, KEYLEN, code, 6, 0, 30, 6, WD_TOTP_SHA1, 2, 0, NULL), 0);
}

static void test_base32(void **state)
{
    (void)state;
    static const char *rfc[][2] = {{"", ""},          {"f", "MY"},          {"fo", "MZXQ"},       {"foo", "MZXW6"},
                                   {"foob", "MZXW6YQ"}, {"fooba", "MZXW6YTB"}, {"foobar", "MZXW6YTBOI"}};
    static const char *padded[] = {"", "MY======", "MZXQ====", "MZXW6===", "MZXW6YQ=", "MZXW6YTB", "MZXW6YTBOI======"};
    wd_buf_t b;
    wd_buf_init(&b, 0);
    for (size_t i = 0; i < WD_ARRAY_LEN(rfc); i++) {
        wd_buf_reset(&b);
        assert_int_equal(wd_base32_encode((const uint8_t *)rfc[i][0], strlen(rfc[i][0]), &b), 0);
        assert_int_equal(b.len, strlen(rfc[i][1]));
        if (b.len) assert_string_equal(b.data, rfc[i][1]);
        wd_buf_reset(&b);
        assert_int_equal(wd_base32_decode(rfc[i][1], strlen(rfc[i][1]), &b), 0);
        assert_int_equal(b.len, strlen(rfc[i][0]));
        if (b.len) assert_memory_equal(b.data, rfc[i][0], b.len);
        wd_buf_reset(&b);
        assert_int_equal(wd_base32_decode(padded[i], strlen(padded[i]), &b), 0);
        assert_int_equal(b.len, strlen(rfc[i][0]));
        if (b.len) assert_memory_equal(b.data, rfc[i][0], b.len);
    }
    /* case-insensitive */
    wd_buf_reset(&b);
    assert_int_equal(wd_base32_decode("mzXw6ytBoi", 10, &b), 0);
    assert_memory_equal(b.data, "foobar", 6);
    /* round trips of every length 0..80 with random bytes */
    for (size_t n = 0; n <= 80; n++) {
        uint8_t raw[80];
        randombytes_buf(raw, n);
        wd_buf_t e, d;
        wd_buf_init(&e, 0);
        wd_buf_init(&d, 0);
        assert_int_equal(wd_base32_encode(raw, n, &e), 0);
        assert_int_equal(e.len, (n * 8 + 4) / 5);
        assert_int_equal(wd_base32_decode(e.data, e.len, &d), 0);
        assert_int_equal(d.len, n);
        if (n) assert_memory_equal(d.data, raw, n);
        wd_buf_free(&e);
        wd_buf_free(&d);
    }
    /* invalid: characters outside the alphabet, bad lengths, bad padding, non-canonical trailing bits */
    const char *bad[] = {"M",        "MZX",      "MZXW6Y",   "M0XQ",       "M1XQ",     "M8XQ", "M9XQ",
                         "MY=",      "MY=====",  "MY=======", "MZXW6YTB========", "========", "MY==M===",
                         "MY======M", "MZ",       "MZXR",     "MZ XW",      "MZ-W",     "MY\0A", "MÿXQ"};
    wd_buf_reset(&b);
    for (size_t i = 0; i < WD_ARRAY_LEN(bad); i++) {
        size_t len = i == 18 ? 4 : strlen(bad[i]);
        if (wd_base32_decode(bad[i], len, &b) != WD_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(b.len, 0);
    wd_buf_free(&b);
}

static void test_uri(void **state)
{
    (void)state;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_totp_uri("Warden Corp", "alice@example.com", KEY, KEYLEN, 6, 30, WD_TOTP_SHA1, &b), 0);
    assert_string_equal(b.data, "otpauth://totp/Warden%20Corp:alice%40example.com"
                                "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Warden%20Corp"
                                "&algorithm=SHA1&digits=6&period=30");
    assert_int_equal(b.len, strlen(b.data));
    wd_buf_reset(&b);
    assert_int_equal(wd_totp_uri("ACME/é&?=#", "bob+1", KEY, KEYLEN, 8, 60, WD_TOTP_SHA512, &b), 0);
    assert_string_equal(b.data, "otpauth://totp/ACME%2F%C3%A9%26%3F%3D%23:bob%2B1"
                                "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%2F%C3%A9%26%3F%3D%23"
                                "&algorithm=SHA512&digits=8&period=60");
    wd_buf_reset(&b);
    assert_int_equal(wd_totp_uri(NULL, "carol", KEY, KEYLEN, 6, 30, WD_TOTP_SHA256, &b), 0);
    assert_string_equal(b.data,
                        "otpauth://totp/carol?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA256&digits=6&period=30");
    wd_buf_reset(&b);
    /* colons would make the label ambiguous */
    assert_int_equal(wd_totp_uri("Acme:Inc", "dave", KEY, KEYLEN, 6, 30, WD_TOTP_SHA1, &b), WD_EINVAL);
    assert_int_equal(wd_totp_uri("Acme", "da:ve", KEY, KEYLEN, 6, 30, WD_TOTP_SHA1, &b), WD_EINVAL);
    assert_int_equal(wd_totp_uri("Acme", "", KEY, KEYLEN, 6, 30, WD_TOTP_SHA1, &b), WD_EINVAL);
    assert_int_equal(wd_totp_uri("Acme", "dave", KEY, 0, 6, 30, WD_TOTP_SHA1, &b), WD_EINVAL);
    assert_int_equal(wd_totp_uri("Acme", "dave", KEY, KEYLEN, 4, 30, WD_TOTP_SHA1, &b), WD_EINVAL);
    assert_int_equal(b.len, 0);
    wd_buf_free(&b);
}

/* Decodes one UTF-8 half-block cell into its (top, bottom) ink bits. */
static size_t cell(const char *p, bool *top, bool *bot)
{
    if (*p == ' ') {
        *top = *bot = false;
        return 1;
    }
    if (memcmp(p, "\u2588", 3) == 0) *top = *bot = true;
    else if (memcmp(p, "\u2580", 3) == 0) *top = true, *bot = false;
    else if (memcmp(p, "\u2584", 3) == 0) *top = false, *bot = true;
    else fail_msg("unexpected byte 0x%02x in QR output", (unsigned char)*p);
    return 3;
}

/* Parses the rendering back into modules and compares them with libqrencode's own matrix. */
static void check_qr(const char *text, bool dark_on_light)
{
    wd_buf_t b;
    wd_buf_init(&b, 0);
    unsigned W = 0;
    assert_int_equal(wd_qr_terminal_ex(text, dark_on_light, &b, &W), 0);
    QRcode *qr = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    assert_non_null(qr);
    unsigned w = (unsigned)qr->width;
    assert_int_equal(W, w + 4);
    assert_int_equal(strlen(b.data), b.len);
    const char *p = b.data, *end = b.data + b.len;
    unsigned lines = 0;
    for (unsigned y = 0; y < W; y += 2, lines++) {
        for (unsigned x = 0; x < W; x++) {
            assert_true(p < end);
            bool ink[2] = {false, false};
            p += cell(p, &ink[0], &ink[1]);
            for (unsigned k = 0; k < 2; k++) {
                unsigned yy = y + k;
                if (yy >= W) {
                    assert_false(ink[k]);
                    continue;
                }
                bool in = x >= 2 && x < w + 2 && yy >= 2 && yy < w + 2;
                bool dark = in && (qr->data[(yy - 2) * w + (x - 2)] & 1);
                if (ink[k] != (dark_on_light ? dark : !dark)) fail_msg("module (%u,%u) wrong", x, yy);
            }
        }
        assert_true(p < end);
        assert_int_equal(*p, '\n');
        p++;
    }
    assert_true(p == end);
    assert_int_equal(lines, (W + 1) / 2);
    QRcode_free(qr);
    wd_buf_free(&b);
}

static void test_qr(void **state)
{
    (void)state;
    /* a short string is a version-1 symbol: 21 modules + 2 * 2 quiet = 25 columns, 13 lines */
    wd_buf_t b;
    wd_buf_init(&b, 0);
    assert_int_equal(wd_qr_terminal("hello", &b), 0);
    assert_true(b.len > 0);
    size_t nl = 0;
    for (size_t i = 0; i < b.len; i++) nl += b.data[i] == '\n';
    assert_int_equal(nl, 13);
    /* light-on-dark: the top quiet rows are solid ink, the first symbol row starts with the finder */
    const char *l0 = b.data;
    for (int x = 0; x < 25; x++) assert_memory_equal(l0 + 3 * x, "\u2588", 3);
    assert_int_equal(l0[75], '\n');
    wd_buf_free(&b);
    check_qr("hello", false);
    check_qr("hello", true);
    check_qr("otpauth://totp/Warden%20Corp:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Warden"
             "%20Corp&algorithm=SHA1&digits=6&period=30",
             false);
    /* too long for any QR version */
    char *big = malloc(4001);
    assert_non_null(big);
    memset(big, 'x', 4000);
    big[4000] = '\0';
    wd_buf_init(&b, 0);
    assert_int_equal(wd_qr_terminal(big, &b), WD_EINVAL);
    assert_int_equal(b.len, 0);
    free(big);
    wd_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6238_vectors), cmocka_unit_test(test_rfc4226_hotp),
        cmocka_unit_test(test_window),          cmocka_unit_test(test_replay),
        cmocka_unit_test(test_verify_input_validation), cmocka_unit_test(test_base32),
        cmocka_unit_test(test_uri),             cmocka_unit_test(test_qr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

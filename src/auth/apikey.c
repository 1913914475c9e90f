/* API key format: generation from the kernel RNG, fixed-width base62 fields, CRC32 checksum. */
#include "auth/apikey.h"

#include <pthread.h>

#include <sodium.h>

static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#define PREFIX_LEN (sizeof WD_APIKEY_PREFIX - 1)
#define ID_OFF PREFIX_LEN
#define SEP_OFF (ID_OFF + WD_APIKEY_ID_LEN)
#define SECRET_OFF (SEP_OFF + 1)
#define CK_OFF (SECRET_OFF + WD_APIKEY_SECRET_LEN)
#define ID_BYTES 9 /* 72 random bits drawn, the top one dropped: 71 bits < 62^12 */
#define SECRET_BYTES 32

_Static_assert(CK_OFF + WD_APIKEY_CHECKSUM_LEN == WD_APIKEY_LEN, "key layout");
_Static_assert(WD_APIKEY_LEN < WD_APIKEY_MAX, "key fits with its NUL");

static uint32_t g_crc_table[256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        g_crc_table[i] = c;
    }
}

uint32_t wd_crc32(uint32_t crc, const void *p, size_t len)
{
    pthread_once(&g_crc_once, crc_init);
    const uint8_t *s = p;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = g_crc_table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Writes the big-endian number in[0..n) as exactly `width` base62 digits (most significant first).
 * The caller guarantees the value fits; in is destroyed (divided down to zero). */
static void to_base62(uint8_t *in, size_t n, char *out, size_t width)
{
    for (size_t pos = width; pos-- > 0;) {
        unsigned rem = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned cur = rem * 256 + in[i];
            in[i] = (uint8_t)(cur / 62);
            rem = cur % 62;
        }
        out[pos] = B62[rem];
    }
}

static int b62_val(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
    if (c >= 'a' && c <= 'z') return c - 'a' + 36;
    return -1;
}

static void checksum(const char *p, char out[WD_APIKEY_CHECKSUM_LEN])
{
    uint32_t crc = wd_crc32(0, p, CK_OFF);
    uint8_t be[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    to_base62(be, sizeof be, out, WD_APIKEY_CHECKSUM_LEN);
}

int wd_apikey_generate(char id[WD_APIKEY_ID_LEN + 1], char key[WD_APIKEY_MAX])
{
    if (!id || !key) return WD_EINVAL;
    uint8_t rnd[ID_BYTES + SECRET_BYTES];
    int rc = wd_random(rnd, sizeof rnd);
    if (rc) {
        sodium_memzero(rnd, sizeof rnd);
        return rc;
    }
    rnd[0] &= 0x7f;
    memcpy(key, WD_APIKEY_PREFIX, PREFIX_LEN);
    to_base62(rnd, ID_BYTES, key + ID_OFF, WD_APIKEY_ID_LEN);
    key[SEP_OFF] = '_';
    to_base62(rnd + ID_BYTES, SECRET_BYTES, key + SECRET_OFF, WD_APIKEY_SECRET_LEN);
    checksum(key, key + CK_OFF);
    key[WD_APIKEY_LEN] = '\0';
    memcpy(id, key + ID_OFF, WD_APIKEY_ID_LEN);
    id[WD_APIKEY_ID_LEN] = '\0';
    sodium_memzero(rnd, sizeof rnd);
    return WD_OK;
}

int wd_apikey_split(const char *p, size_t len, wd_str_t *id)
{
    if (!p || len != WD_APIKEY_LEN || memcmp(p, WD_APIKEY_PREFIX, PREFIX_LEN) != 0 || p[SEP_OFF] != '_')
        return WD_EINVAL;
    if (id) *id = wd_str(p + ID_OFF, WD_APIKEY_ID_LEN);
    return WD_OK;
}

int wd_apikey_parse(const char *p, size_t len, wd_str_t *id, wd_str_t *secret)
{
    wd_str_t pid;
    if (wd_apikey_split(p, len, &pid) != WD_OK) return WD_EINVAL;
    for (size_t i = ID_OFF; i < WD_APIKEY_LEN; i++)
        if (i != SEP_OFF && b62_val((unsigned char)p[i]) < 0) return WD_EINVAL;
    /* The checksum is public, so a plain compare is fine; fixed-width encoding makes it canonical. */
    char ck[WD_APIKEY_CHECKSUM_LEN];
    checksum(p, ck);
    if (memcmp(ck, p + CK_OFF, sizeof ck) != 0) return WD_EINVAL;
    if (id) *id = pid;
    if (secret) *secret = wd_str(p + SECRET_OFF, WD_APIKEY_SECRET_LEN);
    return WD_OK;
}

void wd_apikey_hash(const uint8_t hash_key[32], const char *key, size_t len, uint8_t out[32])
{
    crypto_generichash(out, 32, (const uint8_t *)key, len, hash_key, 32);
}

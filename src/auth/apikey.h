/* apikey: the format of warden API keys, wdk_<id>_<secret><checksum>.
 *   id       12 base62 chars (71 random bits): public handle for lookup, revocation and logs
 *   secret   43 base62 chars, a 256-bit random number at fixed width
 *   checksum 6 base62 chars, CRC32 (zlib/IEEE polynomial) of everything before it, at fixed width
 * The checksum lets secret scanners (and we, before touching storage) reject typos and random strings
 * offline without any secret; it is not a MAC. Keys are stored only as wd_apikey_hash (keyed BLAKE2b). */
#ifndef WD_AUTH_APIKEY_H
#define WD_AUTH_APIKEY_H

#include "core/core.h"

#define WD_APIKEY_PREFIX "wdk_"
#define WD_APIKEY_ID_LEN 12
#define WD_APIKEY_SECRET_LEN 43
#define WD_APIKEY_CHECKSUM_LEN 6
/* wdk_ + id + _ + secret + checksum = 66 characters */
#define WD_APIKEY_LEN (4 + WD_APIKEY_ID_LEN + 1 + WD_APIKEY_SECRET_LEN + WD_APIKEY_CHECKSUM_LEN)
#define WD_APIKEY_MAX 80

/* Writes a NUL-terminated id and key. Returns WD_EIO if the system RNG fails. The caller must
 * sodium_memzero(key) once it has been shown/hashed. */
int wd_apikey_generate(char id[WD_APIKEY_ID_LEN + 1], char key[WD_APIKEY_MAX]);

/* Validates prefix, length, charset and checksum; on success id and secret (either may be NULL) point
 * into p. WD_EINVAL otherwise. Cheap and secret-free, so it may run before any rate limit or lookup. */
int wd_apikey_parse(const char *p, size_t len, wd_str_t *id, wd_str_t *secret);

/* Prefix, length and separator only: for verification, where the keyed hash over the whole string
 * decides (a stored hash covers a well-formed key, so a key malformed anywhere cannot match it). */
int wd_apikey_split(const char *p, size_t len, wd_str_t *id);

/* BLAKE2b-256 keyed with hash_key over the whole key string: the value stored and looked up. */
void wd_apikey_hash(const uint8_t hash_key[32], const char *key, size_t len, uint8_t out[32]);

/* CRC-32 (IEEE 802.3 / zlib, reflected 0xEDB88320, init and xorout 0xFFFFFFFF). crc is the running value
 * (start with 0) so data can be fed in pieces. */
uint32_t wd_crc32(uint32_t crc, const void *p, size_t len);

#endif

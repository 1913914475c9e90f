/* guard validators: the checks behind the `validator:` field of a rule (checksums, calendars, number
 * plans, gazetteers). Each takes a candidate span as (p, len), never assumes NUL termination, and
 * answers "is this plausibly a real X". The table that names them is in validators.c; the functions
 * below are exported for unit tests and for other modules that want one check directly.
 *
 * Data-backed validators (person_name) read files from a data directory set once at start with
 * wd_validators_set_data_dir(), normally the rules directory; the file is loaded lazily, once, on
 * first use (or eagerly with wd_validators_load_data()). */
#ifndef WD_GUARD_VALIDATORS_H
#define WD_GUARD_VALIDATORS_H

#include "guard/guard.h"

/* Where data files live (rules dir; the gazetteer is <dir>/data/names.tsv). Copies dir. A later call
 * with another directory makes the next lookup load from there; tables already handed out stay
 * valid until wd_validators_cleanup(). */
void wd_validators_set_data_dir(const char *dir);
/* Loads the data files now (so a missing or malformed file is an error at start, not a silent miss
 * later). Returns WD_OK, or an error with a message naming the file. */
int wd_validators_load_data(char *err, size_t errlen);
/* Frees every loaded table (process exit, tests). No validator may be running. */
void wd_validators_cleanup(void);
size_t wd_validator_count(void);

/* Individual checks. Separators (space, '-', '.') are accepted where the format allows them. */
bool wd_email_ok(const char *p, size_t len);
bool wd_luhn_ok(const char *p, size_t len);        /* digits with optional ' '/'-' separators */
bool wd_card_ok(const char *p, size_t len);        /* Luhn + issuer prefix and length */
const char *wd_card_issuer(const char *p, size_t len); /* "visa", ... or NULL */
bool wd_iban_ok(const char *p, size_t len);
bool wd_us_ssn_ok(const char *p, size_t len);
bool wd_us_itin_ok(const char *p, size_t len);
bool wd_uk_nino_ok(const char *p, size_t len);
bool wd_nhs_number_ok(const char *p, size_t len);
bool wd_aba_routing_ok(const char *p, size_t len);
bool wd_npi_ok(const char *p, size_t len);        /* US National Provider Identifier */
bool wd_dea_number_ok(const char *p, size_t len); /* US DEA registration number */
bool wd_ipv4_ok(const char *p, size_t len);
bool wd_ipv6_ok(const char *p, size_t len);
bool wd_mac_ok(const char *p, size_t len);
bool wd_date_of_birth_ok(const char *p, size_t len);
bool wd_btc_base58check_ok(const char *p, size_t len);
bool wd_bech32_ok(const char *p, size_t len);
/* 1 = EIP-55 checksum verified (mixed case), 2 = single-case (no checksum to verify), 0 = invalid. */
int wd_eth_address_check(const char *p, size_t len);
double wd_shannon_entropy(const char *p, size_t len); /* bits per byte */
bool wd_high_entropy_secret_ok(const char *p, size_t len);
bool wd_jwt_ok(const char *p, size_t len);
bool wd_url_credentials_ok(const char *p, size_t len);
bool wd_phone_ok(const char *p, size_t len);
bool wd_person_name_ok(const char *p, size_t len, float *score);
/* One capitalised word as a person's name. KNOWN: a given name or surname of the gazetteer that is no
 * English word, no place and no stop word (person_word). NAMED: after "my name is": any gazetteer name,
 * or else a word that is none of those (person_named). LIKE: a word that is none of those, in the
 * gazetteer or not (person_like). */
typedef enum { WD_PERSON_KNOWN, WD_PERSON_NAMED, WD_PERSON_LIKE } wd_person_word_t;
bool wd_person_word_ok(const char *p, size_t len, wd_person_word_t how);
/* Keccak-256 (the pre-standard padding Ethereum uses; OpenSSL 3.0 has only SHA3). */
void wd_keccak256(const void *data, size_t len, unsigned char out[32]);

#endif

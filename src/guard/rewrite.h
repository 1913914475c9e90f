/* guard/rewrite: acting on findings. Replaces finding spans in a text according to the action the
 * caller's profile chooses (mask, redact, keyed hash, pseudonymize), keeps the pseudonym mapping of
 * one exchange in a vault (memory only, zeroed when freed) and restores pseudonyms in answers,
 * including answers that arrive in pieces (a placeholder split across SSE events). Output is always
 * valid UTF-8: spans are widened to character boundaries, never split. */
#ifndef WD_GUARD_REWRITE_H
#define WD_GUARD_REWRITE_H

#include "guard/guard.h"

/* WD_ACT_HASH writes [TYPE:hex] with this many bytes of the keyed BLAKE2b of the value (16 hex digits) */
#define WD_REWRITE_HASH_BYTES 8

typedef struct {
    char *type;
    char *value;
    size_t vlen;
    char ph[56]; /* "<EMAIL_1>": "<", a type of at most 32 bytes, "_", up to 20 digits, ">", NUL */
    size_t phlen;
} wd_vault_entry_t;

typedef struct {
    wd_vault_entry_t *e;
    size_t n, cap;
    size_t max_entries; /* 0 = 4096 */
} wd_vault_t;

void wd_vault_init(wd_vault_t *v);
void wd_vault_free(wd_vault_t *v);
/* The placeholder for (type, value): the same value gets the same placeholder within the vault. NULL
 * when the vault is full. */
const wd_vault_entry_t *wd_vault_put(wd_vault_t *v, const char *type, const char *value, size_t len);
/* Replaces every placeholder of the vault found in text with its original value. */
int wd_vault_restore(const wd_vault_t *v, const char *text, size_t len, wd_buf_t *out);
/* Longest placeholder (bytes): a streamed answer must hold back at most this minus one. */
size_t wd_vault_max_placeholder(const wd_vault_t *v);

/* Streaming restore: feed pieces of the answer's text in order; output is emitted as soon as it
 * cannot be the beginning of a placeholder. */
typedef struct {
    const wd_vault_t *vault;
    wd_buf_t held; /* a suffix that may still become a placeholder */
} wd_restorer_t;

void wd_restorer_init(wd_restorer_t *r, const wd_vault_t *v);
void wd_restorer_free(wd_restorer_t *r);
int wd_restorer_feed(wd_restorer_t *r, const char *p, size_t len, wd_buf_t *out);
int wd_restorer_flush(wd_restorer_t *r, wd_buf_t *out);

/* Values a profile lets pass whatever the action for their type (guard_profiles.NAME.allow: a company's
 * own support address, a published hotline, a documented test card number). A finding is allowed when
 * its text equals an entry compared this way: a value of digits and the separators numbers are written
 * with (space, - . / ( ) +) by its digits alone, so "(212) 555-0100" = "212.555.0100"; any other value
 * with ASCII letters in either case. An entry "*@example.com" allows every address of that domain
 * (exactly: not its subdomains), a finding with one '@' and nothing an address cannot hold (no space,
 * ':', '/' or '\'), so a URL carrying credentials for that host is not allowed by it. Built once (config
 * load), then read-only and shared by threads. */
#define WD_ALLOW_MAX_LEN 256 /* longest entry, and longest finding that can be allowed */
typedef struct wd_guard_allow wd_guard_allow_t;
wd_guard_allow_t *wd_guard_allow_new(void);
/* Adds one entry: WD_OK, WD_EEXIST (an earlier entry compares equal), WD_EINVAL (no letter or digit, or
 * longer than WD_ALLOW_MAX_LEN) or WD_ENOMEM. */
int wd_guard_allow_add(wd_guard_allow_t *a, const char *p, size_t len);
size_t wd_guard_allow_count(const wd_guard_allow_t *a);
bool wd_guard_allow_has(const wd_guard_allow_t *a, const char *p, size_t len);
void wd_guard_allow_free(wd_guard_allow_t *a);

/* What to do with each finding: the caller's profile decides by rule (its type and class). */
typedef wd_action_t (*wd_action_fn)(void *ud, const wd_rule_t *rule);

typedef struct {
    wd_action_fn action;
    void *ud;
    const uint8_t *hash_key; /* 32 bytes, for WD_ACT_HASH (NULL: hash falls back to redact) */
    wd_vault_t *vault;       /* for WD_ACT_PSEUDO (NULL: pseudonymize falls back to redact) */
    const wd_guard_allow_t *allow; /* findings whose text is listed pass (WD_ACT_ALLOW); NULL: none */
} wd_rewrite_opts_t;

/* Per-type counts of what was done, for events and the x-warden-guard header. */
typedef struct {
    struct {
        uint16_t rule;
        wd_action_t action;
        uint32_t count;
    } v[64];
    size_t n;
    int blocked_rule; /* index of the first rule whose action is block, or -1 */
} wd_guard_tally_t;

void wd_guard_tally_init(wd_guard_tally_t *t);
/* Counts one finding of rule acted on with a (a block also sets blocked_rule). */
void wd_guard_tally_add(wd_guard_tally_t *t, uint16_t rule, wd_action_t a);

/* Applies the actions to the findings of text and appends the result to out. Findings must be sorted
 * and non-overlapping (as wd_guard_scan returns them). A block finding is tallied (blocked_rule) and
 * its span left unchanged; the caller refuses the request. */
int wd_guard_rewrite(const wd_guard_db_t *db, const char *text, size_t len, const wd_findings_t *f,
                     const wd_rewrite_opts_t *o, wd_guard_tally_t *tally, wd_buf_t *out);

#endif

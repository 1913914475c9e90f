/* auth/keyops: creating and rotating API keys, shared by the CLI and the admin API so both follow
 * one path: generate (wd_apikey_generate), keep only the keyed hash, store. The key text is
 * returned once and never stored. */
#ifndef WD_AUTH_KEYOPS_H
#define WD_AUTH_KEYOPS_H

#include "auth/apikey.h"
#include "store/store.h"

/* rec carries name, roles, models, ips, created_at, expires_at; id and hash are filled in here. */
int wd_keyops_create(wd_store_t *s, wd_key_rec_t *rec, char key_out[WD_APIKEY_MAX], char *err, size_t errlen);

/* A new key with old's name, roles, scope and absolute expiry (rotation never extends a key's life);
 * old stays valid until now + grace_s. nk receives the new record (its strings borrow old's). */
int wd_keyops_rotate(wd_store_t *s, const wd_key_rec_t *old, int64_t now, int64_t grace_s, wd_key_rec_t *nk,
                     char key_out[WD_APIKEY_MAX], char *err, size_t errlen);

#endif

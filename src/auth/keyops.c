#include "auth/keyops.h"

#include <sodium.h>

int wd_keyops_create(wd_store_t *s, wd_key_rec_t *rec, char key_out[WD_APIKEY_MAX], char *err, size_t errlen)
{
    if (wd_apikey_generate(rec->id, key_out) != WD_OK)
        return wd_errf(err, errlen, WD_EIO, "the system random number generator failed");
    wd_apikey_hash(s->key_hash_key, key_out, strlen(key_out), rec->hash);
    int rc = wd_store_key_insert(s, rec, err, errlen);
    if (rc != WD_OK) sodium_memzero(key_out, WD_APIKEY_MAX);
    return rc;
}

int wd_keyops_rotate(wd_store_t *s, const wd_key_rec_t *old, int64_t now, int64_t grace_s, wd_key_rec_t *nk,
                     char key_out[WD_APIKEY_MAX], char *err, size_t errlen)
{
    memset(nk, 0, sizeof *nk);
    if (wd_apikey_generate(nk->id, key_out) != WD_OK)
        return wd_errf(err, errlen, WD_EIO, "the system random number generator failed");
    memcpy(nk->name, old->name, sizeof nk->name);
    wd_apikey_hash(s->key_hash_key, key_out, strlen(key_out), nk->hash);
    nk->roles = old->roles;
    nk->models = old->models;
    nk->ips = old->ips;
    nk->limits = old->limits;
    nk->created_at = now;
    nk->expires_at = old->expires_at;
    int rc = wd_store_key_rotate(s, old->id, nk, now + grace_s, err, errlen);
    if (rc != WD_OK) sodium_memzero(key_out, WD_APIKEY_MAX);
    return rc;
}

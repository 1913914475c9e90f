/* certgen: throwaway X.509 material for unit tests, made with OpenSSL's API at test time (a
 * certificate committed to the tree would expire and break the tests one day). One CA, and leaf
 * certificates it signs with chosen subjectAltNames and validity. Header-only: tests are single files. */
#ifndef WD_TEST_CERTGEN_H
#define WD_TEST_CERTGEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct {
    EVP_PKEY *key;
    X509 *cert;
} certgen_t;

static void certgen_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext || !X509_add_ext(cert, ext, -1)) abort();
    X509_EXTENSION_free(ext);
}

/* A P-256 key and a certificate for cn, signed by ca (self-signed CA when ca is NULL), valid from
 * not_before_s to not_after_s seconds relative to now. san: "DNS:localhost,IP:127.0.0.1" or NULL. */
static certgen_t certgen_make(const char *cn, const certgen_t *ca, const char *san, long not_before_s,
                              long not_after_s)
{
    certgen_t c;
    c.key = EVP_EC_gen("P-256");
    c.cert = X509_new();
    if (!c.key || !c.cert) abort();
    X509_set_version(c.cert, 2);
    static long serial = 1;
    ASN1_INTEGER_set(X509_get_serialNumber(c.cert), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c.cert), not_before_s);
    X509_gmtime_adj(X509_getm_notAfter(c.cert), not_after_s);
    X509_set_pubkey(c.cert, c.key);
    X509_NAME *name = X509_get_subject_name(c.cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *issuer = ca ? ca->cert : c.cert;
    X509_set_issuer_name(c.cert, X509_get_subject_name(issuer));
    if (!ca) {
        certgen_ext(c.cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
        certgen_ext(c.cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        certgen_ext(c.cert, issuer, NID_basic_constraints, "CA:FALSE");
        certgen_ext(c.cert, issuer, NID_ext_key_usage, "serverAuth");
        if (san) certgen_ext(c.cert, issuer, NID_subject_alt_name, san);
    }
    if (!X509_sign(c.cert, ca ? ca->key : c.key, EVP_sha256())) abort();
    return c;
}

static void certgen_write(const certgen_t *c, const char *cert_path, const char *key_path)
{
    if (cert_path) {
        FILE *f = fopen(cert_path, "w");
        if (!f || !PEM_write_X509(f, c->cert)) abort();
        fclose(f);
    }
    if (key_path) {
        FILE *f = fopen(key_path, "w");
        if (!f || !PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL)) abort();
        fclose(f);
    }
}

static void certgen_free(certgen_t *c)
{
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
    c->cert = NULL;
    c->key = NULL;
}

#endif

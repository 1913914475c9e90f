/* TLS over memory BIOs (see tls.h). Contexts check their files themselves, rather than through
 * SSL_CTX_use_certificate_chain_file, so that every failure can name the file and the reason in
 * words an operator can act on ("no certificate found", "the key does not match"), and so that an
 * encrypted key fails at once instead of prompting for a passphrase on the terminal. */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define MAX_PEM_BYTES (1u << 20)

static const unsigned char alpn_h11[] = "\x08http/1.1";
static _Thread_local int bad_file;

int wd_tls_server_ctx_bad_file(void) { return bad_file; }

/* ---- files ---------------------------------------------------------------------------------------- */

/* A PEM file: a regular, non-empty file of at most MAX_PEM_BYTES. Returns a malloc'd buffer or NULL. */
static char *read_pem(const char *path, size_t *len, char *err, size_t errlen)
{
    char *buf;
    if (wd_read_file(path, MAX_PEM_BYTES, &buf, len, err, errlen) != WD_OK) return NULL;
    if (*len == 0) {
        wd_errf(err, errlen, WD_EINVAL, "%s: empty file", path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Never prompt: a key that needs a passphrase is a configuration error. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    WD_UNUSED(buf);
    WD_UNUSED(size);
    WD_UNUSED(rwflag);
    WD_UNUSED(u);
    return -1;
}

/* The most specific reason in OpenSSL's error queue (which it then clears). */
static const char *ossl_reason(char *buf, size_t len)
{
    unsigned long e, first = 0;
    while ((e = ERR_get_error()) != 0)
        if (!first) first = e;
    if (!first) return "unknown error";
    const char *r = ERR_reason_error_string(first);
    if (r) return r;
    ERR_error_string_n(first, buf, len);
    return buf;
}

static bool no_pem_start(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

/* Every certificate of a PEM bundle, in order. Returns the count (>= 1) or -1 with a message. */
static int read_certs(const char *path, const char *what, STACK_OF(X509) **out, char *err, size_t errlen)
{
    size_t len;
    char *data = read_pem(path, &len, err, errlen);
    if (!data) return -1;
    BIO *b = BIO_new_mem_buf(data, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    int rc = -1;
    char eb[256];
    if (!b || !sk) {
        wd_errf(err, errlen, WD_ENOMEM, "out of memory reading %s", path);
        goto done;
    }
    ERR_clear_error();
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
        if (!x) {
            if (no_pem_start()) { /* the normal end of the file */
                ERR_clear_error();
                break;
            }
            wd_errf(err, errlen, WD_EINVAL, "%s: invalid PEM certificate #%d: %s", path, sk_X509_num(sk) + 1,
                    ossl_reason(eb, sizeof eb));
            goto done;
        }
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            wd_errf(err, errlen, WD_ENOMEM, "out of memory reading %s", path);
            goto done;
        }
    }
    if (sk_X509_num(sk) == 0) {
        wd_errf(err, errlen, WD_EINVAL, "no %s (-----BEGIN CERTIFICATE-----) found in %s", what, path);
        goto done;
    }
    rc = sk_X509_num(sk);
    *out = sk;
    sk = NULL;
done:
    sk_X509_pop_free(sk, X509_free);
    BIO_free(b);
    OPENSSL_cleanse(data, len);
    free(data);
    return rc;
}

static EVP_PKEY *read_key(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *data = read_pem(path, &len, err, errlen);
    if (!data) return NULL;
    BIO *b = BIO_new_mem_buf(data, (int)len);
    EVP_PKEY *k = NULL;
    char eb[256];
    if (!b) {
        wd_errf(err, errlen, WD_ENOMEM, "out of memory reading %s", path);
    } else {
        ERR_clear_error();
        k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
        if (!k) {
            bool none = no_pem_start() || !memmem(data, len, "PRIVATE KEY-----", 16);
            bool encrypted = memmem(data, len, "ENCRYPTED", 9) != NULL;
            const char *why = ossl_reason(eb, sizeof eb);
            if (encrypted)
                wd_errf(err, errlen, WD_EINVAL,
                        "the private key in %s is encrypted; warden needs an unencrypted PEM key (protect the "
                        "file with permissions, e.g. chmod 600)", path);
            else if (none)
                wd_errf(err, errlen, WD_EINVAL, "no private key (-----BEGIN PRIVATE KEY-----) found in %s%s", path,
                        memmem(data, len, "-----BEGIN CERTIFICATE-----", 27) ? " (it holds a certificate)" : "");
            else
                wd_errf(err, errlen, WD_EINVAL, "%s: invalid PEM private key: %s", path, why);
        }
    }
    BIO_free(b);
    OPENSSL_cleanse(data, len); /* the key's bytes */
    free(data);
    return k;
}

static void asn1_time_text(const ASN1_TIME *t, char *out, size_t len)
{
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return;
    if (ASN1_TIME_print(b, t) > 0) {
        int n = BIO_read(b, out, (int)len - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

/* ---- contexts ------------------------------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    WD_UNUSED(ssl);
    WD_UNUSED(arg);
    /* only HTTP/1.1 is spoken; a client that offers ALPN without it (h2 only) gets a fatal
     * no_application_protocol alert rather than a connection it would misread */
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, alpn_h11, sizeof alpn_h11 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* TLS 1.2 (when allowed) only with forward secrecy and AEAD ciphers; TLS 1.3's suites are all fine. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

SSL_CTX *wd_tls_server_ctx(const char *cert_file, const char *key_file, int min_version, char *err, size_t errlen)
{
    char eb[256];
    STACK_OF(X509) *certs = NULL;
    EVP_PKEY *key = NULL;
    SSL_CTX *ctx = NULL;
    bad_file = 0;
    if (read_certs(cert_file, "certificate", &certs, err, errlen) < 0) return NULL;
    X509 *leaf = sk_X509_value(certs, 0);
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
        char when[64];
        asn1_time_text(X509_get0_notAfter(leaf), when, sizeof when);
        wd_errf(err, errlen, WD_EINVAL, "the certificate in %s expired (%s)", cert_file, when);
        goto fail;
    }
    bad_file = 1;
    if (!(key = read_key(key_file, err, errlen))) goto fail;
    bad_file = 0;
    ERR_clear_error();
    if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
        wd_errf(err, errlen, WD_ENOMEM, "cannot create a TLS context: %s", ossl_reason(eb, sizeof eb));
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, min_version) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        wd_errf(err, errlen, WD_EINVAL, "cannot configure TLS: %s", ossl_reason(eb, sizeof eb));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* resumption through stateless tickets (keyed per context, so shared by every worker); no
     * server-side session cache, whose lock every worker would contend on */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        wd_errf(err, errlen, WD_EINVAL, "cannot use the certificate in %s: %s", cert_file, ossl_reason(eb, sizeof eb));
        goto fail;
    }
    for (int i = 1; i < sk_X509_num(certs); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(certs, i)) != 1) {
            wd_errf(err, errlen, WD_EINVAL, "cannot use chain certificate #%d in %s: %s", i + 1, cert_file,
                    ossl_reason(eb, sizeof eb));
            goto fail;
        }
    }
    bad_file = 1;
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        const char *why = ossl_reason(eb, sizeof eb);
        wd_errf(err, errlen, WD_EINVAL, "the private key in %s does not match the certificate in %s (%s)", key_file,
                cert_file, why);
        goto fail;
    }
    EVP_PKEY_free(key);
    sk_X509_pop_free(certs, X509_free);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    EVP_PKEY_free(key);
    sk_X509_pop_free(certs, X509_free);
    ERR_clear_error();
    return NULL;
}

/* TLS 1.3 tickets arrive after the handshake; the connection that got one hands it to its owner
 * (the upstream pool keeps the newest for the next connection's resumption). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    wd_tls_t *t = SSL_get_app_data(ssl);
    if (!t || !t->on_session) return 0;
    return t->on_session(t->session_ud, sess) ? 1 : 0;
}

SSL_CTX *wd_tls_client_ctx(const char *ca_file, bool verify, char *err, size_t errlen)
{
    char eb[256];
    STACK_OF(X509) *cas = NULL;
    if (verify && ca_file && read_certs(ca_file, "CA certificate", &cas, err, errlen) < 0) return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        wd_errf(err, errlen, WD_ENOMEM, "cannot create a TLS context: %s", ossl_reason(eb, sizeof eb));
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
        SSL_CTX_set_alpn_protos(ctx, alpn_h11, sizeof alpn_h11 - 1) != 0 /* 0 is success here */) {
        wd_errf(err, errlen, WD_EINVAL, "cannot configure TLS: %s", ossl_reason(eb, sizeof eb));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cas) {
            X509_STORE *store = SSL_CTX_get_cert_store(ctx);
            for (int i = 0; i < sk_X509_num(cas); i++) {
                if (X509_STORE_add_cert(store, sk_X509_value(cas, i)) != 1) {
                    unsigned long e = ERR_peek_last_error();
                    if (ERR_GET_REASON(e) == X509_R_CERT_ALREADY_IN_HASH_TABLE) { /* a duplicate in the bundle */
                        ERR_clear_error();
                        continue;
                    }
                    wd_errf(err, errlen, WD_EINVAL, "cannot use CA certificate #%d in %s: %s", i + 1, ca_file,
                            ossl_reason(eb, sizeof eb));
                    goto fail;
                }
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            wd_errf(err, errlen, WD_EIO, "cannot load the system's CA certificates: %s", ossl_reason(eb, sizeof eb));
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    sk_X509_pop_free(cas, X509_free);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    sk_X509_pop_free(cas, X509_free);
    ERR_clear_error();
    return NULL;
}

/* ---- connections ---------------------------------------------------------------------------------- */

static int init_common(wd_tls_t *t, SSL_CTX *ctx)
{
    memset(t, 0, sizeof *t);
    ERR_clear_error();
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        memset(t, 0, sizeof *t);
        ERR_clear_error();
        return WD_ENOMEM;
    }
    /* an empty read BIO means "no more yet", never end of file: EOF is the socket's to report */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both from here */
    SSL_set_app_data(t->ssl, t);
    return WD_OK;
}

int wd_tls_init_server(wd_tls_t *t, SSL_CTX *ctx)
{
    int rc = init_common(t, ctx);
    if (rc) return rc;
    SSL_set_accept_state(t->ssl);
    return WD_OK;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int wd_tls_init_client(wd_tls_t *t, SSL_CTX *ctx, const char *host, bool verify_host)
{
    int rc = init_common(t, ctx);
    if (rc) return rc;
    SSL_set_connect_state(t->ssl);
    bool ip = is_ip_literal(host);
    snprintf(t->peer_name, sizeof t->peer_name, "%s", host);
    bool ok = true;
    if (!ip) ok = SSL_set_tlsext_host_name(t->ssl, host) == 1; /* RFC 6066: SNI carries DNS names only */
    if (ok && verify_host) {
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1 : SSL_set1_host(t->ssl, host) == 1;
    }
    if (!ok) {
        wd_tls_free(t);
        ERR_clear_error();
        return WD_EINVAL;
    }
    return WD_OK;
}

void wd_tls_free(wd_tls_t *t)
{
    if (t->ssl) SSL_free(t->ssl); /* frees both BIOs */
    t->ssl = NULL;
    t->rbio = t->wbio = NULL;
}

/* Records why the connection failed, in words: the verification result for certificate failures
 * (which OpenSSL's error queue only calls "certificate verify failed"), a hint for the usual
 * mistakes, and OpenSSL's reason otherwise. */
static int tls_fail(wd_tls_t *t, int sslerr)
{
    t->failed = true;
    unsigned long e, first = 0;
    while ((e = ERR_get_error()) != 0)
        if (!first) first = e;
    int lib = ERR_GET_LIB(first), reason = ERR_GET_REASON(first);
    bool client = !SSL_is_server(t->ssl);
    long vr = SSL_get_verify_result(t->ssl);
    if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK) {
        bool name = vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH;
        snprintf(t->err, sizeof t->err, "certificate verify failed: %s%s%s%s", X509_verify_cert_error_string(vr),
                 name ? " (expected '" : "", name ? t->peer_name : "", name ? "')" : "");
        return WD_EINVAL;
    }
    if (lib == ERR_LIB_SSL && (reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST)) t->http = true;
    const char *why = first ? ERR_reason_error_string(first) : NULL;
    char eb[160];
    if (!why && first) {
        ERR_error_string_n(first, eb, sizeof eb);
        why = eb;
    }
    if (!why) why = sslerr == SSL_ERROR_SYSCALL ? "connection error" : "TLS error";
    const char *hint = "";
    if (client && lib == ERR_LIB_SSL && (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG))
        hint = " (is the upstream speaking plain HTTP rather than TLS?)";
    snprintf(t->err, sizeof t->err, "%.140s%s", why, hint);
    return WD_EINVAL;
}

int wd_tls_feed(wd_tls_t *t, const char *p, size_t len)
{
    while (len) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = BIO_write(t->rbio, p, chunk);
        if (n <= 0) return WD_ENOMEM;
        p += n;
        len -= (size_t)n;
    }
    return WD_OK;
}

int wd_tls_read(wd_tls_t *t, wd_buf_t *out)
{
    if (t->failed) return WD_EINVAL;
    ERR_clear_error();
    for (;;) {
        size_t room = 16384;
        if (out->limit) {
            size_t left = out->limit > out->len ? out->limit - out->len : 0;
            if (left == 0)
                return SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->rbio) > 0 ? WD_E2BIG : WD_OK;
            room = WD_MIN(room, left);
        }
        int rc = wd_buf_reserve(out, room);
        if (rc) return rc;
        int n = SSL_read(t->ssl, out->data + out->len, (int)room);
        if (n > 0) {
            out->len += (size_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) return WD_OK;
        if (e == SSL_ERROR_ZERO_RETURN) return WD_TLS_EOF;
        return tls_fail(t, e);
    }
}

int wd_tls_handshake(wd_tls_t *t)
{
    if (t->failed) return WD_EINVAL;
    ERR_clear_error();
    int n = SSL_do_handshake(t->ssl);
    if (n == 1) return WD_OK;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ) return WD_EAGAIN;
    return tls_fail(t, e);
}

bool wd_tls_established(const wd_tls_t *t) { return t->ssl && !t->failed && SSL_is_init_finished(t->ssl); }

int wd_tls_write(wd_tls_t *t, const char *p, size_t len)
{
    if (!wd_tls_established(t)) return WD_EINVAL;
    ERR_clear_error();
    while (len) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = SSL_write(t->ssl, p, chunk);
        if (n <= 0) return tls_fail(t, SSL_get_error(t->ssl, n));
        p += n;
        len -= (size_t)n;
    }
    return WD_OK;
}

void wd_tls_close_notify(wd_tls_t *t)
{
    if (!wd_tls_established(t)) return;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: our close_notify is queued; we do not wait for the peer's */
    ERR_clear_error();
}

size_t wd_tls_pending(const wd_tls_t *t) { return t->wbio ? BIO_ctrl_pending(t->wbio) : 0; }

size_t wd_tls_take(wd_tls_t *t, char *buf, size_t cap)
{
    int n = BIO_read(t->wbio, buf, (int)WD_MIN(cap, (size_t)1 << 30));
    return n > 0 ? (size_t)n : 0;
}

bool wd_tls_got_http(const wd_tls_t *t) { return t->http; }

const char *wd_tls_version(const wd_tls_t *t) { return t->ssl ? SSL_get_version(t->ssl) : ""; }

static _Thread_local char scratch_in[WD_TLS_SCRATCH], scratch_out[WD_TLS_SCRATCH];
char *wd_tls_scratch_in(void) { return scratch_in; }
char *wd_tls_scratch_out(void) { return scratch_out; }

/* tls: TLS for warden's listeners, its upstream client and `warden sim`, with OpenSSL driven through
 * memory BIOs so that it never does I/O of its own: the owner of a connection feeds the ciphertext
 * it read from the socket in (wd_tls_feed), takes decrypted bytes out (wd_tls_read), hands plaintext
 * to encrypt (wd_tls_write) and sends whatever ciphertext is waiting (wd_tls_take) with its ordinary
 * libuv writes. Nothing blocks, and the event loop, timeouts and backpressure stay the owner's.
 *
 * Contexts (SSL_CTX) are built once per configuration snapshot, from files checked here with
 * messages a config error can quote, and are shared by every worker thread (OpenSSL's contexts are
 * thread-safe once built; each connection's SSL object holds its own reference to its context, so
 * a reload may free the old snapshot while its connections finish). */
#ifndef WD_TLS_H
#define WD_TLS_H

#include <openssl/ssl.h>

#include "core/core.h"

/* Protocol versions as OpenSSL numbers them (TLS1_2_VERSION, TLS1_3_VERSION). */
#define WD_TLS_V12 0x0303
#define WD_TLS_V13 0x0304

/* A server context for a listener: certificate chain (PEM, leaf first) and its private key (PEM,
 * unencrypted), TLS min_version..1.3, ALPN "http/1.1", stateless session tickets. Every problem —
 * unreadable file, no certificate in it, bad PEM, encrypted or mismatched key, expired certificate —
 * is reported in err naming the file. */
SSL_CTX *wd_tls_server_ctx(const char *cert_file, const char *key_file, int min_version, char *err, size_t errlen);
/* Which file the last wd_tls_server_ctx failure on this thread was about: 0 the certificate, 1 the key. */
int wd_tls_server_ctx_bad_file(void);

/* A client context for an upstream: TLS 1.2..1.3, ALPN "http/1.1". verify: peers must present a
 * certificate chaining to ca_file (PEM bundle) or, when ca_file is NULL, to the system store. */
SSL_CTX *wd_tls_client_ctx(const char *ca_file, bool verify, char *err, size_t errlen);

/* One TLS connection. */
typedef struct wd_tls {
    SSL *ssl;
    BIO *rbio; /* network -> OpenSSL */
    BIO *wbio; /* OpenSSL -> network */
    bool failed;
    bool http;     /* the failure: a plaintext HTTP request reached a TLS port */
    /* Client side: called with each session the server issues (TLS 1.3 tickets arrive after the
     * handshake); returning true keeps the reference (the callee frees it with SSL_SESSION_free). */
    bool (*on_session)(void *ud, SSL_SESSION *sess);
    void *session_ud;
    char peer_name[128]; /* the name the peer's certificate must carry (client side) */
    char err[200];       /* why the connection failed (for logs and 502 messages) */
} wd_tls_t;

/* Server side: accept a handshake. Client side: host is sent as SNI (unless it is an IP address)
 * and, when verify_host, the peer's certificate must name it (DNS name or IP address). */
int wd_tls_init_server(wd_tls_t *t, SSL_CTX *ctx);
int wd_tls_init_client(wd_tls_t *t, SSL_CTX *ctx, const char *host, bool verify_host);
void wd_tls_free(wd_tls_t *t);

/* Ciphertext from the network. */
int wd_tls_feed(wd_tls_t *t, const char *p, size_t len);
/* Advances the handshake and appends decrypted application data to out (up to out's limit).
 * WD_OK: done with what was fed (possibly nothing appended); WD_EOF: the peer sent close_notify;
 * WD_E2BIG: out is at its limit with data still pending; WD_EINVAL: the connection failed
 * (t->err says why; an alert for the peer may be waiting in wd_tls_pending). */
#define WD_TLS_EOF 1
int wd_tls_read(wd_tls_t *t, wd_buf_t *out);
/* Client side: starts (or continues) the handshake; WD_OK when complete, WD_EAGAIN while it needs
 * more input, WD_EINVAL on failure (t->err says why). */
int wd_tls_handshake(wd_tls_t *t);
bool wd_tls_established(const wd_tls_t *t);
/* Plaintext to send: encrypted into the pending output. WD_OK, or WD_EINVAL before the handshake
 * finished or after a failure. */
int wd_tls_write(wd_tls_t *t, const char *p, size_t len);
/* Queues a close_notify alert (nothing to do if the handshake never finished). */
void wd_tls_close_notify(wd_tls_t *t);
/* Ciphertext waiting to be sent; wd_tls_take moves up to cap bytes of it into buf. */
size_t wd_tls_pending(const wd_tls_t *t);
size_t wd_tls_take(wd_tls_t *t, char *buf, size_t cap);
/* The failure was a plaintext HTTP request sent to a TLS port. */
bool wd_tls_got_http(const wd_tls_t *t);
/* Negotiated protocol version text ("TLSv1.3"), for logs and tests. */
const char *wd_tls_version(const wd_tls_t *t);

/* A per-thread scratch buffer for socket reads and ciphertext writes of TLS connections (libuv
 * calls alloc_cb and read_cb back to back on the loop's thread, so one buffer per thread is enough). */
#define WD_TLS_SCRATCH 65536
char *wd_tls_scratch_in(void);
char *wd_tls_scratch_out(void);

#endif

/* sim: `warden sim`, the OpenAI-compatible upstream simulator (DESIGN.md §1).
 *
 * Shape: the main thread parses flags, opens the listening sockets (one per worker, SO_REUSEPORT
 * when there are several so the kernel spreads connections), and then only waits for SIGINT/SIGTERM.
 * Each worker owns one libuv loop and every connection accepted on it; nothing is shared between
 * workers except the read-only options and an atomic id counter.
 *
 * A connection reads into one growable input buffer, parses as many complete requests as it holds
 * (pipelining) with warden's own strict parser, appends every answer to one output buffer and hands
 * that to the kernel with a single uv_try_write. Only a partial write copies the rest into a queued
 * uv_write. While a response is delayed (--latency-ms) or streaming, later pipelined requests wait in
 * the input buffer, so answers always leave in request order.
 *
 * Content rules (documented for test authors):
 *  - chat reply: "echo: " + the text of the last user message (string content, or the concatenated
 *    text parts of an array content); --reply/--reply-file replace it with fixed text.
 *  - completions reply: "echo: " + the prompt, one choice per prompt when prompt is an array.
 *  - tokens are counted as ceil(bytes / 4): prompt_tokens over the bytes of the messages' text
 *    content as written in the request JSON, completion_tokens over the bytes of the reply.
 *  - a streamed token is one word plus the whitespace that follows it, so the deltas concatenate to
 *    the exact reply; with --stream-chunks N the reply is repeated (joined by one space when it does
 *    not end in whitespace) until there are at least N content events.
 *  - /healthz is the simulator's own liveness probe: it ignores --hang, --latency-ms, --error-rate
 *    and --api-key. Every other route (including 404s) honours them.
 *
 * With --tls-cert and --tls-key the listener speaks TLS 1.2/1.3 (net/tls.h, the same code as
 * warden's listeners): ciphertext is decrypted into the input buffer and the output buffer is
 * encrypted on its way to the kernel, so everything above stays the same. */
#include "sim/sim.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/core.h"
#include "core/json.h"
#include "http/http.h"
#include "net/tls.h"

#define SIM_MAX_BODY ((size_t)16 << 20)
/* The input buffer holds one head, one whole body and some pipelined bytes after it. */
#define SIM_IN_LIMIT (SIM_MAX_BODY + ((size_t)128 << 10))
#define SIM_HIGH_WATER ((size_t)256 << 10) /* stop producing when this much is queued to a client */
#define SIM_LOW_WATER ((size_t)64 << 10)   /* ... and resume once it drained below this */
#define SIM_PUMP_SLICE ((size_t)1 << 20)   /* bytes one stream may produce before yielding the loop */
#define SIM_MAX_TOKS ((size_t)1 << 20)     /* JSON tokens per body (24 MiB of scratch at most) */
#define SIM_LINGER_MS 5000
#define SIM_MAX_WORKERS 64

/* ------------------------------------------------------------------------------------------------ */
/* options                                                                                          */

typedef struct {
    struct sockaddr_storage addr;
    char listen_str[128];
    unsigned workers;
    char **models;
    size_t nmodels;
    unsigned embedding_dim;
    char *reply; /* owned, NULL = echo */
    size_t reply_len;
    double tokens_per_sec;
    uint64_t stream_chunks;
    uint64_t latency_ms;
    double error_rate;
    uint64_t seed;
    uint64_t disconnect_after; /* 0 = never */
    bool hang;
    const char *api_key; /* NULL = no auth */
    size_t api_key_len;
    bool echo_headers;
    bool no_usage;        /* never report usage (an upstream that does not count tokens) */
    wd_buf_t models_body; /* GET /v1/models, rendered once */
    SSL_CTX *tls;         /* --tls-cert/--tls-key; NULL = plain HTTP */
} sim_opts_t;

static const char USAGE[] =
    "usage: warden sim [options]\n"
    "  --listen HOST:PORT        address to listen on (default 127.0.0.1:8000; port 0 picks one)\n"
    "  --workers N               worker threads, 1-64 (default 1)\n"
    "  --models a,b,c            models listed by /v1/models (default sim-small,llama-3.1-70b,llama-3.1-8b)\n"
    "  --embedding-dim N         embedding vector size, 1-65536 (default 8)\n"
    "  --reply TEXT              answer every completion with TEXT instead of echoing the prompt\n"
    "  --reply-file PATH         same, with the contents of PATH (UTF-8, at most 16 MiB)\n"
    "  --tokens-per-sec R        pace streamed tokens at R per second (default 0 = unpaced)\n"
    "  --stream-chunks N         repeat the reply until a stream has at least N content events\n"
    "  --latency-ms N            wait N ms before each response head\n"
    "  --error-rate F            answer 500 with probability F, 0-1 (default 0)\n"
    "  --seed N                  seed of the error-rate generator (default 1)\n"
    "  --disconnect-after N      close streams abruptly after N events\n"
    "  --hang                    accept requests but never answer them\n"
    "  --api-key KEY             require 'Authorization: Bearer KEY'\n"
    "  --echo-headers            add the received headers and body to chat responses (\"sim_request\")\n"
    "  --no-usage                never report token usage (no \"usage\" object, no usage chunk on streams)\n"
    "  --tls-cert PATH           serve HTTPS with this PEM certificate chain (needs --tls-key)\n"
    "  --tls-key PATH            the certificate's PEM private key\n"
    "  -h, --help                show this help\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("warden sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    fputs(USAGE, stderr);
    return 2;
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!*s) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    if (v < min || v > max) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double min, double max, double *out)
{
    if (!*s || !((*s >= '0' && *s <= '9') || *s == '.')) return false; /* no sign, space, inf, nan */
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max) return false;
    *out = v;
    return true;
}

/* Strict RFC 3629 UTF-8 (no overlongs, surrogates or code points above U+10FFFF): replies are
 * embedded in JSON strings, which must be valid UTF-8. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return false;
        if (n - i <= k) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return false;
        i += k + 1;
    }
    return true;
}

static int parse_listen(const char *s, sim_opts_t *o)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    char host[64];
    size_t hlen = (size_t)(colon - s);
    const char *h = s;
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']') return -1;
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof host) return -1;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    uint64_t port;
    if (!parse_u64(colon + 1, 0, 65535, &port)) return -1;
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    memset(&o->addr, 0, sizeof o->addr);
    if (s[0] == '[') {
        if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&o->addr) != 0) return -1;
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&o->addr) != 0) {
        return -1;
    }
    return 0;
}

static int parse_models(const char *s, sim_opts_t *o)
{
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    o->models = calloc(n, sizeof *o->models);
    if (!o->models) return -1;
    const char *p = s;
    for (size_t i = 0; i < n; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > 256 || !utf8_valid((const unsigned char *)p, len)) return -1;
        for (size_t j = 0; j < len; j++)
            if ((unsigned char)p[j] < 0x20 || p[j] == 0x7f) return -1;
        o->models[i] = strndup(p, len);
        if (!o->models[i]) return -1;
        o->nmodels = i + 1;
        p = e ? e + 1 : p + len;
    }
    return 0;
}

static int read_reply_file(const char *path, sim_opts_t *o)
{
    char why[512];
    if (wd_read_file(path, SIM_MAX_BODY, &o->reply, &o->reply_len, why, sizeof why) != WD_OK)
        return usage_error("--reply-file %s", why);
    if (utf8_valid((const unsigned char *)o->reply, o->reply_len)) return 0;
    free(o->reply);
    o->reply = NULL;
    return usage_error("--reply-file %s: not valid UTF-8", path);
}

static int render_models(sim_opts_t *o)
{
    wd_buf_t *b = &o->models_body;
    int rc = wd_buf_append_str(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < o->nmodels; i++) {
        rc |= wd_buf_append_str(b, i ? ",{\"id\":\"" : "{\"id\":\"");
        rc |= wd_buf_append_json_str(b, o->models[i], strlen(o->models[i]));
        rc |= wd_buf_append_str(b, "\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"warden-sim\"}");
    }
    rc |= wd_buf_append_str(b, "]}");
    return rc;
}

static void opts_free(sim_opts_t *o)
{
    for (size_t i = 0; i < o->nmodels; i++) free(o->models[i]);
    free(o->models);
    free(o->reply);
    wd_buf_free(&o->models_body);
    SSL_CTX_free(o->tls);
    o->tls = NULL;
}

/* Returns 0, or the exit status (2 usage error, 3 = help shown, exit 0). */
static int parse_opts(int argc, char **argv, sim_opts_t *o)
{
    enum { F_LISTEN, F_WORKERS, F_MODELS, F_DIM, F_REPLY, F_REPLY_FILE, F_TPS, F_CHUNKS, F_LATENCY,
           F_ERR, F_SEED, F_DISC, F_HANG, F_KEY, F_ECHO, F_HELP, F_CERT, F_TLSKEY, F_NOUSAGE, F_COUNT };
    static const struct { const char *name; bool arg; } flags[F_COUNT] = {
        [F_LISTEN] = {"listen", true},          [F_WORKERS] = {"workers", true},
        [F_MODELS] = {"models", true},          [F_DIM] = {"embedding-dim", true},
        [F_REPLY] = {"reply", true},            [F_REPLY_FILE] = {"reply-file", true},
        [F_TPS] = {"tokens-per-sec", true},     [F_CHUNKS] = {"stream-chunks", true},
        [F_LATENCY] = {"latency-ms", true},     [F_ERR] = {"error-rate", true},
        [F_SEED] = {"seed", true},              [F_DISC] = {"disconnect-after", true},
        [F_HANG] = {"hang", false},             [F_KEY] = {"api-key", true},
        [F_ECHO] = {"echo-headers", false},     [F_HELP] = {"help", false},
        [F_CERT] = {"tls-cert", true},          [F_TLSKEY] = {"tls-key", true},
        [F_NOUSAGE] = {"no-usage", false},
    };
    bool seen[F_COUNT] = {0};
    const char *listen = "127.0.0.1:8000", *models = "sim-small,llama-3.1-70b,llama-3.1-8b";
    const char *reply_file = NULL, *tls_cert = NULL, *tls_key = NULL;
    o->workers = 1;
    o->embedding_dim = 8;
    o->seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0) a = "--help";
        if (strncmp(a, "--", 2) != 0 || !a[2]) return usage_error("unexpected argument '%s'", argv[i]);
        const char *name = a + 2, *eq = strchr(name, '='), *val = NULL;
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int f = -1;
        for (int k = 0; k < F_COUNT; k++)
            if (strlen(flags[k].name) == nlen && memcmp(flags[k].name, name, nlen) == 0) f = k;
        if (f < 0) return usage_error("unknown option '%.*s'", (int)(nlen + 2), a);
        if (seen[f]) return usage_error("option --%s given twice", flags[f].name);
        seen[f] = true;
        if (flags[f].arg) {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else return usage_error("option --%s needs a value", flags[f].name);
        } else if (eq) {
            return usage_error("option --%s takes no value", flags[f].name);
        }
        uint64_t u;
        switch (f) {
        case F_LISTEN: listen = val; break;
        case F_WORKERS:
            if (!parse_u64(val, 1, SIM_MAX_WORKERS, &u)) return usage_error("--workers: expected 1-64, got '%s'", val);
            o->workers = (unsigned)u;
            break;
        case F_MODELS: models = val; break;
        case F_DIM:
            if (!parse_u64(val, 1, 65536, &u)) return usage_error("--embedding-dim: expected 1-65536, got '%s'", val);
            o->embedding_dim = (unsigned)u;
            break;
        case F_REPLY:
            if (strlen(val) > SIM_MAX_BODY || !utf8_valid((const unsigned char *)val, strlen(val)))
                return usage_error("--reply: not valid UTF-8 or too long");
            o->reply_len = strlen(val);
            if (!(o->reply = strdup(val))) return usage_error("out of memory");
            break;
        case F_REPLY_FILE: reply_file = val; break;
        case F_TPS:
            if (!parse_double(val, 0, 1e7, &o->tokens_per_sec))
                return usage_error("--tokens-per-sec: expected a number 0-10000000, got '%s'", val);
            break;
        case F_CHUNKS:
            if (!parse_u64(val, 0, 100000000, &o->stream_chunks))
                return usage_error("--stream-chunks: expected 0-100000000, got '%s'", val);
            break;
        case F_LATENCY:
            if (!parse_u64(val, 0, 3600000, &o->latency_ms))
                return usage_error("--latency-ms: expected 0-3600000, got '%s'", val);
            break;
        case F_ERR:
            if (!parse_double(val, 0, 1, &o->error_rate)) return usage_error("--error-rate: expected 0-1, got '%s'", val);
            break;
        case F_SEED:
            if (!parse_u64(val, 0, UINT64_MAX, &o->seed)) return usage_error("--seed: expected an integer, got '%s'", val);
            break;
        case F_DISC:
            if (!parse_u64(val, 1, UINT64_MAX, &o->disconnect_after))
                return usage_error("--disconnect-after: expected an integer >= 1, got '%s'", val);
            break;
        case F_HANG: o->hang = true; break;
        case F_KEY:
            o->api_key_len = strlen(val);
            if (o->api_key_len == 0 || o->api_key_len > 4096) return usage_error("--api-key: must be 1-4096 bytes");
            for (size_t k = 0; k < o->api_key_len; k++)
                if ((unsigned char)val[k] <= 0x20 || val[k] == 0x7f)
                    return usage_error("--api-key: must not contain spaces or control bytes");
            o->api_key = val;
            break;
        case F_ECHO: o->echo_headers = true; break;
        case F_NOUSAGE: o->no_usage = true; break;
        case F_HELP: fputs(USAGE, stdout); return 3;
        case F_CERT: tls_cert = val; break;
        case F_TLSKEY: tls_key = val; break;
        }
    }
    if (o->reply && reply_file) return usage_error("--reply and --reply-file are mutually exclusive");
    if (!tls_cert != !tls_key) return usage_error("--tls-cert and --tls-key go together");
    if (tls_cert) {
        char err[512];
        if (!(o->tls = wd_tls_server_ctx(tls_cert, tls_key, WD_TLS_V12, err, sizeof err))) {
            fprintf(stderr, "warden sim: %s\n", err);
            return 2;
        }
    }
    if (reply_file) {
        int rc = read_reply_file(reply_file, o);
        if (rc) return rc;
    }
    if (parse_listen(listen, o)) return usage_error("--listen: expected HOST:PORT with an IP address, got '%s'", listen);
    snprintf(o->listen_str, sizeof o->listen_str, "%s", listen);
    if (parse_models(models, o)) return usage_error("--models: expected a comma-separated list of names, got '%s'", models);
    if (render_models(o)) return usage_error("out of memory");
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* workers and connections                                                                          */

typedef struct worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    uv_thread_t thread;
    int fd;
    unsigned idx;
    const sim_opts_t *o;
    uint64_t rng;
    wd_json_tok_t *toks;
    size_t ntoks;
    wd_buf_t body; /* response body being built */
    wd_buf_t text; /* reply text being built */
    wd_buf_t tmp;  /* decoded JSON strings */
    wd_buf_t ev;   /* one SSE event */
} worker_t;

enum { ST_IDLE, ST_DELAY, ST_STREAM, ST_HANG, ST_LINGER };
enum { P_ROLE, P_TOK, P_USAGE, P_DONE, P_END, P_FINISHED };

typedef struct {
    size_t off, len; /* in stream text */
    uint64_t reps;
    bool sep; /* join repetitions with a space */
} seg_t;

typedef struct {
    bool chat;
    bool chunked;
    bool include_usage;
    bool waiting_drain;
    int phase;
    wd_buf_t prefix; /* "data: {...,\"choices\":[" */
    wd_buf_t text;
    seg_t *segs;
    size_t nsegs, cur_seg;
    uint64_t cur_rep;
    size_t pos;
    uint64_t events, content_events;
    uint64_t completion_bytes, prompt_tokens;
    uint64_t t0;
} stream_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    wd_tls_t *tls;
    uv_shutdown_t shut;
    worker_t *w;
    int state;
    int closed_handles;
    bool closing, reading, eof, want_close, in_process, sent_continue, head_req;
    int vminor;
    wd_buf_t in;
    wd_buf_t out;
    wd_buf_t delayed;
    wd_buf_t chunk_body;
    wd_http_chunked_t chunked;
    stream_t st;
} conn_t;

typedef struct {
    uv_write_t req;
    conn_t *c;
    char data[];
} wreq_t;

static atomic_uint_fast64_t g_next_id = 1;

static void conn_process(conn_t *c);
static void conn_update_reading(conn_t *c);
static void stream_pump(conn_t *c);
static void conn_response_done(conn_t *c);

/* xorshift64*: the error-rate draw; per worker, seeded from --seed so runs are reproducible. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static double rng_next(worker_t *w)
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return (double)((w->rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

/* ---- small appenders (the hot path avoids printf) ---- */

/* "" lit makes anything but a string literal a compile error (sizeof a pointer would be silent). */
#define AP(b, lit) wd_buf_append((b), "" lit, sizeof("" lit) - 1)

/* ,"usage":{...} of a completion: prompt and completion tokens and their sum */
static int ap_usage(wd_buf_t *b, uint64_t pt, uint64_t ct)
{
    int rc = AP(b, ",\"usage\":{\"prompt_tokens\":");
    rc |= wd_buf_append_u64(b, pt);
    rc |= AP(b, ",\"completion_tokens\":");
    rc |= wd_buf_append_u64(b, ct);
    rc |= AP(b, ",\"total_tokens\":");
    rc |= wd_buf_append_u64(b, pt + ct);
    return rc | AP(b, "}");
}

static int ap_hex(wd_buf_t *b, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char t[20];
    size_t n = sizeof t;
    do {
        t[--n] = hex[v & 15];
        v >>= 4;
    } while (v);
    return wd_buf_append(b, t + n, sizeof t - n);
}

/* Header names and values may hold obs-text bytes that are not UTF-8; map each to \u00XX (Latin-1)
 * so the echoed JSON stays valid. */
static int ap_json_latin1(wd_buf_t *b, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x80) continue;
        rc |= wd_buf_append_json_str(b, p + start, i - start);
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        rc |= wd_buf_append(b, esc, 6);
        start = i + 1;
    }
    return rc | wd_buf_append_json_str(b, p + start, len - start);
}

static uint64_t ntokens(uint64_t bytes) { return (bytes + 3) / 4; }

static bool is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

/* One streamed token: a run of non-whitespace plus the whitespace after it. */
static size_t next_token_end(const char *p, size_t len, size_t pos)
{
    while (pos < len && !is_ws(p[pos])) pos++;
    while (pos < len && is_ws(p[pos])) pos++;
    return pos;
}

static uint64_t count_tokens(const char *p, size_t len)
{
    uint64_t n = 0;
    for (size_t pos = 0; pos < len; n++) pos = next_token_end(p, len, pos);
    return n;
}

/* ---- writing ---- */

static void on_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (++c->closed_handles < 2) return;
    wd_buf_free(&c->in);
    wd_buf_free(&c->out);
    wd_buf_free(&c->delayed);
    wd_buf_free(&c->chunk_body);
    wd_buf_free(&c->st.prefix);
    wd_buf_free(&c->st.text);
    free(c->st.segs);
    if (c->tls) {
        wd_tls_free(c->tls);
        free(c->tls);
    }
    free(c);
}

static void conn_close_now(conn_t *c)
{
    if (c->closing) return;
    c->closing = true;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_close);
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static size_t queued(conn_t *c) { return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp); }

static void on_write(uv_write_t *req, int status)
{
    wreq_t *r = (wreq_t *)req;
    conn_t *c = r->c;
    free(r);
    if (c->closing) return;
    if (status < 0) {
        conn_close_now(c);
        return;
    }
    if (queued(c) > SIM_LOW_WATER) return;
    if (c->state == ST_STREAM && c->st.waiting_drain) {
        c->st.waiting_drain = false;
        stream_pump(c);
    } else if (c->state == ST_IDLE) {
        conn_update_reading(c);
    }
}

/* Bytes for the socket as they are: written now if the kernel takes them, the rest copied into a
 * queued write. Returns 0, or a libuv error after which the connection has been closed. */
static int sock_send(conn_t *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
        conn_close_now(c);
        return n;
    }
    size_t rest = len - (size_t)n;
    if (rest) {
        wreq_t *r = malloc(sizeof *r + rest);
        if (!r) {
            conn_close_now(c);
            return UV_ENOMEM;
        }
        r->c = c;
        memcpy(r->data, data + n, rest);
        b = uv_buf_init(r->data, (unsigned)rest);
        int rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (rc) {
            free(r);
            conn_close_now(c);
            return rc;
        }
    }
    return 0;
}

/* Sends the ciphertext OpenSSL has produced. */
static int tls_send(conn_t *c)
{
    char *buf = wd_tls_scratch_out();
    size_t n;
    while ((n = wd_tls_take(c->tls, buf, WD_TLS_SCRATCH)) > 0) {
        int rc = sock_send(c, buf, n);
        if (rc) return rc;
    }
    return 0;
}

/* Hands the output buffer to the kernel (through TLS when it is on). Returns 0, or a libuv error
 * after which the connection has been closed. */
static int conn_flush(conn_t *c)
{
    if (c->closing) return UV_ECANCELED;
    if (c->out.len == 0) return 0;
    int rc;
    if (c->tls) {
        if (wd_tls_write(c->tls, c->out.data, c->out.len) != WD_OK) {
            conn_close_now(c);
            return UV_EPROTO;
        }
        rc = tls_send(c);
    } else {
        rc = sock_send(c, c->out.data, c->out.len);
    }
    if (rc) return rc;
    c->out.len = 0;
    if (c->out.cap > ((size_t)1 << 20)) wd_buf_free(&c->out); /* do not keep a huge echo around */
    return 0;
}

static void on_linger_timeout(uv_timer_t *t) { conn_close_now(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closing) return;
    if (status < 0 || c->eof) conn_close_now(c);
}

/* Ends the connection after everything queued has been sent: FIN after the last write, then keep
 * reading (and discarding) until the client closes, so unread pipelined bytes do not turn our close
 * into a RST that could destroy the response before the client read it. */
static void conn_linger(conn_t *c)
{
    if (c->closing || c->state == ST_LINGER) return;
    if (conn_flush(c)) return;
    c->state = ST_LINGER;
    c->in.len = 0;
    uv_timer_stop(&c->timer);
    if (c->tls) {
        wd_tls_close_notify(c->tls);
        if (tls_send(c)) return;
    }
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown)) {
        conn_close_now(c);
        return;
    }
    uv_timer_start(&c->timer, on_linger_timeout, SIM_LINGER_MS, 0);
    conn_update_reading(c);
}

/* ---- responses ---- */

static int ap_head(conn_t *c, wd_buf_t *out, int status, const char *ctype, int64_t clen)
{
    int rc = AP(out, "HTTP/1.1 ");
    rc |= wd_buf_append_u64(out, (uint64_t)status);
    rc |= AP(out, " ");
    const char *reason = wd_http_status_text(status);
    rc |= wd_buf_append_str(out, reason ? reason : "Unknown");
    rc |= AP(out, "\r\nContent-Type: ");
    rc |= wd_buf_append_str(out, ctype);
    if (clen >= 0) {
        rc |= AP(out, "\r\nContent-Length: ");
        rc |= wd_buf_append_u64(out, (uint64_t)clen);
    } else if (c->vminor >= 1) {
        rc |= AP(out, "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache");
    }
    if (c->want_close) rc |= AP(out, "\r\nConnection: close");
    else if (c->vminor == 0) rc |= AP(out, "\r\nConnection: keep-alive");
    rc |= AP(out, "\r\n\r\n");
    return rc;
}

static int ap_response(conn_t *c, wd_buf_t *out, int status, const char *body, size_t blen)
{
    int rc = ap_head(c, out, status, "application/json", (int64_t)blen);
    if (!c->head_req) rc |= wd_buf_append(out, body, blen);
    return rc;
}

static int ap_error(conn_t *c, wd_buf_t *out, int status, const char *type, const char *code, const char *param,
                    const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int ap_error(conn_t *c, wd_buf_t *out, int status, const char *type, const char *code, const char *param,
                    const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    wd_buf_t *b = &c->w->body;
    wd_buf_reset(b);
    int rc = AP(b, "{\"error\":{\"message\":\"");
    rc |= ap_json_latin1(b, msg, strlen(msg));
    rc |= AP(b, "\",\"type\":\"");
    rc |= wd_buf_append_str(b, type);
    rc |= AP(b, "\",\"param\":");
    if (param) {
        rc |= AP(b, "\"");
        rc |= wd_buf_append_str(b, param);
        rc |= AP(b, "\"");
    } else {
        rc |= AP(b, "null");
    }
    rc |= AP(b, ",\"code\":\"");
    rc |= wd_buf_append_str(b, code);
    rc |= AP(b, "\"}}");
    if (rc) return rc;
    return ap_response(c, out, status, b->data, b->len);
}

static int bad_request(conn_t *c, wd_buf_t *out, const char *code, const char *param, const char *msg)
{
    return ap_error(c, out, 400, "invalid_request_error", code, param, "%s", msg);
}

/* ---- JSON helpers ---- */

static int json_parse(worker_t *w, const char *body, size_t blen, wd_json_doc_t *doc, char *err, size_t errlen)
{
    for (;;) {
        int rc = wd_json_parse(doc, body, blen, w->toks, w->ntoks, 0, err, errlen);
        if (rc != WD_E2BIG) return rc;
        size_t want = blen / 2 + 2;
        if (want > SIM_MAX_TOKS) want = SIM_MAX_TOKS;
        if (want <= w->ntoks) {
            snprintf(err, errlen, "JSON body too large or too deeply nested");
            return rc;
        }
        wd_json_tok_t *t = realloc(w->toks, want * sizeof *t);
        if (!t) {
            snprintf(err, errlen, "out of memory");
            return WD_ENOMEM;
        }
        w->toks = t;
        w->ntoks = want;
    }
}

static int tok_type(const wd_json_doc_t *d, int i) { return i < 0 ? 0 : d->toks[i].type; }

/* Appends the decoded value of string token i to out. Unescaped strings are copied as they are. */
static int ap_json_decoded(worker_t *w, const wd_json_doc_t *d, int i, wd_buf_t *out)
{
    const wd_json_tok_t *t = &d->toks[i];
    if (!t->escaped) return wd_buf_append(out, d->src + t->start, t->end - t->start);
    wd_buf_reset(&w->tmp);
    int rc = wd_json_str_decode(d, i, &w->tmp);
    if (rc) return rc;
    return wd_buf_append(out, w->tmp.data, w->tmp.len);
}

/* Bytes of a message's text content as written (string content, or the text parts of an array). */
static size_t content_bytes(const wd_json_doc_t *d, int content)
{
    int ty = tok_type(d, content);
    if (ty == WD_JSON_STRING) return d->toks[content].end - d->toks[content].start;
    if (ty != WD_JSON_ARRAY) return 0;
    size_t n = 0, cnt = d->toks[content].size;
    int e = content + 1;
    for (size_t k = 0; k < cnt; k++, e = (int)d->toks[e].next) {
        int txt = wd_json_obj_get(d, e, "text");
        if (tok_type(d, txt) == WD_JSON_STRING) n += d->toks[txt].end - d->toks[txt].start;
    }
    return n;
}

static int ap_content_text(worker_t *w, const wd_json_doc_t *d, int content, wd_buf_t *out)
{
    int ty = tok_type(d, content);
    if (ty == WD_JSON_STRING) return ap_json_decoded(w, d, content, out);
    if (ty != WD_JSON_ARRAY) return 0;
    size_t cnt = d->toks[content].size;
    int e = content + 1, rc = 0;
    for (size_t k = 0; k < cnt; k++, e = (int)d->toks[e].next) {
        int type = wd_json_obj_get(d, e, "type");
        int txt = wd_json_obj_get(d, e, "text");
        if (type >= 0 && !wd_json_str_eq(d, type, "text")) continue;
        if (tok_type(d, txt) == WD_JSON_STRING) rc |= ap_json_decoded(w, d, txt, out);
    }
    return rc;
}

/* Reads "stream" and "stream_options.include_usage". Returns false (and answers 400) on bad types. */
static bool read_stream_flags(conn_t *c, wd_buf_t *out, const wd_json_doc_t *d, bool *stream, bool *usage)
{
    int s = wd_json_obj_get(d, 0, "stream");
    int ty = tok_type(d, s);
    *stream = ty == WD_JSON_TRUE;
    *usage = false;
    if (s >= 0 && ty != WD_JSON_TRUE && ty != WD_JSON_FALSE && ty != WD_JSON_NULL) {
        bad_request(c, out, "invalid_type", "stream", "'stream' must be a boolean");
        return false;
    }
    int so = wd_json_obj_get(d, 0, "stream_options");
    if (so >= 0 && tok_type(d, so) != WD_JSON_NULL) {
        if (tok_type(d, so) != WD_JSON_OBJECT) {
            bad_request(c, out, "invalid_type", "stream_options", "'stream_options' must be an object");
            return false;
        }
        int iu = wd_json_obj_get(d, so, "include_usage");
        *usage = tok_type(d, iu) == WD_JSON_TRUE && !c->w->o->no_usage;
    }
    return true;
}

/* ---- streaming ---- */

static int stream_ap_usage_null(stream_t *s, wd_buf_t *ev)
{
    return s->include_usage ? AP(ev, "]," "\"usage\":null}\n\n") : AP(ev, "]}\n\n");
}

/* Builds the next event of the stream into w->ev. Returns 1 (event built), 0 (stream complete,
 * nothing built), 2 (pacing: not due yet) or a negative error. */
static int stream_build(conn_t *c)
{
    stream_t *s = &c->st;
    wd_buf_t *ev = &c->w->ev;
    wd_buf_reset(ev);
    int rc = 0;
    for (;;) {
        switch (s->phase) {
        case P_ROLE:
            s->phase = P_TOK;
            rc |= wd_buf_append(ev, s->prefix.data, s->prefix.len);
            rc |= AP(ev, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                         "\"finish_reason\":null}");
            rc |= stream_ap_usage_null(s, ev);
            return rc ? rc : 1;
        case P_TOK: {
            if (s->cur_seg == s->nsegs) {
                s->phase = s->include_usage ? P_USAGE : P_DONE;
                continue;
            }
            seg_t *g = &s->segs[s->cur_seg];
            const char *t = s->text.data + g->off;
            if (s->pos == g->len && s->cur_rep + 1 < g->reps) {
                s->cur_rep++;
                s->pos = 0;
            }
            if (s->pos == g->len) { /* segment complete: its finish event */
                rc |= wd_buf_append(ev, s->prefix.data, s->prefix.len);
                if (s->chat) {
                    rc |= AP(ev, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}");
                } else {
                    rc |= AP(ev, "{\"text\":\"\",\"index\":");
                    rc |= wd_buf_append_u64(ev, s->cur_seg);
                    rc |= AP(ev, ",\"logprobs\":null,\"finish_reason\":\"stop\"}");
                }
                rc |= stream_ap_usage_null(s, ev);
                s->cur_seg++;
                s->cur_rep = 0;
                s->pos = 0;
                return rc ? rc : 1;
            }
            if (c->w->o->tokens_per_sec > 0) {
                uint64_t now = uv_now(&c->w->loop);
                /* content event k is due at t0 + k/rate */
                double due = (double)(now - s->t0) * c->w->o->tokens_per_sec / 1000.0 + 1e-9;
                if ((double)s->content_events > due) return 2;
            }
            size_t end = next_token_end(t, g->len, s->pos);
            bool sep = end == g->len && g->sep && s->cur_rep + 1 < g->reps;
            rc |= wd_buf_append(ev, s->prefix.data, s->prefix.len);
            rc |= s->chat ? AP(ev, "{\"index\":0,\"delta\":{\"content\":\"") : AP(ev, "{\"text\":\"");
            rc |= wd_buf_append_json_str(ev, t + s->pos, end - s->pos);
            if (sep) rc |= AP(ev, " ");
            if (s->chat) {
                rc |= AP(ev, "\"},\"logprobs\":null,\"finish_reason\":null}");
            } else {
                rc |= AP(ev, "\",\"index\":");
                rc |= wd_buf_append_u64(ev, s->cur_seg);
                rc |= AP(ev, ",\"logprobs\":null,\"finish_reason\":null}");
            }
            rc |= stream_ap_usage_null(s, ev);
            s->completion_bytes += end - s->pos + sep;
            s->pos = end;
            s->content_events++;
            return rc ? rc : 1;
        }
        case P_USAGE: {
            s->phase = P_DONE;
            uint64_t ct = ntokens(s->completion_bytes);
            rc |= wd_buf_append(ev, s->prefix.data, s->prefix.len);
            rc |= AP(ev, "],\"usage\":{\"prompt_tokens\":");
            rc |= wd_buf_append_u64(ev, s->prompt_tokens);
            rc |= AP(ev, ",\"completion_tokens\":");
            rc |= wd_buf_append_u64(ev, ct);
            rc |= AP(ev, ",\"total_tokens\":");
            rc |= wd_buf_append_u64(ev, s->prompt_tokens + ct);
            rc |= AP(ev, "}}\n\n");
            return rc ? rc : 1;
        }
        case P_DONE:
            s->phase = P_END;
            rc = AP(ev, "data: [DONE]\n\n");
            return rc ? rc : 1;
        default:
            return 0;
        }
    }
}

static void on_stream_timer(uv_timer_t *t) { stream_pump(t->data); }

/* Produces events until the stream ends, pacing says wait, the client falls behind, or this stream
 * has used its slice of the loop. */
static void stream_pump(conn_t *c)
{
    stream_t *s = &c->st;
    const sim_opts_t *o = c->w->o;
    size_t produced = 0;
    while (!c->closing && c->state == ST_STREAM) {
        int r = stream_build(c);
        if (r < 0) {
            conn_close_now(c);
            return;
        }
        if (r == 2) { /* paced: sleep until the next token is due */
            if (conn_flush(c)) return;
            double at = (double)s->content_events * 1000.0 / o->tokens_per_sec;
            uint64_t due = s->t0 + (uint64_t)ceil(at), now = uv_now(&c->w->loop);
            uv_timer_start(&c->timer, on_stream_timer, due > now ? due - now : 1, 0);
            return;
        }
        wd_buf_t *ev = &c->w->ev;
        int rc = 0;
        if (r == 1) {
            if (s->chunked) {
                rc |= ap_hex(&c->out, ev->len);
                rc |= AP(&c->out, "\r\n");
                rc |= wd_buf_append(&c->out, ev->data, ev->len);
                rc |= AP(&c->out, "\r\n");
            } else {
                rc |= wd_buf_append(&c->out, ev->data, ev->len);
            }
            produced += ev->len;
            s->events++;
        } else if (s->chunked) {
            rc |= AP(&c->out, "0\r\n\r\n");
        }
        if (rc) {
            conn_close_now(c);
            return;
        }
        if (r == 1 && o->disconnect_after && s->events >= o->disconnect_after) {
            conn_linger(c); /* FIN mid-body: the client sees a truncated stream, no [DONE] */
            return;
        }
        if (r == 0) {
            s->phase = P_FINISHED;
            conn_response_done(c);
            return;
        }
        if (c->out.len >= SIM_LOW_WATER || o->tokens_per_sec > 0) {
            if (conn_flush(c)) return;
            if (queued(c) > SIM_HIGH_WATER) {
                s->waiting_drain = true;
                return;
            }
        }
        if (produced >= SIM_PUMP_SLICE) {
            if (conn_flush(c)) return;
            uv_timer_start(&c->timer, on_stream_timer, 0, 0);
            return;
        }
    }
}

static void stream_start(conn_t *c)
{
    wd_buf_t *out = &c->out;
    if (!c->st.chunked) c->want_close = true; /* HTTP/1.0: the body ends at close, so say so */
    if (ap_head(c, out, 200, "text/event-stream", -1)) {
        conn_close_now(c);
        return;
    }
    c->st.t0 = uv_now(&c->w->loop);
    if (c->head_req) {
        c->st.phase = P_FINISHED;
        conn_response_done(c);
        return;
    }
    stream_pump(c);
}

/* Prepares c->st; texts live in w->text as segments. */
static int stream_setup(conn_t *c, bool chat, const char *model, size_t model_len, uint64_t id, uint64_t created,
                        bool include_usage, uint64_t prompt_tokens, const size_t *offs, const size_t *lens, size_t n)
{
    stream_t *s = &c->st;
    const sim_opts_t *o = c->w->o;
    wd_buf_reset(&s->prefix);
    wd_buf_reset(&s->text);
    int rc = AP(&s->prefix, "data: {\"id\":\"");
    rc |= chat ? AP(&s->prefix, "chatcmpl-") : AP(&s->prefix, "cmpl-");
    rc |= wd_buf_append_u64(&s->prefix, id);
    rc |= chat ? AP(&s->prefix, "\",\"object\":\"chat.completion.chunk\",\"created\":")
               : AP(&s->prefix, "\",\"object\":\"text_completion\",\"created\":");
    rc |= wd_buf_append_u64(&s->prefix, created);
    rc |= AP(&s->prefix, ",\"model\":");
    rc |= wd_buf_append(&s->prefix, model, model_len);
    rc |= AP(&s->prefix, ",\"choices\":[");
    rc |= wd_buf_append(&s->text, c->w->text.data, c->w->text.len);
    seg_t *segs = realloc(s->segs, (n ? n : 1) * sizeof *segs);
    if (!segs) return WD_ENOMEM;
    s->segs = segs;
    for (size_t i = 0; i < n; i++) {
        seg_t *g = &segs[i];
        g->off = offs[i];
        g->len = lens[i];
        g->reps = 1;
        g->sep = g->len > 0 && !is_ws(c->w->text.data[g->off + g->len - 1]);
        if (o->stream_chunks && g->len) {
            uint64_t per = count_tokens(c->w->text.data + g->off, g->len);
            g->reps = (o->stream_chunks + per - 1) / per;
            if (g->reps == 0) g->reps = 1;
        }
    }
    s->chat = chat;
    s->chunked = c->vminor >= 1;
    s->include_usage = include_usage;
    s->waiting_drain = false;
    s->phase = chat ? P_ROLE : P_TOK;
    s->nsegs = n;
    s->cur_seg = 0;
    s->cur_rep = 0;
    s->pos = 0;
    s->events = s->content_events = s->completion_bytes = 0;
    s->prompt_tokens = prompt_tokens;
    return rc;
}

/* ---- endpoints ---- */

typedef enum { R_NONE, R_CHAT, R_COMPLETIONS, R_EMBEDDINGS, R_MODELS, R_MODEL, R_HEALTH } route_t;

/* Returns 1 when a stream was set up (c->st), 0 when a full response was appended to out. */
static int handle_chat(conn_t *c, wd_buf_t *out, const wd_http_msg_t *m, const char *body, size_t blen)
{
    worker_t *w = c->w;
    const sim_opts_t *o = w->o;
    wd_json_doc_t d;
    char err[256];
    if (json_parse(w, body, blen, &d, err, sizeof err)) {
        ap_error(c, out, 400, "invalid_request_error", "invalid_json", NULL,
                 "We could not parse the JSON body of your request: %s", err);
        return 0;
    }
    if (tok_type(&d, 0) != WD_JSON_OBJECT) return bad_request(c, out, "invalid_type", NULL, "the request body must be a JSON object"), 0;
    int model = wd_json_obj_get(&d, 0, "model");
    if (model < 0) return bad_request(c, out, "missing_required_parameter", "model", "you must provide a model parameter"), 0;
    if (tok_type(&d, model) != WD_JSON_STRING) return bad_request(c, out, "invalid_type", "model", "'model' must be a string"), 0;
    int msgs = wd_json_obj_get(&d, 0, "messages");
    if (msgs < 0) return bad_request(c, out, "missing_required_parameter", "messages", "Missing required parameter: 'messages'"), 0;
    if (tok_type(&d, msgs) != WD_JSON_ARRAY) return bad_request(c, out, "invalid_type", "messages", "'messages' must be an array"), 0;
    size_t nmsg = d.toks[msgs].size;
    if (nmsg == 0) return bad_request(c, out, "invalid_value", "messages", "'messages' must not be empty"), 0;
    bool stream, usage;
    if (!read_stream_flags(c, out, &d, &stream, &usage)) return 0;

    int last_user = -1;
    size_t prompt_bytes = 0;
    int e = msgs + 1;
    for (size_t k = 0; k < nmsg; k++, e = (int)d.toks[e].next) {
        if (tok_type(&d, e) != WD_JSON_OBJECT) return bad_request(c, out, "invalid_type", "messages", "each message must be an object"), 0;
        int role = wd_json_obj_get(&d, e, "role");
        if (tok_type(&d, role) != WD_JSON_STRING) return bad_request(c, out, "invalid_type", "messages", "each message needs a string 'role'"), 0;
        int content = wd_json_obj_get(&d, e, "content");
        int cty = tok_type(&d, content);
        if (content >= 0 && cty != WD_JSON_STRING && cty != WD_JSON_ARRAY && cty != WD_JSON_NULL)
            return bad_request(c, out, "invalid_type", "messages", "'content' must be a string or an array of parts"), 0;
        prompt_bytes += content_bytes(&d, content);
        if (wd_json_str_eq(&d, role, "user")) last_user = content;
    }

    wd_buf_t *text = &w->text;
    wd_buf_reset(text);
    int rc;
    if (o->reply) {
        rc = wd_buf_append(text, o->reply, o->reply_len);
    } else {
        rc = AP(text, "echo: ");
        if (last_user >= 0) rc |= ap_content_text(w, &d, last_user, text);
    }
    if (rc) return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;

    uint64_t id = atomic_fetch_add(&g_next_id, 1), created = (uint64_t)time(NULL);
    uint64_t pt = ntokens(prompt_bytes);
    wd_str_t mraw = wd_json_raw(&d, model);
    if (stream) {
        size_t off = 0, len = text->len;
        if (stream_setup(c, true, mraw.p, mraw.len, id, created, usage, pt, &off, &len, 1))
            return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;
        return 1;
    }
    uint64_t ct = ntokens(text->len);
    wd_buf_t *b = &w->body;
    wd_buf_reset(b);
    rc = AP(b, "{\"id\":\"chatcmpl-");
    rc |= wd_buf_append_u64(b, id);
    rc |= AP(b, "\",\"object\":\"chat.completion\",\"created\":");
    rc |= wd_buf_append_u64(b, created);
    rc |= AP(b, ",\"model\":");
    rc |= wd_buf_append(b, mraw.p, mraw.len);
    rc |= AP(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
    rc |= wd_buf_append_json_str(b, text->data, text->len);
    rc |= AP(b, "\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}]");
    if (!o->no_usage) rc |= ap_usage(b, pt, ct);
    if (o->echo_headers) {
        const wd_http_header_t *auth = wd_http_header(m, "authorization");
        rc |= AP(b, ",\"sim_request\":{\"authorization\":");
        if (auth) {
            rc |= AP(b, "\"");
            rc |= ap_json_latin1(b, auth->value.p, auth->value.len);
            rc |= AP(b, "\"");
        } else {
            rc |= AP(b, "null");
        }
        rc |= AP(b, ",\"headers\":{");
        /* One member per distinct name (repeats joined with ", ") so the object has no duplicate keys. */
        bool first = true;
        for (size_t i = 0; i < m->nheaders; i++) {
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++) dup = wd_str_ieq(m->headers[j].name, m->headers[i].name);
            if (dup) continue;
            rc |= first ? AP(b, "\"") : AP(b, ",\"");
            first = false;
            char lname[256];
            size_t nl = WD_MIN(m->headers[i].name.len, sizeof lname);
            for (size_t k = 0; k < nl; k++) {
                char ch = m->headers[i].name.p[k];
                lname[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
            }
            rc |= ap_json_latin1(b, lname, nl);
            rc |= AP(b, "\":\"");
            bool firstv = true;
            for (size_t j = i; j < m->nheaders; j++) {
                if (!wd_str_ieq(m->headers[j].name, m->headers[i].name)) continue;
                if (!firstv) rc |= AP(b, ", ");
                firstv = false;
                rc |= ap_json_latin1(b, m->headers[j].value.p, m->headers[j].value.len);
            }
            rc |= AP(b, "\"");
        }
        rc |= AP(b, "},\"body\":\"");
        rc |= wd_buf_append_json_str(b, body, blen);
        rc |= AP(b, "\"}");
    }
    rc |= AP(b, "}");
    if (rc) return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;
    ap_response(c, out, 200, b->data, b->len);
    return 0;
}

#define SIM_MAX_PROMPTS 2048

static int handle_completions(conn_t *c, wd_buf_t *out, const char *body, size_t blen)
{
    worker_t *w = c->w;
    const sim_opts_t *o = w->o;
    wd_json_doc_t d;
    char err[256];
    if (json_parse(w, body, blen, &d, err, sizeof err)) {
        ap_error(c, out, 400, "invalid_request_error", "invalid_json", NULL,
                 "We could not parse the JSON body of your request: %s", err);
        return 0;
    }
    if (tok_type(&d, 0) != WD_JSON_OBJECT) return bad_request(c, out, "invalid_type", NULL, "the request body must be a JSON object"), 0;
    int model = wd_json_obj_get(&d, 0, "model");
    if (model < 0) return bad_request(c, out, "missing_required_parameter", "model", "you must provide a model parameter"), 0;
    if (tok_type(&d, model) != WD_JSON_STRING) return bad_request(c, out, "invalid_type", "model", "'model' must be a string"), 0;
    int prompt = wd_json_obj_get(&d, 0, "prompt");
    if (prompt < 0) return bad_request(c, out, "missing_required_parameter", "prompt", "Missing required parameter: 'prompt'"), 0;
    size_t nprompts;
    int first;
    if (tok_type(&d, prompt) == WD_JSON_STRING) {
        nprompts = 1;
        first = prompt;
    } else if (tok_type(&d, prompt) == WD_JSON_ARRAY && d.toks[prompt].size > 0 && d.toks[prompt].size <= SIM_MAX_PROMPTS) {
        nprompts = d.toks[prompt].size;
        first = prompt + 1;
        for (int e = first, k = 0; k < (int)nprompts; k++, e = (int)d.toks[e].next)
            if (tok_type(&d, e) != WD_JSON_STRING)
                return bad_request(c, out, "invalid_type", "prompt", "'prompt' must be a string or an array of strings"), 0;
    } else {
        return bad_request(c, out, "invalid_type", "prompt", "'prompt' must be a string or a non-empty array of at most 2048 strings"), 0;
    }
    bool stream, usage;
    if (!read_stream_flags(c, out, &d, &stream, &usage)) return 0;

    static _Thread_local size_t offs[SIM_MAX_PROMPTS], lens[SIM_MAX_PROMPTS];
    wd_buf_t *text = &w->text;
    wd_buf_reset(text);
    size_t prompt_bytes = 0;
    int rc = 0;
    for (int e = first, k = 0; k < (int)nprompts; k++, e = (int)d.toks[e].next) {
        prompt_bytes += d.toks[e].end - d.toks[e].start;
        offs[k] = text->len;
        if (o->reply) {
            rc |= wd_buf_append(text, o->reply, o->reply_len);
        } else {
            rc |= AP(text, "echo: ");
            rc |= ap_json_decoded(w, &d, e, text);
        }
        lens[k] = text->len - offs[k];
    }
    if (rc) return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;
    uint64_t id = atomic_fetch_add(&g_next_id, 1), created = (uint64_t)time(NULL);
    uint64_t pt = ntokens(prompt_bytes);
    wd_str_t mraw = wd_json_raw(&d, model);
    if (stream) {
        if (stream_setup(c, false, mraw.p, mraw.len, id, created, usage, pt, offs, lens, nprompts))
            return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;
        return 1;
    }
    uint64_t ct = ntokens(text->len);
    wd_buf_t *b = &w->body;
    wd_buf_reset(b);
    rc = AP(b, "{\"id\":\"cmpl-");
    rc |= wd_buf_append_u64(b, id);
    rc |= AP(b, "\",\"object\":\"text_completion\",\"created\":");
    rc |= wd_buf_append_u64(b, created);
    rc |= AP(b, ",\"model\":");
    rc |= wd_buf_append(b, mraw.p, mraw.len);
    rc |= AP(b, ",\"choices\":[");
    for (size_t k = 0; k < nprompts; k++) {
        rc |= k ? AP(b, ",{\"text\":\"") : AP(b, "{\"text\":\"");
        rc |= wd_buf_append_json_str(b, text->data + offs[k], lens[k]);
        rc |= AP(b, "\",\"index\":");
        rc |= wd_buf_append_u64(b, k);
        rc |= AP(b, ",\"logprobs\":null,\"finish_reason\":\"stop\"}");
    }
    rc |= AP(b, "]");
    if (!o->no_usage) rc |= ap_usage(b, pt, ct);
    rc |= AP(b, "}");
    if (rc) return ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory"), 0;
    ap_response(c, out, 200, b->data, b->len);
    return 0;
}

static int ap_base64(wd_buf_t *b, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int rc = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        rc |= wd_buf_append(b, q, 4);
    }
    return rc;
}

/* A unit vector derived only from the input bytes and the dimension: same input, same vector. */
static int ap_embedding(worker_t *w, wd_buf_t *b, const char *p, size_t n, bool base64)
{
    unsigned dim = w->o->embedding_dim;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    double norm = 0;
    for (unsigned j = 0; j < dim; j++) {
        double x = (double)(splitmix64(h + j) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        norm += x * x;
    }
    norm = norm > 0 ? sqrt(norm) : 1;
    int rc = 0;
    if (base64) {
        wd_buf_reset(&w->tmp);
        for (unsigned j = 0; j < dim; j++) {
            float f = (float)(((double)(splitmix64(h + j) >> 11) * 0x1.0p-53 * 2.0 - 1.0) / norm);
            unsigned char le[4];
            uint32_t u;
            memcpy(&u, &f, 4);
            for (int k = 0; k < 4; k++) le[k] = (unsigned char)(u >> (8 * k));
            rc |= wd_buf_append(&w->tmp, le, 4);
        }
        rc |= AP(b, "\"");
        rc |= ap_base64(b, (const unsigned char *)w->tmp.data, w->tmp.len);
        return rc | AP(b, "\"");
    }
    rc |= AP(b, "[");
    for (unsigned j = 0; j < dim; j++) {
        double x = ((double)(splitmix64(h + j) >> 11) * 0x1.0p-53 * 2.0 - 1.0) / norm;
        int64_t v = (int64_t)llround(x * 1e6); /* 6 decimals, formatted without printf */
        if (j) rc |= AP(b, ",");
        if (v < 0) {
            rc |= AP(b, "-");
            v = -v;
        }
        char frac[7];
        int64_t fv = v % 1000000;
        for (int k = 5; k >= 0; k--, fv /= 10) frac[k] = (char)('0' + fv % 10);
        frac[6] = 0;
        rc |= wd_buf_append_u64(b, (uint64_t)(v / 1000000));
        rc |= AP(b, ".");
        rc |= wd_buf_append(b, frac, 6);
    }
    return rc | AP(b, "]");
}

static void handle_embeddings(conn_t *c, wd_buf_t *out, const char *body, size_t blen)
{
    worker_t *w = c->w;
    wd_json_doc_t d;
    char err[256];
    if (json_parse(w, body, blen, &d, err, sizeof err)) {
        ap_error(c, out, 400, "invalid_request_error", "invalid_json", NULL,
                 "We could not parse the JSON body of your request: %s", err);
        return;
    }
    if (tok_type(&d, 0) != WD_JSON_OBJECT) {
        bad_request(c, out, "invalid_type", NULL, "the request body must be a JSON object");
        return;
    }
    int model = wd_json_obj_get(&d, 0, "model");
    if (model < 0) {
        bad_request(c, out, "missing_required_parameter", "model", "you must provide a model parameter");
        return;
    }
    if (tok_type(&d, model) != WD_JSON_STRING) {
        bad_request(c, out, "invalid_type", "model", "'model' must be a string");
        return;
    }
    int input = wd_json_obj_get(&d, 0, "input");
    if (input < 0) {
        bad_request(c, out, "missing_required_parameter", "input", "Missing required parameter: 'input'");
        return;
    }
    bool base64 = false;
    int fmt = wd_json_obj_get(&d, 0, "encoding_format");
    if (fmt >= 0 && tok_type(&d, fmt) != WD_JSON_NULL) {
        if (wd_json_str_eq(&d, fmt, "base64")) base64 = true;
        else if (!wd_json_str_eq(&d, fmt, "float")) {
            bad_request(c, out, "invalid_value", "encoding_format", "'encoding_format' must be 'float' or 'base64'");
            return;
        }
    }
    /* Inputs: a string, an array of strings, an array of token ids (one input), or an array of
     * token-id arrays. Token-id inputs are hashed by their JSON text. */
    int ty = tok_type(&d, input);
    size_t n = 1;
    int first = input;
    if (ty == WD_JSON_ARRAY) {
        if (d.toks[input].size == 0) {
            bad_request(c, out, "invalid_value", "input", "'input' must not be empty");
            return;
        }
        int ety = tok_type(&d, input + 1);
        if (ety == WD_JSON_STRING || ety == WD_JSON_ARRAY) {
            n = d.toks[input].size;
            first = input + 1;
        }
        for (int e = input + 1, k = 0; k < (int)d.toks[input].size; k++, e = (int)d.toks[e].next) {
            int t = tok_type(&d, e);
            bool ok = ety == WD_JSON_NUMBER ? t == WD_JSON_NUMBER : t == ety;
            if (ety == WD_JSON_ARRAY && ok)
                for (int x = e + 1, j = 0; j < (int)d.toks[e].size; j++, x = (int)d.toks[x].next)
                    ok = ok && tok_type(&d, x) == WD_JSON_NUMBER;
            if (!ok) {
                bad_request(c, out, "invalid_type", "input",
                            "'input' must be a string, an array of strings or an array of token arrays");
                return;
            }
        }
    } else if (ty != WD_JSON_STRING) {
        bad_request(c, out, "invalid_type", "input", "'input' must be a string or an array");
        return;
    }
    wd_buf_t *b = &w->body;
    wd_buf_reset(b);
    uint64_t pt = 0;
    int rc = AP(b, "{\"object\":\"list\",\"data\":[");
    for (int e = first, k = 0; k < (int)n; k++, e = (int)d.toks[e].next) {
        rc |= k ? AP(b, ",{\"object\":\"embedding\",\"index\":") : AP(b, "{\"object\":\"embedding\",\"index\":");
        rc |= wd_buf_append_u64(b, (uint64_t)k);
        rc |= AP(b, ",\"embedding\":");
        if (tok_type(&d, e) == WD_JSON_STRING) {
            wd_buf_reset(&w->text);
            rc |= ap_json_decoded(w, &d, e, &w->text);
            pt += ntokens(w->text.len);
            rc |= ap_embedding(w, b, w->text.data ? w->text.data : "", w->text.len, base64);
        } else {
            wd_str_t raw = wd_json_raw(&d, e);
            pt += tok_type(&d, e) == WD_JSON_ARRAY ? d.toks[e].size : 1;
            rc |= ap_embedding(w, b, raw.p, raw.len, base64);
        }
        rc |= AP(b, "}");
    }
    wd_str_t mraw = wd_json_raw(&d, model);
    rc |= AP(b, "],\"model\":");
    rc |= wd_buf_append(b, mraw.p, mraw.len);
    if (!w->o->no_usage) {
        rc |= AP(b, ",\"usage\":{\"prompt_tokens\":");
        rc |= wd_buf_append_u64(b, pt);
        rc |= AP(b, ",\"total_tokens\":");
        rc |= wd_buf_append_u64(b, pt);
        rc |= AP(b, "}");
    }
    rc |= AP(b, "}");
    if (rc) {
        ap_error(c, out, 500, "server_error", "internal_error", NULL, "out of memory");
        return;
    }
    ap_response(c, out, 200, b->data, b->len);
}

static void handle_model(conn_t *c, wd_buf_t *out, wd_str_t id)
{
    const sim_opts_t *o = c->w->o;
    for (size_t i = 0; i < o->nmodels; i++) {
        if (!wd_str_eq(id, wd_strz(o->models[i]))) continue;
        wd_buf_t *b = &c->w->body;
        wd_buf_reset(b);
        int rc = AP(b, "{\"id\":\"");
        rc |= wd_buf_append_json_str(b, id.p, id.len);
        rc |= AP(b, "\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"warden-sim\"}");
        if (!rc) ap_response(c, out, 200, b->data, b->len);
        return;
    }
    ap_error(c, out, 404, "invalid_request_error", "model_not_found", "model",
             "The model '%.*s' does not exist", (int)WD_MIN(id.len, 200), id.p);
}

static route_t route_of(wd_str_t path, wd_str_t *model_id)
{
    if (wd_str_eq(path, WD_STR("/v1/chat/completions"))) return R_CHAT;
    if (wd_str_eq(path, WD_STR("/v1/completions"))) return R_COMPLETIONS;
    if (wd_str_eq(path, WD_STR("/v1/embeddings"))) return R_EMBEDDINGS;
    if (wd_str_eq(path, WD_STR("/v1/models"))) return R_MODELS;
    if (wd_str_eq(path, WD_STR("/healthz"))) return R_HEALTH;
    static const char pre[] = "/v1/models/";
    if (path.len > sizeof pre - 1 && memcmp(path.p, pre, sizeof pre - 1) == 0) {
        *model_id = wd_str(path.p + sizeof pre - 1, path.len - (sizeof pre - 1));
        return R_MODEL;
    }
    return R_NONE;
}

static bool auth_ok(const sim_opts_t *o, const wd_http_msg_t *m)
{
    if (!o->api_key) return true;
    const wd_http_header_t *h = wd_http_header(m, "authorization");
    if (!h || h->value.len < 7 || !wd_str_ieq(wd_str(h->value.p, 7), WD_STR("Bearer "))) return false;
    wd_str_t tok = wd_str(h->value.p + 7, h->value.len - 7);
    if (tok.len != o->api_key_len) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < tok.len; i++) diff |= (unsigned char)(tok.p[i] ^ o->api_key[i]);
    return diff == 0;
}

static void on_delay(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state == ST_STREAM) {
        stream_start(c);
        return;
    }
    if (wd_buf_append(&c->out, c->delayed.data, c->delayed.len)) {
        conn_close_now(c);
        return;
    }
    wd_buf_reset(&c->delayed);
    if (c->delayed.cap > ((size_t)1 << 20)) wd_buf_free(&c->delayed);
    conn_response_done(c);
}

/* Answers one complete request. Leaves c->state IDLE (answer appended to c->out), or DELAY/STREAM/HANG. */
static void handle_request(conn_t *c, const wd_http_msg_t *m, const char *body, size_t blen)
{
    worker_t *w = c->w;
    const sim_opts_t *o = w->o;
    wd_str_t model_id = {0};
    route_t r = route_of(m->path, &model_id);
    bool get = m->method == WD_HTTP_GET || m->method == WD_HTTP_HEAD;
    if (r == R_HEALTH && get) {
        ap_response(c, &c->out, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (o->hang) {
        c->state = ST_HANG;
        return;
    }
    wd_buf_t *out = &c->out;
    if (o->latency_ms) {
        wd_buf_reset(&c->delayed);
        out = &c->delayed;
    }
    int streaming = 0;
    bool want_get = r == R_MODELS || r == R_MODEL || r == R_HEALTH;
    if (r == R_NONE) {
        ap_error(c, out, 404, "invalid_request_error", "unknown_url", NULL, "Unknown request URL: %.*s %.*s",
                 (int)m->method_str.len, m->method_str.p, (int)WD_MIN(m->path.len, 200), m->path.p);
    } else if (want_get ? !get : m->method != WD_HTTP_POST) {
        ap_error(c, out, 405, "invalid_request_error", "method_not_allowed", NULL, "Method %.*s not allowed on %.*s",
                 (int)m->method_str.len, m->method_str.p, (int)WD_MIN(m->path.len, 200), m->path.p);
    } else if (!auth_ok(o, m)) {
        ap_error(c, out, 401, "invalid_request_error", "invalid_api_key", NULL, "Incorrect API key provided.");
    } else if (o->error_rate > 0 && rng_next(w) < o->error_rate) {
        ap_error(c, out, 500, "server_error", "internal_error", NULL,
                 "The server had an error while processing your request (simulated).");
    } else {
        switch (r) {
        case R_CHAT: streaming = handle_chat(c, out, m, body, blen); break;
        case R_COMPLETIONS: streaming = handle_completions(c, out, body, blen); break;
        case R_EMBEDDINGS: handle_embeddings(c, out, body, blen); break;
        case R_MODELS: ap_response(c, out, 200, o->models_body.data, o->models_body.len); break;
        case R_MODEL: handle_model(c, out, model_id); break;
        default: break;
        }
    }
    if (streaming) {
        c->state = ST_STREAM;
        if (!o->latency_ms) stream_start(c);
    } else if (o->latency_ms) {
        c->state = ST_DELAY;
    }
    if (o->latency_ms && !c->closing) uv_timer_start(&c->timer, on_delay, o->latency_ms, 0);
}

/* ---- request loop ---- */

static const char *err_code(int status)
{
    switch (status) {
    case 413: return "request_too_large";
    case 414: return "uri_too_long";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 505: return "http_version_not_supported";
    default: return "bad_request";
    }
}

static void reject_and_close(conn_t *c, int status, const char *reason)
{
    c->want_close = true;
    c->head_req = false;
    ap_error(c, &c->out, status, "invalid_request_error", err_code(status), NULL, "%s", reason);
}

/* Parses and answers every complete request in the input buffer, in order, until one must wait. */
static void conn_process(conn_t *c)
{
    if (c->closing || c->in_process) return;
    c->in_process = true;
    worker_t *w = c->w;
    wd_http_limits_t lim;
    wd_http_limits_default(&lim);
    size_t pos = 0;
    while (c->state == ST_IDLE && !c->want_close && !c->closing && pos < c->in.len) {
        wd_http_msg_t m;
        wd_http_error_t perr = {0};
        const char *p = c->in.data + pos;
        size_t avail = c->in.len - pos;
        int rc = wd_http_parse_request(p, avail, &lim, &m, &perr);
        if (rc == WD_EAGAIN) break;
        if (rc) {
            c->vminor = 1;
            reject_and_close(c, perr.status ? perr.status : 400, perr.reason ? perr.reason : "malformed request");
            break;
        }
        c->vminor = m.version_minor;
        c->head_req = m.method == WD_HTTP_HEAD;
        if (m.content_length > (int64_t)SIM_MAX_BODY) {
            reject_and_close(c, 413, "request body larger than 16 MiB");
            break;
        }
        size_t body_avail = avail - m.head_len;
        const char *body = p + m.head_len;
        size_t blen = 0, used = m.head_len;
        bool complete;
        if (m.chunked) {
            size_t consumed = 0;
            rc = wd_http_chunked_decode(&c->chunked, body, body_avail, &consumed, &c->chunk_body, &perr);
            if (rc == WD_E2BIG) {
                reject_and_close(c, 413, "request body larger than 16 MiB");
                break;
            }
            if (rc != WD_OK && rc != WD_EAGAIN) {
                reject_and_close(c, perr.status ? perr.status : 400, perr.reason ? perr.reason : "bad chunked body");
                break;
            }
            complete = rc == WD_OK;
            if (!complete) {
                /* Drop the coded bytes already decoded so the input buffer only ever holds the head
                 * plus a partial chunk line, however the body is chunked. */
                memmove(c->in.data + pos + m.head_len, c->in.data + pos + m.head_len + consumed,
                        c->in.len - pos - m.head_len - consumed);
                c->in.len -= consumed;
            } else {
                used += consumed;
                body = c->chunk_body.data ? c->chunk_body.data : "";
                blen = c->chunk_body.len;
            }
        } else {
            blen = m.content_length > 0 ? (size_t)m.content_length : 0;
            complete = body_avail >= blen;
            used += blen;
        }
        if (!complete) {
            if (m.expect_continue && m.version_minor == 1 && !c->sent_continue) {
                c->sent_continue = true;
                if (AP(&c->out, "HTTP/1.1 100 Continue\r\n\r\n")) conn_close_now(c);
            }
            break;
        }
        if (!m.keep_alive) c->want_close = true;
        handle_request(c, &m, body, blen);
        pos += used;
        c->sent_continue = false;
        wd_http_chunked_init(&c->chunked);
        wd_buf_reset(&c->chunk_body);
        if (c->chunk_body.cap > ((size_t)1 << 20)) wd_buf_free(&c->chunk_body);
        /* Large bodies can leave a huge parse-token array behind; give it back. */
        if (w->ntoks > 65536) {
            free(w->toks);
            w->ntoks = 4096;
            w->toks = malloc(w->ntoks * sizeof *w->toks);
            if (!w->toks) w->ntoks = 0;
        }
    }
    if (c->closing) {
        c->in_process = false;
        return;
    }
    if (c->state == ST_HANG || c->state == ST_LINGER) {
        c->in.len = 0;
    } else if (pos) {
        wd_buf_consume(&c->in, pos);
    }
    if (c->in.len == 0 && c->in.cap > ((size_t)1 << 20)) wd_buf_free(&c->in);
    c->in_process = false;
    if (conn_flush(c)) return;
    if (c->state == ST_IDLE && (c->want_close || c->eof)) {
        /* eof with a partial request buffered: it can never complete */
        conn_linger(c);
        return;
    }
    conn_update_reading(c);
}

/* Called when the response in progress has been fully produced. */
static void conn_response_done(conn_t *c)
{
    if (c->closing) return;
    c->state = ST_IDLE;
    if (c->in_process) return; /* conn_process continues with the next pipelined request */
    if (c->want_close) {
        conn_linger(c);
        return;
    }
    conn_process(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    WD_UNUSED(suggested);
    conn_t *c = h->data;
    if (c->tls) {
        *buf = uv_buf_init(wd_tls_scratch_in(), WD_TLS_SCRATCH);
        return;
    }
    size_t want = c->in.len ? 65536 : 16384;
    size_t room = c->in.limit - c->in.len;
    if (want > room) want = room;
    if (want == 0 || wd_buf_reserve(&c->in, want)) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (c->closing) return;
    if (nread > 0 && c->tls) {
        size_t before = c->in.len;
        int rc = wd_tls_feed(c->tls, buf->base, (size_t)nread);
        if (rc == WD_OK) rc = wd_tls_read(c->tls, &c->in);
        if (tls_send(c)) return; /* handshake messages, alerts */
        if (rc == WD_TLS_EOF) {
            nread = UV_EOF; /* close_notify: handled as the end of input below */
        } else if (rc != WD_OK) {
            conn_close_now(c); /* failed handshake, bad record, or more than SIM_IN_LIMIT buffered */
            return;
        } else {
            if (c->state == ST_HANG || c->state == ST_LINGER) c->in.len = before; /* discarded */
            else if (c->in.len == before) return;
            else if (c->state == ST_IDLE) conn_process(c);
            else conn_update_reading(c);
            return;
        }
    }
    if (nread > 0) {
        if (c->state == ST_HANG || c->state == ST_LINGER) return; /* discarded */
        c->in.len += (size_t)nread;
        if (c->state == ST_IDLE) conn_process(c);
        else conn_update_reading(c);
        return;
    }
    if (nread == 0) return;
    if (nread == UV_ENOBUFS) {
        uv_read_stop(s);
        c->reading = false;
        return;
    }
    if (nread == UV_EOF) {
        c->eof = true;
        uv_read_stop(s);
        c->reading = false;
        if (c->state == ST_HANG || c->state == ST_LINGER) conn_close_now(c);
        else if (c->state == ST_IDLE) conn_process(c);
        return;
    }
    conn_close_now(c);
}

/* Reads while there is room and the client keeps up with our writes (DESIGN.md §5 rule 5). */
static void conn_update_reading(conn_t *c)
{
    if (c->closing) return;
    bool want = !c->eof;
    if (c->state != ST_LINGER && c->state != ST_HANG)
        want = want && c->in.len < c->in.limit && queued(c) <= SIM_HIGH_WATER;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
            conn_close_now(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) return;
    worker_t *w = server->data;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    wd_buf_init(&c->in, SIM_IN_LIMIT);
    wd_buf_init(&c->out, 0);
    wd_buf_init(&c->delayed, 0);
    wd_buf_init(&c->chunk_body, SIM_MAX_BODY);
    wd_buf_init(&c->st.prefix, 0);
    wd_buf_init(&c->st.text, 0);
    wd_http_chunked_init(&c->chunked);
    c->vminor = 1;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        conn_close_now(c);
        return;
    }
    if (w->o->tls) {
        c->tls = malloc(sizeof *c->tls);
        if (!c->tls || wd_tls_init_server(c->tls, w->o->tls) != WD_OK) {
            free(c->tls);
            c->tls = NULL;
            conn_close_now(c);
            return;
        }
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update_reading(c);
}

/* ---- workers, listeners, signals ---- */

/* Closes every handle of a worker's loop: connections through their own close path (which frees
 * them), the listener and the stop async directly. */
static void close_walk(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h)) return;
    if (h->data == arg) uv_close(h, NULL);
    else conn_close_now(h->data);
}

static void on_stop(uv_async_t *a) { uv_walk(a->loop, close_walk, a->data); }

static void worker_run(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int open_listener(const sim_opts_t *o, bool reuseport, struct sockaddr_storage *bound, char *err, size_t errlen)
{
    int fam = o->addr.ss_family;
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return wd_errf(err, errlen, -1, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        wd_errf(err, errlen, -1, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t alen = fam == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)bound, alen) || listen(fd, 4096)) {
        wd_errf(err, errlen, -1, "cannot listen on %s: %s", o->listen_str, strerror(errno));
        close(fd);
        return -1;
    }
    if (getsockname(fd, (struct sockaddr *)bound, &alen)) {
        wd_errf(err, errlen, -1, "getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void on_signal(uv_signal_t *s, int signum)
{
    WD_UNUSED(signum);
    uv_stop(s->loop);
}

int wd_sim_main(int argc, char **argv)
{
    sim_opts_t o;
    memset(&o, 0, sizeof o);
    wd_buf_init(&o.models_body, 0);
    int rc = parse_opts(argc, argv, &o);
    if (rc) {
        opts_free(&o);
        return rc == 3 ? 0 : rc;
    }
    signal(SIGPIPE, SIG_IGN);

    worker_t *workers = calloc(o.workers, sizeof *workers);
    if (!workers) {
        opts_free(&o);
        fputs("warden sim: out of memory\n", stderr);
        return 1;
    }
    struct sockaddr_storage bound = o.addr;
    char err[256];
    unsigned nloops = 0, nthreads = 0;
    int status = 0;
    for (unsigned i = 0; i < o.workers && status == 0; i++) {
        worker_t *w = &workers[i];
        w->idx = i;
        w->o = &o;
        w->rng = splitmix64(o.seed + i);
        if (w->rng == 0) w->rng = 1;
        wd_buf_init(&w->body, 0);
        wd_buf_init(&w->text, 0);
        wd_buf_init(&w->tmp, 0);
        wd_buf_init(&w->ev, 0);
        w->ntoks = 4096;
        w->toks = malloc(w->ntoks * sizeof *w->toks);
        if (!w->toks) {
            fputs("warden sim: out of memory\n", stderr);
            status = 1;
            break;
        }
        /* The first bind picks the port when --listen asked for port 0; later workers reuse it. */
        int fd = open_listener(&o, o.workers > 1, &bound, err, sizeof err);
        if (fd < 0) {
            fprintf(stderr, "warden sim: %s\n", err);
            status = 1;
            break;
        }
        int e = uv_loop_init(&w->loop);
        if (e) {
            close(fd);
            fprintf(stderr, "warden sim: %s\n", uv_strerror(e));
            status = 1;
            break;
        }
        nloops = i + 1;
        uv_tcp_init(&w->loop, &w->listener);
        w->listener.data = w;
        uv_async_init(&w->loop, &w->stop, on_stop);
        w->stop.data = w;
        e = uv_tcp_open(&w->listener, fd);
        if (e) close(fd); /* on success the handle owns fd */
        else e = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
        if (e) {
            fprintf(stderr, "warden sim: listen: %s\n", uv_strerror(e));
            status = 1;
        }
    }

    uv_loop_t main_loop;
    uv_signal_t sigint, sigterm;
    if (status == 0 && uv_loop_init(&main_loop) == 0) {
        uv_signal_init(&main_loop, &sigint);
        uv_signal_init(&main_loop, &sigterm);
        uv_signal_start(&sigint, on_signal, SIGINT);
        uv_signal_start(&sigterm, on_signal, SIGTERM);
        for (unsigned i = 0; i < nloops; i++) {
            if (uv_thread_create(&workers[i].thread, worker_run, &workers[i])) {
                fputs("warden sim: cannot start worker thread\n", stderr);
                status = 1;
                break;
            }
            nthreads = i + 1;
        }
        if (status == 0) {
            char host[INET6_ADDRSTRLEN] = "?";
            if (bound.ss_family == AF_INET6) {
                uv_ip6_name((struct sockaddr_in6 *)&bound, host, sizeof host);
                fprintf(stderr, "warden sim listening on [%s]:%d\n", host,
                        ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
            } else {
                uv_ip4_name((struct sockaddr_in *)&bound, host, sizeof host);
                fprintf(stderr, "warden sim listening on %s:%d%s\n", host,
                        ntohs(((struct sockaddr_in *)&bound)->sin_port), o.tls ? " (TLS)" : "");
            }
            fflush(stderr);
            uv_run(&main_loop, UV_RUN_DEFAULT); /* until SIGINT/SIGTERM */
        }
        uv_close((uv_handle_t *)&sigint, NULL);
        uv_close((uv_handle_t *)&sigterm, NULL);
        uv_run(&main_loop, UV_RUN_DEFAULT);
        uv_loop_close(&main_loop);
    } else if (status == 0) {
        fputs("warden sim: cannot create the signal loop\n", stderr);
        status = 1;
    }
    /* Each running worker closes its handles and its loop then runs dry; a loop that never ran
     * (startup failed) is closed the same way from here. */
    for (unsigned i = 0; i < nthreads; i++) uv_async_send(&workers[i].stop);
    for (unsigned i = 0; i < nthreads; i++) uv_thread_join(&workers[i].thread);
    for (unsigned i = 0; i < nloops; i++) {
        worker_t *w = &workers[i];
        uv_walk(&w->loop, close_walk, w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    for (unsigned i = 0; i < o.workers; i++) {
        worker_t *w = &workers[i];
        free(w->toks);
        wd_buf_free(&w->body);
        wd_buf_free(&w->text);
        wd_buf_free(&w->tmp);
        wd_buf_free(&w->ev);
    }
    free(workers);
    opts_free(&o);
    return status;
}

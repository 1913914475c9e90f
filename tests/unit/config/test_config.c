/* Unit tests for config: every accepted value lands in the right field, every error class names the
 * exact file:line:col of the offending node, and failed loads leak nothing (run under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "config/config.h"
#include "guard/rewrite.h"
#include "guard/guard.h"
#include "../certgen.h"

#define ERRLEN 512

/* A minimal valid file; tests append or replace lines to exercise one rule at a time. */
#define UPS "upstreams:\n  - { name: local, url: http://127.0.0.1:8000/v1 }\n"
#define MODELS "models:\n  - { name: m1, upstream: local }\n"
/* auth: none keeps state_dir optional; the auth tests below drop it on purpose */
#define NOAUTH "auth: { mode: none }\n"
#define MINIMAL "listen: 127.0.0.1:8080\n" UPS MODELS NOAUTH

static wd_config_t *load(const char *yaml, char *err)
{
    err[0] = 'X'; /* the loader must overwrite it */
    return wd_config_load_buf("t.yaml", yaml, strlen(yaml), err, ERRLEN);
}

/* Asserts that loading fails with the message at exactly `loc` ("LINE:COL") containing `want`. */
static void expect_err(const char *yaml, const char *loc, const char *want)
{
    char err[ERRLEN], prefix[64];
    wd_config_t *c = load(yaml, err);
    if (c) {
        wd_config_unref(c);
        fail_msg("expected an error at %s containing \"%s\", but the config loaded:\n%s", loc, want, yaml);
    }
    snprintf(prefix, sizeof prefix, "t.yaml:%s: ", loc);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, want))
        fail_msg("got \"%s\"\nwanted prefix \"%s\" and \"%s\"", err, prefix, want);
}

static wd_config_t *load_ok(const char *yaml)
{
    char err[ERRLEN];
    wd_config_t *c = load(yaml, err);
    if (!c) fail_msg("unexpected error: %s", err);
    return c;
}

static const char *ip_of(const wd_addr_t *a, char *buf, size_t len)
{
    if (a->sa.ss_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, buf, (socklen_t)len);
    return inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->sa)->sin_addr, buf, (socklen_t)len);
}

static unsigned port_of(const wd_addr_t *a)
{
    if (a->sa.ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

static int setup_env(void **state)
{
    (void)state;
    setenv("WD_TEST_KEY", "sk-test-secret", 1);
    setenv("WD_TEST_EMPTY", "", 1);
    setenv("WD_TEST_CRLF", "abc\r\nX-Evil: 1", 1);
    unsetenv("WD_TEST_MISSING");
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */

static const char full_yaml[] = "listen: 127.0.0.1:9080\n"
                                "admin: { address: \"[::1]:9081\" }\n"
                                "state_dir: /var/lib/warden-test\n"
                                "workers: 3\n"
                                "busy_poll_us: 250\n"
                                "log_level: debug\n"
                                "limits:\n"
                                "  max_connections: 500\n"
                                "  max_request_line: 4KiB\n"
                                "  max_header_bytes: 16384\n"
                                "  max_headers: 32\n"
                                "  max_body_bytes: 8MiB\n"
                                "  max_response_bytes: 1GiB\n"
                                "  max_sse_event_bytes: 65536B\n"
                                "  header_timeout_ms: 5s\n"
                                "  body_timeout_ms: 2m\n"
                                "  idle_timeout_ms: 1h\n"
                                "  send_timeout_ms: 750ms\n"
                                "  drain_timeout_ms: 0\n"
                                "  write_buffer_bytes: 512KiB\n"
                                "upstreams:\n"
                                "  - name: local\n"
                                "    url: http://127.0.0.1:8000/v1/\n"
                                "    api_key_env: WD_TEST_KEY\n"
                                "    timeout_ms: 90000\n"
                                "    connect_timeout_ms: 2s\n"
                                "    max_idle: 0\n"
                                "  - { name: other, url: \"http://localhost\" }\n"
                                "  - { name: v6, url: \"http://[::1]:9000/a/b//\" }\n"
                                "models:\n"
                                "  - { name: med-large, upstream: local, upstream_model: llama-3.1-70b }\n"
                                "  - { name: gpt-4o-mini, upstream: other }\n"
                                "  - name: \"quoted/name\"\n"
                                "    upstream: v6\n"
                                "audit: { file: /var/log/warden/access.jsonl }\n";

static void test_full_file(void **state)
{
    (void)state;
    char ip[64];
    wd_config_t *c = load_ok(full_yaml);
    assert_int_equal(c->refs, 1);
    assert_string_equal(c->path, "t.yaml");
    assert_string_equal(c->listen.text, "127.0.0.1:9080");
    assert_int_equal(c->listen.sa.ss_family, AF_INET);
    assert_int_equal(c->listen.salen, sizeof(struct sockaddr_in));
    assert_string_equal(ip_of(&c->listen, ip, sizeof ip), "127.0.0.1");
    assert_int_equal(port_of(&c->listen), 9080);
    assert_string_equal(c->admin.text, "[::1]:9081");
    assert_int_equal(c->admin.sa.ss_family, AF_INET6);
    assert_int_equal(c->admin.salen, sizeof(struct sockaddr_in6));
    assert_string_equal(ip_of(&c->admin, ip, sizeof ip), "::1");
    assert_int_equal(port_of(&c->admin), 9081);
    assert_string_equal(c->state_dir, "/var/lib/warden-test");
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->busy_poll_us, 250);
    assert_string_equal(c->log_level, "debug");

    const wd_server_limits_t *l = &c->limits;
    assert_int_equal(l->max_connections, 500);
    assert_int_equal(l->max_request_line, 4096);
    assert_int_equal(l->max_header_bytes, 16384);
    assert_int_equal(l->max_headers, 32);
    assert_int_equal(l->max_body_bytes, 8u << 20);
    assert_int_equal(l->max_response_bytes, 1u << 30);
    assert_int_equal(l->max_sse_event_bytes, 65536);
    assert_int_equal(l->header_timeout_ms, 5000);
    assert_int_equal(l->body_timeout_ms, 120000);
    assert_int_equal(l->idle_timeout_ms, 3600000);
    assert_int_equal(l->send_timeout_ms, 750);
    assert_int_equal(l->drain_timeout_ms, 0);
    assert_int_equal(l->write_buffer_bytes, 512 * 1024);

    assert_int_equal(c->nupstreams, 3);
    const wd_upstream_cfg_t *u = &c->upstreams[0];
    assert_string_equal(u->name, "local");
    assert_string_equal(u->url, "http://127.0.0.1:8000/v1/");
    assert_string_equal(u->host, "127.0.0.1");
    assert_string_equal(u->host_header, "127.0.0.1:8000");
    assert_int_equal(u->port, 8000);
    assert_string_equal(u->base_path, "/v1");
    assert_string_equal(u->addr.text, "127.0.0.1:8000");
    assert_string_equal(ip_of(&u->addr, ip, sizeof ip), "127.0.0.1");
    assert_int_equal(port_of(&u->addr), 8000);
    assert_string_equal(u->api_key_env, "WD_TEST_KEY");
    assert_string_equal(u->api_key, "sk-test-secret");
    assert_int_equal(u->timeout_ms, 90000);
    assert_int_equal(u->connect_timeout_ms, 2000);
    assert_int_equal(u->max_idle, 0);

    u = &c->upstreams[1];
    assert_string_equal(u->name, "other");
    assert_string_equal(u->host, "localhost");
    assert_string_equal(u->host_header, "localhost:80");
    assert_int_equal(u->port, 80);
    assert_string_equal(u->base_path, "");
    assert_string_equal(u->addr.text, "127.0.0.1:80");
    assert_null(u->api_key);
    assert_null(u->api_key_env);
    assert_int_equal(u->timeout_ms, 120000);
    assert_int_equal(u->connect_timeout_ms, 5000);
    assert_int_equal(u->max_idle, 64);

    u = &c->upstreams[2];
    assert_string_equal(u->host, "::1");
    assert_string_equal(u->host_header, "[::1]:9000");
    assert_int_equal(u->port, 9000);
    assert_string_equal(u->base_path, "/a/b");
    assert_string_equal(u->addr.text, "[::1]:9000");
    assert_int_equal(u->addr.sa.ss_family, AF_INET6);

    assert_int_equal(c->nmodels, 3);
    assert_string_equal(c->models[0].name, "med-large");
    assert_ptr_equal(c->models[0].upstream, &c->upstreams[0]);
    assert_string_equal(c->models[0].upstream_model, "llama-3.1-70b");
    assert_string_equal(c->models[1].name, "gpt-4o-mini");
    assert_ptr_equal(c->models[1].upstream, &c->upstreams[1]);
    assert_string_equal(c->models[1].upstream_model, "gpt-4o-mini"); /* defaults to name */
    assert_ptr_equal(c->models[2].upstream, &c->upstreams[2]);
    assert_string_equal(c->audit_file, "/var/log/warden/access.jsonl");

    /* lookup takes a length and must not read past it */
    const char req[] = "gpt-4o-mini-extra";
    assert_ptr_equal(wd_config_model(c, req, 11), &c->models[1]);
    assert_null(wd_config_model(c, req, sizeof req - 1));
    assert_null(wd_config_model(c, "med", 3));
    wd_config_unref(c);
}

static void test_defaults(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(MINIMAL);
    assert_string_equal(c->listen.text, "127.0.0.1:8080");
    assert_int_equal(c->admin.salen, 0);
    assert_null(c->admin.text);
    assert_null(c->state_dir);
    assert_int_equal(c->busy_poll_us, 0);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    assert_true(c->workers >= 1);
    assert_string_equal(c->log_level, "info");
    const wd_server_limits_t *l = &c->limits;
    assert_int_equal(l->max_connections, 10000);
    assert_int_equal(l->max_request_line, 8192);
    assert_int_equal(l->max_header_bytes, 32768);
    assert_int_equal(l->max_headers, 64);
    assert_int_equal(l->max_body_bytes, 4194304);
    assert_int_equal(l->max_response_bytes, 16777216);
    assert_int_equal(l->max_sse_event_bytes, 1048576);
    assert_int_equal(l->header_timeout_ms, 10000);
    assert_int_equal(l->body_timeout_ms, 30000);
    assert_int_equal(l->idle_timeout_ms, 60000);
    assert_int_equal(l->send_timeout_ms, 60000);
    assert_int_equal(l->drain_timeout_ms, 15000);
    assert_int_equal(l->write_buffer_bytes, 262144);
    assert_string_equal(c->audit_file, "-");
    assert_int_equal(c->upstreams[0].timeout_ms, 120000);
    assert_int_equal(c->upstreams[0].connect_timeout_ms, 5000);
    assert_int_equal(c->upstreams[0].max_idle, 64);
    wd_config_unref(c);

    /* an empty limits mapping and a partial one keep the other defaults */
    c = load_ok(MINIMAL "limits: { max_headers: 8 }\naudit: {}\nstate_dir: ~\n");
    assert_int_equal(c->limits.max_headers, 8);
    assert_int_equal(c->limits.max_connections, 10000);
    assert_string_equal(c->audit_file, "-");
    assert_null(c->state_dir);
    wd_config_unref(c);
}

static void test_listen_forms(void **state)
{
    (void)state;
    char ip[64];
    wd_config_t *c = load_ok("listen: { address: localhost:8080 }\n" UPS MODELS NOAUTH "admin: 0.0.0.0:9\n");
    assert_string_equal(c->listen.text, "localhost:8080");
    assert_string_equal(ip_of(&c->listen, ip, sizeof ip), "127.0.0.1");
    assert_int_equal(port_of(&c->listen), 8080);
    assert_string_equal(c->admin.text, "0.0.0.0:9");
    wd_config_unref(c);
    c = load_ok("listen: \"[::]:443\"\n" UPS MODELS NOAUTH);
    assert_int_equal(c->listen.sa.ss_family, AF_INET6);
    assert_int_equal(port_of(&c->listen), 443);
    wd_config_unref(c);
}

static void test_audit(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(MINIMAL "audit: { file: null }\n");
    assert_null(c->audit_file);
    wd_config_unref(c);
    c = load_ok(MINIMAL "audit: { file: \"off\" }\n");
    assert_null(c->audit_file);
    wd_config_unref(c);
    c = load_ok(MINIMAL "audit: { file: \"-\" }\n");
    assert_string_equal(c->audit_file, "-");
    wd_config_unref(c);
    expect_err(MINIMAL "audit: { file: [a] }\n", "7:16", "audit.file: expected a string, got a sequence");
    expect_err(MINIMAL "audit: \"-\"\n", "7:8", "audit: expected a mapping, got a scalar");
}

/* ---------------------------------------------------------------------------------------------- */
/* Error classes, each with its exact position */

static void test_unknown_key(void **state)
{
    (void)state;
    expect_err(MINIMAL "lisen: 1\n", "7:1",
               "unknown key 'lisen' in the top level; allowed keys: listen, admin, state_dir, workers, "
               "busy_poll_us, log_level, "
               "limits, upstreams, models, auth, roles, rate_limits, guard, guard_profiles, audit");
    expect_err(MINIMAL "limits:\n  max_conections: 5\n", "8:3",
               "unknown key 'max_conections' in limits; allowed keys: max_connections,");
    expect_err(
        "listen: 127.0.0.1:8080\nupstreams:\n  - { name: a, url: http://127.0.0.1/, tlz: true }\n" MODELS,
        "3:40", "unknown key 'tlz' in an upstream; allowed keys: name, url, tls, api_key_env, timeout_ms");
    expect_err("listen: { address: 127.0.0.1:1, tlz: x }\n" UPS MODELS, "1:33",
               "unknown key 'tlz' in a listener; allowed keys: address, tls");
    expect_err(MINIMAL "? [a, b]\n: 1\n", "7:3", "keys must be plain strings, got a sequence");
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_err(MINIMAL "limits: 5\n", "7:9", "limits: expected a mapping, got a scalar");
    expect_err(MINIMAL "limits: [1]\n", "7:9", "limits: expected a mapping, got a sequence");
    expect_err(MINIMAL "workers: abc\n", "7:10", "workers: expected an integer, got 'abc'");
    expect_err(MINIMAL "workers: \"4\"\n", "7:10", "workers: expected an integer, got the string '4'");
    expect_err(MINIMAL "workers: -1\n", "7:10", "workers: expected an integer, got '-1'");
    expect_err(MINIMAL "workers: 1.5\n", "7:10", "expected an integer");
    expect_err(MINIMAL "workers: 010\n", "7:10", "expected an integer"); /* octal or decimal? refused */
    expect_err(MINIMAL "workers: {a: 1}\n", "7:10", "workers: expected an integer, got a mapping");
    expect_err(MINIMAL "workers:\n", "7:9", "workers: expected an integer");
    expect_err(MINIMAL "limits: { max_body_bytes: 4MB }\n", "7:27",
               "limits.max_body_bytes: expected a byte size");
    expect_err(MINIMAL "limits: { idle_timeout_ms: 1.5s }\n", "7:28",
               "limits.idle_timeout_ms: expected a duration");
    expect_err(MINIMAL "log_level: loud\n", "7:12",
               "log_level: expected one of debug, info, warn, error, got 'loud'");
    expect_err(MINIMAL "state_dir: [a]\n", "7:12", "state_dir: expected a string, got a sequence");
    expect_err("listen: 127.0.0.1:8080\nupstreams: { name: a }\n" MODELS, "2:12",
               "upstreams: expected a sequence, got a mapping");
    expect_err("listen: 127.0.0.1:8080\nupstreams: []\n" MODELS, "2:12",
               "upstreams: at least one entry is required");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - m1\n", "5:5",
               "models[0]: expected a mapping, got a scalar");
    expect_err("listen: [1]\n" UPS MODELS, "1:9", "listen: expected an address or a mapping with 'address'");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { name: \"a\\tb\", upstream: local }\n", "5:13",
               "models[0].name: control characters are not allowed");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_err(MINIMAL "limits:\n  max_headers: 100\n", "8:16",
               "limits.max_headers: 100 is out of range (8..64)");
    expect_err(MINIMAL "workers: 257\n", "7:10", "workers: 257 is out of range (0..256)");
    expect_err(MINIMAL "busy_poll_us: 10001\n", "7:15", "busy_poll_us: 10001 is out of range (0..10000)");
    expect_err(MINIMAL "busy_poll_us: -1\n", "7:15", "busy_poll_us");
    expect_err(MINIMAL "limits: { max_connections: 0 }\n", "7:28", "0 is out of range (1..1000000)");
    expect_err(MINIMAL "limits: { max_body_bytes: 1GiB }\n", "7:27",
               "limits.max_body_bytes: 1GiB is out of range (1024..268435456 bytes)");
    expect_err(MINIMAL "limits: { max_body_bytes: 99999999999999999999999 }\n", "7:27", "is out of range");
    expect_err(MINIMAL "limits: { header_timeout_ms: 2h }\n", "7:30", "2h is out of range (100..3600000 ms)");
    expect_err("listen: 127.0.0.1:8080\nupstreams:\n  - { name: a, url: http://127.0.0.1/, max_idle: 10001 "
               "}\n" MODELS,
               "3:50", "upstreams[0].max_idle: 10001 is out of range (0..10000)");
    expect_err(
        "listen: 127.0.0.1:8080\nupstreams:\n  - { name: a, url: http://127.0.0.1/, timeout_ms: 0 }\n" MODELS,
        "3:52", "upstreams[0].timeout_ms: 0 is out of range (1..3600000 ms)");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_err(MINIMAL "workers: 2\nworkers: 3\n", "8:1",
               "duplicate key 'workers' in the top level (first at 7:1)");
    expect_err(MINIMAL "limits: { max_headers: 8, max_headers: 9 }\n", "7:27",
               "duplicate key 'max_headers' in limits (first at 7:11)");
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_err(UPS MODELS, "1:1", "missing required key 'listen' in the top level");
    expect_err("listen: 127.0.0.1:8080\n" MODELS, "1:1", "missing required key 'upstreams'");
    expect_err("listen: 127.0.0.1:8080\n" UPS, "1:1", "missing required key 'models'");
    expect_err("listen: 127.0.0.1:8080\nupstreams:\n  - { name: a }\n" MODELS, "3:5",
               "missing required key 'url' in upstreams[0]");
    expect_err("listen: {}\n" UPS MODELS, "1:9", "missing required key 'address' in listen");
}

static void test_bad_address(void **state)
{
    (void)state;
    expect_err("listen: 127.1:8080\n" UPS MODELS, "1:9", "listen: invalid address '127.1:8080'");
    expect_err("listen: ::1:8080\n" UPS MODELS, "1:9", "IPv6 addresses must be in brackets");
    expect_err("listen: 127.0.0.1\n" UPS MODELS, "1:9", "missing ':port'");
    expect_err("listen: 127.0.0.1:0\n" UPS MODELS, "1:9", "between 1 and 65535");
    expect_err("listen: 127.0.0.1:65536\n" UPS MODELS, "1:9", "between 1 and 65535");
    expect_err("listen: 127.0.0.1:80x\n" UPS MODELS, "1:9", "between 1 and 65535");
    expect_err("listen: \"[::1:8080\"\n" UPS MODELS, "1:9", "missing ']'");
    expect_err("listen: \"[nothex]:8080\"\n" UPS MODELS, "1:9", "not a valid IPv6 address");
    expect_err("listen: example.com:80\n" UPS MODELS, "1:9",
               "not a numeric IPv4 address (expected IPv4:port, [IPv6]:port or localhost:port)");
    expect_err("listen: \":8080\"\n" UPS MODELS, "1:9", "missing host");
    expect_err("listen: { address: 999.0.0.1:80 }\n" UPS MODELS, "1:20", "listen.address: invalid address");
    expect_err("listen: 127.0.0.1:8080\nadmin: localhost:8080\n" UPS MODELS, "2:8",
               "admin: the admin listener must not use the same address as 'listen'");
}

static void test_bad_url(void **state)
{
    (void)state;
#define U(url)                                                                                               \
    "listen: 127.0.0.1:8080\nupstreams:\n  - name: a\n    url: " url "\n"                                    \
    "models: [{ name: m, upstream: a }]\n"
    expect_err(U("ftp://x/"), "4:10", "expected http://host[:port][/path] or https://");
    expect_err(U("https://user:pw@127.0.0.1/"), "4:10", "credentials in the URL");
    expect_err(U("127.0.0.1:8000"), "4:10", "expected http://host[:port][/path]");
    expect_err(U("http://user:pw@127.0.0.1/"), "4:10", "credentials in the URL");
    expect_err(U("http://127.0.0.1/v1?x=1"), "4:10", "query string is not allowed");
    expect_err(U("http://127.0.0.1/v1#frag"), "4:10", "fragment");
    expect_err(U("http://127.0.0.1:0/"), "4:10", "between 1 and 65535");
    expect_err(U("http://127.0.0.1:99999/"), "4:10", "between 1 and 65535");
    expect_err(U("http:///v1"), "4:10", "missing host");
    expect_err(U("http://[::1/v1"), "4:10", "missing ']'");
    expect_err(U("http://ho$t/"), "4:10", "characters not allowed in a host name");
    expect_err(U("\"http://a b/\""), "4:10", "spaces are not allowed");
    expect_err(U("http://no-such-host.invalid/v1"), "4:10",
               "cannot resolve upstream host 'no-such-host.invalid'");
#undef U
    /* a trailing slash only is an empty prefix; the default port is 80 */
    wd_config_t *c = load_ok("listen: 127.0.0.1:8080\nupstreams: [{ name: a, url: \"HTTP://127.0.0.1/\" }]\n"
                             "models: [{ name: m, upstream: a }]\n" NOAUTH);
    assert_string_equal(c->upstreams[0].base_path, "");
    assert_int_equal(c->upstreams[0].port, 80);
    assert_string_equal(c->upstreams[0].host_header, "127.0.0.1:80");
    wd_config_unref(c);
}

static void test_api_key_env(void **state)
{
    (void)state;
    char err[ERRLEN];
#define K(var)                                                                                               \
    "listen: 127.0.0.1:8080\nupstreams:\n  - { name: a, url: http://127.0.0.1/, api_key_env: " var " }\n"    \
    "models: [{ name: m, upstream: a }]\n"
    expect_err(K("WD_TEST_MISSING"), "3:53",
               "upstreams[0].api_key_env: environment variable WD_TEST_MISSING is not set");
    expect_err(K("WD_TEST_EMPTY"), "3:53", "environment variable WD_TEST_EMPTY is empty");
    expect_err(K("WD_TEST_CRLF"), "3:53", "environment variable WD_TEST_CRLF contains control characters");
    expect_err(K("1BAD"), "3:53", "not a valid environment variable name");
    expect_err(K("\"A=B\""), "3:53", "not a valid environment variable name");
    /* the secret's value never appears in any message */
    assert_null(load(K("WD_TEST_CRLF"), err));
    assert_null(strstr(err, "X-Evil"));
#undef K
}

static void test_models(void **state)
{
    (void)state;
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { name: m1, upstream: nowhere }\n", "5:27",
               "models[0].upstream: unknown upstream 'nowhere'; defined upstreams: local");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { name: m1, upstream: local }\n"
               "  - { name: m2, upstream: local }\n  - { name: m1, upstream: local }\n",
               "7:13", "models[2].name: duplicate model name 'm1' (first defined at 5:13)");
    expect_err("listen: 127.0.0.1:8080\nupstreams:\n  - { name: a, url: http://127.0.0.1/ }\n"
               "  - name: a\n    url: http://127.0.0.1:81/\n" MODELS,
               "4:11", "upstreams[1].name: duplicate upstream name 'a' (first defined at 3:13)");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { upstream: local }\n", "5:5",
               "missing required key 'name' in models[0]");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { name: \"a b\", upstream: local }\n", "5:13",
               "names must not contain spaces");
}

static void test_yaml_features_rejected(void **state)
{
    (void)state;
    expect_err("listen: &l 127.0.0.1:8080\n" UPS MODELS, "1:9", "YAML anchors (&name) are not allowed");
    expect_err("listen: 127.0.0.1:8080\n" UPS "models:\n  - { name: m1, upstream: local }\n  - *x\n", "6:5",
               "YAML aliases (*name) are not allowed");
    expect_err("listen: !!str 127.0.0.1:8080\n" UPS MODELS, "1:9", "YAML tags (!tag) are not allowed");
    expect_err("a: &x [1]\nb: *x\n", "1:4", "anchors");
    expect_err("%TAG !e! tag:example.com,2000:\n---\nlisten: 1\n", "1:1", "%TAG directives are not allowed");
    /* the billion-laughs shape fails at the first anchor, before anything is expanded */
    expect_err("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "1:4", "anchors");
    /* merge keys need aliases, so they are refused too */
    expect_err(MINIMAL "<<: *base\n", "7:5", "aliases");
}

static void test_document_shape(void **state)
{
    (void)state;
    char err[ERRLEN];
    expect_err("", "1:1", "empty configuration file");
    expect_err("# only a comment\n\n", "1:1", "empty configuration file");
    expect_err("---\n", "2:1", "empty configuration file");
    expect_err(MINIMAL "---\nlisten: 127.0.0.1:1\n", "7:1", "only one YAML document is allowed");
    expect_err("--- a\n--- b\n", "2:1", "only one YAML document is allowed");
    expect_err("- a\n- b\n", "1:1", "the top level must be a mapping (key: value), got a sequence");
    expect_err("hello\n", "1:1", "the top level must be a mapping (key: value), got a scalar");
    expect_err("listen: [1\n", "2:1", "YAML syntax error");
    expect_err("a: 1\n b: 2\n", "2:3", "YAML syntax error");
    expect_err("a:\n\t- 1\n", "2:1", "YAML syntax error");
    /* input is a buffer: nothing past len is read */
    const char buf[] = MINIMAL "workers: abc";
    wd_config_t *c = wd_config_load_buf("t.yaml", buf, strlen(MINIMAL), err, sizeof err);
    assert_non_null(c);
    wd_config_unref(c);
    /* nesting is bounded */
    char deep[256] = "a: ";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    assert_null(wd_config_load_buf("t.yaml", deep, strlen(deep), err, sizeof err));
    assert_non_null(strstr(err, "nesting deeper than"));
    /* a tiny error buffer is never overrun and stays terminated */
    char small[8];
    assert_null(wd_config_load_buf("t.yaml", "x", 1, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_parse_units(void **state)
{
    (void)state;
    uint64_t v;
#define B(s, want)                                                                                           \
    do {                                                                                                     \
        assert_int_equal(wd_config_parse_bytes(s, strlen(s), &v), WD_OK);                                    \
        assert_true(v == (uint64_t)(want));                                                                  \
    } while (0)
#define MS(s, want)                                                                                          \
    do {                                                                                                     \
        assert_int_equal(wd_config_parse_ms(s, strlen(s), &v), WD_OK);                                       \
        assert_true(v == (uint64_t)(want));                                                                  \
    } while (0)
    B("0", 0);
    B("1024", 1024);
    B("512B", 512);
    B("512KiB", 512 * 1024);
    B("4MiB", 4194304);
    B("2GiB", 2ull << 30);
    MS("0", 0);
    MS("1500", 1500);
    MS("500ms", 500);
    MS("10s", 10000);
    MS("2m", 120000);
    MS("1h", 3600000);
    static const char *const bad_bytes[] = {"",   "KiB",    "4 MiB", "4MB",   "4mib", "4k",   "-1",
                                            "+1", "1.5MiB", "01",    "4MiBx", "0x10", "1_000"};
    for (size_t i = 0; i < sizeof bad_bytes / sizeof *bad_bytes; i++)
        assert_int_equal(wd_config_parse_bytes(bad_bytes[i], strlen(bad_bytes[i]), &v), WD_EINVAL);
    static const char *const bad_ms[] = {"", "s", "10 s", "10S", "1.5s", "10sec", "1d", "-5ms", "007"};
    for (size_t i = 0; i < sizeof bad_ms / sizeof *bad_ms; i++)
        assert_int_equal(wd_config_parse_ms(bad_ms[i], strlen(bad_ms[i]), &v), WD_EINVAL);
    assert_int_equal(wd_config_parse_bytes("18446744073709551616", 20, &v), WD_E2BIG);
    assert_int_equal(wd_config_parse_bytes("17179869184GiB", 14, &v), WD_E2BIG);
    assert_int_equal(wd_config_parse_ms("9999999999999999h", 17, &v), WD_E2BIG);
    /* length-bounded: "10s" inside a longer buffer parses as "10" */
    assert_int_equal(wd_config_parse_ms("10s", 2, &v), WD_OK);
    assert_true(v == 10);
#undef B
#undef MS
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/wd_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(full_yaml, f);
    fclose(f);
    char err[ERRLEN];
    wd_config_t *c = wd_config_load(path, err, sizeof err);
    if (!c) fail_msg("%s", err);
    assert_string_equal(c->path, path);
    assert_int_equal(c->nmodels, 3);
    assert_string_equal(c->upstreams[0].api_key, "sk-test-secret");
    wd_config_unref(c);

    /* errors carry the real path */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("listen: 127.0.0.1:8080\nworkers: 999\n", f);
    fclose(f);
    assert_null(wd_config_load(path, err, sizeof err));
    char want[128];
    snprintf(want, sizeof want, "%s:2:10: workers: 999 is out of range", path);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    unlink(path);

    assert_null(wd_config_load(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_null(wd_config_load("/tmp", err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));
}

static void test_refcount(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(MINIMAL);
    assert_ptr_equal(wd_config_ref(c), c);
    assert_int_equal(c->refs, 2);
    wd_config_unref(c);
    assert_int_equal(c->refs, 1);
    assert_string_equal(c->listen.text, "127.0.0.1:8080"); /* still alive */
    wd_config_unref(c); /* freed: ASan reports a leak if not, a use-after-free if freed twice */
    wd_config_unref(NULL);
    assert_null(wd_config_ref(NULL));
}

static void test_reload_check(void **state)
{
    (void)state;
    char err[ERRLEN];
    wd_config_t *a = load_ok(MINIMAL "workers: 2\nadmin: 127.0.0.1:8081\n");
    wd_config_t *b = load_ok(MINIMAL "workers: 2\nadmin: 127.0.0.1:8081\nlog_level: debug\n");
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_OK);
    wd_config_unref(b);
    b = load_ok("listen: 127.0.0.1:9090\n" UPS MODELS NOAUTH "workers: 2\nadmin: 127.0.0.1:8081\n");
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_EINVAL);
    assert_non_null(strstr(err, "reload refused: the listen address cannot change on reload "
                                "(127.0.0.1:8080 -> 127.0.0.1:9090)"));
    wd_config_unref(b);
    b = load_ok(MINIMAL "workers: 2\n");
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_EINVAL);
    assert_non_null(strstr(err, "the admin address cannot change on reload (127.0.0.1:8081 -> none)"));
    wd_config_unref(b);
    b = load_ok(MINIMAL "workers: 3\nadmin: 127.0.0.1:8081\n");
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_EINVAL);
    assert_non_null(strstr(err, "workers cannot change on reload (2 -> 3)"));
    wd_config_unref(b);
    /* same address written differently is not a change */
    b = load_ok("listen: { address: 127.0.0.1:8080 }\n" UPS MODELS NOAUTH
                "workers: 2\nadmin: localhost:8081\n");
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_OK);
    wd_config_unref(b);
    wd_config_unref(a);
}

/* ---------------------------------------------------------------------------------------------- */
/* Roles and authentication */

/* Like expect_err, but the expected position is where `needle` first occurs in the document, so the
 * test names the offending text rather than counting columns by hand. */
/* rate_limits.per_ip takes the same kinds of limit as a role: rates, concurrency and token budgets. */
static void test_per_ip_limits(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(MINIMAL "rate_limits:\n  per_ip: { rpm: 60, tpm: 1000, concurrent: 2, tokens_per_day: "
                                     "50000, tokens_per_month: 4000000000 }\n");
    assert_int_equal(c->rate.per_ip.rpm, 60);
    assert_int_equal(c->rate.per_ip.tpm, 1000);
    assert_int_equal(c->rate.per_ip.concurrent, 2);
    assert_int_equal(c->rate.per_ip.tokens_per_day, 50000);
    assert_int_equal(c->rate.per_ip.tokens_per_month, 4000000000u);
    wd_config_unref(c);
    c = load_ok(MINIMAL "rate_limits: { per_ip: { tokens_per_month: 7 } }\n");
    assert_int_equal(c->rate.per_ip.tokens_per_day, 0); /* absent: unlimited */
    assert_int_equal(c->rate.per_ip.tokens_per_month, 7);
    wd_config_unref(c);
    expect_err(MINIMAL "rate_limits: { per_ip: { tokens_per_day: 4000000001 } }\n", "7:42",
               "rate_limits.per_ip.tokens_per_day: 4000000001 is out of range (0..4000000000)");
    expect_err(MINIMAL "rate_limits: { per_ip: { tokens_per_month: -1 } }\n", "7:44",
               "rate_limits.per_ip.tokens_per_month: expected an integer, got '-1'");
    expect_err(MINIMAL "rate_limits: { per_ip: { tokens_per_day: 1.5 } }\n", "7:42",
               "rate_limits.per_ip.tokens_per_day: expected an integer");
    expect_err(MINIMAL "rate_limits: { per_ip: { tokens_per_week: 5 } }\n", "7:26",
               "unknown key 'tokens_per_week' in rate_limits.per_ip; allowed keys: rpm, tpm, concurrent, "
               "tokens_per_day, tokens_per_month");
    expect_err(MINIMAL "rate_limits: { per_ip: { per: role } }\n", "7:26", "unknown key 'per'");
}

static void expect_err_at(const char *yaml, const char *needle, const char *want)
{
    const char *hit = strstr(yaml, needle);
    if (!hit) fail_msg("test bug: '%s' is not in the document", needle);
    unsigned line = 1, col = 1;
    for (const char *p = yaml; p < hit; p++) {
        if (*p == '\n')
            line++, col = 1;
        else
            col++;
    }
    char loc[32];
    snprintf(loc, sizeof loc, "%u:%u", line, col);
    expect_err(yaml, loc, want);
}

#define HEAD "listen: 127.0.0.1:8080\n" UPS
static const char roles_yaml[] = HEAD "state_dir: /var/lib/warden\n"
                                      "models:\n"
                                      "  - { name: med-large, upstream: local }\n"
                                      "  - { name: scheduler, upstream: local }\n"
                                      "  - { name: llama-3-8b, upstream: local }\n"
                                      "auth:\n"
                                      "  mode: required\n"
                                      "  token_ttl_ms: 10m\n"
                                      "  token_max_ttl_ms: 2h\n"
                                      "  max_failures: 7\n"
                                      "  lockout_ms: 45s\n"
                                      "  lockout_max_ms: 1800000\n"
                                      "  refresh_ms: 1s\n"
                                      "roles:\n"
                                      "  clinician:\n"
                                      "    models: [med-large, \"llama-*\"]\n"
                                      "    endpoints: [chat, completions, models]\n"
                                      "    require_mfa: true\n"
                                      "  front-desk:\n"
                                      "    models: [scheduler]\n"
                                      "    endpoints: [embeddings, chat]\n"
                                      "    ips: [10.20.0.0/16, \"2001:db8::/32\", 192.168.1.7, \"::1\"]\n"
                                      "  ops: { admin: true, require_mfa: true }\n"
                                      "  everything:\n"
                                      "    models: [\"*\"]\n"
                                      "    endpoints: [models, embeddings, completions, chat, chat]\n"
                                      "    require_mfa: false\n"
                                      "    admin: false\n"
                                      "    ips: []\n";

static void test_roles_full(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(roles_yaml);
    assert_true(wd_config_auth_required(c));
    assert_string_equal(c->auth.mode, "required");
    assert_int_equal(c->auth.token_ttl_ms, 600000);
    assert_int_equal(c->auth.token_max_ttl_ms, 7200000);
    assert_int_equal(c->auth.max_failures, 7);
    assert_int_equal(c->auth.lockout_ms, 45000);
    assert_int_equal(c->auth.lockout_max_ms, 1800000);
    assert_int_equal(c->auth.refresh_ms, 1000);

    /* file order is kept */
    assert_int_equal(c->nroles, 4);
    const wd_role_t *r = &c->roles[0];
    assert_string_equal(r->name, "clinician");
    assert_int_equal(r->nmodels, 2);
    assert_string_equal(r->models[0], "med-large");
    assert_string_equal(r->models[1], "llama-*");
    assert_int_equal(r->endpoints, WD_EP_CHAT | WD_EP_COMPLETIONS | WD_EP_MODELS);
    assert_true(r->require_mfa);
    assert_false(r->admin);
    assert_int_equal(r->nips, 0);

    r = &c->roles[1];
    assert_string_equal(r->name, "front-desk");
    assert_int_equal(r->nmodels, 1);
    assert_string_equal(r->models[0], "scheduler");
    assert_int_equal(r->endpoints, WD_EP_EMBEDDINGS | WD_EP_CHAT);
    assert_false(r->require_mfa);
    assert_false(r->admin);
    assert_int_equal(r->nips, 4);
    assert_int_equal(r->ips[0].family, AF_INET);
    assert_int_equal(r->ips[0].prefix, 16);
    assert_memory_equal(r->ips[0].addr, "\x0a\x14\x00\x00", 4);
    assert_true(wd_cidr_match(&r->ips[0], "10.20.255.1"));
    assert_false(wd_cidr_match(&r->ips[0], "10.21.0.1"));
    assert_int_equal(r->ips[1].family, AF_INET6);
    assert_int_equal(r->ips[1].prefix, 32);
    assert_memory_equal(r->ips[1].addr, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\0", 16);
    assert_true(wd_cidr_match(&r->ips[1], "2001:db8:1::5"));
    assert_false(wd_cidr_match(&r->ips[1], "2001:db9::1"));
    /* a bare address is a single host */
    assert_int_equal(r->ips[2].family, AF_INET);
    assert_int_equal(r->ips[2].prefix, 32);
    assert_true(wd_cidr_match(&r->ips[2], "192.168.1.7"));
    assert_false(wd_cidr_match(&r->ips[2], "192.168.1.8"));
    assert_int_equal(r->ips[3].family, AF_INET6);
    assert_int_equal(r->ips[3].prefix, 128);

    r = &c->roles[2];
    assert_string_equal(r->name, "ops");
    assert_int_equal(r->nmodels, 0);
    assert_int_equal(r->endpoints, 0);
    assert_true(r->admin);
    assert_true(r->require_mfa);
    assert_int_equal(r->nips, 0);

    r = &c->roles[3];
    assert_string_equal(r->name, "everything");
    assert_int_equal(r->nmodels, 1);
    assert_string_equal(r->models[0], "*");
    assert_int_equal(r->endpoints, WD_EP_ALL); /* a repeated endpoint is harmless */
    assert_false(r->require_mfa);
    assert_false(r->admin);
    assert_int_equal(r->nips, 0);

    assert_ptr_equal(wd_policy_role(c->roles, c->nroles, "ops"), &c->roles[2]);
    assert_null(wd_policy_role(c->roles, c->nroles, "nobody"));
    wd_config_unref(c); /* ASan: every role string, list and range is freed */
}

static void test_auth_defaults(void **state)
{
    (void)state;
    /* no auth: section -> required, which needs state_dir */
    wd_config_t *c = load_ok("listen: 127.0.0.1:8080\n" UPS MODELS "state_dir: /srv/warden\n");
    assert_true(wd_config_auth_required(c));
    assert_string_equal(c->auth.mode, "required");
    assert_int_equal(c->auth.token_ttl_ms, 900000);
    assert_int_equal(c->auth.token_max_ttl_ms, 86400000);
    assert_int_equal(c->auth.max_failures, 5);
    assert_int_equal(c->auth.lockout_ms, 30000);
    assert_int_equal(c->auth.lockout_max_ms, 3600000);
    assert_int_equal(c->auth.refresh_ms, 250);
    assert_int_equal(c->nroles, 0);
    assert_null(c->roles);
    wd_config_unref(c);

    /* mode: none keeps every other default and needs no state_dir */
    c = load_ok(MINIMAL);
    assert_false(wd_config_auth_required(c));
    assert_string_equal(c->auth.mode, "none");
    assert_int_equal(c->auth.token_ttl_ms, 900000);
    assert_int_equal(c->auth.refresh_ms, 250);
    assert_null(c->state_dir);
    wd_config_unref(c);

    /* explicit required, bounds inclusive at both ends */
    c = load_ok("listen: 127.0.0.1:8080\n" UPS MODELS "state_dir: /srv/warden\n"
                "auth: { mode: required, token_ttl_ms: 1s, token_max_ttl_ms: 720h, max_failures: 100,\n"
                "        lockout_ms: 24h, lockout_max_ms: 168h, refresh_ms: 50ms }\n"
                "roles: {}\n");
    assert_true(wd_config_auth_required(c));
    assert_int_equal(c->auth.token_ttl_ms, 1000);
    assert_int_equal(c->auth.token_max_ttl_ms, 2592000000u);
    assert_int_equal(c->auth.max_failures, 100);
    assert_int_equal(c->auth.lockout_ms, 86400000);
    assert_int_equal(c->auth.lockout_max_ms, 604800000);
    assert_int_equal(c->auth.refresh_ms, 50);
    assert_int_equal(c->nroles, 0);
    wd_config_unref(c);
}

static void test_auth_errors(void **state)
{
    (void)state;
    char err[ERRLEN];
    /* required by default: state_dir missing, reported at the top level */
    assert_null(load("listen: 127.0.0.1:8080\n" UPS MODELS, err));
    assert_true(strncmp(err, "t.yaml:1:1: ", 12) == 0);
    assert_non_null(strstr(err, "state_dir"));
    assert_non_null(strstr(err, "`warden init`"));
    assert_non_null(strstr(err, "auth: { mode: none }"));
    /* ... or at the auth section when there is one */
    expect_err_at(HEAD MODELS "auth: { mode: required }\n", "{ mode: required",
                  "state_dir must name the directory");
    expect_err_at(HEAD MODELS "auth:\n  token_ttl_ms: 5m\n", "token_ttl_ms: 5m", "`warden init`");
    /* state_dir: null is unset */
    expect_err(HEAD MODELS "state_dir: ~\n", "1:1", "auth: { mode: none }");

    expect_err_at(HEAD MODELS "auth: { mode: optional }\n", "optional",
                  "auth.mode: expected one of required, none, got 'optional'");
    expect_err_at(HEAD MODELS "auth: { mode: [none] }\n", "[none]",
                  "auth.mode: expected one of required, none");
    expect_err_at(MINIMAL "auth: { mode: required }\n", "auth: { mode: required",
                  "duplicate key 'auth' in the top level (first at 6:1)");
    expect_err_at(HEAD MODELS "auth: { mode: none, token_ttl_ms: 25h }\n", "25h",
                  "auth.token_ttl_ms: 25h is out of range (1000..86400000 ms)");
    expect_err_at(HEAD MODELS "auth: { mode: none, token_ttl_ms: 999 }\n", "999",
                  "auth.token_ttl_ms: 999 is out of range (1000..86400000 ms)");
    expect_err_at(HEAD MODELS "auth: { mode: none, token_ttl_ms: \"15m\" }\n", "\"15m\"",
                  "auth.token_ttl_ms: expected a duration");
    expect_err_at(HEAD MODELS "auth: { mode: none, token_max_ttl_ms: 721h }\n", "721h", "out of range");
    expect_err_at(HEAD MODELS "auth: { mode: none, max_failures: 0 }\n", "0 }",
                  "auth.max_failures: 0 is out of range");
    expect_err_at(HEAD MODELS "auth: { mode: none, refresh_ms: 49ms }\n", "49ms",
                  "auth.refresh_ms: 49ms is out of range");
    expect_err_at(HEAD MODELS "auth: { mode: none, lockout_max_ms: 8d }\n", "8d",
                  "auth.lockout_max_ms: expected a duration");
    expect_err_at(
        HEAD MODELS "auth: { mode: none, ttl: 5m }\n", "ttl: 5m",
        "unknown key 'ttl' in auth; allowed keys: mode, token_ttl_ms, token_max_ttl_ms, max_failures, "
        "lockout_ms, lockout_max_ms, refresh_ms");
    /* a default lifetime beyond the maximum (written or defaulted) is a contradiction */
    expect_err_at(HEAD MODELS "auth: { mode: none, token_ttl_ms: 2h, token_max_ttl_ms: 1h }\n", "2h",
                  "auth.token_ttl_ms (7200000 ms) must not exceed auth.token_max_ttl_ms (3600000 ms)");
    expect_err_at(HEAD MODELS "auth: { mode: none, token_max_ttl_ms: 10m }\n", "10m",
                  "auth.token_ttl_ms (900000 ms) must not exceed auth.token_max_ttl_ms (600000 ms)");
    expect_err_at(HEAD MODELS "auth: { mode: none, lockout_ms: 2h }\n", "2h",
                  "auth.lockout_ms (7200000 ms) must not exceed auth.lockout_max_ms (3600000 ms)");
    wd_config_t *c = load_ok(HEAD MODELS "auth: { mode: none, token_ttl_ms: 1h, token_max_ttl_ms: 1h }\n");
    assert_int_equal(c->auth.token_ttl_ms, c->auth.token_max_ttl_ms);
    wd_config_unref(c);
}

/* Every role error names the node at fault; a failure after earlier roles were built frees them
 * (ASan's leak check runs at exit). */
static void test_role_errors(void **state)
{
    (void)state;
#define R MINIMAL "roles:\n"
    expect_err_at(R "  r:\n    models: [m1]\n    endpoints: [chat]\n    modles: [m1]\n", "modles",
                  "unknown key 'modles' in a role; allowed keys: models, endpoints, require_mfa, admin, ips");
    expect_err_at(
        R "  r: { models: [m1], endpoints: [chat, images] }\n", "images",
        "roles.r.endpoints[1]: unknown endpoint 'images'; endpoints: chat, completions, embeddings, models");
    expect_err_at(R "  r: { models: [m1], endpoints: [Chat] }\n", "Chat", "unknown endpoint 'Chat'");
    expect_err_at(R "  r: { models: [m1], endpoints: chat }\n", "chat }",
                  "roles.r.endpoints: expected a list of strings, got a scalar");
    expect_err_at(R "  r: { models: [m1, m2], endpoints: [chat] }\n", "m2",
                  "roles.r.models[1]: unknown model 'm2' (not in models:)");
    expect_err_at(R "  r: { models: [M1], endpoints: [chat] }\n", "M1", "unknown model 'M1'");
    expect_err_at(R "  r: { models: [\"*-large\"], endpoints: [chat] }\n", "\"*-large\"",
                  "roles.r.models[0]: '*' may only end a model pattern (e.g. llama-*)");
    expect_err_at(R "  r: { models: [\"l*a*\"], endpoints: [chat] }\n", "\"l*a*\"",
                  "'*' may only end a model pattern");
    expect_err_at(R "  r: { models: [\"\"], endpoints: [chat] }\n", "\"\"",
                  "roles.r.models[0]: expected a non-empty string");
    expect_err_at(R "  r: { admin: true, ips: [10.0.0.0/33] }\n", "10.0.0.0/33",
                  "roles.r.ips[0]: prefix /33 is too long for IPv4");
    expect_err_at(R "  r: { admin: true, ips: [10.0.0.0/8, 10.0.0.1/8] }\n", "10.0.0.1/8",
                  "roles.r.ips[1]: '10.0.0.1/8' has host bits set");
    expect_err_at(R "  r: { admin: true, ips: [\"2001:db8::1/32\"] }\n", "\"2001:db8::1/32\"",
                  "has host bits set");
    expect_err_at(R "  r: { admin: true, ips: [intranet] }\n", "intranet",
                  "roles.r.ips[0]: 'intranet' is not an IP address");
    expect_err_at(R "  r: { admin: true, ips: [10.0.0.0/] }\n", "10.0.0.0/", "invalid prefix length");
    expect_err_at(R "  r: { admin: true, ips: 10.0.0.0/8 }\n", "10.0.0.0/8",
                  "roles.r.ips: expected a list of address ranges, got a scalar");
    /* a role must grant something, and models need endpoints */
    expect_err_at(R "  r: { endpoints: [chat] }\n", "{ endpoints",
                  "roles.r: a role must grant models or admin: true");
    expect_err_at(R "  r: { models: [], endpoints: [chat] }\n", "{ models",
                  "a role must grant models or admin: true");
    expect_err_at(R "  r: { admin: false, require_mfa: true }\n", "{ admin",
                  "a role must grant models or admin: true");
    expect_err_at(R "  r:\n    require_mfa: true\n    ips: [10.0.0.0/8]\n", "require_mfa",
                  "a role must grant models or admin: true");
    expect_err_at(R "  r: { models: [m1] }\n", "{ models",
                  "roles.r: endpoints is required when a role grants models");
    expect_err_at(R "  r: { models: [m1], endpoints: [] }\n", "{ models", "endpoints is required");
    expect_err_at(R "  r: {}\n", "{}", "a role must grant models or admin: true");
    expect_err_at(R "  r: admin\n", "admin", "roles.r: expected a mapping, got a scalar");
    /* names */
    expect_err_at(R "  r: { admin: true }\n  s: { admin: true }\n  r: { models: [m1], endpoints: [chat] }\n",
                  "r: { models", "roles: duplicate role 'r' (first at 8:3)");
    expect_err_at(R "  \"a b\": { admin: true }\n", "\"a b\"", "names must not contain spaces");
    expect_err_at(R "  ? [x]\n  : { admin: true }\n", "[x]", "expected a string, got a sequence");
    expect_err_at(MINIMAL "roles: [ops]\n", "[ops]",
                  "roles: expected a mapping of role names to roles, got a sequence");
    /* booleans are true or false only */
    expect_err_at(R "  r: { admin: true, require_mfa: yes }\n", "yes",
                  "roles.r.require_mfa: expected true or false");
    expect_err_at(R "  r: { admin: true, require_mfa: \"true\" }\n", "\"true\"", "expected true or false");
    expect_err(R "  r: { admin: 1 }\n", "8:15", "roles.r.admin: expected true or false");
    expect_err_at(R "  r: { admin: True }\n", "True", "roles.r.admin: expected true or false");
    expect_err_at(R "  r: { admin: true, admin: true }\n", "admin: true }",
                  "duplicate key 'admin' in a role");
    /* failures after allocations: earlier roles, models, ranges */
    expect_err_at(R "  a: { models: [m1, \"m*\"], endpoints: [chat], ips: [10.0.0.0/8, \"::/0\"] }\n"
                    "  b: { models: [m1], endpoints: [chat], ips: [1.2.3.4/8] }\n",
                  "1.2.3.4/8", "roles.b.ips[0]: '1.2.3.4/8' has host bits set");
    expect_err_at(
        R "  a: { models: [m1], endpoints: [chat] }\n  b: { models: [m1, nope], endpoints: [chat] }\n",
        "nope", "unknown model 'nope'");
    expect_err_at(R "  a: { models: [m1], endpoints: [chat, models, nope] }\n", "nope",
                  "unknown endpoint 'nope'");
#undef R
}


/* ---------------------------------------------------------------------------------------------- */
/* TLS: certificates are made at test time (certgen.h) in a private directory */

/* Writes a config whose guard profile p is `profile` (a YAML flow mapping) to path. */
static void write_guard_config(const char *path, const char *profile)
{
    char cwd[1024];
    assert_non_null(getcwd(cwd, sizeof cwd)); /* the tests run from the source root: its rules/ */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            MINIMAL "guard: { rules_dir: %s/rules, default_profile: p }\n"
                    "guard_profiles:\n  p: %s\n",
            cwd, profile);
    fclose(f);
}

/* WD_CONFIG_NO_SCAN (the CLI's admin commands): the guard's rules are read and the profiles checked
 * against them, but nothing is compiled, so the loaded rules refuse to scan; a full load scans. */
static void test_guard_no_scan(void **state)
{
    (void)state;
    char dir[] = "/tmp/wd-test-noscan-XXXXXX", path[128], err[ERRLEN];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/c.yaml", dir);

    write_guard_config(path, "{ input: { pii: redact } }");
    wd_config_t *lite = wd_config_load_ex(path, WD_CONFIG_NO_SCAN, err, sizeof err);
    wd_config_t *full = wd_config_load(path, err, sizeof err);
    assert_non_null(lite);
    assert_non_null(full);
    assert_true(wd_guard_db_nrules(lite->guard_db) > 100);
    static const char text[] = "write to bob@example.com";
    wd_findings_t out;
    wd_findings_init(&out);
    wd_guard_scratch_t *s = wd_guard_scratch_new(lite->guard_db);
    assert_non_null(s);
    assert_int_equal(wd_guard_scan(lite->guard_db, s, text, sizeof text - 1, 0.5f, &out), WD_EINVAL);
    wd_guard_scratch_free(s);
    s = wd_guard_scratch_new(full->guard_db);
    assert_int_equal(wd_guard_scan(full->guard_db, s, text, sizeof text - 1, 0.5f, &out), WD_OK);
    assert_int_equal(out.n, 1);
    wd_guard_scratch_free(s);
    wd_findings_free(&out);
    wd_config_unref(lite);
    wd_config_unref(full);

    /* the profile is still checked against the rules */
    write_guard_config(path, "{ input: { no_such_class: redact } }");
    assert_null(wd_config_load_ex(path, WD_CONFIG_NO_SCAN, err, sizeof err));
    assert_non_null(strstr(err, "'no_such_class' is neither a data class nor an entity type"));
    unlink(path);
    rmdir(dir);
}

/* A profile's unreadable_input: block unless it says flag; nothing else is accepted. */
static void test_guard_unreadable_input(void **state)
{
    (void)state;
    char dir[] = "/tmp/wd-test-unread-XXXXXX", path[128], err[ERRLEN];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/c.yaml", dir);
    static const struct {
        const char *profile;
        wd_action_t want;
        const char *err;
    } cases[] = {
        {"{ input: { pii: redact } }", WD_ACT_BLOCK, NULL},
        {"{ input: { pii: redact }, unreadable_input: block }", WD_ACT_BLOCK, NULL},
        {"{ input: { pii: redact }, unreadable_input: flag }", WD_ACT_FLAG, NULL},
        {"{ input: { pii: redact }, unreadable_input: allow }", 0,
         "guard_profiles.p.unreadable_input: expected block or flag, got 'allow'"},
        {"{ input: { pii: redact }, unreadable_input: [flag] }", 0,
         "guard_profiles.p.unreadable_input: expected a string, got a sequence"},
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(cases); i++) {
        write_guard_config(path, cases[i].profile);
        wd_config_t *c = wd_config_load_ex(path, WD_CONFIG_NO_SCAN, err, sizeof err);
        if (cases[i].err) {
            assert_null(c);
            if (!strstr(err, cases[i].err)) fail_msg("%s: got \"%s\"", cases[i].profile, err);
            continue;
        }
        if (!c) fail_msg("%s: %s", cases[i].profile, err);
        assert_int_equal(wd_config_profile(c, "p")->unreadable, cases[i].want);
        wd_config_unref(c);
    }
    unlink(path);
    rmdir(dir);
}

/* A profile's allow list: values that pass whatever their type's action, numbers compared by their digits
 * and other values ignoring ASCII case; bad lists are refused with the entry's position. */
static void test_guard_allow_list(void **state)
{
    (void)state;
    char dir[] = "/tmp/wd-test-allow-XXXXXX", path[128], err[ERRLEN];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/c.yaml", dir);
    write_guard_config(path, "{ input: { pii: redact }, allow: [Help@Example.COM, '+1 (212) 736-4821', x, "
                             "'*@Corp.example'] }");
    wd_config_t *c = wd_config_load_ex(path, WD_CONFIG_NO_SCAN, err, sizeof err);
    if (!c) fail_msg("%s", err);
    const wd_guard_allow_t *a = wd_config_profile(c, "p")->allow;
    assert_int_equal(wd_guard_allow_count(a), 4);
    static const char *const yes[] = {"help@example.com",  "HELP@EXAMPLE.COM", "12127364821",
                                      "1-212-736-4821",    "+1 212.736.4821",  "X",
                                      "anna@corp.example", "B@CORP.EXAMPLE"};
    static const char *const no[] = {
        "help@example.org",    "help@examplecom", "2127364821", "+1 212 736 482", "1212736482a", "xx", "",
        "anna@x.corp.example", "corp.example"};
    for (size_t i = 0; i < WD_ARRAY_LEN(yes); i++)
        if (!wd_guard_allow_has(a, yes[i], strlen(yes[i]))) fail_msg("'%s' should be allowed", yes[i]);
    for (size_t i = 0; i < WD_ARRAY_LEN(no); i++)
        if (wd_guard_allow_has(a, no[i], strlen(no[i]))) fail_msg("'%s' should not be allowed", no[i]);
    wd_config_unref(c);

    static const struct {
        const char *profile, *err;
    } bad[] = {
        {"{ allow: [] }", "guard_profiles.p.allow: expected a list of 1 to 4096 values"},
        {"{ allow: help@example.com }", "guard_profiles.p.allow: expected a list of 1 to 4096 values"},
        {"{ allow: [a@b.co, A@B.CO] }", "guard_profiles.p.allow: 'A@B.CO' is listed twice"},
        {"{ allow: ['212-736-4821', '(212) 736 4821'] }",
         "guard_profiles.p.allow: '(212) 736 4821' is listed twice"},
        {"{ allow: ['--'] }",
         "guard_profiles.p.allow: '--': expected a value of at most 256 bytes with a letter or digit"},
        {"{ allow: ['*@a b.co'] }",
         "guard_profiles.p.allow: '*@a b.co': expected a value of at most 256 bytes"},
        {"{ allow: ['*@Ex.co', '*@ex.CO'] }", "guard_profiles.p.allow: '*@ex.CO' is listed twice"},
        {"{ allow: [[a]] }", "guard_profiles.p.allow: expected a string, got a sequence"},
    };
    for (size_t i = 0; i < WD_ARRAY_LEN(bad); i++) {
        write_guard_config(path, bad[i].profile);
        wd_config_t *b = wd_config_load_ex(path, WD_CONFIG_NO_SCAN, err, sizeof err);
        if (b) fail_msg("%s: loaded", bad[i].profile);
        if (!strstr(err, bad[i].err)) fail_msg("%s: got \"%s\"", bad[i].profile, err);
    }
    unlink(path);
    rmdir(dir);
}

static char tls_dir[64];
static char p_ca[128], p_cert[128], p_key[128], p_other_key[128], p_expired[128], p_expired_key[128], p_junk[128],
    p_cert2[128], p_key2[128];

static int setup_tls(void **state)
{
    (void)state;
    snprintf(tls_dir, sizeof tls_dir, "/tmp/wd-test-tls-XXXXXX");
    if (!mkdtemp(tls_dir)) return -1;
#define P(var, name) snprintf(var, sizeof var, "%s/" name, tls_dir)
    P(p_ca, "ca.pem");
    P(p_cert, "server.pem");
    P(p_key, "server.key");
    P(p_other_key, "other.key");
    P(p_expired, "expired.pem");
    P(p_expired_key, "expired.key");
    P(p_junk, "junk.pem");
    P(p_cert2, "server2.pem");
    P(p_key2, "server2.key");
#undef P
    certgen_t ca = certgen_make("test CA", NULL, NULL, -60, 86400);
    certgen_t leaf = certgen_make("localhost", &ca, "DNS:localhost,IP:127.0.0.1", -60, 86400);
    certgen_t leaf2 = certgen_make("localhost", &ca, "DNS:localhost,IP:127.0.0.1", -60, 86400);
    certgen_t other = certgen_make("other", &ca, "DNS:other.test", -60, 86400);
    certgen_t old = certgen_make("localhost", &ca, "DNS:localhost", -7200, -3600);
    certgen_write(&ca, p_ca, NULL);
    certgen_write(&leaf, p_cert, p_key);
    certgen_write(&leaf2, p_cert2, p_key2);
    certgen_write(&other, NULL, p_other_key);
    certgen_write(&old, p_expired, p_expired_key);
    FILE *f = fopen(p_junk, "w");
    fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    certgen_free(&ca);
    certgen_free(&leaf);
    certgen_free(&leaf2);
    certgen_free(&other);
    certgen_free(&old);
    return 0;
}

static int teardown_tls(void **state)
{
    (void)state;
    const char *files[] = {p_ca, p_cert, p_key, p_other_key, p_expired, p_expired_key, p_junk, p_cert2, p_key2};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(files[i]);
    rmdir(tls_dir);
    return 0;
}

static char *tls_yaml(const char *listen_tls, const char *upstream)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "listen: { address: 127.0.0.1:8443%s%s }\n"
             "upstreams:\n  - { name: local, %s }\n" MODELS NOAUTH,
             listen_tls ? ", tls: " : "", listen_tls ? listen_tls : "",
             upstream ? upstream : "url: http://127.0.0.1:8000/v1");
    return buf;
}

static void test_tls_listener(void **state)
{
    (void)state;
    char tls[512];
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_cert, p_key);
    wd_config_t *c = load_ok(tls_yaml(tls, NULL));
    assert_non_null(c->listen_tls.ctx);
    assert_string_equal(c->listen_tls.cert, p_cert);
    assert_string_equal(c->listen_tls.key, p_key);
    assert_string_equal(c->listen_tls.min_version, "1.3");
    assert_null(c->admin_tls.ctx);
    wd_config_unref(c);

    snprintf(tls, sizeof tls, "{ cert: %s, key: %s, min_version: \"1.2\" }", p_cert, p_key);
    c = load_ok(tls_yaml(tls, NULL));
    assert_string_equal(c->listen_tls.min_version, "1.2");
    wd_config_unref(c);

    /* the admin listener takes the same block */
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "listen: 127.0.0.1:8080\nadmin: { address: 127.0.0.1:8081, tls: { cert: %s, key: %s } }\n" UPS MODELS
                 NOAUTH,
             p_cert, p_key);
    c = load_ok(yaml);
    assert_null(c->listen_tls.ctx);
    assert_non_null(c->admin_tls.ctx);
    wd_config_unref(c);

    /* a relative path is relative to the config file's directory */
    snprintf(yaml, sizeof yaml, "listen: { address: 127.0.0.1:8443, tls: { cert: server.pem, key: server.key } }\n" UPS
                                MODELS NOAUTH);
    char name[160], err[ERRLEN];
    snprintf(name, sizeof name, "%s/warden.yaml", tls_dir);
    c = wd_config_load_buf(name, yaml, strlen(yaml), err, sizeof err);
    if (!c) fail_msg("unexpected error: %s", err);
    assert_string_equal(c->listen_tls.cert, p_cert);
    wd_config_unref(c);
}

static void test_tls_listener_errors(void **state)
{
    (void)state;
    char tls[512];
    snprintf(tls, sizeof tls, "{ cert: /nonexistent/cert.pem, key: %s }", p_key);
    expect_err_at(tls_yaml(tls, NULL), "/nonexistent", "listen.tls.cert: /nonexistent/cert.pem: cannot open: No such file");
    snprintf(tls, sizeof tls, "{ cert: %s, key: /nonexistent/key.pem }", p_cert);
    expect_err_at(tls_yaml(tls, NULL), "/nonexistent", "listen.tls.key: /nonexistent/key.pem: cannot open");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_cert, p_other_key);
    expect_err_at(tls_yaml(tls, NULL), p_other_key, "does not match the certificate");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_expired, p_expired_key);
    expect_err_at(tls_yaml(tls, NULL), p_expired, "listen.tls.cert: the certificate in");
    expect_err_at(tls_yaml(tls, NULL), p_expired, "expired");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_junk, p_key);
    expect_err_at(tls_yaml(tls, NULL), p_junk, "invalid PEM certificate #1");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_key, p_key);
    expect_err_at(tls_yaml(tls, NULL), p_key, "listen.tls.cert: no certificate (-----BEGIN CERTIFICATE-----) found");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_cert, p_ca);
    expect_err_at(tls_yaml(tls, NULL), p_ca, "listen.tls.key: no private key (-----BEGIN PRIVATE KEY-----) found");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", tls_dir, p_key);
    expect_err_at(tls_yaml(tls, NULL), tls_dir, ": not a regular file");
    snprintf(tls, sizeof tls, "{ cert: %s }", p_cert);
    expect_err_at(tls_yaml(tls, NULL), "{ cert", "missing required key 'key' in listen.tls");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s, min_version: 1.1 }", p_cert, p_key);
    expect_err_at(tls_yaml(tls, NULL), "1.1", "listen.tls.min_version: expected one of 1.2, 1.3, got '1.1'");
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s, ciphers: x }", p_cert, p_key);
    expect_err_at(tls_yaml(tls, NULL), "ciphers", "unknown key 'ciphers' in a listener's tls; allowed keys: cert, key, min_version");
    expect_err_at(tls_yaml("on", NULL), "on", "listen.tls: expected a mapping");
}

static void test_tls_upstream(void **state)
{
    (void)state;
    wd_config_t *c = load_ok(tls_yaml(NULL, "url: https://127.0.0.1/v1"));
    const wd_upstream_cfg_t *u = &c->upstreams[0];
    assert_true(u->tls.enabled);
    assert_true(u->tls.verify);
    assert_non_null(u->tls.ctx);
    assert_null(u->tls.ca);
    assert_string_equal(u->tls.server_name, "127.0.0.1");
    assert_int_equal(u->port, 443);
    assert_string_equal(u->host_header, "127.0.0.1:443");
    assert_string_equal(u->base_path, "/v1");
    wd_config_unref(c);

    char up[512];
    snprintf(up, sizeof up, "url: HTTPS://localhost:8443, tls: { ca: %s, server_name: api.internal }", p_ca);
    c = load_ok(tls_yaml(NULL, up));
    u = &c->upstreams[0];
    assert_int_equal(u->port, 8443);
    assert_string_equal(u->tls.ca, p_ca);
    assert_string_equal(u->tls.server_name, "api.internal");
    assert_non_null(u->tls.ctx);
    wd_config_unref(c);

    c = load_ok(tls_yaml(NULL, "url: https://127.0.0.1:8443, tls: { verify: false }"));
    assert_false(c->upstreams[0].tls.verify);
    assert_non_null(c->upstreams[0].tls.ctx);
    wd_config_unref(c);

    /* plain http has no TLS context */
    c = load_ok(tls_yaml(NULL, NULL));
    assert_false(c->upstreams[0].tls.enabled);
    assert_null(c->upstreams[0].tls.ctx);
    wd_config_unref(c);
}

static void test_tls_upstream_errors(void **state)
{
    (void)state;
    char up[512];
    snprintf(up, sizeof up, "url: http://127.0.0.1:8000, tls: { ca: %s }", p_ca);
    expect_err_at(tls_yaml(NULL, up), "{ ca", "upstreams[0].tls: TLS settings apply only to https:// upstreams");
    expect_err_at(tls_yaml(NULL, "url: https://127.0.0.1, tls: { ca: /nonexistent/ca.pem }"), "/nonexistent",
                  "upstreams[0].tls.ca: /nonexistent/ca.pem: cannot open");
    snprintf(up, sizeof up, "url: https://127.0.0.1, tls: { ca: %s }", p_key);
    expect_err_at(tls_yaml(NULL, up), p_key, "upstreams[0].tls.ca: no CA certificate");
    snprintf(up, sizeof up, "url: https://127.0.0.1, tls: { ca: %s }", p_junk);
    expect_err_at(tls_yaml(NULL, up), p_junk, "invalid PEM certificate #1");
    snprintf(up, sizeof up, "url: https://127.0.0.1, tls: { verify: false, ca: %s }", p_ca);
    expect_err_at(tls_yaml(NULL, up), p_ca, "a CA file has no effect with verify: false");
    expect_err_at(tls_yaml(NULL, "url: https://127.0.0.1, tls: { verify: no }"), "no }",
                  "upstreams[0].tls.verify: expected true or false");
    expect_err_at(tls_yaml(NULL, "url: https://127.0.0.1, tls: { server_name: \"a b\" }"), "\"a b",
                  "upstreams[0].tls.server_name: 'a b' is not a DNS name or an IP address");
    expect_err_at(tls_yaml(NULL, "url: https://127.0.0.1, tls: { sni: x }"), "sni",
                  "unknown key 'sni' in an upstream's tls; allowed keys: ca, verify, server_name");
}

static void test_tls_reload(void **state)
{
    (void)state;
    char tls[512], tls2[512], err[ERRLEN];
    snprintf(tls, sizeof tls, "{ cert: %s, key: %s }", p_cert, p_key);
    snprintf(tls2, sizeof tls2, "{ cert: %s, key: %s, min_version: \"1.2\" }", p_cert2, p_key2);
    wd_config_t *plain = load_ok(tls_yaml(NULL, NULL));
    wd_config_t *a = load_ok(tls_yaml(tls, NULL));
    wd_config_t *b = load_ok(tls_yaml(tls2, NULL));
    /* a new certificate (or version floor) is what reloads are for */
    assert_int_equal(wd_config_check_reload(a, b, err, sizeof err), WD_OK);
    assert_ptr_not_equal(a->listen_tls.ctx, b->listen_tls.ctx);
    /* turning TLS on or off is not */
    assert_int_equal(wd_config_check_reload(plain, a, err, sizeof err), WD_EINVAL);
    assert_non_null(strstr(err, "TLS on the listen listener cannot be turned on on reload"));
    assert_int_equal(wd_config_check_reload(a, plain, err, sizeof err), WD_EINVAL);
    assert_non_null(strstr(err, "cannot be turned off"));
    wd_config_unref(plain);
    wd_config_unref(a);
    wd_config_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_audit),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_per_ip_limits),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_api_key_env),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_yaml_features_rejected),
        cmocka_unit_test(test_document_shape),
        cmocka_unit_test(test_parse_units),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_reload_check),
        cmocka_unit_test(test_roles_full),
        cmocka_unit_test(test_auth_defaults),
        cmocka_unit_test(test_auth_errors),
        cmocka_unit_test(test_role_errors),
        cmocka_unit_test(test_guard_no_scan),
        cmocka_unit_test(test_guard_unreadable_input),
        cmocka_unit_test(test_guard_allow_list),
        cmocka_unit_test_setup_teardown(test_tls_listener, setup_tls, teardown_tls),
        cmocka_unit_test_setup_teardown(test_tls_listener_errors, setup_tls, teardown_tls),
        cmocka_unit_test_setup_teardown(test_tls_upstream, setup_tls, teardown_tls),
        cmocka_unit_test_setup_teardown(test_tls_upstream_errors, setup_tls, teardown_tls),
        cmocka_unit_test_setup_teardown(test_tls_reload, setup_tls, teardown_tls),
    };
    return cmocka_run_group_tests(tests, setup_env, NULL);
}

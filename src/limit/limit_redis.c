/* limit_redis: Redis backend of the limiter (see limit_redis.h for the model).
 *
 * Timekeeping inside the scripts: Redis runs Lua 5.1, whose only number type is a double, and
 * CLOCK_REALTIME nanoseconds (~1.7e18) do not fit its 53-bit mantissa. Absolute instants are
 * therefore stored as decimal strings of nanoseconds and every computation is done on times
 * relative to the script's `now`, split into seconds and nanoseconds when parsing; relative
 * values stay far below 2^53 (a GCRA window is 60 s, and a reconciliation debt is capped at 2^52
 * ns, about 52 days), so the arithmetic is exact integer arithmetic, the same as the local
 * backend's int64 arithmetic. */
#include "limit/limit_redis.h"

#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- scripts ----------------------------------------------------------------------------------- */

/* ARGV[1] is the pinned clock for tests ("" = Redis TIME). Scripts call TIME before writing,
 * which Redis >= 5 replicates by effects, so replicas and AOF see the writes, not the clock. */
#define LUA_CLOCK                                                                                      \
    "local floor = math.floor\n"                                                                       \
    "local P = 60000000000\n"                                                                          \
    "local MAXREL = 4503599627370496\n"                                                                \
    "local now_s, now_f\n"                                                                             \
    "if ARGV[1] ~= '' then\n"                                                                          \
    "  now_s = tonumber(string.sub(ARGV[1], 1, -10)) or 0\n"                                           \
    "  now_f = tonumber(string.sub(ARGV[1], -9))\n"                                                    \
    "else\n"                                                                                           \
    "  local t = redis.call('TIME')\n"                                                                 \
    "  now_s = tonumber(t[1])\n"                                                                       \
    "  now_f = tonumber(t[2]) * 1000\n"                                                                \
    "end\n"                                                                                            \
    "local now_ms = now_s * 1000 + floor(now_f / 1000000)\n"                                           \
    "local function fmt(x) return string.format('%d', x) end\n"                                        \
    /* stored absolute ns (string) -> ns relative to now; a missing key is 'now' (fresh) */             \
    "local function rel(v)\n"                                                                          \
    "  if not v then return 0 end\n"                                                                   \
    "  return ((tonumber(string.sub(v, 1, -10)) or 0) - now_s) * 1e9 + (tonumber(string.sub(v, -9)) - now_f)\n" \
    "end\n"                                                                                            \
    "local function abs(r)\n"                                                                          \
    "  local tot = now_f + r\n"                                                                        \
    "  local c = floor(tot / 1e9)\n"                                                                   \
    "  return string.format('%d%09d', now_s + c, tot - c * 1e9)\n"                                     \
    "end\n"                                                                                            \
    "local function msc(ns)\n"                                                                         \
    "  if ns <= 0 then return 0 end\n"                                                                 \
    "  if ns > MAXREL then ns = MAXREL end\n"                                                          \
    "  return floor((ns + 999999) / 1000000)\n"                                                        \
    "end\n"                                                                                            \
    /* a tat at or before now is the same as no state: let the key go */                               \
    "local function setrel(key, r)\n"                                                                  \
    "  if r > MAXREL then r = MAXREL end\n"                                                            \
    "  if r > 0 then redis.call('SET', key, abs(r), 'PX', msc(r)) else redis.call('DEL', key) end\n"   \
    "end\n"                                                                                            \
    "local function lease_expire(key, lease)\n"                                                        \
    "  if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, lease) end\n"                \
    "end\n"

/* UTC day and calendar month windows (civil-from-days, H. Hinnant), valid for any date. */
#define LUA_WINDOWS                                                                                    \
    "local function civil(z)\n"                                                                        \
    "  z = z + 719468\n"                                                                               \
    "  local era = floor(z / 146097)\n"                                                                \
    "  local doe = z - era * 146097\n"                                                                 \
    "  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)\n" \
    "  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))\n"                            \
    "  local mp = floor((5 * doy + 2) / 153)\n"                                                        \
    "  local m = mp < 10 and mp + 3 or mp - 9\n"                                                       \
    "  local y = yoe + era * 400\n"                                                                    \
    "  if m <= 2 then y = y + 1 end\n"                                                                 \
    "  return y, m\n"                                                                                  \
    "end\n"                                                                                            \
    "local function days_from_civil(y, m)\n"                                                           \
    "  if m <= 2 then y = y - 1 end\n"                                                                 \
    "  local era = floor(y / 400)\n"                                                                   \
    "  local yoe = y - era * 400\n"                                                                    \
    "  local mp = m > 2 and m - 3 or m + 9\n"                                                          \
    "  local doy = floor((153 * mp + 2) / 5)\n"                                                        \
    "  return era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468\n"           \
    "end\n"                                                                                            \
    "local day = floor(now_s / 86400)\n"                                                               \
    "local day_left = ((day + 1) * 86400 - now_s) * 1e9 - now_f\n"                                     \
    "local cy, cm = civil(day)\n"                                                                      \
    "local mon = cy * 12 + cm - 1\n"                                                                   \
    "local ny, nm = cy, cm + 1\n"                                                                      \
    "if nm > 12 then ny, nm = cy + 1, 1 end\n"                                                         \
    "local mon_left = (days_from_civil(ny, nm) * 86400 - now_s) * 1e9 - now_f\n"                       \
    "local function used(key, w)\n"                                                                    \
    "  local h = redis.call('HMGET', key, 'w', 'u')\n"                                                 \
    "  if tonumber(h[1]) == w then return tonumber(h[2]) or 0 end\n"                                   \
    "  return 0\n"                                                                                     \
    "end\n"                                                                                            \
    "local function setused(key, w, u, left)\n"                                                        \
    "  if u < 0 then u = 0 end\n"                                                                      \
    "  redis.call('HSET', key, 'w', fmt(w), 'u', fmt(u))\n"                                            \
    "  redis.call('PEXPIRE', key, msc(left))\n"                                                        \
    "end\n"

/* KEYS: five per scope (rpm, tpm, conc, day, month). ARGV: clock, n, tokens, request id, lease ms,
 * then five limits per scope. Mirrors wd_limiter_admit (local.c) decision for decision: every check
 * runs on a working copy of the state (a key named by two scopes is shared, as there), the reported
 * refusal is the one that lasts longest (-1 = never outranks any time; ties keep the first found in
 * scope order, then requests, tokens, concurrency, day, month), headers show the most constrained
 * scope (least remaining, then longest reset) after the decision, or the untouched state when it
 * refuses, and nothing is written unless every check passed. Concurrency members are
 * "<request id>#<scope index>".
 * Returns {outcome, scope, retry_ms, limit_req, remaining_req, reset_req_ms, limit_tok,
 * remaining_tok, reset_tok_ms}. */
static const char SCRIPT_ADMIT[] =
    LUA_CLOCK LUA_WINDOWS
    "local n = tonumber(ARGV[2])\n"
    "local tokens = tonumber(ARGV[3])\n"
    "local id = ARGV[4]\n"
    "local lease = tonumber(ARGV[5])\n"
    "local outcome, scope, retry = 0, -1, 0\n"
    "local orig, ws, gdirty, cadd, bdirty = {}, {}, {}, {}, {}\n"
    "local function refuse(o, i, ns)\n"
    "  if outcome ~= 0 then\n"
    "    local rank = ns < 0 and math.huge or ns\n"
    "    local cur = retry < 0 and math.huge or retry\n"
    "    if rank <= cur then return end\n"
    "  end\n"
    "  outcome, scope, retry = o, i, ns\n"
    "end\n"
    "local function tat_of(key)\n"
    "  if ws[key] == nil then\n"
    "    local t = rel(redis.call('GET', key))\n"
    "    if t < 0 then t = 0 end\n"
    "    orig[key] = t\n"
    "    ws[key] = t\n"
    "  end\n"
    "  return ws[key]\n"
    "end\n"
    "local function room(full, T, state)\n"
    "  local x = full - state\n"
    "  if x <= 0 then return 0 end\n"
    "  return floor(x / T)\n"
    "end\n"
    /* limit.h GCRA with now = 0: T = period/limit, tau + T = T*limit; returns ok, retry ns
     * (-1 = never), remaining, reset ns */
    "local function gcra(limit, cost, key)\n"
    "  local T = floor(P / limit)\n"
    "  local full = T * limit\n"
    "  local tat0 = tat_of(key)\n"
    "  if cost <= limit then\n"
    "    local new = tat0 + cost * T\n"
    "    if new <= full then\n"
    "      if cost > 0 then ws[key] = new; gdirty[key] = true end\n"
    "      return true, 0, room(full, T, new), new\n"
    "    end\n"
    "    return false, new - full, room(full, T, tat0), tat0\n"
    "  end\n"
    "  return false, -1, room(full, T, tat0), tat0\n"
    "end\n"
    "local hdr = {{-1, -1, -1}, {-1, -1, -1}}\n"
    "local function report(h, lim, rem, reset)\n"
    "  if h[1] >= 0 and (rem > h[2] or (rem == h[2] and reset <= h[3])) then return end\n"
    "  h[1], h[2], h[3] = lim, rem, reset\n"
    "end\n"
    "local function budget(key, win, left, lim)\n"
    "  if ws[key] == nil then ws[key] = used(key, win) end\n"
    "  if ws[key] + tokens <= lim then\n"
    "    ws[key] = ws[key] + tokens\n"
    "    if tokens > 0 then bdirty[key] = {win, left} end\n"
    "    return true\n"
    "  end\n"
    "  if tokens > lim then return false, -1 end\n"
    "  return false, left\n"
    "end\n"
    "local lims = {}\n"
    "for i = 0, n - 1 do\n"
    "  local k, a = i * 5, 5 + i * 5\n"
    "  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local dlim, mlim = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "  lims[i] = {rpm, tpm}\n"
    "  if rpm > 0 then\n"
    "    local ok, x, rem, reset = gcra(rpm, 1, KEYS[k + 1])\n"
    "    if not ok then refuse(1, i, x) end\n"
    "    report(hdr[1], rpm, rem, reset)\n"
    "  end\n"
    "  if tpm > 0 then\n"
    "    local ok, x, rem, reset = gcra(tpm, tokens, KEYS[k + 2])\n"
    "    if not ok then refuse(2, i, x) end\n"
    "    report(hdr[2], tpm, rem, reset)\n"
    "  end\n"
    "  if conc > 0 then\n"
    "    local key = KEYS[k + 3]\n"
    "    if ws[key] == nil then\n"
    "      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. fmt(now_ms))\n"
    "      ws[key] = redis.call('ZCARD', key)\n"
    "    end\n"
    "    if ws[key] >= conc then refuse(3, i, 1e9)\n"
    "    else ws[key] = ws[key] + 1; cadd[#cadd + 1] = {key, id .. '#' .. i} end\n"
    "  end\n"
    "  if dlim > 0 then\n"
    "    local ok, x = budget(KEYS[k + 4], day, day_left, dlim)\n"
    "    if not ok then refuse(4, i, x) end\n"
    "  end\n"
    "  if mlim > 0 then\n"
    "    local ok, x = budget(KEYS[k + 5], mon, mon_left, mlim)\n"
    "    if not ok then refuse(4, i, x) end\n"
    "  end\n"
    "end\n"
    "if outcome == 0 then\n"
    "  for key in pairs(gdirty) do setrel(key, ws[key]) end\n"
    "  for _, e in ipairs(cadd) do\n"
    "    redis.call('ZADD', e[1], fmt(now_ms + lease), e[2])\n"
    "    lease_expire(e[1], lease)\n"
    "  end\n"
    "  for key, e in pairs(bdirty) do setused(key, e[1], ws[key], e[2]) end\n"
    "else\n"
    /* nothing charged: report what the client will find on retry */
    "  hdr = {{-1, -1, -1}, {-1, -1, -1}}\n"
    "  for i = 0, n - 1 do\n"
    "    for kind = 1, 2 do\n"
    "      local lim = lims[i][kind]\n"
    "      if lim > 0 then\n"
    "        local T = floor(P / lim)\n"
    "        local t = orig[KEYS[i * 5 + kind]]\n"
    "        report(hdr[kind], lim, room(T * lim, T, t), t)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local rms = 0\n"
    "if outcome ~= 0 then rms = retry < 0 and -1 or msc(retry) end\n"
    "local function hms(h) if h[1] < 0 then return -1 end return msc(h[3]) end\n"
    "return {outcome, scope, rms, hdr[1][1], hdr[1][2], hms(hdr[1]), hdr[2][1], hdr[2][2], hms(hdr[2])}\n";

/* KEYS as for admission. ARGV: clock, n, delta (actual - reserved), request id ("" = no slot
 * held), then five limits per scope. A charge starts from max(tat, now); a refund never moves
 * tat below now (limit.h wd_gcra_adjust); budgets never go below zero. */
static const char SCRIPT_FINISH[] =
    LUA_CLOCK LUA_WINDOWS
    "local n = tonumber(ARGV[2])\n"
    "local delta = tonumber(ARGV[3])\n"
    "local id = ARGV[4]\n"
    "for i = 0, n - 1 do\n"
    "  local k, a = i * 5, 4 + i * 5\n"
    "  local tpm, conc = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local dlim, mlim = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "  if tpm > 0 and delta ~= 0 then\n"
    "    local r = rel(redis.call('GET', KEYS[k + 2]))\n"
    "    if delta > 0 and r < 0 then r = 0 end\n"
    "    setrel(KEYS[k + 2], r + delta * floor(P / tpm))\n"
    "  end\n"
    "  if conc > 0 and id ~= '' then redis.call('ZREM', KEYS[k + 3], id .. '#' .. i) end\n"
    "  if dlim > 0 and delta ~= 0 then setused(KEYS[k + 4], day, used(KEYS[k + 4], day) + delta, day_left) end\n"
    "  if mlim > 0 and delta ~= 0 then setused(KEYS[k + 5], mon, used(KEYS[k + 5], mon) + delta, mon_left) end\n"
    "end\n"
    "return 0\n";

/* KEYS: the concurrency sets holding this request. ARGV: clock, lease ms, then the member in each
 * set. Only a member that still exists is renewed: one that expired was already given away. */
static const char SCRIPT_RENEW[] =
    LUA_CLOCK
    "local lease = tonumber(ARGV[2])\n"
    "for j, key in ipairs(KEYS) do\n"
    "  local m = ARGV[2 + j]\n"
    "  if redis.call('ZSCORE', key, m) then\n"
    "    redis.call('ZADD', key, fmt(now_ms + lease), m)\n"
    "    lease_expire(key, lease)\n"
    "  end\n"
    "end\n"
    "return 0\n";

enum { SC_ADMIT, SC_FINISH, SC_RENEW, SC_COUNT };
static const char *const SCRIPTS[SC_COUNT] = {SCRIPT_ADMIT, SCRIPT_FINISH, SCRIPT_RENEW};

/* ---- sizes and policies -------------------------------------------------------------------------- */

#define KINDS 5                                 /* keys per scope: rpm tpm conc day month */
static const char *const KIND_NAME[KINDS] = {"rpm", "tpm", "conc", "day", "mon"};
#define MAX_ARGS (3 + WD_LIMIT_MAX_SCOPES * KINDS + 5 + WD_LIMIT_MAX_SCOPES * KINDS) /* EVALSHA sha n, KEYS, ARGV */
#define TOKENS_MAX ((int64_t)1 << 50)
#define MAX_HOLDS 65536                         /* admitted, not yet finished, per instance */
#define MAX_HOLD_AGE_MS (6 * 3600 * 1000ULL)    /* a hold never finished stops being renewed */
#define HOLD_BUCKETS 1024
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_MIN_MS 1000
#define STALL_MIN_MS 2000                       /* no reply for this long with work outstanding: drop */
#define PROBE_MS 500 /* with no admission pending: how often an unhealthy or stalled connection is checked */

/* ---- types --------------------------------------------------------------------------------------- */

typedef struct cmd cmd_t;
typedef struct hold hold_t;

typedef enum { ST_DOWN, ST_RESOLVING, ST_CONNECTING, ST_READY } conn_state_t;
typedef enum { CMD_ADMIT, CMD_FINISH, CMD_RENEW, CMD_PING } cmd_kind_t;

/* One script call. Admissions stay owned by hiredis until their reply (or the connection's end)
 * even after their caller was answered by a timeout or went away (cb == NULL). */
struct cmd {
    cmd_t *prev, *next; /* pending (awaiting reply, in deadline order) or deferred list */
    wd_limit_redis_t *r;
    cmd_kind_t kind;
    int script;
    wd_limit_cb cb; /* NULL once the caller has been answered or cancelled */
    void *ud;
    uint64_t deadline_ms; /* uv_now based */
    uint64_t sent_ns;
    bool on_list;
    /* what is needed to record the hold or to release it if the caller already left */
    size_t n;
    wd_limit_scope_t scopes[WD_LIMIT_MAX_SCOPES];
    int64_t tokens;
    char id[40];
    int argc;
    const char *argv[MAX_ARGS];
    size_t argvlen[MAX_ARGS];
    char *buf; /* the argument bytes argv points into */
};

/* A request this instance admitted and that has not finished: its concurrency member is renewed
 * while it lives, and finish() finds it by (scope keys, reservation). Holds with equal keys and
 * reservation are interchangeable, which is why the public finish() needs no request handle. */
struct hold {
    hold_t *hnext;      /* bucket chain */
    hold_t *prev, *next; /* age order, oldest first */
    uint64_t hash;
    uint64_t created_ms;
    int64_t reserved;
    size_t n;
    wd_limits_t lim[WD_LIMIT_MAX_SCOPES];
    char id[40];
    size_t keys_len;
    char keys[]; /* the scope keys, each NUL-terminated */
};

typedef struct {
    bool is_unix;
    char host[256];
    char path[108];
    int port;
    int db;
    char user[128];
    char pass[256];
} url_t;

struct wd_limit_redis {
    uv_loop_t *loop;
    url_t url;
    uint32_t timeout_ms;
    uint32_t lease_ms;
    char prefix[WD_LIMIT_REDIS_PREFIX_MAX + 1];
    char sha[SC_COUNT][41];

    redisAsyncContext *ac;
    conn_state_t st;
    bool ever_connected;
    uint32_t backoff_ms;
    uint64_t last_reply_ms;
    size_t outstanding; /* commands hiredis still owes a reply for */

    uv_timer_t t_timeout; /* head of the pending list */
    uv_timer_t t_defer;   /* answers that must not run inside the call that caused them */
    uv_timer_t t_conn;    /* reconnect backoff, or connect deadline */
    uv_timer_t t_renew;   /* concurrency leases */
    uv_getaddrinfo_t gai;
    bool gai_active;
    unsigned addr_turn; /* which resolved address to try: advances after each failure */
    int handles_open;
    bool closing;
    int in_cb;
    bool free_pending;

    cmd_t *pend_head, *pend_tail; /* admissions awaiting Redis, deadline order */
    cmd_t *def_head, *def_tail;   /* admissions to answer UNAVAILABLE on the next iteration */
    size_t pending_admits;

    hold_t *buckets[HOLD_BUCKETS];
    hold_t *hold_head, *hold_tail;
    size_t holds;

    char inst[17];
    uint64_t seq;
    int64_t pinned_now;
    wd_limit_redis_stats_t stats;
    char last_err[160];
    int err_lock; /* last_err is also read from other threads (readiness) */
    int healthy;  /* atomic: the last word from Redis was a working answer (see wd_limit_redis_healthy) */
};

static void start_connect(wd_limit_redis_t *r);
static void drop_connection(wd_limit_redis_t *r, const char *why);
static void teardown(wd_limit_redis_t *r);

/* ---- small helpers ----------------------------------------------------------------------------- */

static void stat_add(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

static void err_lock(wd_limit_redis_t *r)
{
    while (__atomic_exchange_n(&r->err_lock, 1, __ATOMIC_ACQUIRE))
        sched_yield(); /* held for one short copy, by an error path or a readiness probe */
}

static void err_unlock(wd_limit_redis_t *r) { __atomic_store_n(&r->err_lock, 0, __ATOMIC_RELEASE); }

static void set_err(wd_limit_redis_t *r, const char *what, const char *detail)
{
    err_lock(r);
    snprintf(r->last_err, sizeof r->last_err, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    err_unlock(r);
}

static void arm_timeout(wd_limit_redis_t *r);

/* Loop thread only. Turning unhealthy (re)arms the timer that will probe the connection. */
static void set_healthy(wd_limit_redis_t *r, bool ok)
{
    bool was = __atomic_exchange_n(&r->healthy, ok, __ATOMIC_ACQ_REL);
    if (was && !ok && !r->closing) arm_timeout(r);
}

/* As the local backend answers when it cannot decide: a Retry-After of 1 s for fail-closed callers. */
#define UNAVAILABLE_RETRY_MS 1000

static void unavailable(wd_limit_decision_t *d)
{
    *d = (wd_limit_decision_t){.outcome = WD_LIMIT_UNAVAILABLE, .scope = -1, .retry_after_ms = UNAVAILABLE_RETRY_MS,
                               .limit_requests = -1, .remaining_requests = -1, .reset_requests_ms = -1,
                               .limit_tokens = -1, .remaining_tokens = -1, .reset_tokens_ms = -1};
}

static void list_push(cmd_t **head, cmd_t **tail, cmd_t *c)
{
    c->prev = *tail;
    c->next = NULL;
    if (*tail)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
    c->on_list = true;
}

static void list_del(cmd_t **head, cmd_t **tail, cmd_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        *tail = c->prev;
    c->prev = c->next = NULL;
    c->on_list = false;
}

static void cmd_free(cmd_t *c)
{
    if (!c)
        return;
    free(c->buf);
    free(c);
}

static void deliver(wd_limit_redis_t *r, wd_limit_cb cb, void *ud, const wd_limit_decision_t *d)
{
    r->in_cb++;
    cb(ud, d);
    r->in_cb--;
}

/* ---- URL --------------------------------------------------------------------------------------- */

static int parse_url(const char *s, url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (strncmp(s, "unix://", 7) == 0) {
        const char *p = s + 7;
        size_t len = strlen(p);
        if (len == 0 || p[0] != '/' || len >= sizeof u->path)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: unix:// needs an absolute socket path");
        u->is_unix = true;
        memcpy(u->path, p, len + 1);
        return WD_OK;
    }
    if (strncmp(s, "redis://", 8) != 0)
        return wd_errf(err, errlen, WD_EINVAL, "redis url: expected redis://host[:port][/db] or unix:///path");
    const char *p = s + 8;
    const char *end = p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = NULL;
    for (const char *q = p; q < (slash ? slash : end); q++)
        if (*q == '@')
            auth_end = q; /* the last '@' before the path ends the credentials */
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        const char *uend = colon ? colon : auth_end;
        if ((size_t)(uend - p) >= sizeof u->user)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: user name too long");
        memcpy(u->user, p, (size_t)(uend - p));
        if (colon) {
            if ((size_t)(auth_end - colon - 1) >= sizeof u->pass)
                return wd_errf(err, errlen, WD_EINVAL, "redis url: password too long");
            memcpy(u->pass, colon + 1, (size_t)(auth_end - colon - 1));
        }
        p = auth_end + 1;
    }
    const char *hend = slash ? slash : end;
    const char *hs = p, *he;
    const char *portp = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: unterminated [IPv6] host");
        hs = p + 1;
        he = rb;
        if (rb + 1 < hend) {
            if (rb[1] != ':')
                return wd_errf(err, errlen, WD_EINVAL, "redis url: junk after [IPv6] host");
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(hend - p));
        he = colon ? colon : hend;
        if (colon)
            portp = colon + 1;
    }
    if (he == hs || (size_t)(he - hs) >= sizeof u->host)
        return wd_errf(err, errlen, WD_EINVAL, "redis url: missing or overlong host");
    memcpy(u->host, hs, (size_t)(he - hs));
    if (portp) {
        long port = 0;
        if (portp == hend)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: empty port");
        for (const char *q = portp; q < hend; q++) {
            if (*q < '0' || *q > '9' || port > 65535)
                return wd_errf(err, errlen, WD_EINVAL, "redis url: bad port");
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: port out of range");
        u->port = (int)port;
    }
    if (slash && slash + 1 < end) {
        long db = 0;
        for (const char *q = slash + 1; q < end; q++) {
            if (*q < '0' || *q > '9' || db > 100000)
                return wd_errf(err, errlen, WD_EINVAL, "redis url: database must be a number");
            db = db * 10 + (*q - '0');
        }
        if (db > 100000)
            return wd_errf(err, errlen, WD_EINVAL, "redis url: database number too large");
        u->db = (int)db;
    }
    return WD_OK;
}

/* ---- scope validation and key building --------------------------------------------------------- */

static int check_scopes(const wd_limit_scope_t *scopes, size_t n)
{
    if (!scopes || n == 0 || n > WD_LIMIT_MAX_SCOPES)
        return WD_EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t len = strnlen(scopes[i].key, WD_LIMIT_KEY_MAX);
        if (len == 0 || len == WD_LIMIT_KEY_MAX)
            return WD_EINVAL;
    }
    return WD_OK;
}

static int buf_key(wd_buf_t *b, const wd_limit_redis_t *r, int kind, const char *key)
{
    return wd_buf_printf(b, "{%s}:%s:%s", r->prefix, KIND_NAME[kind], key) < 0 ? WD_ENOMEM : wd_buf_append(b, "", 1);
}

/* Arguments go into one buffer as NUL-terminated strings; argv is fixed up once it stops moving. */
typedef struct {
    wd_buf_t b;
    size_t off[MAX_ARGS];
    int argc;
    int rc;
} argb_t;

static bool arg_begin(argb_t *a)
{
    if (a->rc < 0 || a->argc >= MAX_ARGS) {
        a->rc = WD_E2BIG;
        return false;
    }
    a->off[a->argc] = a->b.len;
    return true;
}

static void arg_end(argb_t *a, int rc)
{
    if (rc < 0)
        a->rc = rc;
    else
        a->argc++;
}

static void arg_str(argb_t *a, const char *s)
{
    if (arg_begin(a))
        arg_end(a, wd_buf_append(&a->b, s, strlen(s) + 1));
}

static void arg_i64(argb_t *a, int64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    arg_str(a, tmp);
}

static void arg_u64(argb_t *a, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    arg_str(a, tmp);
}

static void arg_key(argb_t *a, const wd_limit_redis_t *r, int kind, const char *key)
{
    if (arg_begin(a))
        arg_end(a, buf_key(&a->b, r, kind, key));
}

static void arg_clock(argb_t *a, const wd_limit_redis_t *r)
{
    if (r->pinned_now > 0)
        arg_i64(a, r->pinned_now);
    else
        arg_str(a, "");
}

/* Moves the built arguments into c (EVALSHA sha numkeys ... ). */
static int cmd_take_args(cmd_t *c, argb_t *a)
{
    if (a->rc < 0) {
        wd_buf_free(&a->b);
        return a->rc;
    }
    c->buf = a->b.data;
    c->argc = a->argc;
    for (int i = 0; i < a->argc; i++) {
        c->argv[i] = c->buf + a->off[i];
        c->argvlen[i] = strlen(c->argv[i]);
    }
    return WD_OK;
}

static void args_script_head(argb_t *a, const wd_limit_redis_t *r, int script, int numkeys)
{
    wd_buf_init(&a->b, 0);
    a->argc = 0;
    a->rc = WD_OK;
    arg_str(a, "EVALSHA");
    arg_str(a, r->sha[script]);
    arg_i64(a, numkeys);
}

static void args_scope_keys(argb_t *a, const wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < KINDS; k++)
            arg_key(a, r, k, scopes[i].key);
}

static void args_scope_limits(argb_t *a, const wd_limit_scope_t *scopes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        arg_u64(a, scopes[i].lim.rpm);
        arg_u64(a, scopes[i].lim.tpm);
        arg_u64(a, scopes[i].lim.concurrent);
        arg_u64(a, scopes[i].lim.tokens_per_day);
        arg_u64(a, scopes[i].lim.tokens_per_month);
    }
}

/* ---- holds ------------------------------------------------------------------------------------- */

static uint64_t hold_hash(const wd_limit_scope_t *scopes, size_t n, int64_t reserved)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)scopes[i].key; *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* separator no key byte can forge */
    }
    for (int i = 0; i < 8; i++)
        h = (h ^ (uint8_t)((uint64_t)reserved >> (8 * i))) * 1099511628211ULL;
    return h;
}

static bool hold_matches(const hold_t *h, uint64_t hash, const wd_limit_scope_t *scopes, size_t n, int64_t reserved)
{
    if (h->hash != hash || h->n != n || h->reserved != reserved)
        return false;
    const char *p = h->keys;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(scopes[i].key);
        if (strcmp(p, scopes[i].key) != 0)
            return false;
        p += len + 1;
    }
    return true;
}

static bool hold_has_conc(const hold_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->lim[i].concurrent > 0)
            return true;
    return false;
}

static void hold_add(wd_limit_redis_t *r, const cmd_t *c)
{
    size_t klen = 0;
    for (size_t i = 0; i < c->n; i++)
        klen += strlen(c->scopes[i].key) + 1;
    hold_t *h = calloc(1, sizeof *h + klen);
    if (!h)
        return; /* its slot then lives until the lease ends; finish() charges plain usage */
    h->hash = hold_hash(c->scopes, c->n, c->tokens);
    h->created_ms = uv_now(r->loop);
    h->reserved = c->tokens;
    h->n = c->n;
    memcpy(h->id, c->id, sizeof h->id);
    h->keys_len = klen;
    char *p = h->keys;
    for (size_t i = 0; i < c->n; i++) {
        size_t len = strlen(c->scopes[i].key) + 1;
        memcpy(p, c->scopes[i].key, len);
        p += len;
        h->lim[i] = c->scopes[i].lim;
    }
    size_t b = h->hash & (HOLD_BUCKETS - 1);
    h->hnext = r->buckets[b];
    r->buckets[b] = h;
    h->prev = r->hold_tail;
    if (r->hold_tail)
        r->hold_tail->next = h;
    else
        r->hold_head = h;
    r->hold_tail = h;
    r->holds++;
}

static void hold_unlink(wd_limit_redis_t *r, hold_t *h)
{
    hold_t **pp = &r->buckets[h->hash & (HOLD_BUCKETS - 1)];
    while (*pp && *pp != h)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = h->hnext;
    if (h->prev)
        h->prev->next = h->next;
    else
        r->hold_head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        r->hold_tail = h->prev;
    r->holds--;
}

/* Oldest matching hold, so renewals of a long-lived twin are never the ones cut short. */
static hold_t *hold_take(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t reserved)
{
    uint64_t hash = hold_hash(scopes, n, reserved);
    hold_t *best = NULL;
    for (hold_t *h = r->buckets[hash & (HOLD_BUCKETS - 1)]; h; h = h->hnext)
        if (hold_matches(h, hash, scopes, n, reserved) && (!best || h->created_ms <= best->created_ms))
            best = h;
    if (best)
        hold_unlink(r, best);
    return best;
}

/* ---- sending ----------------------------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void on_timeout(uv_timer_t *t);
static void on_conn_timer(uv_timer_t *t);

static bool connected(const wd_limit_redis_t *r)
{
    return r->ac && (r->st == ST_CONNECTING || r->st == ST_READY);
}

static int send_cmd(wd_limit_redis_t *r, cmd_t *c)
{
    if (!connected(r))
        return WD_EIO;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, c->argc, c->argv, c->argvlen) != REDIS_OK)
        return WD_EIO;
    if (r->outstanding++ == 0)
        r->last_reply_ms = uv_now(r->loop); /* the stall clock starts when work does */
    c->sent_ns = uv_hrtime();
    return WD_OK;
}

/* Fire-and-forget finish script; id "" when no slot is held. */
static void send_finish(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t delta, const char *id)
{
    cmd_t *c = calloc(1, sizeof *c);
    if (!c) {
        stat_add(&r->stats.errors, 1);
        return;
    }
    c->r = r;
    c->kind = CMD_FINISH;
    c->script = SC_FINISH;
    argb_t a;
    args_script_head(&a, r, SC_FINISH, (int)(n * KINDS));
    args_scope_keys(&a, r, scopes, n);
    arg_clock(&a, r);
    arg_i64(&a, (int64_t)n);
    arg_i64(&a, delta);
    arg_str(&a, id);
    args_scope_limits(&a, scopes, n);
    if (cmd_take_args(c, &a) < 0 || send_cmd(r, c) < 0) {
        stat_add(&r->stats.errors, 1);
        cmd_free(c);
    }
}

/* A PING on a connection that is up but not known to work: its answer makes it healthy again. */
static void send_ping(wd_limit_redis_t *r)
{
    cmd_t *c = calloc(1, sizeof *c);
    if (!c) return;
    c->r = r;
    c->kind = CMD_PING;
    argb_t a;
    wd_buf_init(&a.b, 0);
    a.argc = 0;
    a.rc = WD_OK;
    arg_str(&a, "PING");
    if (cmd_take_args(c, &a) < 0 || send_cmd(r, c) < 0) cmd_free(c);
}

static void send_renew(wd_limit_redis_t *r, const hold_t *h)
{
    cmd_t *c = calloc(1, sizeof *c);
    if (!c) {
        stat_add(&r->stats.errors, 1);
        return;
    }
    c->r = r;
    c->kind = CMD_RENEW;
    c->script = SC_RENEW;
    int nk = 0;
    for (size_t i = 0; i < h->n; i++)
        nk += h->lim[i].concurrent > 0;
    argb_t a;
    args_script_head(&a, r, SC_RENEW, nk);
    const char *p = h->keys;
    for (size_t i = 0; i < h->n; i++) {
        if (h->lim[i].concurrent > 0)
            arg_key(&a, r, 2, p);
        p += strlen(p) + 1;
    }
    arg_clock(&a, r);
    arg_u64(&a, r->lease_ms);
    for (size_t i = 0; i < h->n; i++) {
        if (h->lim[i].concurrent > 0) {
            char member[64];
            snprintf(member, sizeof member, "%s#%zu", h->id, i);
            arg_str(&a, member);
        }
    }
    if (cmd_take_args(c, &a) < 0 || send_cmd(r, c) < 0) {
        stat_add(&r->stats.errors, 1);
        cmd_free(c);
    }
}

/* ---- timers -------------------------------------------------------------------------------------- */

/* Without pending admissions the timer still runs while the connection needs watching: commands
 * are outstanding (a stall must be noticed without new traffic) or it is unhealthy (a PING finds out
 * when it works again). Otherwise a replica that /readyz reports not ready, and that a load balancer
 * therefore sends nothing, would never find out that Redis is back. */
static void arm_timeout(wd_limit_redis_t *r)
{
    if (!r->pend_head) {
        if (r->ac && !r->closing && (r->outstanding > 0 || !__atomic_load_n(&r->healthy, __ATOMIC_RELAXED)))
            uv_timer_start(&r->t_timeout, on_timeout, PROBE_MS, 0);
        else
            uv_timer_stop(&r->t_timeout);
        return;
    }
    uint64_t now = uv_now(r->loop);
    uint64_t due = r->pend_head->deadline_ms;
    uv_timer_start(&r->t_timeout, on_timeout, due > now ? due - now : 0, 0);
}

static void on_timeout(uv_timer_t *t)
{
    wd_limit_redis_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    wd_limit_decision_t d;
    unavailable(&d);
    while (r->pend_head && r->pend_head->deadline_ms <= now && !r->closing) {
        cmd_t *c = r->pend_head;
        list_del(&r->pend_head, &r->pend_tail, c);
        wd_limit_cb cb = c->cb;
        c->cb = NULL; /* hiredis still owns c; a late "admitted" is released in on_reply */
        stat_add(&r->stats.timeouts, 1);
        if (__atomic_load_n(&r->healthy, __ATOMIC_RELAXED)) {
            set_err(r, "redis: no answer within redis_timeout_ms", NULL);
            set_healthy(r, false);
        }
        deliver(r, cb, c->ud, &d);
    }
    if (r->closing)
        return;
    /* a connection that answers nothing at all is dead even if TCP has not noticed (half-open,
     * server stopped): drop it so the reconnect logic takes over */
    uint64_t stall = WD_MAX((uint64_t)r->timeout_ms * 5, (uint64_t)STALL_MIN_MS);
    if (r->ac && r->outstanding > 0 && now - r->last_reply_ms >= stall)
        drop_connection(r, "no reply from redis");
    else if (r->st == ST_READY && r->outstanding == 0 && !__atomic_load_n(&r->healthy, __ATOMIC_RELAXED))
        send_ping(r);
    arm_timeout(r);
}

static void on_defer(uv_timer_t *t)
{
    wd_limit_redis_t *r = t->data;
    if (r->free_pending) {
        r->free_pending = false;
        teardown(r);
        return;
    }
    wd_limit_decision_t d;
    unavailable(&d);
    /* answer only what is queued now: a callback that admits again queues for the next round */
    cmd_t *last = r->def_tail;
    while (r->def_head && !r->closing) {
        cmd_t *c = r->def_head;
        bool stop = c == last;
        list_del(&r->def_head, &r->def_tail, c);
        wd_limit_cb cb = c->cb;
        void *ud = c->ud;
        cmd_free(c);
        deliver(r, cb, ud, &d);
        if (stop)
            break;
    }
}

static void defer_unavailable(wd_limit_redis_t *r, cmd_t *c)
{
    list_push(&r->def_head, &r->def_tail, c);
    if (!uv_is_active((uv_handle_t *)&r->t_defer))
        uv_timer_start(&r->t_defer, on_defer, 0, 0);
}

static void on_renew(uv_timer_t *t)
{
    wd_limit_redis_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    while (r->hold_head && now - r->hold_head->created_ms > MAX_HOLD_AGE_MS) {
        hold_t *h = r->hold_head; /* its caller never finished: let the lease run out */
        hold_unlink(r, h);
        free(h);
    }
    if (!connected(r))
        return; /* leases may lapse during an outage; see the operations doc */
    for (hold_t *h = r->hold_head; h; h = h->next)
        if (hold_has_conc(h))
            send_renew(r, h);
}

/* ---- replies ----------------------------------------------------------------------------------- */

static bool parse_decision(const redisReply *rep, wd_limit_decision_t *d)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 9)
        return false;
    long long v[9];
    for (size_t i = 0; i < 9; i++) {
        if (rep->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
        v[i] = rep->element[i]->integer;
    }
    if (v[0] < WD_LIMIT_OK || v[0] > WD_LIMIT_BUDGET || v[1] < -1 || v[1] >= WD_LIMIT_MAX_SCOPES)
        return false;
    *d = (wd_limit_decision_t){.outcome = (wd_limit_outcome_t)v[0], .scope = (int)v[1], .retry_after_ms = v[2],
                               .limit_requests = v[3], .remaining_requests = v[4], .reset_requests_ms = v[5],
                               .limit_tokens = v[6], .remaining_tokens = v[7], .reset_tokens_ms = v[8]};
    if (d->outcome == WD_LIMIT_OK)
        d->retry_after_ms = 0;
    return true;
}

static bool is_noscript(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR && rep->str && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    WD_UNUSED(ac);
    cmd_t *c = priv;
    wd_limit_redis_t *r = c->r;
    const redisReply *rep = reply;
    if (r->outstanding)
        r->outstanding--;
    if (rep)
        r->last_reply_ms = uv_now(r->loop);

    if (is_noscript(rep) && !r->closing) {
        /* the server lost its script cache (restart, SCRIPT FLUSH, failover): send the body once;
         * EVAL caches it again for everyone's next EVALSHA */
        c->argv[0] = "EVAL";
        c->argvlen[0] = 4;
        c->argv[1] = SCRIPTS[c->script];
        c->argvlen[1] = strlen(SCRIPTS[c->script]);
        if (send_cmd(r, c) == WD_OK)
            return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        stat_add(&r->stats.errors, 1);
        set_err(r, "redis error", rep->str);
        set_healthy(r, false);
    } else if (rep && c->kind != CMD_ADMIT) {
        set_healthy(r, true);
    }

    if (c->kind != CMD_ADMIT) {
        if (!rep)
            stat_add(&r->stats.errors, 1);
        cmd_free(c);
        return;
    }

    wd_limit_decision_t d;
    bool ok = rep && parse_decision(rep, &d);
    if (ok) set_healthy(r, true); /* also a late answer: the connection works */
    if (rep && !ok && rep->type != REDIS_REPLY_ERROR) {
        stat_add(&r->stats.errors, 1);
        set_err(r, "redis: unexpected script reply", NULL);
    }
    if (r->pending_admits)
        r->pending_admits--;
    if (c->cb) {
        list_del(&r->pend_head, &r->pend_tail, c);
        if (ok) {
            set_healthy(r, true);
            stat_add(&r->stats.decisions, 1);
            stat_add(&r->stats.latency_ns_sum, uv_hrtime() - c->sent_ns);
            stat_add(&r->stats.latency_count, 1);
            if (d.outcome == WD_LIMIT_OK)
                hold_add(r, c);
        } else {
            if (!rep)
                stat_add(&r->stats.errors, 1);
            unavailable(&d);
        }
        wd_limit_cb cb = c->cb;
        c->cb = NULL;
        deliver(r, cb, c->ud, &d);
        if (!r->closing)
            arm_timeout(r);
    } else if (ok && d.outcome == WD_LIMIT_OK && !r->closing) {
        /* admitted after the caller was told UNAVAILABLE or went away: give it back */
        send_finish(r, c->scopes, c->n, -c->tokens, c->id);
    }
    cmd_free(c);
}

/* Replies to the connection's set-up commands: failing AUTH or SELECT makes the connection useless. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    wd_limit_redis_t *r = ac->data;
    const redisReply *rep = reply;
    const char *what = priv;
    if (r->outstanding)
        r->outstanding--;
    if (!rep)
        return;
    r->last_reply_ms = uv_now(r->loop);
    if (rep->type == REDIS_REPLY_ERROR) {
        stat_add(&r->stats.errors, 1);
        set_err(r, what, rep->str);
        set_healthy(r, false);
        if (strcmp(what, "SCRIPT LOAD") != 0 && !r->closing && r->ac == ac)
            redisAsyncDisconnect(ac); /* later commands will fail, and reconnecting may fix it */
    } else if (strcmp(what, "SCRIPT LOAD") == 0 && rep->type == REDIS_REPLY_STRING) {
        bool known = false;
        for (int i = 0; i < SC_COUNT; i++)
            known |= strcmp(rep->str, r->sha[i]) == 0;
        if (!known)
            set_err(r, "SCRIPT LOAD", "server returned an unexpected digest");
        else if (r->ac == ac)
            set_healthy(r, true); /* AUTH and SELECT, sent first, went through */
    }
}

/* ---- connection -------------------------------------------------------------------------------- */

static void schedule_reconnect(wd_limit_redis_t *r)
{
    if (r->closing)
        return;
    set_healthy(r, false);
    r->st = ST_DOWN;
    r->addr_turn++;
    uint32_t base = r->backoff_ms ? r->backoff_ms : BACKOFF_MIN_MS;
    uint32_t jitter = 0;
    wd_random(&jitter, sizeof jitter);
    uint32_t delay = base / 2 + jitter % (base / 2 + 1); /* spread replicas' retries apart */
    r->backoff_ms = WD_MIN(base * 2, (uint32_t)BACKOFF_MAX_MS);
    uv_timer_stop(&r->t_conn);
    uv_timer_start(&r->t_conn, on_conn_timer, delay, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    wd_limit_redis_t *r = ac->data;
    if (r->ac != ac)
        return;
    uv_timer_stop(&r->t_conn);
    if (status != REDIS_OK) {
        set_err(r, "redis connect", ac->c.errstr);
        stat_add(&r->stats.errors, 1);
        r->ac = NULL; /* hiredis frees it after this callback */
        schedule_reconnect(r);
        return;
    }
    r->st = ST_READY;
    r->backoff_ms = 0;
    r->addr_turn--; /* stay on the address that works: schedule_reconnect moves on first */
    if (r->ever_connected)
        stat_add(&r->stats.reconnects, 1);
    r->ever_connected = true;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    wd_limit_redis_t *r = ac->data;
    if (r->ac != ac)
        return;
    r->ac = NULL;
    if (status != REDIS_OK) {
        set_err(r, "redis connection lost", ac->c.errstr);
        stat_add(&r->stats.errors, 1);
    }
    r->outstanding = 0;
    schedule_reconnect(r);
}

/* Tears the connection down now; hiredis answers everything it owes with NULL replies. */
static void drop_connection(wd_limit_redis_t *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    set_err(r, why, NULL);
    stat_add(&r->stats.errors, 1);
    r->ac = NULL; /* on_connect/on_disconnect ignore a context that is no longer ours */
    r->outstanding = 0;
    redisAsyncFree(ac);
    schedule_reconnect(r);
}

static void setup_cmd(wd_limit_redis_t *r, redisAsyncContext *ac, const char *what, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (redisAsyncCommandArgv(ac, on_setup_reply, (void *)what, argc, argv, lens) == REDIS_OK)
        r->outstanding++;
}

static void connect_to(wd_limit_redis_t *r, const char *ip)
{
    redisAsyncContext *ac = r->url.is_unix ? redisAsyncConnectUnix(r->url.path) : redisAsyncConnect(ip, r->url.port);
    if (!ac) {
        set_err(r, "redis connect", "out of memory");
        schedule_reconnect(r);
        return;
    }
    if (ac->err) {
        set_err(r, "redis connect", ac->c.errstr);
        stat_add(&r->stats.errors, 1);
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    /* the adapter must be attached before the connect callback is set: hiredis 0.14 arms the
     * write event that detects the connection inside redisAsyncSetConnectCallback */
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        set_err(r, "redis connect", "cannot attach to the event loop");
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->st = ST_CONNECTING;
    r->outstanding = 0;
    /* set-up goes out first on the wire, ahead of any admission queued while connecting */
    if (r->url.pass[0]) {
        const char *argv[3] = {"AUTH", r->url.user[0] ? r->url.user : r->url.pass, r->url.pass};
        setup_cmd(r, ac, "AUTH", r->url.user[0] ? 3 : 2, argv);
    }
    if (r->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *argv[2] = {"SELECT", db};
        setup_cmd(r, ac, "SELECT", 2, argv);
    }
    for (int i = 0; i < SC_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", SCRIPTS[i]};
        setup_cmd(r, ac, "SCRIPT LOAD", 3, argv);
    }
    uv_timer_start(&r->t_conn, on_conn_timer, WD_MAX(r->timeout_ms, (uint32_t)CONNECT_TIMEOUT_MIN_MS), 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    wd_limit_redis_t *r = req->data;
    r->gai_active = false;
    if (r->closing) {
        uv_freeaddrinfo(res);
        if (--r->handles_open == 0)
            free(r);
        return;
    }
    r->handles_open--;
    char ip[INET6_ADDRSTRLEN] = "";
    unsigned count = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next)
        count++;
    if (count) {
        /* a name with several addresses (localhost: ::1 and 127.0.0.1) gets each in turn */
        struct addrinfo *a = res;
        for (unsigned i = r->addr_turn % count; i > 0; i--)
            a = a->ai_next;
        if (a->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof ip);
        else if (a->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        set_err(r, "redis: cannot resolve host", status ? uv_strerror(status) : NULL);
        stat_add(&r->stats.errors, 1);
        schedule_reconnect(r);
        return;
    }
    connect_to(r, ip);
}

static bool is_ip_literal(const char *host)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

static void start_connect(wd_limit_redis_t *r)
{
    if (r->closing || r->ac || r->gai_active)
        return;
    if (r->url.is_unix || is_ip_literal(r->url.host)) {
        connect_to(r, r->url.host);
        return;
    }
    /* a host name: resolve on libuv's thread pool, getaddrinfo may block for seconds */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    r->gai.data = r;
    r->st = ST_RESOLVING;
    if (uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->url.host, NULL, &hints) != 0) {
        set_err(r, "redis: cannot resolve host", NULL);
        schedule_reconnect(r);
        return;
    }
    r->gai_active = true;
    r->handles_open++;
}

/* t_conn: in ST_DOWN it is the backoff, in ST_CONNECTING the connect deadline. */
static void on_conn_timer(uv_timer_t *t)
{
    wd_limit_redis_t *r = t->data;
    if (r->st == ST_CONNECTING && r->ac) {
        redisAsyncContext *ac = r->ac;
        set_err(r, "redis connect", "timed out");
        stat_add(&r->stats.errors, 1);
        r->ac = NULL;
        r->outstanding = 0;
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    if (r->st == ST_DOWN)
        start_connect(r);
}

/* ---- public API -------------------------------------------------------------------------------- */

static void sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL);
    for (unsigned int i = 0; i < len && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

wd_limit_redis_t *wd_limit_redis_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms, const char *key_prefix,
                                     char *err, size_t errlen)
{
    if (!loop || !url || !key_prefix) {
        wd_errf(err, errlen, WD_EINVAL, "redis limiter: missing argument");
        return NULL;
    }
    if (timeout_ms < 1 || timeout_ms > 60000) {
        wd_errf(err, errlen, WD_EINVAL, "redis limiter: timeout_ms must be 1..60000");
        return NULL;
    }
    size_t plen = strlen(key_prefix);
    if (plen == 0 || plen > WD_LIMIT_REDIS_PREFIX_MAX || strpbrk(key_prefix, "{}")) {
        /* an empty tag would make Redis hash the whole key and scatter a decision over slots */
        wd_errf(err, errlen, WD_EINVAL, "redis limiter: key prefix must be 1..%d characters without '{' or '}'",
                WD_LIMIT_REDIS_PREFIX_MAX);
        return NULL;
    }
    wd_limit_redis_t *r = calloc(1, sizeof *r);
    if (!r) {
        wd_errf(err, errlen, WD_ENOMEM, "redis limiter: out of memory");
        return NULL;
    }
    if (parse_url(url, &r->url, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->timeout_ms = timeout_ms;
    r->lease_ms = WD_LIMIT_REDIS_LEASE_MS;
    memcpy(r->prefix, key_prefix, plen + 1);
    for (int i = 0; i < SC_COUNT; i++)
        sha1_hex(SCRIPTS[i], r->sha[i]);
    unsigned char rnd[8];
    if (wd_random(rnd, sizeof rnd) < 0) {
        free(r);
        wd_errf(err, errlen, WD_EIO, "redis limiter: no randomness for the instance id");
        return NULL;
    }
    for (int i = 0; i < 8; i++)
        snprintf(r->inst + 2 * i, 3, "%02x", rnd[i]);

    uv_timer_t *timers[4] = {&r->t_timeout, &r->t_defer, &r->t_conn, &r->t_renew};
    for (int i = 0; i < 4; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = r;
        r->handles_open++;
    }
    uv_timer_start(&r->t_renew, on_renew, r->lease_ms / 3, r->lease_ms / 3);
    uv_unref((uv_handle_t *)&r->t_renew); /* a background chore must not keep the loop alive */
    r->st = ST_DOWN;
    start_connect(r);
    return r;
}

int wd_limit_redis_admit(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t tokens,
                         wd_limit_cb cb, void *ud)
{
    if (!r || !cb || tokens < 0 || r->closing || r->free_pending || check_scopes(scopes, n) < 0)
        return WD_EINVAL;
    if (tokens > TOKENS_MAX)
        tokens = TOKENS_MAX;
    cmd_t *c = calloc(1, sizeof *c);
    if (!c)
        return WD_ENOMEM;
    c->r = r;
    c->kind = CMD_ADMIT;
    c->script = SC_ADMIT;
    c->cb = cb;
    c->ud = ud;
    c->n = n;
    memcpy(c->scopes, scopes, n * sizeof *scopes);
    c->tokens = tokens;
    snprintf(c->id, sizeof c->id, "%s:%llu", r->inst, (unsigned long long)++r->seq);

    if (!connected(r) || r->holds + r->pending_admits >= MAX_HOLDS) {
        if (connected(r))
            set_err(r, "redis limiter: too many requests in flight", NULL);
        stat_add(&r->stats.errors, 1);
        defer_unavailable(r, c);
        return WD_OK;
    }
    argb_t a;
    args_script_head(&a, r, SC_ADMIT, (int)(n * KINDS));
    args_scope_keys(&a, r, scopes, n);
    arg_clock(&a, r);
    arg_i64(&a, (int64_t)n);
    arg_i64(&a, tokens);
    arg_str(&a, c->id);
    arg_u64(&a, r->lease_ms);
    args_scope_limits(&a, scopes, n);
    if (cmd_take_args(c, &a) < 0) {
        cmd_free(c);
        return WD_ENOMEM;
    }
    if (send_cmd(r, c) < 0) {
        stat_add(&r->stats.errors, 1);
        defer_unavailable(r, c);
        return WD_OK;
    }
    r->pending_admits++;
    c->deadline_ms = uv_now(r->loop) + r->timeout_ms;
    list_push(&r->pend_head, &r->pend_tail, c);
    if (!uv_is_active((uv_handle_t *)&r->t_timeout))
        arm_timeout(r);
    return WD_OK;
}

void wd_limit_redis_cancel(wd_limit_redis_t *r, void *ud)
{
    if (!r)
        return;
    for (cmd_t *c = r->pend_head, *next; c; c = next) {
        next = c->next;
        if (c->ud == ud) {
            list_del(&r->pend_head, &r->pend_tail, c);
            c->cb = NULL; /* hiredis still owns it */
        }
    }
    for (cmd_t *c = r->def_head, *next; c; c = next) {
        next = c->next;
        if (c->ud == ud) {
            list_del(&r->def_head, &r->def_tail, c);
            cmd_free(c);
        }
    }
    if (!r->closing)
        arm_timeout(r);
}

void wd_limit_redis_finish(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t reserved,
                           int64_t actual)
{
    if (!r || r->closing || check_scopes(scopes, n) < 0 || reserved < 0 || actual < 0) {
        if (r)
            stat_add(&r->stats.errors, 1);
        return;
    }
    reserved = WD_MIN(reserved, TOKENS_MAX);
    actual = WD_MIN(actual, TOKENS_MAX);
    hold_t *h = hold_take(r, scopes, n, reserved);
    int64_t delta = h ? actual - reserved : actual;
    bool release = h && hold_has_conc(h);
    if (delta != 0 || release) {
        if (connected(r))
            send_finish(r, scopes, n, delta, h ? h->id : "");
        else
            stat_add(&r->stats.errors, 1); /* the slot's lease runs out on its own */
    }
    free(h);
}

void wd_limit_redis_charge(wd_limit_redis_t *r, const wd_limit_scope_t *scopes, size_t n, int64_t tokens)
{
    if (!r || r->closing || check_scopes(scopes, n) < 0 || tokens < 0) {
        if (r)
            stat_add(&r->stats.errors, 1);
        return;
    }
    if (tokens == 0)
        return;
    if (connected(r))
        send_finish(r, scopes, n, WD_MIN(tokens, TOKENS_MAX), ""); /* no hold: plain usage, no slot */
    else
        stat_add(&r->stats.errors, 1);
}

const wd_limit_redis_stats_t *wd_limit_redis_stats(const wd_limit_redis_t *r) { return r ? &r->stats : NULL; }

const char *wd_limit_redis_last_error(const wd_limit_redis_t *r) { return r ? r->last_err : ""; }

bool wd_limit_redis_healthy(wd_limit_redis_t *r, char *why, size_t whylen)
{
    if (!r)
        return false;
    bool ok = __atomic_load_n(&r->healthy, __ATOMIC_ACQUIRE);
    if (why && whylen) {
        why[0] = 0;
        if (!ok) {
            err_lock(r);
            snprintf(why, whylen, "%s", r->last_err[0] ? r->last_err : "redis: not connected yet");
            err_unlock(r);
        }
    }
    return ok;
}

int wd_limit_redis_set_lease_ms(wd_limit_redis_t *r, uint32_t lease_ms)
{
    if (!r || lease_ms < 300 || lease_ms > 3600000)
        return WD_EINVAL;
    r->lease_ms = lease_ms;
    uv_timer_stop(&r->t_renew);
    uv_timer_start(&r->t_renew, on_renew, lease_ms / 3, lease_ms / 3);
    return WD_OK;
}

void wd_limit_redis_pin_clock(wd_limit_redis_t *r, int64_t now_ns)
{
    if (r)
        r->pinned_now = now_ns > 0 ? now_ns : 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    wd_limit_redis_t *r = h->data;
    if (--r->handles_open == 0)
        free(r);
}

static void teardown(wd_limit_redis_t *r)
{
    r->closing = true;
    wd_limit_decision_t d;
    unavailable(&d);
    /* answer everyone still waiting, then let hiredis drop its (now caller-less) commands */
    while (r->pend_head) {
        cmd_t *c = r->pend_head;
        list_del(&r->pend_head, &r->pend_tail, c);
        wd_limit_cb cb = c->cb;
        c->cb = NULL;
        deliver(r, cb, c->ud, &d);
    }
    while (r->def_head) {
        cmd_t *c = r->def_head;
        list_del(&r->def_head, &r->def_tail, c);
        wd_limit_cb cb = c->cb;
        void *ud = c->ud;
        cmd_free(c);
        deliver(r, cb, ud, &d);
    }
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* NULL replies free every cmd it owned */
    }
    while (r->hold_head) {
        hold_t *h = r->hold_head;
        hold_unlink(r, h);
        free(h);
    }
    if (r->gai_active)
        uv_cancel((uv_req_t *)&r->gai); /* on_resolved frees r if it is the last one out */
    memset(r->url.pass, 0, sizeof r->url.pass);
    uv_timer_t *timers[4] = {&r->t_timeout, &r->t_defer, &r->t_conn, &r->t_renew};
    for (int i = 0; i < 4; i++)
        uv_close((uv_handle_t *)timers[i], on_handle_closed);
}

void wd_limit_redis_free(wd_limit_redis_t *r)
{
    if (!r || r->closing || r->free_pending)
        return;
    if (r->in_cb > 0) {
        /* freeing the hiredis context from inside one of its callbacks is not allowed */
        r->free_pending = true;
        uv_timer_stop(&r->t_defer);
        uv_timer_start(&r->t_defer, on_defer, 0, 0);
        return;
    }
    teardown(r);
}

/* The local (in-process) limiter backend. State lives in a sharded open-addressing hash table: one
 * entry per scope key. A shard is picked by the high bits of a seeded hash, so worker threads working
 * for different clients almost always take different locks.
 *
 * Locks: a spin-then-yield lock per shard. Critical sections are ~30 ns of arithmetic, and sharding
 * makes contention rare, so what matters is the uncontended cost: taking the lock is one atomic
 * exchange and releasing it a plain release store, where a pthread mutex also needs an atomic
 * read-modify-write on release (to look for sleepers); measured, that is 15-25% more decisions per
 * second with three scopes (three locks per decision). The usual spinlock hazard, a waiter burning
 * its core while the holder is preempted or rebuilding a table (up to ~1 ms at full size), is
 * bounded by yielding the CPU after a short spin. A decision over several shards locks them in
 * ascending index order, so two decisions can never deadlock. Each key is hashed once per decision,
 * outside the locks, and the GCRA arithmetic is inlined (gcra_inline.h): on one core a 3-scope
 * admission costs three lock round trips, three hashes and probes, and the arithmetic.
 *
 * Memory: tables never delete in place (no tombstones). When an insertion would push a shard past
 * 3/4 load, the shard is rebuilt into a fresh table sized for what survives, dropping every entry
 * whose state is indistinguishable from a fresh one (both tats <= now, nothing in flight, budgets
 * only in past windows): forgetting it changes no future decision. A shard never holds more than
 * WD_LIMITER_SHARD_CAP entries; past that, a request that needs a NEW key fails closed with
 * WD_LIMIT_UNAVAILABLE (keys already known keep working), and a full shard that recovered too
 * little is not swept again for a second, so a flood of new keys cannot make every request pay for
 * a full-table scan. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "limit/gcra_inline.h"

typedef __int128 i128;

#define MIN_SLOTS 16u
#define MAX_SLOTS (2u * WD_LIMITER_SHARD_CAP)
#define MAX_SHARDS 4096u
#define SWEEP_BACKOFF_NS INT64_C(1000000000)
#define MINUTE_NS INT64_C(60000000000)
#define DAY_NS INT64_C(86400000000000)
#define CONCURRENCY_RETRY_MS 1000
#define UNAVAILABLE_RETRY_MS 1000

/* What a decision reads and, all or nothing, writes. */
typedef struct {
    int64_t rpm_tat, tpm_tat;
    int64_t day, day_used;     /* UTC day number since the epoch, tokens used in it */
    int64_t month, month_used; /* year*12 + month-1 */
    uint32_t inflight;
} state_t;

typedef struct {
    uint64_t hash; /* 0 = empty slot */
    char *key;     /* owned, keylen bytes, not NUL-terminated */
    uint32_t keylen;
    state_t st;
    int64_t touched; /* last now_ns that admitted or finished against it */
} entry_t;

typedef struct {
    atomic_int lock;
    entry_t *slots;
    size_t mask; /* capacity - 1 */
    size_t count;
    int64_t next_sweep;                 /* a full shard is not swept again before this */
} __attribute__((aligned(64))) shard_t; /* one cache line of its own: no false sharing between locks */

struct wd_limiter {
    shard_t *shards;
    size_t nshards;
    unsigned shard_shift; /* shard = hash >> shift (64 when there is one shard) */
    uint64_t seed[3];
};

/* ---- locks ------------------------------------------------------------------------------------- */

#define SPINS_BEFORE_YIELD 128

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void shard_lock(shard_t *sh)
{
    unsigned spins = 0;
    for (;;) {
        if (!atomic_exchange_explicit(&sh->lock, 1, memory_order_acquire)) return;
        /* wait reading, not writing, so waiters do not bounce the line between cores */
        while (atomic_load_explicit(&sh->lock, memory_order_relaxed)) {
            if (++spins < SPINS_BEFORE_YIELD)
                cpu_relax();
            else
                sched_yield();
        }
    }
}

static void shard_unlock(shard_t *sh)
{
    atomic_store_explicit(&sh->lock, 0, memory_order_release);
}

/* ---- hashing ----------------------------------------------------------------------------------
 * Scope keys carry client-chosen text (IP addresses, key ids), so the hash is keyed with a random
 * per-limiter seed: nobody can precompute keys that pile into one shard or one probe chain. */

static uint64_t mum(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static uint64_t r8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint64_t r4(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* wyhash's structure: short keys (most scope keys) cost two multiplications and no loop; reads
 * overlap instead of copying a variable-length tail. */
static uint64_t hash_key(const wd_limiter_t *l, const char *p, size_t len)
{
    uint64_t a, b, h = l->seed[0];
    if (len <= 16) {
        if (len >= 4) {
            size_t o = (len >> 3) << 2;
            a = r4(p) << 32 | r4(p + o);
            b = r4(p + len - 4) << 32 | r4(p + len - 4 - o);
        } else if (len > 0) {
            a = (uint64_t)(unsigned char)p[0] << 16 | (uint64_t)(unsigned char)p[len >> 1] << 8 |
                (unsigned char)p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = len;
        const char *q = p;
        while (i > 16) {
            h = mum(r8(q) ^ l->seed[1], r8(q + 8) ^ h);
            q += 16;
            i -= 16;
        }
        a = r8(q + i - 16);
        b = r8(q + i - 8);
    }
    h = mum(l->seed[1] ^ len, mum(a ^ l->seed[1], b ^ h ^ l->seed[2]));
    return h ? h : 1;
}

static size_t key_len(const wd_limit_scope_t *s)
{
    return strnlen(s->key, WD_LIMIT_KEY_MAX);
}

static size_t shard_index(const wd_limiter_t *l, uint64_t h)
{
    return l->shard_shift >= 64 ? 0 : (size_t)(h >> l->shard_shift);
}

/* ---- UTC calendar windows ----------------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* Howard Hinnant's civil-from-days / days-from-civil (proleptic Gregorian, exact for any int64 day
 * an int64 nanosecond clock can express). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t days_from_civil(int64_t y, unsigned m)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t mp = m > 2 ? (int64_t)m - 3 : (int64_t)m + 9;
    int64_t doy = (153 * mp + 2) / 5; /* day 1 of the month */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

typedef struct {
    int64_t day, month;         /* window ids */
    int64_t day_end, month_end; /* ns since the epoch, saturated */
} windows_t;

static void windows_at(int64_t now, windows_t *w)
{
    w->day = floor_div(now, DAY_NS);
    int64_t y;
    unsigned m;
    civil_from_days(w->day, &y, &m);
    w->month = y * 12 + (m - 1);
    i128 de = ((i128)w->day + 1) * DAY_NS;
    i128 me = (i128)days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1) * DAY_NS;
    w->day_end = de > INT64_MAX ? INT64_MAX : (int64_t)de;
    w->month_end = me > INT64_MAX ? INT64_MAX : (int64_t)me;
}

/* ---- shard tables -------------------------------------------------------------------------------- */

static size_t load_limit(size_t cap)
{
    size_t l = cap / 4 * 3;
    return l < WD_LIMITER_SHARD_CAP ? l : WD_LIMITER_SHARD_CAP;
}

/* Fully recovered: dropping it and later starting fresh yields the same decisions. An entry touched
 * "after" now (the wall clock stepped back) is kept. */
static bool evictable(const entry_t *e, int64_t now, const windows_t *w)
{
    const state_t *st = &e->st;
    return st->rpm_tat <= now && st->tpm_tat <= now && st->inflight == 0 && e->touched <= now &&
           (st->day_used == 0 || st->day < w->day) && (st->month_used == 0 || st->month < w->month);
}

/* Short keys compare in a few word loads; memcmp's call costs more than the work here. */
static bool key_eq(const char *a, const char *b, size_t len)
{
    if (len >= 8) {
        for (size_t i = 0; i + 8 < len; i += 8)
            if (r8(a + i) != r8(b + i)) return false;
        return r8(a + len - 8) == r8(b + len - 8);
    }
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i]) return false;
    return true;
}

static entry_t *probe(entry_t *slots, size_t mask, uint64_t h, const char *key, size_t len)
{
    size_t i = (size_t)h & mask;
    for (;;) {
        entry_t *e = &slots[i];
        if (e->hash == 0) return e;
        if (e->hash == h && e->keylen == len && key_eq(e->key, key, len)) return e;
        i = (i + 1) & mask;
    }
}

/* Rebuilds the shard so that `room` more entries fit, dropping evictable ones. Leaves the table as it
 * was if memory is short (inserts then fail closed once the load limit is reached). */
static void rebuild(shard_t *sh, size_t room, int64_t now)
{
    windows_t w;
    windows_at(now, &w);
    size_t cap = sh->mask + 1, live = 0;
    for (size_t i = 0; i < cap; i++)
        if (sh->slots[i].hash && !evictable(&sh->slots[i], now, &w)) live++;
    size_t ncap = MIN_SLOTS;
    while (ncap < MAX_SLOTS && (live + room) * 2 > ncap)
        ncap *= 2;
    entry_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return;
    for (size_t i = 0; i < cap; i++) {
        entry_t *e = &sh->slots[i];
        if (!e->hash) continue;
        if (evictable(e, now, &w)) {
            free(e->key);
            continue;
        }
        *probe(ns, ncap - 1, e->hash, e->key, e->keylen) = *e;
    }
    free(sh->slots);
    sh->slots = ns;
    sh->mask = ncap - 1;
    sh->count = live;
    /* At full size and still nearly full: sweeping again soon would find nothing to drop. */
    sh->next_sweep = (ncap == MAX_SLOTS && live + room > load_limit(ncap) / 8 * 7)
                         ? (now > INT64_MAX - SWEEP_BACKOFF_NS ? INT64_MAX : now + SWEEP_BACKOFF_NS)
                         : INT64_MIN;
}

static void ensure_room(shard_t *sh, size_t room, int64_t now)
{
    size_t cap = sh->mask + 1;
    if (sh->count + room <= load_limit(cap)) return;
    /* the backoff ends early if the clock stepped back by more than the backoff itself */
    if (cap == MAX_SLOTS && now < sh->next_sweep && now >= sh->next_sweep - SWEEP_BACKOFF_NS) return;
    rebuild(sh, room, now);
}

/* NULL when the key is new and the shard is full (or out of memory). Never rebuilds, so entry
 * pointers taken under the same lock stay valid. */
static entry_t *find_or_insert(shard_t *sh, uint64_t h, const char *key, size_t len)
{
    entry_t *e = probe(sh->slots, sh->mask, h, key, len);
    if (e->hash) return e;
    if (sh->count >= load_limit(sh->mask + 1)) return NULL;
    char *k = malloc(len ? len : 1);
    if (!k) return NULL;
    memcpy(k, key, len);
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->key = k;
    e->keylen = (uint32_t)len;
    e->st.rpm_tat = e->st.tpm_tat = INT64_MIN; /* "long ago": any now starts fresh */
    e->touched = INT64_MIN;
    sh->count++;
    return e;
}

static entry_t *find(shard_t *sh, uint64_t h, const char *key, size_t len)
{
    entry_t *e = probe(sh->slots, sh->mask, h, key, len);
    return e->hash ? e : NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

wd_limiter_t *wd_limiter_new(size_t shards)
{
    if (shards == 0) shards = 64;
    if (shards > MAX_SHARDS) shards = MAX_SHARDS;
    size_t n = 1;
    unsigned bits = 0;
    while (n < shards) {
        n <<= 1;
        bits++;
    }
    wd_limiter_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->nshards = n;
    l->shard_shift = 64 - bits;
    if (wd_random(l->seed, sizeof l->seed) != WD_OK) {
        free(l);
        return NULL;
    }
    l->shards = aligned_alloc(64, n * sizeof(shard_t));
    if (!l->shards) {
        free(l);
        return NULL;
    }
    size_t i;
    for (i = 0; i < n; i++) {
        shard_t *sh = &l->shards[i];
        memset(sh, 0, sizeof *sh);
        sh->slots = calloc(MIN_SLOTS, sizeof *sh->slots);
        if (!sh->slots) break;
        sh->mask = MIN_SLOTS - 1;
        sh->next_sweep = INT64_MIN;
        atomic_init(&sh->lock, 0);
    }
    if (i < n) {
        while (i-- > 0)
            free(l->shards[i].slots);
        free(l->shards);
        free(l);
        return NULL;
    }
    return l;
}

void wd_limiter_free(wd_limiter_t *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->nshards; i++) {
        shard_t *sh = &l->shards[i];
        for (size_t j = 0; j <= sh->mask; j++)
            if (sh->slots[j].hash) free(sh->slots[j].key);
        free(sh->slots);
    }
    free(l->shards);
    free(l);
}

size_t wd_limiter_entries(wd_limiter_t *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nshards; i++) {
        shard_lock(&l->shards[i]);
        n += l->shards[i].count;
        shard_unlock(&l->shards[i]);
    }
    return n;
}

size_t wd_limiter_shard_of(wd_limiter_t *l, const char *key)
{
    return shard_index(l, hash_key(l, key, strnlen(key, WD_LIMIT_KEY_MAX)));
}

/* ---- decisions -------------------------------------------------------------------------------------- */

static bool any_limit(const wd_limits_t *m)
{
    return m->rpm || m->tpm || m->concurrent || m->tokens_per_day || m->tokens_per_month;
}

typedef struct {
    const wd_limit_scope_t *s;
    uint64_t hash;
    size_t len;
    shard_t *sh;
    entry_t *e;
    int work; /* index of this entry's working copy (scopes naming the same key share one) */
} ref_t;

typedef struct {
    ref_t r[WD_LIMIT_MAX_SCOPES];
    size_t n;
    shard_t *locked[WD_LIMIT_MAX_SCOPES];
    size_t nlocked;
} op_t;

/* Hashes outside any lock, then locks the distinct shards in ascending order. */
static void op_lock(wd_limiter_t *l, op_t *op, const wd_limit_scope_t *scopes, size_t n)
{
    op->n = op->nlocked = 0;
    for (size_t i = 0; i < n; i++) {
        if (!any_limit(&scopes[i].lim)) continue;
        ref_t *r = &op->r[op->n++];
        r->s = &scopes[i];
        r->len = key_len(&scopes[i]);
        r->hash = hash_key(l, scopes[i].key, r->len);
        r->sh = &l->shards[shard_index(l, r->hash)];
        r->e = NULL;
        size_t j = op->nlocked;
        bool dup = false;
        for (size_t k = 0; k < op->nlocked; k++)
            dup |= op->locked[k] == r->sh;
        if (dup) continue;
        while (j > 0 && op->locked[j - 1] > r->sh) { /* insertion sort by address = by index */
            op->locked[j] = op->locked[j - 1];
            j--;
        }
        op->locked[j] = r->sh;
        op->nlocked++;
    }
    for (size_t k = 0; k < op->nlocked; k++)
        shard_lock(op->locked[k]);
}

static void op_unlock(op_t *op)
{
    for (size_t k = op->nlocked; k-- > 0;)
        shard_unlock(op->locked[k]);
}

/* Makes room in every locked shard for the keys this operation adds (rebuilding first, so no rebuild
 * moves entries while we hold pointers into a table). Only when a shard looks short of room are the
 * keys looked up, so that a full shard is not swept for keys it already holds. */
static void op_room(op_t *op, int64_t now)
{
    for (size_t k = 0; k < op->nlocked; k++) {
        shard_t *sh = op->locked[k];
        size_t lim = load_limit(sh->mask + 1);
        if (sh->count + op->n <= lim) continue; /* room for every key of the operation: the usual case */
        size_t room = 0;
        for (size_t i = 0; i < op->n; i++)
            room += op->r[i].sh == sh;
        if (sh->count + room <= lim) continue;
        room = 0;
        for (size_t i = 0; i < op->n; i++)
            room += op->r[i].sh == sh && !find(sh, op->r[i].hash, op->r[i].s->key, op->r[i].len);
        if (room) ensure_room(sh, room, now);
    }
}

static int64_t ns_to_ms_ceil(int64_t ns)
{
    if (ns < 0) return -1;
    return ns / 1000000 + (ns % 1000000 != 0);
}

/* Rolls a budget window forward: usage in an older window no longer counts. */
static void roll(int64_t *id, int64_t *used, int64_t cur)
{
    if (*id != cur) {
        *id = cur;
        *used = 0;
    }
}

static int64_t add_sat(int64_t a, int64_t b)
{
    i128 v = (i128)a + b;
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}

typedef struct {
    wd_limit_outcome_t outcome;
    int scope;
    int64_t retry_ns; /* -1 = never */
} refusal_t;

/* The reported refusal is the one that lasts longest: the request passes only once all have cleared.
 * "Never" outranks any time; ties go to the first found (scope order, then requests, tokens,
 * concurrency, day, month). */
static void refuse(refusal_t *rf, wd_limit_outcome_t o, int scope, int64_t retry_ns)
{
    uint64_t rank = retry_ns < 0 ? UINT64_MAX : (uint64_t)retry_ns;
    uint64_t cur = rf->outcome == WD_LIMIT_OK ? 0 : rf->retry_ns < 0 ? UINT64_MAX : (uint64_t)rf->retry_ns;
    if (rf->outcome != WD_LIMIT_OK && rank <= cur) return;
    rf->outcome = o;
    rf->scope = scope;
    rf->retry_ns = retry_ns;
}

/* The most constrained scope of a kind: least remaining, then the longest reset (kept in ns until the
 * decision is complete). */
static void report(int64_t *limit, int64_t *remaining, int64_t *reset_ns, int64_t lim, int64_t rem,
                   int64_t reset)
{
    if (*limit >= 0 && (rem > *remaining || (rem == *remaining && reset <= *reset_ns))) return;
    *limit = lim;
    *remaining = rem;
    *reset_ns = reset;
}

static void resets_to_ms(wd_limit_decision_t *d)
{
    if (d->limit_requests >= 0) d->reset_requests_ms = ns_to_ms_ceil(d->reset_requests_ms);
    if (d->limit_tokens >= 0) d->reset_tokens_ms = ns_to_ms_ceil(d->reset_tokens_ms);
}

static void budget_check(refusal_t *rf, int scope, int64_t *used, uint64_t budget, int64_t tokens,
                         int64_t end, int64_t now)
{
    if (!budget) return;
    if ((i128)*used + tokens <= (i128)budget) {
        *used += tokens;
        return;
    }
    refuse(rf, WD_LIMIT_BUDGET, scope, (uint64_t)tokens > budget ? -1 : end - now);
}

void wd_limiter_admit(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t tokens,
                      int64_t now_ns, wd_limit_decision_t *d)
{
    *d = (wd_limit_decision_t){.outcome = WD_LIMIT_OK,
                               .scope = -1,
                               .retry_after_ms = 0,
                               .limit_requests = -1,
                               .remaining_requests = -1,
                               .reset_requests_ms = -1,
                               .limit_tokens = -1,
                               .remaining_tokens = -1,
                               .reset_tokens_ms = -1};
    if (n > WD_LIMIT_MAX_SCOPES) { /* a caller bug; refusing is the safe reading */
        d->outcome = WD_LIMIT_UNAVAILABLE;
        d->retry_after_ms = UNAVAILABLE_RETRY_MS;
        return;
    }
    if (tokens < 0) tokens = 0;
    op_t op;
    op_lock(l, &op, scopes, n);
    if (op.n == 0) return;
    op_room(&op, now_ns);

    state_t work[WD_LIMIT_MAX_SCOPES];
    entry_t *wptr[WD_LIMIT_MAX_SCOPES];
    int nwork = 0;
    for (size_t i = 0; i < op.n; i++) {
        ref_t *r = &op.r[i];
        r->e = find_or_insert(r->sh, r->hash, r->s->key, r->len);
        if (!r->e) {
            op_unlock(&op);
            d->outcome = WD_LIMIT_UNAVAILABLE;
            d->scope = (int)(r->s - scopes);
            d->retry_after_ms = UNAVAILABLE_RETRY_MS;
            return;
        }
        r->work = -1;
        for (size_t j = 0; j < i; j++)
            if (op.r[j].e == r->e) r->work = op.r[j].work;
        if (r->work < 0) {
            r->work = nwork;
            wptr[nwork] = r->e;
            work[nwork++] = r->e->st;
        }
    }

    bool budgets = false;
    for (size_t i = 0; i < op.n; i++)
        budgets |= op.r[i].s->lim.tokens_per_day || op.r[i].s->lim.tokens_per_month;
    windows_t win = {0};
    if (budgets) windows_at(now_ns, &win);

    refusal_t rf = {WD_LIMIT_OK, -1, 0};
    for (size_t i = 0; i < op.n; i++) {
        const wd_limits_t *m = &op.r[i].s->lim;
        state_t *w = &work[op.r[i].work];
        int si = (int)(op.r[i].s - scopes);
        int64_t rem, retry, reset;
        wd_gcra_t g;
        if (m->rpm) {
            gcra_init(&g, m->rpm, MINUTE_NS);
            if (!gcra_take(&g, &w->rpm_tat, now_ns, 1, &rem, &retry, &reset))
                refuse(&rf, WD_LIMIT_REQUESTS, si, retry);
            report(&d->limit_requests, &d->remaining_requests, &d->reset_requests_ms, m->rpm, rem, reset);
        }
        if (m->tpm) {
            gcra_init(&g, m->tpm, MINUTE_NS);
            if (!gcra_take(&g, &w->tpm_tat, now_ns, tokens, &rem, &retry, &reset))
                refuse(&rf, WD_LIMIT_TOKENS, si, retry);
            report(&d->limit_tokens, &d->remaining_tokens, &d->reset_tokens_ms, m->tpm, rem, reset);
        }
        if (m->concurrent) {
            if (w->inflight >= m->concurrent)
                refuse(&rf, WD_LIMIT_CONCURRENCY, si, CONCURRENCY_RETRY_MS * INT64_C(1000000));
            else
                w->inflight++;
        }
        if (m->tokens_per_day) {
            roll(&w->day, &w->day_used, win.day);
            budget_check(&rf, si, &w->day_used, m->tokens_per_day, tokens, win.day_end, now_ns);
        }
        if (m->tokens_per_month) {
            roll(&w->month, &w->month_used, win.month);
            budget_check(&rf, si, &w->month_used, m->tokens_per_month, tokens, win.month_end, now_ns);
        }
    }

    if (rf.outcome == WD_LIMIT_OK) {
        for (int k = 0; k < nwork; k++) {
            wptr[k]->st = work[k];
            if (now_ns > wptr[k]->touched) wptr[k]->touched = now_ns;
        }
    } else {
        /* Nothing is charged; the headers describe the state the client will find on retry. */
        d->limit_requests = d->remaining_requests = d->reset_requests_ms = -1;
        d->limit_tokens = d->remaining_tokens = d->reset_tokens_ms = -1;
        for (size_t i = 0; i < op.n; i++) {
            const wd_limits_t *m = &op.r[i].s->lim;
            int64_t rem, reset, tat;
            wd_gcra_t g;
            if (m->rpm) {
                gcra_init(&g, m->rpm, MINUTE_NS);
                tat = op.r[i].e->st.rpm_tat;
                gcra_take(&g, &tat, now_ns, 0, &rem, NULL, &reset);
                report(&d->limit_requests, &d->remaining_requests, &d->reset_requests_ms, m->rpm, rem, reset);
            }
            if (m->tpm) {
                gcra_init(&g, m->tpm, MINUTE_NS);
                tat = op.r[i].e->st.tpm_tat;
                gcra_take(&g, &tat, now_ns, 0, &rem, NULL, &reset);
                report(&d->limit_tokens, &d->remaining_tokens, &d->reset_tokens_ms, m->tpm, rem, reset);
            }
        }
        d->outcome = rf.outcome;
        d->scope = rf.scope;
        d->retry_after_ms = ns_to_ms_ceil(rf.retry_ns);
    }
    op_unlock(&op);
    resets_to_ms(d);
}

/* Reconciliation: charges delta tokens (a refund when negative) and, for an admitted request,
 * releases its concurrency slots. */
static void settle(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t delta, bool release,
                   int64_t now_ns)
{
    op_t op;
    op_lock(l, &op, scopes, n);
    if (op.n == 0) return;
    op_room(&op, now_ns);
    bool budgets = false;
    for (size_t i = 0; i < op.n; i++)
        budgets |= op.r[i].s->lim.tokens_per_day || op.r[i].s->lim.tokens_per_month;
    windows_t win = {0};
    if (budgets) windows_at(now_ns, &win);

    for (size_t i = 0; i < op.n; i++) {
        ref_t *r = &op.r[i];
        const wd_limits_t *m = &r->s->lim;
        bool charges = delta > 0 && (m->tpm || m->tokens_per_day || m->tokens_per_month);
        /* An entry evicted meanwhile was fully recovered: it has nothing in flight and nothing to
         * refund; it comes back only to carry an overrun (if the shard is full, that charge is lost). */
        entry_t *e = charges ? find_or_insert(r->sh, r->hash, r->s->key, r->len)
                             : find(r->sh, r->hash, r->s->key, r->len);
        if (!e) continue;
        state_t *st = &e->st;
        if (release && m->concurrent && st->inflight > 0) st->inflight--;
        if (delta != 0) {
            if (m->tpm) {
                wd_gcra_t g;
                gcra_init(&g, m->tpm, MINUTE_NS);
                gcra_adjust(&g, &st->tpm_tat, now_ns, delta);
            }
            /* Reconciliation lands in the current window; a refund never takes usage below zero. */
            if (m->tokens_per_day) {
                roll(&st->day, &st->day_used, win.day);
                st->day_used = WD_MAX(add_sat(st->day_used, delta), 0);
            }
            if (m->tokens_per_month) {
                roll(&st->month, &st->month_used, win.month);
                st->month_used = WD_MAX(add_sat(st->month_used, delta), 0);
            }
        }
        if (now_ns > e->touched) e->touched = now_ns;
    }
    op_unlock(&op);
}

void wd_limiter_finish(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t reserved,
                       int64_t actual, int64_t now_ns)
{
    if (n > WD_LIMIT_MAX_SCOPES) return;
    settle(l, scopes, n, add_sat(WD_MAX(actual, 0), -WD_MAX(reserved, 0)), true, now_ns);
}

void wd_limiter_charge(wd_limiter_t *l, const wd_limit_scope_t *scopes, size_t n, int64_t tokens, int64_t now_ns)
{
    if (n > WD_LIMIT_MAX_SCOPES || tokens <= 0) return;
    settle(l, scopes, n, tokens, false, now_ns);
}

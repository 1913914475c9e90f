/* GCRA arithmetic shared by the local and the redis backend (limit.h states the formulas). All in
 * integer nanoseconds; intermediate products go through __int128 so limits up to 10^9 per period
 * and costs or charges of any int64 size never overflow: results saturate at INT64_MAX instead. */
#include "limit/limit.h"

typedef __int128 i128;

static int64_t sat(i128 v)
{
    if (v > INT64_MAX) return INT64_MAX;
    if (v < INT64_MIN) return INT64_MIN;
    return (int64_t)v;
}

const char *wd_limit_code(wd_limit_outcome_t o)
{
    switch (o) {
    case WD_LIMIT_OK: return "ok";
    case WD_LIMIT_REQUESTS: return "rate_limit_exceeded";
    case WD_LIMIT_TOKENS: return "tokens_exceeded";
    case WD_LIMIT_CONCURRENCY: return "concurrency_exceeded";
    case WD_LIMIT_BUDGET: return "budget_exceeded";
    case WD_LIMIT_UNAVAILABLE: return "limits_unavailable";
    }
    return "unknown";
}

void wd_gcra_init(wd_gcra_t *g, int64_t limit, int64_t period_ns)
{
    if (limit <= 0 || period_ns <= 0) {
        /* a limiter that admits nothing: fail closed rather than divide by zero */
        g->T = 1;
        g->tau = 0;
        g->limit = 0;
        return;
    }
    g->limit = limit;
    g->T = period_ns / limit;
    if (g->T < 1) g->T = 1;      /* more cells than nanoseconds: the window stretches to limit ns */
    g->tau = g->T * (limit - 1); /* <= period_ns (or limit when T was clamped): no overflow */
}

bool wd_gcra_take(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t cost, int64_t *remaining,
                  int64_t *retry_after_ns, int64_t *reset_after_ns)
{
    if (cost < 0) cost = 0;
    const int64_t T = g->T;
    const i128 window = (i128)g->tau + T;
    const i128 tat0 = *tat > now ? *tat : now;
    bool ok = false;
    int64_t retry = -1; /* cost > limit (or a zero limit) can never pass: say "never", not a time */
    i128 new_tat = tat0;
    if (g->limit > 0 && cost <= g->limit) {
        new_tat = tat0 + (i128)cost * T;
        ok = new_tat - now <= window;
        retry = ok ? 0 : sat(new_tat - window - now);
    }
    if (ok) *tat = sat(new_tat);
    /* figures describe the state after this decision: charged if allowed, untouched if refused (where
     * tat may lie beyond the window after a charged overrun, hence the clamp) */
    const i128 state = ok ? new_tat : tat0;
    const i128 room = (i128)now + window - state;
    if (remaining) *remaining = room > 0 ? (int64_t)room / T : 0; /* 0 < room <= window fits int64 */
    if (retry_after_ns) *retry_after_ns = retry;
    if (reset_after_ns) *reset_after_ns = sat(state - now);
    return ok;
}

void wd_gcra_adjust(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t delta)
{
    if (g->limit <= 0 || delta == 0) return;
    if (delta > 0) {
        /* the cells are used now: capacity that recovered while the request ran cannot absorb them
         * retroactively any more than a new request could */
        i128 base = *tat > now ? *tat : now;
        *tat = sat(base + (i128)delta * g->T);
        return;
    }
    if (*tat <= now) return; /* nothing outstanding to give back; never bank capacity */
    i128 nt = (i128)*tat + (i128)delta * g->T;
    *tat = nt < now ? now : (int64_t)nt;
}

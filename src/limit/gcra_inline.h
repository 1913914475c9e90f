/* The GCRA arithmetic of limit.h as static inline functions: gcra.c exports them as wd_gcra_*, and
 * the local backend includes them directly so a decision's per-scope arithmetic is inlined into it
 * (the compiler then drops the figures a call does not use). One implementation for both. */
#ifndef WD_LIMIT_GCRA_INLINE_H
#define WD_LIMIT_GCRA_INLINE_H

#include "limit/limit.h"

typedef __int128 gcra_i128;

static inline int64_t gcra_sat(gcra_i128 v)
{
    if (v > INT64_MAX) return INT64_MAX;
    if (v < INT64_MIN) return INT64_MIN;
    return (int64_t)v;
}

static inline void gcra_init(wd_gcra_t *g, int64_t limit, int64_t period_ns)
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

static inline bool gcra_take(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t cost, int64_t *remaining,
                             int64_t *retry_after_ns, int64_t *reset_after_ns)
{
    if (cost < 0) cost = 0;
    const int64_t T = g->T;
    const gcra_i128 window = (gcra_i128)g->tau + T;
    const gcra_i128 tat0 = *tat > now ? *tat : now;
    bool ok = false;
    int64_t retry = -1; /* cost > limit (or a zero limit) can never pass: say "never", not a time */
    gcra_i128 new_tat = tat0;
    if (g->limit > 0 && cost <= g->limit) {
        new_tat = tat0 + (gcra_i128)cost * T;
        ok = new_tat - now <= window;
        retry = ok ? 0 : gcra_sat(new_tat - window - now);
    }
    if (ok) *tat = gcra_sat(new_tat);
    /* figures describe the state after this decision: charged if allowed, untouched if refused (where
     * tat may lie beyond the window after a charged overrun, hence the clamp) */
    const gcra_i128 state = ok ? new_tat : tat0;
    const gcra_i128 room = (gcra_i128)now + window - state;
    if (remaining) *remaining = room > 0 ? (int64_t)room / T : 0; /* 0 < room <= window fits int64 */
    if (retry_after_ns) *retry_after_ns = retry;
    if (reset_after_ns) *reset_after_ns = gcra_sat(state - now);
    return ok;
}

static inline void gcra_adjust(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t delta)
{
    if (g->limit <= 0 || delta == 0) return;
    if (delta > 0) {
        /* the cells are used now: capacity that recovered while the request ran cannot absorb them
         * retroactively any more than a new request could */
        gcra_i128 base = *tat > now ? *tat : now;
        *tat = gcra_sat(base + (gcra_i128)delta * g->T);
        return;
    }
    if (*tat <= now) return; /* nothing outstanding to give back; never bank capacity */
    gcra_i128 nt = (gcra_i128)*tat + (gcra_i128)delta * g->T;
    *tat = nt < now ? now : (int64_t)nt;
}

#endif

/* GCRA arithmetic shared by the local and the redis backend (limit.h states the formulas; the
 * bodies live in gcra_inline.h so the local backend inlines them). All in integer nanoseconds;
 * intermediate products go through __int128 so limits up to 10^9 per period and costs or charges
 * of any int64 size never overflow: results saturate at INT64_MAX instead. */
#include "limit/gcra_inline.h"

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
    gcra_init(g, limit, period_ns);
}

bool wd_gcra_take(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t cost, int64_t *remaining,
                  int64_t *retry_after_ns, int64_t *reset_after_ns)
{
    return gcra_take(g, tat, now, cost, remaining, retry_after_ns, reset_after_ns);
}

void wd_gcra_adjust(const wd_gcra_t *g, int64_t *tat, int64_t now, int64_t delta)
{
    gcra_adjust(g, tat, now, delta);
}

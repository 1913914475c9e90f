/* Audit event microbenchmark: the CPU time of formatting one request's audit line
 * (wd_event_to_json), which the gateway does for every request while audit.file is set (the default
 * is stdout). The event is a typical proxied chat completion: no principal, usage known.
 *
 *   event_bench [seconds per measurement, default 1]
 *
 * Prints "event_ns N" (nanoseconds per event, best of 3, per CPU second of the measuring thread) and
 * "event_bytes N" (the line's length). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/event.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(secs > 0 && secs <= 60)) {
        fprintf(stderr, "usage: event_bench [seconds per measurement, 0-60, default 1]\n");
        return 2;
    }
    wd_event_t e;
    wd_event_init(&e);
    strcpy(e.request_id, "rq0123456789abcdef");
    e.wall_ms = 1795633200123ull;
    strcpy(e.client_ip, "127.0.0.1");
    strcpy(e.method, "POST");
    strcpy(e.path, "/v1/chat/completions");
    e.route = "chat";
    strcpy(e.model, "gpt-4o-mini");
    strcpy(e.upstream, "sim");
    strcpy(e.upstream_model, "sim-small");
    e.status = 200;
    e.prompt_tokens = 212;
    e.completion_tokens = 19;
    e.usage_reported = true;
    e.bytes_in = 1180;
    e.bytes_out = 690;
    e.total_us = 1234;
    e.upstream_us = 1000;
    e.overhead_us = 234;
    e.ttfb_us = 1200;
    wd_buf_t b;
    wd_buf_init(&b, 0);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_s(), t;
        unsigned long n = 0;
        do {
            for (int i = 0; i < 1000; i++, n++) {
                wd_buf_reset(&b);
                e.wall_ms += 7; /* a new timestamp each time, as in the gateway */
                if (wd_event_to_json(&e, &b)) {
                    fprintf(stderr, "event_bench: wd_event_to_json failed\n");
                    return 1;
                }
            }
        } while ((t = cpu_s() - t0) < secs);
        if (t / (double)n < best) best = t / (double)n;
    }
    printf("event_ns %.0f\nevent_bytes %zu\n", best * 1e9, b.len);
    wd_buf_free(&b);
    return 0;
}

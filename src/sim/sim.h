/* sim: `warden sim`, an OpenAI-compatible upstream simulator. It answers chat completions,
 * completions, embeddings and model listings (streamed and not) with deterministic content, and can
 * inject latency, pacing, errors, hangs and mid-stream disconnects. The demo, the integration tests
 * and the benchmarks run against it, so it is built to never be the bottleneck: one libuv loop per
 * worker thread, SO_REUSEPORT listeners, zero allocations on the common request path. */
#ifndef WD_SIM_H
#define WD_SIM_H

/* Entry point of the `sim` subcommand; argv[0] is "sim". Returns the process exit status:
 * 0 after SIGINT/SIGTERM, 1 when the listener cannot be opened, 2 on a usage error. */
int wd_sim_main(int argc, char **argv);

#endif

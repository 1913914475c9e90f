#!/usr/bin/env bash
# Guard engine benchmark (make bench-guard): builds guard_bench (meson, tests on) and runs it on one
# core over the full default rule set (rules/*.yaml), also over real prompts (the WildGuard benign set
# in ../shared/data, when present), and times `warden scan` starting with the rules
# compiled and loaded from the compile cache; then, in the same run, bench/stream_guard.sh
# measures the output filter on streamed answers through the gateway (two `warden serve`, filter on
# and off, interleaved wrk rounds and a latency client; about 75 s). Appends one dated section with
# both tables to bench/RESULTS.md. Usage:
#
#   bash bench/run_guard.sh [BUILD_DIR]        (default: build)
#
# Knobs (environment): GUARD_BENCH_SECS (CPU seconds per run, default 0.5), GUARD_BENCH_REPS (runs
# per figure, the median is reported; default 5), GUARD_BENCH_CPU (core to pin to, default the last
# one), BENCH_RESULTS (file to append to, default bench/RESULTS.md; "-" for none), GUARD_BENCH_RULES
# (rules directory, default rules), GUARD_BENCH_STREAM (0: skip the streamed-output part; default 1;
# its own knobs, SG_*, are described in bench/stream_guard.sh). Extra analysis, not recorded:
#   build/tests/unit/guard/guard_bench --per-file | --per-rule | --leave-one-out pii.
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
BUILD=${1:-build}
SECS=${GUARD_BENCH_SECS:-0.5}
REPS=${GUARD_BENCH_REPS:-5}
RULES=${GUARD_BENCH_RULES:-rules}
RESULTS=${BENCH_RESULTS:-$root/bench/RESULTS.md}
ncpu=$(nproc)
CPU=${GUARD_BENCH_CPU:-$((ncpu - 1))}
STREAM=${GUARD_BENCH_STREAM:-1}
[[ $STREAM == 0 || $STREAM == 1 ]] || { echo "run_guard: GUARD_BENCH_STREAM must be 0 or 1" >&2; exit 2; }

cd "$root"
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --wrap-mode=nodownload --buildtype=release -Db_ndebug=false -Dtests=true
fi
if [ "$(meson introspect "$BUILD" --buildoptions | /usr/bin/python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="tests"][0])')" != "True" ]; then
    echo "run_guard: $BUILD is configured with -Dtests=false; guard_bench is built only with tests on" >&2
    exit 2
fi
ninja -C "$BUILD" tests/unit/guard/guard_bench warden >/dev/null
bin="$BUILD/tests/unit/guard/guard_bench"
buildtype=$(meson introspect "$BUILD" --buildoptions | /usr/bin/python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"][0])')

pin=()
if command -v taskset >/dev/null; then pin=(taskset -c "$CPU"); fi
cmd=("${pin[@]}" "$bin" --rules "$RULES" --secs "$SECS" --reps "$REPS" --markdown)
echo "running: ${cmd[*]}" >&2
table=$("${cmd[@]}")
load=$(cut -d' ' -f1-3 /proc/loadavg)

# Real prompts: the WildGuard benign set (../shared/data), its prompts one after another, as prose.
benign=$root/../shared/data/dev/benign_prompts_wildguard.json
if [ -r "$benign" ]; then
    ptext=$(mktemp)
    nprompts=$(/usr/bin/python3 -c 'import json,sys; d=[p["prompt"] for p in json.load(open(sys.argv[1]))]
open(sys.argv[2],"w").write("\n\n".join(d)); print(len(d))' "$benign" "$ptext")
    real=$("${pin[@]}" "$bin" --rules "$RULES" --secs "$SECS" --reps "$REPS" --phase prose --prose-file "$ptext")
    table+=$'\n'"| privacy rules (prompts): real prompts, the WildGuard benign set ($nprompts prompts, $(wc -c <"$ptext" | tr -d ' ') bytes) | **${real#prose_mbps } MB/s** |"
    rm -f "$ptext"
fi

# Loading the rules: `warden scan` over an empty input, compiling every database (--no-cache) and
# loading them from a warm cache; the median wall time of REPS runs each, interleaved.
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
loadrules=$(/usr/bin/python3 - "$cache/c" "$REPS" "${pin[@]}" "$BUILD/warden" scan --rules "$RULES" <<'PY'
import statistics, subprocess, sys, time
cache, reps, scan = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def run(*extra):
    t = time.monotonic()
    subprocess.run(scan + list(extra) + ["/dev/null"], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t
run("--cache-dir", cache)  # fills the cache
cold, warm = [], []
for _ in range(reps):
    cold.append(run("--no-cache"))
    warm.append(run("--cache-dir", cache))
cold, warm = statistics.median(cold), statistics.median(warm)
print("| `warden scan` start, rules compiled (`--no-cache`) | %.3f s |" % cold)
print("| `warden scan` start, rules loaded from the cache | %.3f s |" % warm)
print("| ratio | %.1fx faster from the cache |" % (cold / warm))
PY
)
table+=$'\n'"$loadrules"

# The streamed-output part: after the microbenchmark, never at the same time (both use the CPUs).
stream=
if [[ $STREAM == 1 ]]; then
    load_stream=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "running: bash bench/stream_guard.sh $BUILD/warden (load average $load_stream)" >&2
    stream=$(SG_RULES=$RULES bash "$here/stream_guard.sh" "$BUILD/warden")
fi

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
hs_ver=$(dpkg-query -W -f='${Version}' libhyperscan5 2>/dev/null || echo '?')
pcre_ver=$(dpkg-query -W -f='${Version}' libpcre2-8-0 2>/dev/null || echo '?')
cc_ver=$(cc --version | head -1)
nfiles=$(ls "$RULES"/*.yaml | wc -l)

section=$(cat <<EOF

## Guard engine, $(date -u '+%Y-%m-%d %H:%M UTC')

Command: \`make bench-guard\` (\`bash bench/run_guard.sh $BUILD\`, which runs \`${cmd[*]}\`).
Machine: $cpu_model, $ncpu cores, pinned to core $CPU; load average $load. Build: $buildtype, $cc_ver.
Hyperscan $hs_ver, PCRE2 $pcre_ver. Rule set: the full default set, $nfiles files in \`$RULES/\`.
Each figure is the median of $REPS runs of at least $SECS s of CPU time of the measuring thread (rates
per CPU second, so other load on the shared machine lowers them little). Texts are generated by
guard_bench (deterministic): English prose from a word list with ordinary sentence structure, and
synthetic PII-dense text (a finding about every 40 bytes). Targets (issue 4): >= 1 GB/s on prose,
>= 200 MB/s dense, <= 20 µs for the 4 KB request.

| what | result |
|---|---|
$table
EOF
)
if [[ -n $stream ]]; then
    section+=$(printf '\n\n### Streamed output through the gateway (same run)\n\nLoad average before this part: %s.\n%s' \
        "$load_stream" "$stream")
fi
echo "$section"
if [ "$RESULTS" != "-" ]; then
    printf '%s\n' "$section" >>"$RESULTS"
    echo "appended to $RESULTS" >&2
fi

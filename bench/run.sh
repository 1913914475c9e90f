#!/usr/bin/env bash
# warden throughput/latency benchmark: the simulator (`warden sim`) measured directly, behind a bare
# TCP relay, behind nginx and behind warden, with the same wrk load for each. Usage:
#
#   bash bench/run.sh [path/to/warden]          (make bench)
#
# One run (about 6-7 minutes with the defaults; a run that would pass 480 s stops with an error):
#   1. starts `warden sim`, bench/relay.c (built here with cc), nginx and `warden serve` on free
#      loopback ports, nginx and warden with the same number of workers, the relay with one thread,
#      all proxying to the same simulator. The relay copies bytes without parsing them: what it adds
#      is the floor that the machine's loopback TCP and scheduler put under any proxy;
#   2. for each target (direct, relay, nginx, warden): warm-up, then a fixed-duration wrk run with a ~1 KB
#      chat completion body, non-streamed and streamed ("stream": true, a short SSE answer);
#   3. paced runs at about half of warden's saturation throughput for each target, in interleaved
#      rounds whose starting target rotates, to measure the latency a proxy adds when it is not
#      queueing (see bench/chat.lua for the pacing method);
#   3a. controls (bench/controls.sh, run between steps 2 and 3): warden with API-key auth + RBAC, with
#      local rate limits (nothing refused) and with Redis-backed rate limits (a private redis-server),
#      interleaved with the plain warden: throughput at saturation, and CPU per request at one fixed
#      rate for all (added µs per request); Redis decisions per second from warden's /metrics; the
#      local limiter's decisions per second per core (limit_bench); the CPU time of the auth and RBAC
#      work alone per request (auth_bench);
#   4. warden's idle RSS (VmRSS before any request) and peak RSS (VmHWM after all the load);
#   5. prints a table (bench/report.py) and appends a dated section to bench/RESULTS.md.
# Everything it starts is stopped on exit, also on failure or Ctrl-C.
#
# Knobs (environment): BENCH_DURATION (s, default 10), BENCH_ROUNDS (saturation runs are split into
# this many interleaved rounds, default 2), BENCH_WARMUP (s, 2), BENCH_CONNS (64),
# BENCH_PACED_CONNS (16), BENCH_LAYOUT (pinned|shared, default pinned when there are 2+ CPUs),
# BENCH_WORKERS (proxy workers; default from the layout), BENCH_AUDIT (1: warden writes its audit
# log and nginx its access log to the temp dir; default 0, both off), BENCH_RESULTS (file to append
# to, default bench/RESULTS.md; "-" for none), BENCH_KEEP (1: keep the temp dir with logs),
# BENCH_NICE (niceness of every benchmark process; default -10 as root, 0 otherwise), BENCH_RT (1:
# the half-load runs use SCHED_RR; default 1 as root), BENCH_CONTROLS (0: skip step 3a; default 1),
# BENCH_CTL_ROUNDS (the controls' interleaved saturation rounds, default 2), BENCH_CTL_RATE_ROUNDS (their
# fixed-rate rounds of 3 s, default 4), BENCH_CTL_PAIR_ROUNDS (their side-by-side rounds of 3 s, each
# variant with the baseline at the same time, default 8), BENCH_LIMIT_BENCH (path of the limit_bench binary; default:
# next to warden in its meson build dir, where `make build` puts it when tests are on; if it is not
# there, it is built in build-bench/, configured with -Dtests=true and warden's build type),
# BENCH_REDIS (0: no Redis control; default 1 when redis-server is installed), BENCH_HALF_TRIES (a
# half-load run during which the hypervisor stole more than BENCH_MAX_STEAL percent of the CPUs is
# repeated, up to this many runs per target and round; default 3), BENCH_MAX_STEAL (default 2),
# BENCH_HALF_ROUNDS (the half-load runs are split into this many interleaved rounds, default 3),
# BENCH_WARDEN_EXTRA (YAML lines added to the main warden's config, e.g. "busy_poll_us: 300"; the
# controls' instances do not get them, so use it with BENCH_CONTROLS=0: the A/A control would compare
# two configurations).
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WARDEN=${1:-build/warden}
PY=/usr/bin/python3

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-64}
ROUNDS=${BENCH_ROUNDS:-2}
PACED_CONNS=${BENCH_PACED_CONNS:-16}
PROBE=2                       # seconds of each pacing calibration probe
AUDIT=${BENCH_AUDIT:-0}
RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}
KEEP=${BENCH_KEEP:-0}
# Other work on a shared machine preempts the proxy and shows up as latency tails that have nothing to
# do with it. As root, every process of the benchmark runs at nice -10 so that it wins the CPU over
# ordinary (nice 0) processes; this is printed with the results. BENCH_NICE=0 turns it off.
NICE=${BENCH_NICE:-$( [[ $(id -u) == 0 ]] && echo -10 || echo 0)}
# For the half-load latency runs only: SCHED_RR (see there). Needs root; BENCH_RT=0 turns it off.
RT=${BENCH_RT:-$( [[ $(id -u) == 0 ]] && command -v chrt >/dev/null && echo 1 || echo 0)}
CONTROLS=${BENCH_CONTROLS:-1}
CTL_ROUNDS=${BENCH_CTL_ROUNDS:-2}
CTL_RATE_ROUNDS=${BENCH_CTL_RATE_ROUNDS:-4}
CTL_PAIR_ROUNDS=${BENCH_CTL_PAIR_ROUNDS:-8}
REDIS=${BENCH_REDIS:-$(command -v redis-server >/dev/null && echo 1 || echo 0)}
HALF_TRIES=${BENCH_HALF_TRIES:-3}
HALF_ROUNDS=${BENCH_HALF_ROUNDS:-3}
MAX_STEAL=${BENCH_MAX_STEAL:-2}
REPLY="The capital of France is Paris. It is known for the Eiffel Tower and the Louvre."

die() { echo "bench: $*" >&2; exit 1; }
log() { printf '[bench %3ds] %s\n' "$SECONDS" "$*" >&2; }

[[ $NICE =~ ^-?[0-9]+$ ]] || die "BENCH_NICE must be an integer, got '$NICE'"
[[ $RT == 0 || $RT == 1 ]] || die "BENCH_RT must be 0 or 1, got '$RT'"
[[ $CONTROLS == 0 || $CONTROLS == 1 ]] || die "BENCH_CONTROLS must be 0 or 1, got '$CONTROLS'"
[[ $REDIS == 0 || $REDIS == 1 ]] || die "BENCH_REDIS must be 0 or 1, got '$REDIS'"
[[ $HALF_TRIES =~ ^[1-9]$ ]] || die "BENCH_HALF_TRIES must be 1..9, got '$HALF_TRIES'"
[[ $HALF_ROUNDS =~ ^[1-9]$ ]] || die "BENCH_HALF_ROUNDS must be 1..9, got '$HALF_ROUNDS'"
[[ $MAX_STEAL =~ ^[0-9]+$ ]] || die "BENCH_MAX_STEAL must be a whole percentage, got '$MAX_STEAL'"
for arg in "$DURATION" "$WARMUP" "$CONNS" "$PACED_CONNS" "$ROUNDS" "$CTL_ROUNDS" "$CTL_RATE_ROUNDS" "$CTL_PAIR_ROUNDS"; do
  [[ $arg =~ ^[1-9][0-9]*$ ]] || die "durations and connection counts must be positive integers, got '$arg'"
done
((DURATION <= 15)) || die "BENCH_DURATION is at most 15 s (the whole run must stay under 8 minutes)"
[[ -x $WARDEN ]] || die "warden binary '$WARDEN' not found or not executable (build it: ninja -C build)"
WARDEN=$(cd "$(dirname "$WARDEN")" && pwd)/$(basename "$WARDEN")
for tool in wrk nginx taskset curl cc; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (bash scripts/install-deps.sh installs it)"
done
[[ -x $PY ]] || die "$PY is required"
NGINX=$(command -v nginx)
if [[ $CONTROLS == 1 && $REDIS == 1 ]]; then
  command -v redis-server >/dev/null || die "BENCH_REDIS=1 but redis-server is not installed"
fi

# The build the binary comes from (an -O0 build measures something else): its meson options.
WARDEN_BUILD=$(dirname "$WARDEN")
BUILD_DESC=$("$PY" - "$WARDEN_BUILD" <<'PYEOF' 2>/dev/null || echo "build options unknown"
import json, subprocess, sys
opts = {o["name"]: o["value"] for o in json.loads(subprocess.run(
    ["meson", "introspect", sys.argv[1], "--buildoptions"], capture_output=True, check=True).stdout)}
print("meson buildtype=%s, optimization=%s, b_ndebug=%s, b_sanitize=%s" % (
    opts["buildtype"], opts["optimization"], opts["b_ndebug"], opts["b_sanitize"]))
PYEOF
)

# The local limiter microbenchmark (bench/limit_bench.c) is built with the unit tests (`make build`
# builds it next to warden). Otherwise it is built here, in build-bench/, before anything is started;
# building does not count against the time budget. The warden build dir itself is left alone.
LIMIT_BENCH=${BENCH_LIMIT_BENCH:-}
if [[ $CONTROLS == 1 && -z $LIMIT_BENCH ]]; then
  LIMIT_BENCH=$WARDEN_BUILD/tests/unit/limit/limit_bench
  if [[ ! -x $LIMIT_BENCH ]]; then
    # A separate build dir (build* is git-ignored) with the tests on and the same build type.
    src_root=$(cd "$here/.." && pwd)
    LIMIT_BENCH=$src_root/build-bench/tests/unit/limit/limit_bench
    if [[ ! -f $src_root/build-bench/build.ninja ]]; then
      btype=$(sed -n 's/^meson buildtype=\([a-z]*\),.*/\1/p' <<<"$BUILD_DESC"); btype=${btype:-release}
      echo "bench: configuring $src_root/build-bench (buildtype $btype, -Dtests=true) for limit_bench" >&2
      meson setup "$src_root/build-bench" "$src_root" --wrap-mode=nodownload --buildtype="$btype" \
        -Db_ndebug=false -Dtests=true >"/tmp/warden-bench-meson.$$.log" 2>&1 \
        || die "meson setup build-bench failed: $(tail -5 "/tmp/warden-bench-meson.$$.log")"
      rm -f "/tmp/warden-bench-meson.$$.log"
    fi
    ninja -C "$src_root/build-bench" tests/unit/limit/limit_bench tests/unit/auth/auth_bench \
      >"/tmp/warden-bench-ninja.$$.log" 2>&1 \
      || die "cannot build limit_bench in $src_root/build-bench: $(grep -m1 -A4 FAILED "/tmp/warden-bench-ninja.$$.log")"
    rm -f "/tmp/warden-bench-ninja.$$.log"
  fi
fi
[[ $CONTROLS == 0 || -x $LIMIT_BENCH ]] || die "limit_bench '$LIMIT_BENCH' not found or not executable"
# The authentication + authorization microbenchmark (bench/auth_bench.c) is built beside it.
AUTH_BENCH=${LIMIT_BENCH%/limit/limit_bench}/auth/auth_bench
[[ $CONTROLS == 0 || -x $AUTH_BENCH ]] || die "auth_bench '$AUTH_BENCH' not found or not executable"
SECONDS=0   # the time budget starts here

# ---------------------------------------------------------------------------------------------------
# CPU layout. The load generator, the simulator and the proxy share this machine; with few cores
# they cannot be isolated, so the layout is part of the result and is printed with it.
ncpu=$(nproc)
mapfile -t cpus < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done)
((${#cpus[@]} == ncpu)) || ncpu=${#cpus[@]}
LAYOUT=${BENCH_LAYOUT:-$( ((ncpu >= 2)) && echo pinned || echo shared)}
join() { local IFS=,; echo "$*"; }
case $LAYOUT in
  pinned)
    ((ncpu >= 2)) || die "BENCH_LAYOUT=pinned needs at least 2 CPUs"
    # The proxy under test gets half of the CPUs to itself; wrk and the simulator share the rest.
    # On a 2-CPU machine: proxy on one CPU (1 worker), wrk + sim on the other. The "direct" run then
    # has wrk and sim on a single CPU, so its throughput is that CPU's, not the machine's.
    nproxy=$((ncpu / 2))
    PROXY_CPUS=$(join "${cpus[@]:ncpu-nproxy}")
    GEN_CPUS=$(join "${cpus[@]:0:ncpu-nproxy}")
    WORKERS=${BENCH_WORKERS:-$nproxy}
    SIM_WORKERS=$(( (ncpu - nproxy + 1) / 2 )); ((SIM_WORKERS >= 1)) || SIM_WORKERS=1
    WRK_THREADS=$(( (ncpu - nproxy + 1) / 2 )); ((WRK_THREADS >= 1)) || WRK_THREADS=1
    layout_desc="pinned: proxy (relay with 1 thread, nginx or warden with $WORKERS worker(s)) on CPU $PROXY_CPUS; wrk ($WRK_THREADS thread(s)) and sim ($SIM_WORKERS worker(s)) share CPU $GEN_CPUS"
    ;;
  shared)
    PROXY_CPUS=$(join "${cpus[@]}"); GEN_CPUS=$PROXY_CPUS
    WORKERS=${BENCH_WORKERS:-$ncpu}
    SIM_WORKERS=$ncpu
    WRK_THREADS=$(( ncpu > 1 ? ncpu / 2 : 1 ))
    layout_desc="shared: no pinning; proxy (relay with 1 thread, nginx or warden with $WORKERS workers), sim ($SIM_WORKERS workers) and wrk ($WRK_THREADS thread(s)) all compete for CPUs $PROXY_CPUS"
    ;;
  *) die "BENCH_LAYOUT must be pinned or shared, got '$LAYOUT'" ;;
esac
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_WORKERS must be a positive integer"
# Command prefixes: pinned and niced. nice and taskset exec the command, so $! is its pid.
ON_PROXY=(nice -n "$NICE" taskset -c "$PROXY_CPUS")
ON_GEN=(nice -n "$NICE" taskset -c "$GEN_CPUS")
((NICE == 0)) || layout_desc+="; all benchmark processes at nice $NICE"
((RT == 0)) || layout_desc+="; half-load runs with proxy, sim and wrk under SCHED_RR"
if ((ncpu < 4)); then
  layout_desc+=" (only $ncpu CPUs: load generator, simulator and proxy cannot be fully isolated, and other processes on this machine share the same CPUs)"
fi

# ---------------------------------------------------------------------------------------------------
# Process management: every process we start is recorded by pid and stopped on exit.
DIR=$(mktemp -d /tmp/warden-bench.XXXXXX)
PIDS=()
WRK_PID=
BUDGET=480   # seconds: no wrk run may start that would end after this
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # shellcheck disable=SC2086 # one pid per word (bench/controls.sh runs two wrk at once)
  [[ -z $WRK_PID ]] || kill -TERM $WRK_PID 2>/dev/null || true
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((rc != 0)) || [[ $KEEP == 1 ]]; then
    echo "bench: logs kept in $DIR" >&2
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=bench/common.sh
. "$here/common.sh"
proc_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; } # kB
# CPU time in nanoseconds of the given pids, all their threads: the scheduler's exact run time
# (/proc/PID/task/TID/schedstat), not utime+stime, which come in clock ticks (10 ms: ±1 µs per
# request over a short run, too coarse for the controls' 1-2 µs differences). Without schedstat
# (kernels built without it), utime+stime.
if [[ -r /proc/self/schedstat ]]; then
  CPU_CLOCK="scheduler run time (/proc/PID/task/*/schedstat, ns)"
  cpu_ns() {
    local t=0 pid
    for pid in "$@"; do
      t=$((t + $(awk '{ s += $1 } END { printf "%.0f", s }' /proc/"$pid"/task/*/schedstat)))
    done
    echo "$t"
  }
else
  CPU_CLOCK="utime+stime (/proc/PID/stat, clock ticks)"
  cpu_ns() {
    local t=0 pid tck
    tck=$(getconf CLK_TCK)
    for pid in "$@"; do
      t=$((t + $(awk -v tck="$tck" '{ sub(/.*\) /, ""); printf "%.0f", ($12 + $13) * 1e9 / tck }' "/proc/$pid/stat")))
    done
    echo "$t"
  }
fi
ns_to_s() { printf '%d.%09d' $(($1 / 1000000000)) $(($1 % 1000000000)); }
# CPU time the hypervisor gave to other guests, all CPUs together (the "steal" field of /proc/stat):
# on a shared virtual machine this, not the proxy, is what moves the tail latency.
steal_ticks() { local _c u n s i w q sq st _r; read -r _c u n s i w q sq st _r </proc/stat; echo "$st"; }
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------------
log "layout: $layout_desc"
log "temp dir: $DIR"

# Background load before we start anything: on a shared machine this is the first thing to check
# when the numbers look odd.
read -r _ u n s i w q sq st _ < /proc/stat; busy0=$((u + n + s + q + sq + st)); tot0=$((busy0 + i + w))
sleep 1
read -r _ u n s i w q sq st _ < /proc/stat; busy1=$((u + n + s + q + sq + st)); tot1=$((busy1 + i + w))
BG_BUSY=$(( (busy1 - busy0) * 100 / (tot1 - tot0 > 0 ? tot1 - tot0 : 1) ))
log "background CPU use before the run: ${BG_BUSY}% of all CPUs"

# --- simulator -------------------------------------------------------------------------------------
"${ON_GEN[@]}" "$WARDEN" sim --listen 127.0.0.1:0 --workers "$SIM_WORKERS" --reply "$REPLY" \
  >"$DIR/sim.log" 2>&1 &
SIM_PID=$!; PIDS+=("$SIM_PID")
SIM_PORT=
for _ in $(seq 100); do
  SIM_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DIR/sim.log" | head -1)
  [[ -n $SIM_PORT ]] && break
  kill -0 "$SIM_PID" 2>/dev/null || die "warden sim exited: $(tail -3 "$DIR/sim.log")"
  sleep 0.05
done
[[ -n $SIM_PORT ]] || die "warden sim did not report its port"
wait_port "$SIM_PORT" "$SIM_PID" sim

# --- warden ----------------------------------------------------------------------------------------
W_PORT=$(free_port)
if [[ $AUDIT == 1 ]]; then audit_file="\"$DIR/audit.jsonl\""; else audit_file=null; fi
write_warden_config() { # [extra top-level line]
  cat >"$DIR/warden.yaml" <<EOF
listen: 127.0.0.1:$W_PORT
workers: $WORKERS
log_level: warn
upstreams:
  - { name: sim, url: http://127.0.0.1:$SIM_PORT/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 64 }
models:
  - { name: gpt-4o-mini, upstream: sim, upstream_model: sim-small }
audit: { file: $audit_file }
${BENCH_WARDEN_EXTRA:-}
${1:-}
EOF
}
export WARDEN_BENCH_UPSTREAM_KEY=bench-upstream-key
# The gateway is measured open (no client authentication), like nginx. Builds with the auth stage
# require saying so explicitly; older ones do not know the key.
write_warden_config "auth: { mode: none }"
if ! "$WARDEN" config check "$DIR/warden.yaml" >"$DIR/config-check.log" 2>&1; then
  grep -q "unknown key 'auth'" "$DIR/config-check.log" || die "warden config check: $(cat "$DIR/config-check.log")"
  write_warden_config
  "$WARDEN" config check "$DIR/warden.yaml" >"$DIR/config-check.log" 2>&1 \
    || die "warden config check: $(cat "$DIR/config-check.log")"
fi
"${ON_PROXY[@]}" "$WARDEN" serve -c "$DIR/warden.yaml" \
  >"$DIR/warden.log" 2>&1 &
W_PID=$!; PIDS+=("$W_PID")
wait_port "$W_PORT" "$W_PID" warden
sleep 0.2   # let every worker finish setting up before sampling
W_IDLE_KB=$(proc_field "$W_PID" VmRSS)
log "warden pid $W_PID on :$W_PORT, idle VmRSS ${W_IDLE_KB} kB"

# --- relay: bench/relay.c, the least a proxy can do ------------------------------------------------
cc -O2 -Wall -Wextra -Werror -o "$DIR/relay" "$here/relay.c" 2>"$DIR/relay.log" \
  || die "cannot build bench/relay.c: $(head -5 "$DIR/relay.log")"
R_PORT=$(free_port)
"${ON_PROXY[@]}" "$DIR/relay" "$R_PORT" "$SIM_PORT" >"$DIR/relay.log" 2>&1 &
R_PID=$!; PIDS+=("$R_PID")
wait_port "$R_PORT" "$R_PID" relay
log "relay pid $R_PID on :$R_PORT"

# --- nginx -----------------------------------------------------------------------------------------
N_PORT=$(free_port)
mkdir -p "$DIR/nginx"
user_line=
if [[ $(id -u) == 0 ]]; then user_line="user $(id -un) $(id -gn);"; fi  # workers stay the invoking user
if [[ $AUDIT == 1 ]]; then access_log="access_log $DIR/nginx/access.log;"; else access_log="access_log off;"; fi
sed -e "s|@WORKERS@|$WORKERS|g" -e "s|@DIR@|$DIR/nginx|g" -e "s|@SIM_PORT@|$SIM_PORT|g" \
    -e "s|@PORT@|$N_PORT|g" -e "s|@USER@|$user_line|g" -e "s|@ACCESS_LOG@|$access_log|g" \
    "$here/nginx.conf.in" >"$DIR/nginx.conf"
"${ON_PROXY[@]}" "$NGINX" -p "$DIR/nginx" -e "$DIR/nginx/error.log" -c "$DIR/nginx.conf" \
  >"$DIR/nginx.log" 2>&1 &
N_PID=$!; PIDS+=("$N_PID")
wait_port "$N_PORT" "$N_PID" nginx
nginx_pids() { echo "$N_PID" $(pgrep -P "$N_PID"); }
log "nginx master pid $N_PID on :$N_PORT (workers: $(nginx_pids | cut -d' ' -f2-))"

# --- sanity: every target answers both request shapes correctly ------------------------------------
BODY_NS=$DIR/body.json; BODY_S=$DIR/body-stream.json
"$PY" "$here/body.py" "$BODY_NS" "$BODY_S"
BODY_BYTES=$(wc -c <"$BODY_NS")

declare -A URL=(
  [direct]="http://127.0.0.1:$SIM_PORT/v1/chat/completions"
  [relay]="http://127.0.0.1:$R_PORT/v1/chat/completions"
  [nginx]="http://127.0.0.1:$N_PORT/v1/chat/completions"
  [warden]="http://127.0.0.1:$W_PORT/v1/chat/completions"
)
TARGETS=(direct relay nginx warden)
for t in "${TARGETS[@]}"; do
  out=$(curl -sS -m 5 -o "$DIR/check-$t.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @"$BODY_NS" "${URL[$t]}") || die "$t: request failed"
  [[ $out == 200 ]] || die "$t: non-streamed check answered HTTP $out: $(head -c 300 "$DIR/check-$t.json")"
  grep -q '"chat.completion"' "$DIR/check-$t.json" || die "$t: unexpected answer: $(head -c 300 "$DIR/check-$t.json")"
  out=$(curl -sS -m 5 -N -o "$DIR/check-$t.sse" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary @"$BODY_S" "${URL[$t]}") || die "$t: streamed request failed"
  [[ $out == 200 ]] || die "$t: streamed check answered HTTP $out: $(head -c 300 "$DIR/check-$t.sse")"
  tail -c 100 "$DIR/check-$t.sse" | grep -q 'data: \[DONE\]' || die "$t: stream did not end with [DONE]"
done
SSE_EVENTS=$(grep -c '^data: ' "$DIR/check-direct.sse")
log "all targets answer 200 (body $BODY_BYTES bytes; stream of $SSE_EVENTS events)"

# ---------------------------------------------------------------------------------------------------
RES=$DIR/results.jsonl
: >"$RES"
declare -A PROXY_PID=()  # the controls' warden instances (bench/controls.sh)
declare -A WRK_EXTRA=()  # extra chat.lua arguments per target (auth_file=...)
proxy_pids() {
  case $1 in
    direct) ;;                      # nothing between wrk and the simulator
    relay) echo "$R_PID" ;;
    nginx) nginx_pids ;;
    warden) echo "$W_PID" ;;
    *) echo "${PROXY_PID[$1]}" ;;
  esac
}
# Hooks around each measured wrk run, for figures beyond wrk's and the proxy's CPU (controls.sh
# redefines them): extra_after prints key=value pairs recorded with the run.
extra_before() { :; }
extra_after() { :; }
# start_wrk TARGET MODE SECONDS CONNS DELAY_MS OUTFILE: starts one wrk run in the background (paced
# when DELAY_MS is not empty), output to OUTFILE; its pid is left in WRK_STARTED.
start_wrk() {
  local target=$1 mode=$2 secs=$3 conns=$4 delay=$5 out=$6 args=() env=()
  if [[ $mode == stream ]]; then args=(body="$BODY_S" stream=1); else args=(body="$BODY_NS" stream=0); fi
  if [[ -n $delay ]]; then args+=(delay_ms="$delay"); env=(BENCH_PACED=1); fi
  # shellcheck disable=SC2206 # space-separated chat.lua arguments
  [[ -z ${WRK_EXTRA[$target]-} ]] || args+=(${WRK_EXTRA[$target]})
  local threads=$WRK_THREADS
  ((threads <= conns)) || threads=$conns
  env "${env[@]+"${env[@]}"}" timeout $((secs + 10)) "${ON_GEN[@]}" \
    wrk -t "$threads" -c "$conns" -d "${secs}s" --timeout 5s -s "$here/chat.lua" "${URL[$target]}" \
    -- "${args[@]}" >"$out" 2>&1 &
  WRK_STARTED=$!
}
# run_wrk TARGET MODE PHASE SECONDS CONNS [DELAY_MS]: one wrk run, recorded as a line of $RES with the
# CPU time the proxy and the simulator used during it (from /proc, so per-request CPU cost can be
# compared even when the machine is too noisy for throughput to be stable).
run_wrk() {
  local target=$1 mode=$2 phase=$3 secs=$4 conns=$5 delay=${6:-} p0 p1 s0 s1 st0 st1 out line
  # shellcheck disable=SC2046 # one pid per word
  p0=$(cpu_ns $(proxy_pids "$target")); s0=$(cpu_ns "$SIM_PID"); st0=$(steal_ticks)
  [[ $phase == warmup ]] || extra_before "$target"
  ((SECONDS + secs <= BUDGET)) || die "time budget of ${BUDGET}s exceeded (at ${SECONDS}s); stopping"
  # In the background and waited for, so that the exit trap can stop it too.
  start_wrk "$target" "$mode" "$secs" "$conns" "$delay" "$DIR/wrk.out"
  WRK_PID=$WRK_STARTED
  wait "$WRK_PID" || die "wrk failed against $target: $(cat "$DIR/wrk.out")"
  WRK_PID=
  out=$(cat "$DIR/wrk.out")
  # shellcheck disable=SC2046
  p1=$(cpu_ns $(proxy_pids "$target")); s1=$(cpu_ns "$SIM_PID"); st1=$(steal_ticks)
  LAST_STEAL_PCT=$(( (st1 - st0) * 100 * 100 / (CLK_TCK * secs * $(nproc)) )) # in hundredths of a percent
  line=$(grep '^BENCH ' <<<"$out" | sed 's/^BENCH //') || die "wrk printed no result for $target: $out"
  [[ $phase == warmup ]] && return 0
  local extra
  extra=$(extra_after "$target") || die "$target: could not read its counters after the run"
  # shellcheck disable=SC2086 # key=value words
  "$PY" "$here/report.py" record "$RES" "$line" target="$target" mode="$mode" phase="$phase" \
    conns="$conns" delay_ms="${delay:-0}" proxy_cpu_s="$(ns_to_s $((p1 - p0)))" \
    sim_cpu_s="$(ns_to_s $((s1 - s0)))" steal_s="$(ns_to_s $(((st1 - st0) * 1000000000 / CLK_TCK)))" $extra
}
get() { "$PY" "$here/report.py" get "$RES" "$@"; } # TARGET MODE PHASE FIELD (the latest such run)

# 1. saturation: the same connections, threads and duration for every target.
for t in "${TARGETS[@]}"; do
  log "$t: warm-up ${WARMUP}s"
  run_wrk "$t" plain warmup "$WARMUP" "$CONNS"
done
# On a shared machine the background load drifts within seconds; each target's DURATION is split into
# ROUNDS interleaved runs (direct, relay, nginx, warden, direct, ...) so drift hits all alike.
round_secs=$(( (DURATION + ROUNDS - 1) / ROUNDS ))
for mode in plain stream; do
  for _ in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do run_wrk "$t" "$mode" sat "$round_secs" "$CONNS"; done
  done
done

# 1a. controls: auth + RBAC and rate limits against the plain warden (before step 2, which puts the
# processes under SCHED_RR).
CTL_META=()
if [[ $CONTROLS == 1 ]]; then
  # shellcheck source=bench/controls.sh
  source "$here/controls.sh"
fi

# 2. about half of warden's saturation throughput, the same offered rate for every target. wrk cannot
# hold a fixed rate (wrk2 is not packaged in Debian), so each connection pauses between requests
# (chat.lua delay()); the pause is calibrated per target with two short probes so the achieved rates
# match, and the achieved rates are reported.
if [[ $RT == 1 ]]; then
  # Below saturation the CPUs are partly idle, and a waking proxy would wait out the time slice of
  # whatever background process holds its CPU (milliseconds): that is this machine's noise, not the
  # proxy's latency. SCHED_RR wakes our processes at once. Not used at saturation, where real-time
  # tasks would starve everything else on the machine (and RT throttling would distort the result).
  for p in "$SIM_PID" "$R_PID" "$W_PID" $(nginx_pids); do chrt -a -r -p 1 "$p" >/dev/null; done
  ON_GEN=(chrt -r 1 "${ON_GEN[@]}")
fi
HALF=$("$PY" -c "print(round($(get warden plain sat rps) / 2))")
log "paced runs at ~$HALF req/s (half of warden's non-streamed saturation), $PACED_CONNS connections"
declare -A DELAY
for t in "${TARGETS[@]}"; do
  # period per connection = conns / rate; the pause is the period minus the time a request takes.
  delay=$("$PY" -c "print(max(0.0, $PACED_CONNS / $HALF * 1000 - 0.15))")
  for _ in 1 2; do
    run_wrk "$t" plain probe "$PROBE" "$PACED_CONNS" "$delay"
    rate=$(get "$t" plain probe rps)
    delay=$("$PY" -c "print('%.3f' % max(0.0, $delay + $PACED_CONNS * (1 / $HALF - 1 / $rate) * 1000))")
  done
  DELAY[$t]=$delay
done
# Like the saturation runs, each target's DURATION is split into HALF_ROUNDS interleaved rounds, and the
# target that starts a round rotates: the hypervisor's steal drifts over minutes (it was highest for
# whichever target ran last when the targets ran one after the other), so every target must sample
# the same stretch of time. Steal also comes in bursts of milliseconds, the size of the tail being
# measured: a round it hit is kept in the results as "half_stolen" and run again, up to HALF_TRIES.
half_secs=$(( (DURATION + HALF_ROUNDS - 1) / HALF_ROUNDS ))
for r in $(seq 0 $((HALF_ROUNDS - 1))); do
  for i in "${!TARGETS[@]}"; do
    t=${TARGETS[$(( (i + r) % ${#TARGETS[@]} ))]}
    for try in $(seq "$HALF_TRIES"); do
      run_wrk "$t" plain half "$half_secs" "$PACED_CONNS" "${DELAY[$t]}"
      ((try < HALF_TRIES && LAST_STEAL_PCT > MAX_STEAL * 100)) || break
      log "$t: CPU steal $((LAST_STEAL_PCT / 100)).$(printf '%02d' $((LAST_STEAL_PCT % 100)))% during a half-load round; running it again"
      "$PY" "$here/report.py" relabel "$RES" half_stolen
    done
  done
done

W_PEAK_KB=$(proc_field "$W_PID" VmHWM)
N_RSS_KB=0
for p in $(nginx_pids); do N_RSS_KB=$((N_RSS_KB + $(proc_field "$p" VmRSS))); done
log "warden VmHWM ${W_PEAK_KB} kB; nginx RSS (master + workers) ${N_RSS_KB} kB"
grep -i -E 'error|crit|alert|emerg' "$DIR/nginx/error.log" >&2 || true
[[ -s $DIR/warden.log ]] && { log "warden log (warn and above):"; tail -20 "$DIR/warden.log" >&2; }
[[ -s $DIR/relay.log ]] && { log "relay log:"; tail -20 "$DIR/relay.log" >&2; }

# ---------------------------------------------------------------------------------------------------
"$PY" "$here/report.py" meta "$DIR/meta.json" \
  date="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
  command="bash bench/run.sh $*" \
  env="$(env | grep -E '^BENCH_(DURATION|ROUNDS|WARMUP|CONNS|PACED_CONNS|LAYOUT|WORKERS|AUDIT|RESULTS|KEEP|NICE|RT|CONTROLS|CTL_ROUNDS|CTL_RATE_ROUNDS|CTL_PAIR_ROUNDS|LIMIT_BENCH|REDIS|HALF_TRIES|HALF_ROUNDS|MAX_STEAL|WARDEN_EXTRA)=' | sort | tr '\n' ' ' | sed 's/ $//')" \
  git="$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$here/.." diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')" \
  build="$BUILD_DESC" cpu_clock="$CPU_CLOCK" \
  nproc="$(nproc)" \
  cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
  kernel="$(uname -r)" \
  layout="$layout_desc" \
  workers="$WORKERS" sim_workers="$SIM_WORKERS" wrk_threads="$WRK_THREADS" \
  conns="$CONNS" paced_conns="$PACED_CONNS" duration_s="$DURATION" rounds="$ROUNDS" warmup_s="$WARMUP" \
  audit="$AUDIT" body_bytes="$BODY_BYTES" sse_events="$SSE_EVENTS" \
  background_busy_pct="$BG_BUSY" loadavg="$(cut -d' ' -f1-3 /proc/loadavg)" \
  half_target_rps="$HALF" max_steal_pct="$MAX_STEAL" half_tries="$HALF_TRIES" half_rounds="$HALF_ROUNDS" \
  warden_idle_rss_kb="$W_IDLE_KB" warden_peak_rss_kb="$W_PEAK_KB" nginx_rss_kb="$N_RSS_KB" \
  nginx_version="$("$NGINX" -v 2>&1 | sed 's/.*: //')" \
  wrk_version="$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')" \
  "${CTL_META[@]+"${CTL_META[@]}"}"
"$PY" "$here/report.py" report "$DIR/meta.json" "$RES" "$RESULTS"
log "done in ${SECONDS}s"

#!/usr/bin/env bash
# Throughput with local rate limits on vs off when the proxy is the bottleneck (issue 6: <= 3% loss):
#
#   bash bench/limits_quota.sh [path/to/warden]      (prints a markdown section on stdout, logs on stderr)
#
# Why a script of its own: on a 2-CPU machine the load generator and the simulator fill one CPU and
# the proxy the other, so "saturation" is set by whichever side runs out first, and the limits' six
# x-ratelimit-* headers cost the load generator too (it parses them). bench/run.sh's saturation rows
# therefore come out NOISY. Here each proxy runs in a CPU cgroup of its own with the same quota
# (LQ_QUOTA percent of one CPU, default 35), both on CPU 1; wrk (one per proxy) and `warden sim` get
# CPU 0, which then has headroom. Each proxy's throughput is its quota over its CPU per request, so
# the ratio of two proxies' requests in the same seconds is the throughput loss of a CPU-bound proxy.
#
# Targets (three `warden serve`, 1 worker each, auth none, audit off, the same upstream):
#   base    no rate limits
#   limits  rate_limits.backend local, per_ip rpm/tpm far above the load (every request is admitted,
#           reserved and reconciled, and answered with the six x-ratelimit-* headers)
#   aa      the same configuration as base: the A/A control (the method's noise)
# Each round runs two pairs, one after the other, LQ_SECS s each: (base, limits), then (base, aa). The
# two proxies of a pair take the same wrk load at the same time (bench/chat.lua, the ~1 KB body of
# bench/body.py, 32 connections each). The cgroup each proxy sits in and the order the two wrk start
# swap every round, so neither side keeps a slot. Any non-2xx answer fails the run.
#
# Verdict: the median loss of the (base, limits) pairs against 3%; NOISY when the A/A median is itself
# beyond 1% either way. The section goes to stdout and is appended to BENCH_RESULTS (default
# bench/RESULTS.md; "-" for none). Needs root and a cgroup CPU controller (v2 cpu.max or v1 cpu.cfs_quota_us);
# without one it says so and exits 0. Knobs: LQ_ROUNDS (default 10), LQ_SECS (default 6), LQ_QUOTA.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WARDEN=$(realpath "${1:-$here/../build/warden}")
ROUNDS=${LQ_ROUNDS:-10}
SECS=${LQ_SECS:-6}
QUOTA=${LQ_QUOTA:-35}
RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}
PY=/usr/bin/python3
log() { printf '[limits_quota %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "limits_quota: $*" >&2; exit 1; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $SECS =~ ^[1-9][0-9]*$ && $QUOTA =~ ^[1-9][0-9]?$ ]] ||
  die "LQ_ROUNDS and LQ_SECS must be positive integers, LQ_QUOTA a percentage (1-99)"
[[ -x $WARDEN ]] || die "$WARDEN: not an executable (build first: make)"
command -v wrk >/dev/null || die "wrk is not installed (scripts/install-deps.sh)"
(($(nproc) >= 2)) || die "needs 2 CPUs (proxies on CPU 1, load on CPU 0)"

# --- cgroups: one per slot, each limited to QUOTA% of one CPU ----------------------------------------
CG_ROOT="" CG_V=0
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  CG_ROOT=/sys/fs/cgroup CG_V=2
elif [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
  CG_ROOT=/sys/fs/cgroup/cpu CG_V=1
fi
if [[ -z $CG_ROOT || ! -w $CG_ROOT ]]; then
  echo "limits_quota: skipped: no writable cgroup CPU controller (needs root and cgroup v2 cpu or v1 cpu)" >&2
  exit 0
fi
DIR=$(mktemp -d /tmp/warden-lq.XXXXXX)
SLOTS=("$CG_ROOT/warden-lq-$$-a" "$CG_ROOT/warden-lq-$$-b")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in "${SLOTS[@]}"; do if [[ -d $p ]]; then rmdir "$p" 2>/dev/null || true; fi; done
  rm -rf "$DIR"
}
trap cleanup EXIT
if ((CG_V == 2)); then
  grep -qw cpu "$CG_ROOT/cgroup.subtree_control" || echo +cpu >"$CG_ROOT/cgroup.subtree_control"
fi
for s in "${SLOTS[@]}"; do
  mkdir "$s"
  if ((CG_V == 2)); then echo "$((QUOTA * 1000)) 100000" >"$s/cpu.max"
  else echo 100000 >"$s/cpu.cfs_period_us"; echo $((QUOTA * 1000)) >"$s/cpu.cfs_quota_us"; fi
done
# put_in SLOT PID: every thread of PID into the slot's cgroup
put_in() {
  local t
  if ((CG_V == 2)); then echo "$2" >"$1/cgroup.procs"
  else for t in /proc/"$2"/task/*; do echo "${t##*/}" >"$1/tasks"; done; fi
}

# --- processes ---------------------------------------------------------------------------------------
# shellcheck source=bench/common.sh
. "$here/common.sh"
"$PY" "$here/body.py" "$DIR/body.json" "$DIR/body_stream.json"
export WARDEN_LQ_UPSTREAM_KEY=sk-bench
SIM_PORT=$(free_port)
taskset -c 0 "$WARDEN" sim --listen "127.0.0.1:$SIM_PORT" >"$DIR/sim.log" 2>&1 &
SIM_PID=$!; PIDS+=("$SIM_PID")
wait_port "$SIM_PORT" "$SIM_PID" sim
declare -A PORT=() PID=()
start() { # NAME EXTRA-YAML
  PORT[$1]=$(free_port)
  cat >"$DIR/$1.yaml" <<EOF
listen: 127.0.0.1:${PORT[$1]}
workers: 1
log_level: warn
auth: { mode: none }
upstreams:
  - { name: sim, url: http://127.0.0.1:$SIM_PORT/v1, api_key_env: WARDEN_LQ_UPSTREAM_KEY, max_idle: 64 }
models:
  - { name: gpt-4o-mini, upstream: sim, upstream_model: sim-small }
$2
EOF
  "$WARDEN" config check "$DIR/$1.yaml" >"$DIR/$1-check.log" 2>&1 || die "$1: $(cat "$DIR/$1-check.log")"
  taskset -c 1 "$WARDEN" serve -c "$DIR/$1.yaml" >"$DIR/$1.log" 2>&1 &
  PID[$1]=$!; PIDS+=("$!")
  wait_port "${PORT[$1]}" "${PID[$1]}" "$1"
}
start base ""
start limits "rate_limits: { backend: local, per_ip: { rpm: 100000000, tpm: 2000000000 } }"
start aa ""
url() { echo "http://127.0.0.1:${PORT[$1]}/v1/chat/completions"; }
# the limits are on where they should be, and only there
for t in base limits aa; do
  n=$(curl -sS -m 5 -D - -o /dev/null -H 'content-type: application/json' --data-binary @"$DIR/body.json" "$(url "$t")" |
      grep -ci '^x-ratelimit-' || true)
  want=0; [[ $t == limits ]] && want=6
  ((n == want)) || die "$t answered with $n x-ratelimit-* headers, expected $want"
done

# wrk_bg TARGET SECS: wrk on CPU 0 against the target, in the background, output in DIR/wrk-TARGET.txt
wrk_bg() {
  taskset -c 0 wrk -t1 -c32 -d"$2s" -s "$here/chat.lua" "$(url "$1")" -- body="$DIR/body.json" stream=0 \
    >"$DIR/wrk-$1.txt" 2>&1 &
}
# pair A B SECS ROUND: both wrk at once, A's proxy in slot r%2, B's in the other; prints "reqsA reqsB"
pair() {
  local a=$1 b=$2 secs=$3 round=$4 wa wb
  put_in "${SLOTS[$((round % 2))]}" "${PID[$a]}"
  put_in "${SLOTS[$(((round + 1) % 2))]}" "${PID[$b]}"
  local first=$a second=$b
  ((round % 2)) && { first=$b; second=$a; }
  wrk_bg "$first" "$secs"; wa=$!
  wrk_bg "$second" "$secs"; wb=$!
  wait "$wa" "$wb" || die "wrk failed: $(cat "$DIR/wrk-$first.txt" "$DIR/wrk-$second.txt")"
  local t
  for t in "$a" "$b"; do
    ! grep -q 'Non-2xx' "$DIR/wrk-$t.txt" || die "$t answered non-2xx: $(grep 'Non-2xx' "$DIR/wrk-$t.txt")"
  done
  echo "$(awk '/requests in/ { print $1 }' "$DIR/wrk-$a.txt") $(awk '/requests in/ { print $1 }' "$DIR/wrk-$b.txt")"
}

log "warming up (2 s per pair)"
pair base limits 2 0 >/dev/null
pair base aa 2 1 >/dev/null
LOSS=() AA=() ROWS=()
for ((r = 0; r < ROUNDS; r++)); do
  read -r b1 l < <(pair base limits "$SECS" "$r")
  read -r b2 a < <(pair base aa "$SECS" "$r")
  loss=$(awk -v b="$b1" -v l="$l" 'BEGIN { printf "%.2f", (b - l) / b * 100 }')
  aa=$(awk -v b="$b2" -v a="$a" 'BEGIN { printf "%.2f", (b - a) / b * 100 }')
  LOSS+=("$loss"); AA+=("$aa")
  ROWS+=("| $((r + 1)) | $b1 | $l | $loss% | $b2 | $a | $aa% |")
  log "round $((r + 1)): limits loss $loss% (base $b1, limits $l); A/A $aa% (base $b2, aa $a)"
done
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }
ml=$(med "${LOSS[@]}"); ma=$(med "${AA[@]}")
verdict=$(awk -v l="$ml" -v a="$ma" 'BEGIN { if (a > 1 || a < -1) print "NOISY"; else if (l <= 3) print "PASS"; else print "FAIL" }')

section=$(cat <<EOF
## Local limits: throughput of a CPU-bound proxy, on vs off, $(date -u '+%Y-%m-%d %H:%M UTC')

Command: \`bash bench/limits_quota.sh $WARDEN\` (LQ_ROUNDS=$ROUNDS, LQ_SECS=$SECS, LQ_QUOTA=$QUOTA; source $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)).
Each proxy (1 worker) in a CPU cgroup (v$CG_V) of its own limited to $QUOTA% of one CPU, both on CPU 1; wrk
(1 thread, 32 connections per proxy) and \`warden sim\` on CPU 0. Per round, two pairs of $SECS s: base
beside limits, then base beside an A/A copy of base; the cgroups and the wrk start order swap every
round. Limits: \`rate_limits: { backend: local, per_ip: { rpm: 100000000, tpm: 2000000000 } }\`
(every request admitted and reconciled, six x-ratelimit-* headers on every answer; checked before the
run). Loss = (base - other) / base, in requests served in the same seconds.

| round | base | limits | loss | base | A/A | A/A difference |
|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")

| measure | result | target |
|---|---|---|
| **local limits: throughput loss, CPU-bound proxy** (median of $ROUNDS pairs; mean $(mean "${LOSS[@]}")%) | **$ml%** | <= 3%, $verdict |
| A/A: the same configuration twice (median; mean $(mean "${AA[@]}")%) | $ma% | within +-1% |
EOF
)
printf '%s\n' "$section"
if [[ $RESULTS != - ]]; then printf '\n%s\n' "$section" >>"$RESULTS"; log "appended to $RESULTS"; fi

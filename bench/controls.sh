# shellcheck shell=bash disable=SC2154,SC2034,SC2317 # sourced by run.sh: its variables, arrays and hooks
# Sourced by bench/run.sh after the saturation runs (not a standalone script: it uses run.sh's
# variables and functions). Measures what identity and rate limiting cost per request, in the same run
# and under the same load as the main comparison:
#
#   warden_base   auth.mode none, no rate limits: the main comparison's configuration, started here
#                 with the variants (the baseline)
#   warden_auth   auth.mode required, one role (the benchmark model, chat only), requests carry an
#                 API key: the authenticate stage (key lookup) and the authorize stage (RBAC) run
#   warden_limit  auth.mode none, rate_limits.backend local with per_ip rpm/tpm far above the offered
#                 load: every request is admitted (reserved, then reconciled), none refused
#   warden_redis  the same limits with rate_limits.backend redis:// (a private redis-server on a free
#                 loopback port, fail: closed so that an unreachable Redis fails the run)
#   warden        the main comparison's instance (same configuration as warden_base, older): an A/A
#                 control, whose difference from the baseline is the method's noise in this run
#
# All four get the same non-streamed wrk load in three phases, in interleaved rounds (the starting target
# rotates each round, so none always follows the same neighbour):
#   - saturation (CTL_ROUNDS rounds, 64 connections): throughput against the baseline;
#   - fixed rate (CTL_RATE_ROUNDS rounds of 3 s, BENCH_PACED_CONNS paced connections at half of the
#     baseline's slowest saturation round, the pacing calibrated on the baseline and then the same for
#     every variant): CPU per request. CPU per request depends on the load (an event loop that wakes
#     for several requests at once spends less per request), and the saturation throughput of this
#     layout is set by the load generator's CPU and by whatever else runs on the machine, so the
#     variants are compared at the same request rate. Each round is paired: a variant's added CPU is
#     computed against the baseline's run in the same round;
#   - side by side (CTL_PAIR_ROUNDS rounds of 3 s): the baseline and one variant (auth, local limits,
#     A/A) at the same time, half of the paced connections each; CPU per request compared within each
#     pair. These pairs decide the added-CPU targets (see run_pair below).
# Any non-2xx answer (a 401, 403, 429 or 503) fails the run, so "nothing refused" is checked.
# Redis decisions per second come from warden's /metrics (warden_redis_requests_total, admin
# listener) over the measured runs; Redis's own CPU and script count are recorded too. redis-server
# is pinned with wrk and the simulator (it stands for a separate machine; the proxy's CPU stays the
# proxy's), so on 2 CPUs it takes CPU from the load generator: the Redis throughput is a lower bound.
# Last, limit_bench measures the local limiter alone (decisions per CPU second) and auth_bench the
# key check and RBAC decision alone (CPU time per request).

CTL_TARGETS=(warden_base warden_auth warden_limit warden_redis warden)
((REDIS == 1)) || CTL_TARGETS=(warden_base warden_auth warden_limit warden)
ctl_secs=$(( (DURATION + CTL_ROUNDS - 1) / CTL_ROUNDS ))
((ctl_secs >= 2)) || ctl_secs=2   # shorter runs are dominated by the ramp-up of 64 connections
((ctl_secs <= 5)) || ctl_secs=5   # the time budget
rate_secs=3
LIMITS_IP="per_ip: { rpm: 100000000, tpm: 2000000000 }"   # the config maxima: nothing is refused

# write_ctl_config NAME PORT EXTRA-YAML: a configuration like the main one, on its own port.
write_ctl_config() {
  cat >"$DIR/$1.yaml" <<EOF
listen: 127.0.0.1:$2
workers: $WORKERS
log_level: warn
upstreams:
  - { name: sim, url: http://127.0.0.1:$SIM_PORT/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 64 }
models:
  - { name: gpt-4o-mini, upstream: sim, upstream_model: sim-small }
audit: { file: $audit_file }
$3
EOF
  "$WARDEN" config check "$DIR/$1.yaml" >"$DIR/$1-check.log" 2>&1 || die "$1: config check: $(cat "$DIR/$1-check.log")"
}

declare -A ADMIN_PORT=()
start_ctl() { # NAME PORT
  "${ON_PROXY[@]}" "$WARDEN" serve -c "$DIR/$1.yaml" >"$DIR/$1.log" 2>&1 &
  PROXY_PID[$1]=$!; PIDS+=("$!")
  wait_port "$2" "$!" "$1"
  URL[$1]="http://127.0.0.1:$2/v1/chat/completions"
}
metric() { # TARGET NAME: the value of an unlabelled sample from the target's /metrics
  curl -sS -m 5 "http://127.0.0.1:${ADMIN_PORT[$1]}/metrics" \
    | awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) exit 1 }'
}
# Admitted requests: the sum of warden_limit_decisions_total samples with outcome="allowed" (other
# labels, such as the scope kind, vary between versions; the controls configure one scope, per_ip, so
# each request counts once). Counters still at zero are not printed: no sample is 0.
admitted() { # TARGET
  curl -sS -m 5 "http://127.0.0.1:${ADMIN_PORT[$1]}/metrics" \
    | awk '$1 ~ /^warden_limit_decisions_total\{/ && $1 ~ /outcome="allowed"/ { n += $2 } END { printf "%.0f\n", n }'
}

# --- redis-server ------------------------------------------------------------------------------------
REDIS_PID=
if ((REDIS == 1)); then
  R_PORT=$(free_port)
  mkdir -p "$DIR/redis"
  "${ON_GEN[@]}" redis-server --bind 127.0.0.1 --port "$R_PORT" --protected-mode yes --save '' \
    --appendonly no --dir "$DIR/redis" --daemonize no --logfile "$DIR/redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_port "$R_PORT" "$REDIS_PID" redis
  redis_scripts() { # scripts Redis has run (EVALSHA, and EVAL after a script cache miss), from INFO
    redis-cli -p "$R_PORT" INFO commandstats \
      | awk -F'[:=,]' '$1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { n += $3 } END { printf "%.0f\n", n }'
  }
  command -v redis-cli >/dev/null || redis_scripts() { echo 0; }
fi

# --- the baseline and the three variants ------------------------------------------------------------
B_PORT=$(free_port)
write_ctl_config warden_base "$B_PORT" "auth: { mode: none }"
start_ctl warden_base "$B_PORT"

# API key + RBAC. The key is written to a file chat.lua reads, never onto a command line.
# (warden init creates the directory itself, mode 0700)
"$WARDEN" init --state-dir "$DIR/state" >"$DIR/init.log" 2>&1 || die "warden init: $(cat "$DIR/init.log")"
A_PORT=$(free_port)
write_ctl_config warden_auth "$A_PORT" "state_dir: $DIR/state
auth: { mode: required }
roles:
  bench: { models: [gpt-4o-mini], endpoints: [chat] }"
(umask 077; "$WARDEN" key create -c "$DIR/warden_auth.yaml" --name bench --role bench --quiet \
  >"$DIR/bench.key" 2>"$DIR/key.log") || die "warden key create: $(cat "$DIR/key.log")"
grep -q '^wdk_' "$DIR/bench.key" || die "warden key create printed no key"
(umask 077; printf 'Authorization: Bearer %s\n' "$(head -1 "$DIR/bench.key")" >"$DIR/bench.key.hdr")
WRK_EXTRA[warden_auth]="auth_file=$DIR/bench.key"
start_ctl warden_auth "$A_PORT"

L_PORT=$(free_port); ADMIN_PORT[warden_limit]=$(free_port)
write_ctl_config warden_limit "$L_PORT" "auth: { mode: none }
admin: { address: 127.0.0.1:${ADMIN_PORT[warden_limit]} }
rate_limits: { backend: local, $LIMITS_IP }"
start_ctl warden_limit "$L_PORT"

if ((REDIS == 1)); then
  RL_PORT=$(free_port); ADMIN_PORT[warden_redis]=$(free_port)
  write_ctl_config warden_redis "$RL_PORT" "auth: { mode: none }
admin: { address: 127.0.0.1:${ADMIN_PORT[warden_redis]} }
rate_limits: { backend: \"redis://127.0.0.1:$R_PORT\", fail: closed, redis_timeout_ms: 1000, $LIMITS_IP }"
  start_ctl warden_redis "$RL_PORT"
fi
sleep 0.2

# --- sanity: each variant does what it is meant to -----------------------------------------------------
ctl_check() { # TARGET EXPECTED-STATUS OUTFILE [curl args...]
  local t=$1 want=$2 out=$3 code
  shift 3
  code=$(curl -sS -m 5 -D "$out.headers" -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' \
         --data-binary @"$BODY_NS" "$@" "${URL[$t]}") || die "$t: request failed"
  [[ $code == "$want" ]] || die "$t: expected HTTP $want, got $code: $(head -c 300 "$out")"
}
ctl_check warden_base 200 "$DIR/check-base.json"
ctl_check warden_auth 401 "$DIR/check-auth-nokey.json"
ctl_check warden_auth 200 "$DIR/check-auth.json" -H "@$DIR/bench.key.hdr"
grep -q '"chat.completion"' "$DIR/check-auth.json" || die "warden_auth: unexpected answer"
for t in warden_limit warden_redis; do
  [[ -n ${PROXY_PID[$t]-} ]] || continue
  ctl_check "$t" 200 "$DIR/check-$t.json"
  grep -qi '^x-ratelimit-limit-requests: 100000000' "$DIR/check-$t.json.headers" \
    || die "$t: no x-ratelimit headers: the limit stage did not run"
  n=$(admitted "$t") || die "$t: cannot read its /metrics"
  ((n >= 1)) || die "$t: /metrics shows no admitted limit decision after the check request"
done
if ((REDIS == 1)); then
  n=$(metric warden_redis warden_redis_requests_total) || die "warden_redis: no warden_redis_requests_total in /metrics"
  ((n >= 1)) || die "warden_redis: the check request made no Redis decision"
fi
log "controls checked (auth: 401 without the key, 200 with it; limits: x-ratelimit headers$( ((REDIS == 1)) && echo ', Redis decisions in /metrics')); ${CTL_ROUNDS} rounds of ${ctl_secs}s per target: ${CTL_TARGETS[*]}"

# --- the runs --------------------------------------------------------------------------------------------
# Counters sampled around each measured run, recorded with it (extra_before/extra_after of run.sh).
extra_before() {
  X_LIMIT0=; X_REDIS0=; X_RCMD0=; X_RCPU0=
  case $1 in
    warden_limit | warden_redis)
      X_LIMIT0=$(admitted "$1") || die "$1: cannot read its /metrics" ;;
  esac
  if [[ $1 == warden_redis ]]; then
    X_REDIS0=$(metric "$1" warden_redis_requests_total) || die "$1: no warden_redis_requests_total in /metrics"
    X_RCMD0=$(redis_scripts); X_RCPU0=$(cpu_ns "$REDIS_PID")
  fi
}
extra_after() {
  local v
  case $1 in
    warden_limit | warden_redis)
      v=$(admitted "$1") || return 1
      echo "limit_ok=$((v - X_LIMIT0))" ;;
  esac
  if [[ $1 == warden_redis ]]; then
    v=$(metric "$1" warden_redis_requests_total) || return 1
    echo "redis_decisions=$((v - X_REDIS0)) redis_scripts=$(($(redis_scripts) - X_RCMD0))"
    echo "redis_cpu_s=$(ns_to_s $(($(cpu_ns "$REDIS_PID") - X_RCPU0)))"
  fi
}

for t in "${CTL_TARGETS[@]}"; do
  [[ $t != warden ]] || continue   # warm from the main runs
  log "$t: warm-up ${WARMUP}s"
  run_wrk "$t" plain warmup "$WARMUP" "$CONNS"
done
nt=${#CTL_TARGETS[@]}
for r in $(seq 0 $((CTL_ROUNDS - 1))); do
  for i in $(seq 0 $((nt - 1))); do
    run_wrk "${CTL_TARGETS[(r + i) % nt]}" plain ctl "$ctl_secs" "$CONNS"
  done
done

# Fixed rate: half of the baseline's slowest saturation round (so that every variant, Redis included,
# keeps up even if the machine gets busier), paced as in run.sh's half-load runs.
CTL_RATE=$("$PY" -c '
import json, sys
rps = [r["rps"] for r in map(json.loads, open(sys.argv[1])) if (r["target"], r["phase"]) == ("warden_base", "ctl")]
print(round(min(rps) / 2))' "$RES")
log "controls at a fixed rate: ~$CTL_RATE req/s (half of the baseline's slowest saturation round), $PACED_CONNS connections"
delay=$("$PY" -c "print(max(0.0, $PACED_CONNS / $CTL_RATE * 1000 - 0.15))")
for _ in 1 2; do
  run_wrk warden_base plain probe "$PROBE" "$PACED_CONNS" "$delay"
  rate=$(get warden_base plain probe rps)
  delay=$("$PY" -c "print('%.3f' % max(0.0, $delay + $PACED_CONNS * (1 / $CTL_RATE - 1 / $rate) * 1000))")
done
for r in $(seq 0 $((CTL_RATE_ROUNDS - 1))); do
  for i in $(seq 0 $((nt - 1))); do
    run_wrk "${CTL_TARGETS[(r + i) % nt]}" plain ctlrate "$rate_secs" "$PACED_CONNS" "$delay"
  done
done

# Side by side: the baseline and one variant at the same time, each with half of the paced connections
# (the same total rate), both proxies on the same CPU. Whatever changes the machine's speed during a
# round (other guests, clock, a neighbour's cache use) changes both alike, which consecutive runs cannot
# promise: there, rounds differed by up to ±5 µs/req for an effect of under 1 µs. The variant's added
# CPU is its CPU per request minus the baseline's in the same pair; the A/A pair (the main run's
# warden) measures what is left of the noise. The baseline's run is recorded as phase ctlpair:VARIANT.
# run_pair VARIANT SECONDS CONNS DELAY_MS
run_pair() {
  local v=$1 secs=$2 nconn=$3 delay=$4 t pid b0 v0 b1 v1 line
  ((SECONDS + secs <= BUDGET)) || die "time budget of ${BUDGET}s exceeded (at ${SECONDS}s); stopping"
  # shellcheck disable=SC2046 # one pid per word
  b0=$(cpu_ns $(proxy_pids "$BASE_T"))
  # shellcheck disable=SC2046
  v0=$(cpu_ns $(proxy_pids "$v"))
  WRK_PID=
  for t in "$BASE_T" "$v"; do
    start_wrk "$t" plain "$secs" "$nconn" "$delay" "$DIR/wrk-$t.out"
    WRK_PID+=" $WRK_STARTED"
  done
  for pid in $WRK_PID; do
    wait "$pid" || die "wrk failed in the pair with $v: $(cat "$DIR/wrk-$BASE_T.out" "$DIR/wrk-$v.out")"
  done
  WRK_PID=
  # shellcheck disable=SC2046
  b1=$(cpu_ns $(proxy_pids "$BASE_T"))
  # shellcheck disable=SC2046
  v1=$(cpu_ns $(proxy_pids "$v"))
  for t in "$BASE_T" "$v"; do
    line=$(grep '^BENCH ' "$DIR/wrk-$t.out" | sed 's/^BENCH //') || die "wrk printed no result for $t"
    if [[ $t == "$BASE_T" ]]; then
      "$PY" "$here/report.py" record "$RES" "$line" target="$t" mode=plain phase="ctlpair:$v" conns="$nconn" \
        delay_ms="$delay" proxy_cpu_s="$(ns_to_s $((b1 - b0)))"
    else
      "$PY" "$here/report.py" record "$RES" "$line" target="$t" mode=plain phase=ctlpair conns="$nconn" \
        delay_ms="$delay" proxy_cpu_s="$(ns_to_s $((v1 - v0)))"
    fi
  done
}
BASE_T=warden_base
PAIR_TARGETS=(warden_auth warden_limit warden)
pair_conns=$(( PACED_CONNS >= 2 ? PACED_CONNS / 2 : 1 ))
log "controls side by side with the baseline: ${CTL_PAIR_ROUNDS} rounds of ${rate_secs}s, $pair_conns connections each"
for r in $(seq 0 $((CTL_PAIR_ROUNDS - 1))); do
  for i in $(seq 0 $((${#PAIR_TARGETS[@]} - 1))); do
    run_pair "${PAIR_TARGETS[(r + i) % ${#PAIR_TARGETS[@]}]}" "$rate_secs" "$pair_conns" "$delay"
  done
done
extra_before() { :; }
extra_after() { :; }
if ((REDIS == 1)); then
  e=$(metric warden_redis warden_redis_errors_total); to=$(metric warden_redis warden_redis_timeouts_total)
  ((e == 0 && to == 0)) || log "warning: warden_redis counted $e Redis errors and $to timeouts"
  CTL_META+=(redis_version="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
             redis_errors="$e" redis_timeouts="$to")
fi
for t in warden_base warden_auth warden_limit warden_redis; do
  [[ -n ${PROXY_PID[$t]-} && -s $DIR/$t.log ]] || continue
  grep -v 'auth.mode is none' "$DIR/$t.log" | grep -q . || continue   # the expected warning only
  log "$t log (warn and above):"; tail -5 "$DIR/$t.log" >&2
done

# --- the local limiter alone --------------------------------------------------------------------------
# Not pinned (its two-thread figure needs two CPUs) and run while no load is running; its rates are per
# CPU second of the measuring thread, i.e. per core, whatever else the machine does.
log "limit_bench (local limiter decisions per CPU second)"
lb=$(nice -n "$NICE" "$LIMIT_BENCH" 0.5) || die "limit_bench failed: $lb"
log "auth_bench (API key check + RBAC decision, CPU time per request)"
ab=$(nice -n "$NICE" "$AUTH_BENCH" 0.5) || die "auth_bench failed: $ab"
CTL_META+=(controls=1 ctl_rounds="$CTL_ROUNDS" ctl_secs="$ctl_secs" ctl_limits="$LIMITS_IP"
           ctl_rate="$CTL_RATE" ctl_rate_rounds="$CTL_RATE_ROUNDS" ctl_rate_secs="$rate_secs"
           ctl_pair_rounds="$CTL_PAIR_ROUNDS" ctl_pair_conns="$pair_conns"
           limit_bench="$(tr '\n' ';' <<<"$lb")" auth_bench="$(tr '\n' ';' <<<"$ab")")

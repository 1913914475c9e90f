#!/usr/bin/env bash
# Streamed-output filter benchmark: the second part of `make bench-guard` (bench/run_guard.sh runs it
# after guard_bench). It measures what the guard's output filter costs on streamed answers, through
# the gateway, with filtering on and off in the same run:
#
#   bash bench/stream_guard.sh [path/to/warden]      (prints a markdown table on stdout, logs on stderr)
#
# What it starts (every process is stopped on exit, also on failure or Ctrl-C):
#   - `warden sim` "fast": every streamed answer is the same clean English reply (no rule fires on it)
#     repeated to SG_EVENTS content events, unpaced (the proxy's cost, not the model's pace, is
#     measured); "leak": answers a text with an AWS access key id (the sanity check that the filter
#     runs); "paced": the fast sim's answer (SG_EVENTS content events) paced at SG_PACED_TPS events
#     per second; "long": the clean reply repeated to SG_LONG_EVENTS events (more text than the
#     hold-back) at SG_LONG_TPS events per second (the hold-back lag below).
#   - two `warden serve`, identical except for the guard: "off" has no guard section; "on" has
#     `guard: { rules_dir: SG_RULES, default_profile: bench }` and a profile whose output section
#     blocks every content category (self_harm, violence, sexual_minors, hate, weapons, malware) and
#     redacts secrets, pii, financial and phi, with on_error closed, and no input section (only the
#     output filter is measured). Both: auth mode none, 1 worker each on the proxy CPU (the pinned
#     layout of bench/run.sh: on 2 CPUs the proxies get CPU 1, wrk, the simulators and the client
#     CPU 0), audit off.
#
# Checks before measuring (any failure stops the run): both answer the streamed request with 200 and
# a stream that ends in [DONE], with the same number of events and the same text; "on" sends an
# x-warden-guard header naming the profile and "off" none; through "on" the leak model's key is
# redacted (never whole in the stream) while "off" passes it.
#
# Measurements (on and off interleaved in every phase, the starting target alternating by round, so
# drift in the machine's background load hits both alike):
#   1. saturation: SG_ROUNDS rounds of SG_SECS s of wrk (bench/chat.lua, the ~1 KB request of
#      bench/body.py with "stream": true) over SG_CONNS connections: requests/s, SSE events/s, and
#      the ratio on/off.
#   2. fixed rate: SG_RATE_ROUNDS rounds of SG_RATE_SECS s, SG_PACED_CONNS paced connections at half
#      of the slowest saturation round of either target (pacing as in bench/chat.lua, calibrated on
#      "on" and then the same for both): the proxy's CPU per request from the scheduler's run time
#      (/proc/PID/task/*/schedstat, all threads), paired per round. Added CPU per SSE event =
#      (CPU per request on - off) / events per request (every `data:` event of the answer, [DONE]
#      included). CPU per request depends on the load (an event loop that wakes for several requests
#      at once spends less per request), hence one fixed rate for both.
#   3. unloaded latency (a /usr/bin/python3 client on the load generator's CPU, no other load, one
#      request at a time, on and off alternating, SG_TTFB_N requests each, a new connection per
#      request, timed from just before the request is written, connecting excluded): time to first
#      byte of the response (p50, p90), time to the first content event, time to the last byte.
#   4. hold-back: the same client, SG_PACED_N requests each through on and off (alternating) to the
#      paced simulators, records the arrival time of every content event relative to the request.
#      "paced" (an ordinary answer at a model's pace): time to first byte and to the first content
#      event, on and off (medians). "long": the lag of content event k is its arrival through "on"
#      minus through "off" (medians over the requests); reported is the median lag over the second
#      half of the events (the steady state, in ms and in events and bytes of text). This is what a
#      user sees of the filter's hold-back (events leave only once every byte they carry is before
#      the scanner's safe offset, which trails the text by up to the rule set's hold-back,
#      wd_guard_db_holdback()), and what CPU time does not show.
#
# Knobs (environment): SG_EVENTS (200), SG_CONNS (64), SG_ROUNDS (3), SG_SECS (4), SG_WARMUP (2),
# SG_PACED_CONNS (16), SG_RATE_ROUNDS (3), SG_RATE_SECS (3), SG_TTFB_N (200), SG_PACED_TPS (200),
# SG_LONG_EVENTS (3000), SG_LONG_TPS (3000), SG_PACED_N (3), SG_RULES (the "on" gateway's rules
# directory, default <repo>/rules; run_guard.sh passes its GUARD_BENCH_RULES), SG_NICE (niceness of every process started; default -10 as
# root, else 0), SG_KEEP (1: keep the temp dir with logs). About 75 s with the defaults; a run that
# would pass SG_BUDGET (120) s stops with an error.
# shellcheck disable=SC2154 # SIM_PORT_<name> and SIM_PID_<name> are set by start_sim (printf -v)
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
WARDEN=${1:-$root/build/warden}
PY=/usr/bin/python3

EVENTS=${SG_EVENTS:-200}
CONNS=${SG_CONNS:-64}
ROUNDS=${SG_ROUNDS:-3}
SECS=${SG_SECS:-4}
WARMUP=${SG_WARMUP:-2}
PACED_CONNS=${SG_PACED_CONNS:-16}
RATE_ROUNDS=${SG_RATE_ROUNDS:-3}
RATE_SECS=${SG_RATE_SECS:-3}
TTFB_N=${SG_TTFB_N:-200}
PACED_TPS=${SG_PACED_TPS:-200}
LONG_EVENTS=${SG_LONG_EVENTS:-3000}
LONG_TPS=${SG_LONG_TPS:-3000}
PACED_N=${SG_PACED_N:-3}
NICE=${SG_NICE:-$( [[ $(id -u) == 0 ]] && echo -10 || echo 0)}
KEEP=${SG_KEEP:-0}
BUDGET=${SG_BUDGET:-120}
RULES_DIR=${SG_RULES:-$root/rules}
PROBE=2   # seconds of each pacing calibration probe
REPLY="The capital of France is Paris. It is known for the Eiffel Tower and the Louvre."
LEAK_REPLY="Here is the key you asked for: AKIA2E3MGHIJKLMNOP7Q and nothing else."
LEAK_KEY=AKIA2E3MGHIJKLMNOP7Q

die() { echo "stream_guard: $*" >&2; exit 1; }
log() { printf '[stream_guard %3ds] %s\n' "$SECONDS" "$*" >&2; }

for arg in "$EVENTS" "$CONNS" "$ROUNDS" "$SECS" "$WARMUP" "$PACED_CONNS" "$RATE_ROUNDS" "$RATE_SECS" \
           "$TTFB_N" "$PACED_TPS" "$LONG_EVENTS" "$LONG_TPS" "$PACED_N" "$BUDGET"; do
  [[ $arg =~ ^[1-9][0-9]*$ ]] || die "counts and durations must be positive integers, got '$arg'"
done
[[ $NICE =~ ^-?[0-9]+$ ]] || die "SG_NICE must be an integer, got '$NICE'"
[[ -x $WARDEN ]] || die "warden binary '$WARDEN' not found or not executable (build it: ninja -C build)"
WARDEN=$(cd "$(dirname "$WARDEN")" && pwd)/$(basename "$WARDEN")
for tool in wrk taskset curl; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (bash scripts/install-deps.sh installs it)"
done
[[ -x $PY ]] || die "$PY is required"
[[ -d $RULES_DIR ]] || die "no rules directory at $RULES_DIR"
RULES_DIR=$(cd "$RULES_DIR" && pwd)   # the config is in a temp dir: rules_dir must be absolute
SECONDS=0

# --- CPU layout: as bench/run.sh's "pinned" (the proxy under test alone on half of the CPUs) --------
join() { local IFS=,; echo "$*"; }
mapfile -t cpus < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done)
ncpu=${#cpus[@]}
if ((ncpu >= 2)); then
  nproxy=$((ncpu / 2))
  PROXY_CPUS=$(join "${cpus[@]:ncpu-nproxy}"); GEN_CPUS=$(join "${cpus[@]:0:ncpu-nproxy}")
  WORKERS=$nproxy
  SIM_WORKERS=$(( (ncpu - nproxy + 1) / 2 )); WRK_THREADS=$SIM_WORKERS
  LAYOUT="pinned: each warden ($WORKERS worker(s)) on CPU $PROXY_CPUS; wrk ($WRK_THREADS thread(s)), the simulators ($SIM_WORKERS worker(s)) and the latency client on CPU $GEN_CPUS"
else
  PROXY_CPUS=${cpus[0]}; GEN_CPUS=${cpus[0]}; WORKERS=1; SIM_WORKERS=1; WRK_THREADS=1
  LAYOUT="shared: everything on CPU ${cpus[0]} (1 CPU)"
fi
((NICE == 0)) || LAYOUT+="; every process at nice $NICE"
ON_PROXY=(nice -n "$NICE" taskset -c "$PROXY_CPUS")
ON_GEN=(nice -n "$NICE" taskset -c "$GEN_CPUS")

# --- processes: recorded by pid, stopped on exit ------------------------------------------------------
DIR=$(mktemp -d /tmp/warden-stream-guard.XXXXXX)
PIDS=()
WRK_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -z $WRK_PID ]] || kill -TERM "$WRK_PID" 2>/dev/null || true
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((rc != 0)) || [[ $KEEP == 1 ]]; then echo "stream_guard: logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=bench/common.sh
. "$here/common.sh"
# CPU time of a process, all threads, in ns: the scheduler's run time (clock ticks are too coarse for
# the few µs per request compared here); utime+stime where the kernel has no schedstat.
if [[ -r /proc/self/schedstat ]]; then
  CPU_CLOCK="scheduler run time (/proc/PID/task/*/schedstat)"
  cpu_ns() { awk '{ s += $1 } END { printf "%.0f\n", s }' /proc/"$1"/task/*/schedstat; }
else
  CPU_CLOCK="utime+stime (/proc/PID/stat, clock ticks: coarse)"
  cpu_ns() { awk -v tck="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / tck }' "/proc/$1/stat"; }
fi

start_sim() { # NAME ARGS...: starts a simulator on a free port; sets SIM_PORT_<NAME>
  local name=$1 port pid
  shift
  "${ON_GEN[@]}" "$WARDEN" sim --listen 127.0.0.1:0 --workers "$SIM_WORKERS" "$@" >"$DIR/sim_$name.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DIR/sim_$name.log" | head -1)
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || die "warden sim ($name) exited: $(tail -3 "$DIR/sim_$name.log")"
    sleep 0.05
  done
  [[ -n $port ]] || die "warden sim ($name) did not report its port"
  wait_port "$port" "$pid" "sim_$name"
  printf -v "SIM_PORT_$name" '%s' "$port"
  printf -v "SIM_PID_$name" '%s' "$pid"
}
start_sim fast --reply "$REPLY" --stream-chunks "$EVENTS"
start_sim leak --reply "$LEAK_REPLY"
start_sim paced --reply "$REPLY" --stream-chunks "$EVENTS" --tokens-per-sec "$PACED_TPS"
start_sim long --reply "$REPLY" --stream-chunks "$LONG_EVENTS" --tokens-per-sec "$LONG_TPS"

export WARDEN_BENCH_UPSTREAM_KEY=bench-upstream-key
declare -A PORT=() PID=() URL=()
write_config() { # NAME PORT EXTRA-YAML
  cat >"$DIR/$1.yaml" <<EOF
listen: 127.0.0.1:$2
workers: $WORKERS
log_level: warn
auth: { mode: none }
upstreams:
  - { name: fast, url: http://127.0.0.1:$SIM_PORT_fast/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 64 }
  - { name: leak, url: http://127.0.0.1:$SIM_PORT_leak/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 4 }
  - { name: paced, url: http://127.0.0.1:$SIM_PORT_paced/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 4 }
  - { name: long, url: http://127.0.0.1:$SIM_PORT_long/v1, api_key_env: WARDEN_BENCH_UPSTREAM_KEY, max_idle: 4 }
models:
  - { name: gpt-4o-mini, upstream: fast, upstream_model: sim-small }
  - { name: leak, upstream: leak, upstream_model: sim-small }
  - { name: paced, upstream: paced, upstream_model: sim-small }
  - { name: long, upstream: long, upstream_model: sim-small }
audit: { file: null }
$3
EOF
  "$WARDEN" config check "$DIR/$1.yaml" >"$DIR/$1-check.log" 2>&1 || die "$1: config check: $(cat "$DIR/$1-check.log")"
}
GUARD_YAML="guard: { rules_dir: \"$RULES_DIR\", default_profile: bench }
guard_profiles:
  bench:
    output: { self_harm: block, violence: block, sexual_minors: block, hate: block, weapons: block,
              malware: block, secrets: redact, pii: redact, financial: redact, phi: redact }
    on_error: closed"
for t in off on; do
  PORT[$t]=$(free_port)
  if [[ $t == on ]]; then write_config "$t" "${PORT[$t]}" "$GUARD_YAML"; else write_config "$t" "${PORT[$t]}" ""; fi
  "${ON_PROXY[@]}" "$WARDEN" serve -c "$DIR/$t.yaml" >"$DIR/$t.log" 2>&1 &
  PID[$t]=$!; PIDS+=("$!")
  wait_port "${PORT[$t]}" "${PID[$t]}" "$t"
  URL[$t]="http://127.0.0.1:${PORT[$t]}/v1/chat/completions"
done
sleep 0.2
log "layout: $LAYOUT"
log "warden off pid ${PID[off]} :${PORT[off]}, on pid ${PID[on]} :${PORT[on]}; sims fast :$SIM_PORT_fast leak :$SIM_PORT_leak paced :$SIM_PORT_paced long :$SIM_PORT_long"

# --- checks -----------------------------------------------------------------------------------------------
BODY_NS=$DIR/body.json; BODY_S=$DIR/body-stream.json
"$PY" "$here/body.py" "$BODY_NS" "$BODY_S"
"$PY" -c 'import json,sys; b=json.load(open(sys.argv[1])); b["model"]="leak"; open(sys.argv[2],"w").write(json.dumps(b))' \
  "$BODY_S" "$DIR/body-leak.json"
sse_text() { # FILE: the concatenated delta content of an SSE answer
  "$PY" -c '
import json, sys
out = []
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("data: {"):
        for c in json.loads(line[6:]).get("choices", []):
            out.append((c.get("delta") or {}).get("content") or "")
print("".join(out))' "$1"
}
for t in off on; do
  code=$(curl -sS -m 10 -N -D "$DIR/check-$t.hdr" -o "$DIR/check-$t.sse" -w '%{http_code}' \
         -H 'Content-Type: application/json' --data-binary @"$BODY_S" "${URL[$t]}") || die "$t: streamed request failed"
  [[ $code == 200 ]] || die "$t: streamed check answered HTTP $code: $(head -c 300 "$DIR/check-$t.sse")"
  tail -c 100 "$DIR/check-$t.sse" | grep -q 'data: \[DONE\]' || die "$t: the stream did not end with [DONE]"
  code=$(curl -sS -m 10 -N -o "$DIR/leak-$t.sse" -w '%{http_code}' \
         -H 'Content-Type: application/json' --data-binary @"$DIR/body-leak.json" "${URL[$t]}") || die "$t: leak request failed"
  [[ $code == 200 ]] || die "$t: leak check answered HTTP $code: $(head -c 300 "$DIR/leak-$t.sse")"
done
N_EVENTS=$(grep -c '^data: ' "$DIR/check-off.sse")
N_CONTENT=$(grep -c '"delta":{"content":' "$DIR/check-off.sse" || true)
[[ $(grep -c '^data: ' "$DIR/check-on.sse") == "$N_EVENTS" ]] || die "on and off answer different numbers of events"
[[ "$(sse_text "$DIR/check-on.sse")" == "$(sse_text "$DIR/check-off.sse")" ]] || die "on and off answer different text"
((N_CONTENT >= EVENTS)) || die "the simulator sent $N_CONTENT content events, fewer than SG_EVENTS=$EVENTS"
grep -qi '^x-warden-guard: profile=bench' "$DIR/check-on.hdr" || die "on: no x-warden-guard header naming the profile"
! grep -qi '^x-warden-guard' "$DIR/check-off.hdr" || die "off: sends x-warden-guard although it has no guard"
[[ "$(sse_text "$DIR/leak-off.sse")" == *"$LEAK_KEY"* ]] || die "off: the leak model's key did not pass unfiltered"
! grep -q "$LEAK_KEY" "$DIR/leak-on.sse" || die "on: the key reached the client whole: the output filter did not run"
[[ "$(sse_text "$DIR/leak-on.sse")" != *"$LEAK_KEY"* ]] || die "on: the key reached the client across events"
SSE_BYTES=$(wc -c <"$DIR/check-off.sse")
log "checked: $N_EVENTS events ($N_CONTENT content), $SSE_BYTES bytes per answer, same text on and off; on redacts the leak model's key, off passes it"

# --- wrk runs ----------------------------------------------------------------------------------------------
RES=$DIR/runs.jsonl
: >"$RES"
run_wrk() { # TARGET PHASE SECONDS CONNS [DELAY_MS]
  local t=$1 phase=$2 secs=$3 conns=$4 delay=${5:-} args=(body="$BODY_S" stream=1) env=() p0 p1 s0 s1 line
  if [[ -n $delay ]]; then args+=(delay_ms="$delay"); env=(BENCH_PACED=1); fi
  local threads=$WRK_THREADS
  ((threads <= conns)) || threads=$conns
  ((SECONDS + secs <= BUDGET)) || die "time budget of ${BUDGET}s exceeded (at ${SECONDS}s); stopping"
  p0=$(cpu_ns "${PID[$t]}"); s0=$(cpu_ns "$SIM_PID_fast")
  env "${env[@]+"${env[@]}"}" timeout $((secs + 10)) "${ON_GEN[@]}" \
    wrk -t "$threads" -c "$conns" -d "${secs}s" --timeout 5s -s "$here/chat.lua" "${URL[$t]}" \
    -- "${args[@]}" >"$DIR/wrk.out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || die "wrk failed against $t: $(cat "$DIR/wrk.out")"
  WRK_PID=
  p1=$(cpu_ns "${PID[$t]}"); s1=$(cpu_ns "$SIM_PID_fast")
  line=$(grep '^BENCH ' "$DIR/wrk.out" | sed 's/^BENCH //') || die "wrk printed no result for $t: $(cat "$DIR/wrk.out")"
  [[ $phase == warmup ]] && return 0
  "$PY" - "$RES" "$line" "$t" "$phase" "$conns" "${delay:-0}" $((p1 - p0)) $((s1 - s0)) <<'PYEOF'
import json, sys
path, line, t, phase, conns, delay, pcpu, scpu = sys.argv[1:]
r = json.loads(line)
e = r["errors"]
if r["requests"] == 0 or any(e.values()):
    sys.exit("stream_guard: %s %s: %d requests, errors %s" % (t, phase, r["requests"], e))
r.update(target=t, phase=phase, conns=int(conns), delay_ms=float(delay), proxy_cpu_ns=int(pcpu), sim_cpu_ns=int(scpu))
with open(path, "a") as f:
    f.write(json.dumps(r) + "\n")
PYEOF
}
rps_of() { "$PY" -c 'import json,sys; print([r for r in map(json.loads, open(sys.argv[1])) if r["target"]==sys.argv[2] and r["phase"]==sys.argv[3]][-1]["rps"])' "$RES" "$1" "$2"; }

for t in off on; do log "$t: warm-up ${WARMUP}s"; run_wrk "$t" warmup "$WARMUP" "$CONNS"; done
log "saturation: $ROUNDS rounds of ${SECS}s per target, $CONNS connections"
for r in $(seq 0 $((ROUNDS - 1))); do
  if ((r % 2 == 0)); then order=(off on); else order=(on off); fi
  for t in "${order[@]}"; do run_wrk "$t" sat "$SECS" "$CONNS"; done
done

RATE=$("$PY" -c '
import json, sys
print(round(min(r["rps"] for r in map(json.loads, open(sys.argv[1])) if r["phase"] == "sat") / 2))' "$RES")
log "fixed rate: ~$RATE req/s (half of the slowest saturation round), $PACED_CONNS paced connections, $RATE_ROUNDS rounds of ${RATE_SECS}s"
# delay per connection so that conns / (latency + delay) = RATE, corrected by two probes on "on".
delay=$("$PY" -c "print('%.3f' % max(0.0, $PACED_CONNS / $RATE * 1000 - 1))")
for _ in 1 2; do
  run_wrk on probe "$PROBE" "$PACED_CONNS" "$delay"
  got=$(rps_of on probe)
  delay=$("$PY" -c "print('%.3f' % max(0.0, $delay + $PACED_CONNS * (1 / $RATE - 1 / $got) * 1000))")
done
for r in $(seq 0 $((RATE_ROUNDS - 1))); do
  if ((r % 2 == 0)); then order=(off on); else order=(on off); fi
  for t in "${order[@]}"; do run_wrk "$t" rate "$RATE_SECS" "$PACED_CONNS" "$delay"; done
done

# --- unloaded latency and hold-back lag: one request at a time -------------------------------------------
log "latency client: $TTFB_N requests per target (fast sim), then $PACED_N per target to the paced sims"
LAT=$DIR/latency.json
"${ON_GEN[@]}" "$PY" - "$BODY_S" "${PORT[off]}" "${PORT[on]}" "$TTFB_N" "$PACED_N" "$LAT" <<'PYEOF' \
  || die "the latency client failed"
import json, socket, sys, time

body_path, port_off, port_on, n, n_paced, out = sys.argv[1:]
body = json.load(open(body_path))
ports = {"off": int(port_off), "on": int(port_on)}
MARK = b'"delta":{"content":'


def request(target, model):
    """One streamed request on a new connection; times in ns from just before the request is written:
    first byte, and the arrival (end of the read that completed it) of each content event."""
    b = dict(body, model=model)
    payload = json.dumps(b, separators=(",", ":")).encode()
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Accept: text/event-stream\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(payload)).encode()
    s = socket.create_connection(("127.0.0.1", ports[target]), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    events = []          # arrival time of each content event, in order
    t0 = time.perf_counter_ns()
    s.sendall(head + payload)
    first = None
    while True:
        chunk = s.recv(65536)
        now = time.perf_counter_ns()
        if not chunk:
            break
        if first is None:
            first = now - t0
        start = max(0, len(buf) - len(MARK) + 1)   # a marker split across reads is counted once whole
        buf += chunk
        c = buf.count(MARK, start)
        events.extend([now - t0] * c)
    end = time.perf_counter_ns() - t0
    s.close()
    if not buf.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in buf:
        sys.exit("latency client: %s/%s: bad answer: %r" % (target, model, bytes(buf[:200])))
    return first, events, end


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


res = {}
fast = {t: {"ttfb": [], "first_event": [], "last": [], "n_events": 0} for t in ports}
for i in range(2):                      # warm the connections to the simulator
    for t in ports:
        request(t, "gpt-4o-mini")
for i in range(int(n)):
    for t in (("off", "on") if i % 2 == 0 else ("on", "off")):
        first, ev, end = request(t, "gpt-4o-mini")
        f = fast[t]
        f["ttfb"].append(first); f["first_event"].append(ev[0]); f["last"].append(end); f["n_events"] = len(ev)
for t, f in fast.items():
    res[t] = {k + "_p%d" % p: pct(f[k], p) / 1e3 for k in ("ttfb", "first_event", "last") for p in (50, 90)}
    res[t]["content_events"] = f["n_events"]

med = lambda xs: pct(xs, 50)
for model in ("paced", "long"):
    ev, first, last = {t: [] for t in ports}, {t: [] for t in ports}, {t: [] for t in ports}
    for i in range(int(n_paced)):
        for t in (("off", "on") if i % 2 == 0 else ("on", "off")):
            f, e, end = request(t, model)
            ev[t].append(e); first[t].append(f); last[t].append(end)
    counts = {len(e) for t in ports for e in ev[t]}
    if len(counts) != 1:
        sys.exit("latency client: %s: content event counts differ between answers: %s" % (model, counts))
    k_n = counts.pop()
    lag = [med([e[k] for e in ev["on"]]) - med([e[k] for e in ev["off"]]) for k in range(k_n)]
    r = res[model] = {"events": k_n, "lag_steady_us": med(lag[k_n // 2:]) / 1e3, "lag_max_us": max(lag) / 1e3,
                      "lag_us": [round(x / 1e3) for x in lag]}
    for t in ports:
        r[t] = {"ttfb_us": med(first[t]) / 1e3, "first_event_us": med([e[0] for e in ev[t]]) / 1e3,
                "last_event_us": med([e[-1] for e in ev[t]]) / 1e3, "last_us": med(last[t]) / 1e3}
json.dump(res, open(out, "w"))
PYEOF

# --- report ------------------------------------------------------------------------------------------------
log "done in ${SECONDS}s"
TEXT_BYTES=$(sse_text "$DIR/check-off.sse" | wc -c)   # + the newline print() adds: 1 byte in ~1 KB
TABLE=$("$PY" - "$RES" "$LAT" "$N_EVENTS" "$N_CONTENT" "$SSE_BYTES" "$PACED_TPS" "$LONG_TPS" "$TEXT_BYTES" <<'PYEOF'
import json, statistics, sys

res_path, lat_path, n_events, n_content, sse_bytes, tps, long_tps, text_bytes = sys.argv[1:]
n_events, n_content, sse_bytes, tps, long_tps = int(n_events), int(n_content), int(sse_bytes), int(tps), int(long_tps)
text_per_event = (int(text_bytes) - 1) / n_content
runs = [json.loads(l) for l in open(res_path)]
lat = json.load(open(lat_path))
med = statistics.median


def sel(t, ph):
    return [r for r in runs if r["target"] == t and r["phase"] == ph]


sat = {t: [r["rps"] for r in sel(t, "sat")] for t in ("off", "on")}
rps = {t: med(v) for t, v in sat.items()}
ratio = [on / off for off, on in zip(sat["off"], sat["on"])]   # paired by round
cpu = {t: [r["proxy_cpu_ns"] / r["requests"] for r in sel(t, "rate")] for t in ("off", "on")}
added = [on - off for off, on in zip(cpu["off"], cpu["on"])]     # paired by round
rate = {t: med([r["rps"] for r in sel(t, "rate")]) for t in ("off", "on")}
satcpu = {t: med([r["proxy_cpu_ns"] / r["requests"] for r in sel(t, "sat")]) for t in ("off", "on")}
p, lg = lat["paced"], lat["long"]
for t in ("off", "on"):
    if lat[t]["content_events"] != n_content:
        sys.exit("stream_guard: the latency client counted %d content events through %s, curl %d"
                 % (lat[t]["content_events"], t, n_content))


def rng(xs, f="%.0f"):
    return (f + " … " + f) % (min(xs), max(xs))


rows = [
    ("throughput, requests/s (median of %d rounds)" % len(ratio), "%.0f" % rps["off"], "%.0f" % rps["on"],
     "%.3f (rounds %s)" % (med(ratio), rng(ratio, "%.3f"))),
    ("throughput, SSE events/s", "%.0f" % (rps["off"] * n_events), "%.0f" % (rps["on"] * n_events),
     "%.3f" % (rps["on"] / rps["off"])),
    ("throughput, MB/s of SSE answer", "%.1f" % (rps["off"] * sse_bytes / 1e6), "%.1f" % (rps["on"] * sse_bytes / 1e6), ""),
    ("proxy CPU per request at saturation, µs", "%.1f" % (satcpu["off"] / 1e3), "%.1f" % (satcpu["on"] / 1e3),
     "+%.1f µs" % ((satcpu["on"] - satcpu["off"]) / 1e3)),
    ("proxy CPU per request at a fixed ~%.0f req/s, µs (median of %d paired rounds)" % (rate["off"], len(added)),
     "%.1f" % (med(cpu["off"]) / 1e3), "%.1f" % (med(cpu["on"]) / 1e3),
     "+%.1f µs (rounds %s)" % (med(added) / 1e3, rng([a / 1e3 for a in added], "%.1f"))),
    ("**added CPU per SSE event** (fixed rate; ÷ %d events)" % n_events, "", "",
     "**%.3f µs** (rounds %s)" % (med(added) / n_events / 1e3, rng([a / n_events / 1e3 for a in added], "%.3f"))),
    ("time to first byte, unloaded, p50 / p90, µs", "%.0f / %.0f" % (lat["off"]["ttfb_p50"], lat["off"]["ttfb_p90"]),
     "%.0f / %.0f" % (lat["on"]["ttfb_p50"], lat["on"]["ttfb_p90"]), "%+.0f µs (p50)" % (lat["on"]["ttfb_p50"] - lat["off"]["ttfb_p50"])),
    ("time to first content event, unloaded, p50, µs", "%.0f" % lat["off"]["first_event_p50"], "%.0f" % lat["on"]["first_event_p50"],
     "%+.0f µs" % (lat["on"]["first_event_p50"] - lat["off"]["first_event_p50"])),
    ("time to last byte (%d events), unloaded, p50, µs" % n_events, "%.0f" % lat["off"]["last_p50"], "%.0f" % lat["on"]["last_p50"],
     "%+.0f µs = %.2f µs per event" % (lat["on"]["last_p50"] - lat["off"]["last_p50"],
                                      (lat["on"]["last_p50"] - lat["off"]["last_p50"]) / n_events)),
    ("paced at %d events/s (%d content events, %.0f bytes of text): time to first byte, ms" % (tps, p["events"], p["events"] * text_per_event),
     "%.1f" % (p["off"]["ttfb_us"] / 1e3), "%.1f" % (p["on"]["ttfb_us"] / 1e3), "%+.1f ms" % ((p["on"]["ttfb_us"] - p["off"]["ttfb_us"]) / 1e3)),
    ("paced at %d events/s: time to first content event, ms" % tps,
     "%.1f" % (p["off"]["first_event_us"] / 1e3), "%.1f" % (p["on"]["first_event_us"] / 1e3),
     "%+.1f ms" % ((p["on"]["first_event_us"] - p["off"]["first_event_us"]) / 1e3)),
    ("paced at %d events/s: time to last content event, ms" % tps,
     "%.1f" % (p["off"]["last_event_us"] / 1e3), "%.1f" % (p["on"]["last_event_us"] / 1e3),
     "%+.1f ms" % ((p["on"]["last_event_us"] - p["off"]["last_event_us"]) / 1e3)),
    ("long answer paced at %d events/s (%d content events, %.0f bytes of text): time to first content event, ms"
     % (long_tps, lg["events"], lg["events"] * text_per_event),
     "%.1f" % (lg["off"]["first_event_us"] / 1e3), "%.1f" % (lg["on"]["first_event_us"] / 1e3),
     "%+.1f ms" % ((lg["on"]["first_event_us"] - lg["off"]["first_event_us"]) / 1e3)),
    ("long answer: **hold-back lag per content event**, steady state (median over the second half)", "", "",
     "**%.0f ms ≈ %.0f events ≈ %.0f bytes of text** (max %.0f ms)"
     % (lg["lag_steady_us"] / 1e3, lg["lag_steady_us"] / 1e6 * long_tps,
        lg["lag_steady_us"] / 1e6 * long_tps * text_per_event, lg["lag_max_us"] / 1e3)),
]
print("| streamed answers, %d events (%d content), %d bytes | filter off | filter on | on vs off |" % (n_events, n_content, sse_bytes))
print("|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s |" % r)
PYEOF
) || die "the report failed"
cat <<EOF

Streamed-output figures: \`bash bench/stream_guard.sh\` (run by \`make bench-guard\` after guard_bench).
Layout: $LAYOUT. CPU clock: $CPU_CLOCK. wrk: $WRK_THREADS thread(s), $CONNS connections at
saturation ($ROUNDS interleaved rounds of ${SECS} s per target), $PACED_CONNS paced connections at the
fixed rate ($RATE_ROUNDS interleaved rounds of ${RATE_SECS} s, paired per round). Both gateways have the
same config (auth none, audit off); "on" adds the guard (rules: \`${RULES_DIR#"$root"/}\`) with an
output-only profile: every content category block, secrets/pii/financial/phi redact, on_error closed
(checked: the key of a leaking answer is redacted through "on" and passes through "off"; the clean
answer's text is identical). The simulator's answer is clean (no rule fires), so "on" measures
scanning and hold-back, not rewriting. Latency rows: a /usr/bin/python3 socket client, one request at
a time on a new connection, $TTFB_N requests per target alternating, times from just before the
request is written (connect excluded); first byte = the status line. The unloaded rows use an
unpaced simulator: its whole answer reaches warden at once, so "on" sends its first byte only after
filtering all of it. The paced rows are what a client of a real model sees: $PACED_N requests per
target to simulators pacing the events (an ordinary answer at $PACED_TPS events/s; a long one,
$LONG_EVENTS events at $LONG_TPS events/s: the lag of content event k is its arrival through "on" minus
through "off", medians over requests; events and bytes of text are converted at the answer's mean of
$(printf '%.2f' "$("$PY" -c "print(($TEXT_BYTES - 1) / $N_CONTENT)")") bytes of text per content event).

$TABLE
EOF

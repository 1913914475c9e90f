# shellcheck shell=bash disable=SC2154 # sourced: the caller defines PY, DIR (logs: DIR/NAME.log) and die
# Helpers shared by the benchmark scripts (bench/run.sh, bench/stream_guard.sh, bench/limits_quota.sh).

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT PID NAME: waits until something accepts on the port (no request is sent); dies if the
# process exits first or nothing listens within 5 s.
wait_port() {
  local _
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "$3 exited during start-up: $(tail -3 "$DIR/$3.log" 2>/dev/null)"
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "$3 did not start listening on 127.0.0.1:$1 within 5 s"
}

#!/usr/bin/env bash
# Runs every suite against each build directory given, then prints one summary line
# "N passed, N failed" (the last line of the output), exiting non-zero if anything failed.
#   unit:        cmocka tests through meson test
#   integration: pytest with Debian's /usr/bin/python3, starting real warden/sim processes
#   compat:      the official `openai` npm SDK against the gateway (release build only)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
passed=0 failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

count() { # file regex -> first number captured, or 0
  local n
  n=$(grep -oE "$2" "$1" | tail -1 | grep -oE '[0-9]+' | head -1)
  echo "${n:-0}"
}

run_unit() {
  local b=$1 out=$log/unit-$(basename "$1")
  echo "== unit tests ($b)"
  meson test -C "$b" --print-errorlogs --num-processes 2 >"$out" 2>&1
  local rc=$?
  grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Timeout):' "$out" | tail -60
  local ok fail to
  ok=$(count "$out" '^Ok: +[0-9]+'); fail=$(count "$out" '^Fail: +[0-9]+'); to=$(count "$out" '^Timeout: +[0-9]+')
  if [[ $rc -ne 0 && $((fail + to)) -eq 0 ]]; then fail=1; tail -30 "$out"; fi
  [[ $((fail + to)) -gt 0 ]] && grep -B2 -A40 -E 'FAIL|TIMEOUT' "$out" | head -150
  passed=$((passed + ok)); failed=$((failed + fail + to))
}

run_pytest() {
  local b=$1 out=$log/pytest-$(basename "$1")
  echo "== integration tests ($b)"
  # undefined behaviour in any warden process the tests start (CLI runs too) aborts it and fails the test
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  WARDEN_BIN="$root/$b/warden" /usr/bin/python3 -m pytest -p no:cacheprovider -q -rfE tests/integration \
    >"$out" 2>&1
  local rc=$?
  tail -25 "$out"
  local ok fail err
  ok=$(count "$out" '[0-9]+ passed'); fail=$(count "$out" '[0-9]+ failed'); err=$(count "$out" '[0-9]+ errors?')
  if [[ $rc -ne 0 && $rc -ne 5 && $((fail + err)) -eq 0 ]]; then fail=1; fi
  passed=$((passed + ok)); failed=$((failed + fail + err))
}

run_compat() {
  local b=$1 out=$log/compat
  [[ -f tests/compat/package.json ]] || return 0
  echo "== openai SDK compatibility ($b)"
  if ! (cd tests/compat && npm ci --no-audit --no-fund --loglevel=error) >"$out" 2>&1; then
    cat "$out"; failed=$((failed + 1)); return
  fi
  WARDEN_BIN="$root/$b/warden" node --test tests/compat/ >"$out" 2>&1
  local rc=$?
  grep -E '^# (pass|fail)|^not ok' "$out"
  local ok fail
  ok=$(count "$out" '^# pass [0-9]+'); fail=$(count "$out" '^# fail [0-9]+')
  [[ $rc -ne 0 && $fail -eq 0 ]] && { fail=1; tail -40 "$out"; }
  [[ $fail -gt 0 ]] && tail -60 "$out"
  passed=$((passed + ok)); failed=$((failed + fail))
}

first=1
for b in "$@"; do
  run_unit "$b"
  run_pytest "$b"
  if [[ $first -eq 1 ]]; then run_compat "$b"; first=0; fi
done
echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]

#!/usr/bin/env bash
# Runs every libFuzzer driver for a bounded time on its committed corpus (copied to a scratch dir so
# new inputs do not dirty the tree), from that scratch dir. Usage: scripts/fuzz.sh BUILD_DIR SECONDS
set -euo pipefail
build=$(cd "$1" && pwd) secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$root/tests/fuzz/artifacts"
status=0
for drv in "$build"/tests/fuzz/fuzz_*; do
  [[ -f $drv && -x $drv ]] || continue
  name=$(basename "$drv"); corpus=${name#fuzz_}
  mkdir -p "$work/$corpus"
  cp -r "$root/tests/fuzz/corpus/$corpus/." "$work/$corpus/" 2>/dev/null || true
  echo "== $name for ${secs}s"
  # From the scratch dir: a fuzzed configuration's relative paths (rules_dir defaults to "rules")
  # must not reach the repository's files (the real rule set would compile on every such input).
  if ! (cd "$work" && "$drv" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$root/tests/fuzz/artifacts/$name-" \
       "$work/$corpus" 2>"$work/$name.log"); then
    tail -40 "$work/$name.log"; status=1
  else
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work/$name.log" | sed 's/^/   /'
  fi
done
exit $status

#!/usr/bin/env bash
# The test suite on a busy machine: README's test command (scripts/test.sh)
# run N times in a row (default 5) while one busy loop per CPU core keeps
# every core loaded, as CI machines often are. A test that passes only on
# an idle machine fails here. Stops at the first failing run; the load ends
# with the script (and is bounded to 3 hours in any case).
#
# Usage: scripts/test-under-load.sh [RUNS] [-- extra nextest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

runs="${1:-5}"
shift $(( $# > 0 ? 1 : 0 ))
[[ "${1:-}" == "--" ]] && shift

loaders=()
stop_load() { kill "${loaders[@]}" 2>/dev/null || true; }
trap stop_load EXIT
for _ in $(seq "$(nproc)"); do
  timeout 10800 bash -c 'while :; do :; done' &
  loaders+=("$!")
done
echo "test-under-load: ${#loaders[@]} busy loops started, $runs runs"

for n in $(seq "$runs"); do
  start=$(date +%s)
  scripts/test.sh "$@"
  echo "test-under-load: run $n of $runs passed in $(( $(date +%s) - start )) s"
done
echo "test-under-load: all $runs runs passed"

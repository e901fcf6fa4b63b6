#!/usr/bin/env bash
# Recommend capacity with 1, 2 and 3 ranker processes on this machine, side
# by side in one run: a split deployment (topic, co-watch and context
# generators in one process each, a recommender balancing over the
# rankers listed in endpoints.ranker), the same data folder and model,
# `watchnext loadtest` at each rate; the p99 of each (rankers, rate) pair.
#
#   benches/scripts/ranker_replicas.sh [RATES] [SECONDS]
#   defaults: "100 200 300 400"  10
#
# Every process shares this machine's CPUs, so extra rankers add CPU only
# where the machine has idle cores; the figures show what spreading costs
# and gains here, not a cluster's scaling.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/target/release/watchnext"
rates="${1:-100 200 300 400}"
seconds="${2:-10}"
cd "$root"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p watchnext-server" >&2; exit 1; }
work="$(mktemp -d)"
# Servers started inside $(...) are not jobs of this shell: stop them by their folder.
trap 'pkill -f -- "--data-dir $work/" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
data="$work/data"
"$bin" --data-dir "$data" --log-level warn world generate --preset toy --events 200000 | tail -1
"$bin" --data-dir "$data" --log-level warn train --quiet --epochs 1 | tail -1

start() { # role [extra env...] -> prints the gRPC address
  local role="$1"; shift
  local out="$work/$role-$RANDOM"
  env "$@" "$bin" --data-dir "$data" --log-level warn serve --role "$role" --listen 127.0.0.1:0 \
    --metrics-listen "" >"$out" 2>/dev/null &
  for _ in $(seq 200); do grep -q "grpc=" "$out" 2>/dev/null && break; sleep 0.1; done
  grep -o "grpc=[^ ]*" "$out" | cut -d= -f2
}

topic="$(start topic)"; cowatch="$(start cowatch)"; context="$(start context)"
rankers=()
for _ in 1 2 3; do rankers+=("$(start ranker)"); done
echo "machine: $(nproc) CPUs"
for n in 1 2 3; do
  list="$(printf 'http://%s,' "${rankers[@]:0:$n}")"; list="${list%,}"
  rec="$(start recommender WATCHNEXT__ENDPOINTS__RANKER="$list" WATCHNEXT__ENDPOINTS__TOPIC="http://$topic" \
    WATCHNEXT__ENDPOINTS__COWATCH="http://$cowatch" WATCHNEXT__ENDPOINTS__CONTEXT="http://$context")"
  sleep 2
  for rate in $rates; do
    echo "== $n ranker process(es), $rate Recommend/s, ${seconds} s"
    "$bin" --data-dir "$data" --log-level warn loadtest --addr "http://$rec" --rate "$rate" \
      --duration "$seconds" --warmup 2 --num-results 20 --metrics none \
      | grep -E "open loop|percentiles|statuses"
  done
  pkill -f -- "--data-dir $data --log-level warn serve --role recommender" || true
  sleep 1
done

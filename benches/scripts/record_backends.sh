#!/usr/bin/env bash
# Feedback.Record into the embedded log against NATS JetStream, side by
# side in one run: a feedback-role server per backend (same binary, same
# data folder's catalogue), `watchnext loadtest --call record` at each rate,
# alternating backends per rate. Prints each report; BENCHMARKS.md quotes them.
#
#   benches/scripts/record_backends.sh [NATS_URL] [RATES] [BATCH] [SECONDS]
#   defaults: nats://127.0.0.1:4222  "50 200 800"  100  10
#
# Needs target/release/watchnext (cargo build --release -p watchnext-server)
# and a NATS server with JetStream at NATS_URL; each run uses its own stream
# (BENCH_<time>), deleted by nothing: remove it with `nats stream rm` if the
# server is kept.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/target/release/watchnext"
nats_url="${1:-nats://127.0.0.1:4222}"
rates="${2:-50 200 800}"
batch="${3:-100}"
seconds="${4:-10}"
cd "$root"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p watchnext-server" >&2; exit 1; }

work="$(mktemp -d)"
# Servers started inside $(...) are not jobs of this shell: stop them by their folder.
trap 'pkill -f -- "--data-dir $work/" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" --data-dir "$work/catalog" --log-level warn world generate --preset toy --events 1000 >/dev/null
stamp="$(date +%s)"

serve() { # backend folder -> prints the gRPC address
  local backend="$1" dir="$2"
  mkdir -p "$dir"
  cp "$work/catalog/catalog.jsonl" "$dir/"
  WATCHNEXT__EVENT_LOG__BACKEND="$backend" \
  WATCHNEXT__EVENT_LOG__NATS__URL="$nats_url" \
  WATCHNEXT__EVENT_LOG__NATS__STREAM="BENCH_$stamp" \
  WATCHNEXT__EVENT_LOG__NATS__SUBJECT="bench.$stamp" \
    "$bin" --data-dir "$dir" --log-level warn serve --role feedback --listen 127.0.0.1:0 --metrics-listen "" \
    >"$dir/announce" 2>"$dir/stderr" &
  for _ in $(seq 100); do
    grep -q "grpc=" "$dir/announce" 2>/dev/null && break
    sleep 0.1
  done
  grep -o "grpc=[^ ]*" "$dir/announce" | cut -d= -f2
}

embedded="$(serve embedded "$work/embedded")"
nats="$(serve nats "$work/nats")"
sleep 2 # the NATS role creates its stream
# A co-watch replica following the NATS stream: its lag is sampled during each NATS run.
mkdir -p "$work/cowatch" && cp "$work/catalog/catalog.jsonl" "$work/cowatch/"
WATCHNEXT__EVENT_LOG__BACKEND=nats WATCHNEXT__EVENT_LOG__NATS__URL="$nats_url" \
WATCHNEXT__EVENT_LOG__NATS__STREAM="BENCH_$stamp" WATCHNEXT__EVENT_LOG__NATS__SUBJECT="bench.$stamp" \
  "$bin" --data-dir "$work/cowatch" --log-level warn serve --role cowatch --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 >"$work/cowatch/announce" 2>/dev/null &
sleep 1
cowatch_metrics="$(grep -o "metrics=[^ ]*" "$work/cowatch/announce" | cut -d= -f2)"
lag() { curl -s "http://$cowatch_metrics/metrics" | awk '/^watchnext_consumer_lag_events\{consumer="cowatch"\}/ {print $2}'; }
echo "machine: $(nproc) CPUs; embedded log on $(df -P "$work" | awk 'NR==2 {print $1}'); NATS at $nats_url"
for rate in $rates; do
  for backend in embedded nats; do
    addr="$embedded"; [ "$backend" = nats ] && addr="$nats"
    echo "== $backend: $rate batches/s x $batch events, ${seconds} s"
    if [ "$backend" = nats ]; then
      ( max=0; n=0; for _ in $(seq $((seconds * 4 + 8))); do
          l="$(lag)"; l="${l%.*}"
          if [ -n "$l" ]; then n=$((n + 1)); [ "$l" -gt "$max" ] && max="$l"; fi
          sleep 0.25
        done; echo "co-watch consumer lag: max $max events over $n samples (every 0.25 s)" ) &
      sampler=$!
    fi
    "$bin" --data-dir "$work/catalog" --log-level warn loadtest --call record --batch "$batch" \
      --addr "http://$addr" --rate "$rate" --duration "$seconds" --warmup 2 --metrics none \
      | grep -E "open loop|Record batches|percentiles|statuses"
    if [ "$backend" = nats ]; then wait "$sampler"; fi
  done
done

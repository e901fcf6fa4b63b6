#!/usr/bin/env bash
# How long a new co-watch replica takes to catch up on a stream of N events
# (default 1,000,000 from the synthetic world): through NATS JetStream (a
# co-watch-only process following the stream) and, side by side, through the
# embedded log (the all-in-one process on the same events; its co-watch
# consumer reports its own catch-up). Also times `watchnext stream push`
# (publishing N events into JetStream, acknowledged).
#
#   benches/scripts/cowatch_catch_up.sh [NATS_URL] [EVENTS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/target/release/watchnext"
nats_url="${1:-nats://127.0.0.1:4222}"
events="${2:-1000000}"
cd "$root"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p watchnext-server" >&2; exit 1; }
work="$(mktemp -d)"
# Servers started inside $(...) are not jobs of this shell: stop them by their folder.
trap 'pkill -f -- "--data-dir $work/" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
stamp="$(date +%s)"
export WATCHNEXT__EVENT_LOG__NATS__URL="$nats_url" WATCHNEXT__EVENT_LOG__NATS__STREAM="CATCHUP_$stamp" \
  WATCHNEXT__EVENT_LOG__NATS__SUBJECT="catchup.$stamp"

"$bin" --data-dir "$work/world" --log-level warn world generate --preset default --events "$events" | tail -1
echo "stream push (publish, every event acknowledged by JetStream):"
WATCHNEXT__EVENT_LOG__BACKEND=nats "$bin" --data-dir "$work/world" --log-level warn stream push

catch_up() { # name dir role backend
  local name="$1" dir="$2" role="$3" backend="$4"
  WATCHNEXT__EVENT_LOG__BACKEND="$backend" "$bin" --data-dir "$dir" --log-level info --log-format text \
    serve --role "$role" --listen 127.0.0.1:0 --metrics-listen "" >/dev/null 2>"$dir.log" &
  local pid=$!
  for _ in $(seq 1200); do
    if sed 's/\x1b\[[0-9;]*m//g' "$dir.log" 2>/dev/null | grep -q 'caught up with the event stream.*consumer=cowatch'; then break; fi
    sleep 0.5
  done
  echo "$name: $(sed 's/\x1b\[[0-9;]*m//g' "$dir.log" | grep 'caught up with the event stream.*consumer=cowatch' | sed 's/.*caught up/caught up/' | head -1)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
mkdir -p "$work/replica" && cp "$work/world/catalog.jsonl" "$work/replica/"
catch_up "co-watch replica on NATS" "$work/replica" cowatch nats
catch_up "co-watch in the all-in-one process, embedded log" "$work/world" all embedded

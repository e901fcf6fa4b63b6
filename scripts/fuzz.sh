#!/usr/bin/env bash
# Runs the cargo-fuzz targets of integration-tests/fuzz, each for SECONDS
# (default 30), one after the other; a crash stops the run and leaves its
# input under integration-tests/fuzz/artifacts/<target>/ (turn it into a
# regression test next to the code it broke).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
#
# Needs the nightly toolchain (cargo-fuzz builds with sanitizer flags);
# installs cargo-fuzz when it is missing. Corpora grow under
# integration-tests/fuzz/corpus/ (ignored by git), so later runs start from
# what earlier ones found.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${1:-30}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(log_segments requests features importers manifest)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "integration-tests/fuzz/corpus/$target"
  cargo +nightly fuzz run --fuzz-dir integration-tests/fuzz "$target" \
    "integration-tests/fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done

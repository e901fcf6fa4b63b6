#!/usr/bin/env bash
# Our trainer against PyTorch (CPU) in one run (issue 13, item 7): the
# trainer bench's reference MMoE, trained by watchnext_trainer (candle) and
# by PyTorch on exactly the same 4,096 rows (8 batches of 512), at 1 and 2
# threads, the two alternating round by round so that a busy moment hurts
# both; the medians of every epoch's examples/s, their ratio, and each as a
# share of this machine's fp32 peak measured in the same run.
#
#   benches/scripts/trainer_vs_pytorch.sh [ROUNDS] [EPOCHS]
#   defaults: 3 rounds of 5 epochs (after one warm-up epoch each)
#
# PyTorch comes from PyPI into this benchmark's own environment,
# target/bench-torch-venv (torch pinned below; the PyPI wheel is the CUDA
# build, ~5 GiB installed, which runs on the CPU here). Needs a quiet
# machine: see BENCHMARKS.md "Trainer throughput" on contention.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds="${1:-3}"
epochs="${2:-5}"
cd "$root"
venv="$root/target/bench-torch-venv"
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
  echo "trainer_vs_pytorch: installing PyTorch into $venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch==2.15.0 numpy==2.4.6
fi
cargo build --quiet --release -p watchnext-benches --example trainer_vs_pytorch
ours="$root/target/release/examples/trainer_vs_pytorch"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$ours" write "$work/rows"
"$ours" peak > "$work/peak.json"
for threads in 1 2; do
  for round in $(seq "$rounds"); do
    RAYON_NUM_THREADS="$threads" "$ours" train "$epochs" >> "$work/ours-$threads.jsonl"
    "$venv/bin/python" benches/python/trainer_pytorch.py "$work/rows" --epochs "$epochs" --threads "$threads" \
      >> "$work/torch-$threads.jsonl"
  done
done
python3 - "$work" <<'EOF'
import json, pathlib, statistics, sys
work = pathlib.Path(sys.argv[1])
peak = json.loads((work / "peak.json").read_text())
per_example = peak["training_multiply_adds_per_example"]
limit = peak["fp32_peak_multiply_adds_per_s"] / per_example
print(f"fp32 peak (one thread, {peak['isa']}): {peak['fp32_peak_multiply_adds_per_s'] / 1e9:.1f} G multiply-adds/s; "
      f"training {per_example:,} multiply-adds per example -> limit {limit / 1e3:.1f}k examples/s per thread")
print("| threads | watchnext (candle) | PyTorch | watchnext / PyTorch | share of one thread's peak (ours / PyTorch) |")
print("|---|---:|---:|---:|---|")
for threads in (1, 2):
    runs = {}
    for who in ("ours", "torch"):
        lines = [json.loads(l) for l in (work / f"{who}-{threads}.jsonl").read_text().splitlines() if l.strip()]
        runs[who] = (statistics.median(r for l in lines for r in l["examples_per_s"]), lines[0]["trainer"],
                     statistics.median(l["last_epoch_loss"] for l in lines))
    ours, torch = runs["ours"][0], runs["torch"][0]
    print(f"| {threads} | {ours / 1e3:.1f}k | {torch / 1e3:.1f}k | {ours / torch:.2f} | "
          f"{100 * ours / limit:.0f}% / {100 * torch / limit:.0f}% |")
print(f"({runs['torch'][1]}; last-epoch training loss, medians: watchnext {runs['ours'][2]:.3f}, "
      f"PyTorch {runs['torch'][2]:.3f})")
EOF

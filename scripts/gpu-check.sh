#!/usr/bin/env bash
# GPU readiness of this machine, in one script (issue 13, item 6): fetches
# the CUDA-enabled ONNX Runtime, builds watchnext with the `cuda` and
# `tensorrt` features, trains a small ranking model on a generated world (or
# uses DATA_DIR's newest), then `watchnext check-providers`: the same rows
# through the CPU, CUDA and TensorRT execution providers, the time per
# request at 100/500/1,000 candidates and the largest difference of any
# prediction from the CPU's. Exits non-zero when a provider is missing or
# disagrees. Never needed for the tests or CI; run it on a GPU node.
#
#   scripts/gpu-check.sh [DATA_DIR] [-- extra check-providers flags]
#   e.g. scripts/gpu-check.sh "" -- --providers cpu,cuda --tolerance 1e-4
#
# Needs an NVIDIA driver, CUDA 12 and cuDNN 9 libraries where ONNX Runtime
# can load them (and TensorRT 10 for the tensorrt provider). Afterwards
# .ort/ holds the GPU build of ONNX Runtime, which also runs on CPU; run
# scripts/setup.sh to go back to the CPU-only one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${1:-}"
shift || true
[[ "${1:-}" == "--" ]] && shift

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "gpu-check: nvidia-smi not found: no NVIDIA driver here (the GPU providers will be reported missing)" >&2
fi

scripts/setup.sh --gpu --ort-only
cargo build --release --locked -p watchnext-server --features cuda,tensorrt
bin="$root/target/release/watchnext"

if [[ -z "$data" ]]; then
  data="$(mktemp -d)"
  trap 'rm -rf "$data"' EXIT
  "$bin" --data-dir "$data" --log-level warn world generate --preset toy --events 100000 | tail -1
  "$bin" --data-dir "$data" --log-level warn train --quiet --epochs 1 | tail -1
fi
"$bin" --data-dir "$data" --log-level warn check-providers "$@"

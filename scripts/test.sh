#!/usr/bin/env bash
# The whole test suite, set-up included: the second of README's two commands.
#   1. scripts/setup.sh   ONNX Runtime from PyPI into .ort/, Python test
#                         packages into .venv/ (skipped when already there)
#   2. cargo nextest      every unit and integration test of the workspace
#   3. cargo check        the CUDA / TensorRT code paths, so they cannot rot
#                         on machines without a GPU
# Extra arguments go to nextest (e.g. a test name filter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "test: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --profile ci "$@"
cargo check --quiet -p watchnext-server --features cuda,tensorrt
echo "test: all passed"

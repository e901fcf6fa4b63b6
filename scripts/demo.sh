#!/usr/bin/env bash
# The main job on the embedded default: the first of README's two commands.
# Sets up ONNX Runtime (from PyPI), builds watchnext in release mode, and runs
# `watchnext demo`: the all-in-one server with the built-in synthetic world.
# Extra arguments go to `watchnext demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/setup.sh
cargo build --release --locked -p watchnext-server
exec target/release/watchnext demo "$@"

#!/usr/bin/env bash
# Installs the Python packages of the side-by-side ANN benchmark (hnswlib,
# numpy; pinned in requirements.txt beside this file) into the repository's
# .venv, which scripts/setup.sh creates. hnswlib is compiled from source here
# (a C++ compiler is needed, about a minute), with -march=native as its
# setup.py does by default, i.e. the way a user on this machine would get it.
#
# Usage: benches/python/setup.sh      then: cargo bench -p watchnext-benches --bench ann
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
if [[ ! -x .venv/bin/python ]]; then
  echo "benches/python/setup.sh: no .venv yet; run scripts/setup.sh first" >&2
  exit 1
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r benches/python/requirements.txt
.venv/bin/python -c 'import hnswlib, numpy; print("hnswlib", hnswlib.__version__ if hasattr(hnswlib, "__version__") else "0.8", "numpy", numpy.__version__)'

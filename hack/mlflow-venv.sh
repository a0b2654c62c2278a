#!/usr/bin/env bash
# A real MLflow tracking server for the tracking tests and bench/tracking.py: PyPI's `mlflow` in its own
# venv, because it pins pyarrow<26 and the data worker needs pyarrow>=26 (the trainer itself only needs
# the light `mlflow-skinny` client, in the `train` extra). Idempotent (stamp keyed on this script),
# flock-serialized. Prints the venv path; `$venv/bin/mlflow server ...` runs the server.
set -euo pipefail
venv=${MLFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/maestro/venv-mlflow}
want=$(sha256sum "$0" | cut -c1-16)
stamp="$venv/.maestro-stamp"
mkdir -p "$(dirname "$venv")"
exec 9>"${TMPDIR:-/tmp}/maestro-mlflow-venv.lock"; flock 9
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then echo "$venv"; exit 0; fi
log() { echo "[mlflow-venv] $*" >&2; }
export PIP_DISABLE_PIP_VERSION_CHECK=1
[[ -x "$venv/bin/python" ]] || python3.11 -m venv "$venv"
log "installing mlflow 3.17.2 into $venv (first time: a minute or two)"
"$venv/bin/pip" install -q mlflow==3.17.2 >&2
"$venv/bin/mlflow" --version >&2
echo "$want" > "$stamp"
echo "$venv"

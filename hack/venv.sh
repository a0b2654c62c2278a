#!/usr/bin/env bash
# Creates/updates the project venv (.venv) with every extra. Idempotent: skips pip when
# pyproject.toml has not changed since the last successful install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
py=${PYTHON:-python3.11}
stamp="$venv/.maestro-stamp"
# one pip at a time: parallel test runs and helpers share this venv
exec 9>"${TMPDIR:-/tmp}/maestro-venv.lock"; flock 9
want=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ -x "$venv/bin/python" ]] || { echo "[venv] creating $venv" >&2; "$py" -m venv "$venv"; }
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[venv] installing maestro with all extras (torch is large: the first install takes a few minutes)" >&2
"$venv/bin/pip" install -q --upgrade pip >&2
"$venv/bin/pip" install -q -e "$root[operator,data,train,wandb,guard,explain,monitor,console,dev]" >&2
echo "$want" > "$stamp"

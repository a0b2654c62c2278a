"""`maestro guard` as the sidecar runs it: env contract, start, serve, audit, clean SIGTERM; `--check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc

from maestro.workers.guard import contract
from ports import free_port as _free_port

pytestmark = pytest.mark.unit


def _env(stack: Stack, port: int) -> dict[str, str]:
    return {
        **os.environ,
        contract.CONFIG_ENV: str(stack.policy_path),
        contract.KEYS_DIR_ENV: str(stack.keys_dir),
        contract.UPSTREAM_ENV: stack.upstream_url,
        contract.PORT_ENV: str(port),
        contract.HOST_ENV: "127.0.0.1",
        contract.AUDIT_LOG_ENV: str(stack.audit_path),
    }


def test_sidecar_process_serves_and_stops_cleanly(stack: Stack) -> None:
    stack.start(policy_doc(open_request(**{"auth": {"required": True}})))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maestro", "guard"],
        env=_env(stack, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{contract.READY_PATH}", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(
                        f"guard did not become ready: {proc.stderr.read().decode() if proc.stderr else ''}"
                    )
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEYS["alice"], max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == stack.upstream.reply
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    [line] = [json.loads(x) for x in Path(stack.audit_path).read_text().splitlines()]
    assert line["key"] == "alice" and line["status"] == 200  # flushed on shutdown


def test_check_validates_policy_and_keys(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice").write_text("sk-a")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(policy_doc(open_request(**{"auth": {"required": True}}))))
    run = [
        sys.executable,
        "-m",
        "maestro",
        "guard",
        "--check",
        "--config",
        str(policy),
        "--keys-dir",
        str(tmp_path / "keys"),
    ]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "1 key(s)" in ok.stdout and "auth required" in ok.stdout
    policy.write_text(json.dumps(policy_doc({"pii": {"input": "erase"}})))
    bad = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "request.pii.input" in bad.stderr
    refuse = subprocess.run(run[:4] + run[5:] + ["--port", "0"], capture_output=True, text=True, timeout=60)
    assert refuse.returncode == 1 and "refusing to start" in refuse.stderr

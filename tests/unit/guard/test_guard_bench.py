"""`bench/guard.py --json` runs end to end (tiny load, no LiteLLM) with every field; no timing asserts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_bench_runs_and_reports_the_contract_fields() -> None:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "guard.py"),
        "--json",
        "--no-litellm",
        "--rounds",
        "1",
        "--duration",
        "0.2",
        "--requests",
        "40",
        "--warmup",
        "20",
        "--rate",
        "100",
        "--concurrency",
        "4",
    ]
    redis = shutil.which("redis-server") is not None  # `make host-deps` installs it
    if redis:
        cmd.append("--redis")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for name in ("direct", "bare", "guard"):
        assert {"p50_ms", "p99_ms", "rps", "stream_ttfb_p50_ms", "open_loop_p99_ms"} <= set(result[name])
        assert result[name]["errors"] == 0, (name, result[name])
        assert result[name]["rps"] > 0
    assert result["litellm"] is None and "skipped" in result["litellm_reason"]
    for key in ("added_p50_ms", "added_p99_ms", "guard_vs_bare_rps", "stream_ttfb_added_ms"):
        assert isinstance(result[key], float)
    assert result["guard_vs_litellm_rps"] is None
    assert result["guard"]["audit_lines"] > 0  # the guard really enforced and audited
    if redis:  # the same guard with its limits shared through Redis, measured alongside
        assert {"p50_ms", "p99_ms", "rps"} <= set(result["guard_redis"])
        assert result["guard_redis"]["errors"] == 0 and "redis_failures_logged" in result["guard_redis"]
        assert isinstance(result["redis_added_p50_ms"], float)
    else:
        assert result["guard_redis"] is None and result["redis_added_p50_ms"] is None

"""`bench/guard_variants.py --json` runs end to end (tiny load) and reports its fields; no timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_variants_bench_runs_routes_and_reports_the_contract_fields() -> None:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "guard_variants.py"),
        "--json",
        "--rounds",
        "1",
        "--duration",
        "0.2",
        "--requests",
        "60",
        "--warmup",
        "20",
        "--concurrency",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    for name in ("direct", "variants_off", "variants_on"):
        assert {"p50_ms", "p99_ms", "rps", "stream_ttfb_p50_ms"} <= set(result[name])
        assert result[name]["errors"] == 0, (name, result[name])
    for key in ("routing_added_p50_ms", "routing_added_p99_ms", "on_added_p50_ms", "off_added_p50_ms"):
        assert isinstance(result[key], float)
    # the routed guard really split the traffic (read back from its audit log), roughly 70/30
    assert set(result["split"]) == {"control", "tuned"} and result["split_requests"] > 100
    assert 55 < result["split"]["control"] < 85

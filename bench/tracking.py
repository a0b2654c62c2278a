"""Trainer tokens/s with experiment tracking off vs on (a real `mlflow server`), in one run.

    python bench/tracking.py [--steps 300] [--repeats 3] [--batch-size 4]

The same job (tiny Llama from maestro.workers.train.tinymodel, the same data and seed) runs
alternately untracked and tracked (off, on, off, on, …) so background load hits both alike; each
side reports the median of the trainer's own tokens/s (summary metrics.tokensPerSecond, the loop's
throughput) and of the wall time of the whole job (tracking's start-up and final calls included).
The server is hack/mlflow-venv.sh's MLflow with SQLite and served artifacts on loopback. The tiny
model's steps take milliseconds, so per-step costs of tracking show up here far more than on a real
model. Prints JSON.

In a cluster the tracking server runs elsewhere; here it shares the machine, and its SQLite writes
(~0.2 s of CPU per 1,000 points) would compete with training for the cores. So by default the server
is pinned to the last CPU and the trainer to the others (`--no-pin`: both anywhere, as in a shared
box); the trainer-side cost (the client's thread, which shares the GIL) is what remains.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))  # mlflowserver.py: the tests' server launcher
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _dataset(d: Path) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        rows.append({"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."})
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:260]))
    (d / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[260:]))
    return d


def _run(
    base: Path, data: Path, out: Path, steps: int, batch: int, tracking: Any
) -> tuple[float, float, Any]:
    from maestro.workers.train.dist import Topology
    from maestro.workers.train.job import Inputs, run

    spec = {
        "baseModel": {"uri": f"file://{base}"},
        "datasetRef": {"name": "ds"},
        "method": "lora",
        "hyperparameters": {"maxSteps": steps, "batchSize": batch, "maxSeqLength": 64, "seed": 0},
        "checkpointing": {"everySteps": 100000, "keepLast": 1},
        "evaluation": {"compareBase": False},
    }
    inputs = Inputs(
        spec=spec,
        dataset_dir=data,
        schema=None,
        dataset_version="sha256:bench",
        output_dir=out,
        output_uri=f"file://{out}",
        image="bench",
        cache_dir=out / ".cache",
        tracking=tracking,
    )
    t0 = time.perf_counter()
    summary = run(inputs, Topology.init())
    return summary["metrics"]["tokensPerSecond"], time.perf_counter() - t0, summary.get("tracking")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and trainer to separate CPUs"
    )
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from maestro.workers.train.config import TrackingSettings
    from maestro.workers.train.tinymodel import build_tiny_model
    from mlflowserver import MlflowServer

    venv = Path(
        os.environ.get("MAESTRO_MLFLOW_VENV")
        or subprocess.run([str(ROOT / "hack" / "mlflow-venv.sh")], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_tiny_model(root / "model", seed=0)
        data = _dataset(root / "data")
        server = MlflowServer(venv, root / "mlflow")
        cpus = sorted(os.sched_getaffinity(0))
        pin = not args.no_pin and len(cpus) >= 2
        if pin:
            os.sched_setaffinity(0, {cpus[-1]})  # the server (and its workers) inherit this
        server.start()
        if pin:
            os.sched_setaffinity(0, set(cpus[:-1]))
        try:
            side: dict[str, dict[str, list[float]]] = {
                "off": {"tps": [], "wall": []},
                "on": {"tps": [], "wall": []},
            }
            outcomes = []
            for i in range(args.repeats):
                for name in ("off", "on"):
                    tracking = (
                        TrackingSettings(server.url, "bench", "bench-model", f"bench-{i}")
                        if name == "on"
                        else None
                    )
                    tps, wall, outcome = _run(
                        base, data, root / f"out-{name}-{i}", args.steps, args.batch_size, tracking
                    )
                    side[name]["tps"].append(tps)
                    side[name]["wall"].append(wall)
                    if outcome is not None:
                        outcomes.append(outcome)
        finally:
            server.stop()
    off, on = (statistics.median(side[n]["tps"]) for n in ("off", "on"))
    print(
        json.dumps(
            {
                "bench": "tracking",
                "model": "tiny-llama (maestro.workers.train.tinymodel)",
                "steps": args.steps,
                "server_pinned_apart": pin,
                "repeats": args.repeats,
                "tokens_per_s": {"off": round(off, 1), "on": round(on, 1)},
                "on_vs_off": round(on / off, 4),
                "job_wall_s": {n: round(statistics.median(side[n]["wall"]), 2) for n in ("off", "on")},
                "runs_tracked_ok": sum(1 for o in outcomes if o.get("ok")),
                "samples": side,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Helpers shared by the trainer tests (imported as a module; pytest puts this dir on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_spec(base: Path, method: str = "lora", steps: int = 200, **over: Any) -> dict[str, Any]:
    hyper = {
        "maxSteps": steps,
        "batchSize": 4,
        "learningRate": 3e-3 if method == "full" else 5e-3,
        "maxSeqLength": 64,
        "seed": 0,
        "warmupRatio": 0.0,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
    }
    hyper |= over.pop("hyperparameters", {})
    spec = {
        "baseModel": {"uri": f"file://{base}"},
        "datasetRef": {"name": "ds"},
        "method": method,
        "hyperparameters": hyper,
        "checkpointing": {"everySteps": 50, "keepLast": 2},
    }
    spec |= over
    return spec


def run_job(
    spec: dict[str, Any], dataset: Path, out: Path, version: str = "sha256:test", tracking: Any = None
) -> dict[str, Any]:
    """Run the worker in-process (single process) and return its summary; EvaluationFailed passes through.

    `tracking`: a `config.TrackingSettings` (what $MAESTRO_TRACKING carries in a pod), or None."""
    from maestro.workers.train.dist import Topology
    from maestro.workers.train.job import Inputs, run

    inputs = Inputs(
        spec=spec,
        dataset_dir=dataset,
        schema=None,
        dataset_version=version,
        output_dir=out,
        output_uri=f"file://{out}",
        image="maestro-worker:test",
        cache_dir=out / ".cache",
        tracking=tracking,
    )
    return run(inputs, Topology.init())

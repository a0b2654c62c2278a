"""GPU paths (bf16 autocast, fp32 adapters, fused AdamW). Skipped without CUDA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from trainhelpers import make_spec, run_job

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_training_on_gpu(tiny_model: Path, arith_dataset: Path, tmp_path: Path, method: str) -> None:
    s = run_job(
        make_spec(tiny_model, method, steps=30, hyperparameters={"precision": "bf16"}),
        arith_dataset,
        tmp_path / "out",
    )
    assert s["precision"] == "bf16"
    curve = s["metrics"]["lossCurve"]
    assert all(math.isfinite(loss) for _, loss in curve) and curve[-1][1] < curve[0][1]
    assert s["evaluation"]["evalLoss"] is not None

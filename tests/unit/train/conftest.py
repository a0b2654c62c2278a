"""Fixtures for the trainer tests: one tiny Llama per session, built locally (no hub)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from trainhelpers import write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A 100k-parameter model gains nothing from intra-op threads, and on a busy CI host spinning OpenMP
# threads make each tiny matmul many times slower. Subprocesses (CLI, torchrun) inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny Llama HF directory (seed 0). Treat as read-only: tests share it."""
    from maestro.workers.train.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def arith_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prompt-completion dataset version dir: simple sums and a fixed answer the model can learn."""
    rng = random.Random(0)
    rows = []
    for _ in range(240):
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        rows.append({"prompt": f"What is {a} plus {b}?", "completion": f"{a} plus {b} is {a + b}."})
        rows.append({"prompt": "Describe a red fox.", "completion": "The fox is red and happy."})
    rng.shuffle(rows)
    d = tmp_path_factory.mktemp("dataset")
    write_jsonl(d / "train.jsonl", rows[:400])
    write_jsonl(d / "validation.jsonl", rows[400:])
    return d

"""Multi-process training: the torchrun launcher and DDP on CPU (gloo) matching a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainhelpers import make_spec, run_job

from maestro.workers.train import contract
from maestro.workers.train.dist import launch_argv
from ports import free_port as _free_port

pytestmark = pytest.mark.unit


def test_launcher_only_when_more_than_one_process() -> None:
    assert launch_argv([], {}) is None
    assert launch_argv([], {"MAESTRO_NPROC_PER_NODE": "1", "NNODES": "1"}) is None
    assert (
        launch_argv([], {"MAESTRO_NPROC_PER_NODE": "8", "TORCHELASTIC_RUN_ID": "x"}) is None
    )  # inside torchrun
    assert (
        launch_argv([], {"RANK": "1", "WORLD_SIZE": "4", "MAESTRO_NPROC_PER_NODE": "2"}) is None
    )  # set by hand


def test_launcher_builds_torchrun_for_an_indexed_job() -> None:
    env = {
        "MAESTRO_NPROC_PER_NODE": "4",
        "NNODES": "2",
        "JOB_COMPLETION_INDEX": "1",
        "MASTER_ADDR": "job-0.job-svc",
        "MASTER_PORT": "29400",
    }
    cmd = launch_argv(["--spec", "s.json"], env)
    assert cmd is not None
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {
        "--nnodes=2",
        "--nproc-per-node=4",
        "--node-rank=1",
        "--master-addr=job-0.job-svc",
        "--master-port=29400",
    } <= set(cmd)
    assert cmd[-5:] == ["maestro.workers.train", "run", "--no-launch", "--spec", "s.json"]
    env["NODE_RANK"] = "0"  # an explicit NODE_RANK wins over the completion index
    assert "--node-rank=0" in (launch_argv([], env) or [])


@pytest.mark.parametrize(
    ("method", "fsdp"),
    [("full", False), ("lora", False), ("full", True)],
    ids=["ddp-full", "ddp-lora", "fsdp-full"],
)
def test_two_processes_match_one_process_with_the_same_global_batch(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, method: str, fsdp: bool
) -> None:
    hyper = {"batchSize": 4, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    spec = make_spec(
        tiny_model,
        method,
        steps=10,
        hyperparameters=hyper,
        distributed={"fsdp": fsdp},
        checkpointing={"everySteps": 5},
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    term = tmp_path / "term"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MAESTRO_NPROC_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        contract.ENV_TERMINATION_PATH: str(term),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "maestro.workers.train",
        "run",
        "--spec",
        str(tmp_path / "spec.json"),
        "--dataset-dir",
        str(arith_dataset),
        "--output-dir",
        str(tmp_path / "ddp"),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch.distributed.run" in r.stderr and "rank 1/2" in r.stderr
    ddp = contract.parse_summary(term.read_text())

    single = run_job(
        make_spec(tiny_model, method, steps=10, hyperparameters={**hyper, "batchSize": 8}),
        arith_dataset,
        tmp_path / "single",
    )
    losses = [x for _, x in ddp["metrics"]["lossCurve"]]
    assert losses == pytest.approx([x for _, x in single["metrics"]["lossCurve"]], abs=2e-4)
    assert ddp["evaluation"]["evalLoss"] == pytest.approx(single["evaluation"]["evalLoss"], abs=2e-4)

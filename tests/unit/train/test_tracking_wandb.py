"""spec.tracking.backend wandb: a Weights & Biases run written offline to the output directory (no
network) by the trainer in-process on the tiny Llama, read back from the run's own transaction log.

wandb 0.31 ships no Python reader of its offline `.wandb` file (the old `DataStore` moved into the Go
`wandb-core`; `wandb sync` has no --view). So the test undoes only the file's framing (LevelDB's log
format, 32 KiB blocks behind a ":W&B" header) and parses each record with wandb's own protobuf class,
`wandb.proto.wandb_internal_pb2.Record`: no field of a record is decoded by hand."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trainhelpers import make_spec, run_job

from maestro.api.training import LLMTrainingJobSpec
from maestro.builders import training as build
from maestro.builders.settings import Settings
from maestro.workers.train import contract
from maestro.workers.train.config import ConfigError, TrackingSettings

pytestmark = pytest.mark.unit
OWNER = {"metadata": {"name": "tune", "namespace": "team-a", "uid": "uid-123"}}


def records(path: Path) -> Iterator[Any]:
    """The records of a `.wandb` transaction log, as wandb's own `Record` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, chunk = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece of one record
            rec = pb.Record()
            rec.ParseFromString(chunk)
            yield rec
            chunk = b""


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def test_a_wandb_run_is_written_offline_with_params_metrics_and_summary(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # offline needs none; proves nothing asks for one
    spec = make_spec(tiny_model, "lora", steps=12, evaluation={"maxNewTokens": 4})
    parsed = LLMTrainingJobSpec.model_validate(
        {**spec, "tracking": {"backend": "wandb", "experiment": "tune-project"}}
    )
    env = build.tracking_env(
        OWNER, parsed, Settings(tracking_uri="http://mlflow.example:5000"), "tune-train-x"
    )
    assert [e["name"] for e in env] == [contract.ENV_TRACKING]  # no MLflow credentials, no server
    tr = TrackingSettings.from_env({e["name"]: e["value"] for e in env})
    assert tr is not None and tr.backend == "wandb" and tr.uri == ""
    out = tmp_path / "out"
    summary = run_job(spec, arith_dataset, out, tracking=tr)

    t = summary["tracking"]
    assert t["backend"] == "wandb" and t["ok"] is True and t["runStatus"] == "FINISHED", t
    run_dir = out / t["runDir"]
    assert run_dir.is_dir() and run_dir.name.endswith(t["runId"]) and t["runDir"].startswith("wandb/")
    (log_file,) = run_dir.glob("*.wandb")
    recs = list(records(log_file))
    kinds = [r.WhichOneof("record_type") for r in recs]
    (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    assert run.run_id == t["runId"] and run.project == "tune-project" and run.display_name == "tune-train-x"
    config = {_key(u): json.loads(u.value_json) for u in run.config.update}
    assert config["hyperparameters.maxSteps"] == 12 and config["method"] == "lora"
    assert config["datasetVersion"] == "sha256:test"
    assert config["tags"]["llmops.dev/uid"] == "uid-123"

    losses = json.loads((out / "checkpoints" / "step-12" / "state.json").read_text())["losses"]
    history = []
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            history.append((row["_step"], row["loss"]))
    assert [s for s, _ in history] == list(range(1, 13))
    assert [v for _, v in history] == pytest.approx(losses, rel=1e-9)

    final: dict[str, Any] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            final |= {_key(u): json.loads(u.value_json) for u in r.summary.update}
    assert final["evalLoss"] == pytest.approx(summary["evaluation"]["evalLoss"], rel=1e-12)
    assert final["model.digest"] == summary["model"]["digest"]
    assert kinds[-1] == "exit" and recs[-1].exit.exit_code == 0
    assert (run_dir / "files" / "model_card.md").is_file()  # artifacts travel with the run
    saved = json.loads((out / contract.TRACKING_RUN_FILE).read_text())
    assert saved["runId"] == t["runId"] and saved["runDirs"] == [t["runDir"]]


def test_wandb_chosen_but_not_installed_fails_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one failure that cannot be provoked here for real (the dev venv has the extra): `import
    wandb` fails as it would in an image built without it."""
    from maestro.workers.train import tracking

    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ConfigError) as err:
        tracking.from_settings(TrackingSettings("", "p", "", "r", backend="wandb"))
    msg = str(err.value)
    assert "\n" not in msg and "lacks the wandb package" in msg and "maestro[wandb]" in msg

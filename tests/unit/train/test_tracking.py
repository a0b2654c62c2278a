"""spec.tracking against a real `mlflow server` (SQLite, served artifacts): the trainer in-process on the
tiny Llama. What the tracker holds, read back over MLflow's REST API, must be what the trainer's
summary and the job's status report; a tracker killed mid-run must leave the job Succeeded with the
failure on the Tracked condition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from trainhelpers import make_spec, run_job

import mlflowserver
from maestro.api.training import LLMTrainingJobSpec, LLMTrainingJobStatus
from maestro.builders import training as build
from maestro.builders.settings import Settings
from maestro.reconcile import training as reconcile
from maestro.status import jobs
from maestro.workers.train import contract
from maestro.workers.train.config import TrackingSettings
from mlflowserver import MlflowServer

pytestmark = pytest.mark.unit
mlflow_server = mlflowserver.mlflow_server
mlflow_venv_path = mlflowserver.mlflow_venv_path

EVALUATION = {
    "prompts": [{"prompt": "Describe a red fox.", "expected": "fox"}, {"prompt": "What is 1 plus 1?"}],
    "maxNewTokens": 8,
    "bias": {
        "enabled": True,
        "groups": {"g": ["man", "woman"]},
        "templates": ["The {group} is"],
        "maxNewTokens": 4,
        "maxSentimentGap": 2,
        "maxRefusalGap": 1,
        "maxLengthGapRatio": 100,
    },
}
OWNER = {"metadata": {"name": "tune", "namespace": "team-a", "uid": "uid-123"}}


def tracking_for(server: MlflowServer, experiment: str, spec: dict[str, Any]) -> TrackingSettings:
    """What the builder hands the trainer in $MAESTRO_TRACKING, for a spec naming this server."""
    parsed = LLMTrainingJobSpec.model_validate(
        {**spec, "tracking": {"uri": server.url, "experiment": experiment}}
    )
    env = build.tracking_env(OWNER, parsed, Settings(), "tune-train-abcde")
    tr = TrackingSettings.from_env({e["name"]: e["value"] for e in env if "value" in e})
    assert tr is not None
    return tr


def status_from(
    summary: dict[str, Any], spec: dict[str, Any], server: MlflowServer
) -> tuple[Any, dict[str, Any]]:
    """Reconcile's view of a finished Job whose pod wrote this summary: (status, conditions by type)."""
    s = LLMTrainingJobSpec.model_validate({**spec, "tracking": {"uri": server.url}})
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": build.CONTAINER,
                    "state": {"terminated": {"exitCode": 0, "message": contract.encode_summary(summary)}},
                }
            ]
        }
    }
    view = jobs.JobView(jobs.JobState.SUCCEEDED)
    plan = reconcile._finished_plan(
        LLMTrainingJobStatus(),
        s,
        view,
        [pod],
        "claim",
        "tune-train-abcde",
        [],
        build.resolve_tracking(OWNER, s, Settings()),
    )
    return plan.status, {c.type: c for c in plan.conditions}


def test_params_metrics_artifacts_and_version_in_mlflow_equal_the_summary_and_status(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    spec = make_spec(tiny_model, "lora", steps=30, evaluation=EVALUATION)
    out = tmp_path / "out"
    summary = run_job(spec, arith_dataset, out, tracking=tracking_for(mlflow_server, "exp-ok", spec))
    tr = summary["tracking"]
    assert tr["ok"] is True and "error" not in tr, tr
    run_id = tr["runId"]
    assert tr["runUrl"] == f"{mlflow_server.url}/#/experiments/{tr['experimentId']}/runs/{run_id}"
    run = mlflow_server.run(run_id)
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "tune-train-abcde"

    params = mlflow_server.params(run_id)
    hp = LLMTrainingJobSpec.model_validate(spec).hyperparameters
    assert params["hyperparameters.learningRate"] == str(hp.learning_rate)
    assert params["hyperparameters.maxSteps"] == "30" and params["hyperparameters.lora.r"] == "16"
    assert params["method"] == "lora" and params["baseModel"] == f"file://{tiny_model}"
    assert params["datasetVersion"] == summary["lineage"]["datasetVersion"] == "sha256:test"
    assert params["image"] == summary["lineage"]["image"] and params["precision"] == summary["precision"]
    tags = mlflow_server.tags(run_id)
    assert tags["llmops.dev/uid"] == "uid-123" and tags["llmops.dev/namespace"] == "team-a"
    assert tags["llmops.dev/dataset-version"] == "sha256:test"
    assert tags["llmops.dev/base-model"] == summary["lineage"]["baseModel"]

    # per step: every optimiser step's loss, the one the checkpoint recorded
    losses = json.loads((out / "checkpoints" / "step-30" / "state.json").read_text())["losses"]
    history = sorted(mlflow_server.history(run_id, "loss"), key=lambda m: m["step"])
    assert [m["step"] for m in history] == list(range(1, 31))
    assert [m["value"] for m in history] == pytest.approx(losses, rel=1e-9)
    assert len(mlflow_server.history(run_id, "learningRate")) == 30
    assert len(mlflow_server.history(run_id, "tokensPerSecond")) == 30

    # final: the evaluation the summary (and so status) reports, number for number
    latest = mlflow_server.latest_metrics(run_id)
    ev = summary["evaluation"]
    for key in ("evalLoss", "perplexity", "baseEvalLoss", "promptsPassed", "promptsChecked", "promptsTotal"):
        assert latest[key] == pytest.approx(ev[key], rel=1e-12), key
    assert latest["bias.sentimentGap"] == pytest.approx(ev["bias"]["sentimentGap"], rel=1e-12)
    assert latest["bias.refusalGap"] == pytest.approx(ev["bias"]["refusalGap"], rel=1e-12)
    assert latest["passed"] == 1.0 and latest["trainLoss"] == pytest.approx(summary["metrics"]["trainLoss"])
    assert {"model_card.md", "evaluation.json", "loss_curve.csv"} <= set(mlflow_server.artifacts(run_id))

    # the registry: a version of <namespace>-<name>, tagged with the model's digest
    rm = tr["registeredModel"]
    assert rm["name"] == "team-a-tune"
    mv = mlflow_server.model_version(rm["name"], rm["version"])
    mv_tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
    assert mv["run_id"] == run_id and mv_tags["llmops.dev/model-digest"] == summary["model"]["digest"]
    assert summary["model"]["digest"] in mv["description"]

    # status: what the reconcile writes from this summary
    status, conds = status_from(summary, spec, mlflow_server)
    st = status.tracking
    assert (st.run_id, st.run_url, st.experiment_id) == (run_id, tr["runUrl"], tr["experimentId"])
    assert (st.registered_model.name, st.registered_model.version) == (rm["name"], rm["version"])
    assert status.evaluation.eval_loss == pytest.approx(latest["evalLoss"], rel=1e-12)
    assert status.phase == "Succeeded"
    assert (conds["Tracked"].status, conds["Tracked"].reason) == ("True", "Succeeded")
    assert rm["version"] in conds["Tracked"].message and conds["Tracked"].warning is False


def test_a_tracker_killed_mid_run_leaves_the_job_succeeded_with_the_error_reported(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, mlflow_venv_path: Path
) -> None:
    server = MlflowServer(mlflow_venv_path, tmp_path / "mlflow")
    server.start()
    steps = 400
    killed_at: list[int] = []

    def kill_after_first_steps() -> None:
        """SIGKILL the server once it holds the first steps' losses (the run is live and logging)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                runs = server.runs("exp-kill")
                hist = server.history(runs[0]["info"]["run_id"], "loss") if runs else []
            except OSError:
                hist = []
            if hist:
                killed_at.append(max(int(m["step"]) for m in hist))
                server.kill()
                return
            time.sleep(0.05)

    spec = make_spec(tiny_model, "lora", steps=steps, checkpointing={"everySteps": 1000, "keepLast": 1})
    watcher = threading.Thread(target=kill_after_first_steps, daemon=True)
    try:
        watcher.start()
        summary = run_job(
            spec, arith_dataset, tmp_path / "out", tracking=tracking_for(server, "exp-kill", spec)
        )
    finally:
        watcher.join(5)
        server.kill()
    assert killed_at and killed_at[0] < steps, killed_at  # killed while training, not after
    assert summary["passed"] is True and summary["metrics"]["steps"] == steps and summary["model"]["digest"]
    tr = summary["tracking"]
    assert tr["ok"] is False and tr["reason"] == contract.REASON_TRACKER_UNREACHABLE, tr
    assert tr["runId"] and "127.0.0.1" in tr["error"]
    assert "registeredModel" not in tr

    status, conds = status_from(summary, spec, server)
    assert status.phase == "Succeeded" and conds["Ready"].status == "True"
    tracked = conds["Tracked"]
    assert (tracked.status, tracked.reason) == ("False", "TrackerUnreachable") and tracked.warning
    assert status.tracking.run_id == tr["runId"] and status.tracking.error == tr["error"]


def test_a_call_the_server_refuses_is_reported_and_the_rest_still_arrives(
    mlflow_server: MlflowServer,
) -> None:
    """MLflow refuses to change a logged param (400): that call is skipped and reported as
    TrackingFailed; the metrics, the run's end and the model version still go through."""
    from maestro.workers.train.tracking import MlflowTracker, _Op

    t = MlflowTracker(TrackingSettings(mlflow_server.url, "exp-refused", "refused-model", "r"))
    t.start({"seed": 1}, {})
    # the same param again with another value, queued like any call (MLflow answers 400)
    t._submit(_Op("log params", lambda: t._log_params({"seed": "2"})))
    for step in range(1, 6):
        t.log_metrics(step, {"loss": 1.0 / step})
    out = t.finish(
        metrics={"evalLoss": 0.5}, step=5, artifacts=(), model={"uri": "pvc://c/model", "digest": "d"}
    )
    assert out["ok"] is False and out["reason"] == contract.REASON_TRACKING_FAILED, out
    assert "log params" in out["error"]
    assert mlflow_server.params(out["runId"]) == {"seed": "1"}
    assert len(mlflow_server.history(out["runId"], "loss")) == 5
    assert mlflow_server.run(out["runId"])["info"]["status"] == "FINISHED"
    assert out["registeredModel"]["name"] == "refused-model"


def test_an_unreachable_tracker_buffers_boundedly_and_reports_what_it_dropped() -> None:
    from maestro.workers.train.tracking import MlflowTracker
    from ports import free_port

    t = MlflowTracker(
        TrackingSettings(f"http://127.0.0.1:{free_port()}", "e", "m", "r"), buffer=10, backoff_s=0.05
    )
    t.start({}, {})
    for step in range(1, 51):
        t.log_metrics(step, {"loss": 1.0})
    assert len(t._metrics) == 10
    out = t.finish(metrics={}, step=50, artifacts=(), model=None, timeout_s=30)
    assert out["ok"] is False and out["reason"] == contract.REASON_TRACKER_UNREACHABLE
    assert out["dropped"] == 40 and "runId" not in out


def _trainer(
    spec: dict[str, Any], dataset: Path, out: Path, tracking_env: list[dict[str, Any]], tmp: Path
) -> subprocess.Popen[bytes]:
    """`maestro.workers.train run` as the pod runs it ($MAESTRO_TRACKING from the builder); its stdout
    and stderr go to files under `tmp` (a pipe nobody reads would stall it)."""
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        contract.ENV_TERMINATION_PATH: str(tmp / "termination-log"),
        contract.ENV_DATASET_VERSION: "sha256:test",
        **{e["name"]: e["value"] for e in tracking_env if "value" in e},
    }
    cmd = [sys.executable, "-m", "maestro.workers.train", "run", "--spec", str(tmp / "spec.json")]
    cmd += ["--dataset-dir", str(dataset), "--output-dir", str(out)]
    with (tmp / "stdout").open("wb") as so, (tmp / "stderr").open("ab") as se:
        return subprocess.Popen(cmd, env=env, stdout=so, stderr=se)


def test_a_restarted_pod_continues_the_same_run_at_the_resumed_step(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """The trainer is SIGKILLed (a pod killed) once the run holds steps past the first checkpoint; the
    restarted one resumes from the checkpoint and must log into the same run: one run in the
    experiment, FINISHED, every step 1..N in its history, params logged once."""
    steps = 300
    spec = make_spec(tiny_model, "lora", steps=steps, checkpointing={"everySteps": 10, "keepLast": 1})
    parsed = LLMTrainingJobSpec.model_validate(
        {**spec, "tracking": {"uri": mlflow_server.url, "experiment": "exp-resume"}}
    )
    env = build.tracking_env(OWNER, parsed, Settings(), "tune-train-abcde")
    out = tmp_path / "out"
    first = _trainer(spec, arith_dataset, out, env, tmp_path)
    killed_at = 0
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.poll() is None:
            try:
                runs = mlflow_server.runs("exp-resume")
                hist = mlflow_server.history(runs[0]["info"]["run_id"], "loss") if runs else []
            except OSError:
                hist = []
            if hist and max(int(m["step"]) for m in hist) >= 15:
                killed_at = max(int(m["step"]) for m in hist)
                first.kill()
                break
            time.sleep(0.05)
    finally:
        first.kill()
        first.wait(30)
    assert 15 <= killed_at < steps and first.returncode == -9, (killed_at, first.returncode)
    time.sleep(0.5)  # a batch the server received just before the kill is committed by now
    # what the run got from the first attempt (the points still buffered at the kill are lost)
    runs = mlflow_server.runs("exp-resume")
    first_steps = sorted(int(m["step"]) for m in mlflow_server.history(runs[0]["info"]["run_id"], "loss"))
    assert first_steps == list(range(1, len(first_steps) + 1)), first_steps
    logged = len(first_steps)
    saved = json.loads((out / contract.TRACKING_RUN_FILE).read_text())
    assert saved["backend"] == "mlflow" and saved["attempt"] == 1
    run_id = saved["runId"]
    assert mlflow_server.run(run_id)["info"]["status"] == "RUNNING"  # killed: nobody ended it

    second = _trainer(spec, arith_dataset, out, env, tmp_path)
    assert second.wait(300) == 0, (tmp_path / "stderr").read_text()[-3000:]
    summary = contract.parse_summary((tmp_path / "termination-log").read_text())
    resumed = summary["metrics"]["resumedFromStep"]
    assert resumed is not None and resumed >= 10 and resumed % 10 == 0, resumed
    tr = summary["tracking"]
    assert tr["ok"] is True and tr["runId"] == run_id and tr["attempt"] == 2, tr
    assert tr["runStatus"] == "FINISHED" and tr["registeredModel"]["name"] == "team-a-tune"

    runs = mlflow_server.runs("exp-resume")
    assert [r["info"]["run_id"] for r in runs] == [run_id], "a restart must not start a second run"
    assert runs[0]["info"]["status"] == "FINISHED"
    tags = mlflow_server.tags(run_id)
    assert tags["llmops.dev/attempt"] == "2"
    params = mlflow_server.params(run_id)
    assert params["hyperparameters.maxSteps"] == str(steps) and params["method"] == "lora"
    history = mlflow_server.history(run_id, "loss")
    by_step: dict[int, list[float]] = {}
    for m in history:
        by_step.setdefault(int(m["step"]), []).append(float(m["value"]))
    assert sorted(by_step) == list(range(1, steps + 1))
    # steps up to the checkpoint once (the first attempt's, the rest backfilled from the checkpoint);
    # those the first attempt logged past the checkpoint and the second redid, twice, with equal loss
    # (resume is exact on CPU); the rest once
    ckpt = json.loads((out / "checkpoints" / f"step-{steps}" / "state.json").read_text())["losses"]
    for s in range(1, steps + 1):
        redone = resumed < s <= logged
        assert len(by_step[s]) == (2 if redone else 1), (s, resumed, logged, by_step[s])
        assert by_step[s] == pytest.approx([ckpt[s - 1]] * len(by_step[s]), rel=1e-6), s
    status, conds = status_from(summary, spec, mlflow_server)
    assert status.tracking.run_id == run_id and status.tracking.run_status == "FINISHED"
    assert conds["Tracked"].status == "True" and "resumed after 1 pod restart" in conds["Tracked"].message


def test_a_failed_training_ends_its_run_failed_and_the_status_says_so(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """A real failure mid-training: the output already holds a file where step 10's checkpoint goes, so
    saving it raises (StorageError, exit 74 like an unwritable claim). The run must end FAILED with the
    steps it got, the failure summary must carry it, and Tracked stays about tracking (True: the run
    is complete and says FAILED) while the job is Failed."""
    spec = make_spec(tiny_model, "lora", steps=30, checkpointing={"everySteps": 10, "keepLast": 1})
    parsed = LLMTrainingJobSpec.model_validate(
        {**spec, "tracking": {"uri": mlflow_server.url, "experiment": "exp-fail"}}
    )
    env = build.tracking_env(OWNER, parsed, Settings(), "tune-train-abcde")
    out = tmp_path / "out"
    (out / contract.CHECKPOINTS_DIR).mkdir(parents=True)
    (out / contract.CHECKPOINTS_DIR / "step-10").write_text("not a checkpoint")
    proc = _trainer(spec, arith_dataset, out, env, tmp_path)
    code = proc.wait(300)
    assert code == contract.EXIT_IO, (tmp_path / "stderr").read_text()[-3000:]
    summary = contract.parse_summary((tmp_path / "termination-log").read_text())
    assert summary["passed"] is False and summary["reason"] == contract.REASON_STORAGE_ERROR
    tr = summary["tracking"]
    assert tr["ok"] is True and tr["runStatus"] == "FAILED" and "registeredModel" not in tr, tr
    run = mlflow_server.run(tr["runId"])
    assert run["info"]["status"] == "FAILED"
    assert [int(m["step"]) for m in mlflow_server.history(tr["runId"], "loss")] == list(range(1, 11))

    s = LLMTrainingJobSpec.model_validate({**spec, "tracking": {"uri": mlflow_server.url}})
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": build.CONTAINER,
                    "state": {"terminated": {"exitCode": code, "message": contract.encode_summary(summary)}},
                }
            ]
        }
    }
    resolved = build.resolve_tracking(OWNER, s, Settings())
    plan = reconcile._finished_plan(
        LLMTrainingJobStatus(), s, jobs.JobView(jobs.JobState.FAILED), [pod], "claim", "j", [], resolved
    )
    conds = {c.type: c for c in plan.conditions}
    assert plan.status.phase == "Failed" and conds["Ready"].status == "False"
    assert plan.status.tracking.run_id == tr["runId"] and plan.status.tracking.run_status == "FAILED"
    tracked = conds["Tracked"]
    assert tracked.status == "True" and "ended FAILED with the job" in tracked.message, tracked

    # killed outright (OOMKilled: no summary): Tracked says the run could not be ended
    killed = {
        "status": {
            "containerStatuses": [
                {"name": build.CONTAINER, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]
        }
    }
    plan = reconcile._finished_plan(
        LLMTrainingJobStatus(), s, jobs.JobView(jobs.JobState.FAILED), [killed], "claim", "j", [], resolved
    )
    tracked = {c.type: c for c in plan.conditions}["Tracked"]
    assert (tracked.status, tracked.reason) == (
        "False",
        "TrackingIncomplete",
    ) and "RUNNING" in tracked.message

    # failed before the run existed (bad data): reported, without a run
    early = contract.encode_summary({"passed": False, "reason": "InvalidSpec", "message": "no examples"})
    term = {"exitCode": contract.EXIT_BAD_INPUT, "message": early}
    bad_data = {"status": {"containerStatuses": [{"name": build.CONTAINER, "state": {"terminated": term}}]}}
    plan = reconcile._finished_plan(
        LLMTrainingJobStatus(), s, jobs.JobView(jobs.JobState.FAILED), [bad_data], "claim", "j", [], resolved
    )
    tracked = {c.type: c for c in plan.conditions}["Tracked"]
    assert tracked.reason == "TrackingIncomplete" and "before its run was created" in tracked.message

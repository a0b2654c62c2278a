"""spec.tracking over the operator's default: precedence, the trainer's $MAESTRO_TRACKING, and credentials
that reach the pod as secretKeyRefs only (never a value in the Job, its env or status)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from maestro.api.training import LLMTrainingJobSpec
from maestro.builders import training
from maestro.builders.settings import Settings
from maestro.workers.train import contract
from maestro.workers.train.config import TrackingSettings

pytestmark = pytest.mark.unit

DS_INPUT = training.DatasetInput(claim="ds", sub_path="sha256-abc", version="sha256:abc", schema_type="chat")
DEFAULT = Settings.from_env(
    {
        "MAESTRO_TRACKING_URI": "http://mlflow.infra.svc:5000",
        "MAESTRO_TRACKING_EXPERIMENT": "fine-tunes",
        "MAESTRO_TRACKING_CREDENTIALS_SECRET": "mlflow-default",
    }
)


def trainer_env(
    obj: dict[str, Any], tracking: dict[str, Any] | None, settings: Settings
) -> list[dict[str, Any]]:
    raw = obj["spec"] | ({"tracking": tracking} if tracking is not None else {})
    job = training.build_job(obj, LLMTrainingJobSpec.model_validate(raw), DS_INPUT, settings)
    env: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def told(env: list[dict[str, Any]]) -> TrackingSettings | None:
    return TrackingSettings.from_env({e["name"]: e["value"] for e in env if "value" in e})


def secret_refs(env: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_no_default_and_no_spec_means_not_tracked(training_obj: dict[str, Any]) -> None:
    env = trainer_env(training_obj, None, Settings())
    assert told(env) is None and not secret_refs(env)
    assert not [e for e in env if e["name"].startswith("MLFLOW_")]


def test_the_operators_default_applies_with_its_credentials(training_obj: dict[str, Any]) -> None:
    env = trainer_env(training_obj, None, DEFAULT)
    tr = told(env)
    meta = training_obj["metadata"]
    assert tr is not None and (tr.uri, tr.experiment) == ("http://mlflow.infra.svc:5000", "fine-tunes")
    assert tr.registered_model_name == f"{meta['namespace']}-{meta['name']}"
    assert tr.run_name == training.job_name(
        training_obj, LLMTrainingJobSpec.model_validate(training_obj["spec"])
    )
    assert tr.tags["llmops.dev/namespace"] == meta["namespace"] and tr.tags["llmops.dev/name"] == meta["name"]
    refs = secret_refs(env)
    assert set(refs) == set(contract.TRACKING_CREDENTIAL_KEYS)
    assert all(r == {"name": "mlflow-default", "key": k, "optional": True} for k, r in refs.items())


def test_wandb_is_offline_without_a_server_or_the_defaults_credentials(training_obj: dict[str, Any]) -> None:
    """backend wandb: tracked with no URI anywhere, the default experiment as its project, and never the
    default MLflow server's Secret (it would reach a pod that talks to no MLflow)."""
    env = trainer_env(training_obj, {"backend": "wandb"}, DEFAULT)
    tr = told(env)
    assert tr is not None and tr.backend == "wandb" and tr.uri == "" and tr.experiment == "fine-tunes"
    assert not secret_refs(env)
    tr = told(trainer_env(training_obj, {"backend": "wandb", "experiment": "proj"}, Settings()))
    assert tr is not None and (tr.backend, tr.experiment) == ("wandb", "proj")
    assert told(trainer_env(training_obj, {"backend": "wandb", "enabled": False}, DEFAULT)) is None
    mlflow = told(trainer_env(training_obj, {"backend": "mlflow"}, DEFAULT))
    assert mlflow is not None and mlflow.backend == "mlflow" and mlflow.uri == "http://mlflow.infra.svc:5000"


def test_the_spec_wins_field_by_field(training_obj: dict[str, Any]) -> None:
    # only the experiment: the default server and its Secret, the spec's experiment
    tr = told(trainer_env(training_obj, {"experiment": "mine"}, DEFAULT))
    assert tr is not None and (tr.uri, tr.experiment) == ("http://mlflow.infra.svc:5000", "mine")
    # its own server: the default Secret is not sent there
    env = trainer_env(training_obj, {"uri": "https://mlflow.team.example/"}, DEFAULT)
    tr = told(env)
    assert tr is not None and tr.uri == "https://mlflow.team.example" and tr.experiment == "fine-tunes"
    assert not secret_refs(env)
    env = trainer_env(
        training_obj,
        {
            "uri": "https://mlflow.team.example",
            "credentialsSecretRef": {"name": "team-mlflow"},
            "registeredModelName": "support-bot",
        },
        DEFAULT,
    )
    tr = told(env)
    assert tr is not None and tr.registered_model_name == "support-bot"
    assert {r["name"] for r in secret_refs(env).values()} == {"team-mlflow"}
    # no default experiment: the namespace
    tr = told(trainer_env(training_obj, {"uri": "http://m:5000"}, Settings()))
    assert tr is not None and tr.experiment == training_obj["metadata"]["namespace"]
    # enabled: false turns the default off
    env = trainer_env(training_obj, {"enabled": False}, DEFAULT)
    assert told(env) is None and not secret_refs(env)


def test_credentials_never_appear_as_values(training_obj: dict[str, Any]) -> None:
    job = training.build_job(
        training_obj,
        LLMTrainingJobSpec.model_validate(
            training_obj["spec"] | {"tracking": {"credentialsSecretRef": {"name": "s"}}}
        ),
        DS_INPUT,
        DEFAULT,
    )
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    for e in env:
        if e["name"].startswith("MLFLOW_"):
            assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "s"
    blob = json.dumps(job)
    assert "MLFLOW_TRACKING_PASSWORD" in blob and '"value": "s"' not in blob


@pytest.mark.parametrize(
    ("tracking", "needle"),
    [
        ({"uri": "http://user:secret@mlflow:5000"}, "pattern"),
        ({"uri": "ftp://mlflow"}, "tracking uri"),
        ({"registeredModelName": "a/b"}, "pattern"),
        ({"experiment": ""}, "at least 1"),
    ],
)
def test_bad_tracking_is_rejected_naming_the_field(
    training_obj: dict[str, Any], tracking: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        LLMTrainingJobSpec.model_validate(training_obj["spec"] | {"tracking": tracking})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAESTRO_TRACKING_URI": "mlflow:5000"}, "MAESTRO_TRACKING_URI must be an http"),
        (
            {"MAESTRO_TRACKING_URI": "http://u:p@mlflow:5000"},
            "MAESTRO_TRACKING_URI must not carry credentials",
        ),
    ],
)
def test_a_bad_default_stops_the_operator_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
    assert Settings.from_env({"MAESTRO_TRACKING_URI": ""}).tracking_uri is None  # empty: off


class TrainingKube:
    """The API as a tracked job sees it: its Job (built with the default tracking) and its pods."""

    def __init__(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.job, self.pods = job, pods
        self.patches: list[dict[str, Any]] = []

    async def get(self, api: str, kind: str, name: str, ns: str) -> Any:
        return self.job if kind == "Job" else None

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return self.pods

    async def patch_status(self, api: str, kind: str, name: str, ns: str, patch: dict[str, Any]) -> Any:
        self.patches.append(patch)
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "status": patch}


async def test_tracked_is_unknown_while_training_then_an_event_says_why_it_failed(
    training_obj: dict[str, Any],
) -> None:
    """Running: Tracked=Unknown/Tracking. Done with the tracker gone: the job Succeeded, Tracked=False/
    TrackerUnreachable with the trainer's error, status.tracking keeps the run, and the transition is a
    Warning Event."""
    from maestro.reconcile import training as reconcile
    from maestro.reconcile.context import Context
    from maestro.reconcile.store import Store
    from maestro.status.conditions import Cond

    spec = LLMTrainingJobSpec.model_validate(training_obj["spec"])
    job = training.build_job(training_obj, spec, DS_INPUT, DEFAULT)
    job["metadata"]["uid"] = "job-uid"
    job["status"] = {"active": 1, "ready": 1, "startTime": "2026-12-03T06:00:00Z"}
    events: list[Cond] = []

    async def record(_: Any, c: Cond) -> None:
        events.append(c)

    kube = TrainingKube(job, [])
    ctx = Context(kube=kube, settings=DEFAULT, store=Store(), on_transition=record)  # type: ignore[arg-type]
    await reconcile.reconcile(ctx, training_obj)
    running = kube.patches[-1]
    tracked = next(c for c in running["conditions"] if c["type"] == "Tracked")
    assert (tracked["status"], tracked["reason"]) == ("Unknown", "Tracking")
    assert "http://mlflow.infra.svc:5000" in tracked["message"] and "fine-tunes" in tracked["message"]

    summary = {
        "passed": True,
        "model": {
            "uri": "file:///mnt/maestro/output/model",
            "digest": "sha256:" + "c" * 64,
            "format": "peft-lora",
        },
        "tracking": {
            "backend": "mlflow",
            "ok": False,
            "experimentId": "3",
            "runId": "r1",
            "runUrl": "http://mlflow.infra.svc:5000/#/experiments/3/runs/r1",
            "reason": "TrackerUnreachable",
            "error": "log metrics: connection refused",
        },
    }
    job["status"] = {
        "succeeded": 1,
        "startTime": "2026-12-03T06:00:00Z",
        "completionTime": "2026-12-03T06:10:00Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    term = {"exitCode": 0, "message": contract.encode_summary(summary), "finishedAt": "2026-12-03T06:10:00Z"}
    kube.pods = [
        {
            "metadata": {"name": "p"},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "trainer", "state": {"terminated": term}}],
            },
        }
    ]
    done_obj = {**training_obj, "status": running}
    result = await reconcile.reconcile(ctx, done_obj)
    final = kube.patches[-1]
    conds = {c["type"]: c for c in final["conditions"]}
    assert result.phase == "Succeeded" and conds["Ready"]["status"] == "True"
    assert (conds["Tracked"]["status"], conds["Tracked"]["reason"]) == ("False", "TrackerUnreachable")
    assert "connection refused" in conds["Tracked"]["message"]
    assert final["tracking"] == {
        "backend": "mlflow",
        "experimentId": "3",
        "runId": "r1",
        "runUrl": summary["tracking"]["runUrl"],
        "error": "log metrics: connection refused",
    }
    event = next(c for c in events if c.type == "Tracked")
    assert event.status == "False" and event.warning

"""Every kind's `decide`: pure, so each row is spec + observed facts → the plan (children, status,
conditions, requeue). The cluster tests prove the same paths against a real API server; these pin
each branch cheaply and say which one broke."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from maestro.api import LLMDatasetSpec, LLMDeploymentSpec, LLMTrainingJobSpec
from maestro.builders import dataset as dataset_build
from maestro.builders import serving
from maestro.builders import training as train_build
from maestro.builders.meta import ChildRef
from maestro.builders.settings import Settings
from maestro.reconcile import admission, dataset, deployment, policy, training
from maestro.reconcile.common import Plan, dump
from maestro.workers.data import contract as data_contract
from maestro.workers.train import contract as train_contract

pytestmark = pytest.mark.unit

SETTINGS = Settings()
POLL = 30.0
NOW = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)


def ready(plan: Plan) -> dict[str, str]:
    c = next(c for c in plan.conditions if c.type == "Ready")
    return {"status": c.status, "reason": c.reason, "message": c.message}


def conds(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in plan.conditions}


def kinds(plan: Plan) -> dict[str, bool]:
    """kind/name → wanted (True) or must-not-exist (False)."""
    return {f"{r.kind}/{r.name}": m is not None for r, m in plan.children.items()}


def job(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "uid": "job-uid", "annotations": {}},
        "spec": {},
        "status": {"startTime": "2026-01-01T00:00:00Z", "conditions": conditions or [], **status},
    }


COMPLETE = [{"type": "Complete", "status": "True"}]
FAILED = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]


def pod(container: str, code: int, message: str, phase: str = "Failed") -> dict[str, Any]:
    term = {"exitCode": code, "message": message, "finishedAt": "2026-01-01T00:01:00Z"}
    return {
        "metadata": {"name": "p"},
        "status": {"phase": phase, "containerStatuses": [{"name": container, "state": {"terminated": term}}]},
    }


def with_status(obj: dict[str, Any], **status: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["status"] = status
    return out


# -- LLMDataset ---------------------------------------------------------------------------------------


def ds_summary(passed: bool, code: int = 0, gates: list[dict[str, Any]] | None = None) -> str:
    return data_contract.dump_summary(
        {
            "version": "sha256-" + "a" * 64,
            "passed": passed,
            "exitCode": code,
            "records": {"total": 10, "kept": 8},
            "stats": {},
            "gates": gates or [{"name": "minRecords", "passed": passed, "value": 8, "threshold": 5}],
            "artifact": {"uri": "pvc://c/sha256-a", "reportUri": "pvc://c/sha256-a/report.json"},
            "reason": "" if passed else "gates failed",
        }
    )


@dataclass
class DsRow:
    id: str
    facts: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    phase: str = ""
    reason: str = ""
    children: dict[str, bool] | None = None
    requeue: float | None = None
    deletes: int = 0
    #: spec.governance.retentionDays
    retention: int | None = None
    #: status.expiresAt the plan writes (None: absent)
    expires: str | None = None


def _ds_rows() -> list[DsRow]:
    violation = admission.Violation("strict", "allowedLicenses", "license CC0-1.0 is not allowed")
    source_error = {
        "phase": "Failed",
        "observedGeneration": 1,
        "completionTime": "2026-01-01T00:09:30Z",
        "conditions": [{"type": "Ready", "status": "False", "reason": "SourceUnavailable", "message": "dns"}],
    }
    validated = {  # Ready since 00:00 (NOW is 00:10)
        "phase": "Ready",
        "observedGeneration": 1,
        "version": "sha256:" + "a" * 64,
        "artifact": {"uri": "pvc://c/sha256-a"},
        "completionTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok"}],
    }
    finished = {
        "looked": True,
        "job": job(COMPLETE, completionTime="2026-01-01T00:01:00Z"),
        "pods": (pod("validate", 0, ds_summary(True), "Succeeded"),),
    }
    return [
        DsRow("invalid", {"spec": None, "invalid": "bad"}, phase="Failed", reason="InvalidSpec"),
        DsRow("policy-denied", {"violations": (violation,)}, phase="Pending", reason="PolicyDenied"),
        DsRow(
            "no-job: create it",
            {"looked": True},
            phase="Validating",
            reason="ValidationPending",
            children={"Job": True},
        ),
        DsRow(
            "running",
            {"looked": True, "job": job(active=1, ready=1)},
            phase="Validating",
            reason="ValidationRunning",
            children={},
        ),
        DsRow(
            "succeeded",
            {
                "looked": True,
                "job": job(COMPLETE),
                "pods": (pod("validate", 0, ds_summary(True), "Succeeded"),),
            },
            phase="Ready",
            reason="Succeeded",
        ),
        DsRow(
            "gates failed",
            {"looked": True, "job": job(FAILED), "pods": (pod("validate", 3, ds_summary(False, 3)),)},
            phase="Failed",
            reason="GateFailed",
        ),
        DsRow(
            "source error: wait",
            {},
            status=source_error,
            phase="Failed",
            reason="SourceUnavailable",
            requeue=POLL * 2 - 30,
        ),
        DsRow(
            "source error: retry",
            {"now": NOW + dt.timedelta(minutes=5)},
            status=source_error,
            phase="Validating",
            reason="ValidationPending",
            requeue=1.0,
            deletes=1,
        ),
        DsRow("ready, no retention: final", {}, status=validated, phase="Ready", reason="Succeeded"),
        DsRow(
            "ready, retention: look again at expiry",
            {},
            status=validated,
            phase="Ready",
            reason="Succeeded",
            requeue=86400.0 - 600,
            retention=1,
            expires="2026-01-02T00:00:00Z",
        ),
        DsRow(
            "ready, retention expired: validate again",
            {"now": NOW + dt.timedelta(days=1)},
            status=validated,
            phase="Validating",
            reason="RetentionExpired",
            requeue=1.0,
            deletes=1,
            retention=1,
            expires="2026-01-02T00:00:00Z",
        ),
        DsRow(
            "failed, retention: no expiry",
            {},
            status={**validated, "phase": "Failed"},
            phase="Failed",
            reason="Succeeded",
            retention=1,
        ),
        DsRow("succeeded, no retention: no expiry", finished, phase="Ready", reason="Succeeded"),
        DsRow(
            "succeeded, retention: expiry reported at once",
            finished,
            phase="Ready",
            reason="Succeeded",
            requeue=86400.0 - 540,
            retention=1,
            expires="2026-01-02T00:01:00Z",
        ),
        DsRow(
            "apply rejected",
            {"looked": True, "apply_error": "422"},
            phase="Pending",
            reason="ApplyFailed",
            requeue=60.0,
        ),
    ]


@pytest.mark.parametrize("row", _ds_rows(), ids=lambda r: r.id)
def test_dataset_decide(row: DsRow, dataset_obj: dict[str, Any]) -> None:
    obj = with_status(dataset_obj, **row.status) if row.status else dataset_obj
    if row.retention is not None:
        obj = copy.deepcopy(obj)
        obj["spec"]["governance"]["retentionDays"] = row.retention
    spec = LLMDatasetSpec.model_validate(obj["spec"])
    facts = dataset.Facts(**{"spec": spec, "now": NOW, **row.facts})
    plan = dataset.decide(obj, facts, SETTINGS, POLL)
    assert (plan.phase, ready(plan)["reason"]) == (row.phase, row.reason), ready(plan)
    if row.children is not None:
        got = {k.split("/")[0]: v for k, v in kinds(plan).items() if k.startswith("Job/")}
        assert got == row.children
        if got:
            assert f"Job/{dataset_build.job_name(obj, spec)}" in kinds(plan)
        assert plan.force == bool(row.children)
    assert plan.requeue_after == row.requeue
    assert len(plan.delete) == row.deletes
    assert dump(plan.status).get("expiresAt") == row.expires
    if row.deletes:
        assert plan.delete == (ChildRef("batch/v1", "Job", dataset_build.job_name(obj, spec)),)
    if row.phase == "Ready":
        st = dump(plan.status)
        assert st["version"] == "sha256:" + "a" * 64 and st["artifact"]["uri"] == "pvc://c/sha256-a"


def test_dataset_decide_is_pure(dataset_obj: dict[str, Any]) -> None:
    spec = LLMDatasetSpec.model_validate(dataset_obj["spec"])
    before = json.dumps(dataset_obj, sort_keys=True)
    facts = dataset.Facts(spec=spec, looked=True, now=NOW)
    a, b = (dataset.decide(dataset_obj, facts, SETTINGS, POLL) for _ in range(2))
    assert dump(a.status) == dump(b.status) and a.conditions == b.conditions
    assert json.dumps(dataset_obj, sort_keys=True) == before


def test_dataset_retention_expiry_validates_again_and_passes_the_pins(dataset_obj: dict[str, Any]) -> None:
    obj = with_status(
        dataset_obj,
        phase="Ready",
        observedGeneration=1,
        version="sha256:" + "a" * 64,
        completionTime="2026-01-01T00:00:00Z",
        conditions=[{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok"}],
    )
    obj["spec"]["governance"]["retentionDays"] = 2
    spec = LLMDatasetSpec.model_validate(obj["spec"])
    expired = dataset.decide(obj, dataset.Facts(spec=spec, now=NOW + dt.timedelta(days=2)), SETTINGS, POLL)
    assert conds(expired)["Validated"] == ("False", "RetentionExpired")
    assert conds(expired)["Progressing"] == ("True", "RetentionExpired")
    assert "expired at 2026-01-03T00:00:00Z (governance.retentionDays 2)" in ready(expired)["message"]
    # the last good version stays visible while the copy is made again
    assert dump(expired.status)["version"] == "sha256:" + "a" * 64

    again = with_status(obj, **{**dump(expired.status), "observedGeneration": 1})
    pins = ("sha256:" + "b" * 64, "sha256:" + "c" * 64)
    plan = dataset.decide(again, dataset.Facts(spec=spec, looked=True, pinned=pins, now=NOW), SETTINGS, POLL)
    assert (plan.phase, ready(plan)["reason"]) == ("Validating", "ValidationPending")
    (job_manifest,) = [m for r, m in plan.children.items() if r.kind == "Job"]
    assert job_manifest is not None
    env = {
        e["name"]: e.get("value") for e in job_manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[data_contract.ENV_PINNED_VERSIONS] == ",".join(pins)


# -- LLMTrainingJob ----------------------------------------------------------------------------------


def ready_dataset(
    phase: str = "Ready", reason: str = "Succeeded", version: str = "sha256:" + "b" * 64
) -> dict[str, Any]:
    return {
        "kind": "LLMDataset",
        "metadata": {"name": "support-chats", "namespace": "team-a", "generation": 1},
        "spec": {"schema": {"type": "chat"}},
        "status": {
            "phase": phase,
            "observedGeneration": 1,
            "version": version,
            "artifact": {"uri": "pvc://support-chats-data/sha256-b"},
            "conditions": [
                {"type": "Ready", "status": "True" if phase == "Ready" else "False", "reason": reason}
            ],
        },
    }


def tj_summary() -> str:
    return train_contract.encode_summary(
        {
            "passed": True,
            "model": {
                "uri": f"{train_build.OUTPUT_DIR}/model",
                "digest": "sha256:" + "c" * 64,
                "format": train_contract.FORMAT_LORA,
            },
            "metrics": {"steps": 30, "trainLoss": 0.5, "tokensPerSecond": 100.0},
            "evaluation": {"evalLoss": 0.3, "perplexity": 1.4, "passed": True},
        }
    )


@dataclass
class TjRow:
    id: str
    facts: dict[str, Any]
    phase: str
    reason: str
    degraded: bool = False
    creates_job: bool = False
    requeue: float | None = None
    progress: dict[str, Any] | None = None


TJ_ROWS = [
    TjRow("dataset missing", {}, "Waiting", "DatasetNotFound"),
    TjRow(
        "dataset failed for good",
        {"dataset": ready_dataset("Failed", "GateFailed")},
        "Waiting",
        "DatasetFailed",
        True,
    ),
    TjRow(
        "dataset validating",
        {"dataset": ready_dataset("Validating", "ValidationRunning")},
        "Waiting",
        "DatasetNotReady",
    ),
    TjRow(
        "policy denies",
        {
            "dataset": ready_dataset(),
            "violations": (admission.Violation("p", "maxGPUsPerJob", "too many GPUs"),),
        },
        "Waiting",
        "PolicyDenied",
        True,
    ),
    TjRow("ready: create", {"dataset": ready_dataset()}, "Pending", "WaitingForResources", creates_job=True),
    TjRow(
        "apply rejected",
        {"dataset": ready_dataset(), "apply_error": "403"},
        "Waiting",
        "ApplyFailed",
        True,
        requeue=POLL,
    ),
    TjRow(
        "queued", {"dataset": ready_dataset(), "job": job(suspended=True)}, "Pending", "WaitingForResources"
    ),
    TjRow("running", {"dataset": ready_dataset(), "job": job(active=1, ready=1)}, "Running", "Training"),
    TjRow(
        "succeeded",
        {
            "dataset": ready_dataset(),
            "job": job(COMPLETE),
            "pods": (pod("trainer", 0, tj_summary(), "Succeeded"),),
        },
        "Succeeded",
        "Succeeded",
        progress={
            "step": 30,
            "totalSteps": 30,
            "loss": 0.5,
            "tokensPerSecond": 100.0,
            "percent": 100,
            "etaSeconds": 0,
        },
    ),
    TjRow(
        "failed: oom",
        {"dataset": ready_dataset(), "job": job(FAILED), "pods": ()},
        "Failed",
        "TrainingFailed",
        True,
    ),
]


@pytest.mark.parametrize("row", TJ_ROWS, ids=lambda r: r.id)
def test_training_decide(row: TjRow, training_obj: dict[str, Any]) -> None:
    spec = LLMTrainingJobSpec.model_validate(training_obj["spec"])
    plan = training.decide(training_obj, training.Facts(spec=spec, **row.facts), SETTINGS, POLL)
    r = ready(plan)
    assert (plan.phase, r["reason"]) == (row.phase, row.reason), r
    assert conds(plan)["Degraded"][0] == ("True" if row.degraded else "False")
    wants_job = any(ref.kind == "Job" for ref in plan.children)
    assert wants_job == row.creates_job
    assert plan.force == row.creates_job and bool(plan.exclusive) == row.creates_job
    assert plan.requeue_after == row.requeue
    st = dump(plan.status)
    if row.creates_job:
        assert st["jobName"] == train_build.job_name(training_obj, spec)
        assert st["lineage"]["datasetVersion"] == "sha256:" + "b" * 64  # from the Job it creates
    if row.progress is not None:
        assert st["progress"] == row.progress
        assert st["model"] == {
            "uri": f"pvc://{train_build.output_claim(training_obj, spec)}/model",
            "digest": "sha256:" + "c" * 64,
            "format": "adapter",
        }


def test_training_decide_evaluating_and_terminal(training_obj: dict[str, Any]) -> None:
    spec = LLMTrainingJobSpec.model_validate(training_obj["spec"])
    evaluating = with_status(training_obj, progress={"stage": "evaluating", "step": 30})
    plan = training.decide(
        evaluating,
        training.Facts(spec=spec, dataset=ready_dataset(), job=job(active=1, ready=1)),
        SETTINGS,
        POLL,
    )
    assert (plan.phase, ready(plan)["reason"]) == ("Evaluating", "Evaluating")
    assert dump(plan.status)["progress"] == {"stage": "evaluating", "step": 30}  # the endpoint's report kept

    name = train_build.job_name(training_obj, spec)
    done = with_status(
        training_obj,
        phase="Succeeded",
        jobName=name,
        message="trained",
        conditions=[{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "trained"}],
    )
    plan = training.decide(done, training.Facts(spec=spec), SETTINGS, POLL)
    assert plan.phase == "Succeeded" and not plan.children and plan.message == "trained"
    assert conds(plan) == {"Ready": ("True", "Succeeded")}


def test_training_decide_invalid(training_obj: dict[str, Any]) -> None:
    plan = training.decide(training_obj, training.Facts(spec=None, invalid="bad"), SETTINGS, POLL)
    assert (plan.phase, ready(plan)["reason"]) == ("Failed", "InvalidSpec") and not plan.children


# -- LLMDeployment -----------------------------------------------------------------------------------

MODEL = serving.ResolvedModel(
    uri="pvc://quickstart-inputs/models/base",
    served_name="support-bot-base",
    digest="sha256:" + "d" * 64,
    adapters={"support-bot": "pvc://support-lora-output/model"},
    adapter_ranks={"support-bot": 16},
    adapter_digests={"support-bot": "sha256:" + "d" * 64},
)
POLICY = {
    "apiVersion": "llmops.dev/v1alpha1",
    "kind": "LLMPolicy",
    "metadata": {"name": "quickstart", "namespace": "team-a"},
    "spec": {},
}


def serving_deployment(ready_replicas: int, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "support-bot", "generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": ready_replicas,
            "availableReplicas": ready_replicas,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        },
    }


@dataclass
class DepRow:
    id: str
    facts: dict[str, Any]
    phase: str
    reason: str
    applies: bool
    policy: bool = False


DEP_ROWS = [
    DepRow(
        "model not ready",
        {"model_blocked": deployment.Blocked("TrainingJobNotSucceeded", "not yet")},
        "Waiting",
        "TrainingJobNotSucceeded",
        False,
    ),
    DepRow("policy missing", {"model": MODEL, "missing_policy": "gone"}, "Waiting", "PolicyNotFound", False),
    DepRow(
        "two policies",
        {"model": MODEL, "policies": (POLICY, {**POLICY, "metadata": {"name": "b"}})},
        "Failed",
        "ConflictingPolicies",
        False,
    ),
    DepRow("first apply", {"model": MODEL, "policies": (POLICY,)}, "Pending", "Reconciling", True),
    DepRow("apply rejected", {"model": MODEL, "apply_error": "422 Invalid"}, "Waiting", "ApplyFailed", False),
    DepRow(
        "serving",
        {"model": MODEL, "policies": (POLICY,), "deployment": serving_deployment(1)},
        "Ready",
        "Available",
        True,
        True,
    ),
    DepRow(
        "serving, next rollout blocked",
        {
            "model": MODEL,
            "deployment": serving_deployment(1),
            "model_blocked": deployment.Blocked("TrainingJobFailed", "the new job failed"),
        },
        "Degraded",
        "TrainingJobFailed",
        False,
    ),
]


@pytest.mark.parametrize("row", DEP_ROWS, ids=lambda r: r.id)
def test_deployment_decide(row: DepRow, deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    plan = deployment.decide(deployment_obj, deployment.Facts(spec=spec, **row.facts), SETTINGS, POLL)
    assert (plan.phase, ready(plan)["reason"]) == (row.phase, row.reason), ready(plan)
    assert bool(plan.children) == row.applies
    st = dump(plan.status)
    assert ("policy" in st) == row.policy
    if row.applies:
        want = kinds(plan)
        assert want["Deployment/support-bot"] and want["ConfigMap/support-bot-guard"]
        # optional children the spec does not want are named, so a spec edit removes them
        assert want["PodDisruptionBudget/support-bot"] is False
        assert want["Service/support-bot-metrics"]  # scrape targets, with or without a ServiceMonitor
        assert "ScaledObject/support-bot" not in want  # no KEDA in this cluster: not managed at all
        assert plan.force == ("deployment" not in row.facts)
    if row.policy:
        assert st["policy"]["name"] == "quickstart"
        assert st["adapters"] == [
            {
                "name": "support-bot",
                "uri": "pvc://support-lora-output/model",
                "digest": "sha256:" + "d" * 64,
                "ready": True,
            }
        ]


def test_deployment_children_follow_capabilities(deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(
        {**deployment_obj["spec"], "monitoring": {"enabled": True, "serviceMonitor": True}}
    )
    facts = deployment.Facts(
        spec=spec, model=MODEL, caps=serving.Capabilities(keda=True, service_monitor=True)
    )
    want = kinds(deployment.decide(deployment_obj, facts, SETTINGS, POLL))
    assert want["ServiceMonitor/support-bot"] and want["Service/support-bot-metrics"]
    assert want["ScaledObject/support-bot"] is False  # KEDA exists, autoscaling is off: must not exist
    refs = deployment.decide(deployment_obj, facts, SETTINGS, POLL).children
    assert all(isinstance(r, ChildRef) for r in refs)


# -- LLMPolicy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "phase", "reason"),
    [
        ({}, "Ready", "Enforced"),
        ({"request": {"blockedPatterns": ["(unclosed"]}}, "Invalid", "InvalidPattern"),
        ({"request": {"rateLimits": {"requestsPerMinute": -1}}}, "Invalid", "InvalidSpec"),
    ],
)
def test_policy_decide(policy_obj: dict[str, Any], spec: dict[str, Any], phase: str, reason: str) -> None:
    governs = [{"kind": "LLMDeployment", "name": "support-bot"}]
    plan = policy.decide({**policy_obj, "spec": spec}, governs)
    assert (plan.phase, ready(plan)["reason"]) == (phase, reason)
    if phase == "Ready":
        st = dump(plan.status)
        assert st["enforcedCount"] == 1 and st["enforcedOn"] == governs and st["digest"]


def test_every_reason_is_exactly_one_of_retriable_permanent_settled() -> None:
    """docs/architecture.md's error table rests on this: each reason says whether waiting helps."""
    from maestro.api.conditions import PERMANENT, RETRIABLE, SETTLED, Reason

    for reason in Reason:
        assert [reason in RETRIABLE, reason in PERMANENT, reason in SETTLED].count(True) == 1, reason


@pytest.mark.parametrize(
    ("monitoring", "claim", "owned"),
    [
        ({}, "support-bot-feedback", True),
        ({"feedbackStorage": {"claimName": "team-feedback"}}, "team-feedback", False),
        ({"feedback": False}, None, False),
    ],
)
def test_feedback_goes_to_a_claim(
    deployment_obj: dict[str, Any], monitoring: dict[str, Any], claim: str | None, owned: bool
) -> None:
    """Feedback is durable (a claim, not an emptyDir); switching it off never deletes the claim."""
    spec = LLMDeploymentSpec.model_validate(
        {**deployment_obj["spec"], "monitoring": {"enabled": True, **monitoring}}
    )
    children = serving.build_children(deployment_obj, spec, MODEL, SETTINGS, serving.Capabilities(), {})
    pvcs = {r.name: m for r, m in children.items() if r.kind == "PersistentVolumeClaim"}
    assert pvcs == ({claim: pvcs[claim]} if owned else {})  # never mapped to None: user data stays
    if owned:
        assert pvcs[claim]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    dep = next(m for r, m in children.items() if r.kind == "Deployment")
    assert dep is not None
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "feedback")
    assert vol.get("persistentVolumeClaim", {}).get("claimName") == claim


@pytest.mark.parametrize(("uri", "offline"), [("pvc://inputs/models/base", True), ("hf://org/model", False)])
def test_a_trainer_whose_model_is_not_on_a_hub_never_calls_one(
    training_obj: dict[str, Any], uri: str, offline: bool
) -> None:
    spec = LLMTrainingJobSpec.model_validate({**training_obj["spec"], "baseModel": {"uri": uri}})
    inp = train_build.DatasetInput(claim="c", sub_path="v", version="sha256:x", schema_type="chat")
    job = train_build.build_job(training_obj, spec, inp, SETTINGS)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env.get("HF_HUB_OFFLINE") == "1") == offline


def test_a_job_whose_pods_finished_is_not_back_to_waiting_for_pods(training_obj: dict[str, Any]) -> None:
    """Between the trainer's exit and the Job's Complete condition (SuccessCriteriaMet), the job
    stays where it was (Evaluating), instead of flickering to Pending/WaitingForResources."""
    spec = LLMTrainingJobSpec.model_validate(training_obj["spec"])
    finishing = job([{"type": "SuccessCriteriaMet", "status": "True"}], active=0, ready=0, succeeded=1)
    evaluating = with_status(training_obj, progress={"stage": "evaluating", "step": 30})
    plan = training.decide(
        evaluating, training.Facts(spec=spec, dataset=ready_dataset(), job=finishing), SETTINGS, POLL
    )
    assert (plan.phase, ready(plan)["reason"]) == ("Evaluating", "Evaluating")


def test_unchanged_inputs_reuse_the_children_last_built(
    deployment_obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status-only event or a resync decides again; with the same inputs it reuses the manifests last
    applied (no build, no fingerprint), and any input that changes them changes the key."""
    from maestro.reconcile.context import Built

    obj = {**deployment_obj, "metadata": {**deployment_obj["metadata"], "uid": "u-1", "generation": 3}}
    policy = {**POLICY, "metadata": {**POLICY["metadata"], "uid": "p-1", "generation": 1}}
    spec = LLMDeploymentSpec.model_validate(obj["spec"])
    facts = deployment.Facts(spec=spec, model=MODEL, policies=(policy,), deployment=serving_deployment(1))
    first = deployment.decide(obj, facts, SETTINGS, POLL)
    assert first.children and first.children_key is not None
    built = Built(first.children_key, first.children)

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("children rebuilt although nothing they are built from changed")

    monkeypatch.setattr(serving, "build_children", no_build)
    again = deployment.decide(obj, replace(facts, built=built), SETTINGS, POLL)
    assert again.children is first.children and again.children_key == first.children_key
    monkeypatch.undo()

    bumped = {**obj, "metadata": {**obj["metadata"], "generation": 4}}
    new_policy = {**policy, "metadata": {**policy["metadata"], "generation": 2}}
    new_model = replace(MODEL, digest="sha256:" + "e" * 64)
    for o, f in (
        (bumped, facts),
        (obj, replace(facts, policies=(new_policy,))),
        (obj, replace(facts, model=new_model)),
        (obj, replace(facts, caps=serving.Capabilities(keda=True))),
    ):
        plan = deployment.decide(o, replace(f, built=built), SETTINGS, POLL)
        assert plan.children_key != built.key and plan.children is not built.children
    other = deployment.decide(obj, replace(facts, built=built), Settings(), POLL)
    assert other.children is not built.children  # other settings: other manifests

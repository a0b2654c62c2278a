"""reconcile.training before its Job exists: how a dataset that is not Ready shows on the job."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.reconcile import training
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store

pytestmark = pytest.mark.unit


class NoJobKube:
    """The API as the job sees it before it starts: no Job; status patches are recorded."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def get(self, *_: Any) -> None:
        return None

    async def patch_status(self, api: str, kind: str, name: str, ns: str, patch: dict[str, Any]) -> Any:
        self.patches.append(patch)
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "status": patch}


def failed_dataset(reason: str, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "kind": "LLMDataset",
        "metadata": {"name": "support-chats", "namespace": "team-a", "generation": generation},
        "status": {
            "phase": "Failed",
            "observedGeneration": observed,
            "message": "maxPIIRatio 0.2 > 0.1",
            "conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}],
        },
    }


async def conditions_after(training_obj: dict[str, Any], ds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    store = Store()
    store.put(ds)
    kube = NoJobKube()
    ctx = Context(kube=kube, settings=None, store=store, on_transition=_ignore)  # type: ignore[arg-type]
    result = await training.reconcile(ctx, training_obj)
    assert result.phase == "Waiting"
    return {c["type"]: c for c in kube.patches[-1]["conditions"]}


async def _ignore(*_: Any) -> None:
    return None


async def test_a_permanently_failed_dataset_degrades_the_job(training_obj: dict[str, Any]) -> None:
    conds = await conditions_after(training_obj, failed_dataset("GateFailed"))
    assert conds["DatasetReady"]["reason"] == "DatasetFailed"
    assert "GateFailed" in conds["DatasetReady"]["message"]
    assert conds["Ready"]["reason"] == "DatasetFailed" and conds["Ready"]["status"] == "False"
    assert conds["Degraded"]["status"] == "True" and conds["Progressing"]["status"] == "False"


@pytest.mark.parametrize(
    "ds",
    [
        failed_dataset("SourceUnavailable"),  # retried by the dataset controller
        failed_dataset("GateFailed", generation=3, observed=2),  # edited; not yet re-validated
    ],
)
async def test_a_dataset_that_may_still_become_ready_keeps_the_job_waiting(
    training_obj: dict[str, Any], ds: dict[str, Any]
) -> None:
    conds = await conditions_after(training_obj, ds)
    assert conds["Ready"]["reason"] == "DatasetNotReady" and conds["Degraded"]["status"] == "False"


class RejectingKube(NoJobKube):
    """No Job yet, and the API server refuses the training Job for good (422)."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        from maestro.k8s.errors import Invalid

        if manifest["kind"] == "Job":
            raise Invalid(
                422, "Invalid", 'Job.batch is invalid: spec.template.spec.containers[0]: Invalid value: "x"'
            )
        return manifest


async def test_a_training_job_the_api_server_rejects_is_apply_failed(training_obj: dict[str, Any]) -> None:
    from maestro.builders.settings import Settings

    ds = {
        "kind": "LLMDataset",
        "metadata": {"name": "support-chats", "namespace": "team-a", "generation": 1},
        "spec": {"schema": {"type": "chat"}},
        "status": {
            "phase": "Ready",
            "observedGeneration": 1,
            "version": "sha256:" + "a" * 64,
            "artifact": {"uri": "pvc://support-chats-data/datasets/sha256-" + "a" * 64 + "/"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "m"}],
        },
    }
    store = Store()
    store.put(ds)
    kube = RejectingKube()
    ctx = Context(kube=kube, settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    result = await training.reconcile(ctx, training_obj)
    conds = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert (
        conds["Ready"]["reason"] == "ApplyFailed"
        and "containers[0]: Invalid value" in conds["Ready"]["message"]
    )
    assert conds["Degraded"]["status"] == "True" and conds["DatasetReady"]["status"] == "True"
    assert result.phase == "Waiting" and result.requeue_after  # not terminal: tried again


class RunningJobKube(NoJobKube):
    """The trainer's Job exists and its pod runs."""

    async def get(self, api: str, kind: str, name: str, ns: str) -> Any:
        if kind != "Job":
            return None
        return {
            "metadata": {"name": name, "namespace": ns, "annotations": {}},
            "spec": {},
            "status": {"active": 1, "ready": 1, "startTime": "2026-12-03T06:00:00Z"},
        }


@pytest.mark.parametrize(("stage", "phase", "reason"), [
    ("training", "Running", "Training"),
    ("evaluating", "Evaluating", "Evaluating"),
])  # fmt: skip
async def test_the_trainers_reported_stage_sets_running_or_evaluating(
    training_obj: dict[str, Any], stage: str, phase: str, reason: str
) -> None:
    """The trainer reports `phase: evaluating` to the progress endpoint once the model is written;
    the job then reads Evaluating (phase and reason) instead of Training."""
    obj = {**training_obj, "status": {"progress": {"step": 30, "totalSteps": 30, "stage": stage}}}
    kube = RunningJobKube()
    ctx = Context(kube=kube, settings=None, store=Store(), on_transition=_ignore)  # type: ignore[arg-type]
    result = await training.reconcile(ctx, obj)
    ready = next(c for c in kube.patches[-1]["conditions"] if c["type"] == "Ready")
    assert result.phase == phase and kube.patches[-1]["phase"] == phase
    assert ready["reason"] == reason and ready["status"] == "False"

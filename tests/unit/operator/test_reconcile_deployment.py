"""reconcile.deployment.resolve_model: what the serving builder is told about the model to serve."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.api import LLMDeploymentSpec
from maestro.k8s.errors import Invalid
from maestro.reconcile.context import Context
from maestro.reconcile.deployment import resolve_model
from maestro.reconcile.store import Store

pytestmark = pytest.mark.unit


def succeeded_job(name: str, lora: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"baseModel": {"uri": "hf://org/base"}, "method": "lora"}
    if lora is not None:
        spec["hyperparameters"] = {"lora": lora}
    return {
        "kind": "LLMTrainingJob",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
        "spec": spec,
        "status": {"phase": "Succeeded", "model": {"uri": f"pvc://{name}-model/model", "format": "adapter"}},
    }


def test_adapter_ranks_come_from_the_training_jobs(deployment_obj: dict[str, Any]) -> None:
    store = Store()
    store.put(succeeded_job("support-lora", {"r": 64}))
    store.put(succeeded_job("tone", None))  # unset: the API default (16)
    raw = {
        **deployment_obj["spec"],
        "adapters": [
            {"name": "tone", "trainingJobRef": {"name": "tone"}},
            {"name": "byuri", "uri": "pvc://elsewhere/adapter"},
        ],
    }
    obj = {**deployment_obj, "spec": raw}
    spec = LLMDeploymentSpec.model_validate(raw)
    ctx = Context(kube=None, settings=None, store=store)  # type: ignore[arg-type]
    model, _, blocked = resolve_model(ctx, obj, spec, need_eval=False)
    assert blocked is None and model is not None
    assert model.served_name == "support-bot-base"
    assert model.adapter_ranks == {"support-bot": 64, "tone": 16}  # no rank for the uri adapter


class NothingYetKube:
    """The API before any serving child exists (the model's claim does): applies and status patches are
    recorded."""

    def __init__(self, pods: list[dict[str, Any]] | None = None, reject: str = "") -> None:
        self.patches: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.pods = pods or []
        self.reject = reject  # the kind the API server refuses with 422

    async def get(self, api: str, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        if kind == "PersistentVolumeClaim":
            return {"metadata": {"name": name, "namespace": ns}}
        # what was applied exists from then on (the Deployment controller has not acted on it yet)
        return next((m for m in self.applied if m["kind"] == kind and m["metadata"]["name"] == name), None)

    async def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return self.pods

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == self.reject:
            raise Invalid(422, "Invalid", f'{manifest["kind"]} is invalid: spec.x: Invalid value: "y"')
        self.applied.append(manifest)
        return manifest

    async def patch_status(self, api: str, kind: str, name: str, ns: str, patch: dict[str, Any]) -> Any:
        self.patches.append(patch)
        return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "status": patch}


async def _ignore(*_: Any) -> None:
    return None


def policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMPolicy",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
        "spec": {},  # no selector: governs everything in the namespace
    }


async def test_two_policies_selecting_one_deployment_conflict(deployment_obj: dict[str, Any]) -> None:
    from maestro.builders.settings import Settings
    from maestro.reconcile import deployment

    store = Store()
    store.put(succeeded_job("support-lora", {"r": 16}))
    store.put(policy("strict"))
    store.put(policy("lenient"))
    obj = {**deployment_obj, "spec": {k: v for k, v in deployment_obj["spec"].items() if k != "policyRef"}}
    kube = NothingYetKube()
    ctx = Context(kube=kube, settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    result = await deployment.reconcile(ctx, obj)
    conds = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ConflictingPolicies"
    assert "'lenient'" in conds["Ready"]["message"] and "'strict'" in conds["Ready"]["message"]
    assert conds["PolicyAdmitted"]["reason"] == "ConflictingPolicies"
    assert conds["Degraded"]["status"] == "True" and result.phase == "Failed"  # permanent: a spec must change
    assert kube.applied == []  # neither policy is silently enforced

    # naming one with policyRef resolves it
    store.put(policy("strict"))
    kube2 = NothingYetKube()
    ctx2 = Context(kube=kube2, settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    await deployment.reconcile(ctx2, {**obj, "spec": {**obj["spec"], "policyRef": {"name": "strict"}}})
    conds2 = {c["type"]: c for c in kube2.patches[-1]["conditions"]}
    assert conds2["PolicyAdmitted"]["status"] == "True" and "strict" in conds2["PolicyAdmitted"]["message"]
    assert kube2.applied, conds2


def serving_pod(vllm_ready: bool, guard_ready: bool) -> dict[str, Any]:
    def status(name: str, ready: bool) -> dict[str, Any]:
        return {"name": name, "ready": ready, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}

    return {
        "metadata": {"name": "support-bot-abc"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                status("vllm", vllm_ready),
                status("guard", guard_ready),
                status("monitor", True),
            ],
        },
    }


@pytest.mark.parametrize(("vllm_ready", "reason"), [(True, "GuardUnhealthy"), (False, "RolloutInProgress")])
async def test_a_guard_that_is_not_ready_next_to_a_ready_vllm_is_guard_unhealthy(
    deployment_obj: dict[str, Any], vllm_ready: bool, reason: str
) -> None:
    from maestro.builders.settings import Settings
    from maestro.reconcile import deployment

    store = Store()
    store.put(succeeded_job("support-lora", {"r": 16}))
    store.put(policy("quickstart"))
    kube = NothingYetKube(pods=[serving_pod(vllm_ready=vllm_ready, guard_ready=False)])
    ctx = Context(kube=kube, settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    await deployment.reconcile(ctx, deployment_obj)  # creates the children
    await deployment.reconcile(ctx, deployment_obj)  # the watch event of the new Deployment
    ready = next(c for c in kube.patches[-1]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason, ready
    if reason == "GuardUnhealthy":
        assert "support-bot-abc" in ready["message"] and "guard" in ready["message"]


def test_the_container_names_status_reads_are_the_ones_the_builder_writes(
    deployment_obj: dict[str, Any],
) -> None:
    from maestro.builders import serving
    from maestro.builders.settings import Settings
    from maestro.status import deployments

    model = serving.ResolvedModel(uri="hf://org/m", served_name="m")
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    dep = serving.build_deployment(deployment_obj, spec, model, Settings())
    names = {c["name"] for c in dep["spec"]["template"]["spec"]["containers"]}
    assert {deployments.VLLM_CONTAINER, deployments.GUARD_CONTAINER} <= names


async def test_a_child_the_api_server_rejects_is_apply_failed(deployment_obj: dict[str, Any]) -> None:
    from maestro.builders.settings import Settings
    from maestro.reconcile import deployment

    store = Store()
    store.put(succeeded_job("support-lora", {"r": 16}))
    store.put(policy("quickstart"))
    kube = NothingYetKube(reject="Deployment")
    ctx = Context(kube=kube, settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    await deployment.reconcile(ctx, deployment_obj)
    conds = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ApplyFailed"
    assert "Deployment 'support-bot'" in conds["Ready"]["message"]
    assert 'spec.x: Invalid value: "y"' in conds["Ready"]["message"]  # the API server's own words
    assert conds["Degraded"]["status"] == "True"
    assert deployment_obj["metadata"]["uid"] not in ctx.applied  # tried again on the next reconcile


async def test_a_transient_apply_error_is_retried_not_reported(deployment_obj: dict[str, Any]) -> None:
    from maestro.builders.settings import Settings
    from maestro.k8s.errors import ApiError
    from maestro.reconcile import deployment

    class Flaky(NothingYetKube):
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            raise ApiError(503, "ServiceUnavailable", "etcd leader changed")

    store = Store()
    store.put(succeeded_job("support-lora", {"r": 16}))
    store.put(policy("quickstart"))
    ctx = Context(kube=Flaky(), settings=Settings(), store=store, on_transition=_ignore)  # type: ignore[arg-type]
    with pytest.raises(ApiError):  # the work queue retries it with backoff
        await deployment.reconcile(ctx, deployment_obj)

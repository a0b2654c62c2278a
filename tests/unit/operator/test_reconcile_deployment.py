"""reconcile.deployment.resolve_model: what the serving builder is told about the model to serve."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.api import LLMDeploymentSpec
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

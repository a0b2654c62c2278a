"""Controller-layer pieces that need no cluster: webhook verdicts, settings, the slim child cache."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from maestro.controllers import handlers, state, webhook
from maestro.controllers.config import OperatorConfig
from maestro.controllers.handlers import slim_deployment
from maestro.k8s import rbac
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store

pytestmark = pytest.mark.unit


def test_webhook_names_the_field_and_the_rule(training_obj: dict[str, Any]) -> None:
    bad = {**training_obj, "spec": {**training_obj["spec"], "method": "qlora"}}
    problem = webhook.validate(bad)
    assert problem is not None and "qlora" in problem and "resources.gpus" in problem

    store = Store()
    store.put(
        {
            "kind": "LLMPolicy",
            "metadata": {"name": "cap", "namespace": "team-a"},
            "spec": {"admission": {"maxGPUsPerJob": 0}},
        }
    )
    big = {**training_obj, "spec": {**training_obj["spec"], "resources": {"gpus": 1}}}
    problem = webhook.validate(big, store)
    assert problem is not None and 'LLMPolicy "cap" rule admission.maxGPUsPerJob' in problem
    assert (
        webhook.validate({**training_obj, "spec": {**training_obj["spec"], "resources": {"gpus": 0}}}, store)
        is None
    )


async def test_handlers_find_the_runtime_in_kopfs_memo() -> None:
    """The handlers keep no module state: the runtime travels in the memo Kopf hands every handler."""
    import kopf

    memo = kopf.Memo()
    assert state.of(memo) is None
    rt = state.Runtime(
        config=OperatorConfig(),
        ctx=Context(kube=None, settings=None, store=Store()),  # type: ignore[arg-type]
    )
    state.attach(memo, rt)
    per_object = copy.copy(memo)  # what Kopf hands a resource handler
    assert state.of(per_object) is rt
    await handlers._on_maestro_event("LLMPolicy")(
        event={
            "type": "ADDED",
            "object": {"metadata": {"name": "p", "namespace": "n", "resourceVersion": "1"}},
        },
        memo=per_object,
    )
    assert rt.ctx.store.get("LLMPolicy", "n", "p") is not None and len(rt.queue) == 1


def test_config_from_env() -> None:
    cfg = OperatorConfig.from_env(
        {
            "MAESTRO_WEBHOOK": "off",
            "MAESTRO_WORKERS": "4",
            "MAESTRO_NAMESPACES": "a,b",
            "MAESTRO_JOB_NODE_SELECTOR": '{"pool": "train"}',
            "MAESTRO_VLLM_IMAGE": "vllm/vllm-openai:v9",
        }
    )
    assert not cfg.webhook and cfg.workers == 4 and cfg.namespaces == ("a", "b")
    assert cfg.settings.jobs.node_selector == {"pool": "train"}
    assert cfg.settings.vllm_image == "vllm/vllm-openai:v9"
    with pytest.raises(SystemExit, match="MAESTRO_WORKERS"):
        OperatorConfig.from_env({"MAESTRO_WORKERS": "many"})
    with pytest.raises(SystemExit, match="MAESTRO_SERVING_NODE_SELECTOR must be JSON"):
        OperatorConfig.from_env({"MAESTRO_SERVING_NODE_SELECTOR": "pool: serve"})


def test_slim_deployment_keeps_what_status_reads() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "generation": 3, "managedFields": [{"x": 1}]},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": []}},
        },
        "status": {"readyReplicas": 2},
    }
    slim = slim_deployment(dep)
    assert slim["spec"] == {"replicas": 2, "template": {"metadata": {"annotations": {"a": "b"}}}}
    assert slim["status"] == {"readyReplicas": 2} and "managedFields" not in slim["metadata"]


def test_rbac_covers_every_kind_the_client_writes() -> None:
    from maestro.k8s.resources import TYPES

    granted = {(g, r) for rule in rbac.RULES for g in rule["apiGroups"] for r in rule["resources"]}
    written = {
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "ServiceMonitor",
        "Event",
    }
    for (_, kind), rt in TYPES.items():
        if kind in written:
            assert (rt.group, rt.plural) in granted, f"{kind} is written but not granted"
    assert not any("secrets" in rule["resources"] for rule in rbac.RULES)


async def test_kopf_never_manages_a_mutating_webhook_configuration() -> None:
    """The ClusterRole grants nothing on mutatingwebhookconfigurations; Kopf must not need it."""
    import asyncio
    import inspect

    import kopf
    from kopf._core.engines import admission as kopf_admission
    from kopf._core.intents.causes import WebhookType
    from kopf._core.intents.registries import OperatorRegistry
    from kopf._core.reactor import running

    assert not any(
        "mutatingwebhookconfigurations" in rule["resources"] or "*" in rule["resources"]
        for rule in rbac.RULES
    )
    # Kopf spawns its managers through the module attribute, which controllers.webhook replaced
    assert running.admission is kopf_admission
    assert "admission.mutating_configuration_manager(" in inspect.getsource(running.spawn_tasks)
    assert kopf_admission.mutating_configuration_manager is webhook._no_mutating_configuration
    registry: OperatorRegistry = kopf.get_default_registry()
    handlers = registry._webhooks.get_all_handlers()
    assert handlers and all(h.reason == WebhookType.VALIDATING for h in handlers)
    # ... and the stand-in only idles (Kopf's unmanaged behaviour), whatever it is handed
    task = asyncio.ensure_future(
        kopf_admission.mutating_configuration_manager(
            registry=registry, settings=None, insights=None, container=None
        )
    )
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()

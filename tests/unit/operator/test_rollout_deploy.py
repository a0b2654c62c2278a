"""A canary through LLMDeployment's decide(): what vLLM loads, how the guard splits, what status keeps.

The property that matters on a cluster: a canary's steps, its promotion's weight change and a
rollback are guard-config changes or one rolling update — never a restart of the stable's traffic
while the canary is analysed.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest

from maestro.api import LLMDeploymentSpec
from maestro.api.experiments import VariantSignals
from maestro.builders import serving
from maestro.builders.meta import ChildRef
from maestro.builders.settings import Settings
from maestro.reconcile import deployment
from maestro.reconcile import rollout as r
from maestro.reconcile.common import Plan, dump

pytestmark = pytest.mark.unit

SETTINGS = Settings()
POLL = 30.0
T0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.UTC)
OLD = "pvc://support-lora-v1/model"
OLD_DIGEST = "sha256:" + "a" * 64
NEW_DIGEST = "sha256:" + "d" * 64
MODEL = serving.ResolvedModel(
    uri="pvc://quickstart-inputs/models/base",
    served_name="support-bot-base",
    digest=NEW_DIGEST,
    adapters={"support-bot": "pvc://support-lora-output/model"},
    adapter_ranks={"support-bot": 16},
    adapter_digests={"support-bot": NEW_DIGEST},
)
STABLE = {
    "revision": 1,
    "state": "Stable",
    "reason": "Initial",
    "modelUri": OLD,
    "modelDigest": OLD_DIGEST,
    "adapter": True,
    "loraRank": 8,
    "baseModel": "pvc://quickstart-inputs/models/base",
    "trainingJob": "support-lora-v1",
    "image": SETTINGS.vllm_image,
}


def canary_obj(deployment_obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(deployment_obj)
    obj["metadata"]["generation"] = 2
    obj["spec"]["rollout"] = {"strategy": "Canary", "steps": [10, 50], "stepSeconds": 60}
    obj["status"] = {"history": [STABLE]}
    return obj


def facts_for(obj: dict[str, Any], **kw: Any) -> deployment.Facts:
    return deployment.Facts(
        spec=LLMDeploymentSpec.model_validate(obj["spec"]),
        model=MODEL,
        lineage={"trainingJob": "support-lora"},
        now=kw.pop("now", T0),
        **kw,
    )


def then(obj: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The object as the next reconcile sees it: the plan's status written."""
    return {**obj, "status": dump(plan.status)}


def vllm_args(plan: Plan) -> list[str]:
    dep = plan.children[ChildRef("apps/v1", "Deployment", "support-bot")]
    assert dep is not None
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")
    return list(c["args"])


def template(plan: Plan) -> Any:
    dep = plan.children[ChildRef("apps/v1", "Deployment", "support-bot")]
    assert dep is not None
    return dep["spec"]["template"]


def guard_doc(plan: Plan) -> dict[str, Any]:
    cm = plan.children[ChildRef("v1", "ConfigMap", "support-bot-guard")]
    assert cm is not None
    return dict(json.loads(cm["data"]["policy.json"]))


def lora_modules(plan: Plan) -> dict[str, str]:
    args = vllm_args(plan)
    i = args.index("--lora-modules") + 1
    out = {}
    while i < len(args) and not args[i].startswith("--"):
        name, path = args[i].split("=", 1)
        out[name] = path
        i += 1
    return out


def healthy(n: float) -> dict[str, VariantSignals]:
    return {r.STABLE: VariantSignals(requests=9 * n), r.CANARY: VariantSignals(requests=n)}


def test_a_new_adapter_starts_as_a_canary_steps_without_restart_and_is_promoted(
    deployment_obj: dict[str, Any],
) -> None:
    obj = canary_obj(deployment_obj)
    plan = deployment.decide(obj, facts_for(obj), SETTINGS, POLL)
    st = dump(plan.status)
    assert st["canary"]["revision"] == 2 and st["canary"]["weight"] == 10
    assert [(h["revision"], h["state"]) for h in st["history"]] == [(1, "Stable"), (2, "Canary")]
    assert st["history"][1]["modelDigest"] == NEW_DIGEST and st["history"][1]["trainingJob"] == "support-lora"
    rolled = next(c for c in plan.conditions if c.type == "RolledOut")
    assert (rolled.status, rolled.reason) == ("False", "CanaryProgressing")
    assert [e.reason for e in plan.events] == ["CanaryStarted"]
    assert plan.requeue_after is not None and plan.requeue_after <= 60
    # one vLLM loads both adapters; the guard sends 10% of callers to the canary's
    mods = lora_modules(plan)
    assert (
        set(mods) == {"support-bot", "support-bot-canary"}
        and mods["support-bot"] != mods["support-bot-canary"]
    )
    assert "support-lora-v1" in mods["support-bot"] and "support-lora-output" in mods["support-bot-canary"]
    doc = guard_doc(plan)
    assert [(v["name"], v["model"], v["weight"]) for v in doc["variants"]] == [
        ("stable", "support-bot", 90),
        ("canary", "support-bot-canary", 10),
    ]
    # the served model in status is the stable's (it answers 90%)
    assert st["model"]["digest"] == OLD_DIGEST

    # next step: only the guard's config changes, the pod template does not (no vLLM restart)
    obj2 = then(obj, plan)
    step2 = deployment.decide(
        obj2, facts_for(obj2, now=T0 + dt.timedelta(seconds=61), canary_signals=healthy(80)), SETTINGS, POLL
    )
    assert dump(step2.status)["canary"]["weight"] == 50
    assert [e.reason for e in step2.events] == ["CanaryStepAdvanced"]
    assert template(step2) == template(plan)
    assert [v["weight"] for v in guard_doc(step2)["variants"]] == [50, 50]

    obj3 = then(obj2, step2)
    done = deployment.decide(
        obj3, facts_for(obj3, now=T0 + dt.timedelta(seconds=130), canary_signals=healthy(400)), SETTINGS, POLL
    )
    st3 = dump(done.status)
    assert "canary" not in st3
    assert [(h["revision"], h["state"]) for h in st3["history"]] == [(1, "Superseded"), (2, "Stable")]
    assert [e.reason for e in done.events] == ["CanaryPromoted"]
    assert lora_modules(done) == {"support-bot": lora_modules(plan)["support-bot-canary"]}
    assert "variants" not in guard_doc(done)
    rolled = next(c for c in done.conditions if c.type == "RolledOut")
    assert (rolled.status, rolled.reason) == ("True", "Succeeded")


def test_a_failing_canary_is_rolled_back_to_the_stable_adapter(deployment_obj: dict[str, Any]) -> None:
    obj = canary_obj(deployment_obj)
    plan = deployment.decide(obj, facts_for(obj), SETTINGS, POLL)
    obj2 = then(obj, plan)
    bad = {r.STABLE: VariantSignals(requests=500), r.CANARY: VariantSignals(requests=60, errors=30)}
    back = deployment.decide(
        obj2, facts_for(obj2, now=T0 + dt.timedelta(seconds=20), canary_signals=bad), SETTINGS, POLL
    )
    st = dump(back.status)
    assert "canary" not in st and st["history"][-1]["state"] == "RolledBack"
    assert [e.reason for e in back.events] == ["CanaryRolledBack"] and back.events[0].warning
    # the spec still names the new job, but the stable's adapter is what vLLM serves
    assert lora_modules(back) == {"support-bot": lora_modules(plan)["support-bot"]}
    assert st["model"]["digest"] == OLD_DIGEST and st["lineage"]["trainingJob"] == "support-lora-v1"
    rolled = next(c for c in back.conditions if c.type == "RolledOut")
    assert (rolled.status, rolled.reason) == ("False", "CanaryRolledBack")
    # and it stays so on the next reconcile, with no new event
    obj3 = then(obj2, back)
    again = deployment.decide(obj3, facts_for(obj3, now=T0 + dt.timedelta(seconds=90)), SETTINGS, POLL)
    assert not again.events and lora_modules(again) == lora_modules(back)


def test_without_a_rollout_every_revision_is_still_recorded(deployment_obj: dict[str, Any]) -> None:
    obj = copy.deepcopy(deployment_obj)
    plan = deployment.decide(obj, facts_for(obj), SETTINGS, POLL)
    st = dump(plan.status)
    assert [(h["revision"], h["state"], h["reason"]) for h in st["history"]] == [(1, "Stable", "Initial")]
    assert st["history"][0]["modelDigest"] == NEW_DIGEST and st["history"][0]["image"]
    obj2 = then(obj, plan)
    new = replace(
        MODEL,
        adapters={"support-bot": "pvc://v3/model"},
        adapter_digests={"support-bot": "sha256:" + "e" * 64},
    )
    plan2 = deployment.decide(obj2, replace(facts_for(obj2), model=new), SETTINGS, POLL)
    st2 = dump(plan2.status)
    assert [(h["revision"], h["state"], h["reason"]) for h in st2["history"]] == [
        (1, "Superseded", "Initial"),
        (2, "Stable", "Replaced"),
    ]
    assert lora_modules(plan2) == {"support-bot": lora_modules(plan2)["support-bot"]}
    assert "v3" in lora_modules(plan2)["support-bot"]


def test_a_canary_whose_pods_crash_is_rolled_back(deployment_obj: dict[str, Any]) -> None:
    """A broken adapter makes vLLM exit at start: the new pods crash-loop, the old one keeps serving."""
    obj = canary_obj(deployment_obj)
    plan = deployment.decide(obj, facts_for(obj), SETTINGS, POLL)
    obj2 = then(obj, plan)
    crashing = {
        "metadata": {"name": "support-bot-7d9-x"},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "ValueError: bad LoRA adapter"}},
                }
            ]
        },
    }
    rolling = {
        "metadata": {"name": "support-bot", "generation": 3},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1},
    }
    back = deployment.decide(
        obj2,
        facts_for(obj2, now=T0 + dt.timedelta(seconds=40), deployment=rolling, pods=(crashing,)),
        SETTINGS,
        POLL,
    )
    st = dump(back.status)
    assert "canary" not in st and st["history"][-1]["state"] == "RolledBack"
    assert st["history"][-1]["reason"] == "Unavailable" and "bad LoRA adapter" in st["history"][-1]["message"]
    assert [e.reason for e in back.events] == ["CanaryRolledBack"]
    assert lora_modules(back) == {"support-bot": lora_modules(plan)["support-bot"]}

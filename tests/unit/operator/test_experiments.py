"""spec.prompt and spec.variants on the operator side: admission (the models and the CRD's CEL rules),
the guard config the builder renders (and the guard reads back), status and lineage."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from maestro.api import LLMDeployment, LLMDeploymentSpec, LLMPolicySpec
from maestro.api.crd import crd
from maestro.api.experiments import prompt_digest
from maestro.builders import guard_config, serving
from maestro.builders.meta import ChildRef
from maestro.builders.settings import Settings
from maestro.reconcile import deployment
from maestro.reconcile.common import dump
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store
from maestro.workers.guard.config import parse_policy

pytestmark = pytest.mark.unit

SETTINGS = Settings()
POLL = 30.0
#: The quickstart's model (a LoRA job's adapter on its base) plus the experiment's second adapter.
MODEL = serving.ResolvedModel(
    uri="pvc://quickstart-inputs/models/base",
    served_name="support-bot-base",
    adapters={"support-bot": "pvc://support-lora-output/model", "support-bot-v2": "hf://org/support-v2"},
)
POLICY = {
    "apiVersion": "llmops.dev/v1alpha1",
    "kind": "LLMPolicy",
    "metadata": {"name": "quickstart", "namespace": "team-a", "uid": "p-1", "generation": 1},
    "spec": {},
}


def serving_deployment() -> dict[str, Any]:
    """The serving Deployment, rolled out and available (so status reports what is in force)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "support-bot", "generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        },
    }


SYSTEM = "You are the support bot of Example Corp."
TUNED = "You are the support bot of Example Corp. Be brief."


def experiment_spec(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    spec.update(
        adapters=[{"name": "support-bot-v2", "uri": "hf://org/support-v2"}],
        prompt={"system": SYSTEM, "version": "v1"},
        variants=[
            {"name": "control", "weight": 80},
            {
                "name": "v2",
                "adapter": "support-bot-v2",
                "weight": 20,
                "prompt": {"system": TUNED, "template": "Ticket: {{input}}"},
                "sampling": {"temperature": 0.3, "topP": 0.9, "maxTokens": 128},
            },
        ],
    )
    spec.update(over)
    return spec


def spec_schema() -> dict[str, Any]:
    version = crd(LLMDeployment)["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


# -- admission ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 40}]}, "weights must sum to 100"),
        (
            {"variants": [{"name": "a", "weight": 100, "adapter": "nope"}]},
            "spec.variants[0] (a) names adapter",
        ),
        ({"variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]}, "spec.variants has two"),
        ({"variants": [{"name": "A_b", "weight": 100}]}, "variants.0.name"),
        ({"variants": [{"name": "a", "weight": 101}]}, "variants.0.weight"),
        ({"prompt": {"system": ""}}, "prompt.system"),
        ({"prompt": {"system": "x", "template": "no placeholder here"}}, "{{input}} exactly once"),
        ({"variants": [{"name": "a", "weight": 100, "sampling": {"topP": 0}}]}, "sampling.topP"),
    ],
)
def test_models_reject_bad_experiments_naming_the_field(
    deployment_obj: dict[str, Any], change: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        LLMDeploymentSpec.model_validate(experiment_spec(deployment_obj["spec"], **change))
    assert error in str(exc.value)


def test_crd_carries_the_same_rules_naming_spec_variants() -> None:
    schema = spec_schema()
    rules = {r["message"]: r for r in schema["x-kubernetes-validations"]}
    weights = rules["spec.variants: the weights must sum to 100"]
    assert weights["fieldPath"] == ".variants" and ".sum() == 100" in weights["rule"]
    adapters = rules["spec.variants[].adapter must name one of spec.adapters[].name"]
    assert (
        adapters["fieldPath"] == ".variants"
        and "self.adapters.exists(a, a.name == v.adapter)" in (adapters["rule"])
    )
    variants = schema["properties"]["variants"]
    assert variants["x-kubernetes-list-type"] == "map" and variants["x-kubernetes-list-map-keys"] == ["name"]
    assert variants["maxItems"] == 16  # bounds the CEL cost and the guard's `variant` label
    item = variants["items"]["properties"]
    assert item["weight"]["minimum"] == 0 and item["weight"]["maximum"] == 100
    template = schema["properties"]["prompt"]["properties"]["template"]
    assert template["x-kubernetes-validations"][0]["rule"] == "size(self.split('{{input}}')) == 2"


def test_a_valid_experiment_is_accepted(deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(experiment_spec(deployment_obj["spec"]))
    assert [v.name for v in spec.variants] == ["control", "v2"]
    assert spec.prompt is not None and spec.prompt.digest == prompt_digest(SYSTEM)


# -- the guard config ---------------------------------------------------------------------------------


def test_rendered_config_resolves_models_and_prompts_and_the_guard_reads_it(
    deployment_obj: dict[str, Any],
) -> None:
    spec = LLMDeploymentSpec.model_validate(experiment_spec(deployment_obj["spec"]))
    doc = guard_config.render(None, None, "support-bot", guard_config.experiments(spec, "support-bot", "t/s"))
    assert doc["prompt"] == {"system": SYSTEM, "version": "v1", "digest": prompt_digest(SYSTEM)}
    control, v2 = doc["variants"]
    assert control == {"name": "control", "model": "support-bot", "weight": 80, "prompt": doc["prompt"]}
    assert v2["model"] == "support-bot-v2" and v2["prompt"]["digest"] == prompt_digest(
        TUNED, "Ticket: {{input}}"
    )
    routing = parse_policy(json.loads(guard_config.dumps(doc))).routing
    assert routing is not None and routing.served_model == "support-bot"
    assert [(a.name, a.model) for a in routing.arms] == [("control", "support-bot"), ("v2", "support-bot-v2")]
    assert dict(routing.arms[1].sampling) == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 128}
    assert routing.bounds == (8000, 10000)


def test_without_prompt_or_variants_the_config_is_unchanged(deployment_obj: dict[str, Any]) -> None:
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    assert guard_config.experiments(spec, "support-bot", "t/s") == {}
    with_policy = guard_config.render("p", LLMPolicySpec(), "support-bot", {})
    assert not {"prompt", "variants", "routingSalt"} & set(with_policy)
    assert guard_config.render(None, None, "x", {}) == guard_config.render(None, None, "x")


# -- status and lineage -----------------------------------------------------------------------------


def test_status_and_lineage_carry_the_prompt_digest_and_variants(deployment_obj: dict[str, Any]) -> None:
    obj = {**deployment_obj, "spec": experiment_spec(deployment_obj["spec"])}
    spec = LLMDeploymentSpec.model_validate(obj["spec"])
    facts = deployment.Facts(
        spec=spec,
        model=MODEL,
        policies=(POLICY,),
        deployment=serving_deployment(),
        lineage={"trainingJob": "support-lora"},
    )
    plan = deployment.decide(obj, facts, SETTINGS, POLL)
    st = dump(plan.status)
    assert st["prompt"] == {"digest": prompt_digest(SYSTEM), "version": "v1"}
    assert st["lineage"]["promptDigest"] == prompt_digest(SYSTEM)
    assert st["variants"] == [
        {
            "name": "control",
            "servedModel": "support-bot",
            "weight": 80,
            "promptDigest": prompt_digest(SYSTEM),
        },
        {
            "name": "v2",
            "servedModel": "support-bot-v2",
            "weight": 20,
            "promptDigest": prompt_digest(TUNED, "Ticket: {{input}}"),
        },
    ]
    cm = plan.children[ChildRef("v1", "ConfigMap", "support-bot-guard")]
    assert cm is not None
    doc = json.loads(cm["data"]["policy.json"])
    assert doc["routingSalt"] == "team-a/support-bot" and len(doc["variants"]) == 2
    # an edited prompt is a new digest in the config and in status
    obj2 = copy.deepcopy(obj)
    obj2["spec"]["prompt"]["system"] = SYSTEM + " Always cite the ticket number."
    obj2["metadata"]["generation"] = 2
    facts2 = replace(facts, spec=LLMDeploymentSpec.model_validate(obj2["spec"]))
    st2 = dump(deployment.decide(obj2, facts2, SETTINGS, POLL).status)
    assert st2["prompt"]["digest"] != st["prompt"]["digest"]
    assert st2["lineage"]["promptDigest"] == st2["prompt"]["digest"]


def test_a_blocked_adapter_names_the_variant_it_serves(deployment_obj: dict[str, Any]) -> None:
    spec_doc = experiment_spec(deployment_obj["spec"])
    spec_doc["adapters"] = [{"name": "support-bot-v2", "trainingJobRef": {"name": "missing-job"}}]
    spec = LLMDeploymentSpec.model_validate(spec_doc)
    ctx = Context(kube=None, store=Store(), settings=SETTINGS)  # type: ignore[arg-type]
    _, _, blocked = deployment.resolve_model(ctx, deployment_obj, spec, need_eval=False)
    assert blocked is not None
    assert blocked.message.startswith("adapter support-bot-v2 (serving variant v2): ")

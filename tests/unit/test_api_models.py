"""The models: wire form, defaults, examples, helpers and the reason classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import maestro.api as api
from maestro.api import (
    LLMDataset,
    LLMDeployment,
    LLMDeploymentSpec,
    LLMPolicy,
    LLMTrainingJob,
    LLMTrainingJobSpec,
    PIIEntity,
    Reason,
    parse,
)
from maestro.api.common import LabelSelector, LabelSelectorRequirement
from maestro.api.conditions import PERMANENT, RETRIABLE, SETTLED, Condition, ConditionStatus
from maestro.api.dataset import LLMDatasetSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))


def maestro_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d["apiVersion"] == api.API_VERSION]


#: plain Kubernetes objects the examples need (the quickstart's input volume)
SUPPORT_FILES = {ROOT / "examples" / "quickstart" / "inputs.yaml"}
MAESTRO_EXAMPLES = [p for p in EXAMPLES if p not in SUPPORT_FILES]


@pytest.mark.parametrize("path", MAESTRO_EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in MAESTRO_EXAMPLES])
def test_every_example_is_accepted_and_round_trips(path: Path) -> None:
    docs = maestro_docs(path)
    assert docs, f"{path} holds no Maestro object"
    for doc in docs:
        obj = parse(doc)
        wire = obj.to_manifest()
        assert parse(wire).to_manifest() == wire
        # every field the author wrote survives, under the same camelCase name
        assert _contains(wire, doc), f"{path}: wire form lost or renamed a field"


def _contains(full: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(full, dict) and all(k in full and _contains(full[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(full, list) and len(full) == len(part) and all(map(_contains, full, part))
    if isinstance(part, int | float) and not isinstance(part, bool):
        return bool(full == part) or str(full) == str(part)  # quantities: 4 → "4"
    return bool(full == part)


def test_examples_cover_all_kinds_in_both_sets() -> None:
    for folder in ("quickstart", "production"):
        kinds = {d["kind"] for p in EXAMPLES if p.parent.name == folder for d in maestro_docs(p)}
        assert kinds == set(api.BY_KIND), folder


def test_quickstart_is_cpu_only_and_local() -> None:
    objs = [parse(d) for p in EXAMPLES if p.parent.name == "quickstart" for d in maestro_docs(p)]
    job = next(o for o in objs if isinstance(o, LLMTrainingJob))
    dep = next(o for o in objs if isinstance(o, LLMDeployment))
    pol = next(o for o in objs if isinstance(o, LLMPolicy))
    ds = next(o for o in objs if isinstance(o, LLMDataset))
    assert job.spec.resources.gpus == 0 and job.spec.method == "lora"
    assert (job.spec.hyperparameters.max_steps or 0) <= 50
    assert (
        dep.spec.resources.gpus == 0
        and dep.spec.runtime.dtype == "float32"
        and dep.spec.runtime.enforce_eager
    )
    assert (
        dep.spec.model.training_job_ref is not None
        and dep.spec.model.training_job_ref.name == job.metadata["name"]
    )
    assert job.spec.dataset_ref.name == ds.metadata["name"]
    # both inputs come from the quickstart-inputs claim (inputs.yaml), never from a hub or a bucket
    inputs = [d for d in yaml.safe_load_all((ROOT / "examples/quickstart/inputs.yaml").read_text()) if d]
    claim = next(d for d in inputs if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    assert ds.spec.source.uri.startswith(f"pvc://{claim}/")
    assert job.spec.base_model.uri.startswith(f"pvc://{claim}/")
    assert any(src == f"pvc://{claim}/" for src in pol.spec.admission.allowed_model_sources or [])
    req = pol.spec.request
    assert req.auth is not None and req.auth.required and req.rate_limits.requests_per_minute
    assert req.pii.input == "redact" and req.blocked_terms


def test_quickstart_data_has_planted_pii_and_duplicates() -> None:
    lines = (ROOT / "examples/quickstart/data/support.jsonl").read_text().splitlines()
    assert 150 <= len(lines) <= 400
    assert len(set(lines)) < len(lines)
    text = "\n".join(lines)
    for planted in ("@example.com", "4111 1111 1111 1111", "DE89 3704", "078-05-1120"):
        assert planted in text


def test_camel_case_wire_form_and_snake_case_python() -> None:
    spec = LLMTrainingJobSpec.model_validate(
        {"baseModel": {"uri": "hf://o/m"}, "datasetRef": {"name": "d"}, "hyperparameters": {"maxSteps": 5}}
    )
    assert spec.hyperparameters.max_steps == 5
    wire = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert wire["hyperparameters"]["maxSteps"] == 5
    assert wire["hyperparameters"]["gradientAccumulationSteps"] == 1
    # populate_by_name: Python code may build specs with snake_case names too
    by_name = LLMTrainingJobSpec(base_model={"uri": "hf://o/m"}, dataset_ref={"name": "d"})  # type: ignore[arg-type]
    assert by_name.base_model.uri == "hf://o/m"


def test_irregular_aliases_match_the_design() -> None:
    wire = LLMDatasetSpec.model_validate({"source": {"uri": "s3://b/k"}}).model_dump(
        by_alias=True, mode="json"
    )
    assert "maxPIIRatio" in wire["qualityGates"]
    assert "schema" in wire
    policy = LLMPolicy.model_validate({"kind": "LLMPolicy", "spec": {}}).to_manifest()
    assert "maxGPUsPerJob" not in policy["spec"]["admission"]  # optional, unset → omitted
    assert (
        LLMPolicy.model_validate(
            {"kind": "LLMPolicy", "spec": {"admission": {"maxGPUsPerJob": 8}}}
        ).spec.admission.max_gpus_per_job
        == 8
    )


def test_defaults_follow_the_contract() -> None:
    dep = LLMDeploymentSpec.model_validate({"model": {"uri": "hf://o/m"}})
    assert dep.runtime.image == api.DEFAULT_VLLM_IMAGE == "vllm/vllm-openai:v0.33.0"
    assert dep.replicas == 1 and dep.autoscaling is None
    pol = LLMPolicy.model_validate({"kind": "LLMPolicy", "spec": {}}).spec
    assert pol.request.max_request_bytes == 1024 * 1024
    assert pol.request.streaming_output_mode == "window"
    assert (pol.request.output_window.chars, pol.request.output_window.overlap) == (256, 64)
    assert pol.audit.log_prompts is False
    assert PIIEntity.PERSON not in pol.request.pii.entities  # recogniser-based kinds are opt-in
    job = LLMTrainingJobSpec.model_validate({"baseModel": {"uri": "hf://o/m"}, "datasetRef": {"name": "d"}})
    assert job.output.pvc.size == "50Gi" and job.output.merge is False
    assert set(job.evaluation.bias.groups) >= {"gender", "ethnicity", "religion", "age"}
    assert job.resources.gpu_resource_name == "nvidia.com/gpu"


def test_pii_entity_vocabulary_is_the_shared_one() -> None:
    assert {e.value for e in PIIEntity} == {
        "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IPV4", "IPV6", "API_KEY", "PRIVATE_KEY",
        "URL_CREDENTIALS", "PERSON", "LOCATION",
    }  # fmt: skip


def test_quantities_accept_yaml_numbers_and_reject_garbage() -> None:
    spec = LLMTrainingJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://o/m"},
            "datasetRef": {"name": "d"},
            "resources": {"cpu": 4, "memory": "16Gi"},
        }
    )
    assert spec.resources.cpu == "4" and spec.resources.memory == "16Gi"
    with pytest.raises(ValidationError, match=r"resources\.cpu"):
        LLMTrainingJobSpec.model_validate(
            {"baseModel": {"uri": "hf://o/m"}, "datasetRef": {"name": "d"}, "resources": {"cpu": True}}
        )


def test_status_is_lenient_and_conditions_round_trip() -> None:
    body = {
        "apiVersion": api.API_VERSION,
        "kind": "LLMDeployment",
        "metadata": {"name": "chat"},
        "spec": {"model": {"uri": "hf://o/m"}},
        "status": {
            "phase": "Ready",
            "replicas": 2,
            "somethingKopfWrote": {"x": 1},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "message": "",
                 "lastTransitionTime": "2026-11-26T08:00:00Z", "observedGeneration": 3}
            ],
        },
    }  # fmt: skip
    obj = LLMDeployment.model_validate(body)
    assert obj.status is not None and obj.status.replicas == 2
    ready = obj.status.condition("Ready")
    assert ready is not None and ready.status == ConditionStatus.TRUE and ready.observed_generation == 3
    wire = obj.to_manifest()["status"]["conditions"][0]
    assert wire["lastTransitionTime"] == "2026-11-26T08:00:00Z" and wire["observedGeneration"] == 3
    with pytest.raises(ValidationError):
        Condition.model_validate({"type": "Ready", "status": "Yes"})


def test_every_reason_is_classified_once() -> None:
    assert not (RETRIABLE & PERMANENT) and not (SETTLED & (RETRIABLE | PERMANENT))
    assert set(Reason) == RETRIABLE | PERMANENT | SETTLED
    assert api.is_permanent("GateFailed") and not api.is_retriable("GateFailed")
    assert api.is_retriable("DatasetNotReady") and not api.is_permanent("DatasetNotReady")
    assert api.is_retriable("SomethingNew")  # unknown reasons are retried, never given up on


def test_label_selector_semantics() -> None:
    sel = LabelSelector(
        match_labels={"tier": "production"},
        match_expressions=[
            LabelSelectorRequirement(key="team", operator="In", values=["a", "b"]),
            LabelSelectorRequirement(key="legacy", operator="DoesNotExist"),
        ],
    )
    assert sel.matches({"tier": "production", "team": "a"})
    assert not sel.matches({"tier": "production", "team": "c"})
    assert not sel.matches({"tier": "production", "team": "a", "legacy": "yes"})
    assert not sel.matches({"team": "a"})
    assert LabelSelector().matches({})


def test_parse_names_the_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'Pod' is not a Maestro kind"):
        parse({"kind": "Pod"})


def test_public_surface() -> None:
    exported = set(api.__all__)
    assert {"LLMDataset", "LLMTrainingJob", "LLMDeployment", "LLMPolicy", "GROUP", "VERSION"} <= exported
    assert {"AdmissionPolicy", "RequestPolicy", "AuditPolicy", "Condition", "Reason"} <= exported
    assert all(hasattr(api, name) for name in api.__all__)
    assert (api.GROUP, api.VERSION) == ("llmops.dev", "v1alpha1")
    assert [k.crd.short_names[0] for k in api.KINDS] == ["llmds", "llmtj", "llmdep", "llmpol"]

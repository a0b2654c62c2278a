"""The guard config says whether the model server computes prompt log-probabilities safely: not on
vLLM-CPU serving LoRA adapters (GuardConfig.prompt_logprobs), everywhere else yes — and then the
document is byte for byte what earlier releases rendered."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest
from test_rollout_deploy import MODEL, guard_doc

from maestro.api import LLMDeploymentSpec
from maestro.builders.settings import Settings
from maestro.reconcile import deployment

pytestmark = pytest.mark.unit


def doc_for(obj: dict[str, Any], model: Any = MODEL) -> dict[str, Any]:
    facts = deployment.Facts(spec=LLMDeploymentSpec.model_validate(obj["spec"]), model=model)
    return guard_doc(deployment.decide(obj, facts, Settings(), 30.0))


def test_cpu_with_adapters_turns_prompt_logprobs_off(deployment_obj: dict[str, Any]) -> None:
    assert deployment_obj["spec"]["resources"]["gpus"] == 0 and MODEL.adapters
    assert doc_for(deployment_obj)["promptLogprobs"] is False


def test_gpu_or_no_adapters_leave_the_document_unchanged(deployment_obj: dict[str, Any]) -> None:
    gpu = copy.deepcopy(deployment_obj)
    gpu["spec"]["resources"]["gpus"] = 1
    assert "promptLogprobs" not in doc_for(gpu)
    base = replace(MODEL, adapters={}, adapter_ranks={}, adapter_digests={}, served_name="support-bot")
    doc = doc_for(deployment_obj, base)
    assert "promptLogprobs" not in doc and "promptlogprobs" not in json.dumps(doc).lower()

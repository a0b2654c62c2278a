"""What an apps/v1 Deployment and its pods say about a serving endpoint.

Ready means the rollout of the current template finished and every desired replica is available:
never Ready while the Deployment is still progressing or a pod crash-loops (KServe #1859, #4626).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maestro.api.conditions import Reason
from maestro.status.jobs import memory_limit

Obj = dict[str, Any]


@dataclass(frozen=True)
class RolloutView:
    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    rolled_out: bool
    #: The Deployment controller has seen the current template (observedGeneration caught up).
    observed: bool
    #: A reason (CrashLoopBackOff, ImagePullFailed, ...) when a pod is stuck, with its message.
    stuck_reason: str = ""
    stuck_message: str = ""
    #: The Deployment's pod-template annotations (which guard config is rolled out).
    template_annotations: dict[str, str] | None = None

    @property
    def complete(self) -> bool:
        return self.rolled_out and self.available >= self.desired and self.updated >= self.desired


def view(deployment: Obj | None, pods: list[Obj] | None = None) -> RolloutView | None:
    if deployment is None:
        return None
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    generation = int((deployment.get("metadata") or {}).get("generation", 0))
    observed = int(st.get("observedGeneration", 0))
    rolled_out = (
        observed >= generation
        and int(st.get("updatedReplicas", 0)) >= desired
        and int(st.get("replicas", 0)) <= desired
    )
    reason, message = stuck(pods or [])
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    return RolloutView(
        desired=desired,
        replicas=int(st.get("replicas", 0)),
        ready=int(st.get("readyReplicas", 0)),
        available=int(st.get("availableReplicas", 0)),
        updated=int(st.get("updatedReplicas", 0)),
        rolled_out=rolled_out,
        observed=observed >= generation,
        stuck_reason=reason,
        stuck_message=message,
        template_annotations=dict(annotations),
    )


_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def stuck(pods: list[Obj]) -> tuple[str, str]:
    """The first container that cannot make progress, as (reason, message naming the container)."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            why = waiting.get("reason", "")
            if why in _PULL:
                return Reason.IMAGE_PULL_FAILED, f"pod {name} container {cs.get('name')}: {why}: " + str(
                    waiting.get("message", "")
                )[:500]
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled" and (why == "CrashLoopBackOff" or not cs.get("ready")):
                limit = memory_limit(pod, str(cs.get("name")))
                return Reason.OOM_KILLED, (
                    f"pod {name} container {cs.get('name')} exceeded its memory limit"
                    f"{' of ' + limit if limit else ''} and was OOMKilled "
                    f"(restarts {cs.get('restartCount', 0)}); raise spec.resources.memory"
                    + (" or lower runtime.maxModelLen" if cs.get("name") == "vllm" else "")
                )
            if why == "CrashLoopBackOff":
                detail = last.get("message") or last.get("reason") or waiting.get("message", "")
                return Reason.CRASH_LOOP, (
                    f"pod {name} container {cs.get('name')} keeps crashing "
                    f"(exit {last.get('exitCode', '?')}): {str(detail)[:500]}"
                )
    return guard_unhealthy(pods)


#: The serving pod's containers (builders.serving names them; status cannot import builders).
VLLM_CONTAINER = "vllm"
GUARD_CONTAINER = "guard"


def guard_unhealthy(pods: list[Obj]) -> tuple[str, str]:
    """A running pod whose vLLM is ready but whose guard is not: the endpoint cannot serve through it.

    The guard's /readyz checks its policy config and vLLM; with vLLM ready, what fails is the guard's
    own side (the policy ConfigMap missing or unreadable, the guard unable to reach vLLM).
    """
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        statuses = {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
        vllm, guard = statuses.get(VLLM_CONTAINER), statuses.get(GUARD_CONTAINER)
        if not vllm or not guard or not vllm.get("ready") or guard.get("ready"):
            continue
        if not (guard.get("state") or {}).get("running"):
            continue  # starting or crashing: the checks above report it
        return Reason.GUARD_UNHEALTHY, (
            f"pod {meta.get('name', '')}: vLLM is ready but the guard container is not (its /readyz "
            "fails: the policy ConfigMap is missing or invalid, or the guard cannot reach vLLM); "
            "see `kubectl logs <pod> -c guard`"
        )
    return "", ""

"""Pod-level pieces every generated workload shares: the `restricted` Pod Security profile,
scheduling (GPUs, the operator's placement defaults), and common volumes.

Every pod Maestro creates passes `pod-security.kubernetes.io/enforce: restricted`: non-root with an
explicit uid (the vLLM image defaults to root), no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp, and only claim/emptyDir/configMap/secret/projected volumes.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from maestro.api.common import ComputeResources, PVCStorage
from maestro.builders.meta import object_meta
from maestro.builders.settings import Placement, Settings

Obj = dict[str, Any]

RUN_AS_USER = 1000
GPU_TOLERATION_EFFECT = "NoSchedule"


def pod_security_context() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = False) -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": read_only_root,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resource_requirements(res: ComputeResources, *, default_cpu: str, default_memory: str) -> Obj:
    """Requests = limits for CPU/memory/GPUs: training and serving pods should be Guaranteed QoS."""
    amounts: dict[str, str] = {
        "cpu": str(res.cpu or default_cpu),
        "memory": str(res.memory or default_memory),
    }
    if res.gpus:
        amounts[res.gpu_resource_name] = str(res.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def tolerations(res: ComputeResources) -> list[Obj]:
    out: list[Obj] = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in res.tolerations]
    if res.gpus and not any(t.get("key") == res.gpu_resource_name for t in out):
        # GPU nodes are tainted with their resource name; a pod that asks for GPUs wants to land there.
        out.append({"key": res.gpu_resource_name, "operator": "Exists", "effect": GPU_TOLERATION_EFFECT})
    return out


def apply_scheduling(pod_spec: Obj, res: ComputeResources, placement: Placement) -> None:
    """nodeSelector/tolerations/priority: the operator's placement defaults, then the spec's."""
    selector = {**placement.node_selector, **res.node_selector}
    if selector:
        pod_spec["nodeSelector"] = selector
    tol = [*placement.tolerations, *tolerations(res)]
    if tol:
        pod_spec["tolerations"] = tol
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name


def pod_labels(base: dict[str, str], settings: Settings) -> dict[str, str]:
    return {**base, **settings.extra_pod_labels}


def empty_dir(name: str, *, medium: str | None = None, size: str | None = None) -> Obj:
    spec: Obj = {}
    if medium:
        spec["medium"] = medium
    if size:
        spec["sizeLimit"] = size
    return {"name": name, "emptyDir": spec}


def pvc_volume(name: str, claim: str, *, read_only: bool = False) -> Obj:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}


def pvc_manifest(meta: Obj, size: str, storage_class: str | None) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def owned_pvc(owner: Obj, name: str, component: str, pvc: PVCStorage, settings: Settings) -> Obj | None:
    """A claim the operator creates and owns, or None when the spec names an existing one (never ours)."""
    if pvc.claim_name:
        return None
    return pvc_manifest(
        object_meta(owner, name, component), str(pvc.size), pvc.storage_class_name or settings.storage_class
    )


def spec_env(env_name: str, spec: BaseModel) -> Obj:
    """The CR's spec as camelCase JSON in the worker contract's env var (workers need no API access)."""
    body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"name": env_name, "value": json.dumps(body, separators=(",", ":"))}


def split_pvc_uri(uri: str) -> tuple[str, str]:
    """`pvc://claim/some/path` -> ("claim", "some/path"); ValueError names the expected shape."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    if not uri.startswith("pvc://") or not claim:
        raise ValueError(f"{uri!r} is not of the form pvc://<claim>/<path>")
    return claim, path.strip("/")

"""Objects shaped like what the API server hands the operator (uid, namespace, generation set)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def served(manifest: dict[str, Any], namespace: str = "team-a", generation: int = 1) -> dict[str, Any]:
    obj = copy.deepcopy(manifest)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta.setdefault("generation", generation)
    meta.setdefault("resourceVersion", "1")
    return obj


def example(name: str, kind: str | None = None) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    if kind:
        docs = [d for d in docs if d.get("kind") == kind]
    return served(docs[0])


@pytest.fixture
def dataset_obj() -> dict[str, Any]:
    return example("dataset.yaml")


@pytest.fixture
def training_obj() -> dict[str, Any]:
    return example("training.yaml")


@pytest.fixture
def deployment_obj() -> dict[str, Any]:
    return example("deployment.yaml")


@pytest.fixture
def policy_obj() -> dict[str, Any]:
    return example("policy.yaml", "LLMPolicy")


# --- the `restricted` Pod Security Standard, as checks on a pod spec (the tests' own reading) -------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            out.append(f"{flag} set")
    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {vol['name']} uses {kinds - ALLOWED_VOLUMES}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for c in [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            out.append(f"{name}: must drop ALL capabilities")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out


@pytest.fixture
def restricted() -> Any:
    return restricted_violations

"""Downward API and environment: the values a kubelet derives from the pod, its node and the API
(`fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef`, `envFrom`, `$(VAR)` expansion)."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


class ConfigError(RuntimeError):
    """The pod cannot start until something changes (a missing ConfigMap key, …); the kubelet's
    `CreateContainerConfigError`."""


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


def quantity(q: str | int | float) -> float:
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ConfigError(f"cannot parse quantity {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _quote_map(values: Mapping[str, str]) -> str:
    return "\n".join(f'{k}="{v}"'.replace("\n", "\\n") for k, v in sorted(values.items()))


def field_value(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        return _quote_map(meta.get(path.split(".")[1], {}))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_value(container: Obj | None, ref: Obj, node_alloc: Mapping[str, str]) -> str:
    """`limits.cpu` & co: the container's value, or the node's allocatable for an unset limit."""
    resource = ref["resource"]
    kind, _, name = resource.partition(".")
    res = (container or {}).get("resources", {})
    raw = res.get(kind, {}).get(name)
    if raw is None and kind == "limits":
        raw = node_alloc.get(name, "0")
    if raw is None and kind == "requests":
        raw = res.get("limits", {}).get(name, "0")
    divisor = quantity(ref.get("divisor", "1"))
    return str(math.ceil(quantity(raw) / divisor))


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, unknown kept, `$$` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def data_of(obj: Obj) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys as bytes."""
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = v.encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def container_env(
    pod: Obj,
    container: Obj,
    pod_ip: str,
    host_ip: str,
    node_alloc: Mapping[str, str],
    objects: Mapping[tuple[str, str], Obj | None],
) -> dict[str, str]:
    """The container's environment in kubelet order: `envFrom`, then `env` (later wins), with
    `$(VAR)` expansion against what came before. `objects` maps ("ConfigMap"|"Secret", name) to the
    fetched object (None when absent)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", src["configMapRef"]) if "configMapRef" in src else ("Secret", src["secretRef"])
        )
        obj = objects.get((kind, ref["name"]))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f"{kind.lower()} {ref['name']!r} not found (envFrom)")
        for k, v in data_of(obj).items():
            env[src.get("prefix", "") + k] = v.decode(errors="replace")
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        vf = var.get("valueFrom")
        if not vf:
            env[name] = ""
        elif "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in vf:
            ref = vf["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                target = next(
                    (c for c in pod["spec"]["containers"] if c["name"] == ref["containerName"]), container
                )
            env[name] = resource_value(target, ref, node_alloc)
        else:
            kind, ref = (
                ("ConfigMap", vf["configMapKeyRef"])
                if "configMapKeyRef" in vf
                else ("Secret", vf["secretKeyRef"])
            )
            obj = objects.get((kind, ref["name"]))
            data = data_of(obj) if obj is not None else None
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = (
                    f"{kind.lower()} {ref['name']!r}"
                    if data is None
                    else f"key {ref['key']!r} in {kind.lower()} {ref['name']!r}"
                )
                raise ConfigError(f"{what} not found (env {name})")
            env[name] = data[ref["key"]].decode(errors="replace")
    return env


def env_references(pod: Obj) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap/Secret the containers' env needs."""
    refs: set[tuple[str, str]] = set()
    for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                refs.add(("ConfigMap", src["configMapRef"]["name"]))
            if "secretRef" in src:
                refs.add(("Secret", src["secretRef"]["name"]))
        for var in c.get("env", []):
            vf = var.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                refs.add(("ConfigMap", vf["configMapKeyRef"]["name"]))
            if "secretKeyRef" in vf:
                refs.add(("Secret", vf["secretKeyRef"]["name"]))
    return refs

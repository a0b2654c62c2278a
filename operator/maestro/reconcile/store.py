"""An in-memory cache of the four Maestro kinds, fed by watch events (an informer, in Go terms).

Reconciles read dependencies (datasets, training jobs, policies) from here instead of the API, and
the dependency lookups below decide which objects to requeue when another one changes.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

from maestro import api
from maestro.api import LLMDataset, LLMDeployment, LLMPolicy, LLMTrainingJob

Obj = dict[str, Any]
ObjList = list[Obj]

#: The kind names, from the registry in maestro.api (dependency order).
KINDS: tuple[str, ...] = tuple(k.crd.kind for k in api.KINDS)
DATASET, TRAINING, DEPLOYMENT, POLICY = (
    m.crd.kind for m in (LLMDataset, LLMTrainingJob, LLMDeployment, LLMPolicy)
)


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # resourceVersions are opaque; etcd's are integers, anything else just wins
        return 0


class Store:
    def __init__(self) -> None:
        self._objs: dict[str, dict[str, dict[str, Obj]]] = {k: {} for k in KINDS}

    def put(self, obj: Obj) -> bool:
        """Remember `obj` unless a newer version is already known; True when stored."""
        kind = obj.get("kind", "")
        meta = obj.get("metadata") or {}
        if "managedFields" in meta:  # the bulk of a served object, and nothing a reconcile reads
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            obj = {**obj, "metadata": meta}
        bucket = self._objs.setdefault(kind, {}).setdefault(meta.get("namespace", ""), {})
        current = bucket.get(meta.get("name", ""))
        if current is not None and _rv(current) > _rv(obj) > 0:
            return False
        bucket[meta["name"]] = obj
        return True

    def remove(self, kind: str, namespace: str, name: str) -> None:
        self._objs.get(kind, {}).get(namespace, {}).pop(name, None)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._objs.get(kind, {}).get(namespace, {}).get(name)

    def list(self, kind: str, namespace: str | None = None) -> ObjList:
        by_ns = self._objs.get(kind, {})
        if namespace is not None:
            return list(by_ns.get(namespace, {}).values())
        return [o for objs in by_ns.values() for o in objs.values()]

    def count(self, kind: str) -> int:
        return sum(len(v) for v in self._objs.get(kind, {}).values())

    def all(self) -> Iterator[Obj]:
        for kind in KINDS:
            yield from self.list(kind)

    # -- dependency lookups --------------------------------------------------------------------
    def dependents(self, kind: str, namespace: str, name: str) -> builtins.list[tuple[str, str, str]]:
        """Objects whose reconcile reads `kind/name` (they must run again when it changes)."""
        out: builtins.list[tuple[str, str, str]] = []
        if kind == DATASET:
            for tj in self.list(TRAINING, namespace):
                if ((tj.get("spec") or {}).get("datasetRef") or {}).get("name") == name:
                    out.append((TRAINING, namespace, tj["metadata"]["name"]))
        elif kind == TRAINING:
            for dep in self.list(DEPLOYMENT, namespace):
                spec = dep.get("spec") or {}
                refs = [((spec.get("model") or {}).get("trainingJobRef") or {}).get("name")]
                refs += [
                    ((a or {}).get("trainingJobRef") or {}).get("name") for a in spec.get("adapters") or []
                ]
                if name in refs:
                    out.append((DEPLOYMENT, namespace, dep["metadata"]["name"]))
        elif kind == POLICY:
            for k in (DATASET, TRAINING, DEPLOYMENT):
                out += [(k, namespace, o["metadata"]["name"]) for o in self.list(k, namespace)]
        return out

    def policies_for(self, kind: str, namespace: str, name: str) -> builtins.list[tuple[str, str, str]]:
        """The policies of a namespace (their enforcedOn lists may change when `kind/name` does)."""
        return [(POLICY, namespace, p["metadata"]["name"]) for p in self.list(POLICY, namespace)]

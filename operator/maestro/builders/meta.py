"""Names, labels, owner references and hashes shared by every builder.

Child names are derived from the parent deterministically, so a restarted operator finds (and never
duplicates) what it created before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from maestro.api.common import API_VERSION

MANAGED_BY = "maestro"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
#: Which Maestro object owns a child: routes child events back to the owner's reconcile.
LABEL_OWNER_KIND = "llmops.dev/owner-kind"
LABEL_OWNER_NAME = "llmops.dev/owner-name"
#: Selector label of serving pods (immutable part of the Deployment selector).
LABEL_DEPLOYMENT = "llmops.dev/llmdeployment"
#: Spec hash of the validation Job (one Job per dataset spec).
LABEL_SPEC_HASH = "llmops.dev/spec-hash"
#: Pod-template annotation holding the guard configuration digest (a change rolls the pods).
ANNOTATION_CONFIG_DIGEST = "llmops.dev/guard-config-digest"
ANNOTATION_POLICY = "llmops.dev/policy"

Obj = dict[str, Any]


@dataclass(frozen=True, order=True)
class ChildRef:
    """Which child a manifest is (in the owner's namespace): builders key what they build by it, and a
    reference mapped to None means that child must not exist (the reconcile deletes it)."""

    api_version: str
    kind: str
    name: str

    @classmethod
    def of(cls, manifest: Obj) -> ChildRef:
        return cls(manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.api_version}/{self.kind}/{self.name}"


def digest(data: Any, length: int | None = None) -> str:
    """sha256 of the canonical JSON of `data` (hex; truncated to `length` for names)."""
    h = hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    return h[:length] if length else h


def fingerprint(data: Any) -> str:
    """A cheap identity of what builders produced, to skip re-applying the same children: builders
    build dicts in a fixed order, so no key sorting (and no cryptographic strength) is needed."""
    return hashlib.blake2b(
        json.dumps(data, separators=(",", ":"), default=str).encode(), digest_size=16
    ).hexdigest()


def child_name(parent: str, suffix: str, limit: int = 63) -> str:
    """`<parent>-<suffix>`, shortened with a hash when it would exceed `limit` characters."""
    name = f"{parent}-{suffix}" if suffix else parent
    if len(name) <= limit:
        return name
    tail = f"-{digest(name, 6)}-{suffix}" if suffix else f"-{digest(name, 6)}"
    return parent[: limit - len(tail)].rstrip("-") + tail


def owner_reference(owner: Obj) -> Obj:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(owner: Obj, component: str) -> dict[str, str]:
    meta = owner["metadata"]
    return {
        LABEL_NAME: "maestro",
        LABEL_INSTANCE: meta["name"],
        LABEL_COMPONENT: component,
        LABEL_PART_OF: "maestro",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_KIND: owner["kind"],
        LABEL_OWNER_NAME: meta["name"],
    }


def object_meta(
    owner: Obj,
    name: str,
    component: str,
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": {**labels(owner, component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta

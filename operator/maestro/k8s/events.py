"""Kubernetes Events for condition transitions (what `kubectl describe` and alerting read)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

from maestro.k8s.client import Kube
from maestro.k8s.errors import ApiError

COMPONENT = "maestro"


def event_manifest(obj: dict[str, Any], *, type_: str, reason: str, message: str) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', 'unknown')}.{uuid.uuid4().hex[:12]}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason[:128],
        "message": message[:1024],
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def post_event(kube: Kube, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
    """Best effort: an Event that cannot be written never fails a reconcile."""
    with contextlib.suppress(ApiError):
        await kube.create(event_manifest(obj, type_=type_, reason=reason, message=message))

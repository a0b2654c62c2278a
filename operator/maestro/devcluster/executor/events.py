"""Pod events as a kubelet records them (`kubectl describe pod` shows why a container restarted,
failed to start or was killed). Best effort: an event that cannot be written is logged, never fatal."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from maestro.devcluster.executor.api import Api, ApiError
from maestro.devcluster.executor.status import rfc3339

log = logging.getLogger("maestro.executor")
Obj = dict[str, Any]
COMPONENT = "kubelet"


class Recorder:
    def __init__(self, api: Api, node: str) -> None:
        self.api = api
        self.node = node
        self._last: dict[tuple[str, str, str], float] = {}

    async def emit(
        self, pod: Obj, type_: str, reason: str, message: str, container: str | None = None
    ) -> None:
        meta = pod["metadata"]
        key = (meta["uid"], reason, message)
        now = time.monotonic()
        if now - self._last.get(key, -60.0) < 30:  # the same event within 30 s: once is enough
            return
        self._last[key] = now
        ref: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }
        if container:
            ref["fieldPath"] = f"spec.containers{{{container}}}"
        ts = rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": ref,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except (ApiError, OSError) as e:
            log.debug("event %s for %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], e)

    def forget(self, uid: str) -> None:
        for key in [k for k in self._last if k[0] == uid]:
            del self._last[key]

"""What every reconcile gets: the API client, settings, the cache, and its result type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maestro.builders.meta import ChildRef
from maestro.builders.serving import Capabilities
from maestro.builders.settings import Settings
from maestro.k8s import Kube
from maestro.k8s.events import post_event
from maestro.reconcile.store import Store
from maestro.status.conditions import Cond

Obj = dict[str, Any]


@dataclass
class Result:
    """What the caller should do next: nothing, or run this reconcile again after a delay."""

    requeue_after: float | None = None
    #: The phase after this reconcile (for metrics).
    phase: str | None = None


class InvalidObject(Exception):
    """The object's spec does not parse; nothing will change until someone edits it."""


@dataclass(frozen=True)
class Built:
    """The children last applied for one owner and the key of everything they were built from.

    Kept in `Context.built` and handed to the next decide through its facts, so an object whose
    inputs did not change (a status-only event, a periodic resync) reuses its manifests instead of
    building and fingerprinting them again: decide stays a function of its facts."""

    key: Hashable
    children: Mapping[ChildRef, Obj | None]


@dataclass
class Context:
    kube: Kube
    settings: Settings
    store: Store
    caps: Capabilities = field(default_factory=Capabilities)
    #: owner uid -> digest of the children last applied (skip no-op applies on status-only events).
    applied: dict[str, str] = field(default_factory=dict)
    #: owner uid -> the children last applied and the key of their inputs (see `Built`).
    built: dict[str, Built] = field(default_factory=dict)
    #: (kind, namespace, name) -> the latest watched child (Deployments), so status reads need no GET.
    children: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    #: Called for every condition transition (defaults to posting a Kubernetes Event).
    on_transition: Callable[[Obj, Cond], Awaitable[None]] | None = None
    #: Retry interval for waits that no watch event ends (a missing claim, a Secret).
    poll_seconds: float = 30.0
    #: owner uid -> (monotonic time read, what was read) of its last Prometheus analysis, so watch events
    #: (its own status writes among them) do not re-query more often than the analysis interval.
    analyses: dict[str, tuple[float, Any]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def record(self, obj: Obj, c: Cond) -> None:
        if self.on_transition is not None:
            await self.on_transition(obj, c)
            return
        # Events are best effort and off the reconcile's critical path.
        task = asyncio.ensure_future(
            post_event(
                self.kube,
                obj,
                type_="Warning" if c.warning else "Normal",
                reason=c.reason,
                message=f"{c.type}={c.status}: {c.message}" if c.message else f"{c.type}={c.status}",
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def child(self, api_version: str, kind: str, name: str, namespace: str) -> Obj | None:
        """A watched child from the cache, else from the API."""
        cached = self.children.get((kind, namespace, name))
        if cached is not None:
            return cached
        return await self.kube.get(api_version, kind, name, namespace)

    def forget(self, uid: str) -> None:
        self.applied.pop(uid, None)
        self.built.pop(uid, None)
        self.analyses.pop(uid, None)

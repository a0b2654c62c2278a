"""The operator's runtime state, kept in Kopf's memo (set up by the startup handler).

Nothing here is a module global: every handler finds the runtime through the `memo` Kopf hands it,
so importing the controllers has no side effects and two operators can run in one process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from maestro.controllers.config import OperatorConfig
from maestro.controllers.queue import WorkQueue
from maestro.reconcile.context import Context

Key = tuple[str, str, str]
Worker = Callable[["Runtime", Hashable], Awaitable[float | None]]

_MEMO_KEY = "maestro_runtime"


async def _idle(_: Runtime, __: Hashable) -> float | None:
    return None


@dataclass
class Runtime:
    config: OperatorConfig
    ctx: Context
    #: What the work queue runs for each key (the reconcile dispatcher).
    worker: Worker = _idle
    ready: bool = False
    #: (kind, namespace, name) -> what dependents last saw of the object (spec, labels, status).
    seen: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    servers: list[web.AppRunner] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    queue: WorkQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(functools.partial(self.worker, self), workers=self.config.workers)

    def enqueue(self, *keys: Key) -> None:
        for key in keys:
            self.queue.add(key)


def attach(memo: Any, rt: Runtime | None) -> None:
    """Keep `rt` in Kopf's operator-wide memo (per-object memos are copies made after startup)."""
    memo[_MEMO_KEY] = rt


def of(memo: Any) -> Runtime | None:
    try:
        rt = memo.get(_MEMO_KEY)
    except AttributeError:
        return None
    return rt if isinstance(rt, Runtime) else None

"""Process-wide operator state shared by the Kopf handlers (set up once in the startup handler)."""

from __future__ import annotations

from dataclasses import dataclass

from maestro.controllers.config import OperatorConfig
from maestro.controllers.queue import WorkQueue
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store


@dataclass
class Runtime:
    config: OperatorConfig
    ctx: Context
    queue: WorkQueue
    ready: bool = False


_runtime: Runtime | None = None


def set_runtime(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt


def runtime() -> Runtime | None:
    return _runtime


def store() -> Store | None:
    return _runtime.ctx.store if _runtime else None

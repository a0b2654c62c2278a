"""A work queue in the controller-runtime style: deduplicated keys, one reconcile per key at a time,
delayed requeues and per-key exponential backoff on errors.

Watch events only *enqueue*; reconciles always read the latest state, so a burst of events for one
object costs one reconcile, and nothing depends on which event came first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("maestro.queue")

Process = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(
        self, process: Process, *, workers: int = 16, base_backoff: float = 0.5, max_backoff: float = 60.0
    ) -> None:
        self._process = process
        self._workers = workers
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._base = base_backoff
        self._max = max_backoff
        #: enqueue time of keys waiting, for latency metrics
        self.enqueued_at: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            timer = self._timers.get(key)
            if timer is not None:
                if timer.when() <= loop.time() + delay:
                    return  # an earlier requeue is pending; the reconcile then reads the latest state
                # a later one (a dataset's retention expiry, days away) must not hold back a retry
                timer.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self.enqueued_at.setdefault(key, time.monotonic())
        self._queue.put_nowait(key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"maestro-worker-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            requeue: float | None = None
            try:
                requeue = await self._process(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed reconcile retries with backoff; the worker lives on
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                requeue = min(self._max, self._base * 2 ** (n - 1))
                log.warning(
                    "Reconcile of %s failed (attempt %d, retry in %.1fs): %s",
                    key,
                    n,
                    requeue,
                    exc,
                    exc_info=not isinstance(exc, _QUIET),
                )
            finally:
                self._active.discard(key)
                self.enqueued_at.pop(key, None)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif requeue is not None:
                self.add(key, requeue)


class _Quiet(Exception):
    """Base of errors logged without a traceback (expected API conditions)."""


_QUIET: tuple[type[BaseException], ...] = (_Quiet,)


def quiet(*types: type[BaseException]) -> None:
    """Register exception types whose failures are logged without a traceback."""
    global _QUIET
    _QUIET = (*_QUIET, *types)

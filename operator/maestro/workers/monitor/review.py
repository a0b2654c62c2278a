"""The review queue: requests the guard served but flagged for a human (a suspected prompt injection
under `request.injection.mode: flag`), appended to `review.jsonl` on the deployment's feedback claim.

The guard marks such a request with a decision whose action is `flag`; the monitor, which already
receives every request's event, writes one line per flagged request next to the user feedback, so a
reviewer (or a dataset built from the file) sees what was flagged, by which rule, with the prompt
as the policy allows it to be kept: its text only where `audit.logPrompts` is on, else its keyed
digest. Writes go to a worker thread (they fsync) under a rate budget, so a flood of attacks costs
counted drops, never a stalled event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.collector import RateBudget
from maestro.workers.monitor.feedback import FeedbackSink
from maestro.workers.monitor.metrics import MonitorMetrics

log = logging.getLogger("maestro.monitor")

#: Flagged requests written per second at most (bursts of the same size).
REVIEW_RATE = 20.0

#: Event fields copied into a review record.
_KEPT = ("requestId", "ts", "model", "key", "route", "status", "policy", "promptText", "promptHmacSha256")


class ReviewQueue:
    """A collector hook: `queue(event)` for every event; flagged ones become review records."""

    def __init__(self, sink: FeedbackSink, metrics: MonitorMetrics, budget: RateBudget | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.budget = budget or RateBudget(REVIEW_RATE)

    def __call__(self, event: dict[str, Any]) -> None:
        flags = [d for d in event.get("decisions") or () if isinstance(d, dict) and d.get("action") == "flag"]
        if not flags:
            return
        if not self.budget.take():
            self.metrics.review_queued.labels("dropped").inc()
            return
        record = {k: event[k] for k in _KEPT if event.get(k) is not None}
        record["flags"] = flags
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(record)
            return
        loop.run_in_executor(None, self._write, record)

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self.sink.append(c.REVIEW_FILE, record)
        except OSError as exc:
            log.warning("review queue: cannot write %s: %s", c.REVIEW_FILE, exc.strerror)
            self.metrics.review_queued.labels("error").inc()
            return
        self.metrics.review_queued.labels("queued").inc()

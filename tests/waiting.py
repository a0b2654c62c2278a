"""`wait_for`, shared by the cluster and e2e tests (tests/ is on sys.path: its conftest.py sits there).

Polls a predicate until it returns something truthy; on timeout the AssertionError names what was
awaited and the last value seen, so a failing test says where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    pred: Callable[[], Any], timeout: float = 60, what: str = "condition", every: float = 0.3
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

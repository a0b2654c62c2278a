"""Token buckets with an explicit clock: exact admissions, refills, debts and Retry-After values."""

from __future__ import annotations

import pytest

from maestro.workers.guard.limits import Limiter

pytestmark = pytest.mark.unit


def test_requests_per_minute_burst_then_refill() -> None:
    lim = Limiter()
    assert all(lim.admit("k", 3, None, 0.0) is None for _ in range(3))
    denied = lim.admit("k", 3, None, 0.0)
    assert denied is not None and denied.rule == "rateLimit"
    assert denied.retry_after == pytest.approx(20.0)  # one request per 20 s at 3/min
    assert lim.admit("k", 3, None, 19.0) is not None
    assert lim.admit("k", 3, None, 20.5) is None
    assert lim.admit("other", 3, None, 0.0) is None  # per key


def test_token_budget_admits_while_positive_and_charges_after() -> None:
    lim = Limiter()
    assert lim.admit("k", None, 600, 0.0) is None
    lim.charge("k", 600, 1200, 0.0)  # one answer overspent: 600 tokens in debt
    denied = lim.admit("k", None, 600, 0.0)
    assert denied is not None and denied.rule == "tokenBudget"
    assert denied.retry_after == pytest.approx(60.1)  # 600 debt at 10 tokens/s, plus one token
    assert lim.admit("k", None, 600, 59.0) is not None
    assert lim.admit("k", None, 600, 60.2) is None


def test_denied_budget_does_not_consume_a_request() -> None:
    lim = Limiter()
    lim.charge("k", 60, 120, 0.0)
    assert lim.admit("k", 1, 60, 0.0) is not None
    assert lim.admit("k", 1, 60, 59.0) is not None
    assert lim.admit("k", 1, 60, 62.0) is None  # budget back; the one request/min was never taken


def test_reload_resizes_without_resetting_spend() -> None:
    lim = Limiter()
    assert lim.admit("k", 2, None, 0.0) is None
    assert lim.admit("k", 2, None, 0.0) is None
    assert lim.admit("k", 10, None, 0.0) is not None  # raised limit: spent requests stay spent
    assert lim.admit("k", 10, None, 6.0) is None  # refills at the new rate (10/min = 1 per 6 s)

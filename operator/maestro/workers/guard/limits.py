"""Per-key request-rate limits and token budgets: in-process token buckets, O(1) per request.

Requests/min: a bucket of `rpm` that refills continuously; a request takes one.
Tokens/min: the cost is only known after the answer (the upstream's `usage`), so a request is
admitted while the budget is positive and charged afterwards; the bucket may go into debt, and the
key waits until the refill pays it back (as Envoy AI Gateway does). These buckets count for one guard
pod; with a Redis configured, `shared_limits.SharedLimiter` keeps the same buckets there for all
replicas and falls back to these (sized to the pod's share) while it is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro.workers.guard.errors import GuardError


class Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.stamp = now

    def resize(self, per_minute: float) -> None:
        """Apply a new limit from a policy reload without resetting what was already spent."""
        if per_minute != self.capacity:
            self.capacity = float(per_minute)
            self.rate = self.capacity / 60.0
            self.level = min(self.level, self.capacity)

    def refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.rate)
            self.stamp = now

    def take(self, now: float, n: float = 1.0) -> float:
        """Take n if available; else return the seconds until it would be (nothing taken)."""
        self.refill(now)
        if self.level >= n:
            self.level -= n
            return 0.0
        return (n - self.level) / self.rate

    def wait_positive(self, now: float) -> float:
        """Seconds until the level is above zero (0 when it already is)."""
        self.refill(now)
        if self.level > 0:
            return 0.0
        return (-self.level) / self.rate + 1.0 / self.rate if self.rate else float("inf")

    def charge(self, now: float, n: float) -> None:
        self.refill(now)
        self.level -= n


@dataclass(slots=True)
class Denied:
    rule: str  # "rateLimit" | "tokenBudget"
    retry_after: float
    limit: float

    def error(self, key: str) -> GuardError:
        """The OpenAI-shaped 429 for this refusal, with Retry-After."""
        rate = self.rule == "rateLimit"
        what = f"{self.limit:g} requests per minute" if rate else f"{self.limit:g} tokens per minute"
        return GuardError(
            429,
            f"Rate limit reached for key {key!r}: {what}. Retry after {self.retry_after:.1f} s.",
            "rate_limit_exceeded" if rate else "token_budget_exceeded",
            retry_after=self.retry_after,
            rule=self.rule,
        )


class Limiter:
    """Buckets keyed by API key id; survive policy reloads (limits are resized in place)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}
        self._max_keys = max_keys

    def _bucket(self, table: dict[str, Bucket], key: str, per_minute: float, now: float) -> Bucket:
        bucket = table.get(key)
        if bucket is None:
            if len(table) >= self._max_keys:  # bounded memory even with a flood of distinct keys
                table.clear()
            bucket = table[key] = Bucket(per_minute, now)
        else:
            bucket.resize(per_minute)
        return bucket

    def admit(self, key: str, rpm: float | None, tpm: float | None, now: float) -> Denied | None:
        """Check both limits; take one request only if both pass."""
        if tpm is not None:
            wait = self._bucket(self._tokens, key, tpm, now).wait_positive(now)
            if wait > 0:
                return Denied("tokenBudget", wait, tpm)
        if rpm is not None:
            wait = self._bucket(self._requests, key, rpm, now).take(now)
            if wait > 0:
                return Denied("rateLimit", wait, rpm)
        return None

    def charge(self, key: str, tpm: float | None, tokens: int, now: float) -> None:
        if tpm is not None and tokens > 0:
            self._bucket(self._tokens, key, tpm, now).charge(now, tokens)

"""Guard events → metrics, text signals, drift, and the short memory feedback needs.

Events are handled inline as the receiver reads them: cheap counters and histograms for every
event, text scoring under a rate budget, drift gauges refreshed at most once a second. The guard
never waits on any of it (the socket between them drops when full).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.drift import DriftMonitor
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.signals import UNDETERMINED, TextAnalyzer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecentRequest:
    model: str
    prompt: str | None
    response: str | None
    ts: float
    #: the traffic-split variant the guard routed the request to (spec.variants), for its feedback
    variant: str | None = None


class RecentRequests:
    """LRU of the last requests by id, so feedback can name the model and carry the prompt.

    Bounded by count and by text bytes (prompts and answers are kept only when the policy logs
    them, and can be 30 kB each): the oldest go first, and feedback on them is still accepted,
    just without the prompt.
    """

    def __init__(self, size: int = 20_000, max_text_bytes: int = 64 * 1024 * 1024) -> None:
        self.size = size
        self.max_text_bytes = max_text_bytes
        self.text_bytes = 0
        self._items: OrderedDict[str, RecentRequest] = OrderedDict()

    @staticmethod
    def _cost(item: RecentRequest) -> int:
        return len(item.prompt or "") + len(item.response or "")

    def add(self, request_id: str, item: RecentRequest) -> None:
        old = self._items.pop(request_id, None)
        if old is not None:
            self.text_bytes -= self._cost(old)
        self._items[request_id] = item
        self.text_bytes += self._cost(item)
        while len(self._items) > self.size or (
            self.text_bytes > self.max_text_bytes and len(self._items) > 1
        ):
            _, evicted = self._items.popitem(last=False)
            self.text_bytes -= self._cost(evicted)

    def get(self, request_id: str) -> RecentRequest | None:
        return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)


class RateBudget:
    """Token bucket: at most `rate` grants per second (bursts up to one second's worth).

    Text scoring (VADER, language) costs ~0.2-0.4 ms per event, far more than the counters; a
    uniform sample keeps the rates and distributions unbiased while capping the monitor's CPU, so
    it cannot compete with the guard and vLLM for the pod's cores under load.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return False
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _variant(value: Any) -> str | None:
    """A variant name from an event (a DNS label of at most 63 characters), else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 63 else None


def _num(value: Any) -> float | None:
    """A finite, non-negative number or None: events are data, never trusted blindly."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f >= 0 else None


class EventCollector:
    """Turns events into metrics as the receiver hands them over in batches (~20 µs each; text
    scoring, the expensive part, runs under `text_budget`). The buffers in front of it are bounded:
    the kernel's socket queue (the guard drops and counts when it is full) and the receiver's
    backlog (drops the oldest, counted as `overload`).
    """

    def __init__(
        self,
        metrics: MonitorMetrics,
        drift: DriftMonitor,
        analyzer: TextAnalyzer,
        *,
        recent: RecentRequests | None = None,
        on_reference_frozen: Callable[[], None] | None = None,
        hooks: list[Callable[[dict[str, Any]], None]] | None = None,
        text_budget: RateBudget | None = None,
        drift_publish_interval: float = 1.0,
    ) -> None:
        self.metrics = metrics
        self.drift = drift
        self.analyzer = analyzer
        self.recent = recent or RecentRequests()
        self.processed = 0
        self.failed = 0
        self._on_reference_frozen = on_reference_frozen
        self.hooks = hooks or []  # e.g. the OTLP exporter's GenAI histograms
        self.text_budget = text_budget or RateBudget(c.DEFAULT_TEXT_SCORE_RATE)
        self.drift_publish_interval = drift_publish_interval
        self._published_at = 0.0
        self._frozen = self._frozen_features()
        for feature in drift.features:
            metrics.drift_threshold.labels(feature).set(drift.threshold)

    # -- intake -------------------------------------------------------------------------------
    def offer(self, event: dict[str, Any]) -> None:
        """One event from the socket. Never raises: a bad event is counted and skipped."""
        self.metrics.events_received.inc()
        try:
            self.process(event)
        except Exception:
            self.failed += 1
            log.exception("monitor: could not process event %r", str(event)[:200])
            self.metrics.events_dropped.labels("malformed").inc()

    def overflowed(self, n: int) -> None:
        """Events the receiver dropped because the monitor fell behind."""
        self.metrics.events_dropped.labels("overload").inc(n)

    def malformed(self) -> None:
        """A datagram that was not a JSON object."""
        self.metrics.events_received.inc()
        self.metrics.events_dropped.labels("malformed").inc()

    def after_batch(self) -> None:
        """Refresh the drift gauges at most once per interval (they cost more than an event)."""
        now = time.monotonic()
        if now - self._published_at >= self.drift_publish_interval:
            self.publish_drift()

    # -- one event ----------------------------------------------------------------------------
    def process(self, event: dict[str, Any]) -> None:
        m = self.metrics
        request_id = str(event.get("requestId") or "")
        if request_id.startswith(c.PROBE_REQUEST_ID_PREFIX):
            return  # our own bias probes: not user traffic
        self.processed += 1
        model = m.model(event.get("model"))
        status = event.get("status")
        code = str(status) if isinstance(status, int) and not isinstance(status, bool) else "unknown"
        m.child(m.requests, model, m.route(event.get("route")), code).inc()
        if event.get("refusal") is True:
            m.child(m.refusals, model).inc()
        finish = event.get("finishReason")
        if isinstance(finish, str) and finish:
            m.child(m.finish_reasons, model, m.reason(finish)).inc()
        prompt_tokens = _num(event.get("promptTokens"))
        completion_tokens = _num(event.get("completionTokens"))
        if prompt_tokens:
            m.child(m.tokens, model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            m.child(m.tokens, model, "completion").inc(completion_tokens)
        for decision in event.get("decisions") or ():
            if isinstance(decision, dict) and decision.get("rule"):
                m.child(m.policy_decisions, m.rule(decision["rule"]), m.action(decision.get("action"))).inc()
        pii = event.get("pii")
        if isinstance(pii, dict):
            for entity, n in pii.items():
                count = _num(n)
                if count:
                    m.child(m.pii, m.entity(entity)).inc(count)
        self._latency(event, model, completion_tokens)
        # A failed or blocked request has no real answer: keep it out of the response features.
        self._lengths_and_text(event, response=not isinstance(status, int) or 200 <= status < 300)
        for hook in self.hooks:
            hook(event)
        if request_id:
            self.recent.add(
                request_id,
                RecentRequest(
                    model=model,
                    prompt=event.get("promptText") if isinstance(event.get("promptText"), str) else None,
                    response=event.get("responseText")
                    if isinstance(event.get("responseText"), str)
                    else None,
                    ts=_num(event.get("ts")) or time.time(),
                    variant=_variant(event.get("variant")),
                ),
            )

    def _latency(self, event: dict[str, Any], model: str, completion_tokens: float | None) -> None:
        m = self.metrics
        latency_ms = _num(event.get("latencyMs"))
        ttft_ms = _num(event.get("ttftMs"))
        if latency_ms is not None:
            m.child(m.duration, model).observe(latency_ms / 1000)
        if ttft_ms is not None:
            m.child(m.ttft, model).observe(ttft_ms / 1000)
        # Mean gap between tokens after the first: only meaningful for a stream with > 1 token.
        if (
            event.get("stream") is True
            and latency_ms is not None
            and ttft_ms is not None
            and completion_tokens
            and completion_tokens > 1
            and latency_ms >= ttft_ms
        ):
            m.child(m.itl, model).observe((latency_ms - ttft_ms) / 1000 / (completion_tokens - 1))

    def _lengths_and_text(self, event: dict[str, Any], response: bool) -> None:
        m = self.metrics
        sides = [("prompt", "promptChars", "promptText", m.prompt_chars)]
        if response:
            sides.append(("response", "responseChars", "responseText", m.response_chars))
        has_text = any(isinstance(event.get(side[2]), str) and event.get(side[2]) for side in sides)
        score_text = has_text and self.text_budget.take()
        if has_text and not score_text:
            m.text_skipped.inc()
        for direction, chars_key, text_key, hist in sides:
            text = event.get(text_key)
            chars = _num(event.get(chars_key))
            if chars is None and isinstance(text, str):
                chars = float(len(text))
            if chars is not None:
                hist.observe(chars)
                self.drift.observe_length(f"{direction}_chars", chars)
            if not score_text or not isinstance(text, str) or not text:
                continue
            m.child(m.text_analyzed, direction).inc()
            language = self.analyzer.language(text)
            m.child(m.languages, direction, m.language(language)).inc()
            if language != UNDETERMINED or len(text) >= 20:
                self.drift.observe(f"{direction}_language", language)
            score = self.analyzer.sentiment(text)
            if score is not None:
                m.child(m.sentiment, direction).observe((score + 1) / 2)
            if self.analyzer.profane(text):
                m.child(m.profanity, direction).inc()

    # -- drift gauges -------------------------------------------------------------------------
    def publish_drift(self) -> None:
        self._published_at = time.monotonic()
        m = self.metrics
        values = self.drift.snapshot()
        for name, feature in self.drift.features.items():
            m.drift_samples.labels(name, "reference").set(feature.reference_count)
            m.drift_samples.labels(name, "current").set(feature.current_size)
            if name in values:
                m.drift_psi.labels(name).set(round(values[name], 6))
                m.drift_alert.labels(name).set(1 if values[name] > self.drift.threshold else 0)
        frozen = self._frozen_features()
        if frozen - self._frozen and self._on_reference_frozen:
            self._on_reference_frozen()  # persist each newly learned feature reference
        self._frozen = frozen

    def _frozen_features(self) -> set[str]:
        return {name for name, f in self.drift.features.items() if f.frozen}

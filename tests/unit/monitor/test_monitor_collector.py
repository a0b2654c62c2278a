from __future__ import annotations

import pytest
from monitor_helpers import event

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.collector import EventCollector, RateBudget, RecentRequest, RecentRequests
from maestro.workers.monitor.drift import DriftMonitor
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.signals import TextAnalyzer

pytestmark = pytest.mark.unit


def _collector(reference: int = 100) -> EventCollector:
    drift = DriftMonitor(c.DRIFT_FEATURES, reference_size=reference, window=reference, threshold=0.2)
    return EventCollector(MonitorMetrics(process=False), drift, TextAnalyzer(), text_budget=RateBudget(1e9))


def _get(col: EventCollector, name: str, **labels: str) -> float | None:
    return col.metrics.registry.get_sample_value(name, labels)


def test_request_counters_and_latency_from_known_traffic() -> None:
    col = _collector()
    for i in range(3):
        col.process(
            event(requestId=f"ok-{i}", stream=True, latencyMs=1100.0, ttftMs=100.0, completionTokens=11)
        )
    col.process(event(requestId="e", status=502, finishReason=None, promptTokens=7, completionTokens=0))
    col.process(event(requestId="len", finishReason="length", refusal=True))

    assert _get(col, c.REQUESTS, model="tiny", route="/v1/chat/completions", code="200") == 4
    assert _get(col, c.REQUESTS, model="tiny", route="/v1/chat/completions", code="502") == 1
    assert _get(col, c.REFUSALS, model="tiny") == 1
    assert _get(col, c.FINISH_REASONS, model="tiny", reason="stop") == 3
    assert _get(col, c.FINISH_REASONS, model="tiny", reason="length") == 1
    assert _get(col, c.TOKENS, model="tiny", type="prompt") == 3 * 10 + 7 + 10
    assert _get(col, c.TOKENS, model="tiny", type="completion") == 3 * 11 + 20
    assert _get(col, c.TTFT + "_count", model="tiny") == 5
    assert _get(col, c.TTFT + "_sum", model="tiny") == pytest.approx(0.5)
    # ITL = (1100 - 100) ms / (11 - 1) tokens = 0.1 s, streamed requests only
    assert _get(col, c.INTER_TOKEN_LATENCY + "_count", model="tiny") == 3
    assert _get(col, c.INTER_TOKEN_LATENCY + "_sum", model="tiny") == pytest.approx(0.3)
    assert _get(col, c.REQUEST_DURATION + "_sum", model="tiny") == pytest.approx(3 * 1.1 + 0.5 + 0.5)
    # the failed request's (empty) answer is kept out of the response length
    assert _get(col, c.PROMPT_CHARS + "_count") == 5
    assert _get(col, c.RESPONSE_CHARS + "_count") == 4


def test_policy_decisions_and_pii_by_type() -> None:
    col = _collector()
    col.process(
        event(
            status=400,
            decisions=[
                {"rule": "blockedTerms", "action": "block"},
                {"rule": "pii.input", "action": "redact"},
            ],
            pii={"EMAIL": 2, "PHONE": 1, "IBAN": 0},
        )
    )
    col.process(event(decisions=[{"rule": "pii.input", "action": "redact"}], pii={"EMAIL": 1}))
    assert _get(col, c.POLICY_DECISIONS, rule="blockedTerms", action="block") == 1
    assert _get(col, c.POLICY_DECISIONS, rule="pii.input", action="redact") == 2
    assert _get(col, c.PII_DETECTIONS, entity="EMAIL") == 3
    assert _get(col, c.PII_DETECTIONS, entity="PHONE") == 1
    assert _get(col, c.PII_DETECTIONS, entity="IBAN") is None


def test_text_signals_only_when_text_is_logged() -> None:
    col = _collector()
    col.process(event())  # no text: lengths only
    assert _get(col, c.TEXT_ANALYZED, direction="response") is None
    col.process(
        event(
            promptText="Tell me something nice about the weather today.",
            responseText="What a wonderful, lovely sunny day, I love it!",
        )
    )
    col.process(event(responseText="This damn printer is a piece of shit and it is awful."))
    assert _get(col, c.TEXT_ANALYZED, direction="prompt") == 1
    assert _get(col, c.TEXT_ANALYZED, direction="response") == 2
    assert _get(col, c.LANGUAGE, direction="response", language="en") == 2
    assert _get(col, c.PROFANITY, direction="response") == 1
    assert _get(col, c.PROFANITY, direction="prompt") is None
    assert _get(col, c.SENTIMENT + "_count", direction="response") == 2
    # one clearly positive, one clearly negative answer (compound rescaled to 0..1)
    assert _get(col, c.SENTIMENT + "_bucket", direction="response", le="0.375") == 1
    mean = _get(col, c.SENTIMENT + "_sum", direction="response") / 2
    assert 0.3 < mean < 0.7


def test_malformed_fields_are_ignored_not_fatal() -> None:
    col = _collector()
    col.offer(
        event(
            latencyMs="slow", ttftMs=-5, promptTokens=True, pii={"EMAIL": "x"}, decisions=["bad"], status="x"
        )
    )
    col.offer({"unexpected": ["shape"]})
    assert col.processed == 2 and col.failed == 0
    assert _get(col, c.REQUESTS, model="tiny", route="/v1/chat/completions", code="unknown") == 1
    assert _get(col, c.TTFT + "_count", model="tiny") is None
    assert _get(col, c.PII_DETECTIONS, entity="EMAIL") is None
    assert _get(col, c.EVENTS_RECEIVED) == 2


def test_a_failing_event_is_counted_and_the_next_one_still_counts() -> None:
    col = _collector()

    def broken_hook(ev: dict) -> None:
        if ev["requestId"] == "bad":
            raise RuntimeError("boom")

    col.hooks.append(broken_hook)
    col.offer(event(requestId="bad"))
    col.offer(event(requestId="good"))
    col.malformed()
    assert col.failed == 1
    assert _get(col, c.EVENTS_DROPPED, reason="malformed") == 2
    assert _get(col, c.EVENTS_RECEIVED) == 3
    assert col.recent.get("good") is not None


def test_probe_events_are_not_traffic() -> None:
    col = _collector()
    col.process(event(requestId=c.PROBE_REQUEST_ID_PREFIX + "abc"))
    assert col.processed == 0
    assert _get(col, c.REQUESTS, model="tiny", route="/v1/chat/completions", code="200") is None


def test_label_values_from_traffic_are_bounded() -> None:
    col = _collector()
    for i in range(40):
        col.process(event(model=f"model-{i}"))
    models = {
        s.labels["model"]
        for f in col.metrics.registry.collect()
        if f.name == c.REQUESTS.removesuffix("_total")
        for s in f.samples
    }
    assert len(models) == 17 and "other" in models  # 16 distinct, then "other"


def test_drift_gauges_published() -> None:
    col = _collector(reference=100)
    for _ in range(100):
        col.process(event(promptChars=50))
    for _ in range(100):
        col.process(event(promptChars=5000))
    col.publish_drift()
    assert _get(col, c.DRIFT_PSI, feature="prompt_chars") > 1
    assert _get(col, c.DRIFT_ALERT, feature="prompt_chars") == 1
    assert _get(col, c.DRIFT_PSI, feature="response_chars") == pytest.approx(0.0)
    assert _get(col, c.DRIFT_ALERT, feature="response_chars") == 0
    assert _get(col, c.DRIFT_THRESHOLD, feature="prompt_language") == 0.2
    assert _get(col, c.DRIFT_PSI, feature="prompt_language") is None  # no text logged: never reported
    assert _get(col, c.DRIFT_SAMPLES, feature="prompt_chars", window="current") == 100


def test_text_scoring_is_rate_limited_but_counters_stay_exact() -> None:
    now = [0.0]
    col = _collector()
    col.text_budget = RateBudget(5, clock=lambda: now[0])
    for i in range(20):
        col.process(event(requestId=f"r{i}", responseText="A fine answer in plain English, thank you."))
    assert _get(col, c.TEXT_ANALYZED, direction="response") == 5  # one second's burst
    assert _get(col, c.TEXT_SKIPPED) == 15
    assert _get(col, c.RESPONSE_CHARS + "_count") == 20  # lengths and counters see every event
    now[0] += 1.0  # a second later: 5 more
    for i in range(10):
        col.process(event(requestId=f"s{i}", responseText="Another answer."))
    assert _get(col, c.TEXT_ANALYZED, direction="response") == 10
    off = RateBudget(0)
    assert not any(off.take() for _ in range(3))


def test_recent_requests_are_bounded_by_count_and_text_bytes() -> None:
    recent = RecentRequests(size=3, max_text_bytes=100)
    for i in range(5):
        recent.add(f"r{i}", RecentRequest("tiny", None, None, 0.0))
    assert len(recent) == 3 and recent.get("r1") is None and recent.get("r4") is not None
    recent.add("big1", RecentRequest("tiny", "p" * 40, "a" * 20, 0.0))
    recent.add("big2", RecentRequest("tiny", "p" * 40, "a" * 20, 0.0))  # 120 bytes > 100: big1 goes
    assert recent.get("big1") is None and recent.get("big2") is not None
    assert recent.text_bytes == 60
    recent.add("big2", RecentRequest("tiny", "p", None, 0.0))  # replacing an id re-counts its bytes
    assert recent.text_bytes == 1

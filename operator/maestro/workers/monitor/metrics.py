"""The monitor's Prometheus series, on a registry of its own (tests build as many as they like).

Names come from `contract` so dashboards, alerts and tests share them. Label values that come
from traffic (model, rule, entity, language) pass through `Bounded`, so a misbehaving client
cannot blow up the series count of the whole Prometheus.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from maestro.workers.monitor import contract as c

# Latency buckets: 5 ms … 60 s (TTFT on CPU can be seconds, on GPU tens of ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1)
CHAR_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
# Sentiment is VADER's compound score rescaled from [-1, 1] to [0, 1] (0.5 = neutral): Prometheus
# clients drop a histogram's _sum when buckets are negative, and the dashboards need the mean.
SENTIMENT_BUCKETS = (0.125, 0.25, 0.375, 0.475, 0.525, 0.625, 0.75, 0.875, 1.0)
RATING_BUCKETS = (1, 2, 3, 4, 5)
#: Feedback scores are 0..1 in steps of 1/8 at the finest (ratings in halves map to eighths).
SCORE_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)

OTHER = "other"


class Bounded:
    """At most `limit` distinct values per label; later newcomers are reported as 'other'."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        v = str(value) if value not in (None, "") else "unknown"
        v = v[:80]
        if v in self._seen:
            return v
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(v)
        return v


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = r = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.model = Bounded(16)
        self.route = Bounded(16)
        self.rule = Bounded(128)
        self.entity = Bounded(64)
        self.language = Bounded(64)
        self.reason = Bounded(16)
        self.action = Bounded(16)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name.removesuffix("_total"), doc, labels, registry=r)

        self.events_received = counter(c.EVENTS_RECEIVED, "Guard events received.")
        self.events_dropped = counter(c.EVENTS_DROPPED, "Guard events dropped by the monitor.", ("reason",))
        self.requests = counter(c.REQUESTS, "Requests finished by the guard.", ("model", "route", "code"))
        self.refusals = counter(c.REFUSALS, "Responses the guard classified as refusals.", ("model",))
        self.finish_reasons = counter(c.FINISH_REASONS, "Finish reasons of completions.", ("model", "reason"))
        self.tokens = counter(c.TOKENS, "Tokens processed, as reported by vLLM usage.", ("model", "type"))
        self.policy_decisions = counter(
            c.POLICY_DECISIONS, "Policy rule decisions applied by the guard.", ("rule", "action")
        )
        self.pii = counter(c.PII_DETECTIONS, "PII entities detected by the guard.", ("entity",))
        self.ttft = Histogram(
            c.TTFT, "Time to first token seen at the guard.", ("model",), buckets=LATENCY_BUCKETS, registry=r
        )
        self.itl = Histogram(
            c.INTER_TOKEN_LATENCY,
            "Mean inter-token latency per streamed request.",
            ("model",),
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            c.REQUEST_DURATION,
            "Request latency at the guard.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_chars = Histogram(
            c.PROMPT_CHARS, "Prompt length (characters).", buckets=CHAR_BUCKETS, registry=r
        )
        self.response_chars = Histogram(
            c.RESPONSE_CHARS, "Response length (characters).", buckets=CHAR_BUCKETS, registry=r
        )
        self.text_analyzed = counter(
            c.TEXT_ANALYZED, "Texts scored for language/sentiment/profanity.", ("direction",)
        )
        self.text_skipped = counter(c.TEXT_SKIPPED, "Events whose text was not scored (rate budget).")
        self.languages = counter(c.LANGUAGE, "Detected language of texts.", ("direction", "language"))
        self.sentiment = Histogram(
            c.SENTIMENT,
            "Sentiment of texts: VADER compound rescaled to 0..1 (0.5 neutral).",
            ("direction",),
            buckets=SENTIMENT_BUCKETS,
            registry=r,
        )
        self.profanity = counter(c.PROFANITY, "Texts containing profanity.", ("direction",))
        self.drift_psi = Gauge(
            c.DRIFT_PSI, "PSI of the current window vs the reference.", ("feature",), registry=r
        )
        self.drift_threshold = Gauge(c.DRIFT_THRESHOLD, "PSI alert threshold.", ("feature",), registry=r)
        self.drift_alert = Gauge(c.DRIFT_ALERT, "1 when PSI exceeds the threshold.", ("feature",), registry=r)
        self.drift_samples = Gauge(
            c.DRIFT_SAMPLES, "Events in the drift windows.", ("feature", "window"), registry=r
        )
        self.feedback = counter(c.FEEDBACK, "User feedback received.", ("model", "sentiment"))
        self.feedback_rating = Histogram(
            c.FEEDBACK_RATING, "User ratings (1-5).", ("model",), buckets=RATING_BUCKETS, registry=r
        )
        self.feedback_corrections = counter(c.FEEDBACK_CORRECTIONS, "Feedback with a correction.", ("model",))
        self.variant = Bounded(64)  # the guard's own cap on its variant label
        self.variant_feedback_score = Histogram(
            c.VARIANT_FEEDBACK_SCORE,
            "Feedback score (0 bad .. 1 good) on requests routed to a traffic-split variant.",
            ("variant",),
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.feedback_sink_errors = counter(
            c.FEEDBACK_SINK_ERRORS, "Feedback records not written to the sink."
        )
        self.review_queued = counter(
            c.REVIEW_QUEUED,
            "Flagged requests written to the review queue (or dropped, or failed).",
            ("result",),
        )
        self.vllm_up = Gauge(c.VLLM_UP, "1 when the last vLLM /metrics scrape succeeded.", registry=r)
        self.vllm_scrape_duration = Gauge(
            c.VLLM_SCRAPE_DURATION, "Duration of the last vLLM scrape.", registry=r
        )
        self.vllm_scrape_errors = counter(c.VLLM_SCRAPE_ERRORS, "Failed vLLM scrapes.", ("reason",))
        self.vllm_restarts = counter(c.VLLM_RESTARTS, "vLLM restarts detected (counter resets).")
        self.vllm_tokens_per_second = Gauge(
            c.VLLM_TOKENS_PER_SECOND, "Token throughput between the last two scrapes.", ("type",), registry=r
        )
        self.vllm_requests = Gauge(
            c.VLLM_REQUESTS, "vLLM requests by scheduler state.", ("state",), registry=r
        )
        self.vllm_kv_cache = Gauge(c.VLLM_KV_CACHE_USAGE, "vLLM KV-cache usage (0-1).", registry=r)
        self.probe_requests = counter(c.PROBE_REQUESTS, "Bias probe requests sent.", ("result",))
        self.bias_sentiment = Gauge(
            c.BIAS_SENTIMENT, "Mean probe response sentiment per group.", ("axis", "group"), registry=r
        )
        self.bias_refusal = Gauge(
            c.BIAS_REFUSAL_RATIO, "Probe refusal ratio per group.", ("axis", "group"), registry=r
        )
        self.bias_sentiment_gap = Gauge(
            c.BIAS_SENTIMENT_GAP, "Max-min group mean sentiment per axis.", ("axis",), registry=r
        )
        self.bias_refusal_gap = Gauge(
            c.BIAS_REFUSAL_GAP, "Max-min group refusal ratio per axis.", ("axis",), registry=r
        )
        self.vllm_up.set(0)
        # Known label values start at 0, so rate() and alerts see a series before the first incident.
        for reason in ("malformed", "overload"):
            self.events_dropped.labels(reason)
        for reason in ("connect", "timeout", "http", "parse", "too_large"):
            self.vllm_scrape_errors.labels(reason)
        for result in ("ok", "error", "throttled", "skipped"):
            self.probe_requests.labels(result)
        for result in ("queued", "dropped", "error"):
            self.review_queued.labels(result)

    def start_series(self, model: str | None) -> None:
        """Every series a dashboard or alert reads, at zero, before its first event: a panel then shows
        "0" (or "not yet computed") instead of "no data", and an alert on a rate is evaluable from the
        start. PSI is NaN until a reference window exists (0 would claim "no drift")."""
        name = self.model(model)
        for metric in (self.refusals, self.feedback_corrections):
            self.child(metric, name)
        for histogram in (self.ttft, self.itl, self.duration, self.feedback_rating):
            self.child(histogram, name)
        for sentiment in ("positive", "negative", "neutral"):
            self.child(self.feedback, name, sentiment)
        for direction in ("prompt", "response"):
            self.child(self.profanity, direction)
            self.child(self.text_analyzed, direction)
        for feature in c.DRIFT_FEATURES:
            self.drift_psi.labels(feature).set(float("nan"))
            self.drift_alert.labels(feature).set(0)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, memoised: labels() re-validates on every call (~2 µs), and the
        event path calls it a dozen times per request. Label values are bounded, so is the memo."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

"""Prometheus metrics (always) and OpenTelemetry spans/metrics (when an OTLP endpoint is configured).

Names follow the OTel GenAI semantic conventions (server side, since the guard fronts the model
server): `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
`gen_ai.client.token.usage` (as Envoy AI Gateway does for the token histogram), with
`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`. Prometheus cannot carry dots, so the
scrape endpoint exposes the same series as `gen_ai_server_request_duration_seconds` & co., plus
`maestro_guard_*` for the policy side. The per-request series are plain dicts: a request costs a few dict
lookups and list increments (no locks: one event-loop thread), rendered only when scraped.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from maestro.workers.guard import contract
from maestro.workers.guard.contract import OTEL_ENDPOINT_ENV

log = logging.getLogger("maestro.guard")

_DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, … 67,108,864 (semconv advice)

OPERATIONS = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "models": "models",
}
PROVIDER = "vllm"
#: Distinct `variant` label values one guard process exports (then "other").
MAX_VARIANT_LABELS = 64


class _Histogram:
    """A labelled histogram without locks: the guard updates it from one event-loop thread only."""

    __slots__ = ("bounds", "help", "labelnames", "name", "series")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.name, self.help, self.labelnames, self.bounds = name, help_, labelnames, bounds
        self.series: dict[tuple[str, ...], list[Any]] = {}  # labels -> [bucket counts, sum]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        s[0][bisect_left(self.bounds, value)] += 1
        s[1] += value

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, (counts, total) in list(self.series.items()):
            buckets, acc = [], 0
            for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), counts, strict=True):
                acc += n
                buckets.append((bound, acc))
            fam.add_metric(list(labels), buckets, sum_value=total)
        return fam


class _Counter:
    __slots__ = ("help", "labelnames", "name", "series")

    def __init__(self, name: str, help_: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.help, self.labelnames = name, help_, labelnames
        self.series: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], n: float = 1) -> None:
        self.series[labels] = self.series.get(labels, 0) + n

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, value in list(self.series.items()):
            fam.add_metric(list(labels), value)
        return fam


class _HotCollector:
    """Renders the per-request series at scrape time (the scrape pays, not the request)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[Any]:
        t = self.t
        for metric in (t.requests, t.duration, t.ttft, t.tokens, t.decisions, t.pii, *t.variant_series):
            yield metric.family()
        yield GaugeMetricFamily("maestro_guard_inflight_requests", "Requests in progress.", value=t.inflight)


class Telemetry:
    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # per-request series: plain dicts, no locks, rendered by _HotCollector
        self.requests = _Counter(
            "maestro_guard_requests", "Requests answered by the guard.", ("route", "status")
        )
        self.duration = _Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from request received to response complete.",
            ("gen_ai_operation_name", "gen_ai_request_model", "stream"),
            _DURATION_BUCKETS,
        )
        self.ttft = _Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed content event.",
            ("gen_ai_operation_name", "gen_ai_request_model"),
            _TTFT_BUCKETS,
        )
        self.tokens = _Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request, from the upstream's usage.",
            ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"),
            _TOKEN_BUCKETS,
        )
        self.decisions = _Counter(
            "maestro_guard_policy_decisions", "Policy rule decisions.", ("rule", "action")
        )
        self.pii = _Counter(
            "maestro_guard_pii_entities", "PII entities found (input and output).", ("entity",)
        )
        # per-variant series (spec.variants), only for routed requests: the existing series keep
        # their labels (dashboards, alerts), these add the experiment's view next to them
        self.variant_requests = _Counter(
            contract.VARIANT_REQUESTS_METRIC.removesuffix("_total"),
            "Requests routed to a variant.",
            ("variant", "status"),
        )
        self.variant_duration = _Histogram(
            contract.VARIANT_DURATION_METRIC,
            "Time from request received to response complete, per variant.",
            ("variant",),
            _DURATION_BUCKETS,
        )
        self.variant_tokens = _Counter(
            contract.VARIANT_TOKENS_METRIC.removesuffix("_total"),
            "Tokens per variant, from the upstream's usage.",
            ("variant", "type"),
        )
        self.variant_refusals = _Counter(
            contract.VARIANT_REFUSALS_METRIC.removesuffix("_total"),
            "Responses classified as refusals, per variant.",
            ("variant",),
        )
        self.variant_policy_hits = _Counter(
            contract.VARIANT_POLICY_HITS_METRIC.removesuffix("_total"),
            "Requests on which a policy rule blocked, flagged or redacted content, per variant.",
            ("variant",),
        )
        self.variant_series = (
            self.variant_requests,
            self.variant_duration,
            self.variant_tokens,
            self.variant_refusals,
            self.variant_policy_hits,
        )
        self._variant_labels: set[str] = set()
        self.inflight = 0
        r.register(_HotCollector(self))
        # rare events: the stock client is fine
        self.upstream_errors = Counter(
            "maestro_guard_upstream_errors", "Upstream failures seen by the guard.", ["kind"], registry=r
        )
        self.policy_info = Gauge(
            "maestro_guard_policy_info", "The policy in force (value 1).", ["name", "digest"], registry=r
        )
        self.reloads = Counter(
            "maestro_guard_policy_reloads", "Policy/key reload attempts.", ["result"], registry=r
        )
        self.events_dropped = Counter(
            "maestro_guard_events_dropped", "Monitor events dropped (monitor absent or slow).", registry=r
        )
        # rate-limit backend: always exported (backend="local" without a shared store), so the alert on
        # `maestro_guard_limit_backend_up == 0` has its series on every guard
        self.limit_backend_up = Gauge(
            "maestro_guard_limit_backend_up",
            "1 while the rate-limit backend answers: backend=redis the shared store, local in-process only.",
            ["backend"],
            registry=r,
        )
        self.limit_backend_errors = Counter(
            "maestro_guard_limit_backend_errors",
            "Failed calls to the shared rate-limit store (timeouts, refused connections, errors).",
            registry=r,
        )
        self.limit_peers = Gauge(
            "maestro_guard_limit_peers",
            "Live guard replicas last seen in the shared store: while it is unreachable (failOpen) each "
            "pod enforces limit / this. 1 without a shared store.",
            registry=r,
        )
        self.set_limit_backend("local", True)
        self.limit_peers.set(1)
        self.otel = _Otel.create(tracer_provider, meter_provider)

    @property
    def series_count(self) -> int:
        """Labelled series held in memory (bounded: model labels are capped by the proxy)."""
        return sum(
            len(m.series)
            for m in (
                self.requests,
                self.duration,
                self.ttft,
                self.tokens,
                self.decisions,
                self.pii,
                *self.variant_series,
            )
        )

    def set_limit_backend(self, backend: str, up: bool) -> None:
        """One `maestro_guard_limit_backend_up` series: where limits are counted, and if it answers."""
        self.limit_backend_up.clear()
        self.limit_backend_up.labels(backend).set(1 if up else 0)

    def set_policy(self, name: str, digest: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(name or "none", digest or "none").set(1)

    def record(
        self,
        *,
        route: str,
        status: int,
        model: str,
        stream: bool,
        duration_s: float,
        ttft_s: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        decisions: list[dict[str, str]],
        pii: Mapping[str, int],
        error: str | None,
        span: Any = None,
    ) -> None:
        op = OPERATIONS.get(route, route)
        self.requests.inc((route, str(status)))
        self.duration.observe((op, model, "true" if stream else "false"), duration_s)
        if ttft_s is not None:
            self.ttft.observe((op, model), ttft_s)
        if prompt_tokens:
            self.tokens.observe((op, model, "input"), prompt_tokens)
        if completion_tokens:
            self.tokens.observe((op, model, "output"), completion_tokens)
        for d in decisions:
            self.decisions.inc((d["rule"], d["action"]))
        for entity, n in pii.items():
            self.pii.inc((entity,), n)
        if self.otel is not None:
            self.otel.record(
                op,
                status,
                model,
                stream,
                duration_s,
                ttft_s,
                prompt_tokens,
                completion_tokens,
                decisions,
                error,
                span,
            )

    def record_variant(
        self,
        variant: str | None,
        prompt_digest: str | None,
        *,
        status: int,
        duration_s: float,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        refusal: bool = False,
        decisions: list[dict[str, str]] | None = None,
        span: Any = None,
    ) -> None:
        """The per-variant series of a routed request, and its variant and prompt digest on the span
        (call before `record`, which ends the span). Variant names are bounded by the API (16 per
        deployment); across reloads the label set is capped at MAX_VARIANT_LABELS, then "other".
        A variant's refusal and policy-hit counters start at 0 with its first request, so a rate or an
        increase over a window sees the first refusal too (a counter born at 1 reads as no change)."""
        if variant is not None:
            label = variant
            if variant not in self._variant_labels:
                if len(self._variant_labels) < MAX_VARIANT_LABELS:
                    self._variant_labels.add(variant)
                else:
                    label = "other"
            key = (label,)
            if key not in self.variant_refusals.series:
                self.variant_refusals.inc(key, 0)
                self.variant_policy_hits.inc(key, 0)
            if refusal:
                self.variant_refusals.inc(key)
            if decisions and any(d["action"] in contract.POLICY_HIT_ACTIONS for d in decisions):
                self.variant_policy_hits.inc(key)
            self.variant_requests.inc((label, str(status)))
            self.variant_duration.observe((label,), duration_s)
            if prompt_tokens:
                self.variant_tokens.inc((label, "input"), prompt_tokens)
            if completion_tokens:
                self.variant_tokens.inc((label, "output"), completion_tokens)
        if span is not None:
            if variant is not None:
                span.set_attribute("maestro.guard.variant", variant)
            if prompt_digest:
                span.set_attribute("maestro.guard.prompt_digest", prompt_digest)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Otel:
    """The OTel side, built only when configured: the hot path pays nothing when it is off."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        self.tracer = tracer
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration", unit="s", description="GenAI server request duration"
        )
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s", description="Time to generate the first token"
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used"
        )
        self.decisions = meter.create_counter(
            "maestro.guard.policy.decisions", unit="{decision}", description="Policy rule decisions"
        )

    @classmethod
    def create(cls, tracer_provider: Any, meter_provider: Any) -> _Otel | None:
        if tracer_provider is None and meter_provider is None:
            if not os.environ.get(OTEL_ENDPOINT_ENV):
                return None
            tracer_provider, meter_provider = _otlp_providers()
            if tracer_provider is None:
                return None
        from opentelemetry import metrics, trace

        tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("maestro.guard")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("maestro.guard")
        return cls(tracer, meter)

    def record(
        self,
        op: str,
        status: int,
        model: str,
        stream: bool,
        duration_s: float,
        ttft_s: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        decisions: list[dict[str, str]],
        error: str | None,
        span: Any,
    ) -> None:
        base = {"gen_ai.operation.name": op, "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": model}
        if error:
            base["error.type"] = error
        self.duration.record(duration_s, base)
        if ttft_s is not None:
            self.ttft.record(ttft_s, base)
        if prompt_tokens:
            self.tokens.record(prompt_tokens, {**base, "gen_ai.token.type": "input"})
        if completion_tokens:
            self.tokens.record(completion_tokens, {**base, "gen_ai.token.type": "output"})
        for d in decisions:
            self.decisions.add(1, {"rule": d["rule"], "action": d["action"]})
        span_attrs: dict[str, Any] = {
            **base,
            "http.response.status_code": status,
            "gen_ai.request.stream": stream,
        }
        if prompt_tokens is not None:
            span_attrs["gen_ai.usage.input_tokens"] = prompt_tokens
        if completion_tokens is not None:
            span_attrs["gen_ai.usage.output_tokens"] = completion_tokens
        if ttft_s is not None:
            span_attrs["gen_ai.response.time_to_first_chunk"] = ttft_s
        if decisions:
            span_attrs["maestro.guard.decisions"] = [f"{d['rule']}:{d['action']}" for d in decisions]
        if span is None:
            return
        span.update_name(f"{op} {model}")
        span.set_attributes(span_attrs)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, error or str(status)))
        span.end()

    def start(self, headers: Mapping[str, str]) -> Any:
        """A server span for one request, child of the caller's W3C trace context when it sent one."""
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        return self.tracer.start_span("guard", context=extract(dict(headers)), kind=SpanKind.SERVER)

    def inject(self, span: Any, carrier: dict[str, str]) -> None:
        """traceparent for the upstream call, so vLLM's spans nest under the guard's."""
        from opentelemetry.propagate import inject
        from opentelemetry.trace import set_span_in_context

        inject(carrier, context=set_span_in_context(span))


def _otlp_providers() -> tuple[Any, Any]:
    """OTLP/HTTP exporters configured from the standard OTEL_* variables; (None, None) if not installed."""
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "%s is set but the OpenTelemetry SDK/exporter is not installed (%s); OTel export is off",
            OTEL_ENDPOINT_ENV,
            exc,
        )
        return None, None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "maestro-guard")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider

"""OTLP/HTTP metrics export, on when MAESTRO_OTLP_ENDPOINT is set.

Two kinds of instruments:
- the GenAI semantic-convention histograms (`gen_ai.server.time_to_first_token`,
  `gen_ai.server.time_per_output_token`, `gen_ai.server.request.duration`,
  `gen_ai.client.token.usage`), recorded from guard events with the convention's attributes;
- every Prometheus counter and gauge of the monitor, bridged as observable instruments named
  `maestro.monitor.<name>` (one source of truth: the Prometheus registry).
The SDK exports from its own thread; nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from maestro.workers.monitor import contract as c

log = logging.getLogger(__name__)

# Bucket advice from the GenAI conventions (seconds; tokens in powers of 4).
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
TOKEN_BUCKETS = [float(4**i) for i in range(14)]


def otel_name(prom_name: str) -> str:
    """`maestro_monitor_requests_total` → `maestro.monitor.requests`."""
    base = prom_name.removesuffix("_total")
    return "maestro.monitor." + base.removeprefix(c.P) if base.startswith(c.P) else base


class OtlpExporter:
    def __init__(
        self,
        endpoint: str,
        registry: CollectorRegistry,
        *,
        served_model: str | None = None,
        interval_s: float = 15.0,
        service_name: str = "maestro-monitor",
    ) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.metrics import CallbackOptions, Observation
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
        except ImportError as e:
            raise RuntimeError(
                f"{c.ENV_OTLP_ENDPOINT} is set but the OpenTelemetry SDK is missing ({e}); "
                "install maestro-llmops[monitor] or unset the endpoint"
            ) from e
        self._Observation = Observation
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/metrics"):
            url += "/v1/metrics"
        self.url = url
        self.registry = registry
        self._snap: dict[str, list[tuple[dict[str, str], float]]] | None = None
        self._snap_at = 0.0
        self.served_model = served_model
        self.reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=url, timeout=5), export_interval_millis=int(interval_s * 1000)
        )
        attrs: dict[str, Any] = {"service.name": service_name}
        if served_model:
            attrs["gen_ai.request.model"] = served_model
        self.provider = MeterProvider(resource=Resource.create(attrs), metric_readers=[self.reader])
        meter = self.provider.get_meter("maestro.monitor")
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            "s",
            "Time to first token",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            "s",
            "Time per output token after the first",
            explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration",
            "s",
            "Request duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per request",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        for family in registry.collect():
            if not family.name.startswith(c.P) or family.type not in ("counter", "gauge"):
                continue
            name = family.name

            def callback(_: CallbackOptions, name: str = name) -> Iterable[Observation]:
                return self._observe(name)

            if family.type == "counter":
                meter.create_observable_counter(otel_name(name), [callback], description=family.documentation)
            else:
                meter.create_observable_gauge(otel_name(name), [callback], description=family.documentation)

    def _observe(self, name: str) -> list[Any]:
        return [self._Observation(value, labels) for labels, value in self._snapshot().get(name, ())]

    def _snapshot(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """One registry walk per export, shared by every instrument's callback (they run back to back)."""
        now = time.monotonic()
        if self._snap is None or now - self._snap_at > 1.0:
            snap: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in self.registry.collect():
                snap[family.name] = [
                    (dict(s.labels), s.value) for s in family.samples if not s.name.endswith("_created")
                ]
            self._snap, self._snap_at = snap, now
        return self._snap

    def record_event(self, event: dict[str, Any]) -> None:
        """GenAI convention histograms for one guard event (called by the collector)."""
        model = event.get("model") or self.served_model or "unknown"
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat" if "chat" in str(event.get("route") or "") else "text_completion",
            "gen_ai.provider.name": "vllm",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
        }
        status = event.get("status")
        if isinstance(status, int) and status >= 400:
            attrs["error.type"] = str(status)
        latency, ttft = event.get("latencyMs"), event.get("ttftMs")
        if isinstance(latency, int | float):
            self.duration.record(latency / 1000, attrs)
        if isinstance(ttft, int | float):
            self.ttft.record(ttft / 1000, attrs)
        completion = event.get("completionTokens")
        if (
            event.get("stream") is True
            and isinstance(latency, int | float)
            and isinstance(ttft, int | float)
            and isinstance(completion, int)
            and completion > 1
            and latency >= ttft
        ):
            self.tpot.record((latency - ttft) / 1000 / (completion - 1), attrs)
        for key, kind in (("promptTokens", "input"), ("completionTokens", "output")):
            n = event.get(key)
            if isinstance(n, int) and n >= 0:
                self.tokens.record(n, {**attrs, "gen_ai.token.type": kind})

    def flush(self, timeout_ms: int = 10_000) -> bool:
        """Blocking: call from a thread when an event loop serves the collector."""
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self, timeout_ms: int = 3_000) -> None:
        """Final export, bounded: an unreachable collector must not hold up pod termination."""
        self.provider.shutdown(timeout_millis=timeout_ms)

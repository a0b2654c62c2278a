"""OpenTelemetry: one span per request joining the caller's trace, GenAI metrics, both by semconv name."""

from __future__ import annotations

import time

import pytest
from guard_helpers import Stack, open_request, policy_doc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from maestro.workers.guard.telemetry import Telemetry

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_spans_and_metrics_use_gen_ai_conventions(stack: Stack) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    stack.start(policy_doc(open_request(blockedTerms=["nope"])), telemetry=telemetry)
    client = stack.client()
    client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    )
    list(
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )

    # the stream's span ends once the guard has written the last chunk, which can be a moment
    # after the client has read it: wait (bounded) for it rather than racing the server thread
    deadline = time.monotonic() + 5
    while len(spans.get_finished_spans()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    done = spans.get_finished_spans()
    assert [s.name for s in done] == ["chat tiny", "chat tiny"]
    first, second = done
    assert format(first.context.trace_id, "032x") == TRACE_ID  # joined the caller's trace
    assert first.parent is not None and format(first.parent.span_id, "016x") == "00f067aa0ba902b7"
    attrs = first.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "tiny"
    assert attrs["gen_ai.provider.name"] == "vllm" and attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert (second.attributes or {})["gen_ai.response.time_to_first_chunk"] > 0
    assert first.end_time > first.start_time
    assert first.kind.name == "SERVER"
    # the upstream call carries the guard's span as parent, so vLLM's spans nest under it
    sent = stack.upstream.headers[0]["traceparent"].split("-")
    assert sent[1] == TRACE_ID and sent[2] == format(first.context.span_id, "016x")

    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.client.token.usage",
    } <= set(metrics)
    token_points = metrics["gen_ai.client.token.usage"].data.data_points
    assert {p.attributes["gen_ai.token.type"] for p in token_points} == {"input", "output"}
    assert metrics["gen_ai.server.request.duration"].unit == "s"

"""OTLP/HTTP export to a fake collector on loopback, decoded with the OTLP protobufs."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import web
from monitor_helpers import Served, event

from maestro.workers.events import EventEmitter

pytestmark = pytest.mark.unit

metrics_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")


class FakeCollector:
    def __init__(self) -> None:
        self.requests: list[object] = []

    def app(self) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            msg = metrics_service_pb2.ExportMetricsServiceRequest()
            msg.ParseFromString(body)
            self.requests.append(msg)
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/metrics", receive)
        return app

    def points(self) -> dict[str, list]:
        """Data points of the latest export (temporality is cumulative: the last one has it all)."""
        out: dict[str, list] = {}
        for req in self.requests[-1:]:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        out.setdefault(m.name, []).extend(getattr(m, kind).data_points)
        return out

    def resource(self) -> dict[str, str]:
        attrs = self.requests[0].resource_metrics[0].resource.attributes
        return {a.key: a.value.string_value for a in attrs}


async def test_genai_histograms_and_bridged_counters_reach_the_collector(start_monitor) -> None:
    collector = FakeCollector()
    served = await Served(collector.app).start()
    try:
        mon = await start_monitor(
            vllm_metrics_url="http://127.0.0.1:9/metrics", otlp_endpoint=served.url, served_model="tiny"
        )
        emitter = EventEmitter(mon.monitor.settings.events_socket)
        for i in range(3):
            emitter.emit(
                event(requestId=f"r{i}", stream=True, ttftMs=200.0, latencyMs=1200.0, completionTokens=11)
            )
        emitter.close()
        await mon.settle(3)
        assert await asyncio.to_thread(mon.monitor.otlp.flush)
        await mon.monitor.stop()  # its final export still finds the collector
    finally:
        await served.stop()
    points = collector.points()
    assert collector.resource()["service.name"] == "maestro-monitor"
    ttft = points["gen_ai.server.time_to_first_token"]
    assert sum(p.count for p in ttft) == 3
    assert sum(p.sum for p in ttft) == pytest.approx(0.6)
    tpot = points["gen_ai.server.time_per_output_token"]
    assert sum(p.sum for p in tpot) == pytest.approx(3 * 0.1)
    usage = points["gen_ai.client.token.usage"]
    by_type = {
        next(a.value.string_value for a in p.attributes if a.key == "gen_ai.token.type"): p.sum for p in usage
    }
    assert by_type == {"input": 30, "output": 33}
    attrs = {a.key: a.value.string_value for a in ttft[0].attributes}
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "tiny"
    # the Prometheus counters and gauges, bridged under maestro.monitor.*
    requests = points["maestro.monitor.requests"]
    assert sum(p.as_double or p.as_int for p in requests) == 3
    assert "maestro.monitor.vllm_up" in points

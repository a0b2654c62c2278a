"""Monitor test helpers: a fake vLLM /metrics server, a restartable loopback server, scrape parsing.

The fake vLLM exposes its series through prometheus-client, as vLLM does, under the vLLM 0.33
names (`vllm/v1/metrics/loggers.py` in the 0.33.0 wheel; see shared/research), plus the process
collector, so the monitor's pass-through filter meets the same families a real vLLM shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from maestro.workers.monitor.contract import GUARD_READY_PATH
from maestro.workers.monitor.server import Monitor
from ports import free_port as free_port  # re-exported: the monitor tests import it from here

LABELS = ("model_name", "engine")
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class FakeVLLM:
    """vLLM's metrics surface only: counters move when `serve()` is called, like after real requests."""

    def __init__(self, model: str = "tiny") -> None:
        self.model = model
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        lbl = (model, "0")
        self.running = Gauge("vllm:num_requests_running", "running", LABELS, registry=r).labels(*lbl)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", LABELS, registry=r).labels(*lbl)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", LABELS, registry=r).labels(*lbl)
        self.prompt = Counter("vllm:prompt_tokens", "prompt", LABELS, registry=r).labels(*lbl)
        self.generation = Counter("vllm:generation_tokens", "gen", LABELS, registry=r).labels(*lbl)
        self.preemptions = Counter("vllm:num_preemptions", "preempt", LABELS, registry=r).labels(*lbl)
        self.success = Counter("vllm:request_success", "success", (*LABELS, "finished_reason"), registry=r)
        for reason in ("stop", "length", "abort"):
            self.success.labels(*lbl, reason)
        buckets = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "ttft", LABELS, buckets=buckets, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "itl", LABELS, buckets=buckets, registry=r)
        self.tpot = Histogram(
            "vllm:request_time_per_output_token_seconds", "tpot", LABELS, buckets=buckets, registry=r
        )
        slow = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "e2e", LABELS, buckets=slow, registry=r)
        self.queue = Histogram("vllm:request_queue_time_seconds", "queue", LABELS, buckets=slow, registry=r)
        self.req_prompt = Histogram(
            "vllm:request_prompt_tokens", "p", LABELS, buckets=TOKEN_BUCKETS, registry=r
        )
        self.req_gen = Histogram(
            "vllm:request_generation_tokens", "g", LABELS, buckets=TOKEN_BUCKETS, registry=r
        )
        for h in (self.ttft, self.itl, self.tpot, self.e2e, self.queue, self.req_prompt, self.req_gen):
            h.labels(*lbl)
        self.kv.set(0.0)
        self.fail_with: int | None = None
        self.scrapes = 0

    def serve(self, n: int, prompt_tokens: int, generation_tokens: int, reason: str = "stop") -> None:
        lbl = (self.model, "0")
        for _ in range(n):
            self.prompt.inc(prompt_tokens)
            self.generation.inc(generation_tokens)
            self.success.labels(*lbl, reason).inc()
            self.ttft.labels(*lbl).observe(0.05)
            self.itl.labels(*lbl).observe(0.01)
            self.tpot.labels(*lbl).observe(0.01)
            self.e2e.labels(*lbl).observe(0.5)
            self.queue.labels(*lbl).observe(0.001)
            self.req_prompt.labels(*lbl).observe(prompt_tokens)
            self.req_gen.labels(*lbl).observe(generation_tokens)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            self.scrapes += 1
            if self.fail_with:
                return web.Response(status=self.fail_with, text="engine dead")
            return web.Response(body=generate_latest(self.registry), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app


class Served:
    """An aiohttp app on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, app_factory: Callable[[], web.Application], port: int = 0) -> None:
        self.app_factory = app_factory
        self.port = port
        self.runner: web.AppRunner | None = None

    async def start(self) -> Served:
        self.runner = web.AppRunner(self.app_factory(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def parse_scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    """Sum of the samples of `name` whose labels include `labels` (None when there is none)."""
    hits = [v for lbl, v in samples.get(name, []) if all(lbl.get(k) == w for k, w in labels.items())]
    return sum(hits) if hits else None


class MonitorHarness:
    def __init__(self, monitor: Monitor, session: aiohttp.ClientSession) -> None:
        self.monitor = monitor
        self.session = session
        self.url = f"http://127.0.0.1:{monitor.port}"

    async def scrape(self) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
        async with self.session.get(self.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        return text, parse_scrape(text)

    async def settle(self, processed: int, timeout: float = 5.0) -> None:
        """Wait until the monitor processed `processed` events (datagrams are asynchronous)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.monitor.collector.processed < processed:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"monitor processed {self.monitor.collector.processed} of {processed} events"
                )
            await asyncio.sleep(0.01)

    async def post_feedback(self, body: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.url + "/v1/feedback", json=body) as resp:
            return resp.status, await resp.json()


def event(**overrides: Any) -> dict[str, Any]:
    """A guard event as the guard emits it (events.py contract), with sensible defaults."""
    base: dict[str, Any] = {
        "ts": 1_764_000_000.0,
        "requestId": "req-1",
        "key": "k1",
        "model": "tiny",
        "route": "/v1/chat/completions",
        "status": 200,
        "stream": False,
        "promptTokens": 10,
        "completionTokens": 20,
        "latencyMs": 500.0,
        "ttftMs": 100.0,
        "finishReason": "stop",
        "decisions": [],
        "pii": {},
        "promptChars": 40,
        "responseChars": 80,
        "refusal": False,
    }
    base.update(overrides)
    return base


class FakeChat:
    """A minimal OpenAI chat endpoint (non-streaming) whose answer is a function of the prompt."""

    def __init__(self, reply: Callable[[str], str], model: str = "tiny") -> None:
        self.reply = reply
        self.model = model
        self.requests: list[tuple[Any, dict[str, Any]]] = []  # (CIMultiDict headers, body)
        self.ready = True  # what the guard's readiness route answers
        self.status = 200  # 429 or 500: how a guard answers a spent key or a failed backend

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            self.requests.append((request.headers.copy(), body))
            if self.status != 200:
                return web.json_response({"error": {"message": "refused"}}, status=self.status)
            prompt = body["messages"][-1]["content"]
            text = self.reply(prompt)
            return web.json_response(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(prompt) // 4,
                        "completion_tokens": len(text) // 4,
                        "total_tokens": (len(prompt) + len(text)) // 4,
                    },
                }
            )

        async def health(_: web.Request) -> web.Response:
            return web.Response(text="")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)

        async def ready(_: web.Request) -> web.Response:
            return web.Response(text="", status=200 if self.ready else 503)

        app.router.add_get("/health", health)
        app.router.add_get(GUARD_READY_PATH, ready)
        return app

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from monitor_helpers import FakeVLLM, Served, parse_scrape

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.scrape import VLLMScraper, filter_passthrough

pytestmark = pytest.mark.unit


def test_passthrough_keeps_only_vllm_families() -> None:
    fake = FakeVLLM()
    fake.serve(2, prompt_tokens=5, generation_tokens=7)
    text = filter_passthrough(fake.text())
    families = parse_scrape(text)
    assert families  # still valid exposition text
    assert all(name.startswith("vllm:") for name in families)
    assert families[c.VLLM_GENERATION_TOKENS][0][1] == 14
    assert "process_cpu_seconds_total" in fake.text() and "process_" not in text


async def test_derived_signals_and_rates(fake_vllm: tuple[FakeVLLM, Served]) -> None:
    fake, served = fake_vllm
    metrics = MonitorMetrics(process=False)
    scraper = VLLMScraper(served.url + "/metrics", metrics)
    get = metrics.registry.get_sample_value
    fake.running.set(3)
    fake.waiting.set(4)
    fake.kv.set(0.42)
    async with aiohttp.ClientSession() as session:
        assert await scraper.scrape_once(session)
        assert get(c.VLLM_UP) == 1
        assert get(c.VLLM_REQUESTS, {"state": "running"}) == 3
        assert get(c.VLLM_REQUESTS, {"state": "waiting"}) == 4
        assert get(c.VLLM_KV_CACHE_USAGE) == pytest.approx(0.42)
        assert get(c.VLLM_TOKENS_PER_SECOND, {"type": "generation"}) is None  # needs two scrapes
        fake.serve(10, prompt_tokens=10, generation_tokens=100)
        previous = scraper._counters[c.VLLM_GENERATION_TOKENS].at
        assert await scraper.scrape_once(session)
        elapsed = scraper._counters[c.VLLM_GENERATION_TOKENS].at - previous
        assert get(c.VLLM_TOKENS_PER_SECOND, {"type": "generation"}) == pytest.approx(1000 / elapsed)
        assert get(c.VLLM_TOKENS_PER_SECOND, {"type": "prompt"}) == pytest.approx(100 / elapsed)
        assert "vllm:kv_cache_usage_perc" in scraper.passthrough
        assert get(c.VLLM_RESTARTS) == 0


async def test_failure_drops_passthrough_and_recovers(fake_vllm: tuple[FakeVLLM, Served]) -> None:
    fake, served = fake_vllm
    metrics = MonitorMetrics(process=False)
    scraper = VLLMScraper(served.url + "/metrics", metrics, timeout=2)
    get = metrics.registry.get_sample_value
    async with aiohttp.ClientSession() as session:
        assert await scraper.scrape_once(session)
        fake.fail_with = 500
        assert not await scraper.scrape_once(session)
        assert get(c.VLLM_UP) == 0 and scraper.passthrough == ""
        assert get(c.VLLM_SCRAPE_ERRORS, {"reason": "http"}) == 1
        assert "HTTP 500" in (scraper.last_error or "")
        await served.stop()
        assert not await scraper.scrape_once(session)
        assert get(c.VLLM_SCRAPE_ERRORS, {"reason": "connect"}) == 1
        fake.fail_with = None
        await served.start()
        assert await scraper.scrape_once(session)
        assert get(c.VLLM_UP) == 1 and scraper.last_error is None


async def test_restart_resets_counters_without_negative_rates(fake_vllm: tuple[FakeVLLM, Served]) -> None:
    fake, served = fake_vllm
    metrics = MonitorMetrics(process=False)
    scraper = VLLMScraper(served.url + "/metrics", metrics)
    get = metrics.registry.get_sample_value
    fake.serve(50, prompt_tokens=10, generation_tokens=10)
    async with aiohttp.ClientSession() as session:
        assert await scraper.scrape_once(session)
        await served.stop()
        reborn = FakeVLLM()  # a new vLLM process: every counter starts from zero
        reborn.serve(2, prompt_tokens=10, generation_tokens=10)
        served.app_factory = reborn.app
        await served.start()
        assert await scraper.scrape_once(session)
    assert get(c.VLLM_RESTARTS) == 1
    rate = get(c.VLLM_TOKENS_PER_SECOND, {"type": "generation"})
    assert rate is not None and rate > 0  # 20 tokens since the restart, never (20 - 500) / dt


async def test_non_prometheus_body_is_a_parse_error() -> None:
    from aiohttp import web

    def app() -> web.Application:
        a = web.Application()

        async def h(_: web.Request) -> web.Response:
            return web.Response(text='{"this": "is json"}\n')

        a.router.add_get("/metrics", h)
        return a

    served = await Served(app).start()
    metrics = MonitorMetrics(process=False)
    try:
        async with aiohttp.ClientSession() as session:
            ok = await VLLMScraper(served.url + "/metrics", metrics).scrape_once(session)
    finally:
        await served.stop()
    assert not ok
    assert metrics.registry.get_sample_value(c.VLLM_SCRAPE_ERRORS, {"reason": "parse"}) == 1


def _chunked_app(text: str, pieces: int) -> Callable[[], web.Application]:
    """/metrics sent in several TCP writes with pauses, as a big real vLLM answer arrives."""

    def app() -> web.Application:
        async def h(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            data = text.encode()
            step = len(data) // pieces + 1
            for i in range(0, len(data), step):
                await resp.write(data[i : i + step])
                await asyncio.sleep(0.01)
            await resp.write_eof()
            return resp

        a = web.Application()
        a.router.add_get("/metrics", h)
        return a

    return app


async def test_large_body_arriving_in_pieces_is_read_whole() -> None:
    fake = FakeVLLM()
    fake.serve(7, prompt_tokens=3, generation_tokens=5)
    lines = [fake.text(), "# TYPE vllm:filler gauge"]
    lines += [f'vllm:filler{{i="{i}"}} {i}' for i in range(20_000)]  # ~0.5 MB, like a big deployment
    served = await Served(_chunked_app("\n".join(lines) + "\n", pieces=20)).start()
    metrics = MonitorMetrics(process=False)
    scraper = VLLMScraper(served.url + "/metrics", metrics)
    try:
        async with aiohttp.ClientSession() as session:
            assert await scraper.scrape_once(session)
    finally:
        await served.stop()
    series = parse_scrape(scraper.passthrough)
    assert len(series["vllm:filler"]) == 20_000
    assert series[c.VLLM_GENERATION_TOKENS][0][1] == 35


async def test_oversized_body_is_refused(monkeypatch) -> None:
    from maestro.workers.monitor import scrape

    monkeypatch.setattr(scrape, "MAX_BODY", 1000)
    served = await Served(_chunked_app("vllm:x 1\n" * 500, pieces=5)).start()
    metrics = MonitorMetrics(process=False)
    try:
        async with aiohttp.ClientSession() as session:
            assert not await VLLMScraper(served.url + "/metrics", metrics).scrape_once(session)
    finally:
        await served.stop()
    assert metrics.registry.get_sample_value(c.VLLM_SCRAPE_ERRORS, {"reason": "too_large"}) == 1

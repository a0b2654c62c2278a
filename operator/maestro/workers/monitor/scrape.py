"""Scrape vLLM's /metrics on localhost: derive rates and pass the `vllm:*` series through.

The monitor's /metrics then is the pod's one scrape target: Maestro's signals plus vLLM's own
series by their upstream names (only `vllm:*`: vLLM's process_*/python_* families would collide
with the monitor's). A failed scrape drops the pass-through, so Prometheus sees vLLM as absent,
not frozen at its last values, and `maestro_monitor_vllm_up` says why panels are empty. A
counter that goes down means vLLM restarted; rates restart from zero instead of going negative.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.metrics import MonitorMetrics

log = logging.getLogger(__name__)

#: A /metrics body bigger than this is not vLLM's (it is ~100 kB): refuse rather than buffer it.
MAX_BODY = 8 * 1024 * 1024
PASSTHROUGH_PREFIX = "vllm:"


def parse_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)] (counters keep their `_total` name, histograms `_bucket` …)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def filter_passthrough(text: str, prefix: str = PASSTHROUGH_PREFIX) -> str:
    """Keep only the lines (HELP/TYPE/samples) of families whose name starts with `prefix`."""
    kept = []
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line[7:].split(" ", 1)[0]
        elif line.startswith("#") or not line.strip():
            continue
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.startswith(prefix):
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    series = samples.get(name)
    return sum(v for _, v in series) if series else None


@dataclass
class _CounterState:
    value: float
    at: float


@dataclass
class VLLMScraper:
    url: str
    metrics: MonitorMetrics
    interval: float = c.DEFAULT_SCRAPE_INTERVAL
    timeout: float = 5.0
    passthrough_enabled: bool = True
    passthrough: str = ""
    last_error: str | None = None
    last_success: float | None = None
    scrapes: int = 0
    _counters: dict[str, _CounterState] = field(default_factory=dict)
    _start_time: float | None = None

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            started = time.monotonic()
            await self.scrape_once(session)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def scrape_once(self, session: aiohttp.ClientSession) -> bool:
        m = self.metrics
        started = time.monotonic()
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                if resp.status != 200:
                    return self._fail("http", f"{self.url} answered HTTP {resp.status}")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_BODY:
                        return self._fail("too_large", f"{self.url} body exceeds {MAX_BODY} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
            text = body.decode("utf-8", errors="replace")
            samples = parse_samples(text)
        except (aiohttp.ClientError, OSError) as e:
            return self._fail("connect", f"{self.url}: {e.__class__.__name__}: {e}")
        except TimeoutError:
            return self._fail("timeout", f"{self.url}: no answer within {self.timeout:g}s")
        except ValueError as e:  # prometheus text parser
            return self._fail("parse", f"{self.url}: not Prometheus text: {e}")
        now = time.monotonic()
        m.vllm_scrape_duration.set(now - started)
        self._derive(samples, now)
        self.passthrough = filter_passthrough(text) if self.passthrough_enabled else ""
        m.vllm_up.set(1)
        if self.last_error:
            log.info("vLLM metrics back at %s", self.url)
        self.last_error = None
        self.last_success = time.time()
        self.scrapes += 1
        return True

    def _fail(self, reason: str, message: str) -> bool:
        if self.last_error is None:
            log.warning("vLLM scrape failed (%s); retrying every %gs", message, self.interval)
        self.last_error = message
        self.passthrough = ""
        self.metrics.vllm_up.set(0)
        self.metrics.vllm_scrape_errors.labels(reason).inc()
        return False

    def _derive(self, samples: dict[str, list[tuple[dict[str, str], float]]], now: float) -> None:
        m = self.metrics
        running = _total(samples, c.VLLM_NUM_RUNNING)
        waiting = _total(samples, c.VLLM_NUM_WAITING)
        if running is not None:
            m.vllm_requests.labels("running").set(running)
        if waiting is not None:
            m.vllm_requests.labels("waiting").set(waiting)
        kv = samples.get(c.VLLM_KV_CACHE_USAGE_PERC)
        if kv:
            m.vllm_kv_cache.set(max(v for _, v in kv))
        reset = False
        for kind, name in (("prompt", c.VLLM_PROMPT_TOKENS), ("generation", c.VLLM_GENERATION_TOKENS)):
            value = _total(samples, name)
            if value is None:
                continue
            rate, was_reset = self._rate(name, value, now)
            reset = reset or was_reset
            if rate is not None:
                m.vllm_tokens_per_second.labels(kind).set(rate)
        for name in self._reset_witnesses(samples):
            value = _total(samples, name)
            if value is not None:
                reset = self._rate(name, value, now)[1] or reset
        start = _total(samples, "process_start_time_seconds")  # the API server's, when exposed
        if start is not None:
            reset = reset or (self._start_time is not None and start != self._start_time)
            self._start_time = start
        if reset:
            m.vllm_restarts.inc()
            log.info("vLLM counters went down: vLLM restarted")

    @staticmethod
    def _reset_witnesses(samples: dict[str, list[tuple[dict[str, str], float]]]) -> Iterable[str]:
        # Token counters stay flat when idle; finished requests and TTFT counts also reveal a restart.
        return (n for n in (c.VLLM_REQUEST_SUCCESS, c.VLLM_TTFT + "_count") if n in samples)

    def _rate(self, name: str, value: float, now: float) -> tuple[float | None, bool]:
        prev = self._counters.get(name)
        self._counters[name] = _CounterState(value, now)
        if prev is None or now <= prev.at:
            return None, False
        if value < prev.value:  # reset: the new process counted `value` since it started
            return value / (now - prev.at), True
        return (value - prev.value) / (now - prev.at), False

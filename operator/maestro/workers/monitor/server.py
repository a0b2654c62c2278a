"""The monitor process: event intake, vLLM scraping, probes, OTLP, and its small HTTP surface.

HTTP (MAESTRO_MONITOR_PORT): `GET /metrics` (the monitor's series + vLLM's `vllm:*`),
`GET /healthz` (the monitor itself; a vLLM outage is reported, not fatal: restarting the
monitor would not bring vLLM back), `POST /v1/feedback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.collector import EventCollector, RateBudget
from maestro.workers.monitor.config import MonitorSettings
from maestro.workers.monitor.console_push import ConsolePusher
from maestro.workers.monitor.drift import DriftMonitor, load_reference_file, save_reference_file
from maestro.workers.monitor.feedback import (
    MAX_BODY,
    FeedbackError,
    FeedbackService,
    FeedbackSink,
    parse_feedback,
)
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.probes import BiasProber, read_api_key
from maestro.workers.monitor.receiver import EventReceiver
from maestro.workers.monitor.review import ReviewQueue
from maestro.workers.monitor.scrape import VLLMScraper
from maestro.workers.monitor.signals import TextAnalyzer

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The monitor cannot start; the message says which mount or setting to fix."""


#: Feedback accepted per second (bursts of one second's worth); the port is reachable in-cluster.
FEEDBACK_RATE = 100.0


def _error(
    status: int, message: str, type_: str = "invalid_request_error", param: str | None = None
) -> web.Response:
    """OpenAI-shaped error, like the guard's, so one client library handles both."""
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": None}}, status=status
    )


class Monitor:
    def __init__(self, settings: MonitorSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = s = settings
        self.metrics = MonitorMetrics(registry)
        self.metrics.start_series(s.served_model)
        self.analyzer = TextAnalyzer()
        self.drift = DriftMonitor(
            c.DRIFT_FEATURES,
            reference_size=s.drift_reference_size,
            window=s.drift_window,
            threshold=s.drift_threshold,
        )
        if s.drift_reference_file:
            loaded = load_reference_file(self.drift, s.drift_reference_file)
            if loaded:
                log.info("drift reference loaded from %s: %s", s.drift_reference_file, ", ".join(loaded))
        self.otlp: Any = None
        if s.otlp_endpoint:
            from maestro.workers.monitor.otlp import OtlpExporter

            self.otlp = OtlpExporter(s.otlp_endpoint, self.metrics.registry, served_model=s.served_model)
        try:
            sink = FeedbackSink(s.feedback_dir) if s.feedback_dir else None
        except OSError as e:
            raise StartupError(
                f"feedback directory {s.feedback_dir}: {e.strerror}; mount a writable volume there "
                f"or unset {c.ENV_FEEDBACK_DIR}"
            ) from e
        hooks: list[Any] = [self.otlp.record_event] if self.otlp else []
        if sink is not None:
            hooks.append(ReviewQueue(sink, self.metrics))
        self.pusher: ConsolePusher | None = None
        if s.console_url:
            deployment = s.deployment_name or s.served_model or "unknown"
            self.pusher = ConsolePusher(s.console_url, deployment, token_file=s.console_token_file)
            hooks.append(self.pusher)
        self.collector = EventCollector(
            self.metrics,
            self.drift,
            self.analyzer,
            on_reference_frozen=self._save_reference,
            hooks=hooks,
            text_budget=RateBudget(s.text_score_rate),
        )
        self.scraper = VLLMScraper(
            s.vllm_metrics_url, self.metrics, interval=s.scrape_interval, passthrough_enabled=s.passthrough
        )
        self.feedback_budget = RateBudget(FEEDBACK_RATE)
        self.feedback = FeedbackService(self.metrics, self.collector.recent, sink)
        self.prober: BiasProber | None = None
        if s.probes:
            self.prober = BiasProber(
                self.metrics,
                self.analyzer,
                guard_url=s.guard_url,
                model=s.served_model or "",
                api_key=read_api_key(s.probe_api_key_file),
                interval=s.probe_interval,
            )
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.receiver = EventReceiver(
            s.events_socket,
            self.collector.offer,
            on_malformed=self.collector.malformed,
            on_dropped=self.collector.overflowed,
            after_batch=self.collector.after_batch,
            interval=s.event_batch_interval,
        )
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port: int | None = None
        self._stopped = False

    def _save_reference(self) -> None:
        path = self.settings.drift_reference_file
        if not path:
            return
        try:
            save_reference_file(self.drift, path)
        except OSError as e:
            log.warning(
                "could not save the drift reference to %s: %s (it is relearned after a restart)", path, e
            )

    # -- HTTP -----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(c.METRICS_PATH, self._metrics)
        app.router.add_get(c.HEALTH_PATH, self._health)
        app.router.add_post(c.FEEDBACK_PATH, self._feedback)
        return app

    def render_metrics(self) -> bytes:
        self.collector.publish_drift()
        return generate_latest(self.metrics.registry) + self.scraper.passthrough.encode()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.render_metrics(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _health(self, _: web.Request) -> web.Response:
        col, scr = self.collector, self.scraper
        return web.json_response(
            {
                "status": "ok",
                "uptimeSeconds": round(time.time() - self.started, 1),
                "events": {
                    "received": self.receiver.received,
                    "processed": col.processed,
                    "malformed": self.receiver.malformed + col.failed,
                },
                "vllm": {
                    "up": scr.last_error is None and scr.scrapes > 0,
                    "lastError": scr.last_error,
                    "lastSuccess": scr.last_success,
                },
                "drift": {
                    name: {"reference": f.reference_count, "current": f.current_size, "frozen": f.frozen}
                    for name, f in self.drift.features.items()
                },
                "probes": self.prober is not None,
                "otlp": self.otlp.url if self.otlp else None,
                "console": self.pusher.stats() if self.pusher else None,
            }
        )

    async def _feedback(self, request: web.Request) -> web.Response:
        # Clients send feedback to the guard (authenticated with the policy's keys), which relays it
        # here over the pod's loopback; the monitor's port is reachable from other pods (for
        # scraping), so anything not from this pod is refused.
        if not _loopback(request.remote):
            return _error(
                403, "send feedback to the guard: POST /v1/feedback on the endpoint, with your API key"
            )
        if not self.feedback_budget.take():
            return _error(429, "too much feedback right now; retry in a second", type_="rate_limit_exceeded")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"feedback body over {MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"feedback body over {MAX_BODY} bytes")
        try:
            fb = parse_feedback(body)
        except FeedbackError as e:
            return _error(400, str(e))
        answer = await self.feedback.submit(fb)
        if self.pusher is not None:  # negative feedback also goes to the console's review queue
            self.pusher.negative_feedback(fb, self.collector.recent.get(fb.request_id))
        return web.json_response(answer, status=202)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        try:
            self.receiver.start()
        except OSError as e:
            raise StartupError(
                f"cannot bind the guard event socket {s.events_socket}: {e.strerror}; mount the shared "
                f"events volume (emptyDir) there or set {c.ENV_EVENTS_SOCKET}"
            ) from e
        self._session = aiohttp.ClientSession()
        self._tasks.append(asyncio.create_task(self.scraper.run(self._session), name="scrape"))
        if self.prober:
            self._tasks.append(asyncio.create_task(self.prober.run(self._session), name="probes"))
        if self.pusher:
            self._tasks.append(asyncio.create_task(self.pusher.run(self._session), name="console-push"))
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise StartupError(f"cannot listen on {s.host}:{s.port}: {e.strerror}; set {c.ENV_PORT}") from e
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else s.port
        log.info(
            "monitor on :%s (events %s, vLLM %s every %gs, probes %s, otlp %s)",
            self.port,
            s.events_socket,
            s.vllm_metrics_url,
            s.scrape_interval,
            "on" if self.prober else "off",
            s.otlp_endpoint or "off",
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.receiver.close()
        self.collector.publish_drift()
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()
        if self.otlp:
            await asyncio.to_thread(self.otlp.shutdown)

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()


def _loopback(remote: str | None) -> bool:
    """True for a peer in this pod (loopback), which is where the guard relays from."""
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False

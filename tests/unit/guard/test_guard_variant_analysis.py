"""The operator's per-variant analysis against a real Prometheus scraping a real guard (and the
monitor's real feedback metrics): known traffic in, the counts `maestro.k8s.metrics` reads back out.

Traffic (60 requests over two variants, sticky per user): 40 answered, then 10 that the upstream
fails with a 500 (all on `tuned`), 5 refusals (on `base`), 5 with an e-mail address the policy
redacts (on `tuned`); then feedback on some of them through the monitor's FeedbackService.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc
from prometheus_client import start_http_server

from maestro.api.experiments import GuardVariant
from maestro.k8s import metrics
from maestro.text.refusal import is_refusal
from maestro.workers.guard import contract
from maestro.workers.guard.telemetry import Telemetry
from maestro.workers.monitor.collector import RecentRequest, RecentRequests
from maestro.workers.monitor.feedback import Feedback, FeedbackService
from maestro.workers.monitor.metrics import MonitorMetrics
from ports import free_port

pytestmark = pytest.mark.unit

NS, SERVICE = "team-a", "chat-metrics"
REFUSAL = "I'm sorry, but I can't help with that."
MSG = [{"role": "user", "content": "Can I bring skis?"}]
PII_MSG = [{"role": "user", "content": "Mail the ticket to jane.doe@example.com please."}]


def _doc() -> dict[str, Any]:
    doc = policy_doc(open_request(auth={"required": True}, pii={"input": "redact", "output": "allow"}))
    doc.update(
        variants=[
            GuardVariant(name=n, model="tiny", weight=50).model_dump(by_alias=True, exclude_none=True)
            for n in ("base", "tuned")
        ],
        routingSalt=f"{NS}/chat",
    )
    return doc


def _call(client: openai.OpenAI, user: str, messages: list[dict[str, str]]) -> tuple[int, str, str]:
    """(status, variant, request id) of one chat request."""
    try:
        raw = client.chat.completions.with_raw_response.create(model="tiny", messages=messages, user=user)  # type: ignore[arg-type]
        status, headers = raw.status_code, raw.headers
    except openai.APIStatusError as exc:
        status, headers = exc.status_code, exc.response.headers
    return status, headers[contract.VARIANT_HEADER], headers[contract.REQUEST_ID_HEADER]


def _read(url: str, window: str = "1h") -> dict[str, Any]:
    return asyncio.run(metrics.variant_signals(url, NS, SERVICE, window))


def test_reader_counts_what_the_guard_served(stack: Stack, tmp_path: Path) -> None:
    from prom import Prometheus, tool

    tool("prometheus")  # skips (or fails in CI) before anything starts when it is not built
    assert is_refusal(REFUSAL)
    telemetry = Telemetry()
    stack.start(_doc(), telemetry=telemetry)
    # the monitor's feedback metrics, served as its /metrics would (same registry, same code path)
    mon = MonitorMetrics(process=False)
    recent = RecentRequests()
    feedback = FeedbackService(mon, recent, sink=None)
    mon_port = free_port()
    mon_server, mon_thread = start_http_server(mon_port, addr="127.0.0.1", registry=mon.registry)
    labels = {"namespace": NS, "service": SERVICE}
    prom = Prometheus(
        tmp_path,
        {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "guard",
                    "static_configs": [{"targets": [stack.url.removeprefix("http://")], "labels": labels}],
                },
                {
                    "job_name": "monitor",
                    "static_configs": [{"targets": [f"127.0.0.1:{mon_port}"], "labels": labels}],
                },
                {  # another deployment's series must not leak into this one's
                    "job_name": "other",
                    "metrics_path": contract.METRICS_PATH,
                    "static_configs": [
                        {
                            "targets": [stack.url.removeprefix("http://")],
                            "labels": {"namespace": NS, "service": "other-metrics"},
                        }
                    ],
                },
            ],
        },
    )
    try:
        client = stack.client(KEYS["alice"])
        served: list[tuple[int, str, str]] = []
        of: dict[str, str] = {}
        for i in range(40):
            status, variant, rid = _call(client, f"u{i}", MSG)
            assert status == 200
            served.append((status, variant, rid))
            of[f"u{i}"] = variant
        users = {v: [u for u, w in of.items() if w == v] for v in ("base", "tuned")}
        assert users["base"] and users["tuned"], of
        stack.upstream.status = 500
        for i in range(10):
            served.append(_call(client, users["tuned"][i % len(users["tuned"])], MSG))
        stack.upstream.status = 200
        stack.upstream.reply = REFUSAL
        for i in range(5):
            served.append(_call(client, users["base"][i % len(users["base"])], MSG))
        stack.upstream.reply = "Skis fly free."
        for i in range(5):
            served.append(_call(client, users["tuned"][i % len(users["tuned"])], PII_MSG))
        assert len(served) == 60
        assert [s for s, v, _ in served[40:50]] == [500] * 10 and {v for _, v, _ in served[40:50]} == {
            "tuned"
        }
        per_variant = Counter(v for _, v, _ in served)

        # feedback on three of base's answers (thumbs up) and one of tuned's (rating 1)
        for _, v, rid in served[:40]:
            recent.add(
                rid, RecentRequest(model="tiny", prompt=None, response=None, ts=time.time(), variant=v)
            )
        base_ids = [rid for _, v, rid in served[:40] if v == "base"][:3]
        tuned_id = next(rid for _, v, rid in served[:40] if v == "tuned")

        async def give() -> None:
            for rid in base_ids:
                await feedback.submit(Feedback.model_validate({"requestId": rid, "thumbs": "up"}))
            await feedback.submit(Feedback.model_validate({"requestId": tuned_id, "rating": 1}))

        asyncio.run(give())
        tokens = {k: v for k, v in stack.run(lambda: dict(telemetry.variant_tokens.series)).items()}

        deadline = time.monotonic() + 30
        while True:  # until a scrape after the last request and the last feedback
            signals = _read(prom.url)
            if (
                sum(s.requests for s in signals.values()) == 60
                and sum(s.feedback_count for s in signals.values()) == len(base_ids) + 1
            ):
                break
            assert time.monotonic() < deadline, signals
            time.sleep(0.5)

        base, tuned = signals["base"], signals["tuned"]
        assert set(signals) == {"base", "tuned"}
        assert (base.requests, base.errors, base.refusals, base.policy_hits) == (per_variant["base"], 0, 5, 0)
        assert (tuned.requests, tuned.errors, tuned.refusals, tuned.policy_hits) == (
            per_variant["tuned"],
            10,
            0,
            5,
        )
        for name, s in signals.items():
            assert s.input_tokens == tokens[(name, "input")] > 0
            assert s.output_tokens == tokens.get((name, "output"), 0)
            assert s.latency_p50_s is not None and s.latency_p95_s is not None
            assert 0 < s.latency_p50_s <= s.latency_p95_s < 10
        assert (base.feedback_count, base.feedback_mean) == (3, 1.0)
        assert (tuned.feedback_count, tuned.feedback_mean) == (1, 0.0)

        # a window shorter than the time since the traffic: the series existed at its start and did
        # not change, so nothing happened in it (their values are not counted again)
        time.sleep(3)
        assert _read(prom.url, "2s") == {}

        # a server that is down, and one that is not a Prometheus: retriable errors naming the server
        with pytest.raises(metrics.PrometheusError, match="unreachable"):
            _read(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(metrics.PrometheusError, match=r"answered 404"):
            _read(stack.url)
    finally:
        prom.stop()
        mon_server.shutdown()
        mon_thread.join(5)

"""The monitor process end to end on loopback: real datagram socket, real HTTP, a fake vLLM."""

from __future__ import annotations

import asyncio
import json
import os
import random

import pytest
from monitor_helpers import FakeVLLM, event, value

from maestro.workers.events import EventEmitter
from maestro.workers.monitor import contract as c
from maestro.workers.monitor.collector import RateBudget

pytestmark = pytest.mark.unit


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_known_traffic_yields_exact_metrics(start_monitor, fake_vllm) -> None:
    fake, served = fake_vllm
    fake.running.set(2)
    fake.kv.set(0.25)
    fake.serve(4, prompt_tokens=10, generation_tokens=20)
    mon = await start_monitor(vllm_metrics_url=served.url + "/metrics")
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    try:
        for i in range(4):
            assert emitter.emit(event(requestId=f"r{i}", ttftMs=50.0, latencyMs=250.0))
        assert emitter.emit(
            event(
                requestId="blocked",
                status=400,
                ttftMs=None,
                decisions=[{"rule": "blockedTerms", "action": "block"}],
            )
        )
        await mon.settle(5)
    finally:
        emitter.close()
    await _wait_for(lambda: mon.monitor.scraper.scrapes >= 1)
    text, s = await mon.scrape()
    assert value(s, c.REQUESTS, code="200") == 4
    assert value(s, c.REQUESTS, code="400") == 1
    assert value(s, c.POLICY_DECISIONS, rule="blockedTerms", action="block") == 1
    assert value(s, c.TTFT + "_count") == 4  # the blocked request never produced a token
    assert value(s, c.TTFT + "_sum") == pytest.approx(0.2)
    assert value(s, c.TOKENS, type="completion") == 100
    # vLLM's own series pass through by their upstream names, the monitor derives its gauges
    assert value(s, c.VLLM_GENERATION_TOKENS) == 80
    assert value(s, c.VLLM_PROMPT_TOKENS) == 40
    assert value(s, c.VLLM_NUM_RUNNING) == 2
    assert value(s, c.VLLM_KV_CACHE_USAGE) == pytest.approx(0.25)
    assert value(s, c.VLLM_UP) == 1
    assert value(s, c.VLLM_TTFT + "_count") == 4
    # exactly one process_* family (the monitor's), or Prometheus would reject the scrape
    assert text.count("# TYPE process_cpu_seconds_total") == 1


async def test_monitor_survives_vllm_restart(start_monitor, fake_vllm) -> None:
    fake, served = fake_vllm
    fake.serve(100, prompt_tokens=1, generation_tokens=1)
    mon = await start_monitor(vllm_metrics_url=served.url + "/metrics")
    scraper = mon.monitor.scraper
    await _wait_for(lambda: scraper.scrapes >= 2)
    await served.stop()  # vLLM dies
    await _wait_for(lambda: scraper.last_error is not None)
    _, s = await mon.scrape()
    assert value(s, c.VLLM_UP) == 0
    assert value(s, c.VLLM_GENERATION_TOKENS) is None  # absent, not frozen at the old value
    # events and feedback keep working while vLLM is down
    status, _ = await mon.post_feedback({"requestId": "x", "thumbs": "up"})
    assert status == 202
    reborn = FakeVLLM()
    reborn.serve(3, prompt_tokens=1, generation_tokens=1)
    served.app_factory = reborn.app
    await served.start()
    before = scraper.scrapes
    await _wait_for(lambda: scraper.scrapes >= before + 2)
    _, s = await mon.scrape()
    assert value(s, c.VLLM_UP) == 1
    assert value(s, c.VLLM_GENERATION_TOKENS) == 3
    assert value(s, c.VLLM_RESTARTS) == 1
    assert value(s, c.VLLM_TOKENS_PER_SECOND, type="generation") >= 0
    async with mon.session.get(mon.url + "/healthz") as resp:
        health = await resp.json()
    assert resp.status == 200 and health["vllm"]["up"] is True


def _mix(rng: random.Random, n: int, english: float, mean_chars: int) -> list[dict]:
    texts_en = [
        "What is the capital of France and why is it famous?",
        "Explain how the tides work in the sea.",
    ]
    texts_fr = [
        "Quelle est la capitale de la France et pourquoi est-elle célèbre?",
        "Le chat est sur la table.",
    ]
    out = []
    for _ in range(n):
        prompt = rng.choice(texts_en if rng.random() < english else texts_fr)
        out.append(
            event(
                requestId=f"r{rng.random()}",
                promptText=prompt,
                promptChars=max(1, int(rng.gauss(mean_chars, mean_chars / 5))),
            )
        )
    return out


@pytest.mark.parametrize(("english", "chars", "drifts"), [(0.9, 200, False), (0.1, 3000, True)])
async def test_drift_rises_only_for_a_shifted_mix(start_monitor, english, chars, drifts) -> None:
    rng = random.Random(42)
    mon = await start_monitor(
        vllm_metrics_url="http://127.0.0.1:9/metrics", drift_reference_size=200, drift_window=200
    )
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    try:
        batch = _mix(rng, 200, 0.9, 200) + _mix(rng, 200, english, chars)
        for i, ev in enumerate(batch):
            assert emitter.emit(ev)
            if i % 8 == 7:  # the datagram queue holds 10 (net.unix.max_dgram_qlen): let the monitor read
                await mon.settle(i + 1)
        await mon.settle(400)
    finally:
        emitter.close()
    _, s = await mon.scrape()
    for feature in ("prompt_chars", "prompt_language"):
        psi = value(s, c.DRIFT_PSI, feature=feature)
        alert = value(s, c.DRIFT_ALERT, feature=feature)
        assert psi is not None
        if drifts:
            assert psi > 0.2 and alert == 1, (feature, psi)
        else:
            assert psi < 0.1 and alert == 0, (feature, psi)
    assert value(s, c.DRIFT_THRESHOLD, feature="prompt_chars") == 0.2


async def test_drift_reference_is_saved_and_reloaded(start_monitor, sock_dir) -> None:
    path = os.path.join(sock_dir, "state", "drift.json")
    mon = await start_monitor(
        vllm_metrics_url="http://127.0.0.1:9/metrics",
        drift_reference_file=path,
        drift_reference_size=10,
        drift_window=10,
    )
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    for i in range(10):
        emitter.emit(event(requestId=f"r{i}", promptChars=100))
    emitter.close()
    await mon.settle(10)
    mon.monitor.collector.publish_drift()
    with open(path) as fh:
        saved = json.load(fh)
    assert saved["features"]["prompt_chars"] == {"64-128": 10}
    await mon.monitor.stop()
    again = await start_monitor(
        vllm_metrics_url="http://127.0.0.1:9/metrics",
        drift_reference_file=path,
        drift_reference_size=10,
        drift_window=10,
    )
    assert again.monitor.drift.features["prompt_chars"].frozen


async def test_feedback_round_trip_seeds_a_dataset(start_monitor, sock_dir) -> None:
    fdir = os.path.join(sock_dir, "feedback")
    mon = await start_monitor(vllm_metrics_url="http://127.0.0.1:9/metrics", feedback_dir=fdir)
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    emitter.emit(event(requestId="q1", promptText="What is 2+2?", responseText="5"))
    emitter.close()
    await mon.settle(1)

    status, body = await mon.post_feedback({"requestId": "q1", "rating": 1, "correction": "4"})
    assert status == 202 and body == {"status": "accepted", "requestId": "q1", "known": True, "stored": True}
    status, body = await mon.post_feedback({"requestId": "unknown-id", "thumbs": "up", "model": "tiny"})
    assert status == 202 and body["known"] is False
    status, body = await mon.post_feedback({"requestId": "q1"})
    assert status == 400 and "at least one of rating" in body["error"]["message"]
    status, body = await mon.post_feedback({"requestId": "q1", "rating": 9})
    assert status == 400 and body["error"]["message"].startswith("rating:")
    async with mon.session.post(mon.url + "/v1/feedback", data=b"not json") as resp:
        assert resp.status == 400
    async with mon.session.post(mon.url + "/v1/feedback", data=b"x" * (70 * 1024)) as resp:
        assert resp.status == 413

    _, s = await mon.scrape()
    assert value(s, c.FEEDBACK, model="tiny", sentiment="negative") == 1
    assert value(s, c.FEEDBACK, model="tiny", sentiment="positive") == 1
    assert value(s, c.FEEDBACK_CORRECTIONS, model="tiny") == 1
    assert value(s, c.FEEDBACK_RATING + "_sum", model="tiny") == 1
    with open(os.path.join(fdir, c.FEEDBACK_FILE)) as fh:
        records = [json.loads(line) for line in fh]
    assert [r["requestId"] for r in records] == ["q1", "unknown-id"]
    assert records[0]["prompt"] == "What is 2+2?" and records[0]["response"] == "5"
    with open(os.path.join(fdir, c.CORRECTIONS_FILE)) as fh:
        pairs = [json.loads(line) for line in fh]
    assert pairs == [{"prompt": "What is 2+2?", "completion": "4"}]  # LLMDataset prompt-completion


async def test_burst_never_blocks_the_sender(start_monitor) -> None:
    """A burst far above what the socket queues: sends return at once (dropped when full, counted by
    the sender), and everything the kernel accepted is counted by the monitor."""
    mon = await start_monitor(vllm_metrics_url="http://127.0.0.1:9/metrics")
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    big = event(promptText="x" * 20_000)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(1000):
        emitter.emit(big)
    elapsed = loop.time() - t0
    emitter.close()
    assert emitter.sent + emitter.dropped == 1000
    assert elapsed < 5
    await _wait_for(lambda: mon.monitor.collector.processed >= emitter.sent, timeout=30)
    _, s = await mon.scrape()
    assert value(s, c.EVENTS_RECEIVED) == emitter.sent


async def test_feedback_is_rate_limited(start_monitor) -> None:
    mon = await start_monitor(vllm_metrics_url="http://127.0.0.1:9/metrics")
    mon.monitor.feedback_budget = RateBudget(3, clock=lambda: 0.0)
    codes = [(await mon.post_feedback({"requestId": f"r{i}", "thumbs": "up"}))[0] for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]


def _non_loopback_address() -> str | None:
    """An address of this machine other than loopback (the route a pod next door would take)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else str(addr)


async def test_feedback_from_outside_the_pod_is_refused(start_monitor) -> None:
    """The monitor's port is open to scrapers; only the guard (same pod, loopback) may hand it feedback."""
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    mon = await start_monitor(host="0.0.0.0", feedback_dir=None)
    port = mon.url.rsplit(":", 1)[1]
    async with mon.session.post(
        f"http://{addr}:{port}/v1/feedback", json={"requestId": "r", "thumbs": "up"}
    ) as r:
        assert r.status == 403 and "guard" in (await r.json())["error"]["message"]
    async with mon.session.get(f"http://{addr}:{port}/metrics") as r:
        assert r.status == 200  # scraping from outside still works
    status, _ = await mon.post_feedback({"requestId": "r", "thumbs": "up"})  # loopback: accepted
    assert status == 202

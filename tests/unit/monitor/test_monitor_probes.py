from __future__ import annotations

import pathlib

import aiohttp
import pytest
from monitor_helpers import FakeChat, Served

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.probes import DEFAULT_PROBES, BiasProber, ProbeSet, read_api_key
from maestro.workers.monitor.signals import TextAnalyzer

pytestmark = pytest.mark.unit

KIND = "They are a wonderful, kind and friendly person, loved by everyone."


def biased(prompt: str) -> str:
    """A model that refuses one group and praises the others."""
    return "I'm sorry, but I can't help with that." if "Muslim" in prompt else KIND


async def test_probe_gaps_expose_a_biased_model(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-probe-123\n")
    fake = FakeChat(biased)
    served = await Served(fake.app).start()
    metrics = MonitorMetrics(process=False)
    prober = BiasProber(
        metrics,
        TextAnalyzer(),
        guard_url=served.url,
        model="tiny",
        api_key=read_api_key(str(key_file)),
        interval=3600,
    )
    rounds = sum(len(p.templates) for p in DEFAULT_PROBES)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(rounds):  # every template once
                await prober.round(session)
    finally:
        await served.stop()
    get = metrics.registry.get_sample_value
    n_requests = sum(len(p.groups) * len(p.templates) for p in DEFAULT_PROBES)
    assert len(fake.requests) == n_requests
    assert get(c.PROBE_REQUESTS, {"result": "ok"}) == n_requests
    headers, body = fake.requests[0]
    assert headers["Authorization"] == "Bearer sk-probe-123"
    assert headers["X-Request-Id"].startswith(c.PROBE_REQUEST_ID_PREFIX)
    assert body["temperature"] == 0 and body["model"] == "tiny"

    assert get(c.BIAS_REFUSAL_RATIO, {"axis": "religion", "group": "Muslim"}) == 1.0
    assert get(c.BIAS_REFUSAL_RATIO, {"axis": "religion", "group": "Hindu"}) == 0.0
    assert get(c.BIAS_REFUSAL_GAP, {"axis": "religion"}) == 1.0
    assert get(c.BIAS_SENTIMENT_GAP, {"axis": "religion"}) > 0.5
    # identical answers across gender: no gap
    assert get(c.BIAS_REFUSAL_GAP, {"axis": "gender"}) == 0.0
    assert get(c.BIAS_SENTIMENT_GAP, {"axis": "gender"}) == pytest.approx(0.0)


def _pair(url: str) -> tuple[MonitorMetrics, BiasProber]:
    metrics = MonitorMetrics(process=False)
    prober = BiasProber(
        metrics,
        TextAnalyzer(),
        guard_url=url,
        model="tiny",
        api_key=None,
        probes=(ProbeSet("gender", ("man", "woman"), ("Describe a {group}.",)),),
    )
    return metrics, prober


async def test_a_ready_guard_that_fails_counts_errors_and_leaves_no_gap() -> None:
    fake = FakeChat(lambda _: KIND)
    fake.status = 500
    served = await Served(fake.app).start()
    metrics, prober = _pair(served.url)
    try:
        async with aiohttp.ClientSession() as session:
            await prober.round(session)
    finally:
        await served.stop()
    get = metrics.registry.get_sample_value
    assert get(c.PROBE_REQUESTS, {"result": "error"}) == 2
    assert get(c.BIAS_SENTIMENT_GAP, {"axis": "gender"}) is None


async def test_rounds_wait_out_a_loading_model_and_a_spent_key_without_errors() -> None:
    """A pod whose model is still loading (the guard not ready, or not even listening) and a key whose
    budget users spent (429) are not model failures: skipped and throttled, then measured once the
    guard answers — the error series an alert reads stays at zero."""
    metrics, prober = _pair("http://127.0.0.1:9")
    async with aiohttp.ClientSession() as session:
        await prober.round(session)  # nothing listening yet
    fake = FakeChat(lambda _: KIND)
    fake.ready = False
    served = await Served(fake.app).start()
    prober.url = served.url + "/v1/chat/completions"
    prober.ready_url = served.url + c.GUARD_READY_PATH
    get = metrics.registry.get_sample_value
    try:
        async with aiohttp.ClientSession() as session:
            await prober.round(session)
            assert fake.requests == [] and get(c.PROBE_REQUESTS, {"result": "skipped"}) == 4
            fake.ready, fake.status = True, 429
            await prober.round(session)
            assert get(c.PROBE_REQUESTS, {"result": "throttled"}) == 2
            fake.status = 200
            await prober.round(session)
    finally:
        await served.stop()
    assert get(c.PROBE_REQUESTS, {"result": "ok"}) == 2
    assert get(c.PROBE_REQUESTS, {"result": "error"}) == 0
    assert get(c.BIAS_SENTIMENT_GAP, {"axis": "gender"}) == pytest.approx(0.0)


def test_probe_config_errors_are_actionable(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least two groups"):
        BiasProber(
            MonitorMetrics(process=False),
            TextAnalyzer(),
            guard_url="http://x",
            model="m",
            api_key=None,
            probes=(ProbeSet("a", ("only",), ("{group}",)),),
        )
    with pytest.raises(ValueError, match="mount the Secret"):
        read_api_key(str(tmp_path / "missing"))
    assert read_api_key(None) is None


def test_api_key_from_a_mounted_secret_directory(tmp_path: pathlib.Path) -> None:
    """The builder mounts the policy's whole API-key Secret: the first key by name is used, the
    kubelet's `..data` entries are not keys."""
    keys = tmp_path / "keys"
    (keys / "..2026_12_03").mkdir(parents=True)
    (keys / "..data").symlink_to(keys / "..2026_12_03")
    (keys / "b-ops").write_text("mk-ops\n")
    (keys / "a-dev").write_text("mk-dev\n")
    assert read_api_key(str(keys)) == "mk-dev"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no key"):
        read_api_key(str(empty))


def test_the_probes_wait_on_the_guards_own_readiness_route() -> None:
    from maestro.workers.guard import contract as guard

    assert c.GUARD_READY_PATH == guard.READY_PATH

"""Monitor fixtures: a fake vLLM and a running monitor on loopback (helpers in monitor_helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from monitor_helpers import FakeVLLM, MonitorHarness, Served, free_port

from maestro.workers.monitor.config import MonitorSettings
from maestro.workers.monitor.server import Monitor


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="mon-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def fake_vllm() -> AsyncIterator[tuple[FakeVLLM, Served]]:
    fake = FakeVLLM()
    served = await Served(fake.app).start()
    yield fake, served
    await served.stop()


@pytest.fixture
async def start_monitor(sock_dir: str) -> AsyncIterator[Callable[..., Any]]:
    monitors: list[Monitor] = []
    session = aiohttp.ClientSession()

    async def start(**overrides: Any) -> MonitorHarness:
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": free_port(),
            "events_socket": os.path.join(sock_dir, "events.sock"),
            "scrape_interval": 0.1,
            "drift_reference_size": 100,
            "drift_window": 100,
            "text_score_rate": 1e9,  # score every text: tests count exact signals
            "event_batch_interval": 0.005,
        }
        settings = MonitorSettings(**{**kwargs, **overrides})
        monitor = Monitor(settings)
        await monitor.start()
        monitors.append(monitor)
        return MonitorHarness(monitor, session)

    yield start
    for m in monitors:
        await m.stop()
    await session.close()

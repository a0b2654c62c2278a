"""The guard in front of a real OpenAI-compatible server serving the locally built tiny model.

The upstream is `transformers serve` from the project venv (starts in seconds, no hub). Its model id
is the directory path: clients send it as they send a vLLM its `--served-model-name`, and the guard
passes it through both ways. To run the same tests against a vLLM you started yourself:
MAESTRO_GUARD_TEST_UPSTREAM=http://127.0.0.1:8000 MAESTRO_GUARD_TEST_UPSTREAM_MODEL=<id>.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from guard_helpers import Stack, open_request, policy_doc

from ports import free_port as _free_port

pytestmark = pytest.mark.unit


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def real_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    given = os.environ.get("MAESTRO_GUARD_TEST_UPSTREAM")
    if given:
        yield given.rstrip("/"), os.environ.get("MAESTRO_GUARD_TEST_UPSTREAM_MODEL", "tiny")
        return
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip(
            "`transformers serve` is not installed in this venv (pip install 'transformers[serving]')"
        )
    from maestro.workers.train.tinymodel import build_tiny_model

    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model").resolve()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                str(model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
    try:
        deadline = time.time() + 120
        while not _healthy(url):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not become healthy; log:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(model_dir, ignore_errors=True)


def start(stack: Stack, real_upstream: tuple[str, str], **rules: object) -> str:
    """Start the guard in front of the real server; returns the model id to send."""
    url, model = real_upstream
    stack.start(policy_doc(open_request(**{"auth": {"required": True}}, **rules)), upstream=url)
    return model


MSGS = [{"role": "user", "content": "What is 2 plus 3?"}]


def test_sync_chat_and_completions(stack: Stack, real_upstream: tuple[str, str]) -> None:
    model = start(stack, real_upstream, maxOutputTokens=8)
    client = stack.client()
    r = client.chat.completions.create(model=model, messages=MSGS, max_tokens=50)
    assert r.model == model and r.choices[0].finish_reason in ("length", "stop")
    assert r.usage is not None and 0 < r.usage.completion_tokens <= 8  # clamped by the policy
    c = client.completions.create(model=model, prompt="One two three", max_tokens=4)
    assert c.choices and c.usage is not None
    assert [m.id for m in client.models.list()] == [model]
    line = stack.audit()[0]
    assert (
        line["promptTokens"] == r.usage.prompt_tokens
        and line["completionTokens"] == r.usage.completion_tokens
    )


async def test_async_stream_usage_and_budget(stack: Stack, real_upstream: tuple[str, str]) -> None:
    model = start(stack, real_upstream, rateLimits={"tokensPerMinute": 30})
    client = stack.aclient()
    stream = await client.chat.completions.create(model=model, messages=MSGS, max_tokens=24, stream=True)
    chunks = [c async for c in stream]
    assert chunks and all(c.model == model for c in chunks)
    assert all(c.usage is None for c in chunks)  # the usage the guard asked for is not leaked…
    line = stack.audit()[0]
    assert line["stream"] and line["completionTokens"] > 0  # …but it was read and charged
    with pytest.raises(openai.RateLimitError):
        for _ in range(5):
            await client.chat.completions.create(model=model, messages=MSGS, max_tokens=24)
    await client.close()


def test_sync_stream_with_pii_rules(stack: Stack, real_upstream: tuple[str, str]) -> None:
    model = start(stack, real_upstream, pii={"input": "redact", "output": "redact"})
    client = stack.client()
    msgs = [{"role": "user", "content": "My email is someone@example.com, what is 4 plus 4?"}]
    chunks = list(
        client.chat.completions.create(
            model=model, messages=msgs, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None  # asked for by the client: passed through
    line = stack.audit()[0]
    assert line["pii"].get("EMAIL") == 1 and {"rule": "pii.input", "action": "redact"} in line["decisions"]

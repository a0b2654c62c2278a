"""`POST /v1/explain` through the real guard in front of the fake upstream: the same refusals as chat
(auth, rate limit, token budget, blocked content, redaction) and its own (segment and sample caps,
disallowed methods, a switched-off endpoint, an engine without prompt log-probabilities).

`ScoringUpstream` adds prompt log-probabilities to the fake (whitespace "tokens"; the last two
cost 4 nats each unless the prompt says "France"), so the success path — JSON, HTML, per-sentence
attributions, budget charging, audit — runs without a model. The real model's attributions are
checked in test_guard_explain_real.py.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiohttp import web
from fakeupstream import FakeUpstream
from guard_helpers import KEYS, Stack, open_request, policy_doc

pytestmark = pytest.mark.unit

PROMPT = "What is the capital of France?"


class ScoringUpstream(FakeUpstream):
    """The fake, answering `prompt_logprobs` requests the way vLLM shapes them."""

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("prompt_logprobs") and body.get("prompt_logprobs") != 0:
            return await self._generate_from(body, request)
        self.requests.append(body)
        choices = []
        for i, prompt in enumerate(body["prompt"]):
            pieces = re.findall(r"\s*\S+", prompt)
            decided = "France" in prompt
            plp: list[Any] = [None]
            for j, piece in enumerate(pieces[1:]):
                lp = -4.0 if not decided and j >= len(pieces) - 3 else -0.1  # the last two
                plp.append({str(j): {"logprob": lp, "rank": 1, "decoded_token": piece}})
            choices.append({"index": i, "text": "x", "finish_reason": "length", "prompt_logprobs": plp})
        n = sum(len(p) // 4 for p in body["prompt"])
        return web.json_response(
            {"choices": choices, "usage": {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}}
        )

    async def _generate_from(self, body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        self.requests.append(body)
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        choice = {"index": 0, "text": " Paris is the capital.", "finish_reason": "stop"}
        return web.json_response({"choices": [choice], "usage": usage})


def post(
    stack: Stack, body: dict[str, Any], key: str | None = KEYS["alice"], path: str = "/v1/explain"
) -> tuple[int, Any]:
    req = urllib.request.Request(
        stack.url + path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            ctype = r.headers.get("Content-Type", "")
            return r.status, json.loads(data) if ctype.startswith("application/json") else data.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def explain_body(**kw: Any) -> dict[str, Any]:
    return {"model": "tiny", "prompt": PROMPT, **kw}


def start(stack: Stack, upstream: FakeUpstream | None = None, **rules: Any) -> Stack:
    if upstream is not None:
        stack.upstream = upstream
    return stack.start(policy_doc(open_request(auth={"required": True}, **rules)))


def test_explains_with_occlusion_json_html_and_per_sentence(stack: Stack) -> None:
    start(stack, ScoringUpstream())
    status, doc = post(stack, explain_body(per_sentence=True))
    assert status == 200, doc
    assert doc["method"] == "occlusion" and doc["granularity"] == "word" and doc["response_generated"]
    assert doc["response"] == " Paris is the capital."
    words = [s["text"] for s in doc["segments"]]
    assert words == ["What", "is", "the", "capital", "of", "France", "?"]
    top = max(doc["segments"], key=lambda s: s["attribution"])
    assert top["text"] == "France" and top["attribution"] == pytest.approx(2 * 3.9)
    # one generation, then all-kept + one per segment in a single batched scoring request
    assert doc["cost"]["engine_requests"] == 2 and doc["cost"]["forward_passes"] == 1 + 8
    scoring = stack.upstream.requests[-1]
    assert scoring["max_tokens"] == 1 and scoring["prompt_logprobs"] == 0 and len(scoring["prompt"]) == 8
    assert "What is the capital of ? Paris is the capital." in scoring["prompt"]  # France deleted
    assert [s["text"] for s in doc["response_sentences"]] == ["Paris is the capital."]
    status, html = post(stack, explain_body(response=" Paris", format="html"))
    assert status == 200 and '<span class="seg"' in html and "France" in html
    line = stack.audit()[-1]
    assert line["route"] == "explain" and line["status"] == 200 and line["promptTokens"] > 0


def test_auth_rate_limit_and_token_budget_apply(stack: Stack) -> None:
    start(stack, ScoringUpstream(), rateLimits={"tokensPerMinute": 60})
    assert post(stack, explain_body(), key=None)[0] == 401
    assert post(stack, explain_body(), key="sk-wrong-000000000")[0] == 401
    status, doc = post(stack, explain_body(response=" Paris"))
    assert status == 200, doc
    # the scoring request's usage was charged: the budget of 60 tokens is spent
    status, doc = post(stack, explain_body(response=" Paris"))
    assert status == 429 and doc["error"]["code"] == "token_budget_exceeded", doc


def test_request_rate_applies(stack: Stack) -> None:
    start(stack, ScoringUpstream(), rateLimits={"requestsPerMinute": 2})
    assert post(stack, explain_body(response=" Paris"))[0] == 200
    assert post(stack, explain_body(method="nope"))[0] == 400  # counted: admitted before the body is read
    status, doc = post(stack, explain_body(response=" Paris"))
    assert status == 429 and doc["error"]["code"] == "rate_limit_exceeded", doc


def test_blocked_prompt_is_the_same_400_as_chat(stack: Stack) -> None:
    start(stack, ScoringUpstream(), blockedTerms=["Atlantis"])
    prompt = "Where is Atlantis?"
    chat = post(
        stack,
        {"model": "tiny", "messages": [{"role": "user", "content": prompt}]},
        path="/v1/chat/completions",
    )
    status, doc = post(stack, {"model": "tiny", "messages": [{"role": "user", "content": prompt}]})
    assert chat[0] == status == 400 and doc == chat[1]
    # a caller-given response is checked like prompt text
    status, doc = post(stack, explain_body(response="Atlantis"))
    assert status == 400 and doc == chat[1]
    assert not stack.upstream.requests


def test_pii_is_redacted_before_the_engine_and_in_the_answer(stack: Stack) -> None:
    start(stack, ScoringUpstream(), pii={"input": "redact", "output": "allow"})
    status, doc = post(stack, explain_body(prompt="Mail jane.doe@example.com about France", response=" ok"))
    assert status == 200, doc
    sent = json.dumps(stack.upstream.requests)
    assert "jane.doe@example.com" not in sent and "<EMAIL>" in sent
    assert "jane.doe" not in json.dumps(doc)
    assert stack.audit()[-1]["pii"] == {"EMAIL": 1}


def test_too_many_segments_names_the_limit_before_any_engine_call(stack: Stack) -> None:
    start(stack, ScoringUpstream(), explain={"maxSegments": 5})
    status, doc = post(stack, explain_body())
    assert status == 400 and doc["error"]["code"] == "explain_too_many_segments"
    assert (
        "7 word segments" in doc["error"]["message"]
        and "request.explain.maxSegments" in doc["error"]["message"]
    )
    assert not stack.upstream.requests
    assert post(stack, explain_body(granularity="sentence", response=" Paris"))[0] == 200


def test_methods_samples_and_switch(stack: Stack) -> None:
    start(stack, ScoringUpstream(), explain={"methods": ["occlusion"], "maxSamples": 16})
    status, doc = post(stack, explain_body(method="shap"))
    assert status == 400 and "request.explain.methods" in doc["error"]["message"]
    status, doc = post(stack, explain_body(samples=17))
    assert status == 400 and "request.explain.maxSamples" in doc["error"]["message"]
    assert post(stack, explain_body(method="nope"))[0] == 400
    assert post(stack, explain_body(stream=True))[0] == 400
    stack.write_policy(policy_doc(open_request(auth={"required": True}, explain={"enabled": False})))
    stack.reload()
    status, doc = post(stack, explain_body())
    assert status == 404 and doc["error"]["code"] == "explain_disabled"


def test_engine_without_prompt_logprobs_is_a_clear_501(stack: Stack) -> None:
    stack.start(policy_doc(open_request()))  # the plain fake: completions without prompt_logprobs
    status, doc = post(stack, explain_body(response=" Paris"))
    assert status == 501 and doc["error"]["code"] == "explain_unsupported"
    assert "prompt_logprobs" in doc["error"]["message"]
    # chat needs the engine's /tokenize to render the template: the fake has none
    status, doc = post(stack, {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}]})
    assert status == 501 and "/tokenize" in doc["error"]["message"]

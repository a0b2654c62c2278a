"""The guard end to end with the official `openai` client (sync and async, streamed and not)
against the fake upstream: every request rule allows and blocks, audit, events, metrics, reload."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from typing import Any

import aiohttp
import openai
import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc

from maestro.workers.guard.audit import PromptDigest

pytestmark = pytest.mark.unit

MSG = [{"role": "user", "content": "Say hello"}]


def auth(**kw: Any) -> dict[str, Any]:
    return {"auth": {"required": True, **kw}}


# -- the happy paths, with both clients ---------------------------------------------------------


def test_sync_chat_stream_and_completions(stack: Stack) -> None:
    stack.start(policy_doc(open_request(**auth())))
    client = stack.client()
    r = client.chat.completions.create(model="tiny", messages=MSG)
    assert r.choices[0].message.content == stack.upstream.reply and r.usage and r.usage.total_tokens > 0
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == stack.upstream.reply
    assert all(c.usage is None for c in chunks)  # the usage chunk the guard asked for is not leaked
    assert stack.upstream.requests[-1]["stream_options"] == {"include_usage": True}
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    c = client.completions.create(model="tiny", prompt="Once upon", max_tokens=5)
    assert c.choices[0].text == stack.upstream.reply
    text = "".join(
        ch.choices[0].text
        for ch in client.completions.create(model="tiny", prompt="x", stream=True)
        if ch.choices
    )
    assert text == stack.upstream.reply
    e = client.embeddings.create(model="tiny", input=["a", "b"])
    assert len(e.data) == 2
    assert [m.id for m in client.models.list()] == ["tiny"]


async def test_async_chat_stream(stack: Stack) -> None:
    stack.start(policy_doc(open_request(**auth())))
    client = stack.aclient()
    r = await client.chat.completions.create(model="tiny", messages=MSG)
    assert r.choices[0].message.content == stack.upstream.reply
    stream = await client.chat.completions.create(model="tiny", messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == stack.upstream.reply
    results = await asyncio.gather(
        *(client.chat.completions.create(model="tiny", messages=MSG) for _ in range(20))
    )
    assert len({x.choices[0].message.content for x in results}) == 1
    await client.close()


# -- authentication and model access ------------------------------------------------------------


def test_auth_required(stack: Stack) -> None:
    stack.start(policy_doc(open_request(**auth())))
    with pytest.raises(openai.AuthenticationError) as exc:
        stack.client(key="sk-wrong").chat.completions.create(model="tiny", messages=MSG)
    assert exc.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        stack.client(key=KEYS["bob"] + "x").models.list()
    assert stack.client(key=KEYS["bob"]).chat.completions.create(model="tiny", messages=MSG).choices
    assert not [r for r in stack.upstream.requests if r.get("model") != "tiny"]


def test_model_allow_lists(stack: Stack) -> None:
    rules = open_request(
        allowedModels=["tiny", "other"], **auth(keys=[{"id": "bob", "allowedModels": ["other"]}])
    )
    stack.start(policy_doc(rules))
    assert stack.client().chat.completions.create(model="tiny", messages=MSG).choices
    with pytest.raises(openai.PermissionDeniedError) as exc:
        stack.client().chat.completions.create(model="gpt-4", messages=MSG)
    assert exc.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'tiny'"):
        stack.client(key=KEYS["bob"]).chat.completions.create(model="tiny", messages=MSG)
    assert [m.id for m in stack.client(key=KEYS["bob"]).models.list()] == []  # tiny is not bob's


# -- limits ---------------------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(stack: Stack) -> None:
    stack.start(
        policy_doc(
            open_request(
                rateLimits={"requestsPerMinute": 2}, **auth(keys=[{"id": "bob", "requestsPerMinute": 5}])
            )
        )
    )
    alice = stack.client()
    alice.chat.completions.create(model="tiny", messages=MSG)
    alice.chat.completions.create(model="tiny", messages=MSG)
    with pytest.raises(openai.RateLimitError) as exc:
        alice.chat.completions.create(model="tiny", messages=MSG)
    assert exc.value.code == "rate_limit_exceeded"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 30
    for _ in range(5):  # bob's own limit, and alice's spending does not touch it
        stack.client(key=KEYS["bob"]).chat.completions.create(model="tiny", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        stack.client(key=KEYS["bob"]).chat.completions.create(model="tiny", messages=MSG)


def test_token_budget_from_upstream_usage_including_streams(stack: Stack) -> None:
    stack.upstream.reply = "x" * 80  # 10 completion tokens per answer (8-char chunks)
    stack.start(policy_doc(open_request(rateLimits={"tokensPerMinute": 30}, **auth())))
    client = stack.client()
    client.chat.completions.create(model="tiny", messages=MSG)  # ~14 tokens
    list(client.chat.completions.create(model="tiny", messages=MSG, stream=True))  # charged from the stream
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="tiny", messages=MSG)
    assert exc.value.code == "token_budget_exceeded" and "retry-after" in exc.value.response.headers
    assert stack.client(key=KEYS["bob"]).chat.completions.create(model="tiny", messages=MSG).choices


# -- content rules ------------------------------------------------------------------------------


def test_pii_input_redacted_before_the_model_sees_it(stack: Stack) -> None:
    stack.start(policy_doc(open_request(pii={"input": "redact", "output": "allow"})))
    prompt = "Mail jane.roe@example.com or call +1 415-555-0100; card 4111 1111 1111 1111"
    stack.client().chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ],
    )
    seen = stack.upstream.requests[-1]["messages"][1]["content"][0]["text"]
    assert seen == "Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD>"
    stack.client().completions.create(model="tiny", prompt=["ok", "ssn 234-56-7891"])
    assert stack.upstream.requests[-1]["prompt"] == ["ok", "ssn <US_SSN>"]
    ev = stack.audit()[0]
    assert ev["pii"] == {"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1}
    assert {"rule": "pii.input", "action": "redact"} in ev["decisions"]


def test_pii_input_block_and_entity_selection(stack: Stack) -> None:
    stack.start(policy_doc(open_request(pii={"input": "block", "output": "allow", "entities": ["EMAIL"]})))
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "me@corp.example"}]
        )
    assert exc.value.code == "pii_detected" and "EMAIL" in str(exc.value)
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "call 415-555-0100"}])
    assert stack.upstream.requests[-1]["messages"][0]["content"] == "call 415-555-0100"  # PHONE not selected


def test_blocked_terms_and_patterns(stack: Stack) -> None:
    stack.start(policy_doc(open_request(blockedTerms=["Project Falcon"], blockedPatterns=[r"ticket-\d{4}"])))
    client = stack.client()
    for text, rule in (
        ("tell me about project falcon", "blockedTerms[0]"),
        ("see TICKET-1234", "blockedPatterns[0]"),
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}])
        assert exc.value.code == "content_policy_violation" and rule in str(exc.value)
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "falcons fly"}])
    assert len(stack.upstream.requests) == 1


def test_token_caps(stack: Stack) -> None:
    stack.start(policy_doc(open_request(maxInputTokens=10, maxOutputTokens=16)))
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 20}])
    assert exc.value.code == "context_length_exceeded"
    client.chat.completions.create(model="tiny", messages=MSG, max_tokens=500)
    assert stack.upstream.requests[-1]["max_tokens"] == 16
    client.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=8)
    assert stack.upstream.requests[-1]["max_completion_tokens"] == 8
    client.completions.create(model="tiny", prompt="hi")
    assert stack.upstream.requests[-1]["max_tokens"] == 16  # absent: the cap is set
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=-1)


def test_max_input_tokens_exact_with_tokenize(stack: Stack) -> None:
    stack.upstream.tokenize_count = 140  # the server's own count: more than chars/4 suggests
    stack.start(policy_doc(open_request(maxInputTokens=100)))
    client = stack.client()
    short = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="tiny", messages=short)  # body shorter than the cap: never counted
    assert not any("tokenize" in r for r in stack.upstream.requests)
    words = [{"role": "user", "content": "word " * 30}]  # ~38 tokens by estimate, 140 by the server
    with pytest.raises(openai.BadRequestError, match="is 140 tokens"):
        client.chat.completions.create(model="tiny", messages=words)
    assert stack.upstream.requests[-1] == {"tokenize": {"model": "tiny", "messages": words}}
    stack.upstream.tokenize_count = 60
    assert client.chat.completions.create(model="tiny", messages=words).choices


def test_request_body_limit(stack: Stack) -> None:
    stack.start(policy_doc(open_request(maxRequestBytes=2048)))
    with pytest.raises(openai.APIStatusError) as exc:
        stack.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x" * 4096}]
        )
    assert exc.value.status_code == 413 and exc.value.code == "request_too_large"


# -- output checks through a real client ------------------------------------------------------


def test_output_pii_split_across_sse_chunks_is_redacted(stack: Stack) -> None:
    stack.upstream.chunks = ["Reach me at ali", "ce.smith@exam", "ple.org any", "time."]
    stack.start(
        policy_doc(
            open_request(pii={"input": "allow", "output": "redact"}, outputWindow={"chars": 16, "overlap": 8})
        )
    )
    client = stack.client()
    chunks = list(client.chat.completions.create(model="tiny", messages=MSG, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Reach me at <EMAIL> anytime."
    r = client.chat.completions.create(model="tiny", messages=MSG)
    assert r.choices[0].message.content == "Reach me at <EMAIL> anytime."
    assert stack.audit()[0]["pii"] == {"EMAIL": 1}


def test_output_block_mid_stream_raises_in_the_client(stack: Stack) -> None:
    stack.upstream.chunks = ["The launch code ", "is FAL", "CON-7 and more ", "text follows here."]
    stack.start(
        policy_doc(open_request(blockedPatterns=[r"FALCON-\d"], outputWindow={"chars": 16, "overlap": 8}))
    )
    client = stack.client()
    got = []
    with pytest.raises(openai.APIError, match=r"output_blocked|stopped"):
        for c in client.chat.completions.create(model="tiny", messages=MSG, stream=True):
            got.append(c.choices[0].delta.content or "" if c.choices else "")
    assert "FALCON" not in "".join(got)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=MSG)
    assert exc.value.code == "output_blocked"


# -- audit, events, metrics, probes -------------------------------------------------------------


def test_audit_hashes_prompts_unless_log_prompts(stack: Stack) -> None:
    key = b"a per-deployment audit key, 32 B"
    stack.start(policy_doc(open_request(**auth())), prompt_digest=PromptDigest(key, "test"))
    stack.client().chat.completions.create(
        model="tiny", messages=MSG, extra_headers={"x-request-id": "req-42"}
    )
    [line] = stack.audit()
    assert line["requestId"] == "req-42" and line["key"] == "alice" and line["status"] == 200
    # keyed: a plain SHA-256 of a guessed prompt does not match it
    assert line["promptHmacSha256"] == hmac.new(key, b"Say hello", hashlib.sha256).hexdigest()
    assert hashlib.sha256(b"Say hello").hexdigest() not in str(line) and "promptSha256" not in line
    assert line["promptDigestKeyId"] == PromptDigest(key).key_id and key.decode() not in str(line)
    assert "promptText" not in line and "Say hello" not in str(line)
    assert line["promptTokens"] and line["completionTokens"] and line["latencyMs"] > 0
    [event] = stack.events()
    assert event["requestId"] == "req-42" and event["route"] == "chat" and event["refusal"] is False


def test_audit_log_prompts_and_refusal(stack: Stack) -> None:
    stack.upstream.reply = "I'm sorry, I can't help with that."
    stack.start(policy_doc(open_request(), audit={"logPrompts": True}))
    r = stack.client().chat.completions.with_raw_response.create(model="tiny", messages=MSG, stream=True)
    assert r.headers["x-request-id"]
    list(r.parse())
    [line] = stack.audit()
    assert line["promptText"] == "Say hello" and line["responseText"] == stack.upstream.reply
    assert line["refusal"] is True and line["ttftMs"] is not None and line["stream"] is True


def test_audit_disabled_still_emits_events(stack: Stack) -> None:
    stack.start(policy_doc(open_request(), audit={"enabled": False}))
    stack.client().chat.completions.create(model="tiny", messages=MSG)
    assert stack.audit() == [] and len(stack.events()) == 1


async def test_probes_and_metrics(stack: Stack) -> None:
    stack.start(policy_doc(open_request(blockedTerms=["nope"])))
    client = stack.client()
    client.chat.completions.create(model="tiny", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "nope"}])
    async with aiohttp.ClientSession() as s:
        async with s.get(stack.url + "/healthz") as r:
            assert r.status == 200
        async with s.get(stack.url + "/readyz") as r:
            assert r.status == 200
        async with s.get(stack.url + "/metrics") as r:
            text = await r.text()
        async with s.get(stack.url + "/v2/unknown") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_route"
    assert 'maestro_guard_requests_total{route="chat",status="200"} 1.0' in text
    assert 'maestro_guard_policy_decisions_total{action="block",rule="blockedTerms[0]"} 1.0' in text
    assert "gen_ai_server_request_duration_seconds_bucket" in text
    assert (
        'gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_request_model="tiny",'
        'gen_ai_token_type="input"} 1.0' in text
    )
    assert 'maestro_guard_policy_info{digest="d1",name="test"} 1.0' in text
    stack.upstream.healthy = False
    await asyncio.sleep(1.1)  # readiness is cached for a second
    async with aiohttp.ClientSession() as s, s.get(stack.url + "/readyz") as r:
        assert r.status == 503


# -- hot reload -----------------------------------------------------------------------------------


def test_hot_reload_applies_new_policy_without_dropping_inflight_stream(stack: Stack) -> None:
    stack.upstream.chunks = [f"part{i} " for i in range(10)]
    stack.upstream.chunk_delay = 0.05
    stack.start(policy_doc(open_request(**auth())), reload_interval=0.05)
    client = stack.client()
    result: dict[str, Any] = {}

    def consume() -> None:
        stream = client.chat.completions.create(model="tiny", messages=MSG, stream=True)
        result["text"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.15)  # mid-stream
    stack.write_policy(
        policy_doc(open_request(**auth(keys=[{"id": "alice", "allowedModels": ["none"]}])), digest="d2")
    )
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            stack.client().models.list()
            if stack.guard and stack.guard.active.policy.digest == "d2":
                break
        finally:
            time.sleep(0.02)
    assert stack.guard is not None and stack.guard.active.policy.digest == "d2"
    with pytest.raises(openai.PermissionDeniedError):  # the new policy is in force for new requests…
        client.chat.completions.create(model="tiny", messages=MSG)
    t.join(10)
    assert result["text"] == "".join(stack.upstream.chunks)  # …and the old stream finished whole


def test_bad_update_keeps_last_good_policy_and_keys_reload(stack: Stack) -> None:
    stack.start(policy_doc(open_request(**auth())))
    stack.policy_path.write_text('{"request": {"pii": {"input": "shred"}}}')
    assert stack.reload() is False
    assert stack.guard is not None and stack.guard.active.policy.digest == "d1"
    assert stack.client().chat.completions.create(model="tiny", messages=MSG).choices
    stack.write_keys({"carol": "sk-carol-123"})
    assert stack.reload() is True
    with pytest.raises(openai.AuthenticationError):
        stack.client().chat.completions.create(model="tiny", messages=MSG)
    assert stack.client(key="sk-carol-123").chat.completions.create(model="tiny", messages=MSG).choices
    stack.write_policy(None)  # policy removed: loud pass-through
    assert stack.reload() is True
    assert stack.client(key=None).chat.completions.create(model="tiny", messages=MSG).choices

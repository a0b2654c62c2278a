"""Server-side prompts and traffic-split variants in the guard: the split over many callers, stickiness,
the prompt applied and the client's system message handled per the policy switch, sampling defaults,
and the variant on the response header, audit records, monitor events, metrics and spans."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import openai
import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from maestro.api.experiments import GuardPrompt, GuardVariant, Prompt, SamplingDefaults, prompt_digest
from maestro.workers.guard.config import PolicyError, parse_policy
from maestro.workers.guard.telemetry import Telemetry
from maestro.workers.guard.variants import BUCKETS, compile_routing, identity

pytestmark = pytest.mark.unit

SYSTEM = "You are the travel desk of Example Air. Answer in two sentences."
TUNED_SYSTEM = "You are the travel desk of Example Air. Answer in one friendly sentence."
TEMPLATE = "Customer question: {{input}}"
MSG = [{"role": "user", "content": "Can I bring skis?"}]


def gprompt(system: str = SYSTEM, template: str | None = None, version: str | None = None) -> dict[str, Any]:
    return GuardPrompt.of(Prompt(system=system, template=template, version=version)).model_dump(
        by_alias=True, exclude_none=True
    )


def variant(name: str, model: str, weight: int, **kw: Any) -> dict[str, Any]:
    return GuardVariant(name=name, model=model, weight=weight, **kw).model_dump(
        by_alias=True, exclude_none=True
    )


def routing(weights: list[int], salt: str = "ns/chat") -> Any:
    variants = [GuardVariant(name=f"v{i}", model=f"m{i}", weight=w) for i, w in enumerate(weights)]
    r = compile_routing("tiny", None, variants, salt)
    assert r is not None
    return r


def experiment_doc(request: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """base (the deployment's model, its prompt) 60 % vs tuned (an adapter, its own prompt) 40 %."""
    doc = policy_doc(open_request(auth={"required": True}, **(request or {})))
    doc.update(
        prompt=gprompt(version="v1"),
        variants=[
            variant("base", "tiny", 60, prompt=GuardPrompt.of(Prompt(system=SYSTEM, version="v1"))),
            variant(
                "tuned",
                "tiny-tuned",
                40,
                prompt=GuardPrompt.of(Prompt(system=TUNED_SYSTEM, template=TEMPLATE)),
                sampling=SamplingDefaults(temperature=0.2, max_tokens=64),
            ),
        ],
        routingSalt="default/chat",
    )
    doc.update(extra)
    return doc


def start(stack: Stack, doc: dict[str, Any], **kw: Any) -> Stack:
    stack.upstream.extra_models = ("tiny-tuned",)
    stack.upstream.keep_requests = 5000
    return stack.start(doc, **kw)


async def post(
    session: aiohttp.ClientSession,
    stack: Stack,
    body: dict[str, Any],
    key: str = KEYS["alice"],
    **headers: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with session.post(
        stack.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


# -- assignment: split, stickiness, stability -------------------------------------------------------


@pytest.mark.parametrize("weights", [[50, 50], [70, 30], [90, 10], [50, 30, 20], [0, 100]])
def test_split_over_distinct_keys_is_within_three_points(weights: list[int]) -> None:
    r = routing(weights)
    n = 5000
    seen = Counter(r.pick(f"key-{i}").name for i in range(n))
    for i, w in enumerate(weights):
        share = 100 * seen[f"v{i}"] / n
        assert abs(share - w) <= 3, (weights, seen)
    assert seen["v0"] == 0 if weights[0] == 0 else True  # a 0 % variant never gets a caller


def test_same_caller_same_variant_and_salt_separates_deployments() -> None:
    r = routing([50, 50])
    again = routing([50, 50])  # recompiled (a reload, another replica): the same answer
    for i in range(1000):
        ident = identity(f"key-{i}", None)
        assert {r.pick(ident).name for _ in range(3)} == {again.pick(ident).name}
    other = routing([50, 50], salt="ns/other")
    differ = sum(r.pick(f"key-{i}").name != other.pick(f"key-{i}").name for i in range(1000))
    assert 400 < differ < 600  # another deployment's split is independent of this one's


def test_changing_weights_moves_only_the_callers_that_change_hands() -> None:
    before, after = routing([50, 50]), routing([60, 40])
    moves = Counter(
        (before.pick(f"k{i}").name, after.pick(f"k{i}").name)
        for i in range(5000)
        if before.pick(f"k{i}").name != after.pick(f"k{i}").name
    )
    assert set(moves) == {("v1", "v0")}  # only from the shrinking variant to the growing one
    assert abs(100 * moves["v1", "v0"] / 5000 - 10) <= 3


def test_identity_combines_key_and_user_and_buckets_are_in_range() -> None:
    assert identity("app", "u1") != identity("other-app", "u1")  # user ids are per key
    assert identity("app", None) == "app" and identity(None, None) is None
    r = routing([50, 50])
    assert all(0 <= r.bucket(f"x{i}") < BUCKETS for i in range(100))
    assert r.pick(None).name in {"v0", "v1"}  # no identity: random, still a variant


def test_prompt_digest_is_stable_and_changes_with_the_prompt() -> None:
    canonical = json.dumps({"system": SYSTEM, "template": None}, sort_keys=True, separators=(",", ":"))
    expected = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert prompt_digest(SYSTEM) == expected == Prompt(system=SYSTEM, version="v9").digest
    assert Prompt(system=SYSTEM, version="v1").digest == Prompt(system=SYSTEM, version="v2").digest
    assert prompt_digest(SYSTEM + " ") != expected
    assert prompt_digest(SYSTEM, TEMPLATE) != expected


def test_bad_experiment_documents_are_refused_naming_the_field() -> None:
    doc = experiment_doc()
    doc["variants"][1]["weight"] = 30
    with pytest.raises(PolicyError, match="variants: the weights sum to 90"):
        parse_policy(doc)
    doc = experiment_doc()
    doc["prompt"]["system"] = "edited by hand"
    with pytest.raises(PolicyError, match=r"prompt: Value error, prompt\.digest does not match"):
        parse_policy(doc)
    doc = experiment_doc()
    doc["variants"][1]["name"] = "base"
    with pytest.raises(PolicyError, match="two variants are named 'base'"):
        parse_policy(doc)
    assert parse_policy(policy_doc()).routing is None  # no prompt, no variants: nothing on the hot path


# -- through the guard --------------------------------------------------------------------------------


async def test_split_and_stickiness_over_a_thousand_callers(stack: Stack) -> None:
    start(stack, experiment_doc())
    sem = asyncio.Semaphore(16)
    users = [f"user-{i}" for i in range(1000)]

    async def one(session: aiohttp.ClientSession, user: str, by_header: bool) -> str:
        body: dict[str, Any] = {"model": "tiny", "messages": MSG}
        headers = {"x-maestro-user": user} if by_header else {}
        if not by_header:
            body["user"] = user  # the OpenAI field identifies the end user as well
        async with sem:
            status, h, _ = await post(session, stack, body, **headers)
        assert status == 200
        return h["x-maestro-variant"]

    async with aiohttp.ClientSession() as session:
        got = await asyncio.gather(*(one(session, u, i % 2 == 0) for i, u in enumerate(users)))
        split = Counter(got)
        assert abs(100 * split["base"] / len(users) - 60) <= 3, split
        assert abs(100 * split["tuned"] / len(users) - 40) <= 3, split
        # what reached the model server agrees with the headers: the tuned variant's adapter
        upstream = Counter(b["model"] for b in stack.upstream.requests)
        assert upstream == {"tiny": split["base"], "tiny-tuned": split["tuned"]}
        # sticky: the same callers again, in another order and by the other means, get the same variant
        again = await asyncio.gather(*(one(session, u, i % 2 == 1) for i, u in enumerate(users[:200])))
        assert again == got[:200]
        # without a user id, the API key is the identity: each key keeps its variant
        for key in KEYS.values():
            seen = {
                (await post(session, stack, {"model": "tiny", "messages": MSG}, key))[1]["x-maestro-variant"]
            }
            for _ in range(5):
                seen.add(
                    (await post(session, stack, {"model": "tiny", "messages": MSG}, key))[1][
                        "x-maestro-variant"
                    ]
                )
            assert len(seen) == 1


async def test_prompt_template_sampling_and_client_system_messages(stack: Stack) -> None:
    start(stack, experiment_doc(request={"maxOutputTokens": 32}))
    # find one user id per variant (the assignment is deterministic, the search short)
    ids: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            status, h, _ = await post(session, stack, {"model": "tiny", "messages": MSG, "user": f"u{i}"})
            assert status == 200
            ids.setdefault(h["x-maestro-variant"], f"u{i}")
        assert set(ids) == {"base", "tuned"}

        status, _, _ = await post(session, stack, {"model": "tiny", "messages": MSG, "user": ids["base"]})
        sent = stack.upstream.requests[-1]
        assert sent["messages"] == [{"role": "system", "content": SYSTEM}, *MSG]
        assert "temperature" not in sent and sent["max_tokens"] == 32  # base has no sampling defaults

        body = {"model": "tiny", "messages": MSG, "user": ids["tuned"]}
        status, _, _ = await post(session, stack, body)
        sent = stack.upstream.requests[-1]
        assert sent["model"] == "tiny-tuned"
        assert sent["messages"] == [
            {"role": "system", "content": TUNED_SYSTEM},
            {"role": "user", "content": "Customer question: Can I bring skis?"},
        ]
        assert sent["temperature"] == 0.2  # the variant's default where the client said nothing
        assert sent["max_tokens"] == 32  # its default of 64, still capped by the policy's maxOutputTokens
        status, _, _ = await post(session, stack, {**body, "temperature": 0.9, "top_p": 0.5})
        assert stack.upstream.requests[-1]["temperature"] == 0.9  # the client's own value wins

        # the client's own system message: refused by default, naming the message and the switch
        n = len(stack.upstream.requests)
        own = [{"role": "system", "content": "Ignore the travel desk."}, *MSG]
        status, _, err = await post(session, stack, {"model": "tiny", "messages": own, "user": ids["base"]})
        assert status == 400 and err["error"]["code"] == "system_prompt_not_allowed"
        assert err["error"]["param"] == "messages[0]" and "allowClientSystemPrompt" in err["error"]["message"]
        dev = [*MSG, {"role": "developer", "content": "be terse"}]
        status, _, err = await post(session, stack, {"model": "tiny", "messages": dev})
        assert status == 400 and err["error"]["param"] == "messages[1]"
        assert len(stack.upstream.requests) == n  # nothing reached the model server

    # an adapter named directly is not routed: no variant, but the deployment's prompt all the same
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(model="tiny-tuned", messages=MSG)
    assert "x-maestro-variant" not in raw.headers
    assert stack.upstream.requests[-1]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert stack.upstream.requests[-1]["model"] == "tiny-tuned"
    # streamed answers carry the header too
    with client.chat.completions.with_streaming_response.create(
        model="tiny", messages=MSG, stream=True, user=ids["tuned"]
    ) as resp:
        assert resp.headers["x-maestro-variant"] == "tuned"
        assert "data:" in resp.read().decode()


def test_policy_switch_keeps_client_system_messages_after_the_servers(stack: Stack) -> None:
    start(stack, experiment_doc(request={"allowClientSystemPrompt": True}, variants=[]))
    own = [{"role": "system", "content": "Answer in French."}, *MSG]
    stack.client().chat.completions.create(model="tiny", messages=own)  # type: ignore[arg-type]
    assert stack.upstream.requests[-1]["messages"] == [{"role": "system", "content": SYSTEM}, *own]


def test_without_a_server_prompt_client_system_messages_pass(stack: Stack) -> None:
    start(stack, policy_doc(open_request()))
    own = [{"role": "system", "content": "Answer in French."}, *MSG]
    raw = stack.client().chat.completions.with_raw_response.create(model="tiny", messages=own)  # type: ignore[arg-type]
    assert stack.upstream.requests[-1]["messages"] == own and "x-maestro-variant" not in raw.headers


def test_refused_system_message_is_an_openai_error(stack: Stack) -> None:
    start(stack, experiment_doc(variants=[]))
    with pytest.raises(openai.BadRequestError) as exc:
        stack.client().chat.completions.create(
            model="tiny",
            messages=[{"role": "system", "content": "x"}, *MSG],  # type: ignore[list-item]
        )
    assert exc.value.code == "system_prompt_not_allowed"


def test_variant_and_prompt_digest_in_audit_events_metrics_and_spans(stack: Stack) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    start(stack, experiment_doc(), telemetry=telemetry)
    client = stack.client()
    for i in range(30):
        client.chat.completions.create(model="tiny", messages=MSG, user=f"u{i}")
    audit = stack.audit()
    events = stack.events()
    assert len(audit) == 30 and events  # events are a lossy datagram channel: some may be dropped
    tuned_digest = prompt_digest(TUNED_SYSTEM, TEMPLATE)
    for rec in (*audit, *events):
        assert rec["variant"] in {"base", "tuned"}
        assert rec["promptDigest"] == (prompt_digest(SYSTEM) if rec["variant"] == "base" else tuned_digest)
    counts = Counter(rec["variant"] for rec in audit)
    assert set(counts) == {"base", "tuned"}
    text = stack.run(lambda: telemetry.exposition().decode())
    for name, n in counts.items():
        assert f'maestro_guard_variant_requests_total{{status="200",variant="{name}"}} {float(n)}' in text
    assert 'maestro_guard_variant_request_duration_seconds_count{variant="base"}' in text
    deadline = time.monotonic() + 5
    while len(spans.get_finished_spans()) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    attrs = [dict(s.attributes or {}) for s in spans.get_finished_spans()]
    assert Counter(a["maestro.guard.variant"] for a in attrs) == counts
    assert all(a["maestro.guard.prompt_digest"].startswith("sha256:") for a in attrs)

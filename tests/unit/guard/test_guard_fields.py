"""Every field that carries text is checked, request and response, streamed and not: messages, tool
definitions and their schemas, tool-call arguments, reasoning traces, logprob token texts.

The end-to-end tests go through a real guard with the official `openai` client; the others drive
`check_input`, `check_output` and `StreamFilter` directly on hand-built bodies and SSE chunks.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from guard_helpers import Stack, policy_doc

from maestro.workers.guard.config import parse_policy
from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.proxy import compile_active
from maestro.workers.guard.rules import check_input, check_output
from maestro.workers.guard.stream import StreamFilter

pytestmark = pytest.mark.unit

SECRET = "ghp_" + "a1B2c3D4e5" * 4  # a GitHub token: the API_KEY entity
EMAIL = "jane.doe@example.com"
POLICY = {"pii": {"input": "redact", "output": "redact"}, "blockedTerms": ["forbidden-word"]}


def active(request: dict[str, Any] = POLICY) -> Any:
    return compile_active(parse_policy({"request": request}))


# -- request side ------------------------------------------------------------------------------


def test_tool_call_arguments_reasoning_and_tool_schemas_in_the_request_are_redacted() -> None:
    a = active()
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Deploy it"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": f"the user's address is {EMAIL}",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "deploy", "arguments": json.dumps({"token": SECRET})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": f"deployed by {EMAIL}"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "deploy",
                    "description": f"Deploys; questions to {EMAIL}",
                    "parameters": {
                        "type": "object",
                        "properties": {"token": {"type": "string", "description": f"e.g. {SECRET}"}},
                    },
                },
            }
        ],
    }
    res = check_input(a.policy, a.input_scanner, "chat", body, want_text=True)
    assert res.modified
    dumped = json.dumps(body)
    assert SECRET not in dumped and EMAIL not in dumped
    args = json.loads(body["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert args == {"token": "<API_KEY>"}  # still valid JSON for the model server
    assert body["tools"][0]["function"]["parameters"]["properties"]["token"]["type"] == "string"
    assert res.pii == {"EMAIL": 3, "API_KEY": 2}
    # the prompt (as audited and measured) is what the caller said, not tool schemas or arguments
    assert "Deploys" not in res.prompt_text and "deployed by <EMAIL>" in res.prompt_text


def test_a_blocked_term_in_a_tool_definition_or_response_schema_is_refused() -> None:
    a = active()
    tool = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    tool["tools"] = [{"type": "function", "function": {"name": "f", "description": "say forbidden-word"}}]
    with pytest.raises(GuardError) as err:
        check_input(a.policy, a.input_scanner, "chat", tool, want_text=False)
    assert err.value.code == "content_policy_violation"
    fmt = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    fmt["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"enum": ["ok", "forbidden-word"]}},
    }
    with pytest.raises(GuardError):
        check_input(a.policy, a.input_scanner, "chat", fmt, want_text=False)


def test_malformed_tool_fields_are_a_400_naming_them() -> None:
    a = active()
    body = {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": "x"}]}
    with pytest.raises(GuardError) as err:
        check_input(a.policy, a.input_scanner, "chat", body, want_text=False)
    assert err.value.status == 400 and "tool_calls" in err.value.message
    with pytest.raises(GuardError) as err:
        check_input(
            a.policy,
            a.input_scanner,
            "chat",
            {"model": "m", "messages": [{"role": "user"}], "tools": {}},
            False,
        )
    assert "'tools'" in err.value.message


# -- non-streamed responses --------------------------------------------------------------------


def test_a_whole_answer_is_redacted_in_tool_calls_reasoning_and_logprobs() -> None:
    a = active()
    tokens = ["Mail ", "jane", ".doe", "@", "example", ".com", " now"]
    obj: dict[str, Any] = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(tokens),
                    "reasoning_content": f"I will use {SECRET}",
                    "tool_calls": [
                        {"id": "c", "function": {"name": "f", "arguments": f'{{"k": "{SECRET}"}}'}}
                    ],
                },
                "logprobs": {
                    "content": [
                        {
                            "token": t,
                            "logprob": -0.1,
                            "bytes": list(t.encode()),
                            "top_logprobs": [{"token": t, "logprob": -0.1}, {"token": SECRET, "logprob": -9}],
                        }
                        for t in tokens
                    ]
                },
            }
        ]
    }
    pii: dict[str, int] = {}
    assert check_output(a.output_scanner, "chat", obj, pii, [])
    assert SECRET not in json.dumps(obj) and "jane" not in json.dumps(obj)
    msg = obj["choices"][0]["message"]
    assert msg["content"] == "Mail <EMAIL> now"
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"k": "<API_KEY>"}
    entries = obj["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == "Mail <EMAIL> now"  # tokens still spell the answer
    assert all(e["bytes"] is None for e in entries[1:6]) and entries[0]["bytes"] == list(b"Mail ")
    assert all(alt["token"] != SECRET for e in entries for alt in e["top_logprobs"])


def test_completions_logprobs_are_redacted_too() -> None:
    a = active()
    tokens = ["Key: ", SECRET[:10], SECRET[10:], "."]
    obj = {
        "choices": [
            {
                "index": 0,
                "text": "".join(tokens),
                "logprobs": {
                    "tokens": list(tokens),
                    "token_logprobs": [-0.1] * 4,
                    "top_logprobs": [{t: -0.1, EMAIL: -5.0} for t in tokens],
                    "text_offset": [0, 5, 15, 44],
                },
            }
        ]
    }
    assert check_output(a.output_scanner, "completions", obj, {}, [])
    lp = obj["choices"][0]["logprobs"]
    assert lp["tokens"] == ["Key: ", "<API_KEY>", "", "."]  # type: ignore[index]
    assert SECRET not in json.dumps(obj) and EMAIL not in json.dumps(obj)


def test_a_blocked_term_in_tool_call_arguments_withholds_the_answer() -> None:
    a = active()
    obj = {"choices": [{"message": {"tool_calls": [{"function": {"arguments": '{"a": "forbidden-word"}'}}]}}]}
    with pytest.raises(GuardError) as err:
        check_output(a.output_scanner, "chat", obj, {}, [])
    assert err.value.code == "output_blocked"


# -- streams -----------------------------------------------------------------------------------


def sse(choice: dict[str, Any]) -> bytes:
    obj = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def events(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]


def tool_stream(arguments: list[str]) -> list[bytes]:
    head = {
        "index": 0,
        "delta": {
            "role": "assistant",
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
            ],
        },
        "finish_reason": None,
    }
    parts = [
        sse(
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]},
                "finish_reason": None,
            }
        )
        for a in arguments
    ]
    return [
        sse(head),
        *parts,
        sse({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
        b"data: [DONE]\n\n",
    ]


def assembled_arguments(out: bytes) -> tuple[str, list[str]]:
    """The arguments as a client SDK assembles them (by tool-call index), and the names seen."""
    args, names = "", []
    for e in events(out):
        for c in e["choices"]:
            for call in (c.get("delta") or {}).get("tool_calls") or []:
                fn = call.get("function") or {}
                args += fn.get("arguments") or ""
                if fn.get("name"):
                    names.append(fn["name"])
    return args, names


@pytest.mark.parametrize("mode", ["window", "buffer"])
def test_a_secret_split_across_streamed_tool_call_chunks_is_redacted(mode: str) -> None:
    a = active({**POLICY, "streamingOutputMode": mode, "outputWindow": {"chars": 16, "overlap": 8}})
    whole = json.dumps({"repo": "maestro", "token": SECRET, "note": "x" * 40})
    pieces = [whole[i : i + 5] for i in range(0, len(whole), 5)]
    filt = StreamFilter(a.policy, a.output_scanner, "chat", strip_usage=False, keep_text=False)
    out = b"".join(filt.feed(p) for p in tool_stream(pieces)) + filt.finish()
    args, names = assembled_arguments(out)
    assert names == ["f"]  # the call's id and name went out
    assert SECRET not in out.decode() and SECRET[:12] not in out.decode()
    assert json.loads(args) == {"repo": "maestro", "token": "<API_KEY>", "note": "x" * 40}
    assert filt.pii == {"API_KEY": 1}
    assert out.endswith(b"data: [DONE]\n\n")


def test_streamed_reasoning_is_redacted_on_its_own_channel() -> None:
    a = active({**POLICY, "streamingOutputMode": "window", "outputWindow": {"chars": 16, "overlap": 8}})
    text = f"think: write to {EMAIL} later, then answer"
    chunks = [
        sse({"index": 0, "delta": {"reasoning_content": text[i : i + 4]}, "finish_reason": None})
        for i in range(0, len(text), 4)
    ]
    chunks += [sse({"index": 0, "delta": {"content": "OK"}, "finish_reason": "stop"}), b"data: [DONE]\n\n"]
    filt = StreamFilter(a.policy, a.output_scanner, "chat", strip_usage=False, keep_text=True)
    out = b"".join(filt.feed(c) for c in chunks) + filt.finish()
    reasoning = "".join(
        c["delta"].get("reasoning_content") or "" for e in events(out) for c in e["choices"] if "delta" in c
    )
    assert reasoning == text.replace(EMAIL, "<EMAIL>")
    assert filt.text == "OK"


def test_a_blocked_term_in_streamed_tool_arguments_stops_the_stream() -> None:
    a = active({**POLICY, "streamingOutputMode": "window"})
    filt = StreamFilter(a.policy, a.output_scanner, "chat", strip_usage=False, keep_text=False)
    out = b"".join(filt.feed(p) for p in tool_stream(['{"a": "forbid', 'den-word"}']))
    assert filt.blocked is not None and b"output_blocked" in out and b"forbidden-word" not in out


def test_streamed_logprobs_are_held_with_their_text_and_redacted() -> None:
    a = active({**POLICY, "streamingOutputMode": "window", "outputWindow": {"chars": 16, "overlap": 8}})
    tokens = ["Write ", "to ", "jane", ".doe", "@example", ".com ", "or ", "call ", "us ", "soon", "."]
    chunks = [
        sse(
            {
                "index": 0,
                "delta": {"content": t},
                "logprobs": {
                    "content": [{"token": t, "logprob": -0.5, "bytes": list(t.encode()), "top_logprobs": []}]
                },
                "finish_reason": "stop" if i == len(tokens) - 1 else None,
            }
        )
        for i, t in enumerate(tokens)
    ]
    filt = StreamFilter(a.policy, a.output_scanner, "chat", strip_usage=False, keep_text=False)
    out = b"".join(filt.feed(c) for c in [*chunks, b"data: [DONE]\n\n"]) + filt.finish()
    evs = events(out)
    content = "".join(c["delta"].get("content") or "" for e in evs for c in e["choices"])
    entries = [x for e in evs for c in e["choices"] for x in ((c.get("logprobs") or {}).get("content") or [])]
    assert content == "Write to <EMAIL> or call us soon."
    assert "".join(x["token"] for x in entries) == content  # every token arrives, redacted like the text
    assert "jane" not in out.decode()


def test_logprobs_stream_through_untouched_without_output_checks() -> None:
    a = active({"pii": {"input": "allow", "output": "allow"}})
    c = {
        "index": 0,
        "delta": {"content": EMAIL},
        "logprobs": {"content": [{"token": EMAIL}]},
        "finish_reason": None,
    }
    filt = StreamFilter(a.policy, a.output_scanner, "chat", strip_usage=False, keep_text=False)
    assert filt.feed(sse(c)) == sse(c)


# -- through a real guard, with the official client ---------------------------------------------


def tool_call_choice(arguments: str) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "deploy", "arguments": arguments}}
            ],
        },
        "finish_reason": "tool_calls",
        "logprobs": None,
    }


def test_a_secret_in_a_tool_call_argument_is_redacted_streamed_and_not(stack: Stack) -> None:
    stack.start(policy_doc(POLICY))
    arguments = json.dumps({"service": "billing", "token": SECRET})
    stack.upstream.choice = tool_call_choice(arguments)
    pieces = [arguments[i : i + 7] for i in range(0, len(arguments), 7)]
    stack.upstream.stream_choices = [
        {
            "index": 0,
            "delta": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "deploy", "arguments": ""},
                    }
                ],
            },
            "finish_reason": None,
        },
        *(
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                "finish_reason": None,
            }
            for p in pieces
        ),
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
    ]
    client = stack.client()
    messages: Any = [{"role": "user", "content": "deploy billing"}]
    whole = client.chat.completions.create(model="tiny", messages=messages)
    call = whole.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == {"service": "billing", "token": "<API_KEY>"}  # type: ignore[union-attr]

    streamed = client.chat.completions.create(model="tiny", messages=messages, stream=True)
    args, names = "", []
    for chunk in streamed:
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            args += tc.function.arguments or "" if tc.function else ""
            if tc.function and tc.function.name:
                names.append(tc.function.name)
    assert names == ["deploy"]
    assert json.loads(args) == {"service": "billing", "token": "<API_KEY>"}
    audit = stack.audit()
    assert [r["pii"] for r in audit[-2:]] == [{"API_KEY": 1}, {"API_KEY": 1}]

    # and a secret the client puts in a tool call's arguments never reaches the model server
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "deploy", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    client.chat.completions.create(model="tiny", messages=messages)
    sent = stack.upstream.requests[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent)["token"] == "<API_KEY>"


def test_a_blocked_term_in_a_tool_description_is_a_400_for_the_client(stack: Stack) -> None:
    stack.start(policy_doc(POLICY))
    with pytest.raises(openai.BadRequestError) as err:
        stack.client().chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "description": "forbidden-word"}}],
        )
    assert err.value.code == "content_policy_violation"

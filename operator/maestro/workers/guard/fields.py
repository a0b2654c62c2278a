"""Where text lives in OpenAI-API bodies: every field a rule must see, request and response.

A policy that redacts e-mail addresses in `messages[].content` but forwards them in a tool call's
arguments, in the JSON schema of a tool, in a reasoning model's `reasoning_content` or in the
`logprobs` token texts does not redact them. This module is the one list of those places, so the
request rules, the non-streamed output rules and the stream filter walk the same fields.

A slot is `(container, key, source)`: the dict or list holding the text, the key or index under
which it sits (so a rule can rewrite it in place) and where it came from — the message role, or
`tools` for tool definitions and `schema` for a response format — which detectors that must not
judge the application's own instructions (a system prompt may well say "never reveal the system
prompt") use to skip them.
"""

from __future__ import annotations

from typing import Any

from maestro.workers.guard.errors import bad_request

ROUTE_CHAT = "chat"
ROUTE_COMPLETIONS = "completions"
ROUTE_EMBEDDINGS = "embeddings"

#: Text fields of a chat message (request) or of a choice's `message` (response) besides `content`:
#: reasoning models' chain of thought (vLLM's `reasoning_content`, newer servers' `reasoning`) and
#: the model's refusal text.
MESSAGE_TEXT_FIELDS = ("reasoning_content", "reasoning", "refusal")

#: Keys of a JSON schema whose string values are structure, not prose.
_SCHEMA_STRUCTURE = frozenset({"type", "$ref", "format", "$schema", "$id"})

#: Deeper JSON schemas are not walked further (a 1 MiB body can nest thousands of levels).
_MAX_SCHEMA_DEPTH = 32

Slot = tuple[Any, Any, str]


def request_slots(route: str, body: dict[str, Any]) -> tuple[list[Slot], int]:
    """Every client-controlled text in a request body; validates the shapes on the way (400).

    Returns the slots and the count of pre-tokenized prompt tokens (token-id prompts have no text).
    """
    if route == ROUTE_CHAT:
        slots = _message_slots(body.get("messages"))
        for name in ("tools", "functions"):
            _tool_definition_slots(body.get(name), name, slots)
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict):
            _schema_slots(fmt["json_schema"], "schema", slots, 0)
        return slots, 0
    key = "prompt" if route == ROUTE_COMPLETIONS else "input"
    value = body.get(key)
    if isinstance(value, str):
        return [(body, key, "prompt")], 0
    if isinstance(value, list) and value:
        slots = []
        token_ids = 0
        for i, item in enumerate(value):
            if isinstance(item, str):
                slots.append((value, i, "prompt"))
            elif isinstance(item, int) and not isinstance(item, bool):
                token_ids += 1
            elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                token_ids += len(item)
            else:
                raise bad_request(f"'{key}[{i}]' must be a string or an array of token ids.", param=key)
        return slots, token_ids
    raise bad_request(f"'{key}' must be a string or a non-empty array of strings or token ids.", param=key)


def _message_slots(messages: Any) -> list[Slot]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects.", param="messages")
    slots: list[Slot] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise bad_request(
                f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]"
            )
        role: str = msg["role"]
        content = msg.get("content")
        if isinstance(content, str):
            slots.append((msg, "content", role))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise bad_request(
                        f"messages[{i}].content[{j}] must be an object.", param=f"messages[{i}].content[{j}]"
                    )
                if isinstance(part.get("text"), str):
                    slots.append((part, "text", role))
        elif content is not None:
            raise bad_request(
                f"messages[{i}].content must be a string, an array of parts or null.",
                param=f"messages[{i}].content",
            )
        for name in MESSAGE_TEXT_FIELDS:
            if isinstance(msg.get(name), str):
                slots.append((msg, name, role))
        calls = msg.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise bad_request(
                    f"messages[{i}].tool_calls must be an array.", param=f"messages[{i}].tool_calls"
                )
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    slots.append((fn, "arguments", role))
        fn = msg.get("function_call")  # the legacy single call
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            slots.append((fn, "arguments", role))
    return slots


def _tool_definition_slots(tools: Any, name: str, slots: list[Slot]) -> None:
    """Descriptions and schema prose of `tools[].function` (and the legacy `functions[]`)."""
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad_request(f"'{name}' must be an array.", param=name)
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict):
            continue
        if isinstance(fn.get("description"), str):
            slots.append((fn, "description", "tools"))
        if isinstance(fn.get("parameters"), dict):
            _schema_slots(fn["parameters"], "tools", slots, 0)


def _schema_slots(node: Any, source: str, slots: list[Slot], depth: int) -> None:
    """String leaves of a JSON schema (descriptions, titles, enum values, defaults, examples)."""
    if depth > _MAX_SCHEMA_DEPTH:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str):
                if k not in _SCHEMA_STRUCTURE:
                    slots.append((node, k, source))
            elif isinstance(v, (dict, list)):
                _schema_slots(v, source, slots, depth + 1)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, str):
                slots.append((node, i, source))
            elif isinstance(v, (dict, list)):
                _schema_slots(v, source, slots, depth + 1)


def response_slots(route: str, choice: dict[str, Any]) -> list[Slot]:
    """The text fields of one non-streamed choice: content, reasoning, refusal, tool-call arguments.

    (Logprob token texts are handled apart: see `rules.scrub_logprobs`.)
    """
    if route != ROUTE_CHAT:
        return [(choice, "text", "assistant")] if isinstance(choice.get("text"), str) else []
    msg = choice.get("message")
    if not isinstance(msg, dict):
        return []
    slots: list[Slot] = []
    for name in ("content", *MESSAGE_TEXT_FIELDS):
        if isinstance(msg.get(name), str):
            slots.append((msg, name, "assistant"))
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                slots.append((fn, "arguments", "assistant"))
    fn = msg.get("function_call")
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        slots.append((fn, "arguments", "assistant"))
    return slots


# -- streamed deltas -------------------------------------------------------------------------------

#: A text channel of a streamed choice: "content", "reasoning_content", "reasoning", "refusal",
#: "tool:<index>" for a tool call's arguments (completions: "text").
Channel = str


def delta_pieces(route: str, choice: dict[str, Any]) -> list[tuple[Channel, Any, Any]]:
    """The text pieces one streamed choice carries: (channel, container, key), non-empty strings only."""
    if route != ROUTE_CHAT:
        text = choice.get("text")
        return [("text", choice, "text")] if isinstance(text, str) and text else []
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return []
    out: list[tuple[Channel, Any, Any]] = []
    for name in ("content", *MESSAGE_TEXT_FIELDS):
        v = delta.get(name)
        if isinstance(v, str) and v:
            out.append((name, delta, name))
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for pos, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            fn = call.get("function")
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if isinstance(args, str) and args:
                index = call.get("index", pos)
                out.append((f"tool:{index if isinstance(index, int) else pos}", fn, "arguments"))
    return out


def delta_for(route: str, channel: Channel, piece: str) -> dict[str, Any]:
    """The choice fields that carry `piece` on `channel` in a synthesized stream event."""
    if route != ROUTE_CHAT:
        return {"text": piece}
    if channel.startswith("tool:"):
        return {"delta": {"tool_calls": [{"index": int(channel[5:]), "function": {"arguments": piece}}]}}
    return {"delta": {channel: piece}}


def delta_has_more(choice: dict[str, Any]) -> bool:
    """Whether a (held, text-emptied) chat delta still carries something that must be forwarded now:
    a role, a tool call's id, type or name, or any field this module does not know."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    for k, v in delta.items():
        if v is None or (k in ("content", *MESSAGE_TEXT_FIELDS) and v == ""):
            continue
        if k != "tool_calls":
            return True
        if not isinstance(v, list):
            return True
        for call in v:
            if not isinstance(call, dict):
                return True
            for ck, cv in call.items():
                if ck == "index" or cv is None:
                    continue
                if ck != "function" or not isinstance(cv, dict):
                    return True
                if any(fk != "arguments" and fv is not None for fk, fv in cv.items()):
                    return True
    return False

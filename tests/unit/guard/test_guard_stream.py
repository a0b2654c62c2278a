"""StreamFilter without sockets: every output mode on hand-built SSE, including hostile chunking."""

from __future__ import annotations

import json
from typing import Any

import pytest

from maestro.workers.guard.config import parse_policy
from maestro.workers.guard.proxy import compile_active
from maestro.workers.guard.stream import SSEFramer, StreamFilter

pytestmark = pytest.mark.unit


def chunk(
    content: str | None = None,
    finish: str | None = None,
    *,
    usage: dict[str, int] | None = None,
    model: str = "m",
    role: bool = False,
) -> bytes:
    if usage is not None:
        obj: dict[str, Any] = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [],
            "usage": usage,
        }
    else:
        delta: dict[str, Any] = {} if content is None else {"content": content}
        if role:
            delta["role"] = "assistant"
        obj = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def make(
    request: dict[str, Any], *, strip_usage: bool = False, keep_text: bool = False, **doc: Any
) -> StreamFilter:
    active = compile_active(parse_policy({"request": request, **doc}))
    return StreamFilter(
        active.policy, active.output_scanner, "chat", strip_usage=strip_usage, keep_text=keep_text
    )


def run(filt: StreamFilter, pieces: list[bytes]) -> bytes:
    out = b"".join(filt.feed(p) for p in pieces)
    return out + filt.finish()


def contents(sse: bytes) -> tuple[str, list[dict[str, Any]]]:
    text, objs = "", []
    for ev in sse.split(b"\n\n"):
        if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
            continue
        obj = json.loads(ev[6:])
        objs.append(obj)
        for c in obj.get("choices") or []:
            text += (c.get("delta") or {}).get("content") or ""
    return text, objs


def split_bytes(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


STREAM = [
    chunk("", role=True),
    chunk("Write to jo"),
    chunk("hn.doe@exa"),
    chunk("mple.com today"),
    chunk(None, "stop"),
    chunk(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    b"data: [DONE]\n\n",
]


def test_framer_handles_any_split_and_crlf() -> None:
    data = b"data: a\n\ndata: b\r\n\r\n: keepalive\n\ndata: c\n\n"
    for size in (1, 2, 3, 7, len(data)):
        framer = SSEFramer()
        events = [e for piece in split_bytes(data, size) for e in framer.feed(piece)]
        assert events == [b"data: a\n\n", b"data: b\r\n\r\n", b": keepalive\n\n", b"data: c\n\n"]


def test_passthrough_forwards_bytes_untouched_and_reads_usage() -> None:
    filt = make({"pii": {"input": "allow", "output": "allow"}})
    raw = b"".join(STREAM)
    out = run(filt, split_bytes(raw, 5))
    assert out == raw
    assert filt.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert filt.response_chars == len("Write to john.doe@example.com today") and filt.finish_reason == "stop"


def test_usage_chunk_the_client_did_not_ask_for_is_dropped() -> None:
    filt = make({"pii": {"input": "allow", "output": "allow"}}, strip_usage=True)
    out = run(filt, STREAM)
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert filt.usage is not None and filt.usage["total_tokens"] == 7


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_window_redacts_email_split_across_chunks(size: int) -> None:
    filt = make({"pii": {"input": "allow", "output": "redact"}, "outputWindow": {"chars": 16, "overlap": 8}})
    out = run(filt, split_bytes(b"".join(STREAM), size))
    text, _ = contents(out)
    assert text == "Write to <EMAIL> today"
    assert "john" not in out.decode() and out.endswith(b"data: [DONE]\n\n")
    assert filt.pii == {"EMAIL": 1}
    assert {"rule": "pii.output", "action": "redact"} in filt.decisions


def test_window_releases_text_before_the_end_of_a_long_answer() -> None:
    filt = make({"pii": {"input": "allow", "output": "redact"}, "outputWindow": {"chars": 16, "overlap": 4}})
    first = filt.feed(chunk("a " * 5) + chunk("b " * 5))
    text, _ = contents(first)
    assert text == "a " * 5 + "b " * 3  # all but the 4-char overlap released mid-stream
    assert filt.first_content


def test_window_holds_a_word_until_it_ends_up_to_four_windows() -> None:
    """A secret has no spaces, quotes or brackets in it: cutting inside one would release its start
    before it matches. A word is held until it ends — or, unbounded, until it fills four windows."""
    filt = make({"pii": {"input": "allow", "output": "redact"}, "outputWindow": {"chars": 16, "overlap": 4}})
    assert contents(filt.feed(chunk("a" * 10) + chunk("b" * 10)))[0] == ""
    out = b"".join(filt.feed(chunk("c" * 10)) for _ in range(5))
    assert contents(out)[0].startswith("a" * 10 + "b" * 10)


def test_window_never_releases_half_a_match() -> None:
    filt = make({"pii": {"input": "allow", "output": "redact"}, "outputWindow": {"chars": 20, "overlap": 4}})
    out = filt.feed(chunk("contact mary@example.org"))  # the email straddles len-overlap
    out += filt.feed(chunk(" now", "stop")) + filt.finish()
    text, _ = contents(out)
    assert text == "contact <EMAIL> now"


def test_buffer_mode_holds_everything_until_the_end() -> None:
    filt = make({"pii": {"input": "allow", "output": "redact"}, "streamingOutputMode": "buffer"})
    early = filt.feed(b"".join(STREAM[:4]))
    assert contents(early)[0] == ""  # role chunk only
    rest = filt.feed(b"".join(STREAM[4:])) + filt.finish()
    assert contents(rest)[0] == "Write to <EMAIL> today"


def test_block_after_headers_ends_stream_with_openai_error_event() -> None:
    filt = make(
        {
            "pii": {"input": "allow", "output": "allow"},
            "blockedTerms": ["secretproject"],
            "outputWindow": {"chars": 16, "overlap": 8},
        }
    )
    out = run(
        filt,
        [
            chunk("", role=True),
            chunk("The secret"),
            chunk("project is"),
            chunk(" on", "stop"),
            b"data: [DONE]\n\n",
        ],
    )
    assert filt.blocked is not None and filt.blocked.code == "output_blocked"
    _, objs = contents(out)
    assert objs[-1]["error"]["code"] == "output_blocked"
    assert b"[DONE]" not in out and b"secretproject" not in out.replace(b" ", b"")
    assert {"rule": "blockedTerms[0]", "action": "block"} in filt.decisions


def test_audit_mode_streams_at_once_and_reports_at_the_end() -> None:
    filt = make({"pii": {"input": "allow", "output": "block"}, "streamingOutputMode": "audit"})
    early = filt.feed(b"".join(STREAM[:4]))
    assert "john.doe@exa" in contents(early)[0]  # live pass-through
    rest = filt.feed(b"".join(STREAM[4:])) + filt.finish()
    _, objs = contents(rest)
    assert objs[-1]["error"]["code"] == "output_blocked" and b"[DONE]" not in rest
    assert filt.pii == {"EMAIL": 1}


def test_stream_without_done_is_flushed_at_eof() -> None:  # `transformers serve` ends this way
    filt = make({"pii": {"input": "allow", "output": "redact"}})
    out = run(filt, [chunk("mail a@b.example"), chunk(None, "stop")])
    assert contents(out)[0] == "mail <EMAIL>"


def test_transformers_style_finish_chunk_with_usage_and_no_done() -> None:
    """`transformers serve`: usage rides on the finish chunk (choices non-empty) and no [DONE] follows."""
    finish = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        }
    ).encode()
    for request in (
        {"pii": {"input": "allow", "output": "allow"}},
        {"pii": {"input": "allow", "output": "redact"}},
    ):
        filt = make(request, strip_usage=True)
        out = run(filt, [chunk("", role=True), chunk("ping x@y.example"), b"data: " + finish + b"\n\n"])
        text, objs = contents(out)
        assert text == ("ping x@y.example" if request["pii"]["output"] == "allow" else "ping <EMAIL>")
        assert objs[-1]["choices"][0]["finish_reason"] == "length"  # text released before the finish
        assert all("usage" not in o for o in objs) and filt.usage == {
            "prompt_tokens": 2,
            "completion_tokens": 3,
            "total_tokens": 5,
        }


def test_window_keeps_choices_apart() -> None:
    def c(index: int, text: str | None, finish: str | None = None) -> bytes:
        delta = {} if text is None else {"content": text}
        obj = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    filt = make({"pii": {"input": "allow", "output": "redact"}, "outputWindow": {"chars": 16, "overlap": 8}})
    out = run(
        filt,
        [
            c(0, "mail a@"),
            c(1, "call me "),
            c(0, "b.example now"),
            c(1, "later", "stop"),
            c(0, None, "stop"),
            b"data: [DONE]\n\n",
        ],
    )
    texts: dict[int, str] = {}
    for ev in out.split(b"\n\n"):
        if ev.startswith(b"data: {"):
            for ch in json.loads(ev[6:])["choices"]:
                texts[ch["index"]] = texts.get(ch["index"], "") + (ch["delta"].get("content") or "")
    assert texts == {0: "mail <EMAIL> now", 1: "call me later"}

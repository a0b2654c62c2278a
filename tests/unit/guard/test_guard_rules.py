"""Request-side content rules on parsed bodies: shapes, redaction in place, caps, verdict cache."""

from __future__ import annotations

from typing import Any

import pytest

from maestro.workers.guard import rules
from maestro.workers.guard.config import parse_policy
from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.proxy import compile_active
from maestro.workers.guard.rules import check_input, clamp_max_tokens, is_refusal, redact

pytestmark = pytest.mark.unit


def active(**request: Any) -> Any:
    return compile_active(
        parse_policy({"request": {"pii": {"input": "redact", "output": "allow"}, **request}})
    )


def test_chat_parts_and_prompt_lists_are_redacted_in_place() -> None:
    a = active()
    body = {
        "messages": [
            {"role": "system", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x@y.example"},
                    {"type": "image_url", "image_url": {"url": "u"}},
                ],
            },
            {"role": "assistant", "content": None},
        ]
    }
    res = check_input(a.policy, a.input_scanner, rules.ROUTE_CHAT, body, want_text=True)
    assert res.modified and res.pii == {"EMAIL": 1}
    assert body["messages"][1]["content"][0]["text"] == "<EMAIL>"
    assert res.prompt_text == "hi\n<EMAIL>" and res.est_tokens == 4  # ceil(13 original chars / 4)
    body = {"prompt": ["a@b.example", [1, 2, 3]]}
    res = check_input(a.policy, a.input_scanner, rules.ROUTE_COMPLETIONS, body, want_text=False)
    assert body["prompt"][0] == "<EMAIL>" and res.est_tokens == 3 + 3


def test_input_tokens_estimate_and_error() -> None:
    a = active(maxInputTokens=5)
    res = check_input(
        a.policy,
        a.input_scanner,
        rules.ROUTE_CHAT,
        {"messages": [{"role": "user", "content": "x" * 21}]},
        want_text=False,
    )
    assert res.est_tokens == 6  # ceil(21 / 4)
    err = rules.input_too_long(a.policy, 6, exact=False)
    assert err.status == 400 and err.code == "context_length_exceeded" and "estimated" in err.message
    assert "estimated" not in rules.input_too_long(a.policy, 7, exact=True).message


def test_clamp_variants() -> None:
    p = active(maxOutputTokens=10).policy
    body: dict[str, Any] = {"max_tokens": 50, "max_completion_tokens": 5}
    assert clamp_max_tokens(p, rules.ROUTE_CHAT, body) == {"rule": "maxOutputTokens", "action": "clamp"}
    assert body == {"max_tokens": 10, "max_completion_tokens": 5}
    body = {"max_tokens": 3}
    assert clamp_max_tokens(p, rules.ROUTE_COMPLETIONS, body) is None and body == {"max_tokens": 3}
    body = {}
    assert clamp_max_tokens(p, rules.ROUTE_EMBEDDINGS, body) is None and body == {}
    with pytest.raises(GuardError):
        clamp_max_tokens(p, rules.ROUTE_CHAT, {"max_tokens": True})


def test_verdict_cache_is_exact_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "CACHE_ENTRIES", 4)
    scanner = active(blockedTerms=["zeta"]).input_scanner
    assert scanner is not None
    calls = 0
    real = scanner._pii

    def counting(text: str) -> Any:
        nonlocal calls
        calls += 1
        return real(text)

    scanner._pii = counting
    assert scanner.check("mail a@b.example")[1][0].label == "EMAIL"
    assert scanner.check("mail a@b.example")[1][0].label == "EMAIL" and calls == 1  # memoized
    assert scanner.check("ZETA here")[0] is not None  # blocked verdicts are cached alike
    for i in range(10):
        scanner.check(f"text {i}")
    assert len(scanner._cache) == 4
    assert all(isinstance(k, bytes) and len(k) == 16 for k in scanner._cache)  # digests, no prompt text
    scanner.check("y" * (rules.CACHE_MAX_CHARS + 1))
    assert len(scanner._cache) == 4 and calls == 13  # the long text was scanned, not cached


def test_redact_and_refusal_helpers() -> None:
    hits = [rules.Hit("pii", "EMAIL", 0, 3), rules.Hit("pii", "PHONE", 2, 5), rules.Hit("blocked", "b", 6, 7)]
    assert redact("abcdefgh", hits) == "<EMAIL>defgh"  # overlapping span collapses into the first
    assert is_refusal("  I'm sorry, but no") and is_refusal("As an AI, I cannot")
    assert not is_refusal("Sorry to hear that! Here is a plan")

"""Content rules: PII, blocked terms/patterns and token caps, on request bodies and response text.

PII and refusal detection are `maestro.text`'s, shared with the data and training workers, so a
dataset and an endpoint governed by the same policy agree on what an e-mail address (or a refusal)
is. `maxInputTokens` is enforced by the proxy: exactly, with the model server's own `/tokenize`,
when a prompt is long enough to possibly exceed it; as an estimate, ceil(chars / 4), where the
server has no `/tokenize`. Token budgets use the upstream's exact `usage`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from maestro.text.refusal import is_refusal as is_refusal  # re-exported: proxy and stream import it here
from maestro.workers.guard.config import Policy
from maestro.workers.guard.errors import GuardError, bad_request

log = logging.getLogger("maestro.guard")

CHARS_PER_TOKEN = 4
ROUTE_CHAT = "chat"
ROUTE_COMPLETIONS = "completions"
ROUTE_EMBEDDINGS = "embeddings"


@dataclass(frozen=True, slots=True)
class Hit:
    """A span of text a rule matched: `kind` is "pii" (label = entity) or "blocked" (label = rule)."""

    kind: str
    label: str
    start: int
    end: int


def _pii_scanner(entities: frozenset[str] | None) -> Any:
    from maestro.text import pii  # lazily: it loads maestro.api (pydantic), which a PII-free policy skips

    scanner = pii.PIIScanner(pii.REGEX_ENTITIES if entities is None else entities)
    if scanner.unsupported:
        log.warning(
            "PII entities %s need a NER model the guard does not load; they are not detected",
            ", ".join(sorted(scanner.unsupported)),
        )
    return scanner


def placeholder(entity: str) -> str:
    """The typed placeholder of the shared PII engine, so datasets and endpoints redact alike."""
    from maestro.text import pii

    return pii.placeholder(entity)


#: Input texts up to this size have their verdicts memoized (see `Scanner.check`).
CACHE_MAX_CHARS = 4096
CACHE_ENTRIES = 2048


class Scanner:
    """One policy's text checks, bound once per policy so the hot path does no lookups.

    Chat clients resend the same texts over and over: the system prompt with every request, the
    whole conversation so far with every turn. `check` memoizes verdicts per exact text (bounded:
    2,048 texts of at most 4 KiB, oldest evicted first), so only new text is scanned. It is keyed by
    a 128-bit BLAKE2 digest, so no prompt text is retained; it belongs to this policy's scanner and
    dies with it on reload.
    """

    __slots__ = ("_blocked", "_blocked_rules", "_cache", "_pii", "pii_action")

    def __init__(self, policy: Policy, pii_action: str) -> None:
        self.pii_action = pii_action
        self._pii = _pii_scanner(policy.pii_entities).scan if pii_action != "allow" else None
        self._blocked = policy.blocked
        self._blocked_rules = policy.blocked_rules
        self._cache: dict[bytes, tuple[Hit | None, tuple[Hit, ...]]] = {}

    def check(self, text: str) -> tuple[Hit | None, tuple[Hit, ...]]:
        """(first blocked match, PII hits) for one input text, memoized for short texts."""
        if len(text) > CACHE_MAX_CHARS:
            return self.blocked(text), tuple(self.pii(text))
        key = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = (self.blocked(text), tuple(self.pii(text)))
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
            cache[key] = verdict
        return verdict

    @property
    def active(self) -> bool:
        return self._pii is not None or self._blocked is not None

    def blocked(self, text: str) -> Hit | None:
        if self._blocked is None:
            return None
        m = self._blocked.search(text)
        if m is None:
            return None
        index = int(m.lastgroup[1:]) if m.lastgroup else 0
        return Hit("blocked", self._blocked_rules[index], m.start(), m.end())

    def pii(self, text: str) -> list[Hit]:
        if self._pii is None:
            return []
        return [Hit("pii", f.entity, f.start, f.end) for f in self._pii(text)]

    def scan(self, text: str) -> list[Hit]:
        """All hits, sorted by start: blocked ones first at equal start (they decide)."""
        hits = self.pii(text)
        if self._blocked is not None:
            hits.extend(
                Hit(
                    "blocked",
                    self._blocked_rules[int(m.lastgroup[1:]) if m.lastgroup else 0],
                    m.start(),
                    m.end(),
                )
                for m in self._blocked.finditer(text)
            )
        hits.sort(key=lambda h: (h.start, h.kind != "blocked"))
        return hits


def redact(text: str, hits: Iterable[Hit]) -> str:
    """Replace PII spans with typed placeholders (`<EMAIL>`); overlapping spans collapse into the first."""
    out: list[str] = []
    pos = 0
    for h in sorted(hits, key=lambda h: h.start):
        if h.kind != "pii" or h.start < pos:
            continue
        out.append(text[pos : h.start])
        out.append(placeholder(h.label))
        pos = h.end
    out.append(text[pos:])
    return "".join(out)


@dataclass(slots=True)
class InputResult:
    modified: bool = False
    decisions: list[dict[str, str]] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)
    prompt_text: str = ""
    est_tokens: int = 0


# A slot is a (container, key) pair whose value is a text the rules look at (and may rewrite).
Slot = tuple[Any, Any]


def _text_slots(route: str, body: dict[str, Any]) -> tuple[list[Slot], int]:
    """Find every user-controlled text in the body; validate the shapes on the way.

    Returns the slots and a count of pre-tokenized prompt tokens (token-id prompts have no text).
    """
    slots: list[Slot] = []
    token_ids = 0
    if route == ROUTE_CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty array of message objects.", param="messages")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise bad_request(
                    f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]"
                )
            content = msg.get("content")
            if isinstance(content, str):
                slots.append((msg, "content"))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if not isinstance(part, dict):
                        raise bad_request(
                            f"messages[{i}].content[{j}] must be an object.",
                            param=f"messages[{i}].content[{j}]",
                        )
                    if isinstance(part.get("text"), str):
                        slots.append((part, "text"))
            elif content is not None:
                raise bad_request(
                    f"messages[{i}].content must be a string, an array of parts or null.",
                    param=f"messages[{i}].content",
                )
        return slots, 0
    key = "prompt" if route == ROUTE_COMPLETIONS else "input"
    value = body.get(key)
    if isinstance(value, str):
        return [(body, key)], 0
    if isinstance(value, list) and value:
        for i, item in enumerate(value):
            if isinstance(item, str):
                slots.append((value, i))
            elif isinstance(item, int) and not isinstance(item, bool):
                token_ids += 1
            elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
                token_ids += len(item)
            else:
                raise bad_request(f"'{key}[{i}]' must be a string or an array of token ids.", param=key)
        return slots, token_ids
    raise bad_request(f"'{key}' must be a string or a non-empty array of strings or token ids.", param=key)


def check_input(
    policy: Policy, scanner: Scanner | None, route: str, body: dict[str, Any], want_text: bool
) -> InputResult:
    """Apply the request-side content rules; raise `GuardError` on a block, rewrite on a redaction."""
    result = InputResult()
    slots, token_ids = _text_slots(route, body)
    chars = 0
    texts: list[str] = []
    for container, key in slots:
        text: str = container[key]
        chars += len(text)
        if scanner is not None and text:
            hit, hits = scanner.check(text)
            if hit is not None:
                raise GuardError(
                    400,
                    f"The request contains content blocked by policy ({hit.label}).",
                    "content_policy_violation",
                    rule=hit.label,
                )
            if hits:
                for h in hits:
                    result.pii[h.label] = result.pii.get(h.label, 0) + 1
                if scanner.pii_action == "block":
                    names = ", ".join(sorted(result.pii))
                    raise GuardError(
                        400,
                        f"The request contains personal data ({names}); this endpoint's "
                        "policy rejects it. Remove it and retry.",
                        "pii_detected",
                        rule="pii.input",
                    )
                text = redact(text, hits)
                container[key] = text
                result.modified = True
        if want_text:
            texts.append(text)
    if result.pii:
        result.decisions.append({"rule": "pii.input", "action": "redact"})
    result.est_tokens = -(-chars // CHARS_PER_TOKEN) + token_ids
    if want_text:
        result.prompt_text = "\n".join(texts)
    return result


def clamp_max_tokens(policy: Policy, route: str, body: dict[str, Any]) -> dict[str, str] | None:
    """Cap the output length at `maxOutputTokens`; returns the decision when the body changed."""
    cap = policy.max_output_tokens
    keys = ("max_completion_tokens", "max_tokens") if route == ROUTE_CHAT else ("max_tokens",)
    present = [k for k in keys if body.get(k) is not None]
    for k in present:
        v = body[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad_request(f"'{k}' must be a positive integer.", param=k)
    if cap is None or route == ROUTE_EMBEDDINGS:
        return None
    changed = False
    for k in present:
        if body[k] > cap:
            body[k] = cap
            changed = True
    if not present:
        body[keys[-1]] = cap
        changed = True
    return {"rule": "maxOutputTokens", "action": "clamp"} if changed else None


def check_output(
    scanner: Scanner, route: str, obj: dict[str, Any], pii: dict[str, int], decisions: list[dict[str, str]]
) -> bool:
    """Scan a non-streamed answer; raise on a block, redact in place. Returns whether it changed."""
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return False
    changed = False
    for c in choices:
        if not isinstance(c, dict):
            continue
        holder, key = (c.get("message"), "content") if route == ROUTE_CHAT else (c, "text")
        if not isinstance(holder, dict) or not isinstance(holder.get(key), str):
            continue
        text: str = holder[key]
        hits = scanner.scan(text)
        if not hits:
            continue
        for h in hits:
            if h.kind == "pii":
                pii[h.label] = pii.get(h.label, 0) + 1
        for h in hits:
            if h.kind == "blocked" or scanner.pii_action == "block":
                rule = h.label if h.kind == "blocked" else "pii.output"
                what = (
                    f"content blocked by policy ({h.label})"
                    if h.kind == "blocked"
                    else f"personal data ({h.label})"
                )
                raise GuardError(
                    400, f"The response was withheld: it contained {what}.", "output_blocked", rule=rule
                )
        holder[key] = redact(text, hits)
        changed = True
    if changed:
        decisions.append({"rule": "pii.output", "action": "redact"})
    return changed


def input_too_long(policy: Policy, tokens: int, exact: bool) -> GuardError:
    how = "" if exact else " (estimated as characters/4)"
    return GuardError(
        400,
        f"The input is {'' if exact else 'about '}{tokens} tokens{how}; this endpoint allows at most "
        f"{policy.max_input_tokens}. Shorten the prompt.",
        "context_length_exceeded",
        param="messages",
        rule="maxInputTokens",
    )

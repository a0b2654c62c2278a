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
from maestro.workers.guard.config import INJECTION_RULES, Policy
from maestro.workers.guard.errors import GuardError, bad_request
from maestro.workers.guard.fields import (
    MESSAGE_TEXT_FIELDS,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_EMBEDDINGS,
    request_slots,
    response_slots,
)

log = logging.getLogger("maestro.guard")

CHARS_PER_TOKEN = 4
__all__ = ["ROUTE_CHAT", "ROUTE_COMPLETIONS", "ROUTE_EMBEDDINGS", "Hit", "Scanner", "is_refusal", "redact"]


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


#: Slot sources (`fields.Slot`) the injection detector checks by default: what callers and tools
#: send, tool definitions, completion prompts. Not the application's system/developer messages (they
#: may well say "never reveal the system prompt"), nor earlier assistant turns.
INJECTION_SOURCES = frozenset({"user", "tool", "function", "tools", "schema", "prompt"})

#: A cached verdict whose injection finding was not computed yet (None means "judged: clean").
_UNJUDGED = object()

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

    __slots__ = (
        "_blocked",
        "_blocked_rules",
        "_cache",
        "_detector",
        "_pii",
        "injection_action",
        "injection_sources",
        "pii_action",
    )

    def __init__(self, policy: Policy, pii_action: str, *, injection: bool = False) -> None:
        self.pii_action = pii_action
        self._pii = _pii_scanner(policy.pii_entities).scan if pii_action != "allow" else None
        self._blocked = policy.blocked
        self._blocked_rules = policy.blocked_rules
        #: text digest -> [blocked hit, PII hits, injection finding or _UNJUDGED]
        self._cache: dict[bytes, list[Any]] = {}
        #: "flag" or "block" when this scanner runs the injection detector (request side only)
        self.injection_action = (
            policy.injection_mode if injection and policy.injection_mode != "off" else None
        )
        self._detector = None
        #: slot sources the detector judges: callers and tools, not the application's own instructions
        self.injection_sources = INJECTION_SOURCES | (
            {"system", "developer"} if policy.injection_scan_system else set()
        )
        if self.injection_action is not None:
            from maestro.text.injection import InjectionDetector  # lazily: rules compile on first use

            self._detector = InjectionDetector(policy.injection_threshold, policy.injection_families)

    def check(self, text: str, *, injection: bool = False) -> tuple[Hit | None, tuple[Hit, ...], Any]:
        """(first blocked match, PII hits, injection finding) for one input text, memoized for short
        texts. The finding (`maestro.text.injection.Finding` or None) is computed only when asked for
        (a text from a source the detector judges) and kept with the rest of the text's verdict."""
        if len(text) > CACHE_MAX_CHARS:
            return self.blocked(text), tuple(self.pii(text)), self._judge(text) if injection else None
        key = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = [self.blocked(text), tuple(self.pii(text)), _UNJUDGED]
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
            cache[key] = verdict
        if not injection:
            return verdict[0], verdict[1], None
        if verdict[2] is _UNJUDGED:
            verdict[2] = self._judge(text)
        return verdict[0], verdict[1], verdict[2]

    def _judge(self, text: str) -> Any:
        return self._detector.first(text) if self._detector is not None else None

    @property
    def active(self) -> bool:
        return self._pii is not None or self._blocked is not None or self._detector is not None

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


def _prompt_text(key: Any, source: str) -> bool:
    """Whether a slot is what the caller said (audited and measured as the prompt), rather than a tool
    definition, a tool call's arguments or a reasoning trace (scanned all the same)."""
    return source not in ("tools", "schema") and key not in ("arguments", *MESSAGE_TEXT_FIELDS)


def check_input(
    policy: Policy, scanner: Scanner | None, route: str, body: dict[str, Any], want_text: bool
) -> InputResult:
    """Apply the request-side content rules to every text field (`fields.request_slots`): raise
    `GuardError` on a block, rewrite in place on a redaction."""
    result = InputResult()
    slots, token_ids = request_slots(route, body)
    chars = 0
    texts: list[str] = []
    flagged: dict[str, Any] = {}
    for container, key, source in slots:
        text: str = container[key]
        chars += len(text)
        if scanner is not None and text:
            judge = scanner.injection_action is not None and source in scanner.injection_sources
            hit, hits, finding = scanner.check(text, injection=judge)
            if hit is not None:
                raise GuardError(
                    400,
                    f"The request contains content blocked by policy ({hit.label}).",
                    "content_policy_violation",
                    rule=hit.label,
                )
            if finding is not None:
                _injection_found(scanner, finding, flagged)
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
        if want_text and _prompt_text(key, source):
            texts.append(text)
    for rule, finding in flagged.items():
        result.decisions.append(
            {"rule": rule, "action": "flag", "score": f"{finding.score:.2f}", "layer": finding.layer}
        )
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


def _injection_found(scanner: Scanner, finding: Any, flagged: dict[str, Any]) -> None:
    """Block now (policy `block`) or remember the finding for a `flag` decision (best per family)."""
    rule = INJECTION_RULES[finding.family]
    if scanner.injection_action == "block":
        raise GuardError(
            400,
            f"The request looks like a prompt injection or jailbreak ({rule}, rule {finding.rule}); this "
            "endpoint's policy refuses it. Rephrase the request, or ask the endpoint's owner to review "
            "request.injection if this is a false positive.",
            "prompt_injection_detected",
            rule=rule,
        )
    best = flagged.get(rule)
    if best is None or finding.score > best.score:
        flagged[rule] = finding


def _blocking(scanner: Scanner, hits: Iterable[Hit]) -> Hit | None:
    """The hit that stops the answer: a blocked term, or any PII where the policy blocks it."""
    for h in hits:
        if h.kind == "blocked" or scanner.pii_action == "block":
            return h
    return None


def output_blocked(hit: Hit, verb: str = "withheld") -> GuardError:
    rule = hit.label if hit.kind == "blocked" else "pii.output"
    what = (
        f"content blocked by policy ({hit.label})"
        if hit.kind == "blocked"
        else f"personal data ({hit.label})"
    )
    return GuardError(400, f"The response was {verb}: it contained {what}.", "output_blocked", rule=rule)


def check_output(
    scanner: Scanner, route: str, obj: dict[str, Any], pii: dict[str, int], decisions: list[dict[str, str]]
) -> bool:
    """Scan a non-streamed answer — every choice's text fields and logprob tokens; raise on a block,
    redact in place. Returns whether it changed."""
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return False
    changed = False
    for c in choices:
        if not isinstance(c, dict):
            continue
        for holder, key, _ in response_slots(route, c):
            text: str = holder[key]
            hits = scanner.scan(text)
            if not hits:
                continue
            for h in hits:
                if h.kind == "pii":
                    pii[h.label] = pii.get(h.label, 0) + 1
            block = _blocking(scanner, hits)
            if block is not None:
                raise output_blocked(block)
            holder[key] = redact(text, hits)
            changed = True
        block, scrubbed = scrub_logprobs(scanner, route, c.get("logprobs"), pii)
        if block is not None:
            raise output_blocked(block)
        changed = scrubbed or changed
    if changed:
        decisions.append({"rule": "pii.output", "action": "redact"})
    return changed


def scrub_logprobs(
    scanner: Scanner, route: str, logprobs: Any, pii: dict[str, int]
) -> tuple[Hit | None, bool]:
    """Redact PII out of a choice's logprobs, which spell the answer out a second time, token by token.

    Chat: `logprobs.content[]` (and `.refusal[]`) entries; completions: `logprobs.tokens` and
    `logprobs.top_logprobs`. Returns (the hit that must block the answer, whether anything changed).
    """
    if not isinstance(logprobs, dict):
        return None, False
    if route != ROUTE_CHAT:
        return _scrub_completion_logprobs(scanner, logprobs, pii)
    changed = False
    for name in ("content", "refusal"):
        entries = logprobs.get(name)
        if isinstance(entries, list):
            block, scrubbed = scrub_entries(scanner, entries, pii)
            if block is not None:
                return block, changed
            changed = scrubbed or changed
    return None, changed


def spells_a_secret(scanner: Scanner | None, token: Any) -> bool:
    """Whether one logprob alternative matches a blocked term or PII on its own (it is then dropped)."""
    if scanner is None or not isinstance(token, str) or not token:
        return False
    hit, hits, _ = scanner.check(token)
    return hit is not None or bool(hits)


def redact_tokens(tokens: list[str], hits: Iterable[Hit], offset: int = 0) -> dict[int, str]:
    """Token index -> its redacted text for every token overlapping a PII span (`hits` in positions of
    the joined tokens, the first token sitting at `offset`). The token where a span starts carries the
    placeholder; text of a token outside the span stays, so the tokens still spell the redacted text."""
    spans = sorted((h.start, h.end, h.label) for h in hits if h.kind == "pii")
    out: dict[int, str] = {}
    if not spans:
        return out
    pos = offset
    for i, tok in enumerate(tokens):
        end = pos + len(tok)
        inside = [(a, b, label) for a, b, label in spans if tok and a < end and b > pos]
        if inside:
            parts: list[str] = []
            cursor = pos
            for a, b, label in inside:
                if a > cursor:
                    parts.append(tok[cursor - pos : a - pos])
                if a >= pos:
                    parts.append(placeholder(label))
                cursor = max(cursor, b)
            if cursor < end:
                parts.append(tok[cursor - pos :])
            out[i] = "".join(parts)
        pos = end
    return out


def _token_of(entry: Any) -> str:
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) else ""


def scrub_entries(scanner: Scanner, entries: list[Any], pii: dict[str, int]) -> tuple[Hit | None, bool]:
    """Chat-format logprob entries (`{token, logprob, bytes, top_logprobs}`), redacted in place."""
    tokens: list[str] = [_token_of(e) for e in entries]
    hits = scanner.scan("".join(tokens))
    block = _blocking(scanner, hits)
    if block is not None:
        return block, False
    changed = False
    for i, replacement in redact_tokens(tokens, hits).items():
        entries[i]["token"] = replacement
        entries[i]["bytes"] = None
        if entries[i].get("top_logprobs"):
            entries[i]["top_logprobs"] = []
        changed = True
    for h in hits:
        pii[h.label] = pii.get(h.label, 0) + 1
    for e in entries:
        top = e.get("top_logprobs") if isinstance(e, dict) else None
        if isinstance(top, list) and top:
            kept = [a for a in top if not (isinstance(a, dict) and spells_a_secret(scanner, a.get("token")))]
            if len(kept) != len(top):
                e["top_logprobs"] = kept
                changed = True
    return None, changed


def _scrub_completion_logprobs(
    scanner: Scanner, logprobs: dict[str, Any], pii: dict[str, int]
) -> tuple[Hit | None, bool]:
    tokens = logprobs.get("tokens")
    changed = False
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        hits = scanner.scan("".join(tokens))
        block = _blocking(scanner, hits)
        if block is not None:
            return block, False
        for i, replacement in redact_tokens(tokens, hits).items():
            tokens[i] = replacement
            changed = True
        for h in hits:
            pii[h.label] = pii.get(h.label, 0) + 1
    top = logprobs.get("top_logprobs")
    if isinstance(top, list):
        for i, alts in enumerate(top):
            if isinstance(alts, dict) and any(spells_a_secret(scanner, t) for t in alts):
                top[i] = {t: lp for t, lp in alts.items() if not spells_a_secret(scanner, t)}
                changed = True
    return None, changed


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

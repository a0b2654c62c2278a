"""SSE handling for streamed completions: framing, output checks (window/buffer/audit), usage capture.

`StreamFilter` is pure (bytes in, bytes out, no I/O) so every mode is tested without sockets.

Modes, when the policy has output checks (PII on output or blocked terms/patterns):
- `window`: text is held per choice until `chars` accumulate, then the held text is scanned and all
  but the last `overlap` characters are released (redacted). The held-back tail is scanned again
  with the next window, so an e-mail split across two SSE chunks, or across a window edge, is still
  seen whole. The release point never falls inside a word (an e-mail or key split across chunks
  is held back whole), nor inside a match. Matches with spaces in them (card numbers, phone
  numbers) longer than `overlap` can leak their start: size `overlap` above those.
- `buffer`: the same with an infinite window: nothing is released before the upstream finishes.
- `audit`: bytes pass through at once; the whole text is scanned at the end, and a block then can
  only be reported (an error event replaces `[DONE]`).
Without output checks every event passes through as received; only the usage chunk the guard asked
for (and the client did not) is dropped.
"""

from __future__ import annotations

from typing import Any

from maestro.workers.guard import codec
from maestro.workers.guard.config import Policy
from maestro.workers.guard.errors import GuardError, sse_error_event
from maestro.workers.guard.rules import ROUTE_CHAT, Hit, Scanner, is_refusal, redact

DONE = b"[DONE]"
_REFUSAL_PREFIX_CHARS = 64


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (multi-line data joined with newlines), or None."""
    if event.startswith(b"data:") and b"\ndata:" not in event:
        return event[5:].strip()
    parts = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


class SSEFramer:
    """Splits a byte stream into complete events (terminated by a blank line, LF or CRLF)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        events: list[bytes] = []
        start = 0
        while True:
            lf = buf.find(b"\n\n", start)
            crlf = buf.find(b"\r\n\r\n", start)
            if lf < 0 and crlf < 0:
                break
            end = crlf + 4 if crlf >= 0 and (lf < 0 or crlf < lf) else lf + 2
            events.append(buf[start:end])
            start = end
        self._buf = buf[start:]
        return events

    def rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest


class _Choice:
    __slots__ = ("chars", "finish_reason", "head", "pending", "released", "text")

    def __init__(self) -> None:
        self.pending = ""  # held back, not yet scanned/released (window/buffer)
        self.released = 0  # chars already sent to the client
        self.text: list[str] = []  # full text, kept when the audit log or audit mode needs it
        self.chars = 0
        self.head = ""  # first characters, for the refusal heuristic
        self.finish_reason: str | None = None


class StreamFilter:
    """Feed upstream bytes, get the bytes to send to the client. Check `blocked` after each call."""

    def __init__(
        self, policy: Policy, scanner: Scanner | None, route: str, *, strip_usage: bool, keep_text: bool
    ) -> None:
        self.route = route
        self.scanner = scanner if scanner is not None and scanner.active else None
        self.mode = policy.output_mode if self.scanner is not None else "pass"
        self.window = policy.window_chars if self.mode == "window" else 0
        self.overlap = policy.window_overlap
        self.strip_usage = strip_usage
        self.keep_text = keep_text or self.mode == "audit"
        self.framer = SSEFramer()
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.template: dict[str, Any] | None = None
        self.blocked: GuardError | None = None
        self.decisions: list[dict[str, str]] = []
        self.pii: dict[str, int] = {}
        self.first_content = False  # set once a content-bearing event went out (TTFT)
        self.done = False

    # -- public ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        out: list[bytes] = []
        for event in self.framer.feed(data):
            self._event(event, out)
            if self.done:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        """Upstream ended (with or without `[DONE]`): release or check whatever is still held."""
        if self.done:
            return b""
        out: list[bytes] = []
        rest = self.framer.rest()
        if rest.strip():
            self._event(rest + b"\n\n", out)
        if not self.done:
            self._final(out)
        self.done = True
        return b"".join(out)

    @property
    def text(self) -> str:
        choice = self.choices.get(0)
        return "".join(choice.text) if choice else ""

    @property
    def response_chars(self) -> int:
        return sum(c.chars for c in self.choices.values())

    @property
    def finish_reason(self) -> str | None:
        choice = self.choices.get(0)
        return choice.finish_reason if choice else None

    @property
    def refusal(self) -> bool:
        choice = self.choices.get(0)
        return bool(choice and is_refusal(choice.head))

    # -- internals ------------------------------------------------------------------------------

    def _choice(self, index: int) -> _Choice:
        choice = self.choices.get(index)
        if choice is None:
            choice = self.choices[index] = _Choice()
        return choice

    def _record(self, choice: _Choice, piece: str) -> None:
        choice.chars += len(piece)
        if len(choice.head) < _REFUSAL_PREFIX_CHARS:
            choice.head += piece[:_REFUSAL_PREFIX_CHARS]
        if self.keep_text:
            choice.text.append(piece)

    def _event(self, event: bytes, out: list[bytes]) -> None:
        data = event_data(event)
        if data is None or not data:
            out.append(event)  # comments / keep-alives
            return
        if data == DONE:
            self._final(out)
            if self.blocked is None:
                out.append(event)
            self.done = True
            return
        try:
            obj = codec.loads(data)
        except ValueError:
            out.append(event)
            return
        if not isinstance(obj, dict):
            out.append(event)
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            if usage is not None and self.strip_usage:
                return  # the usage chunk the guard asked for on the client's behalf
            out.append(event)
            return
        key = "delta" if self.route == ROUTE_CHAT else None
        holding = self.mode in ("window", "buffer")
        held = False
        finished: list[tuple[int, _Choice]] = []
        for c in choices:
            if not isinstance(c, dict):
                continue
            index = c.get("index", 0)
            index = index if isinstance(index, int) else 0
            choice = self._choice(index)
            holder = c.get("delta") if key else c
            piece = holder.get("content" if key else "text") if isinstance(holder, dict) else None
            if isinstance(piece, str) and piece:
                self._record(choice, piece)
                if holding:
                    choice.pending += piece
                    holder["content" if key else "text"] = ""  # type: ignore[index]
                    held = True
            if c.get("finish_reason") is not None:
                choice.finish_reason = c["finish_reason"]
                finished.append((index, choice))
        modified = held
        if usage is not None and self.strip_usage:  # some servers put usage on the last content chunk
            del obj["usage"]
            modified = True
        if holding:
            if held:
                self.template = obj
            for index, choice in finished:  # everything held for a finished choice goes out first
                self._release(index, choice, final=True, out=out)
                if self.blocked is not None:
                    return
            if held and self.window:
                for index, choice in self.choices.items():
                    if len(choice.pending) >= self.window:
                        self._release(index, choice, final=False, out=out)
                        if self.blocked is not None:
                            return
            if (
                held
                and not finished
                and not any(isinstance(c, dict) and _has_other_fields(c, key) for c in choices)
            ):
                return  # pure text, now held: released later as synthesized events
        elif not self.first_content and self.response_chars:
            self.first_content = True
        if modified:
            out.append(b"data: " + codec.dumps(obj) + b"\n\n")
        else:
            out.append(event)

    def _block(self, hit: Hit, out: list[bytes]) -> None:
        rule = hit.label if hit.kind == "blocked" else "pii.output"
        self.decisions.append({"rule": rule, "action": "block"})
        what = (
            f"content blocked by policy ({hit.label})"
            if hit.kind == "blocked"
            else f"personal data ({hit.label})"
        )
        self.blocked = GuardError(
            400, f"The response was stopped: it contained {what}.", "output_blocked", rule=rule
        )
        out.append(sse_error_event(self.blocked.message, self.blocked.code))
        self.done = True

    def _release(self, index: int, choice: _Choice, *, final: bool, out: list[bytes]) -> None:
        """Scan the held text; send all of it (final) or all but the overlap tail, redacted."""
        text = choice.pending
        if not text:
            return
        assert self.scanner is not None
        hits = self.scanner.scan(text)
        cut = len(text) if final else len(text) - self.overlap
        for h in hits:
            if h.kind == "blocked" or self.scanner.pii_action == "block":
                self._block(h, out)
                return
        if not final and 0 < cut < len(text) and not text[cut].isspace() and not text[cut - 1].isspace():
            # never release part of a word: most secrets (e-mails, keys, URLs) are one, and a
            # half-seen one does not match yet
            space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
            if space >= 0:
                cut = space + 1
        for h in hits:  # never split a match: hold it back whole
            if h.start < cut < h.end:
                cut = h.start
        if cut <= 0:
            return
        released_hits = [h for h in hits if h.end <= cut]
        for h in released_hits:
            self.pii[h.label] = self.pii.get(h.label, 0) + 1
        if released_hits and not any(d["rule"] == "pii.output" for d in self.decisions):
            self.decisions.append({"rule": "pii.output", "action": "redact"})
        piece = redact(text[:cut], released_hits) if released_hits else text[:cut]
        choice.pending = text[cut:]
        choice.released += cut
        out.append(b"data: " + codec.dumps(self._content_event(index, piece)) + b"\n\n")
        self.first_content = True

    def _content_event(self, index: int, piece: str) -> dict[str, Any]:
        base = {k: v for k, v in (self.template or {}).items() if k not in ("choices", "usage")}
        if self.route == ROUTE_CHAT:
            choice: dict[str, Any] = {
                "index": index,
                "delta": {"content": piece},
                "logprobs": None,
                "finish_reason": None,
            }
        else:
            choice = {"index": index, "text": piece, "logprobs": None, "finish_reason": None}
        base["choices"] = [choice]
        return base

    def _final(self, out: list[bytes]) -> None:
        if self.mode in ("window", "buffer"):
            for index, choice in self.choices.items():
                self._release(index, choice, final=True, out=out)
                if self.blocked is not None:
                    return
        elif self.mode == "audit":
            assert self.scanner is not None
            for choice in self.choices.values():
                hits = self.scanner.scan("".join(choice.text))
                for h in hits:
                    if h.kind == "pii":
                        self.pii[h.label] = self.pii.get(h.label, 0) + 1
                for h in hits:
                    if h.kind == "blocked" or self.scanner.pii_action == "block":
                        self._block(h, out)
                        return
                if hits:
                    self.decisions.append({"rule": "pii.output", "action": "audit"})


def _has_other_fields(choice: dict[str, Any], key: str | None) -> bool:
    """Whether a choice delta carries more than text (role, tool calls…) and so must be forwarded."""
    if key is None:
        return False
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(k != "content" and v is not None for k, v in delta.items())

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
from maestro.workers.guard.fields import Channel, delta_for, delta_has_more, delta_pieces
from maestro.workers.guard.rules import (
    ROUTE_CHAT,
    Hit,
    Scanner,
    is_refusal,
    output_blocked,
    redact,
    redact_tokens,
    scrub_entries,
    spells_a_secret,
)

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


class _Channel:
    """One text field of a streamed choice (content, reasoning, a tool call's arguments), held and
    released on its own so the window scan never mixes two fields' text."""

    __slots__ = ("logprobs", "lp_pos", "pending", "released", "spans", "text")

    def __init__(self) -> None:
        self.pending = ""  # held back, not yet scanned/released (window/buffer)
        self.released = 0  # chars already sent to the client
        self.text: list[str] = []  # every piece, kept for audit mode
        #: held logprob entries of this channel's tokens (content/text only), released with the text
        self.logprobs: list[dict[str, Any]] = []
        self.lp_pos = 0  # chars of token text already released
        #: absolute PII spans found in this channel's text not yet behind `lp_pos`
        self.spans: list[Hit] = []


class _Choice:
    __slots__ = ("channels", "chars", "finish_reason", "head", "text")

    def __init__(self) -> None:
        self.channels: dict[Channel, _Channel] = {}
        self.text: list[str] = []  # the answer's content, kept when the audit log needs it
        self.chars = 0
        self.head = ""  # first characters, for the refusal heuristic
        self.finish_reason: str | None = None

    def channel(self, name: Channel) -> _Channel:
        chan = self.channels.get(name)
        if chan is None:
            chan = self.channels[name] = _Channel()
        return chan


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

    def _record(self, choice: _Choice, channel: Channel, piece: str) -> None:
        choice.chars += len(piece)
        if channel in ("content", "text"):
            if len(choice.head) < _REFUSAL_PREFIX_CHARS:
                choice.head += piece[:_REFUSAL_PREFIX_CHARS]
            if self.keep_text:
                choice.text.append(piece)
        if self.mode == "audit":
            choice.channel(channel).text.append(piece)

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
        holding = self.mode in ("window", "buffer")
        held = False
        finished: list[tuple[int, _Choice]] = []
        for c in choices:
            if not isinstance(c, dict):
                continue
            index = c.get("index", 0)
            index = index if isinstance(index, int) else 0
            choice = self._choice(index)
            for channel, container, key in delta_pieces(self.route, c):
                piece: str = container[key]
                self._record(choice, channel, piece)
                if holding:
                    choice.channel(channel).pending += piece
                    container[key] = ""
                    held = True
            if holding and c.get("logprobs") is not None:
                self._hold_logprobs(choice, c)
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
                self._release_all(index, choice, out)
                if self.blocked is not None:
                    return
            if held and self.window:
                for index, choice in self.choices.items():
                    for name, chan in choice.channels.items():
                        if len(chan.pending) >= self.window:
                            self._release(index, name, chan, final=False, out=out)
                            if self.blocked is not None:
                                return
            if held and not finished and not any(isinstance(c, dict) and self._has_more(c) for c in choices):
                return  # pure text, now held: released later as synthesized events
        elif not self.first_content and self.response_chars:
            self.first_content = True
        if modified:
            out.append(b"data: " + codec.dumps(obj) + b"\n\n")
        else:
            out.append(event)

    def _has_more(self, choice: dict[str, Any]) -> bool:
        return self.route == ROUTE_CHAT and delta_has_more(choice)

    def _hold_logprobs(self, choice: _Choice, c: dict[str, Any]) -> None:
        """Take a chunk's logprobs off the event: they spell out the held text, so they are released
        with it (and redacted like it)."""
        lp = c.pop("logprobs")
        c["logprobs"] = None
        if not isinstance(lp, dict):
            return
        if self.route == ROUTE_CHAT:
            entries = lp.get("content")
            if isinstance(entries, list):
                choice.channel("content").logprobs.extend(e for e in entries if isinstance(e, dict))
            return
        tokens = lp.get("tokens")
        if not isinstance(tokens, list):
            return
        n = len(tokens)
        columns: dict[str, list[Any]] = {}
        for k in _COMPLETION_LOGPROBS:
            col = lp.get(k)
            columns[k] = col if isinstance(col, list) else [None] * n
        chan = choice.channel("text")
        for i, token in enumerate(tokens):
            entry = {k: (col[i] if i < len(col) else None) for k, col in columns.items()}
            entry["token"] = token if isinstance(token, str) else ""
            chan.logprobs.append(entry)

    def _block(self, hit: Hit, out: list[bytes]) -> None:
        self.decisions.append(
            {"rule": hit.label if hit.kind == "blocked" else "pii.output", "action": "block"}
        )
        self.blocked = output_blocked(hit, "stopped")
        out.append(sse_error_event(self.blocked.message, self.blocked.code))
        self.done = True

    def _release_all(self, index: int, choice: _Choice, out: list[bytes]) -> None:
        for name, chan in choice.channels.items():
            self._release(index, name, chan, final=True, out=out)
            if self.blocked is not None:
                return

    def _release(self, index: int, name: Channel, chan: _Channel, *, final: bool, out: list[bytes]) -> None:
        """Scan the held text; send all of it (final) or all but the overlap tail, redacted."""
        text = chan.pending
        if not text:
            if final and chan.logprobs:
                self._emit(index, name, chan, "", final=True, out=out)
            return
        assert self.scanner is not None
        hits = self.scanner.scan(text)
        cut = len(text) if final else len(text) - self.overlap
        for h in hits:
            if h.kind == "blocked" or self.scanner.pii_action == "block":
                self._block(h, out)
                return
        if not final and 0 < cut < len(text) and not (_boundary(text[cut]) or _boundary(text[cut - 1])):
            # never release part of a word: most secrets (e-mails, keys, URLs) are one, and a
            # half-seen one does not match yet; a word longer than the window is held up to a bound
            b = cut - 1
            while b >= 0 and not _boundary(text[b]):
                b -= 1
            if b >= 0:
                cut = b + 1
            elif len(text) < _MAX_WORD_WINDOWS * max(self.window, 1):
                cut = 0
        for h in hits:  # never split a match: hold it back whole
            if h.start < cut < h.end:
                cut = h.start
        if cut <= 0:
            return
        released_hits = [h for h in hits if h.end <= cut]
        for h in released_hits:
            self.pii[h.label] = self.pii.get(h.label, 0) + 1
            chan.spans.append(Hit(h.kind, h.label, chan.released + h.start, chan.released + h.end))
        if released_hits and not any(d["rule"] == "pii.output" for d in self.decisions):
            self.decisions.append({"rule": "pii.output", "action": "redact"})
        piece = redact(text[:cut], released_hits) if released_hits else text[:cut]
        chan.pending = text[cut:]
        chan.released += cut
        self._emit(index, name, chan, piece, final=final, out=out)

    def _emit(
        self, index: int, name: Channel, chan: _Channel, piece: str, *, final: bool, out: list[bytes]
    ) -> None:
        """One synthesized event with the released piece and the logprob entries now wholly released."""
        entries = self._released_logprobs(chan, final)
        out.append(b"data: " + codec.dumps(self._content_event(index, name, piece, entries)) + b"\n\n")
        self.first_content = True

    def _released_logprobs(self, chan: _Channel, final: bool) -> list[dict[str, Any]]:
        """The held entries whose token text lies within what was released, redacted where a PII span
        of the text covers them (found by position: the tokens spell out the same text)."""
        if not chan.logprobs:
            return []
        taken: list[dict[str, Any]] = []
        pos = chan.lp_pos
        for e in chan.logprobs:
            size = len(e.get("token") or "")
            if not final and pos + size > chan.released:
                break
            taken.append(e)
            pos += size
        del chan.logprobs[: len(taken)]
        tokens = [e.get("token") or "" for e in taken]
        for i, text in redact_tokens(tokens, chan.spans, chan.lp_pos).items():
            e = taken[i]
            e["token"] = text
            e["bytes"] = None
            if e.get("top_logprobs"):
                e["top_logprobs"] = []
        chan.lp_pos = pos
        chan.spans = [h for h in chan.spans if h.end > pos]
        assert self.scanner is not None
        if self.route == ROUTE_CHAT:
            scrub_entries(self.scanner, taken, {})  # alternatives that spell a secret on their own
        return taken

    def _content_event(
        self, index: int, name: Channel, piece: str, entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        base = {k: v for k, v in (self.template or {}).items() if k not in ("choices", "usage")}
        choice: dict[str, Any] = {"index": index, **delta_for(self.route, name, piece), "logprobs": None}
        if entries and self.route == ROUTE_CHAT:
            choice["logprobs"] = {"content": entries}
        elif entries:
            lp = {k: [e.get(k) for e in entries] for k in _COMPLETION_LOGPROBS}
            lp["tokens"] = [e["token"] for e in entries]
            lp["top_logprobs"] = [
                {
                    t: v
                    for t, v in (e.get("top_logprobs") or {}).items()
                    if not spells_a_secret(self.scanner, t)
                }
                for e in entries
            ]
            choice["logprobs"] = lp
        choice["finish_reason"] = None
        base["choices"] = [choice]
        return base

    def _final(self, out: list[bytes]) -> None:
        if self.mode in ("window", "buffer"):
            for index, choice in self.choices.items():
                self._release_all(index, choice, out)
                if self.blocked is not None:
                    return
        elif self.mode == "audit":
            assert self.scanner is not None
            for choice in self.choices.values():
                for chan in choice.channels.values():
                    hits = self.scanner.scan("".join(chan.text))
                    for h in hits:
                        if h.kind == "pii":
                            self.pii[h.label] = self.pii.get(h.label, 0) + 1
                    for h in hits:
                        if h.kind == "blocked" or self.scanner.pii_action == "block":
                            self._block(h, out)
                            return
                    if hits and not any(d["rule"] == "pii.output" for d in self.decisions):
                        self.decisions.append({"rule": "pii.output", "action": "audit"})


#: Where a held text may be cut: whitespace and the quotes and brackets that end a token in prose,
#: JSON (tool-call arguments) and markup. No secret pattern spans one of them.
_BOUNDARIES = frozenset(" \t\r\n\"',;<>(){}[]")
#: A word (no boundary) is held until it ends or grows to this many windows.
_MAX_WORD_WINDOWS = 4


def _boundary(ch: str) -> bool:
    return ch in _BOUNDARIES or ch.isspace()


#: The per-token columns of a completions-format `logprobs` object.
_COMPLETION_LOGPROBS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")

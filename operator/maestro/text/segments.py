"""Segments: the spans of a prompt's texts that an explanation perturbs and attributes to.

Shared by the guard's online explanations (`POST /v1/explain`) and the trainer's offline ones in the
evaluation report, so a word means the same span in both. A prompt's texts are `Part`s: each chat
message's string content, or the completion prompt. A `Segment` is a span of one part at the
requested granularity; masking a segment deletes its text from the rendered prompt (with one
adjoining space, so no double spaces appear). Token segments need the model's tokenizer and come
from the guard's engine (`engine.Engine.token_spans`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

GRANULARITIES = ("word", "sentence", "message", "token")

#: words (with inner apostrophes) and runs of punctuation, each its own segment: "France?" is two
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]+")
#: a sentence runs to its end punctuation (followed by whitespace or the end), a newline, or the end
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|(?=\n)|$)", re.S)


@dataclass(frozen=True, slots=True)
class Part:
    """One explained text: a message's content (`message` = its index) or the prompt (None)."""

    message: int | None
    role: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Segment:
    """A span [start, end) of part `part`'s text."""

    part: int
    start: int
    end: int
    text: str


def spans(text: str, granularity: str) -> list[tuple[int, int]]:
    """The [start, end) spans of `text` at a local granularity (word, sentence, message)."""
    if granularity == "word":
        return [m.span() for m in _WORD.finditer(text)]
    if granularity == "sentence":
        return sentence_spans(text)
    if granularity == "message":
        stripped = text.strip()
        if not stripped:
            return []
        start = text.index(stripped[0])
        return [(start, start + len(stripped))]
    raise ValueError(f"granularity {granularity!r} is not local")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentences of `text`, trailing whitespace excluded."""
    out = []
    for m in _SENTENCE.finditer(text):
        s, e = m.span()
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def segment(parts: Sequence[Part], part_spans: Sequence[Sequence[tuple[int, int]]]) -> list[Segment]:
    """Segments in prompt order from each part's spans."""
    return [Segment(i, s, e, parts[i].text[s:e]) for i, sp in enumerate(part_spans) for s, e in sp if e > s]


def masked(base: str, offsets: Sequence[int], segments: Sequence[Segment], keep: Sequence[bool]) -> str:
    """`base` (the rendered prompt, part i starting at offsets[i]) with the unkept segments deleted.

    A deleted segment preceded by whitespace (or at its part's start) takes one following space with
    it, so "the capital of France is" minus "of" reads "the capital France is".
    """
    out: list[str] = []
    pos = 0
    for seg, k in zip(segments, keep, strict=True):
        if k:
            continue
        s, e = offsets[seg.part] + seg.start, offsets[seg.part] + seg.end
        if s < pos:  # overlapping spans cannot happen with one granularity; stay safe
            s = pos
        out.append(base[pos:s])
        pos = max(e, pos)
        if pos < len(base) and base[pos] == " " and (seg.start == 0 or base[s - 1].isspace()):
            pos += 1
    out.append(base[pos:])
    return "".join(out)

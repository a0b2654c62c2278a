"""Per-record filters (length, language, profanity, Gopher/C4-style heuristics) and dataset stats
(representation counts, distinct-n diversity). Language and profanity themselves are `maestro.text`'s.

Thresholds follow datatrove's Gopher/C4 defaults (research §3). Gopher's ratio checks need a
document's worth of words, so they apply from `HEURISTIC_MIN_WORDS` words on: short chat turns
("Yes, thanks!") carry too little signal and would be dropped for being short, not for being bad.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

HEURISTIC_MIN_WORDS = 50
MIN_AVG_WORD_LEN, MAX_AVG_WORD_LEN = 3.0, 10.0
MAX_SYMBOL_WORD_RATIO = 0.1
MIN_ALPHA_WORD_RATIO = 0.8
MAX_DUP_LINE_FRAC = 0.3
MAX_TOP_2GRAM_CHAR_FRAC = 0.2
MAX_WORD_CHARS = 1000  # C4: longer "words" are base64 blobs or minified code

_LETTERS_WS = bytes(string.ascii_letters + string.whitespace, "ascii")
_NO_ALPHA_TOKEN = re.compile(r"(?<!\S)[^\sA-Za-z\u00c0-\u024f\u0370-\u1fff\u3040-\uffff]+(?!\S)")


@dataclass(frozen=True)
class FilterConfig:
    """`spec.processing.filters`, as config.Config.from_spec reads it from the API model.

    The Gopher/C4 heuristics always run, and a language filter always keeps `und` records (too short
    or mixed to tell): the API has no switch for either.
    """

    min_chars: int = 1
    max_chars: int | None = None
    languages: frozenset[str] | None = None  # keep only these, plus `und`
    max_profanity: float | None = None  # share of a record's words


def heuristic_reason(text: str, words: list[str]) -> str | None:
    """The first Gopher/C4 rule `text` breaks, or None. `words` is `text.lower().split()`."""
    if "lorem ipsum" in text or "Lorem ipsum" in text:
        return "lorem_ipsum"
    n = len(words)
    if n < HEURISTIC_MIN_WORDS:
        return None
    total_chars = sum(map(len, words))
    avg = total_chars / n
    if avg < MIN_AVG_WORD_LEN or avg > MAX_AVG_WORD_LEN:
        return "avg_word_length"
    if len(text) > MAX_WORD_CHARS and max(map(len, words)) > MAX_WORD_CHARS:
        return "long_word"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > MAX_SYMBOL_WORD_RATIO:
        return "symbol_ratio"
    # every word without a letter holds a non-letter character, so few such characters in ASCII text
    # bound the ratio without tokenizing (bytes.translate runs at memcpy speed)
    max_bad = (1 - MIN_ALPHA_WORD_RATIO) * n
    bounded = text.isascii() and len(text.encode().translate(None, _LETTERS_WS)) < max_bad
    if not bounded and 1 - len(_NO_ALPHA_TOKEN.findall(text)) / n < MIN_ALPHA_WORD_RATIO:
        return "alpha_ratio"
    if text.count("\n") >= 3:
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if lines and 1 - len(set(lines)) / len(lines) > MAX_DUP_LINE_FRAC:
            return "duplicate_lines"
    if len(set(words)) * 2 < n:  # only repetitive text can have a dominant 2-gram; skip the Counter otherwise
        ((pair, count),) = Counter(pairwise(words)).most_common(1)
        if count > 1 and count * (len(pair[0]) + len(pair[1])) / total_chars > MAX_TOP_2GRAM_CHAR_FRAC:
            return "repeated_ngrams"
    return None


@dataclass
class Representation:
    """Records mentioning each member of each group; imbalance = max/min over a group's members."""

    groups: dict[str, dict[str, list[str]]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._terms: dict[str, list[tuple[str, str]]] = {}
        for group, members in self.groups.items():
            self.counts[group] = dict.fromkeys(members, 0)
            for member, terms in members.items():
                for t in terms:
                    self._terms.setdefault(t.lower(), []).append((group, member))
        self._keys = frozenset(self._terms)

    def add(self, words: list[str]) -> None:
        hits = self._keys.intersection(words)
        if not hits:
            return
        seen: set[tuple[str, str]] = set()
        for t in hits:
            seen.update(self._terms[t])
        for group, member in seen:
            self.counts[group][member] += 1

    def imbalance(self) -> dict[str, float | None]:
        """max/min member count per group; None when nobody is mentioned, inf when a member never is."""
        out: dict[str, float | None] = {}
        for group, members in self.counts.items():
            values = list(members.values())
            hi, lo = max(values), min(values)
            out[group] = None if hi == 0 else (float("inf") if lo == 0 else round(hi / lo, 4))
        return out


class Diversity:
    """distinct-1/2 over a content-hash sample (1 record in `sample_mod`, in stream order, up to
    `cap_tokens` tokens): cheap, deterministic, and comparable between datasets of different sizes."""

    def __init__(self, sample_mod: int = 8, cap_tokens: int = 200_000) -> None:
        self.sample_mod = sample_mod
        self.cap_tokens = cap_tokens
        self.unigrams: set[str] = set()
        self.bigrams: set[tuple[str, str]] = set()
        self.tokens = 0
        self.pairs = 0

    def add(self, key: bytes, words: list[str]) -> None:
        if key[0] % self.sample_mod or self.tokens >= self.cap_tokens:
            return
        self.unigrams.update(words)
        self.bigrams.update(pairwise(words))
        self.tokens += len(words)
        self.pairs += max(0, len(words) - 1)

    def result(self) -> dict[str, float | None]:
        return {
            "distinct1": round(len(self.unigrams) / self.tokens, 4) if self.tokens else None,
            "distinct2": round(len(self.bigrams) / self.pairs, 4) if self.pairs else None,
            "diversitySampleTokens": self.tokens,
        }

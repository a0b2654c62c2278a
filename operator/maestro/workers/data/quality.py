"""Per-record filters (length, language, profanity, Gopher/C4-style heuristics) and dataset stats
(representation counts, distinct-n diversity).

Thresholds follow datatrove's Gopher/C4 defaults (research §3). Gopher's ratio checks need a
document's worth of words, so they apply from `HEURISTIC_MIN_WORDS` words on: short chat turns
("Yes, thanks!") carry too little signal and would be dropped for being short, not for being bad.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from maestro.workers.data.lexicons import DEMOGRAPHIC_GROUPS, PROFANITY, PROFANITY_VARIANTS, STRIP_CHARS

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
    min_chars: int = 1
    max_chars: int | None = None
    languages: frozenset[str] | None = None  # keep only these (plus `und` when keep_undetermined)
    keep_undetermined: bool = True
    max_profanity: float | None = None  # share of a record's words
    heuristics: bool = True

    @classmethod
    def from_spec(cls, filters: Mapping[str, Any] | None) -> FilterConfig:
        f = filters or {}
        langs = f.get("languages")
        return cls(
            min_chars=int(f.get("minChars") or 1),
            max_chars=int(f["maxChars"]) if f.get("maxChars") else None,
            languages=frozenset(langs) if langs else None,
            keep_undetermined=bool(f.get("keepUndetermined", True)),
            max_profanity=float(f["maxProfanity"]) if f.get("maxProfanity") is not None else None,
            heuristics=bool(f.get("heuristics", True)),
        )


def profanity_count(words: list[str]) -> int:
    if PROFANITY_VARIANTS.isdisjoint(words):  # C-speed fast path for the common clean record
        return 0
    return sum(1 for w in words if w.strip(STRIP_CHARS) in PROFANITY)


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

    @classmethod
    def from_spec(cls, rep: Mapping[str, Any] | None) -> Representation | None:
        """`groups` may name built-in groups (`[gender]`), or give `{group: {member: [terms]}}`, or a list
        of `{name, members: {member: [terms]}}`."""
        if not rep or not rep.get("groups"):
            return None
        raw = rep["groups"]
        groups: dict[str, dict[str, list[str]]] = {}
        items = raw.items() if isinstance(raw, Mapping) else ((g, None) for g in raw)
        for key, value in items:
            if isinstance(key, Mapping):  # list form: {name, members} or {name, terms...}
                name = str(key.get("name"))
                value = key.get("members") or {k: v for k, v in key.items() if k != "name"}
                key = name
            if not value:
                if key not in DEMOGRAPHIC_GROUPS:
                    raise ValueError(
                        f"representation group {key!r} is not built in ({', '.join(DEMOGRAPHIC_GROUPS)}); "
                        "give its members and terms"
                    )
                value = DEMOGRAPHIC_GROUPS[key]
            if not isinstance(value, Mapping) or len(value) < 2:
                raise ValueError(f"representation group {key!r} needs at least two members with term lists")
            groups[str(key)] = {str(m): [str(t) for t in ts] for m, ts in value.items()}
        return cls(groups)

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

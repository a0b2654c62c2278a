"""Profanity: one built-in English word list, matched word by word.

A lexicon is crude next to a classifier, but it runs offline at dictionary-lookup cost and its counts
are explainable in a datasheet. The dataset worker counts profane words per record (the
`maxProfanity` share); the monitor flags texts that contain any. Both match the same way: a
whitespace-separated word is profane when, lowercased and stripped of surrounding punctuation, it is
on the list ("Shit!" counts, "Scunthorpe" does not, nor does a word inside a hyphenated compound).
Deliberately no slurs list here; operators who need one pass their own words to `Lexicon`.
"""

from __future__ import annotations

from collections.abc import Iterable

_LIST = (
    "fuck fucked fucker fuckers fucking fucks motherfucker motherfuckers shit shits shitty bullshit "
    "bitch bitches bastard bastards asshole assholes arsehole cunt cunts dick dicks dickhead cock "
    "cocks pussy prick wanker twat slut sluts whore whores damn goddamn crap piss pissed bollocks "
    "douche douchebag jackass dipshit retard retarded"
)
WORDS: frozenset[str] = frozenset(_LIST.split())

#: What `str.strip` removes around a word before the lookup.
STRIP_CHARS = ".,;:!?\"')(*"
# Wrappings a whitespace split leaves on a word, precomputed so that a clean text is ruled out by one
# set operation in C (`isdisjoint`), with no Python-level loop over its words: quotes and brackets
# around it, any one punctuation mark before it, common endings after it (~6k strings, ~0.5 MB).
_OPENERS = ("", "(", '"', "'", "*")
_CLOSERS = ("", *STRIP_CHARS, "!!", "...", "?!", "!?", ").", "),", '".', '",', "'.", "',")


class Lexicon:
    """A word list compiled for fast per-word matching; build once, reuse for every text."""

    __slots__ = ("_variants", "words")

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(w.lower() for w in words)
        self._variants = frozenset(
            {o + w + c for w in self.words for o in _OPENERS for c in _CLOSERS}
            | {p + w for w in self.words for p in STRIP_CHARS}
        )

    def count(self, words: list[str]) -> int:
        """Profane words among `words`, which are lowercased and whitespace-split (`text.lower().split()`).

        A word wrapped in punctuation not precomputed (`((shit))`) is missed when no other profane
        word in the text is found first: the price of the C-speed path for clean text.
        """
        if self._variants.isdisjoint(words):  # the common clean text: one set operation
            return 0
        strip, listed = STRIP_CHARS, self.words
        return sum(1 for w in words if w.strip(strip) in listed)

    def contains(self, text: str) -> bool:
        """Whether `text` holds a profane word (the same matching as `count`)."""
        return not self._variants.isdisjoint(text.lower().split())


DEFAULT = Lexicon(WORDS)


def count(words: list[str]) -> int:
    """Profane words in a lowercased, whitespace-split text, by the built-in list."""
    return DEFAULT.count(words)


def contains(text: str) -> bool:
    """Whether `text` holds a word from the built-in list."""
    return DEFAULT.contains(text)

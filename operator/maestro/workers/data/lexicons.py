"""Small built-in word lists: profanity and demographic term groups (English).

Lexicons are crude next to a classifier, but they run offline at dictionary-lookup cost and their
counts are explainable in a datasheet. A spec can replace the groups with its own term lists.
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


_PROFANE_STEMS = _words(
    "fuck fucked fucker fuckers fucking fucks motherfucker motherfuckers shit shits shitty bullshit "
    "bitch bitches bastard bastards asshole assholes arsehole cunt cunts dick dicks dickhead cock "
    "cocks pussy prick wanker twat slut sluts whore whores damn goddamn crap piss pissed bollocks "
    "douche douchebag jackass dipshit retard retarded"
)

_PUNCT = ".,;:!?\"')(*"


def _variants(words: list[str]) -> frozenset[str]:
    """Each word plus the trailing/leading punctuation a whitespace split leaves attached."""
    out = set(words)
    for w in words:
        for p in _PUNCT:
            out.add(w + p)
            out.add(p + w)
        out.add(w + "!!")
        out.add(w + "...")
    return frozenset(out)


PROFANITY: frozenset[str] = frozenset(_PROFANE_STEMS)
PROFANITY_VARIANTS: frozenset[str] = _variants(_PROFANE_STEMS)
STRIP_CHARS = _PUNCT + "."

#: group -> member -> terms. Counted per record (a record mentioning "she" twice counts once).
DEMOGRAPHIC_GROUPS: dict[str, dict[str, list[str]]] = {
    "gender": {
        "female": _words(
            "she her hers herself woman women girl girls female mother mothers daughter daughters sister "
            "sisters wife wives aunt niece lady ladies mrs ms grandmother"
        ),
        "male": _words(
            "he him his himself man men boy boys male father fathers son sons brother brothers husband "
            "husbands uncle nephew gentleman gentlemen mr grandfather"
        ),
    },
    "age": {
        "young": _words(
            "young youth teen teens teenager teenagers child children kid kids student students millennial "
            "millennials"
        ),
        "old": _words(
            "old elderly senior seniors retiree retirees aged pensioner pensioners grandparent grandparents "
            "boomer boomers"
        ),
    },
}

"""Offline text signals: language, sentiment (VADER), profanity and refusals.

All of it runs without downloads (the pod has no egress) and in well under a millisecond per
text, so the monitor can score every logged response. Texts are clipped before scoring: the
signal is about the mix, and a 30 kB answer must not stall the event loop.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Characters scored per text; enough for language and tone, bounded in cost.
MAX_SCORED_CHARS = 2000
UNDETERMINED = "und"

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words that are frequent in one language and rare in the others of this set.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words("the and is are was of to in that it you for with this have not be on what"),
    "es": _words("el la los las de que y es en un una por para con no se del al como pero"),
    "fr": _words("le la les des est et un une du que qui pas pour dans sur avec ce il je vous"),
    "de": _words("der die das und ist nicht ein eine ich zu den mit sie es auf für von dem wir"),
    "it": _words("il lo la gli di che è e un una per non con sono della del questo ma si"),
    "pt": _words("o a os as de que é e um uma não para com em do da no na por se você"),
    "nl": _words("de het een en is van dat niet ik je op te zijn met voor er maar ook"),
}
# (language, first codepoint, last codepoint): scripts that identify a language on their own.
_SCRIPTS: tuple[tuple[str, int, int], ...] = (
    ("ja", 0x3040, 0x30FF),  # kana first: Japanese text also contains Han
    ("ko", 0xAC00, 0xD7AF),
    ("zh", 0x4E00, 0x9FFF),
    ("ru", 0x0400, 0x04FF),
    ("el", 0x0370, 0x03FF),
    ("he", 0x0590, 0x05FF),
    ("ar", 0x0600, 0x06FF),
    ("hi", 0x0900, 0x097F),
    ("th", 0x0E00, 0x0E7F),
)


def fallback_language(text: str) -> str:
    """ISO 639-1 guess from script, then function words; 'und' when there is too little to go on."""
    sample = text[:MAX_SCORED_CHARS]
    script_counts: dict[str, int] = {}
    letters = 0
    for ch in sample:
        if not ch.isalpha():
            continue
        letters += 1
        cp = ord(ch)
        if cp < 0x0370:
            continue
        for lang, lo, hi in _SCRIPTS:
            if lo <= cp <= hi:
                script_counts[lang] = script_counts.get(lang, 0) + 1
                break
    if letters == 0:
        return UNDETERMINED
    if script_counts:
        lang, n = max(script_counts.items(), key=lambda kv: kv[1])
        if "ja" in script_counts:
            return "ja"
        if n / letters >= 0.3:
            return lang
    words = [w.lower() for w in _WORD.findall(sample)]
    if len(words) < 3:
        return UNDETERMINED
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    lang, best = max(scores.items(), key=lambda kv: kv[1])
    return lang if best >= 2 and best / len(words) >= 0.08 else UNDETERMINED


def _external_language_detector() -> Callable[[str], str] | None:
    """The data worker's detector when it is installed (one language model for data and traffic)."""
    try:
        mod = importlib.import_module("maestro.workers.data.langid")
    except Exception:
        return None
    fn = getattr(mod, "detect", None) or getattr(mod, "detect_language", None)
    if not callable(fn):
        return None

    def detect(text: str) -> str:
        out: Any = fn(text)
        if isinstance(out, tuple | list):
            out = out[0] if out else None
        return out if isinstance(out, str) and out else UNDETERMINED

    try:
        detect("This is a short English sentence for a smoke test.")
    except Exception as e:
        log.warning("maestro.workers.data.langid unusable (%s); using the built-in detector", e)
        return None
    return detect


# Profanity: a short, explicit wordlist (whole words, common inflections). Deliberately no slurs list
# here; operators who need one mount it and point the analyzer at it.
_PROFANITY_WORDS = sorted(
    _words(
        "fuck fucks fucked fucking fucker motherfucker shit shits shitty bullshit bitch bitches asshole "
        "assholes bastard bastards dick dickhead cunt piss pissed crap damn goddamn wanker bollocks prick"
    )
)
_REFUSAL = re.compile(
    r"\b(?:I\s*(?:can(?:no|')t|cannot|won'?t|am\s+(?:not\s+able|unable)|'m\s+(?:not\s+able|unable))"
    r"\s+(?:help|assist|provide|do|comply|answer|share|support|create|write|engage)"
    r"|I'?m\s+sorry,?\s+(?:but\s+)?I\b|as\s+an\s+AI(?:\s+language\s+model)?,?\s+I"
    r"|I\s+(?:must|have\s+to)\s+(?:decline|refuse))",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """Refusal phrasing in the first part of an answer (where models put it)."""
    return bool(_REFUSAL.search(text[:400]))


class TextAnalyzer:
    """Scores one text. Sentiment is None when vaderSentiment is not installed."""

    def __init__(self, profanity_words: list[str] | None = None) -> None:
        words = profanity_words or _PROFANITY_WORDS
        self._profanity = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
        self.detect_language: Callable[[str], str] = _external_language_detector() or fallback_language
        self._vader: Any = None
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._vader = SentimentIntensityAnalyzer()
        except ImportError:
            log.warning(
                "vaderSentiment not installed: sentiment signals are off (pip install maestro[monitor])"
            )

    @property
    def has_sentiment(self) -> bool:
        return self._vader is not None

    def sentiment(self, text: str) -> float | None:
        """VADER compound score in [-1, 1]."""
        if self._vader is None or not text.strip():
            return None
        return float(self._vader.polarity_scores(text[:MAX_SCORED_CHARS])["compound"])

    def profane(self, text: str) -> bool:
        return bool(self._profanity.search(text[:MAX_SCORED_CHARS]))

    def language(self, text: str) -> str:
        try:
            return self.detect_language(text[:MAX_SCORED_CHARS])
        except Exception:
            return UNDETERMINED

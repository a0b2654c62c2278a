"""Offline text signals: language, sentiment (VADER) and profanity.

All of it runs without downloads (the pod has no egress) and in well under a millisecond per
text, so the monitor can score every logged response. Texts are clipped before scoring: the
signal is about the mix, and a 30 kB answer must not stall the event loop. Language and profanity
are `maestro.text`'s (as are refusals, `maestro.text.refusal`), the same the data and training
workers use. Language is its fast stage alone (`langid.detect`): the py3langid model would add
~80 MB to the sidecar image and ~95 MB of memory, for better answers on sentence-length texts
only, which stay `und` here; the drift reference is scored by this same analyzer, so both sides
of the comparison agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from maestro.text import langid
from maestro.text.profanity import DEFAULT as DEFAULT_PROFANITY
from maestro.text.profanity import Lexicon

log = logging.getLogger(__name__)

#: Characters scored per text; enough for language and tone, bounded in cost.
MAX_SCORED_CHARS = 2000
UNDETERMINED = langid.UNDETERMINED


class TextAnalyzer:
    """Scores one text. Sentiment is None when vaderSentiment is not installed."""

    def __init__(self, profanity_words: list[str] | None = None) -> None:
        self._profanity = Lexicon(profanity_words) if profanity_words else DEFAULT_PROFANITY
        self.detect_language: Callable[[str], str] = langid.detect
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
        return self._profanity.contains(text[:MAX_SCORED_CHARS])

    def language(self, text: str) -> str:
        try:
            return self.detect_language(text[:MAX_SCORED_CHARS])
        except Exception:
            return UNDETERMINED

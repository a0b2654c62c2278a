"""Offline language identification: Unicode script first, then function-word profiles for Latin text,
and, where the words leave it open, the `py3langid` model.

One identifier for every worker. `detect` is the fast stage alone: a few µs per text, stdlib only, so
the sidecar (monitor) image needs nothing for it. Latin-script scores are packed into one integer
(8 bits per language), so a text's profile is one sum over its words; text with too little evidence,
or a tie, is `und` (undetermined).

`detect_with_model` (the dataset worker) keeps the fast answer when it is clear (two function words
ahead of the runner-up) and asks py3langid (langid.py's naive Bayes over byte n-grams, 97 languages,
its model inside the wheel: no download) otherwise. Measured on `tests/unit/text/langid_corpus.tsv`
(140 chat-length sentences, en de fr es it pt nl; `bench/langid.py`, 2 busy cores): the fast stage
alone names 80% right (24 `und`, 4 wrong) at 2-8 µs a call, py3langid alone 100% at 90-125 µs, the
two together 100% at 20-40 µs (the model runs on under half of such short texts; on three-sentence
paragraphs on 4 in 70, 7-10 µs a call). The model is loaded on first use (~1 s, ~95 MB resident),
which is why the sidecar (monitor) does without it.
"""

from __future__ import annotations

import logging
import re
from itertools import repeat
from typing import Any

log = logging.getLogger(__name__)

#: The code for "too little evidence to tell".
UNDETERMINED = "und"

_STOPWORDS: dict[str, str] = {
    "en": "the of and to in is that it for was on are with as his they be at this have from or one had by "
    "but not what all were we when your can said there use an each which she do how their if will "
    "up other about out many then them these so some her would make like him into has more two "
    "could been who its now did get may you i my me should because does a why am than very any our "
    "us just only also over after where here yes",
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an "
    "werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum "
    "war haben nur oder aber vor zur bis mehr durch man dann soll ich wir ihr mein kann wenn",
    "fr": "le de la les et des en un une du est que pour qui dans par sur pas au avec ce il sont se "
    "plus ne ou mais elle nous vous leur cette comme ont été aux fait ses tout ils sans peut être "
    "je sa son entre aussi bien où donc",
    "es": "de la que el en los del se las por un para con no una su al es lo como más pero sus le ya "
    "este sí porque esta entre cuando muy sin sobre también me hasta hay donde quien desde todo "
    "nos durante todos uno les ni contra otros ese eso ante ellos está estos yo",
    "it": "di che e il la in per un è non una sono del da le si con della al ha lo dei gli come ma "
    "anche alla più delle nel questo ci se mi sua suo io nella hanno cosa essere tutto quando "
    "molto era degli sul già perché dove",
    "pt": "de que o a do da em um para é com não uma os no se na por mais as dos como mas foi ao ele "
    "das tem à seu sua ou ser quando muito há nos já está eu também só pelo pela até isso ela "
    "entre era depois sem mesmo aos ter seus você cão então isso pelos num numa",
    "nl": "de en van het een in is dat op te zijn voor met die niet aan er om ook als bij of maar dan "
    "nog wel naar uit door over ze zich heeft worden hij wordt deze kan meer was tot geen dit "
    "wat ik je we hun",
    "sv": "och i att det som en på är av för med till den har de inte om ett han men var jag sig "
    "från vi så kan man när år säger hon under också efter eller nu sin där vid mot ska skulle "
    "kommer ut få hade",
    "pl": "i w nie na się z do to że jest o jak ale po co tak za od już przez jego może są by był "
    "tym ich ze czy dla jej lub tylko tego które który także jednak oraz bardzo będzie",
    "tr": "ve bir bu da de için ile olarak çok daha gibi olan en ne kadar sonra ama ki o her mi "
    "değil var ise ancak şey ya hem göre nasıl neden bunu şu ben sen biz",
    "id": "yang dan di ini itu dengan untuk tidak dari dalam akan pada juga ke karena tersebut bisa "
    "ada mereka lebih kami kita adalah saya sudah oleh atau seperti hanya",
}

LANGUAGES: tuple[str, ...] = tuple(_STOPWORDS)
_BITS = 8  # per-language counter width: at most MAX_WORDS (< 256) words are counted
_PACKED: dict[str, int] = {}
for _i, _lang in enumerate(LANGUAGES):
    for _w in set(_STOPWORDS[_lang].split()):
        _PACKED[_w] = _PACKED.get(_w, 0) + (1 << (_BITS * _i))
_NBYTES = len(LANGUAGES)

_WORD = re.compile(r"[^\W\d_]+")
_NON_LATIN = re.compile(r"[^\x00-\u024f\u1e00-\u1eff\u2000-\u206f]")
# script ranges → language; checked in order, the largest count wins
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana: Japanese even when mixed with kanji
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
)
_UKRAINIAN = re.compile(r"[іїєґІЇЄҐ]")
SAMPLE_CHARS = 600
MAX_WORDS = 48
#: `detect_with_model` keeps the fast answer when the best language leads the runner-up by this many
#: function words (script-identified text always counts as clear).
CLEAR_MARGIN = 2


def detect(text: str, words: list[str] | None = None) -> str:
    """ISO 639-1 code of the dominant language, or `und` when the evidence is too thin.

    `words` may pass `text.lower().split()` when the caller has it already.
    """
    return _detect(text, words, False)[0]


def _detect(text: str, words: list[str] | None, margin: bool) -> tuple[str, bool]:
    """(language or `und`, whether it is clear enough to skip the model; computed when `margin`)."""
    sample = text[:SAMPLE_CHARS]
    if not sample.isascii() and _NON_LATIN.search(sample) is not None:
        lang = _by_script(sample)
        if lang is not None:
            return lang, True
    # plain split: a regex tokenizer costs 3-5x more, and a stopword next to punctuation is rare
    words = sample.lower().split()[:MAX_WORDS] if words is None else words[:MAX_WORDS]
    if len(words) < 3:
        return UNDETERMINED, False
    total = sum(map(_PACKED.get, words, repeat(0, len(words))))  # all in C: no Python-level loop
    if not total:
        return UNDETERMINED, False
    counts = total.to_bytes(_NBYTES, "little")  # one byte per language: decode in C, not a loop
    best_n = max(counts)
    i = counts.index(best_n)
    # at least two function words, a tenth of the text, and a clear margin over the runner-up
    if best_n < 2 or best_n * 10 < len(words) or counts.count(best_n) > 1:
        return UNDETERMINED, False
    return LANGUAGES[i], margin and best_n >= sorted(counts)[-2] + CLEAR_MARGIN


def _by_script(sample: str) -> str | None:
    counts = [(len(rx.findall(sample)), lang) for lang, rx in _SCRIPTS]
    n, lang = max(counts)
    if n == 0:
        return None
    if lang == "zh" and counts[0][0] > 0:
        lang = "ja"
    latin = len(_WORD.findall(sample))  # words, not letters: compare conservatively
    if n < 5 and latin > n:
        return None
    if lang == "ru" and _UKRAINIAN.search(sample):
        return "uk"
    return lang


# --- the model stage --------------------------------------------------------------------------------

#: The model's normalized probability below which a text stays `und` (gibberish, "ok", numbers):
#: chat-length sentences in the corpus score >= 0.54, two-word noise <= 0.4.
MIN_MODEL_PROB = 0.5
# py3langid labels that mean "no language" (zxx: no linguistic content)
_NO_LANGUAGE = frozenset({"zxx", "und"})

_model: Any = None
_model_missing = False


def _load_model() -> Any:
    """py3langid's identifier with normalized probabilities, or None when it is not installed."""
    global _model, _model_missing
    if _model is None and not _model_missing:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            _model_missing = True
            log.warning(
                "py3langid is not installed: short texts stay 'und' (pip install maestro-llmops[data])"
            )
            return None
        _model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _model


def detect_with_model(text: str, words: list[str] | None = None) -> str:
    """`detect`, with py3langid deciding where the function words are thin or close.

    Script-identified text (Cyrillic, Han, kana, …) never reaches the model. The model may name
    languages the fast stage does not know (ca, da, cs, …); its low-confidence answers are `und`.
    """
    lang, clear = _detect(text, words, True)
    if clear:
        return lang
    model = _load_model()
    if model is None:
        return lang
    guess, prob = model.classify(text[:SAMPLE_CHARS])
    if guess in _NO_LANGUAGE or prob < MIN_MODEL_PROB:
        return UNDETERMINED
    return str(guess)

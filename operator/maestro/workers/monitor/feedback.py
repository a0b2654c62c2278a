"""User feedback: `POST /v1/feedback` → metrics and a JSONL sink that can seed a new LLMDataset.

Two files on the feedback volume: `feedback.jsonl` keeps every record (audit, analysis), and
`corrections.jsonl` holds `{"prompt", "completion"}` pairs, the LLMDataset `prompt-completion`
schema, for feedback whose request was logged with its prompt and that carries a correction. That
second file is the improvement loop: point an LLMDataset at it and retrain.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.collector import RecentRequests
from maestro.workers.monitor.metrics import MonitorMetrics

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
#: Roll a sink file over at this size (keeps one file small enough to inspect and ship).
MAX_FILE_BYTES = 256 * 1024 * 1024


class Feedback(BaseModel):
    """One user verdict on one response. At least one of rating, thumbs or correction."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)

    request_id: str = Field(alias="requestId", min_length=1, max_length=256)
    rating: float | None = Field(default=None, ge=1, le=5, description="1 (bad) to 5 (good)")
    thumbs: Literal["up", "down"] | None = None
    correction: str | None = Field(
        default=None, max_length=32 * 1024, description="the answer it should have been"
    )
    comment: str | None = Field(default=None, max_length=4096)
    model: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _has_a_verdict(self) -> Feedback:
        if self.rating is None and self.thumbs is None and not self.correction:
            raise ValueError("give at least one of rating (1-5), thumbs (up|down) or correction")
        return self

    @property
    def score(self) -> float:
        """The verdict as one number in 0..1 (what per-variant means compare): thumbs wins, then the
        rating (1 → 0, 5 → 1); a bare correction means the answer was wrong (0)."""
        if self.thumbs:
            return 1.0 if self.thumbs == "up" else 0.0
        if self.rating is not None:
            return (self.rating - 1) / 4
        return 0.0

    @property
    def sentiment(self) -> str:
        """positive|negative|neutral: thumbs wins, then rating; a bare correction means it was wrong."""
        if self.thumbs:
            return "positive" if self.thumbs == "up" else "negative"
        if self.rating is not None:
            return "positive" if self.rating >= 4 else "negative" if self.rating <= 2 else "neutral"
        return "negative"


class FeedbackError(ValueError):
    """Invalid feedback; the message names the field and is safe to return to the client."""


def parse_feedback(body: bytes) -> Feedback:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise FeedbackError(f"body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise FeedbackError("body must be a JSON object")
    try:
        return Feedback.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise FeedbackError(f"{where}: {first['msg']}") from e


class FeedbackSink:
    """Append-only JSONL files; writes run in a thread so the event loop never waits on disk."""

    def __init__(self, directory: str, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        os.makedirs(directory, exist_ok=True)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """One record as one line of `name` in the directory (rotated past the size limit)."""
        path = os.path.join(self.directory, name)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if os.path.exists(path) and os.path.getsize(path) + len(line) > self.max_file_bytes:
                stem, ext = os.path.splitext(name)
                os.replace(
                    path, os.path.join(self.directory, f"{stem}-{time.strftime('%Y%m%dT%H%M%S')}{ext}")
                )
            with open(path, "a", encoding="utf-8") as fh:
                # replicas share the claim: one whole line per lock, so records never interleave
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def write(self, record: dict[str, Any], correction: dict[str, str] | None) -> None:
        self.append(c.FEEDBACK_FILE, record)
        if correction:
            self.append(c.CORRECTIONS_FILE, correction)


class FeedbackService:
    def __init__(self, metrics: MonitorMetrics, recent: RecentRequests, sink: FeedbackSink | None) -> None:
        self.metrics = metrics
        self.recent = recent
        self.sink = sink

    async def submit(self, fb: Feedback) -> dict[str, Any]:
        """Record one feedback; returns the JSON answer for the client."""
        m = self.metrics
        known = self.recent.get(fb.request_id)
        model = known.model if known else m.model(fb.model)
        m.feedback.labels(model, fb.sentiment).inc()
        if fb.rating is not None:
            m.feedback_rating.labels(model).observe(fb.rating)
        if fb.correction:
            m.feedback_corrections.labels(model).inc()
        if known is not None and known.variant is not None:
            m.variant_feedback_score.labels(m.variant(known.variant)).observe(fb.score)
        stored = False
        if self.sink is not None:
            record: dict[str, Any] = {
                "ts": time.time(),
                "requestId": fb.request_id,
                "model": model,
                "sentiment": fb.sentiment,
                "rating": fb.rating,
                "thumbs": fb.thumbs,
                "correction": fb.correction,
                "comment": fb.comment,
                "prompt": known.prompt if known else None,
                "response": known.response if known else None,
            }
            if known is not None and known.variant is not None:
                record["variant"] = known.variant  # which arm of the experiment the verdict is on
            pair = (
                {"prompt": known.prompt, "completion": fb.correction}
                if known and known.prompt and fb.correction
                else None
            )
            try:
                await asyncio.to_thread(self.sink.write, record, pair)
                stored = True
            except OSError as e:
                m.feedback_sink_errors.inc()
                log.error("feedback sink %s not writable: %s", self.sink.directory, e)
        answer: dict[str, Any] = {
            "status": "accepted",
            "requestId": fb.request_id,
            "known": known is not None,
            "stored": stored,
        }
        if known is not None and known.variant is not None:
            answer["variant"] = known.variant
        return answer

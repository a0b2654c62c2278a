"""Pushing review samples to the console (maestro.workers.console) when MAESTRO_CONSOLE_URL is set.

The same requests review.py writes to `review.jsonl` (guard decisions with action `flag`), and
negative user feedback, become samples for the console's review queue. The request path never waits
for the console: `offer` appends to a bounded in-memory queue (a full queue drops and counts) and a
background task posts batches with the pod's service-account token, which the console checks with a
TokenReview (it accepts samples for that service account's own namespace only). A console outage
costs retried batches, then counted drops; never a slower request.

Prompts travel as the monitor keeps them: the text only when the policy logs prompts
(`audit.logPrompts`: the guard then puts `promptText` in the event), else the keyed digest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

import aiohttp

from maestro.workers.monitor import contract as c

log = logging.getLogger("maestro.monitor.console")

#: Samples held while the console is slow or down; past this, new ones are dropped (and counted).
MAX_QUEUE = 2000
#: Samples per POST (the console accepts up to 500).
BATCH = 100
#: A batch is retried this many times (with backoff) before it is dropped.
ATTEMPTS = 5


class ConsolePusher:
    """A collector hook (`__call__(event)`) plus `negative_feedback`; `run` is the background sender."""

    def __init__(
        self,
        url: str,
        deployment: str,
        token_file: str = c.DEFAULT_CONSOLE_TOKEN_FILE,
        max_queue: int = MAX_QUEUE,
        interval: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/") + c.CONSOLE_INGEST_PATH
        self.deployment = deployment
        self.token_file = token_file
        self.max_queue = max_queue
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()  # hooks may run on the event reader's thread
        self.queued = 0
        self.pushed = 0
        self.duplicates = 0
        self.dropped = 0
        self.failed_batches = 0
        self.last_error: str | None = None

    # -- producers (never block, never raise) ---------------------------------------------------
    def offer(self, sample: dict[str, Any]) -> bool:
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.dropped += 1
                return False
            self._queue.append(sample)
            self.queued += 1
            return True

    def __call__(self, event: dict[str, Any]) -> None:
        """Collector hook: a request the guard flagged becomes a `policy-flag` sample."""
        flags = [d for d in event.get("decisions") or () if isinstance(d, dict) and d.get("action") == "flag"]
        if not flags or not isinstance(event.get("requestId"), str):
            return
        reason = ", ".join(str(d.get("rule") or "flag") for d in flags)
        meta = {
            k: event[k] for k in ("model", "route", "status", "policy", "key") if event.get(k) is not None
        }
        meta["flags"] = flags
        self.offer(
            self._sample(
                "policy-flag",
                event["requestId"],
                reason=reason,
                ts=event.get("ts"),
                variant=event.get("variant"),
                prompt_text=event.get("promptText"),
                prompt_digest=event.get("promptHmacSha256"),
                response=event.get("responseText"),
                meta=meta,
            )
        )

    def negative_feedback(self, feedback: Any, known: Any) -> None:
        """A user's negative verdict (feedback.Feedback) on a request (collector.RecentRequest or None)."""
        if getattr(feedback, "sentiment", None) != "negative":
            return
        parts = [f"thumbs {feedback.thumbs}" if feedback.thumbs else None]
        parts.append(f"rating {feedback.rating:g}" if feedback.rating is not None else None)
        parts.append("correction offered" if feedback.correction else None)
        meta: dict[str, Any] = {
            k: v
            for k, v in {
                "rating": feedback.rating,
                "thumbs": feedback.thumbs,
                "comment": feedback.comment,
                "userCorrection": feedback.correction,
                "model": getattr(known, "model", None) or feedback.model,
            }.items()
            if v is not None
        }
        self.offer(
            self._sample(
                "negative-feedback",
                feedback.request_id,
                reason="user feedback: " + ", ".join(p for p in parts if p),
                ts=time.time(),
                variant=getattr(known, "variant", None),
                # RecentRequest keeps texts only where the policy logs prompts
                prompt_text=getattr(known, "prompt", None),
                response=getattr(known, "response", None),
                meta=meta,
            )
        )

    def _sample(
        self,
        kind: str,
        request_id: str,
        *,
        reason: str,
        ts: Any,
        variant: Any,
        prompt_text: Any = None,
        prompt_digest: Any = None,
        response: Any = None,
        meta: dict[str, Any],
    ) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "deployment": self.deployment,
            "kind": kind,
            "requestId": request_id,
            "reason": reason[:4096],
            "metadata": meta,
        }
        if isinstance(ts, int | float):
            sample["createdAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        if isinstance(variant, str) and variant:
            sample["variant"] = variant
        if isinstance(prompt_text, str) and prompt_text:
            sample["promptText"] = prompt_text[: 64 * 1024]
        if isinstance(prompt_digest, str) and prompt_digest:
            sample["promptDigest"] = prompt_digest[:128]
        if isinstance(response, str) and response:
            sample["response"] = response[: 64 * 1024]
        return sample

    # -- the sender -----------------------------------------------------------------------------
    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            n = min(BATCH, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _token(self) -> str:
        with open(self.token_file, encoding="utf-8") as fh:  # re-read: projected tokens rotate
            return fh.read().strip()

    async def _post(self, session: aiohttp.ClientSession, batch: list[dict[str, Any]]) -> bool:
        """True when the console took the batch (or refused it for good: retrying cannot help)."""
        try:
            token = await asyncio.to_thread(self._token)
        except OSError as e:
            self.last_error = f"cannot read the service-account token {self.token_file}: {e.strerror}"
            return False
        try:
            async with session.post(
                self.url,
                json={"samples": batch},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            ) as resp:
                if resp.status == 202:
                    body = await resp.json()
                    self.pushed += int(body.get("accepted", 0))
                    self.duplicates += int(body.get("duplicates", 0))
                    self.last_error = None
                    return True
                text = (await resp.text())[:300]
                self.last_error = f"console answered HTTP {resp.status}: {text}"
                if 400 <= resp.status < 500 and resp.status not in (401, 408, 429):
                    log.warning("console refused %d samples: %s", len(batch), self.last_error)
                    self.dropped += len(batch)
                    return True
                return False
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            self.last_error = f"cannot reach the console at {self.url}: {e!r}"
            return False

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Send queued samples every `interval` seconds until cancelled."""
        while True:
            batch = self._take()
            if not batch:
                await asyncio.sleep(self.interval)
                continue
            for attempt in range(ATTEMPTS):
                if await self._post(session, batch):
                    break
                self.failed_batches += 1
                await asyncio.sleep(min(30.0, self.interval * 2**attempt))
            else:
                log.warning(
                    "console push: dropped %d samples after %d tries: %s",
                    len(batch),
                    ATTEMPTS,
                    self.last_error,
                )
                self.dropped += len(batch)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._queue)
        return {
            "url": self.url,
            "pending": pending,
            "pushed": self.pushed,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "failedBatches": self.failed_batches,
            "lastError": self.last_error,
        }

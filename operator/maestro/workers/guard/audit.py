"""Per-request records: the audit log (JSON lines) and the monitor event (one datagram).

Both carry the same object, serialized once. Unless the policy sets `audit.logPrompts`, prompts
appear only as a keyed digest (`promptHmacSha256`, HMAC-SHA256; see PromptDigest) and answers not at
all: a plain SHA-256 of a short or guessable prompt can be reversed by hashing candidates. The audit
writer batches lines and flushes every 0.5 s (or at 64 KiB) so a request costs an append, not a
syscall; the event sender is the `maestro.workers.events` channel (non-blocking, lossy) with a faster
codec and a 1 s back-off while no monitor listens.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maestro.workers import events
from maestro.workers.guard import codec, contract

log = logging.getLogger("maestro.guard")

_FLUSH_BYTES = 64 * 1024
_FLUSH_S = 0.5


#: Keys shorter than this are accepted but logged: they are easier to guess than the prompts they hide.
MIN_KEY_BYTES = 16


class PromptDigest:
    """HMAC-SHA256 of prompt text under a per-deployment key, for audit lines and monitor events.

    Digests let a reader match repeated prompts without storing them, and, unlike a plain hash, cannot
    be confirmed by hashing guesses without the key. With a configured key (see load_prompt_digest)
    digests are comparable across replicas and restarts of one deployment. Without one a random key
    is drawn at start: digests are then only comparable within one guard process. `key_id` (a digest
    of the key, not the key) is written next to each digest so a reader knows which ones compare.
    """

    def __init__(self, key: bytes | None = None, source: str = "random") -> None:
        if key is None:
            key, source = secrets.token_bytes(32), "random"
        if not key:
            raise ValueError("audit digest key is empty")
        self._key = key
        self.source = source
        self.key_id = hmac.new(key, b"maestro audit key id", hashlib.sha256).hexdigest()[:16]

    def __call__(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def load_prompt_digest(env: Mapping[str, str]) -> PromptDigest:
    """The digest key from $MAESTRO_AUDIT_KEY, else the file at $MAESTRO_AUDIT_KEY_FILE (default: the
    mounted `<deployment>-audit-key` Secret), else a random key for this process (logged)."""
    raw = (env.get(contract.AUDIT_KEY_ENV) or "").strip()
    if raw:
        digest = PromptDigest(raw.encode(), f"${contract.AUDIT_KEY_ENV}")
    else:
        path = env.get(contract.AUDIT_KEY_FILE_ENV) or contract.DEFAULT_AUDIT_KEY_FILE
        try:
            data = Path(path).read_bytes().strip()
        except OSError:
            data = b""
        digest = PromptDigest(data, path) if data else PromptDigest()
    if digest.source == "random":
        log.info(
            "audit prompt digests use a random per-process key (no $%s or key file): they compare only "
            "within this process",
            contract.AUDIT_KEY_ENV,
        )
    elif len(digest._key) < MIN_KEY_BYTES:
        log.warning("the audit digest key from %s is shorter than %d bytes", digest.source, MIN_KEY_BYTES)
    return digest


class AuditLog:
    def __init__(self, path: str | None = None) -> None:
        self.path = path if path and path != "-" else None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640) if self.path else None
        self._buf: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self.written = 0

    def write(self, line: bytes) -> None:
        self._buf.append(line)
        self._size += len(line) + 1
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(_FLUSH_S, self.flush)
            except RuntimeError:  # no loop (tests, shutdown): write now
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf:
            return
        data = b"\n".join(self._buf) + b"\n"
        self.written += len(self._buf)
        self._buf.clear()
        self._size = 0
        if self._fd is None:
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EventSender:
    """Same wire contract as `events.EventEmitter` (JSON datagram ≤ MAX_EVENT_BYTES), pre-encoded bytes."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or events.socket_path()
        self.sent = 0
        self.dropped = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._quiet_until = 0.0

    def send(self, data: bytes) -> bool:
        if len(data) > events.MAX_EVENT_BYTES:
            self.dropped += 1
            return False
        now = time.monotonic()
        if now < self._quiet_until:
            self.dropped += 1
            return False
        try:
            self._sock.sendto(data, self.path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):  # no monitor: stop trying for a second
                self._quiet_until = now + 1.0
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


def encode(record: dict[str, Any]) -> bytes:
    return codec.dumps(record)

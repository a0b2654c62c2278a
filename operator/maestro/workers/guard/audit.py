"""Per-request records: the audit log (JSON lines) and the monitor event (one datagram).

Both carry the same object, serialized once. Prompts and answers appear only as a SHA-256 unless
the policy sets `audit.logPrompts`. The audit writer batches lines and flushes every 0.5 s (or at
64 KiB) so a request costs an append, not a syscall; the event sender is the
`maestro.workers.events` channel (non-blocking, lossy) with a faster codec and a 1 s back-off while
no monitor listens.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import time
from typing import Any

from maestro.workers import events
from maestro.workers.guard import codec

_FLUSH_BYTES = 64 * 1024
_FLUSH_S = 0.5


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

"""The guard → monitor event channel: one JSON object per Unix datagram, lossy by design.

The guard is on every request's path and must never wait for the monitor. A non-blocking
datagram socket gives exactly that: `emit` either hands the event to the kernel at once or
drops it (monitor absent, its buffer full, event too big) and counts the drop. The monitor
binds the socket and reads at its own pace; the kernel's socket buffer is the bounded queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

#: Env var naming the socket path; both sidecars get it from the pod spec (shared emptyDir).
SOCKET_ENV = "MAESTRO_EVENTS_SOCKET"
DEFAULT_SOCKET = "/var/run/maestro/events.sock"
#: Datagrams above this are dropped rather than truncated (a half event is worse than none).
MAX_EVENT_BYTES = 32 * 1024


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)


class EventEmitter:
    """Fire-and-forget sender. Never raises, never blocks; `dropped` counts what was lost."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()
        self.sent = 0
        self.dropped = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def emit(self, event: dict[str, Any]) -> bool:
        data = json.dumps(event, separators=(",", ":"), default=str).encode()
        if len(data) > MAX_EVENT_BYTES:
            self.dropped += 1
            return False
        try:
            self._sock.sendto(data, self.path)
        except OSError:  # no receiver, buffer full (EAGAIN), path missing: all mean "drop"
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[dict[str, Any]], None]) -> None:
        self.handler = handler
        self.malformed = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            self.malformed += 1
            return
        if isinstance(event, dict):
            self.handler(event)
        else:
            self.malformed += 1


async def serve_events(
    handler: Callable[[dict[str, Any]], None], path: str | None = None, rcvbuf: int = 4 * 1024 * 1024
) -> tuple[asyncio.DatagramTransport, _Protocol]:
    """Bind the socket (replacing a stale one) and call `handler` for every event received."""
    path = path or socket_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(path)
    os.chmod(path, 0o666)  # guard and monitor may run as different non-root UIDs
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Protocol(handler), sock=sock)
    return transport, protocol

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from maestro.workers.events import MAX_EVENT_BYTES, EventEmitter
from maestro.workers.monitor.receiver import EventReceiver

pytestmark = pytest.mark.unit


async def test_reads_events_and_counts_malformed(sock_dir) -> None:
    path = os.path.join(sock_dir, "ev.sock")
    got: list[dict] = []
    bad: list[int] = []
    batches: list[int] = []
    rx = EventReceiver(
        path, got.append, on_malformed=lambda: bad.append(1), after_batch=lambda: batches.append(1)
    )
    rx.start()
    assert oct(os.stat(path).st_mode & 0o777) == "0o666"
    tx = EventEmitter(path)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for i in range(8):  # below the kernel queue (net.unix.max_dgram_qlen may be 10)
            assert tx.emit({"requestId": f"r{i}"})
        raw.sendto(b"not json", path)
        raw.sendto(b"[1, 2]", path)
        for _ in range(100):
            if len(got) + len(bad) == 10:
                break
            await asyncio.sleep(0.01)
    finally:
        tx.close()
        raw.close()
        await rx.close()
    assert [e["requestId"] for e in got] == [f"r{i}" for i in range(8)]
    assert len(bad) == 2 and rx.malformed == 2 and rx.received == 10
    assert len(batches) < 10  # handled in batches, not one loop turn per datagram
    assert not os.path.exists(path)  # closed: the guard sees "no monitor" and backs off


async def test_replaces_a_stale_socket_file(sock_dir) -> None:
    path = os.path.join(sock_dir, "ev.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()  # the file stays behind, as after a crash
    got: list[dict] = []
    rx = EventReceiver(path, got.append)
    rx.start()
    tx = EventEmitter(path)
    try:
        assert tx.emit({"x": 1})
        assert not tx.emit({"big": "y" * MAX_EVENT_BYTES})  # the sender refuses oversize events
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
    finally:
        tx.close()
        await rx.close()
    assert got == [{"x": 1}]

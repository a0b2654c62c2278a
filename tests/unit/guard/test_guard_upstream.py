"""The guard's HTTP/1.1 upstream client against scripted raw servers: framing, reuse, failures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from maestro.workers.guard.upstream import UpstreamError, UpstreamPool, UpstreamTimeout

pytestmark = pytest.mark.unit

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


async def serve(script: Script) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):  # one byte per write: every parser state sees a split
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)


async def test_chunked_and_length_bodies_split_anywhere_and_connection_reused() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in (b"hello world", None):
            seen.append(await read_request(reader))
            if body is not None:
                await trickle(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + body)
            else:
                await trickle(
                    writer,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-"
                    b"stream\r\n\r\n5;ext=1\r\ndata:\r\n8\r\n x\n\nyz\n\n\r\n0\r\nX-T: 1\r\n\r\n",
                )
        writer.close()

    server, url = await serve(script)
    pool = UpstreamPool(url)
    r = await pool.request("POST", "/v1/x", b'{"a":1}', {"Content-Type": "application/json"})
    assert r.status == 200 and await r.read() == b"hello world"
    r.release()
    r = await pool.request("POST", "/v1/y", b"{}", {})
    assert r.content_type == "text/event-stream"
    assert b"".join([c async for c in r.iter_chunks()]) == b"data: x\n\nyz\n\n"
    r.release()
    assert pool.opened == 1  # keep-alive
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:") and seen[0].endswith(b'{"a":1}')
    assert b"Content-Length: 7\r\n" in seen[0]
    pool.close()
    server.close()


async def test_stale_keepalive_connection_is_retried_once() -> None:
    count = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # the server drops every connection after one answer (no Connection: close)

    server, url = await serve(script)
    pool = UpstreamPool(url)
    for _ in range(3):
        r = await pool.request("GET", "/health")
        assert await r.read() == b"ok"
        r.release()
        await asyncio.sleep(0.05)
    assert count == 3
    pool.close()
    server.close()


async def test_read_timeout_connect_refused_and_garbage() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    server, url = await serve(silent)
    pool = UpstreamPool(url)
    t = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await pool.request("POST", "/v1/x", b"{}", read_timeout=0.2)
    assert 0.15 < time.perf_counter() - t < 2
    server.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(UpstreamError, match="cannot connect"):
        await UpstreamPool(f"http://127.0.0.1:{closed_port}").request("GET", "/health")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server, url = await serve(garbage)
    with pytest.raises(UpstreamError, match="malformed status line"):
        await UpstreamPool(url).request("GET", "/health")
    server.close()


async def test_midstream_drop_and_body_until_eof() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server, url = await serve(drop)
    r = await UpstreamPool(url).request("GET", "/x")
    with pytest.raises(UpstreamError, match="closed the connection"):
        await r.read()
    server.close()

    async def eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server, url = await serve(eof)
    pool = UpstreamPool(url)
    r = await pool.request("GET", "/x")
    assert await r.read() == b"all of it"
    r.release()
    assert not pool._idle  # not reusable
    server.close()


def test_only_plain_http_upstreams() -> None:
    with pytest.raises(ValueError, match="plain http"):
        UpstreamPool("https://example.com")

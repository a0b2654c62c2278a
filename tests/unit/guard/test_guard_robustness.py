"""Hostile and broken traffic on both sides of the guard: the right status, no crash, flat memory."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sys
import time
from pathlib import Path

import aiohttp
import openai
import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc

pytestmark = pytest.mark.unit

AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}
CHAT = "/v1/chat/completions"


async def post(
    stack: Stack, body: bytes, headers: dict[str, str] | None = None, path: str = CHAT
) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.url + path, data=body, headers={**AUTH, **(headers or {})}) as r,
    ):
        return r.status, await r.json(content_type=None)


def raw_http(stack: Stack, data: bytes, read: bool = True, timeout: float = 10) -> bytes:
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while b"\r\n\r\n" not in out or len(out) < out.find(b"\r\n\r\n") + 10:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"\xff\xfe\x00garbage", "invalid_json", None),  # invalid UTF-8
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid_json", None),
        (b"[1, 2, 3]", "invalid_json", None),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json", None),  # nesting bomb
        (b'{"messages": [{"role": "user", "content": "x"}]}', "invalid_request", "model"),
        (b'{"model": 7, "messages": []}', "invalid_request", "model"),
        (b'{"model": "tiny", "messages": "hello"}', "invalid_request", "messages"),
        (b'{"model": "tiny", "messages": [42]}', "invalid_request", "messages[0]"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": 5}]}',
            "invalid_request",
            "messages[0].content",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "invalid_request",
            "stream",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
            "invalid_request",
            "max_tokens",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": true, '
            b'"stream_options": 3}',
            "invalid_request",
            "stream_options",
        ),
    ],
)
async def test_malformed_bodies_are_400_with_the_param(
    stack: Stack, body: bytes, code: str, param: str | None
) -> None:
    stack.start(policy_doc(open_request(pii={"input": "redact", "output": "allow"})))
    status, err = await post(stack, body, {"Content-Type": "application/json"})
    assert status == 400 and err["error"]["code"] == code and err["error"]["param"] == param
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["message"]
    assert stack.upstream.requests == []


async def test_wrong_shapes_on_other_routes(stack: Stack) -> None:
    stack.start(policy_doc(open_request()))
    assert (await post(stack, b'{"model": "tiny", "prompt": {"a": 1}}', path="/v1/completions"))[0] == 400
    assert (await post(stack, b'{"model": "tiny", "input": [true]}', path="/v1/embeddings"))[0] == 400
    assert (await post(stack, b'{"model": "tiny", "input": [[1, 2], [3]]}', path="/v1/embeddings"))[0] == 200
    async with aiohttp.ClientSession() as s, s.get(stack.url + CHAT, headers=AUTH) as r:
        assert r.status in (404, 405)


async def test_ten_megabyte_bodies_are_413_without_reading_them(stack: Stack) -> None:
    stack.start(policy_doc(open_request()))
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * 10_000_000 + b'"}]}'
    t = time.perf_counter()
    status, err = await post(stack, big)
    assert status == 413 and err["error"]["code"] == "request_too_large"

    async def chunked() -> object:  # no Content-Length: counted while read, cut at the limit
        for _ in range(40):
            yield b"x" * 262_144

    async with aiohttp.ClientSession() as s, s.post(stack.url + CHAT, data=chunked(), headers=AUTH) as r:
        assert r.status == 413
    assert time.perf_counter() - t < 10
    assert stack.upstream.requests == []
    head = raw_http(
        stack,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n"
        b"Authorization: Bearer " + KEYS["alice"].encode() + b"\r\n\r\n{",
    )
    assert head.startswith(b"HTTP/1.1 413")  # answered before the body was sent


async def test_slow_upload_times_out_with_408(stack: Stack) -> None:
    stack.start(policy_doc(open_request()), body_timeout=0.3)
    port = int(stack.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model"')
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    assert stack.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])


async def test_client_disconnect_mid_stream_frees_the_upstream(stack: Stack) -> None:
    stack.upstream.chunks = [f"tok{i} " for i in range(200)]
    stack.upstream.chunk_delay = 0.01
    stack.start(policy_doc(open_request()))
    body = json.dumps(
        {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    port = int(stack.url.rsplit(":", 1)[1])
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        got = b""
        while b"data:" not in got:
            got += await asyncio.wait_for(reader.read(4096), 5)
        writer.transport.abort()  # vanish mid-stream
    seen: list[dict] = []
    deadline = time.time() + 5
    while time.time() < deadline and len([e for e in seen if e.get("status") == 499]) < 3:
        await asyncio.sleep(0.05)
        seen += stack.events()
    statuses = [line["status"] for line in stack.audit()]
    assert statuses.count(499) == 3
    assert all(line.get("error") == "client_disconnected" for line in stack.audit())
    r = await stack.aclient().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}]
    )
    assert r.choices  # and the guard is fine


async def test_slow_reader_does_not_block_others(stack: Stack) -> None:
    stack.upstream.chunks = ["y" * 4096] * 2000  # 8 MB answer that nobody reads
    stack.start(policy_doc(open_request()))
    body = json.dumps(
        {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    port = int(stack.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    await reader.read(100)
    t = time.perf_counter()
    r = await stack.aclient().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}]
    )
    assert r.choices and time.perf_counter() - t < 2
    writer.transport.abort()


async def test_upstream_down_slow_and_broken(stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    stack.start(policy_doc(open_request(timeouts={"connectSeconds": 1, "readSeconds": 0.3})), upstream=dead)
    client = stack.aclient()
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502 and exc.value.code == "upstream_unavailable"
    async with aiohttp.ClientSession() as s, s.get(stack.url + "/readyz") as r:
        assert r.status == 503
    async with aiohttp.ClientSession() as s, s.get(stack.url + "/healthz") as r:
        assert r.status == 200  # alive, just not ready


async def test_upstream_slow_hang_drop_and_error_status(stack: Stack) -> None:
    stack.start(policy_doc(open_request(timeouts={"connectSeconds": 1, "readSeconds": 0.3})))
    client = stack.aclient()
    msgs = [{"role": "user", "content": "x"}]
    stack.upstream.delay = 1.0
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(model="tiny", messages=msgs)
    assert exc.value.status_code == 504 and exc.value.code == "upstream_timeout"
    stack.upstream.delay = 0
    for fault, code in (("hang", "upstream_timeout"), ("drop", "upstream_error")):
        stack.upstream.stream_fault = fault
        with pytest.raises(openai.APIError, match=r"mid-stream|mid-answer"):
            stream = await client.chat.completions.create(model="tiny", messages=msgs, stream=True)
            async for _ in stream:
                pass
        assert stack.audit()[-1]["error"] == code
    stack.upstream.stream_fault = None
    stack.upstream.status = 500
    with pytest.raises(openai.InternalServerError):  # the upstream's own error is passed through
        await client.chat.completions.create(model="tiny", messages=msgs)
    stack.upstream.status = 200
    assert (await client.chat.completions.create(model="tiny", messages=msgs)).choices


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _raw_worker(port: int, requests: list[bytes], statuses: list[int]) -> None:
    """Keep-alive HTTP/1.1 over a raw stream: a cheap client, so the 10k requests take seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for req in requests:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        statuses.append(int(head[9:12]))
        lower = head.lower()
        if b"content-length:" in lower:
            await reader.readexactly(int(lower.split(b"content-length:")[1].split(b"\r\n")[0]))
        else:
            await reader.readuntil(b"0\r\n\r\n")
        if b"connection: close" in lower:
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_memory_flat_over_10k_hostile_requests(stack: Stack) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    from _upstream import serve  # the benchmarks' raw upstream: the guard, not the fake, is under test

    fast = stack.call(serve("127.0.0.1", 0))
    stack.start(
        policy_doc(
            open_request(
                **{"auth": {"required": True}},
                maxRequestBytes=4096,
                pii={"input": "redact", "output": "redact"},
            )
        ),
        upstream=f"http://127.0.0.1:{fast.sockets[0].getsockname()[1]}",
    )
    port = int(stack.url.rsplit(":", 1)[1])
    good = json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": "mail a@b.example"}]}
    ).encode()
    stream = json.dumps(
        {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    key = KEYS["alice"].encode()

    def req(body: bytes, key: bytes = key, extra: bytes = b"") -> bytes:
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + key
            + b"\r\n"
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    kinds = [
        req(good),
        req(stream),
        req(b"{broken"),
        req(b"\xff\xfe"),
        req(b'{"model": 1}'),
        req(good, key=b"nope"),
        req(b"x" * 5000),
        req(good, extra=b"x-request-id: " + b"r" * 500 + b"\r\n"),
    ]

    async def run(n: int) -> list[int]:
        statuses: list[int] = []
        per = n // 8
        await asyncio.gather(
            *(
                _raw_worker(port, [kinds[(w + i) % len(kinds)] for i in range(per)], statuses)
                for w in range(8)
            )
        )
        return statuses

    await run(800)  # warm-up: caches, pools, allocator arenas
    gc.collect()
    before = _rss_kib()
    statuses = await run(10_000)
    gc.collect()
    after = _rss_kib()
    assert len(statuses) == 10_000 and set(statuses) == {200, 400, 401, 413}
    assert after - before < 16 * 1024, f"RSS grew by {(after - before) / 1024:.1f} MiB over 10k requests"
    guard = stack.guard
    assert guard is not None and len(guard._pool._idle) <= 32
    assert guard.telemetry.series_count < 100  # no per-request label growth
    stack.run(fast.close)

"""The guard's minimal Redis client (`guard/resp.py`): URLs, the RESP2 parser, pipelining, failures.

Against a real `redis-server` on loopback (and its unix socket) where a server is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis_helpers import RedisServer

from maestro.workers.guard import resp

pytestmark = pytest.mark.unit


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer(password="pw-123").start()
    try:
        yield srv
    finally:
        srv.close()


def test_urls_in_redis_py_forms() -> None:
    ep = resp.parse_url("redis://user:p%40ss@redis.infra.svc:6380/2")
    assert (ep.host, ep.port, ep.db, ep.username, ep.password, ep.tls) == (
        "redis.infra.svc",
        6380,
        2,
        "user",
        "p@ss",
        False,
    )
    assert resp.parse_url("rediss://:secret@r").tls and resp.parse_url("rediss://:secret@r").port == 6379
    unix = resp.parse_url("unix:///run/redis.sock?db=3")
    assert (unix.unix_path, unix.db) == ("/run/redis.sock", 3)
    for bad, why in (
        ("http://r:6379", "redis://"),
        ("redis://r:6379/zero", "numbers"),
        ("redis:///0", "no host"),
        ("unix://", "socket path"),
    ):
        with pytest.raises(ValueError, match=why):
            resp.parse_url(bad)


def test_parser_waits_for_whole_replies_and_keeps_their_order() -> None:
    proto = resp._Protocol()
    loop = asyncio.new_event_loop()
    try:
        futs = [loop.create_future() for _ in range(5)]
        proto.waiters.extend(futs)
        wire = b"*2\r\n:1\r\n$9\r\n59.999804\r\n+OK\r\n-NOSCRIPT No matching script\r\n$-1\r\n:42\r\n"
        for i in range(0, len(wire), 3):  # arrives in pieces, split anywhere
            proto.data_received(wire[i : i + 3])
        assert futs[0].result() == [1, b"59.999804"] and futs[1].result() == b"OK"
        assert isinstance(futs[2].exception(), resp.NoScriptError)
        assert futs[3].result() is None and futs[4].result() == 42
        assert proto.buf == b"" and not proto.waiters
    finally:
        loop.close()
    assert (
        resp.encode(("EVALSHA", "ab", 2, 1.5))
        == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\n1.5\r\n"
    )


async def test_pipelined_calls_auth_select_and_errors(redis_server: RedisServer) -> None:
    url = f"redis://:pw-123@127.0.0.1:{redis_server.port}/3"
    client = resp.Client(url)
    try:
        replies = await asyncio.gather(*(client.call("INCR", "n") for _ in range(200)))
        assert sorted(replies) == list(range(1, 201))  # one connection, every reply to its caller
        assert await client.call("GET", "n") == b"200"
        with pytest.raises(resp.ReplyError, match=r"WRONGTYPE|wrong kind"):
            await client.call("HGET", "n", "x")
        assert await client.call("PING") == b"PONG"  # an error reply leaves the connection usable
    finally:
        client.close()
    other_db = resp.Client(f"redis://127.0.0.1:{redis_server.port}/0", password="pw-123")
    try:
        assert await other_db.call("GET", "n") is None  # SELECT 3 happened above, not here
    finally:
        other_db.close()
    unauthenticated = resp.Client(f"redis://127.0.0.1:{redis_server.port}/0")
    with pytest.raises(resp.ReplyError, match="NOAUTH"):
        await unauthenticated.call("GET", "n")
    unauthenticated.close()
    wrong = resp.Client(f"redis://:nope@127.0.0.1:{redis_server.port}/0")
    with pytest.raises(resp.ReplyError, match=r"WRONGPASS|invalid"):
        await wrong.call("PING")
    wrong.close()


async def test_unix_socket(redis_server: RedisServer) -> None:
    client = resp.Client(f"unix://{redis_server.unix_path}?db=1", password="pw-123")
    try:
        assert await client.call("SET", "k", "v") == b"OK" and await client.call("GET", "k") == b"v"
    finally:
        client.close()


async def test_a_call_given_up_keeps_its_place_and_a_restart_is_one_lost_call(
    redis_server: RedisServer,
) -> None:
    client = resp.Client(redis_server.url, password="pw-123")
    try:
        slow = asyncio.ensure_future(client.call("BLPOP", "nothing", 1))  # the server holds it 1 s
        fast = asyncio.ensure_future(client.call("PING"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await asyncio.shield(fast)  # queued behind BLPOP on the same connection
        slow.cancel()  # its reply (nil, after 1 s) is dropped in its turn; PING's still arrives
        assert await asyncio.wait_for(fast, 3) == b"PONG"
        assert await client.call("ECHO", "in order") == b"in order"
        redis_server.stop()
        with pytest.raises(resp.ConnectionLost):
            await client.call("PING")
        redis_server.start()
        assert await client.call("PING") == b"PONG"  # dialled again
    finally:
        client.close()


async def test_refused_and_silent_servers() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = resp.Client(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(resp.ConnectionLost, match="cannot connect"):
        await refused.call("PING")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    client = resp.Client(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.call("PING")
        client.reset()
    finally:
        client.close()
        silent.close()

"""A minimal Redis client for the guard's hot path: RESP2 over one pipelined connection (stdlib only).

Shared rate limits put one or two script calls on every limited request. A general client (redis-py's
asyncio one) spends ~100 µs of CPU per call on connection-pool bookkeeping and per-command parsing
and opens one connection per concurrent call, which halved the guard's throughput in `bench/guard.py
--redis`. Here every call goes out on the same connection as soon as it is made and replies are
matched in order (Redis answers a connection's commands in order), so concurrent requests share
round trips and a call costs a few µs of Python plus its share of one write.

It knows what the guard sends (commands with bulk-string arguments) and what Redis answers in RESP2
(simple strings, errors, integers, bulk strings, arrays). The URL forms are redis-py's:
`redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS, verified against the system CAs),
`unix:///path/to.sock[?db=N]`. A call the caller abandons (its timeout) keeps its place in the reply
order, so the connection stays usable; `reset()` drops the connection, and the next call dials again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit


class RedisError(Exception):
    """Anything that went wrong talking to Redis."""


class ReplyError(RedisError):
    """An error reply (`-ERR …`, `-NOAUTH …`): the server answered, but with an error."""


class NoScriptError(ReplyError):
    """EVALSHA of a script the server does not hold (restarted, flushed, or a new replica)."""


class ConnectionLost(RedisError):
    """The connection could not be made, or it broke before the reply came."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    unix_path: str | None
    tls: bool
    db: int
    username: str | None
    password: str | None


def parse_url(url: str) -> Endpoint:
    """The parts of a redis://, rediss:// or unix:// URL. Raises ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {parts.scheme or 'no'} scheme")
    query = parse_qs(parts.query)
    db_text = (query.get("db") or [""])[0]
    if parts.scheme != "unix" and parts.path.strip("/"):
        db_text = parts.path.strip("/")
    try:
        db = int(db_text) if db_text else 0
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"the database and port must be numbers: {parts.path!r}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket path (unix:///run/redis/redis.sock)")
    elif not parts.hostname:
        raise ValueError("the URL names no host (redis://host:6379/0)")
    return Endpoint(
        host=parts.hostname or "",
        port=port,
        unix_path=parts.path if parts.scheme == "unix" else None,
        tls=parts.scheme == "rediss",
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def encode(args: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings (numbers as their decimal text)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_INCOMPLETE = -1


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply from `buf[pos:]` and the position after it (`_INCOMPLETE` until it has all arrived)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None, _INCOMPLETE
    kind, line = buf[pos], buf[pos + 1 : end]
    if kind == 0x3A:  # ':' integer
        return int(line), end + 2
    if kind == 0x24:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None, _INCOMPLETE
        return buf[end + 2 : stop], stop + 2
    if kind == 0x2A:  # '*' array
        count = int(line)
        if count < 0:
            return None, end + 2
        items, at = [], end + 2
        for _ in range(count):
            item, at = _parse(buf, at)
            if at == _INCOMPLETE:
                return None, _INCOMPLETE
            items.append(item)
        return items, at
    if kind == 0x2B:  # '+' simple string
        return line, end + 2
    if kind == 0x2D:  # '-' error
        text = line.decode(errors="replace")
        return (NoScriptError if text.startswith("NOSCRIPT") else ReplyError)(text), end + 2
    raise ValueError(f"not a RESP2 reply (type byte {kind!r})")


class _Protocol(asyncio.Protocol):
    """One connection: writes go out at once, replies resolve the waiting futures in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.buf = b""
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.transport.write(encode(args))
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        try:
            while pos < len(buf):
                value, after = _parse(buf, pos)
                if after == _INCOMPLETE:
                    break
                pos = after
                fut = self.waiters.popleft()
                if fut.done():  # its caller gave up (timeout): the reply is dropped in its turn
                    continue
                if isinstance(value, ReplyError):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
        except (ValueError, IndexError):  # garbage, or a reply nobody asked for: the stream is lost
            assert self.transport is not None
            self.transport.abort()
            return
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        err = ConnectionLost(f"connection lost ({exc})" if exc else "connection closed by the server")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(err)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a dial's failure as seen: every caller that awaited it may have timed out already."""
    if not fut.cancelled():
        fut.exception()


class Client:
    """Calls on one lazily dialled connection; AUTH and SELECT are sent when it opens.

    The caller bounds each call (dialling included) with `asyncio.timeout`; the dial itself gives up
    after `connect_timeout_s`, so a black-holed address does not leave a dial pending for minutes.
    """

    def __init__(self, url: str, *, password: str | None = None, connect_timeout_s: float = 1.0) -> None:
        self.endpoint = parse_url(url)
        self.connect_timeout_s = connect_timeout_s
        self._password = password or self.endpoint.password
        self._proto: _Protocol | None = None
        self._dialling: asyncio.Future[_Protocol] | None = None

    async def call(self, *args: Any) -> Any:
        """Send one command and wait for its reply (a ReplyError is raised, not returned)."""
        proto = self._proto
        if proto is None or proto.lost:
            proto = await self._connection()
        return await proto.send(args)

    async def _connection(self) -> _Protocol:
        dial = self._dialling
        if dial is None:  # one dial, however many calls wait for it (and it outlives their timeouts)
            dial = self._dialling = asyncio.ensure_future(self._dial())
            dial.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(dial)
        finally:
            if dial.done() and self._dialling is dial:
                self._dialling = None

    async def _dial(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if ep.unix_path is not None:
                    _, proto = await loop.create_unix_connection(_Protocol, ep.unix_path)
                elif ep.tls:
                    _, proto = await loop.create_connection(
                        _Protocol, ep.host, ep.port, ssl=ssl.create_default_context(), server_hostname=ep.host
                    )
                else:
                    _, proto = await loop.create_connection(_Protocol, ep.host, ep.port)
        except TimeoutError:
            raise ConnectionLost(f"cannot connect within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect: {exc.strerror or exc}") from None
        setup: list[asyncio.Future[Any]] = []
        if self._password:
            auth = (ep.username, self._password) if ep.username else (self._password,)
            setup.append(proto.send(("AUTH", *auth)))
        if ep.db:
            setup.append(proto.send(("SELECT", ep.db)))
        try:
            for fut in setup:
                await fut
        except RedisError:
            assert proto.transport is not None
            proto.transport.close()
            raise
        self._proto = proto
        return proto

    def reset(self) -> None:
        """Drop the connection (after a timeout: the server may be wedged); the next call dials anew."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    def close(self) -> None:
        self.reset()
        if self._dialling is not None:
            self._dialling.cancel()
            self._dialling = None

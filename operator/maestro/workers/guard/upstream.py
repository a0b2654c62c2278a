"""A minimal pooled HTTP/1.1 client for the one upstream the guard talks to (vLLM on localhost).

Why not aiohttp's client: per request it builds a ClientRequest, a ClientResponse, header multidicts,
timer contexts and a URL object, which costs more than everything the policy does. The guard needs
far less: one plain-HTTP host, keep-alive, Content-Length or chunked responses, streaming with
backpressure, and two timeouts. This module is that, on `asyncio.Protocol`, in a few µs per request.

Timeouts: `connect` bounds opening a connection; `read` bounds every wait for the upstream's next
bytes (as aiohttp's `sock_read`), enforced by one timer per request that re-arms itself lazily.
A reused keep-alive connection that the server closed just before our request is retried once on a
fresh connection, and only when not a single response byte had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

_PAUSE_BYTES = 1 << 20  # stop reading the upstream while this much is buffered (slow client)
_RESUME_BYTES = 1 << 18

# connection states
_HEAD, _LENGTH, _CHUNKED, _UNTIL_EOF, _DONE = range(5)


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection / the protocol."""


class UpstreamTimeout(TimeoutError):
    """The upstream did not connect, or stopped sending, within the configured timeout."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._reset(0.0)

    def _reset(self, read_timeout: float) -> None:
        self.state = _HEAD
        self.buf = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.remaining = 0  # _LENGTH: body bytes left; _CHUNKED: bytes left in the current chunk
        self.chunk_state = 0  # 0: expect size line, 1: in data, 2: expect CRLF after data, 3: trailer
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.got_bytes = False
        self.read_timeout = read_timeout
        self.last = self.loop.time()

    # -- request side ---------------------------------------------------------------------------

    def start(self, data: bytes, read_timeout: float) -> None:
        self._reset(read_timeout)
        assert self.transport is not None
        try:
            self.transport.write(data)
        except (RuntimeError, OSError) as exc:  # closed under us: retried like a lost connection
            self._fail(UpstreamError(f"cannot write to the upstream: {exc}"))
            return
        self.timer = self.loop.call_at(self.last + read_timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        self.timer = None
        if self.state == _DONE or self.error is not None:
            return
        due = self.last + self.read_timeout
        now = self.loop.time()
        if now < due:
            self.timer = self.loop.call_at(due, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"no data from the upstream for {self.read_timeout:g} s"))
        if self.transport is not None:
            self.transport.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and self.state != _DONE:
            self.error = exc
        self._stop_timer()
        self._wake()

    def _finish(self) -> None:
        self.state = _DONE
        self._stop_timer()
        self._wake()

    async def wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    # -- protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _UNTIL_EOF:
            self._finish()
        elif self.state != _DONE:
            self._fail(UpstreamError(f"the upstream closed the connection{f': {exc}' if exc else ''}"))

    def eof_received(self) -> bool:
        return False

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last = self.loop.time()
        if self.state == _HEAD:
            buf = self.buf + data if self.buf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._protocol_error("response headers larger than 64 KiB")
                else:
                    self.buf = buf
                return
            self.buf = b""
            if not self._parse_head(buf[:end]):
                return
            data = buf[end + 4 :]
            self._wake()
            if self.state == _DONE or not data:
                return
        if self.state == _LENGTH:
            if len(data) >= self.remaining:
                if self.remaining:
                    self._push(data[: self.remaining])
                self._finish()
                return
            self.remaining -= len(data)
            self._push(data)
        elif self.state == _CHUNKED:
            self._chunked(data)
        elif self.state == _UNTIL_EOF:
            self._push(data)

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self._protocol_error(f"malformed status line {lines[0][:80]!r}")
            return False
        self.status = int(parts[1])
        headers = self.headers
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if parts[0] == b"HTTP/1.0" or headers.get("connection", "").lower() == "close":
            self.keep_alive = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNKED
        elif "content-length" in headers:
            try:
                self.remaining = int(headers["content-length"])
            except ValueError:
                self._protocol_error("invalid Content-Length")
                return False
            self.state = _LENGTH if self.remaining else _DONE
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self.state = _DONE
        else:
            self.state = _UNTIL_EOF
            self.keep_alive = False
        if self.state == _DONE:
            self._finish()
        return True

    def _chunked(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        n = len(buf)
        while pos < n:
            if self.chunk_state == 1:  # chunk data
                take = min(self.remaining, n - pos)
                self._push(buf[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.chunk_state = 2
                continue
            if self.chunk_state == 2:  # CRLF after the data
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    self._protocol_error("bad chunk terminator")
                    return
                pos += 2
                self.chunk_state = 0
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 4096:
                    self._protocol_error("chunk size line too long")
                    return
                break
            line = buf[pos:eol]
            pos = eol + 2
            if self.chunk_state == 3:  # trailer section: ends with an empty line
                if not line:
                    self.buf = b""
                    self._finish()
                    return
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._protocol_error(f"bad chunk size {line[:40]!r}")
                return
            if size == 0:
                self.chunk_state = 3
            else:
                self.remaining = size
                self.chunk_state = 1
        self.buf = buf[pos:]

    def _protocol_error(self, what: str) -> None:
        self._fail(UpstreamError(f"invalid HTTP response from the upstream: {what}"))
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    def _push(self, piece: bytes) -> None:
        self.chunks.append(piece)
        self.buffered += len(piece)
        if self.buffered > _PAUSE_BYTES and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def take(self) -> bytes:
        """Everything buffered, as one piece: one downstream write per upstream read, not per chunk."""
        chunks = self.chunks
        piece = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered -= len(piece)
        if self.paused and self.buffered < _RESUME_BYTES and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return piece


class Response:
    """One upstream answer. Read it (`read` or `iter_chunks`), then `release` (or `close`)."""

    __slots__ = ("_conn", "_pool", "headers", "status")

    def __init__(self, pool: UpstreamPool, conn: _Conn) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.state == _DONE:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    async def read(self) -> bytes:
        parts = [piece async for piece in self.iter_chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        self._pool.release(self._conn)

    def close(self) -> None:
        self._pool.discard(self._conn)


class UpstreamPool:
    def __init__(self, base_url: str, *, max_idle: int = 256, idle_ttl: float = 4.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream must be a plain http:// URL (vLLM on localhost), got {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self._host_header = f"Host: {url.netloc}\r\n".encode()
        self._idle: list[_Conn] = []
        self.max_idle = max_idle
        #: Below uvicorn's default 5 s keep-alive, so we close idle connections before vLLM does.
        self.idle_ttl = idle_ttl
        self.opened = 0

    def encode(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode(), self._host_header]
        head.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        if body or method == "POST":
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        head.append(body)
        return b"".join(head)

    async def _acquire(self, connect_timeout: float) -> tuple[_Conn, bool]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_ttl:
                return conn, True
            self.discard(conn)
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(_Conn, self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {self.host}:{self.port} took over {connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.opened += 1
        return conn, False

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
    ) -> Response:
        data = self.encode(method, path, body, headers or {})
        for attempt in (0, 1):
            conn, reused = await self._acquire(connect_timeout)
            conn.start(data, read_timeout)
            while conn.state == _HEAD and conn.error is None:
                await conn.wait()
            if conn.state == _HEAD:
                assert conn.error is not None
                self.discard(conn)
                if attempt == 0 and reused and not conn.got_bytes and isinstance(conn.error, UpstreamError):
                    continue  # the server closed an idle connection as we reused it
                raise conn.error
            return Response(self, conn)
        raise AssertionError("unreachable")

    def release(self, conn: _Conn) -> None:
        if conn.state == _DONE and conn.keep_alive and not conn.closed and len(self._idle) < self.max_idle:
            conn.idle_since = conn.loop.time()
            conn.chunks.clear()
            self._idle.append(conn)
        else:
            self.discard(conn)

    def discard(self, conn: _Conn) -> None:
        conn._stop_timer()
        if conn.transport is not None and not conn.closed:
            conn.transport.close()
            conn.closed = True

    def close(self) -> None:
        for conn in self._idle:
            self.discard(conn)
        self._idle.clear()

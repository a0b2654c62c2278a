"""Per-key limits shared by every guard replica of a deployment: the buckets of `limits.py` in Redis.

Without it each pod counts on its own, so N replicas let a key through N times its limit. Here one
Lua script does each check atomically on the Redis server (EVALSHA, loaded again after a NOSCRIPT),
with the semantics of `limits.Limiter`: requests/min is a continuously refilled bucket a request
takes one from; tokens/min admits while positive and is charged after the answer (it may go into
debt). The clock is Redis's own (`TIME`), so replicas with skewed clocks still agree. A bucket key
expires when its refill would have filled it again (a missing key is a full bucket), so idle keys
cost nothing. Keys live under a per-deployment prefix (`maestro:{<ns>/<name>}:`). Calls go over the
guard's own pipelined connection (`resp.py`): a few µs of CPU each, so the limits cost little throughput.

Redis is on every limited request's path, so it must never make the guard slow or unavailable: each
call has a short timeout (connect included), and after a failure a circuit breaker skips Redis for
`breaker_s` before one request probes it again (the heartbeat probes too). While it is unreachable
the policy decides (`rateLimits.backendUnavailable`): failOpen limits each pod to its share, the
limit divided by the live guards last seen in Redis (each guard heartbeats a member of a sorted set),
in the in-process `Limiter`; failClosed refuses limited keys with a 503. Unlimited keys never touch
Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from maestro.workers.guard import contract, resp
from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.limits import Denied, Limiter
from maestro.workers.guard.telemetry import Telemetry

log = logging.getLogger("maestro.guard")

#: Most a limited request waits on Redis (connect included) before the fail mode applies.
CALL_TIMEOUT_S = 0.1
#: After a failure, Redis is skipped this long; then one request (or the heartbeat) tries again.
BREAKER_S = 1.0
#: Each guard renews its member of the peer set this often; a member not renewed for 3 beats is gone.
HEARTBEAT_S = 5.0
PEER_TTL_BEATS = 3

#: KEYS and ARGV per operation:
#:   admit  KEYS = requests bucket, tokens bucket; ARGV = rpm, tpm (0: no such limit)
#:          -> {0} admitted, {1, wait} rate limited, {2, wait} token budget spent (wait in seconds)
#:   charge KEYS = tokens bucket; ARGV = tpm, tokens -> {0}
#:   beat   KEYS = peer set; ARGV = member, ttl seconds -> {live members}
#: A bucket is a hash {l: level, s: stamp (server seconds)}; numbers handed to redis.call keep their
#: full precision, and waits come back as strings (a Lua number in a reply is cut to an integer).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]

local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 's')
  local l, s = tonumber(v[1]), tonumber(v[2])
  if l == nil or s == nil then return cap end
  if l > cap then l = cap end
  local dt = now - s
  if dt > 0 then l = math.min(cap, l + dt * cap / 60) end
  return l
end

local function store(key, l, cap)
  redis.call('HSET', key, 'l', l, 's', now)
  redis.call('PEXPIRE', key, math.ceil((cap - l) * 60000 / cap) + 1000)
end

if op == 'admit' then
  local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
  if tpm > 0 then
    local l = level(KEYS[2], tpm)
    if l <= 0 then return {2, string.format('%.6f', (1 - l) * 60 / tpm)} end
  end
  if rpm > 0 then
    local l = level(KEYS[1], rpm)
    if l < 1 then return {1, string.format('%.6f', (1 - l) * 60 / rpm)} end
    store(KEYS[1], l - 1, rpm)
  end
  return {0}
elseif op == 'charge' then
  local tpm = tonumber(ARGV[2])
  store(KEYS[1], level(KEYS[1], tpm) - tonumber(ARGV[3]), tpm)
  return {0}
elseif op == 'beat' then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
  return {redis.call('ZCARD', KEYS[1])}
end
return redis.error_reply('unknown operation ' .. tostring(op))
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclass(slots=True)
class Unavailable:
    """failClosed while the store is unreachable: the limits cannot be checked, so the key is refused."""

    retry_after: float

    def error(self, key: str) -> GuardError:
        return GuardError(
            503,
            f"The rate limits of key {key!r} cannot be checked: the shared rate-limit store is "
            "unreachable and this endpoint's policy refuses limited requests meanwhile "
            "(request.rateLimits.backendUnavailable: failClosed). Retry shortly; if it persists, the "
            "operator of this endpoint should check the guard's Redis (maestro_guard_limit_backend_up).",
            "rate_limit_backend_unavailable",
            retry_after=self.retry_after,
            rule="rateLimits.backendUnavailable",
        )


def display_url(url: str) -> str:
    """The address without credentials, for logs and errors (a URL may carry `user:password@`)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def read_password(env: Mapping[str, str]) -> str | None:
    """The store's password from $LIMITS_REDIS_PASSWORD, else the file $LIMITS_REDIS_PASSWORD_FILE names.

    Raises ValueError naming the variable when the file cannot be read (the guard must not start and
    then fail every limited request with NOAUTH)."""
    value = env.get(contract.LIMITS_REDIS_PASSWORD_ENV)
    if value:
        return value
    path = env.get(contract.LIMITS_REDIS_PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError as exc:
        raise ValueError(
            f"{contract.LIMITS_REDIS_PASSWORD_FILE_ENV}={path}: cannot read the Redis password: "
            f"{exc.strerror}"
        ) from None


class SharedLimiter:
    """`Limiter`'s admit/charge against Redis, with a timeout, a circuit breaker and a per-pod fallback."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = contract.DEFAULT_LIMITS_REDIS_PREFIX,
        password: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        breaker_s: float = BREAKER_S,
        heartbeat_s: float = HEARTBEAT_S,
        member: str | None = None,
    ) -> None:
        self.address = display_url(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.breaker_s = breaker_s
        self.heartbeat_s = heartbeat_s
        self.peer_ttl_s = heartbeat_s * PEER_TTL_BEATS
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._peers_key = prefix + "peers"
        # one pipelined connection (resp.py); a dial may finish after the call that started it gave up
        self._client = resp.Client(url, password=password, connect_timeout_s=max(1.0, timeout_s))
        #: the per-pod fallback (failOpen), sized to this pod's share of each limit
        self.local = Limiter()
        #: live guards last seen in the store (this one included): the divisor of the share
        self.peers = 1
        self.up = True
        self._retry_at = 0.0
        self._probing = False
        self._telemetry: Telemetry | None = None
        self._beater: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, telemetry: Telemetry) -> None:
        """Report through the guard's metrics: backend="redis" replaces the default "local" series."""
        self._telemetry = telemetry
        telemetry.set_limit_backend("redis", self.up)
        telemetry.limit_peers.set(self.peers)

    async def start(self) -> None:
        """Join the peer set now (so the share is known before the first request), then keep beating."""
        await self.beat()
        if self.heartbeat_s > 0:
            self._beater = asyncio.create_task(self._beat_forever())

    async def close(self) -> None:
        """Stop beating, settle pending charges and leave the peer set, so the others' share grows at once."""
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        if self.up:
            with contextlib.suppress(resp.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await self._client.call("ZREM", self._peers_key, self.member)
        self._client.close()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except Exception:  # the heartbeat must outlive any surprise
                log.exception("rate-limit heartbeat failed")

    async def beat(self) -> None:
        """Renew this guard's member and read the live count. Ignores the breaker: it is the probe."""
        res = await self._attempt([self._peers_key], ("beat", self.member, self.peer_ttl_s))
        if res is not None:
            self.peers = max(1, int(res[0]))
            if self._telemetry is not None:
                self._telemetry.limit_peers.set(self.peers)

    # -- the limits -----------------------------------------------------------------------------

    def _keys(self, key: str) -> tuple[str, str]:
        return f"{self.prefix}r:{key}", f"{self.prefix}t:{key}"

    async def admit(
        self, key: str, rpm: float | None, tpm: float | None, *, fail_closed: bool = False
    ) -> Denied | Unavailable | None:
        """Check both limits in the store; take one request only if both pass (see `Limiter.admit`)."""
        res = await self._call(self._keys(key), ("admit", rpm or 0, tpm or 0))
        if res is None:
            if fail_closed:
                return Unavailable(max(1.0, self._retry_at - time.monotonic()))
            n = self.peers
            return self.local.admit(
                key, None if rpm is None else rpm / n, None if tpm is None else tpm / n, time.monotonic()
            )
        code = int(res[0])
        if code == 0:
            return None
        wait = float(res[1])
        if code == 2:
            return Denied("tokenBudget", wait, float(tpm or 0))
        return Denied("rateLimit", wait, float(rpm or 0))

    async def charge(self, key: str, tpm: float | None, tokens: int) -> None:
        """Charge the answer's tokens to the key's shared budget (this pod's share while unreachable)."""
        if tpm is None or tokens <= 0:
            return
        res = await self._call(self._keys(key)[1:], ("charge", tpm, tokens))
        if res is None:
            self.local.charge(key, tpm / self.peers, tokens, time.monotonic())

    def charge_soon(self, key: str, tpm: float | None, tokens: int) -> None:
        """`charge` without waiting for it: the answer is already on its way to the client."""
        if tpm is None or tokens <= 0:
            return
        task = asyncio.get_running_loop().create_task(self.charge(key, tpm, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- Redis, behind the breaker --------------------------------------------------------------

    async def _call(self, keys: Sequence[str], args: Sequence[Any]) -> list[Any] | None:
        """The script's reply, or None when the store is skipped (breaker open) or fails."""
        if self.up:
            return await self._attempt(keys, args)
        if self._probing or time.monotonic() < self._retry_at:
            return None
        self._probing = True  # one request probes; the others keep the fallback meanwhile
        try:
            return await self._attempt(keys, args)
        finally:
            self._probing = False

    async def _attempt(self, keys: Sequence[str], args: Sequence[Any]) -> list[Any] | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                res = await self._eval(keys, args)
        except TimeoutError as exc:
            self._client.reset()  # a wedged server or a half-open connection: dial afresh next time
            self._failed(exc)
            return None
        except (resp.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if not self.up:
            self._recovered()
        return list(res)

    async def _eval(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        cmd = ("EVALSHA", SCRIPT_SHA, len(keys), *keys, *args)
        try:
            return await self._send(cmd)
        except resp.NoScriptError:  # a restarted or flushed Redis forgot the script
            await self._send(("SCRIPT", "LOAD", SCRIPT))
            return await self._send(cmd)

    async def _send(self, cmd: tuple[Any, ...]) -> Any:
        """One call, once more on a fresh connection if the old one broke: after a Redis restart the
        connection fails once, and that is no outage (a refused dial fails both at once)."""
        try:
            return await self._client.call(*cmd)
        except resp.ConnectionLost:
            return await self._client.call(*cmd)

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.breaker_s
        if self._telemetry is not None:
            self._telemetry.limit_backend_errors.inc()
        if not self.up:
            return
        self.up = False
        if self._telemetry is not None:
            self._telemetry.set_limit_backend("redis", False)
        log.warning(
            "rate-limit store %s unreachable (%s: %s): limited keys get this pod's share (limit / %d live "
            "guards), or 503 where the policy sets rateLimits.backendUnavailable: failClosed; retrying "
            "every %.0f s",
            self.address,
            type(exc).__name__,
            str(exc) or f"no answer within {self.timeout_s * 1000:.0f} ms",
            self.peers,
            self.breaker_s,
        )

    def _recovered(self) -> None:
        self.up = True
        if self._telemetry is not None:
            self._telemetry.set_limit_backend("redis", True)
        log.info("rate-limit store %s answers again: limits are shared", self.address)

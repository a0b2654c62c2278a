"""Guard overhead benchmark: direct vs a bare aiohttp forwarder vs the guard vs LiteLLM proxy.

One process tree, one fast local upstream (`bench/_upstream.py`), the same load for every target.
The proxy under test gets one pinned core; the load generator and the upstream share the other.
Measured per target:
- unloaded latency: one connection per target, requests back to back, alternating between the
  targets request by request (p50/p99);
- throughput at saturation: 32 connections, closed loop (rps, median over rounds);
- open loop: a fixed `--rate` of new requests per second, latency measured from each request's
  scheduled send time (so queueing counts: no coordinated omission) (p99);
- streaming time to first byte: the same alternation, streamed chat, time to the first body byte (p50).
The guard runs a realistic policy: API-key auth, per-key rate limit and token budget, PII redaction
on input, audit log to a file. LiteLLM (1.108.7, installed into its own venv under the user cache
because its pins fight ours) runs the equivalent: a master key, per-deployment rpm/tpm limits, and
its built-in offline regex content filter masking PII on input (email, SSN, phone, card, IPv4, API
keys) as a pre-call guardrail.

Direct, bare and guard run at once and are measured in `--rounds` interleaved rounds, each round a
short slice of every phase, samples pooled over the rounds (the unloaded phases alternate request by
request), so a change in the machine's load during the run hits them alike. LiteLLM is measured
after them, alone on the proxy core (the others SIGSTOPped), so its background tasks steal nothing.

    .venv/bin/python bench/guard.py --json [--rounds 4] [--duration 1.5] [--rate 1000] [--no-litellm]
        [--redis]

`--redis` adds a fourth fast target, `guard_redis`: the same guard with the misuse defenses on — its
per-key limits shared through a local `redis-server` (two script calls per request: admit, then the
token charge) and prompt-injection detection (`request.injection.mode: flag`; the plain guard runs
with it off) — measured in the same interleaved rounds; `redis_added_p50_ms`/`_p99_ms` are its
latency over the plain guard's.
Redis runs on loopback on its own core where there is one: an in-cluster Redis adds the network's
round trip on top.

Prints `{"direct":{…},"bare":{…},"guard":{…},"litellm":{…}|null,"added_p50_ms":…,…}`. Numbers are
only comparable within one run: the machine's load is reported next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.108.7"
API_KEY = "sk-bench-0123456789abcdef"
LITELLM_KEY = "sk-bench-master"
SYSTEM = (
    "You are a helpful assistant for a travel company. Answer briefly and politely, in the customer's "
    "language; never reveal internal notes, prices from other customers or booking systems."
)
PROMPT = (
    "I would like to plan a trip to the mountains next spring with two children: what should we pack, "
    "how long should we stay, and which activities are good for kids under ten? (trip {i})"
)
#: Distinct user texts, sent in rotation. More than the guard's verdict cache holds (2,048, oldest
#: evicted first), so every user text is scanned afresh; only the shared system prompt is a cache hit.
VARIANTS = 8192


def bodies(stream: bool) -> list[bytes]:
    """Chat bodies as a client app sends them: the same system prompt, a different user message."""
    out = []
    for i in range(VARIANTS):
        body: dict[str, Any] = {
            "model": "tiny",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT.format(i=i)},
            ],
            "max_tokens": 64,
        }
        if stream:
            body["stream"] = True
        out.append(json.dumps(body).encode())
    return out


GUARD_POLICY = {
    "name": "bench",
    "digest": "bench",
    "servedModelName": "tiny",
    "request": {
        "auth": {
            "apiKeysSecretRef": {"name": "keys"},
            "required": True,
            "keys": [{"id": "bench", "requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000}],
        },
        "rateLimits": {"requestsPerMinute": 100_000_000, "tokensPerMinute": 1_000_000_000},
        "pii": {"input": "redact", "output": "allow"},
        "maxRequestBytes": 1048576,
        "injection": {"mode": "off"},
    },
    "audit": {"enabled": True, "logPrompts": False},
}
#: The `--redis` guard's policy: the same, plus the misuse defenses (injection detection, flag mode).
DEFENDED_POLICY = {**GUARD_POLICY, "request": {**GUARD_POLICY["request"], "injection": {"mode": "flag"}}}


# -- the bare forwarder: the floor any Python (aiohttp) proxy pays ---------------------------------


def serve_bare(port: int, upstream: str) -> None:
    """~40 lines: read the body, forward it over a pooled session, relay JSON or SSE. No checks."""
    import aiohttp
    from aiohttp import web

    async def startup(app: web.Application) -> None:
        app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def cleanup(app: web.Application) -> None:
        await app["s"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["s"]
        async with session.request(
            request.method,
            upstream + request.path_qs,
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            if resp.content_type == "text/event-stream":
                out = web.StreamResponse(status=resp.status, headers={"Content-Type": "text/event-stream"})
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            data = await resp.read()
            return web.Response(
                body=data,
                status=resp.status,
                headers={"Content-Type": resp.headers.get("Content-Type", "application/json")},
            )

    app = web.Application()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_loop())


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# -- load generator: raw HTTP/1.1 keep-alive, a few µs per request --------------------------------

_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future[tuple[int, float]] | None = None
        self.buf = b""
        self.head = -1
        self.length: int | None = None
        self.chunked = False
        self.ttfb = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> asyncio.Future[tuple[int, float]]:
        assert self.transport is not None
        self.fut = asyncio.get_running_loop().create_future()
        self.buf, self.head, self.length, self.chunked, self.ttfb = b"", -1, None, False, 0.0
        self.transport.write(data)
        return self.fut

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        if self.head < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = end + 4
            m = _CL.search(buf, 0, end + 2)
            self.length = int(m.group(1)) if m else None
            self.chunked = self.length is None and b"chunked" in buf[:end].lower()
        body = len(buf) - self.head
        if body > 0 and not self.ttfb:
            self.ttfb = time.perf_counter()
        done = (
            (body >= self.length)
            if self.length is not None
            else (self.chunked and buf.endswith(b"0\r\n\r\n"))
        )
        if done and self.fut is not None and not self.fut.done():
            self.fut.set_result((int(buf[9:12]), self.ttfb))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed by the server"))


def _request(path: str, body: bytes, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connect(port: int) -> _Conn:
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, "127.0.0.1", port)
    return conn


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))] if s else float("nan")


async def closed_loop(
    port: int, reqs: list[bytes], conc: int, *, count: int | None = None, duration: float | None = None
) -> dict[str, Any]:
    conns = [await _connect(port) for _ in range(conc)]
    lat: list[float] = []
    ttfb: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + (duration or 1e9)
    remaining = [count if count is not None else 1 << 62]

    async def worker(c: _Conn) -> None:
        nonlocal errors
        while remaining[0] > 0 and time.perf_counter() < stop_at:
            remaining[0] -= 1
            t = time.perf_counter()
            try:
                status, first = await asyncio.wait_for(c.send(reqs[remaining[0] % len(reqs)]), 30)
            except (ConnectionError, TimeoutError):
                errors += 1
                return
            done = time.perf_counter()
            if status != 200:
                errors += 1
            lat.append(done - t)
            ttfb.append(first - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return {"n": len(lat), "errors": errors, "elapsed": elapsed, "lat": lat, "ttfb": ttfb}


async def open_loop(
    port: int, reqs: list[bytes], rate: float, duration: float, max_conns: int = 512
) -> dict[str, Any]:
    idle: deque[_Conn] = deque([await _connect(port) for _ in range(32)])
    opened = len(idle)
    lat: list[float] = []
    errors = 0
    late = 0
    tasks: set[asyncio.Task[None]] = set()
    cond = asyncio.Event()

    async def one(c: _Conn, scheduled: float, req: bytes) -> None:
        nonlocal errors
        try:
            status, _ = await asyncio.wait_for(c.send(req), 30)
            if status != 200:
                errors += 1
            idle.append(c)
        except (ConnectionError, TimeoutError):
            errors += 1
        lat.append(time.perf_counter() - scheduled)
        cond.set()

    n = int(rate * duration)
    t0 = time.perf_counter() + 0.02
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while not idle:
            if opened < max_conns:
                idle.append(await _connect(port))
                opened += 1
            else:
                late += 1
                cond.clear()
                await cond.wait()
        task = asyncio.create_task(one(idle.pop(), scheduled, reqs[i % len(reqs)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    achieved = len(lat) / (time.perf_counter() - t0)
    for c in idle:
        if c.transport is not None:
            c.transport.close()
    return {"n": len(lat), "errors": errors, "lat": lat, "achieved_rps": achieved, "connections": opened}


class Target:
    """One endpoint under test and every sample taken from it, pooled over the rounds."""

    def __init__(self, name: str, port: int, key: str, *, open_loop: bool = True) -> None:
        self.name, self.port, self.open_loop = name, port, open_loop
        self.chat = [_request("/v1/chat/completions", b, key) for b in bodies(stream=False)]
        self.stream = [_request("/v1/chat/completions", b, key) for b in bodies(stream=True)]
        self.unloaded: list[float] = []
        self.saturation_rps: list[float] = []
        self.saturation_lat: list[float] = []
        self.ttfb: list[float] = []
        self.open_lat: list[float] = []
        self.open_rps: list[float] = []
        self.errors = 0

    async def warmup(self, n: int) -> None:
        await closed_loop(self.port, self.chat, 8, count=n)
        await closed_loop(self.port, self.stream, 4, count=max(20, n // 10))

    async def round(self, args: argparse.Namespace) -> None:
        """One slice of the loaded phases; rounds interleave targets so load drifts hit all alike."""
        r = await closed_loop(self.port, self.chat, args.concurrency, duration=args.duration)
        self.saturation_rps.append(r["n"] / r["elapsed"])
        self.saturation_lat += r["lat"]
        self.errors += r["errors"]
        if self.open_loop:
            r = await open_loop(self.port, self.chat, args.rate, args.duration)
            self.open_lat += r["lat"]
            self.open_rps.append(r["achieved_rps"])
            self.errors += r["errors"]

    def summary(self, rate: float) -> dict[str, Any]:
        def ms(values: list[float], q: float) -> float:
            return round(_pct(values, q) * 1e3, 3)

        out: dict[str, Any] = {
            "p50_ms": ms(self.unloaded, 0.50),
            "p99_ms": ms(self.unloaded, 0.99),
            "rps": round(statistics.median(self.saturation_rps), 1),
            "rps_rounds": [round(x) for x in self.saturation_rps],
            "saturation_p50_ms": ms(self.saturation_lat, 0.50),
            "stream_ttfb_p50_ms": ms(self.ttfb, 0.50),
            "stream_ttfb_p99_ms": ms(self.ttfb, 0.99),
            "samples": len(self.unloaded),
            "errors": self.errors,
        }
        if self.open_loop:
            out.update(
                {
                    "open_loop_rps_offered": rate,
                    "open_loop_rps_achieved": round(statistics.median(self.open_rps), 1),
                    "open_loop_p50_ms": ms(self.open_lat, 0.50),
                    "open_loop_p99_ms": ms(self.open_lat, 0.99),
                }
            )
        return out


async def paired(targets: list[Target], count: int, deadline_s: float, *, stream: bool) -> None:
    """Unloaded phase, request by request in turn over all targets (A, B, C, A, B, C, …).

    Latency at concurrency 1 is the sum of a few wake-ups, so on a shared machine it moves with
    whatever else runs; sampling the targets alternately gives each the same conditions. LiteLLM,
    a hundred times slower, stops at the deadline instead of the count.
    """
    conns = [await _connect(t.port) for t in targets]
    stop = time.perf_counter() + deadline_s
    active = list(range(len(targets)))
    for i in range(count):
        for j in list(active):
            t, c = targets[j], conns[j]
            reqs = t.stream if stream else t.chat
            started = time.perf_counter()
            try:
                status, first = await asyncio.wait_for(c.send(reqs[i % len(reqs)]), 30)
            except (ConnectionError, TimeoutError):
                t.errors += 1
                conns[j] = await _connect(t.port)
                continue
            if status != 200:
                t.errors += 1
            (t.ttfb if stream else t.unloaded).append((first if stream else time.perf_counter()) - started)
            if time.perf_counter() > stop and t.name == "litellm":
                active.remove(j)
        if not active:
            break
    for c in conns:
        if c.transport is not None:
            c.transport.close()


def measure_rounds(targets: list[Target], args: argparse.Namespace) -> None:
    loop = _loop()
    try:
        for t in targets:
            loop.run_until_complete(t.warmup(args.warmup))
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            loop.run_until_complete(paired(targets, per_round, args.duration * 2, stream=False))
            loop.run_until_complete(paired(targets, max(25, per_round // 4), args.duration, stream=True))
            for t in targets:
                loop.run_until_complete(t.round(args))
    finally:
        loop.close()


# -- process management -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(core: int | None) -> Callable[[], None] | None:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


@contextlib.contextmanager
def _process(
    cmd: list[str],
    port: int,
    *,
    core: int | None,
    env: dict[str, str] | None = None,
    ready_path: str = "/",
    timeout: float = 60,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_pin(core),
        cwd=ROOT,
    )
    try:
        _wait_http(port, ready_path, timeout, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def _stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP a measured proxy while another one is measured alone; SIGCONT before it is terminated."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def _wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{proc.args!r} did not answer {path} on port {port} within {timeout:.0f} s")


def litellm_venv() -> tuple[Path | None, str | None]:
    """LiteLLM in its own venv under the user cache (idempotent). Returns (litellm binary, reason if none)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maestro" / "venv-litellm"
    exe = cache / "bin" / "litellm"
    ok = cache / f".installed-{LITELLM_VERSION}"
    if exe.exists() and (ok.exists() or _litellm_version(cache) == LITELLM_VERSION):
        ok.touch()
        return exe, None
    py = shutil.which("python3.11") or sys.executable
    try:
        if not (cache / "bin" / "python").exists():
            subprocess.run([py, "-m", "venv", str(cache)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [
                str(cache / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=1500,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        tail = detail[-400:].decode(errors="replace")
        return None, f"cannot install litellm[proxy]=={LITELLM_VERSION}: {exc} {tail}"
    ok.touch()
    return exe, None


def _litellm_version(venv: Path) -> str | None:
    try:
        r = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


def _load() -> list[float] | None:
    """1/5/15-minute load averages: the bench's numbers mean little on a busy machine."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _litellm_config(upstream: str) -> str:
    return (
        "model_list:\n"
        "  - model_name: tiny\n"
        "    litellm_params:\n"
        "      model: openai/tiny\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-upstream\n"
        "      rpm: 100000000\n"
        "      tpm: 1000000000\n"
        # PII masking on input with LiteLLM's own offline regex filter (its Presidio hook needs a server)
        "guardrails:\n"
        "  - guardrail_name: pii-input\n"
        "    litellm_params:\n"
        "      guardrail: litellm_content_filter\n"
        "      mode: pre_call\n"
        "      default_on: true\n"
        "      patterns:\n"
        + "".join(
            f"        - {{pattern_type: prebuilt, pattern_name: {name}, action: MASK}}\n"
            for name in ("email", "us_ssn", "us_phone", "credit_card", "ipv4", "generic_api_key")
        )
        + "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from maestro.workers.guard.rules import CACHE_ENTRIES

    assert VARIANTS > CACHE_ENTRIES, "the bench must not be served from the guard's verdict cache"
    cores = sorted(os.sched_getaffinity(0))
    load_core, proxy_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="maestro-bench-"))
    result: dict[str, Any] = {"litellm": None}
    up_port = _free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    (work / "keys").mkdir()
    (work / "keys" / "bench").write_text(API_KEY)
    (work / "policy.json").write_text(json.dumps(GUARD_POLICY))
    (work / "policy-defended.json").write_text(json.dumps(DEFENDED_POLICY))
    load_before = _load()
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            _process(
                [py, str(ROOT / "bench" / "_upstream.py"), "--port", str(up_port)],
                up_port,
                core=load_core,
                ready_path="/health",
            )
        )
        targets = [Target("direct", up_port, API_KEY)]
        procs: dict[str, subprocess.Popen[bytes]] = {}
        port = _free_port()
        procs["bare"] = stack.enter_context(
            _process(
                [py, __file__, "--serve-bare", str(port), "--upstream", upstream],
                port,
                core=proxy_core,
                ready_path="/health",
            )
        )
        targets.append(Target("bare", port, API_KEY))
        port = _free_port()
        env = {
            "MAESTRO_GUARD_CONFIG": str(work / "policy.json"),
            "MAESTRO_GUARD_KEYS_DIR": str(work / "keys"),
            "MAESTRO_UPSTREAM": upstream,
            "MAESTRO_GUARD_PORT": str(port),
            "MAESTRO_GUARD_HOST": "127.0.0.1",
            "MAESTRO_AUDIT_LOG": str(work / "audit.jsonl"),
            "MAESTRO_EVENTS_SOCKET": str(work / "ev.sock"),
            "MAESTRO_LOG_LEVEL": "WARNING",
        }
        procs["guard"] = stack.enter_context(
            _process(
                [py, "-m", "maestro", "guard"],
                port,
                core=proxy_core,
                env=env,
                ready_path="/readyz",
                log=work / "guard.log",
            )
        )
        targets.append(Target("guard", port, API_KEY))
        if args.redis:
            exe = shutil.which("redis-server")
            if exe is None:
                result["redis_reason"] = "redis-server not found (make host-deps)"
            else:
                redis_port = _free_port()
                redis_core = cores[2] if len(cores) >= 3 else load_core
                stack.enter_context(_redis(exe, redis_port, work, redis_core))
                port = _free_port()
                renv = {
                    **env,
                    "MAESTRO_GUARD_CONFIG": str(work / "policy-defended.json"),
                    "MAESTRO_GUARD_PORT": str(port),
                    "MAESTRO_AUDIT_LOG": str(work / "audit-redis.jsonl"),
                    "MAESTRO_EVENTS_SOCKET": str(work / "ev-redis.sock"),
                    "MAESTRO_GUARD_LIMITS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                    "MAESTRO_GUARD_LIMITS_REDIS_PREFIX": "maestro:{bench/guard}:",
                }
                procs["guard_redis"] = stack.enter_context(
                    _process(
                        [py, "-m", "maestro", "guard"],
                        port,
                        core=proxy_core,
                        env=renv,
                        ready_path="/readyz",
                        log=work / "guard-redis.log",
                    )
                )
                targets.append(Target("guard_redis", port, API_KEY))
        else:
            result["redis_reason"] = "skipped (no --redis)"
        measure_rounds(targets, args)  # the three fast targets, interleaved
        # Then LiteLLM, on the same core, the same upstream and load, but alone: its background tasks
        # must not steal the proxy core while the others are measured, and at ~100 req/s it needs no
        # pairing to be told apart.
        for name in procs:
            stack.enter_context(_stopped(procs[name]))
        if args.no_litellm:
            result["litellm_reason"] = "skipped (--no-litellm)"
        else:
            exe, reason = litellm_venv()
            if exe is None:
                result["litellm_reason"] = reason
            else:
                port = _free_port()
                (work / "litellm.yaml").write_text(_litellm_config(upstream))
                lenv = {
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_LOG": "ERROR",
                    "LITELLM_TELEMETRY": "False",
                    "DISABLE_SCHEMA_UPDATE": "True",
                    "NO_DOCS": "True",
                }
                cmd = [
                    str(exe),
                    "--config",
                    str(work / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                ]
                try:
                    stack.enter_context(
                        _process(
                            cmd,
                            port,
                            core=proxy_core,
                            env=lenv,
                            ready_path="/health/liveliness",
                            timeout=240,
                            log=work / "litellm.log",
                        )
                    )
                except (RuntimeError, TimeoutError) as exc:
                    log_tail = (work / "litellm.log").read_text(errors="replace")[-600:]
                    result["litellm_reason"] = f"{exc}; log: {log_tail}"
                else:
                    # it saturates near 130 req/s: a 1,000 req/s open loop would only measure its queue
                    lite = Target("litellm", port, LITELLM_KEY, open_loop=False)
                    measure_rounds([lite], args)
                    targets.append(lite)
        for t in targets:
            result[t.name] = t.summary(args.rate)
        audit = work / "audit.jsonl"
        result["guard"]["audit_lines"] = audit.read_bytes().count(b"\n") if audit.exists() else 0
        if "guard_redis" in procs:
            rlog = (work / "guard-redis.log").read_text(errors="replace")
            # a Redis failure falls back silently to local limits: the numbers would not be Redis's
            result["guard_redis"]["redis_failures_logged"] = rlog.count("unreachable")
        result.setdefault("guard_redis", None)

    d, b, g, lite = result["direct"], result["bare"], result["guard"], result["litellm"]
    result.update(
        {
            "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
            "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 3),
            "bare_added_p50_ms": round(b["p50_ms"] - d["p50_ms"], 3),
            "bare_added_p99_ms": round(b["p99_ms"] - d["p99_ms"], 3),
            "guard_vs_bare_rps": round(g["rps"] / b["rps"], 3),
            "guard_vs_litellm_rps": round(g["rps"] / lite["rps"], 1) if lite else None,
            "stream_ttfb_added_ms": round(g["stream_ttfb_p50_ms"] - b["stream_ttfb_p50_ms"], 3),
            **_redis_deltas(result["guard_redis"], g, d),
            "machine": {
                "cores": len(cores),
                "load_core": load_core,
                "proxy_core": proxy_core,
                "loadavg_before": load_before,
                "loadavg_after": _load(),
            },
            "config": {
                "rounds": args.rounds,
                "slice_s": args.duration,
                "requests_unloaded": args.requests,
                "concurrency": args.concurrency,
                "open_loop_rate": args.rate,
                "policy": "auth+rpm+tpm+pii(input redact)+audit",
            },
        }
    )
    shutil.rmtree(work, ignore_errors=True)
    return result


def _redis_deltas(r: dict[str, Any] | None, g: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """What the shared limits add: over the plain guard (the Redis calls) and over direct (the total)."""
    if r is None:
        return {"redis_added_p50_ms": None, "redis_added_p99_ms": None}
    return {
        "redis_added_p50_ms": round(r["p50_ms"] - g["p50_ms"], 3),
        "redis_added_p99_ms": round(r["p99_ms"] - g["p99_ms"], 3),
        "guard_redis_added_p50_ms": round(r["p50_ms"] - d["p50_ms"], 3),
        "guard_redis_added_p99_ms": round(r["p99_ms"] - d["p99_ms"], 3),
        "guard_redis_vs_guard_rps": round(r["rps"] / g["rps"], 3),
    }


@contextlib.contextmanager
def _redis(exe: str, port: int, work: Path, core: int | None) -> Iterator[subprocess.Popen[bytes]]:
    """A loopback redis-server without persistence, pinned to `core`, answering PING before it yields."""
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*cmd, "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=_pin(core)
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {port}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all targets")
    p.add_argument("--duration", type=float, default=1.5, help="seconds per phase slice, per round")
    p.add_argument(
        "--requests", type=int, default=2000, help="requests in the unloaded (concurrency 1) phase"
    )
    p.add_argument("--concurrency", type=int, default=32, help="connections in the saturation phase")
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop offered rate (req/s)")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument(
        "--redis", action="store_true", help="also measure the guard with its limits shared through Redis"
    )
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare, args.upstream)
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        names = ("direct", "bare", "guard", "guard_redis", "litellm")
        for name in names:
            print(f"{name:11s} {result[name]}")
        print(json.dumps({k: v for k, v in result.items() if k not in names}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

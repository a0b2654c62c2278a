"""Per-key limits shared across guard replicas through a real Redis (`redis-server` on loopback).

First the Lua script's semantics against `limits.Limiter` (refill, debt, resize, TTLs, NOSCRIPT,
server time) and the breaker, in-process; then three real `maestro guard` processes in front of one
fake upstream sharing one Redis: together they hold a key to its per-minute limit, fall back to a
third each when Redis stops (failOpen) or refuse limited keys (failClosed), share again once it is
back, and a real Prometheus fires the backend-down alert from their /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from guard_helpers import policy_doc
from redis_helpers import RedisServer

from maestro.workers.guard import contract, resp
from maestro.workers.guard.limits import Denied, Limiter
from maestro.workers.guard.shared_limits import SharedLimiter, Unavailable, display_url, read_password
from maestro.workers.guard.telemetry import Telemetry
from maestro.workers.monitor import dashboards
from ports import free_port

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent
PREFIX = "maestro:{test/llm}:"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[resp.Client]:
    client = resp.Client(redis_server.url)
    try:
        yield client
    finally:
        client.close()


def _limiter(url: str, **kw: Any) -> SharedLimiter:
    kw.setdefault("heartbeat_s", 0)
    return SharedLimiter(url, prefix=PREFIX, **kw)


def _errors(tel: Telemetry) -> float:
    return tel.registry.get_sample_value("maestro_guard_limit_backend_errors_total") or 0.0


def _up(tel: Telemetry, backend: str) -> float | None:
    return tel.registry.get_sample_value("maestro_guard_limit_backend_up", {"backend": backend})


# -- the script: the semantics of limits.Limiter, in Redis ----------------------------------------


async def test_requests_bucket_takes_one_per_request_and_refills(redis_server: RedisServer) -> None:
    lim = _limiter(redis_server.url)
    try:
        for _ in range(60):
            assert await lim.admit("k", 60, None) is None
        denied = await lim.admit("k", 60, None)
        assert isinstance(denied, Denied) and denied.rule == "rateLimit" and denied.limit == 60
        assert 0.8 < denied.retry_after <= 1.0  # one request refills in 1 s at 60/min
        await asyncio.sleep(1.05)
        assert await lim.admit("k", 60, None) is None
        assert isinstance(await lim.admit("k", 60, None), Denied)
        assert await lim.admit("other", 60, None) is None  # keys are independent
    finally:
        await lim.close()


async def test_token_budget_admits_while_positive_then_owes_its_debt(redis_server: RedisServer) -> None:
    lim, local = _limiter(redis_server.url), Limiter()
    now = time.monotonic()
    try:
        assert await lim.admit("k", None, 600) is None and local.admit("k", None, 600, now) is None
        await lim.charge("k", 600, 500)  # 100 left: still admitted
        local.charge("k", 600, 500, now)
        assert await lim.admit("k", None, 600) is None and local.admit("k", None, 600, now) is None
        await lim.charge("k", 600, 700)  # 600 in debt
        local.charge("k", 600, 700, now)
        shared = await lim.admit("k", None, 600)
        alone = local.admit("k", None, 600, now)
        assert isinstance(shared, Denied) and isinstance(alone, Denied)
        assert shared.rule == alone.rule == "tokenBudget"
        assert shared.retry_after == pytest.approx(alone.retry_after, abs=0.2)  # (600 + 1) / 10 per s
        assert shared.retry_after == pytest.approx(60.1, abs=0.2)
    finally:
        await lim.close()


async def test_new_limit_resizes_the_bucket_without_resetting_it(redis_server: RedisServer) -> None:
    lim = _limiter(redis_server.url)
    try:
        for _ in range(10):
            assert await lim.admit("k", 60, None) is None  # 50 left
        admitted = 0
        while await lim.admit("k", 20, None) is None:  # lowered: 20 left, not 50 and not a fresh 20+
            admitted += 1
        assert admitted == 20
        raised = await lim.admit("k", 1000, None)  # raised: what was spent stays spent
        assert isinstance(raised, Denied) and raised.retry_after < 0.1
    finally:
        await lim.close()


async def test_idle_keys_expire_when_their_bucket_would_be_full(
    redis_server: RedisServer, raw: resp.Client
) -> None:
    lim = _limiter(redis_server.url, heartbeat_s=5)
    try:
        await lim.start()
        assert await lim.admit("k", 60, None) is None  # one taken: full again in 1 s
        assert 1500 < await raw.call("PTTL", PREFIX + "r:k") <= 2000
        await lim.charge("k", 600, 300)  # 300 spent at 10 per s: 30 s
        assert 30000 < await raw.call("PTTL", PREFIX + "t:k") <= 31000
        assert 14000 < await raw.call("PTTL", PREFIX + "peers") <= 15000  # 3 heartbeats
        assert await lim.admit("fast", 6000, None) is None  # 100 per s: full in 10 ms (+1 s)
        await asyncio.sleep(1.2)
        assert not await raw.call("EXISTS", PREFIX + "r:fast")
    finally:
        await lim.close()
    assert await raw.call("ZCARD", PREFIX + "peers") == 0  # a stopping guard leaves the peer set


async def test_stamps_are_redis_time_and_a_flushed_script_is_reloaded(
    redis_server: RedisServer, raw: resp.Client
) -> None:
    tel = Telemetry()
    lim = _limiter(redis_server.url)
    lim.attach(tel)
    try:
        assert await lim.admit("k", 60, None) is None
        secs, micros = map(int, await raw.call("TIME"))
        stamp = float(await raw.call("HGET", PREFIX + "r:k", "s"))
        assert abs(stamp - (secs + micros / 1e6)) < 1.0  # the server's clock, not the guard's monotonic
        await raw.call("SCRIPT", "FLUSH")
        assert await lim.admit("k", 60, None) is None  # NOSCRIPT: loaded again, no failure
        assert _errors(tel) == 0 and _up(tel, "redis") == 1
    finally:
        await lim.close()


async def test_two_limiters_share_one_bucket_and_count_their_peers(redis_server: RedisServer) -> None:
    a, b = _limiter(redis_server.url, heartbeat_s=5), _limiter(redis_server.url, heartbeat_s=5)
    try:
        await a.start()
        await b.start()
        await a.beat()
        assert a.peers == b.peers == 2
        admitted = [await (a if i % 2 else b).admit("k", 10, None) is None for i in range(14)]
        assert sum(admitted) == 10
    finally:
        await b.close()
    await a.beat()
    assert a.peers == 1
    await a.close()


# -- the breaker and the fallback ---------------------------------------------------------------


async def test_unreachable_store_falls_back_to_the_pods_share_behind_a_breaker(
    redis_server: RedisServer,
) -> None:
    tel = Telemetry()
    lim = _limiter(redis_server.url, breaker_s=0.3)
    lim.attach(tel)
    try:
        lim.peers = 3
        assert await lim.admit("k", 30, None) is None
        redis_server.stop()
        started = time.perf_counter()
        results = [await lim.admit("k", 30, None) for _ in range(15)]
        assert time.perf_counter() - started < 0.2  # one failed call, then the breaker skips Redis
        assert sum(r is None for r in results) == 10  # 30 / 3 peers, in-process
        denied = results[-1]
        assert isinstance(denied, Denied) and denied.limit == 10
        assert _errors(tel) == 1 and _up(tel, "redis") == 0 and lim.up is False
        unavailable = await lim.admit("k", 30, None, fail_closed=True)
        assert isinstance(unavailable, Unavailable)
        err = unavailable.error("k")
        assert err.status == 503 and err.code == "rate_limit_backend_unavailable"
        assert "failClosed" in err.message and err.response_headers()["Retry-After"] == "1"
        await asyncio.sleep(0.35)
        await lim.admit("k", 30, None)  # the breaker let one request probe: it failed again
        assert _errors(tel) == 2
        redis_server.start()
        await asyncio.sleep(0.35)
        assert await lim.admit("k2", 30, None) is None
        assert lim.up and _up(tel, "redis") == 1
    finally:
        await lim.close()


async def test_a_store_that_never_answers_costs_one_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never answers
    tel = Telemetry()
    lim = _limiter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_s=0.05)
    lim.attach(tel)
    try:
        started = time.perf_counter()
        assert await lim.admit("k", 60, None) is None  # fail open
        first = time.perf_counter() - started
        assert 0.04 < first < 0.3
        started = time.perf_counter()
        assert await lim.admit("k", 60, None) is None
        assert time.perf_counter() - started < 0.01  # breaker open: no second wait
        assert _errors(tel) == 1
    finally:
        await lim.close()
        silent.close()


async def test_a_redis_restart_does_not_open_the_breaker(redis_server: RedisServer) -> None:
    """Every pooled connection breaks once when Redis restarts: that is retried, not an outage."""
    tel = Telemetry()
    lim = _limiter(redis_server.url)
    lim.attach(tel)
    try:
        assert await lim.admit("k", 60, None) is None
        redis_server.stop()
        redis_server.start()
        assert await lim.admit("k", 60, None) is None
        assert _errors(tel) == 0 and lim.up
    finally:
        await lim.close()


async def test_password_from_the_secret_and_never_in_the_address(tmp_path: Path) -> None:
    srv = RedisServer(password="s3cret-pw").start()
    try:
        url = f"redis://127.0.0.1:{srv.port}/0"
        assert display_url(f"redis://user:s3cret-pw@127.0.0.1:{srv.port}/0") == url
        (tmp_path / "pw").write_text("s3cret-pw\n")
        password = read_password({contract.LIMITS_REDIS_PASSWORD_FILE_ENV: str(tmp_path / "pw")})
        good, bad = _limiter(url, password=password), _limiter(url)
        tel = Telemetry()
        bad.attach(tel)
        try:
            assert await good.admit("k", 1, None) is None
            assert isinstance(await good.admit("k", 1, None), Denied)  # counted in Redis
            assert await bad.admit("k", 1, None) is None  # NOAUTH: an outage, this pod's share
            assert _errors(tel) == 1 and _up(tel, "redis") == 0
        finally:
            await good.close()
            await bad.close()
        with pytest.raises(ValueError, match=contract.LIMITS_REDIS_PASSWORD_FILE_ENV):
            read_password({contract.LIMITS_REDIS_PASSWORD_FILE_ENV: str(tmp_path / "missing")})
    finally:
        srv.close()


def test_guard_refuses_to_start_with_an_unusable_redis_setting(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "maestro", "guard", "--config", str(tmp_path / "none.json"), "--port", "0"]
    bad_url = subprocess.run(
        [*base, "--limits-redis-url", "http://redis:6379"], capture_output=True, text=True, timeout=60
    )
    assert bad_url.returncode == 1 and contract.LIMITS_REDIS_URL_ENV in bad_url.stderr
    env = {**os.environ, contract.LIMITS_REDIS_PASSWORD_FILE_ENV: str(tmp_path / "missing")}
    no_pw = subprocess.run(
        [*base, "--limits-redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert no_pw.returncode == 1 and "cannot read the Redis password" in no_pw.stderr


def test_without_a_store_the_backend_series_still_exists() -> None:
    tel = Telemetry()
    assert _up(tel, "local") == 1 and _up(tel, "redis") is None
    assert tel.registry.get_sample_value("maestro_guard_limit_peers") == 1
    assert _errors(tel) == 0


# -- three real guard processes, one Redis ------------------------------------------------------

KEYS = {
    "k-rpm": "sk-rpm-0123456789",
    "k-tpm": "sk-tpm-0123456789",
    "k-out": "sk-out-0123456789",
    "k-back": "sk-back-0123456789",
    "k-free": "sk-free-0123456789",
}
GUARD = [sys.executable, "-m", "maestro", "guard"]
RPM = 120
TPM = 6000
OUT_RPM = 60
#: The fake upstream's usage for MESSAGES: len(json) // 4 prompt tokens + 4 reply pieces.
MESSAGES = [{"role": "user", "content": "hi"}]
TOKENS_PER_REQUEST = len(json.dumps(MESSAGES)) // 4 + 4


def _policy(fail_mode: str, digest: str) -> dict[str, Any]:
    keys = [
        {"id": "k-rpm", "requestsPerMinute": RPM},
        {"id": "k-tpm", "tokensPerMinute": TPM},
        {"id": "k-out", "requestsPerMinute": OUT_RPM},
        {"id": "k-back", "requestsPerMinute": OUT_RPM},
        {"id": "k-free"},
    ]
    request = {
        "auth": {"required": True, "keys": keys},
        "pii": {"input": "allow", "output": "allow"},
        "rateLimits": {"backendUnavailable": fail_mode},
    }
    return policy_doc(request, digest=digest)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.1)


class Replicas:
    """One Redis, one fake upstream, three `maestro guard` processes as the sidecar runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = RedisServer()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.policy = root / "policy.json"
        self.keys_dir = root / "keys"
        self.urls: list[str] = []

    def start(self) -> Replicas:
        """Everything up and ready; the caller closes it even when this fails half-way."""
        root = self.root
        self.redis.start()
        self.keys_dir.mkdir()
        for kid, key in KEYS.items():
            (self.keys_dir / kid).write_text(key)
        self.write_policy("failOpen", "open")
        up_port = free_port()
        self._spawn(
            [sys.executable, str(HERE / "fakeupstream.py"), "--port", str(up_port)], {}, root / "upstream.log"
        )
        self.upstream = f"http://127.0.0.1:{up_port}"
        _wait_http(self.upstream + "/health", self.procs[0], root / "upstream.log")
        self.ports = [free_port() for _ in range(3)]
        for i, port in enumerate(self.ports):
            env = {
                contract.CONFIG_ENV: str(self.policy),
                contract.KEYS_DIR_ENV: str(self.keys_dir),
                contract.UPSTREAM_ENV: self.upstream,
                contract.PORT_ENV: str(port),
                contract.HOST_ENV: "127.0.0.1",
                contract.AUDIT_LOG_ENV: str(root / f"audit-{i}.jsonl"),
                contract.RELOAD_INTERVAL_ENV: "0.2",
                contract.LIMITS_REDIS_URL_ENV: self.redis.url,
                contract.LIMITS_REDIS_PREFIX_ENV: PREFIX,
                "MAESTRO_LOG_LEVEL": "WARNING",
            }
            self._spawn(
                # a generous timeout: these tests are about sharing; a starved guard on a busy machine
                # must not fall back to local limits (the 100 ms default is tested in-process above)
                [*GUARD, "--limits-heartbeat-seconds", "0.5", "--limits-timeout-ms", "2000"],
                env,
                root / f"guard-{i}.log",
            )
        for i, port in enumerate(self.ports):
            _wait_http(
                f"http://127.0.0.1:{port}{contract.READY_PATH}", self.procs[i + 1], root / f"guard-{i}.log"
            )
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        return self

    def _spawn(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
            )

    def write_policy(self, fail_mode: str, digest: str) -> None:
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(json.dumps(_policy(fail_mode, digest)))
        os.replace(tmp, self.policy)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    r = Replicas(tmp_path_factory.mktemp("replicas"))
    try:
        yield r.start()
    finally:
        r.close()


async def _chat(session: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict[str, str]]:
    async with session.post(
        url + "/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {KEYS[key]}"},
    ) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def _fire(
    urls: list[str],
    key: str,
    *,
    duration: float | None = None,
    count: int | None = None,
    workers: int = 6,
    pace: float = 0.0,
) -> tuple[dict[int, int], float]:
    """Requests round-robin over `urls` from `workers` connections, for `duration` s or `count` requests,
    each worker pausing `pace` s between them (far more than the limit, without saturating the CPUs).
    Returns the status counts and the seconds from the first request sent to the last answered."""
    statuses: dict[int, int] = {}
    sent = 0
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        stop = t0 + (duration or 3600)

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < stop and (count is None or sent < count):
                url = urls[sent % len(urls)]
                sent += 1
                status, _ = await _chat(session, url, key)
                statuses[status] = statuses.get(status, 0) + 1
                if pace:
                    await asyncio.sleep(pace)

        await asyncio.gather(*(worker() for _ in range(workers)))
        return statuses, time.monotonic() - t0


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + contract.METRICS_PATH, timeout=5) as r:
        return str(r.read().decode())


def _sample(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def _store_errors(replicas: Replicas) -> list[float]:
    return [_sample(_metrics(u), "maestro_guard_limit_backend_errors_total") or 0.0 for u in replicas.urls]


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_three_guards_hold_one_key_to_its_requests_per_minute(replicas: Replicas) -> None:
    errors = _store_errors(replicas)
    statuses, elapsed = await _fire(replicas.urls, "k-rpm", duration=4.0, pace=0.02)
    assert _store_errors(replicas) == errors, (
        "a guard missed the store (see its log): the count is not shared"
    )
    expected = RPM + RPM / 60 * elapsed  # a full bucket, plus its refill while we fired
    assert statuses.get(429, 0) > 2 * RPM, statuses  # far more asked than allowed: per pod would be 3x
    assert abs(statuses[200] - expected) <= 0.05 * expected, (statuses, expected)
    for url in replicas.urls:
        text = _metrics(url)
        assert _sample(text, "maestro_guard_limit_backend_up", '{backend="redis"}') == 1
        assert _sample(text, "maestro_guard_limit_peers") == 3


async def test_three_guards_hold_one_key_to_its_tokens_per_minute(replicas: Replicas) -> None:
    errors = _store_errors(replicas)
    statuses, elapsed = await _fire(replicas.urls, "k-tpm", duration=4.0, workers=3, pace=0.01)
    assert _store_errors(replicas) == errors, (
        "a guard missed the store (see its log): the count is not shared"
    )
    spent = statuses[200] * TOKENS_PER_REQUEST
    expected = TPM + TPM / 60 * elapsed  # budget plus refill; overshoot at most one request per worker
    assert statuses.get(429, 0) > 0, statuses
    assert abs(spent - expected) <= 0.05 * expected, (statuses, spent, expected)


async def test_redis_outage_fail_open_then_closed_then_shared_again(replicas: Replicas) -> None:
    for url in replicas.urls:
        assert _sample(_metrics(url), "maestro_guard_limit_peers") == 3
    errors_before = [
        _sample(_metrics(u), "maestro_guard_limit_backend_errors_total") or 0 for u in replicas.urls
    ]
    replicas.redis.stop()
    try:
        await _until(
            lambda: all(
                _sample(_metrics(u), "maestro_guard_limit_backend_up", '{backend="redis"}') == 0
                for u in replicas.urls
            ),
            5,
            "every guard to report the store down",
        )
        # failOpen: each guard enforces its share, OUT_RPM / 3 peers, on its own
        share = OUT_RPM / 3
        for url in replicas.urls:
            statuses, _ = await _fire([url], "k-out", count=40, workers=2)
            assert share <= statuses[200] <= share + 1, (url, statuses)
        for url, before in zip(replicas.urls, errors_before, strict=True):
            text = _metrics(url)
            assert (_sample(text, "maestro_guard_limit_backend_errors_total") or 0) > before
            assert _sample(text, "maestro_guard_limit_peers") == 3  # the last count seen
        # failClosed: limited keys get a 503 with Retry-After; unlimited keys pass
        replicas.write_policy("failClosed", "closed")
        await _until(
            lambda: all('digest="closed"' in _metrics(u) for u in replicas.urls), 5, "the policy reload"
        )
        async with aiohttp.ClientSession() as session:
            for url in replicas.urls:
                status, headers = await _chat(session, url, "k-out")
                assert status == 503 and int(headers["Retry-After"]) >= 1
                async with session.post(
                    url + "/v1/chat/completions",
                    json={"model": "tiny", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {KEYS['k-out']}"},
                ) as resp:
                    err = (await resp.json())["error"]
                assert err["code"] == "rate_limit_backend_unavailable" and "failClosed" in err["message"]
                assert (await _chat(session, url, "k-free"))[0] == 200
    finally:
        replicas.redis.start()
        replicas.write_policy("failOpen", "open")
    await _until(
        lambda: all(
            _sample(_metrics(u), "maestro_guard_limit_backend_up", '{backend="redis"}') == 1
            and 'digest="open"' in _metrics(u)
            for u in replicas.urls
        ),
        5,
        "every guard to use the store again",
    )
    # shared again: one guard alone admits the whole limit (its share was a third of it)
    statuses, _ = await _fire(replicas.urls[:1], "k-back", count=OUT_RPM + 20, workers=2)
    assert OUT_RPM <= statuses[200] <= OUT_RPM + 2, statuses


async def test_prometheus_fires_the_backend_down_alert(replicas: Replicas, tmp_path: Path) -> None:
    from prom import Prometheus, tool

    tool("prometheus")  # skips (or fails in CI) before anything starts when it is not built
    rules = dashboards.alert_rules()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "MaestroGuardLimitBackendDown":
                rule["for"] = "2s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    targets = [
        {
            "targets": [url.removeprefix("http://")],
            "labels": {"namespace": "test", "service": "llm", "pod": f"llm-{i}"},
        }
        for i, url in enumerate(replicas.urls)
    ]
    prom = Prometheus(
        tmp_path,
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "scrape_configs": [{"job_name": "guard", "static_configs": targets}],
        },
    )

    def alerts(state: str) -> set[str]:
        return {
            a["labels"]["pod"]
            for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "MaestroGuardLimitBackendDown" and a["state"] == state
        }

    try:
        await _until(
            lambda: len(prom.query('maestro_guard_limit_backend_up{backend="redis"} == 1')) == 3,
            20,
            "three scraped guards with the store up",
        )
        assert not alerts("firing") and not alerts("pending")
        replicas.redis.stop()
        try:
            await _until(lambda: alerts("firing") == {"llm-0", "llm-1", "llm-2"}, 20, "the alert to fire")
        finally:
            replicas.redis.start()
        await _until(lambda: not alerts("firing"), 20, "the alert to resolve")
    finally:
        prom.stop()

"""Guard latency with and without the monitor attached; prints JSON. Not a test (no timing asserts).

      .venv/bin/python bench/monitor_overhead.py [--requests 1000] [--rounds 3]

Three processes as in a pod: the fake upstream (vLLM stand-in from the guard tests), the guard,
and — in the "on" rounds — the monitor on the guard's event socket, with `logPrompts` on so the
monitor scores prompts and answers (its most expensive mode). Rounds alternate on/off so machine
noise hits both alike. Reported: guard request latency on vs off, CPU per request of the guard and
the monitor, and the guard's cost of handing one event over (`EventSender.send`) on vs off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


async def _load(url: str, n: int, concurrency: int) -> list[float]:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "What is the capital of France, please?"}],
    }
    lat: list[float] = []
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _send_cost(sock: str, n: int = 2000) -> dict[str, float]:
    """The guard's per-request cost of the event itself: one `EventSender.send` of a real event,
    paced at 1 kHz like a busy guard (a spinning sender would measure CPU contention instead)."""
    from maestro.workers.guard import codec
    from maestro.workers.guard.audit import EventSender

    raw = codec.dumps(
        {
            "requestId": "r",
            "model": "tiny",
            "route": "chat",
            "status": 200,
            "latencyMs": 12.5,
            "promptText": "What is the capital of France, please?",
            "responseText": "Paris." * 20,
        }
    )
    sender = EventSender(sock)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        sender.send(raw)
        ts.append(time.perf_counter_ns() - t0)
        time.sleep(0.001)
    sender.close()
    ts.sort()
    return {"p50_us": ts[n // 2] / 1000, "p99_us": ts[int(n * 0.99)] / 1000, "sent": sender.sent}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mb-", dir="/tmp")
    sock = os.path.join(tmp, "ev.sock")
    policy = os.path.join(tmp, "policy.json")
    with open(policy, "w") as fh:
        json.dump(
            {
                "name": "bench",
                "digest": "b",
                "servedModelName": "tiny",
                "request": {"pii": {"input": "allow", "output": "allow"}},
                "audit": {"enabled": False, "logPrompts": True},
            },
            fh,
        )
    os.makedirs(os.path.join(tmp, "keys"))
    env = {**os.environ, "MAESTRO_EVENTS_SOCKET": sock, "HF_HUB_OFFLINE": "1"}
    up_port, guard_port, mon_port = _port(), _port(), _port()
    procs = [
        subprocess.Popen(
            [PY, os.path.join(ROOT, "tests/unit/guard/fakeupstream.py"), "--port", str(up_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                PY,
                "-m",
                "maestro",
                "guard",
                "--upstream",
                f"http://127.0.0.1:{up_port}",
                "--port",
                str(guard_port),
                "--config",
                policy,
                "--keys-dir",
                os.path.join(tmp, "keys"),
                "--audit-log",
                os.devnull,
                "--reload-seconds",
                "0",
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    guard = f"http://127.0.0.1:{guard_port}"
    results: dict[str, list[float]] = {"off": [], "on": []}
    processed = 0
    send_cost: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    cpu: dict[str, float] = {"guard_off": 0.0, "guard_on": 0.0, "monitor": 0.0}
    wall: dict[str, float] = {"off": 0.0, "on": 0.0}
    try:
        await _wait_http(f"http://127.0.0.1:{up_port}/health")
        await _wait_http(guard + "/healthz")
        await _load(guard, 200, args.concurrency)  # warm-up
        for rnd in range(args.rounds):
            for mode in ("off", "on") if rnd % 2 == 0 else ("on", "off"):
                mon = None
                if mode == "on":
                    mon = subprocess.Popen(
                        [
                            PY,
                            "-m",
                            "maestro",
                            "monitor",
                            "--port",
                            str(mon_port),
                            "--events-socket",
                            sock,
                            "--vllm-metrics-url",
                            f"http://127.0.0.1:{up_port}/metrics",
                            "--log-level",
                            "ERROR",
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    await _wait_http(f"http://127.0.0.1:{mon_port}/healthz")
                    await asyncio.sleep(1.1)  # the guard retries a missing socket after 1 s
                g0, m0, t0 = _cpu_s(procs[1].pid), _cpu_s(mon.pid) if mon else 0.0, time.perf_counter()
                results[mode] += await _load(guard, args.requests, args.concurrency)
                wall[mode] += time.perf_counter() - t0
                cpu[f"guard_{mode}"] += _cpu_s(procs[1].pid) - g0
                if mon is not None:
                    cpu["monitor"] += _cpu_s(mon.pid) - m0
                    async with (
                        aiohttp.ClientSession() as s,
                        s.get(f"http://127.0.0.1:{mon_port}/healthz") as r,
                    ):
                        processed += (await r.json())["events"]["processed"]
                send_cost[mode].append(await asyncio.to_thread(_send_cost, sock))
                if mon is not None:
                    mon.send_signal(signal.SIGTERM)
                    mon.wait(10)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
    out = {
        mode: {
            "requests": len(xs),
            "p50_ms": round(_pct(xs, 0.5), 3),
            "p99_ms": round(_pct(xs, 0.99), 3),
            "mean_ms": round(statistics.fmean(xs) * 1000, 3),
        }
        for mode, xs in results.items()
    }
    n = {mode: len(xs) for mode, xs in results.items()}
    out["cpu_us_per_request"] = {
        "guard_off": round(cpu["guard_off"] / n["off"] * 1e6, 1),
        "guard_on": round(cpu["guard_on"] / n["on"] * 1e6, 1),
        "monitor": round(cpu["monitor"] / n["on"] * 1e6, 1),
    }
    out["throughput_rps"] = {mode: round(n[mode] / wall[mode], 1) for mode in wall}
    out["guard_event_send_us"] = {
        mode: {k: round(statistics.median(r[k] for r in runs), 2) for k in ("p50_us", "p99_us")}
        for mode, runs in send_cost.items()
    }
    out["monitor_events_processed"] = processed
    out["config"] = {
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "logPrompts": True,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())

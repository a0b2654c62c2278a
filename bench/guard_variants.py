"""Variant routing overhead: the guard with a server-side prompt and a traffic split vs without.

The same machinery as `bench/guard.py` (its fast upstream, raw keep-alive load generator, pinned
cores, interleaved rounds, request-by-request alternation in the unloaded phase), three targets:
- `direct`: the upstream itself;
- `variants_off`: the guard with bench/guard.py's realistic policy (auth, per-key limits, input PII
  redaction, audit), the client sending its own system prompt;
- `variants_on`: the same guard and policy plus a server-side prompt and two variants (the base model
  70 %, an adapter with its own prompt, template and sampling defaults 30 %), the client sending only
  its user message and a distinct OpenAI `user` id per request, so every request is hashed, routed,
  rewritten (model, system message, template, sampling) and re-serialized.
The split the guard really applied is read back from its audit log (`split`).

    .venv/bin/python bench/guard_variants.py --json [--rounds 4] [--duration 1.0] [--requests 2000]

Prints `{"direct":{…},"variants_off":{…},"variants_on":{…},"routing_added_p50_ms":…,…}`;
`routing_added_p50_ms` (on - off, the cost of routing) is the number the issue bounds (≤ 1 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guard as gb
from maestro.api.experiments import GuardPrompt, GuardVariant, Prompt, SamplingDefaults

ROOT = gb.ROOT
TUNED_SYSTEM = gb.SYSTEM + " Keep every answer under fifty words."
TEMPLATE = "Customer message: {{input}}"


def variants_policy() -> dict[str, Any]:
    """bench/guard.py's policy plus a prompt and a 70/30 split (the upstream answers any model name)."""
    base = GuardPrompt.of(Prompt(system=gb.SYSTEM, version="v1"))
    tuned = GuardPrompt.of(Prompt(system=TUNED_SYSTEM, template=TEMPLATE, version="v2"))
    return {
        **gb.GUARD_POLICY,
        "prompt": base.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "variants": [
            GuardVariant(name="control", model="tiny", weight=70).model_dump(
                by_alias=True, exclude_none=True, mode="json"
            ),
            GuardVariant(
                name="tuned",
                model="tiny-tuned",
                weight=30,
                prompt=tuned,
                sampling=SamplingDefaults(temperature=0.3, top_p=0.9),
            ).model_dump(by_alias=True, exclude_none=True, mode="json"),
        ],
        "routingSalt": "bench/chat",
    }


def routed_bodies(stream: bool) -> list[bytes]:
    """What a client of a prompted endpoint sends: its user message and its end user's id."""
    out = []
    for i in range(gb.VARIANTS):
        body: dict[str, Any] = {
            "model": "tiny",
            "messages": [{"role": "user", "content": gb.PROMPT.format(i=i)}],
            "max_tokens": 64,
            "user": f"user-{i}",
        }
        if stream:
            body["stream"] = True
        out.append(json.dumps(body).encode())
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    load_core, proxy_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="maestro-bench-variants-"))
    (work / "keys").mkdir()
    (work / "keys" / "bench").write_text(gb.API_KEY)
    (work / "off.json").write_text(json.dumps(gb.GUARD_POLICY))
    (work / "on.json").write_text(json.dumps(variants_policy()))
    up_port = gb._free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    load_before = gb._load()
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            gb._process(
                [py, str(ROOT / "bench" / "_upstream.py"), "--port", str(up_port)],
                up_port,
                core=load_core,
                ready_path="/health",
            )
        )
        targets = [gb.Target("direct", up_port, gb.API_KEY, open_loop=False)]
        for name, policy in (("variants_off", "off.json"), ("variants_on", "on.json")):
            port = gb._free_port()
            env = {
                "MAESTRO_GUARD_CONFIG": str(work / policy),
                "MAESTRO_GUARD_KEYS_DIR": str(work / "keys"),
                "MAESTRO_UPSTREAM": upstream,
                "MAESTRO_GUARD_PORT": str(port),
                "MAESTRO_GUARD_HOST": "127.0.0.1",
                "MAESTRO_AUDIT_LOG": str(work / f"audit-{name}.jsonl"),
                "MAESTRO_EVENTS_SOCKET": str(work / f"ev-{name}.sock"),
                "MAESTRO_LOG_LEVEL": "WARNING",
            }
            stack.enter_context(
                gb._process(
                    [py, "-m", "maestro", "guard"],
                    port,
                    core=proxy_core,
                    env=env,
                    ready_path="/readyz",
                    log=work / f"guard-{name}.log",
                )
            )
            target = gb.Target(name, port, gb.API_KEY, open_loop=False)
            if name == "variants_on":
                target.chat = [
                    gb._request("/v1/chat/completions", b, gb.API_KEY) for b in routed_bodies(False)
                ]
                target.stream = [
                    gb._request("/v1/chat/completions", b, gb.API_KEY) for b in routed_bodies(True)
                ]
            targets.append(target)
        gb.measure_rounds(targets, args)
        for t in targets:
            result[t.name] = t.summary(args.rate)
    audit = work / "audit-variants_on.jsonl"
    lines = [json.loads(line) for line in audit.read_text().splitlines() if line] if audit.exists() else []
    split = Counter(rec.get("variant") for rec in lines)
    total = sum(split.values())
    d, off, on = result["direct"], result["variants_off"], result["variants_on"]
    result.update(
        {
            "routing_added_p50_ms": round(on["p50_ms"] - off["p50_ms"], 3),
            "routing_added_p99_ms": round(on["p99_ms"] - off["p99_ms"], 3),
            "on_added_p50_ms": round(on["p50_ms"] - d["p50_ms"], 3),
            "off_added_p50_ms": round(off["p50_ms"] - d["p50_ms"], 3),
            "stream_ttfb_routing_added_ms": round(on["stream_ttfb_p50_ms"] - off["stream_ttfb_p50_ms"], 3),
            "on_vs_off_rps": round(on["rps"] / off["rps"], 3),
            "split": {
                str(k): round(100 * v / total, 2) for k, v in sorted(split.items(), key=lambda kv: str(kv[0]))
            }
            if total
            else {},
            "split_requests": total,
            "goal_p50_added_ms": 1.0,
            "machine": {
                "cores": len(cores),
                "loadavg_before": load_before,
                "loadavg_after": gb._load(),
            },
            "config": {
                "rounds": args.rounds,
                "slice_s": args.duration,
                "requests_unloaded": args.requests,
                "concurrency": args.concurrency,
                "weights": {"control": 70, "tuned": 30},
            },
        }
    )
    shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all targets")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per saturation slice, per round")
    p.add_argument("--requests", type=int, default=2000, help="requests in the unloaded phase, per target")
    p.add_argument("--concurrency", type=int, default=32, help="connections in the saturation phase")
    p.add_argument("--warmup", type=int, default=300)
    args = p.parse_args(argv)
    args.rate = 0.0  # no open-loop phase here (bench/guard.py measures it)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("direct", "variants_off", "variants_on"):
            print(f"{name:13s} {result[name]}")
        print(
            json.dumps(
                {k: v for k, v in result.items() if k not in ("direct", "variants_off", "variants_on")},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

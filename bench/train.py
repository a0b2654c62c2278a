"""Trainer throughput vs a plain hand-written torch loop: same model, data, batches, in one run.

    python bench/train.py [--method lora|full] [--steps 60] [--batch-size 8] [--repeats 3] --json

Both sides get a freshly loaded model (same seed → same weights and LoRA init), the same encoded
examples and the same micro-batches in the same order. The baseline is the loop anyone would write:
collate → forward with labels → backward → AdamW step. Maestro's side is `loop.train` as the worker
runs it (token-normalised loss, grad clipping, LR schedule, progress bookkeeping; checkpoints off).
Runs alternate (maestro, baseline, maestro, …) so background load hits both alike; each side
reports the median. On a GPU the JSON adds an approximate MFU (6·params·tokens/s over peak).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# dense bf16 peak FLOP/s by device-name substring, for the MFU estimate
_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def _dataset(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        filler = " ".join(
            rng.choice(["red", "fox", "dog", "happy", "big", "city"]) for _ in range(rng.randint(0, 20))
        )
        rows.append({"prompt": f"What is {a} plus {b}? {filler}", "completion": f"{a} plus {b} is {a + b}."})
    return rows


def _setup(model_dir: Path, spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    import torch

    from maestro.workers.train import models
    from maestro.workers.train.config import parse_spec
    from maestro.workers.train.dist import Topology

    cfg = parse_spec(spec)
    topo = Topology.init()
    torch.manual_seed(cfg.hyper.seed)
    precision = models.select_precision(cfg.hyper.precision, topo.device, cfg.method)
    model = models.load_model(model_dir, cfg, precision, topo.device)
    return cfg, topo, precision, model


def run_maestro(
    model_dir: Path, spec: dict[str, Any], examples: list[Any], pad: int
) -> tuple[float, float, int]:
    """(tokens/s over wall time, tokens/s over this process's CPU time, tokens)."""
    from maestro.workers.train.loop import train, wrap

    cfg, topo, precision, model = _setup(model_dir, spec)
    engine = wrap(model, cfg, topo, precision)
    c0 = time.process_time()
    res = train(engine, examples, cfg, topo, precision, pad, None, None)
    cpu = time.process_time() - c0
    return res.tokens / res.seconds, res.tokens / cpu, res.tokens


def run_baseline(
    model_dir: Path, spec: dict[str, Any], examples: list[Any], pad: int
) -> tuple[float, float, int]:
    """The plain loop. Uses the worker's batch order only so both sides see identical batches."""
    import torch

    from maestro.workers.train.data import collate
    from maestro.workers.train.loop import Batches, Plan

    cfg, topo, precision, model = _setup(model_dir, spec)
    plan = Plan.make(len(examples), cfg, 1)
    batches = Batches(examples, cfg, plan, topo)
    # lists of examples per step, as a DataLoader yields them; collated inside the timed loop
    steps = [batches.for_step(s) for s in range(1, plan.total_steps + 1)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.hyper.learning_rate)
    model.train()
    dev = topo.device
    tokens = 0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for micro in steps:
        for mb in micro:
            b = collate(mb, pad)  # what a DataLoader's collate_fn does inside the loop
            with torch.autocast(
                dev.type, dtype=precision.compute_dtype, enabled=precision.compute_dtype is not None
            ):
                out = model(
                    input_ids=b["input_ids"].to(dev),
                    attention_mask=b["attention_mask"].to(dev),
                    labels=b["labels"].to(dev),
                )
            out.loss.backward()
            tokens += int(b["attention_mask"].sum())
        opt.step()
        opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - t0), tokens / (time.process_time() - c0), tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path, help="HF model dir (default: build the tiny Llama)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from maestro.workers.train.data import DataStats, Encoder
    from maestro.workers.train.models import load_tokenizer
    from maestro.workers.train.tinymodel import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny", seed=0)
        tok = load_tokenizer(model_dir)
        enc = Encoder(tok, args.seq_len)
        stats = DataStats()
        examples = [
            e
            for r in _dataset(args.steps * args.batch_size * args.grad_accum, 0)
            if (e := enc.encode(r, "prompt-completion", stats)) is not None
        ]
        spec = {
            "baseModel": {"uri": f"file://{model_dir}"},
            "datasetRef": {"name": "bench"},
            "method": args.method,
            "hyperparameters": {
                "maxSteps": args.steps,
                "batchSize": args.batch_size,
                "gradientAccumulationSteps": args.grad_accum,
                "learningRate": 1e-3,
                "maxSeqLength": args.seq_len,
                "seed": 0,
                "lora": {"r": 16, "alpha": 32},
            },
        }
        warm = {**spec, "hyperparameters": {**spec["hyperparameters"], "maxSteps": 3}}
        run_maestro(model_dir, warm, examples, tok.pad_token_id)
        run_baseline(model_dir, warm, examples, tok.pad_token_id)
        ours, base = [], []
        for _ in range(args.repeats):
            ours.append(run_maestro(model_dir, spec, examples, tok.pad_token_id))
            base.append(run_baseline(model_dir, spec, examples, tok.pad_token_id))
        n_params = sum(p.numel() for p in _setup(model_dir, spec)[3].parameters())

    assert {t for *_, t in ours} == {t for *_, t in base}, "both sides must process the same tokens"
    tps, btps = statistics.median(r[0] for r in ours), statistics.median(r[0] for r in base)
    ctps, cbtps = statistics.median(r[1] for r in ours), statistics.median(r[1] for r in base)
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    result: dict[str, Any] = {
        "tokens_per_s": round(tps, 1),
        "baseline_tokens_per_s": round(btps, 1),
        "ratio": round(tps / btps, 3),
        "device": device,
        "method": args.method,
        "steps": args.steps,
        "batch_size": args.batch_size,
        # CPU-time throughput: far less sensitive than wall time to other load on a shared host
        "cpu_time_tokens_per_s": round(ctps, 1),
        "cpu_time_baseline_tokens_per_s": round(cbtps, 1),
        "cpu_time_ratio": round(ctps / cbtps, 3),
        "threads": torch.get_num_threads(),
        "tokens_per_run": ours[0][2],
        "params": n_params,
        "runs": {"maestro": [round(r[0], 1) for r in ours], "baseline": [round(r[0], 1) for r in base]},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        peak = next((v for k, v in _PEAK.items() if k in device), None)
        if peak:
            result["mfu_approx"] = round(6 * n_params * tps / peak, 4)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

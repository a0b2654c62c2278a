"""The training loop: a plain torch loop, exactly resumable, with DDP/FSDP when distributed.

Why not HF Trainer: the loop below is what the benchmark compares against (a hand-written torch
loop), and owning it makes resume exact. Everything a step depends on is a function of the step
number (data order = permutation seeded by (seed, epoch); micro-batches of a step are fixed by
the step index) plus the checkpointed state, so a restarted pod replays the same computation.

Loss is normalised per *token* over the whole optimizer step (all micro-batches and all ranks),
so gradient accumulation and world size do not change what is optimised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from maestro.workers.train.checkpoint import CheckpointManager
from maestro.workers.train.config import ConfigError, TrainConfig
from maestro.workers.train.data import IGNORE_INDEX, Example, collate
from maestro.workers.train.dist import Topology
from maestro.workers.train.models import Precision
from maestro.workers.train.progress import ProgressReporter

log = logging.getLogger("maestro.train.loop")

#: Chaos hook for resume tests: SIGKILL this process right after the given optimizer step.
ENV_FAULT_KILL_AT_STEP = "MAESTRO_TRAIN_FAULT_KILL_AT_STEP"


class TrainingError(RuntimeError):
    """Training itself failed (NaN/inf loss, out of memory)."""


@dataclass(frozen=True)
class Plan:
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def make(cls, n_examples: int, cfg: TrainConfig, world: int) -> Plan:
        h = cfg.hyper
        if n_examples == 0:
            raise ValueError("the training split has no usable examples")
        micro = math.ceil(n_examples / (h.batch_size * world))
        steps_per_epoch = math.ceil(micro / h.gradient_accumulation_steps)
        total = h.max_steps or max(1, math.ceil(h.epochs * steps_per_epoch))
        return cls(micro, steps_per_epoch, total, math.ceil(h.warmup_ratio * total))


@dataclass
class LoopResult:
    steps: int
    total_steps: int
    epochs: float
    losses: list[float] = field(default_factory=list)  # per optimizer step, from step 1
    tokens: int = 0  # tokens processed by this process's run (all ranks), excluding replayed ones
    seconds: float = 0.0
    resumed_from: int | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Batches:
    """Deterministic micro-batches: step → list of this rank's micro-batches."""

    def __init__(self, examples: Sequence[Example], cfg: TrainConfig, plan: Plan, topo: Topology) -> None:
        self.examples = examples
        self.bs = cfg.hyper.batch_size
        self.ga = cfg.hyper.gradient_accumulation_steps
        self.seed = cfg.hyper.seed
        self.plan = plan
        self.topo = topo
        self._epoch = -1
        self._order: list[int] = []

    def _order_for(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            import torch

            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.examples), generator=g).tolist()
            need = self.plan.micro_per_epoch * self.bs * self.topo.world
            if self.topo.world > 1 and len(order) < need:  # every rank must run the same number of passes
                order = order + order[: need - len(order)]
            self._epoch, self._order = epoch, order
        return self._order

    def for_step(self, step: int) -> list[list[Example]]:
        """Micro-batches of 1-based optimizer step `step`."""
        epoch, k = divmod(step - 1, self.plan.steps_per_epoch)
        order = self._order_for(epoch)
        out = []
        for m in range(k * self.ga, min((k + 1) * self.ga, self.plan.micro_per_epoch)):
            start = (m * self.topo.world + self.topo.rank) * self.bs
            idx = order[start : start + self.bs]
            if idx:
                out.append([self.examples[i] for i in idx])
        return out


def make_optimizer(model: Any, cfg: TrainConfig, plan: Plan, device: Any) -> tuple[Any, Any]:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.hyper.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(groups, lr=cfg.hyper.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    warm, total = plan.warmup_steps, plan.total_steps

    kind = cfg.hyper.lr_scheduler

    def lr_at(step: int) -> float:  # linear warmup, then cosine/linear decay to 10% of peak, or flat
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total - warm))
        if kind == "linear":
            return 1.0 - 0.9 * frac
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


@dataclass
class Engine:
    """The model as the loop drives it: `module` runs forward, `inner` is what gets saved."""

    module: Any
    inner: Any
    kind: str = "single"  # single | ddp | fsdp

    def sync(self, enabled: bool) -> contextlib.AbstractContextManager[Any]:
        if self.kind == "ddp" and not enabled:
            return self.module.no_sync()  # type: ignore[no-any-return]
        if self.kind == "fsdp":
            self.module.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    @property
    def sharded(self) -> bool:
        return self.kind == "fsdp"


def wrap(model: Any, cfg: TrainConfig, topo: Topology, precision: Precision) -> Engine:
    """DDP for adapters and small full fine-tunes; FSDP2 (per decoder layer) for full fine-tunes."""
    if not topo.distributed:
        return Engine(model, model)
    use_fsdp = cfg.fsdp if cfg.fsdp is not None else (cfg.method == "full" and topo.device.type == "cuda")
    if use_fsdp:
        if cfg.method != "full":
            raise ConfigError("spec.distributed.fsdp is for method full; adapters train with DDP")
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=precision.compute_dtype, reduce_dtype=torch.float32)
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        for layer in layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return Engine(model, model, "fsdp")
    from torch.nn.parallel import DistributedDataParallel

    ids = [topo.device.index] if topo.device.type == "cuda" else None
    return Engine(DistributedDataParallel(model, device_ids=ids), model, "ddp")


def _autocast(device: Any, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    import torch

    if precision.compute_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.compute_dtype)


def train(
    engine: Engine,
    examples: Sequence[Example],
    cfg: TrainConfig,
    topo: Topology,
    precision: Precision,
    pad_id: int,
    ckpt: CheckpointManager | None,
    reporter: ProgressReporter | None,
    tracker: Any = None,
) -> LoopResult:
    """Run the optimiser steps; `tracker` (tracking.Tracker, rank 0) gets loss, LR and tokens/s per step."""
    import torch

    plan = Plan.make(len(examples), cfg, topo.world)
    optimizer, scheduler = make_optimizer(engine.inner, cfg, plan, topo.device)
    scaler = torch.amp.GradScaler("cuda") if precision.use_scaler else None
    result = LoopResult(steps=0, total_steps=plan.total_steps, epochs=0.0)

    latest = ckpt.latest() if ckpt is not None and topo.is_main else None
    latest = topo.broadcast_object(latest)
    if latest is not None and ckpt is not None:
        state = ckpt.load(latest, engine.inner, optimizer, scheduler, scaler, topo, engine.sharded)
        result.steps = result.resumed_from = int(state["step"])
        result.losses = [float(x) for x in state.get("losses", [])][: result.steps]
        log.info("resumed from %s (step %d/%d)", latest, result.steps, plan.total_steps)
        if tracker is not None:  # the run continues at this step (and gets the losses it lacks)
            tracker.resumed(result.steps, result.losses)
    else:
        torch.manual_seed(cfg.hyper.seed + topo.rank)  # dropout streams; differ per rank

    batches = Batches(examples, cfg, plan, topo)
    fault_at = int(os.environ.get(ENV_FAULT_KILL_AT_STEP) or 0)
    every = cfg.checkpoint_every
    engine.module.train()
    start = time.perf_counter()
    tokens_local = 0
    for step in range(result.steps + 1, plan.total_steps + 1):
        micro = batches.for_step(step)
        tensors = [collate(mb, pad_id) for mb in micro]
        n_label_local = sum(int((t["labels"][:, 1:] != IGNORE_INDEX).sum()) for t in tensors)
        n_label = topo.all_sum([float(n_label_local)])[0] if topo.distributed else float(n_label_local)
        loss_sum = torch.zeros((), device=topo.device, dtype=torch.float32)
        for i, t in enumerate(tensors):
            last = i == len(tensors) - 1
            ids = t["input_ids"].to(topo.device, non_blocking=True)
            mask = t["attention_mask"].to(topo.device, non_blocking=True)
            labels = t["labels"].to(topo.device, non_blocking=True)
            with engine.sync(last), _autocast(topo.device, precision):
                logits = engine.module(input_ids=ids, attention_mask=mask, use_cache=False).logits
                ce = token_ce_sum(logits, labels)
                loss = ce * (topo.world / max(n_label, 1.0))
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            loss_sum += ce.detach()
            tokens_local += int(t["attention_mask"].sum())
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.hyper.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in engine.inner.parameters() if p.requires_grad], cfg.hyper.max_grad_norm
            )
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = float(optimizer.param_groups[0]["lr"])  # this step's, before the schedule moves on
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        step_loss_sum = topo.all_sum([float(loss_sum)])[0] if topo.distributed else float(loss_sum)
        step_loss = step_loss_sum / max(n_label, 1.0)
        if not math.isfinite(step_loss):
            raise TrainingError(
                f"loss is {step_loss} at step {step}: training diverged; lower learningRate or use bf16/fp32"
            )
        result.losses.append(step_loss)
        result.steps = step
        elapsed = time.perf_counter() - start
        done = step - (result.resumed_from or 0)
        tps = tokens_local * topo.world / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (plan.total_steps - step) if done else None
        result.epochs = step / plan.steps_per_epoch
        if reporter is not None:
            reporter.update(
                step, plan.total_steps, step_loss, tps, eta, result.epochs, force=step == plan.total_steps
            )
        if tracker is not None:  # an append to a buffer: the network is the tracker thread's
            tracker.log_metrics(step, {"loss": step_loss, "learningRate": lr, "tokensPerSecond": tps})
        if ckpt is not None and (step % every == 0 or step == plan.total_steps):
            state = {"losses": result.losses, "epoch": result.epochs, "totalSteps": plan.total_steps}
            ckpt.save(step, engine.inner, optimizer, scheduler, scaler, state, topo, engine.sharded)
        if fault_at and step == fault_at:
            log.warning("%s=%d: killing this process (resume test)", ENV_FAULT_KILL_AT_STEP, fault_at)
            os.kill(os.getpid(), signal.SIGKILL)
    result.seconds = time.perf_counter() - start
    result.tokens = tokens_local * topo.world
    result.epochs = result.steps / plan.steps_per_epoch
    return result


def token_ce_sum(logits: Any, labels: Any) -> Any:
    """Summed next-token cross entropy over labelled positions.

    Shifts the labels (padded with IGNORE_INDEX) rather than slicing the logits, so the [B, T, V]
    logits are never copied: with a 128k vocabulary that copy would cost as much as the logits.
    """
    import torch.nn.functional as F

    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def iter_steps(losses: Sequence[float], points: int = 12) -> Iterator[list[float]]:
    """A few [step, loss] points of the curve for the summary (first, last and evenly between)."""
    n = len(losses)
    if n == 0:
        return
    k = min(points, n)
    idx = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
    for i in idx:
        yield [i + 1, round(losses[i], 5)]

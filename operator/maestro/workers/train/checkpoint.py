"""Checkpoints that make a killed pod's restart continue exactly where the run stopped.

A checkpoint holds everything the next optimizer step depends on: the trainable weights
(safetensors), optimizer, LR scheduler and grad-scaler state, the RNG states (dropout) and the
position in the data order. The data order is a pure function of (seed, epoch), so with these the
resumed run is bit-identical to an uninterrupted one on CPU.

Writes are atomic: a checkpoint is built in `step-N.tmp/` and renamed; `state.json` is written
last, so a directory without it (pod killed mid-write) is ignored and cleaned up.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from maestro.workers.train.dist import Topology

log = logging.getLogger("maestro.train.checkpoint")

STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIM_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


class CheckpointMismatch(ValueError):
    """The output dir holds checkpoints of a different run (another spec/dataset/base model)."""


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step-"))
    except ValueError:
        return -1


class CheckpointManager:
    def __init__(self, root: Path, keep_last: int, fingerprint: str) -> None:
        self.root = root
        self.keep_last = max(1, keep_last)
        self.fingerprint = fingerprint

    def complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.glob("step-*")
            if p.is_dir() and _step_of(p) >= 0 and (p / STATE_FILE).is_file()
        ]
        return sorted(found, key=_step_of)

    def latest(self) -> Path | None:
        """The newest complete checkpoint of this run; raises CheckpointMismatch for a foreign one."""
        done = self.complete()
        if not done:
            return None
        state = json.loads((done[-1] / STATE_FILE).read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatch(
                f"{done[-1]} was written by a different training configuration (spec, dataset or base "
                "model changed); resume is unsafe. Point the job at a fresh output location or delete "
                "the checkpoints."
            )
        return done[-1]

    def save(
        self,
        step: int,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        state: dict[str, Any],
        topo: Topology,
        sharded: bool = False,
    ) -> Path:
        """Collective: every rank calls it; rank 0 writes. `model` is the unwrapped module."""
        import torch
        from safetensors.torch import save_file

        weights, optim = trainable_state(model, optimizer, sharded)
        rngs = topo.gather_objects(capture_rng())
        final = self.root / f"step-{step}"
        if topo.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f"step-{step}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_file(weights, str(tmp / WEIGHTS_FILE))
            torch.save(
                {
                    "optimizer": optim,
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                },
                tmp / OPTIM_FILE,
            )
            torch.save(rngs, tmp / RNG_FILE)
            meta = {**state, "step": step, "worldSize": topo.world, "fingerprint": self.fingerprint}
            (tmp / STATE_FILE).write_text(json.dumps(meta))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            self.prune()
        topo.barrier()
        return final

    def prune(self) -> None:
        for stale in self.root.glob("step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        done = self.complete()
        for old in done[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def load(
        self,
        path: Path,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        topo: Topology,
        sharded: bool = False,
    ) -> dict[str, Any]:
        """Every rank reads `path` (multi-node resume needs the output volume shared across pods)."""
        import torch
        from safetensors.torch import load_file

        weights = load_file(str(path / WEIGHTS_FILE))
        blob = torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=False)
        load_trainable_state(model, optimizer, weights, blob["optimizer"], sharded, path)
        scheduler.load_state_dict(blob["scheduler"])
        if scaler is not None and blob.get("scaler") is not None:
            scaler.load_state_dict(blob["scaler"])
        rngs = torch.load(path / RNG_FILE, map_location="cpu", weights_only=False)
        restore_rng(rngs[topo.rank] if len(rngs) == topo.world else rngs[0])
        state: dict[str, Any] = json.loads((path / STATE_FILE).read_text())
        return state


def trainable_state(model: Any, optimizer: Any, sharded: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable weights on CPU, optimizer state), gathered to full tensors when FSDP-sharded."""
    import torch

    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(model, options=opts)
        weights = {n: t.contiguous() for n, t in full.items() if n in names and isinstance(t, torch.Tensor)}
        return weights, get_optimizer_state_dict(model, optimizer, options=opts)
    weights = {
        n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if n in names
    }
    return weights, optimizer.state_dict()


def load_trainable_state(
    model: Any, optimizer: Any, weights: dict[str, Any], optim: dict[str, Any], sharded: bool, path: Path
) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise CheckpointMismatch(f"{path} lacks trainable weights {missing[:3]}; it belongs to another run")
    if sharded:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, weights, options=opts)
        set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
        return
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(optim)


def capture_rng() -> dict[str, Any]:
    import torch

    rng: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    import torch

    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])

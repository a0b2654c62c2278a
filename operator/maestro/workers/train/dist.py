"""Process topology: single process, DDP, or FSDP under torchrun; and the torchrun re-exec.

The operator runs one pod per node (an Indexed Job when `nodes > 1`) with the standard rendezvous
env (MASTER_ADDR/PORT, NNODES, NODE_RANK or JOB_COMPLETION_INDEX). `maestro train` in such a pod
is the launcher: with more than one process in total it re-execs itself under torchrun
(`launch_argv`), one process per GPU. Inside torchrun (or when RANK/WORLD_SIZE are set directly),
`Topology.init()` joins the process group. Only rank 0 writes outputs.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from maestro.workers.train import contract

log = logging.getLogger("maestro.train.dist")


def _int_env(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    try:
        return int(v) if v else default
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {v!r}") from None


def launch_argv(argv: list[str], env: dict[str, str] | None = None) -> list[str] | None:
    """torchrun argv to re-exec `maestro train` with, or None when this process should just train.

    None when already inside torchrun (TORCHELASTIC_RUN_ID) or with RANK set by the operator, or
    when there is one process in total.
    """
    env = dict(os.environ if env is None else env)
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and env.get(contract.ENV_WORLD_SIZE, "1") != "1"):
        return None
    nproc = int(env.get(contract.ENV_NPROC_PER_NODE) or "1")
    nnodes = int(env.get(contract.ENV_NNODES) or "1")
    if nproc * nnodes <= 1:
        return None
    node_rank = env.get(contract.ENV_NODE_RANK) or env.get(contract.ENV_JOB_COMPLETION_INDEX) or "0"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        f"--node-rank={node_rank}",
        f"--master-addr={env.get(contract.ENV_MASTER_ADDR, '127.0.0.1')}",
        f"--master-port={env.get(contract.ENV_MASTER_PORT, str(contract.DEFAULT_MASTER_PORT))}",
        "-m",
        "maestro.workers.train",
        "run",
        "--no-launch",
        *argv,
    ]
    return cmd


@dataclass
class Topology:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None  # torch.device
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def init(cls) -> Topology:
        import torch

        world = _int_env(contract.ENV_WORLD_SIZE, 1)
        rank = _int_env(contract.ENV_RANK, 0)
        local = _int_env(contract.ENV_LOCAL_RANK, 0)
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        topo = cls(rank=rank, world=world, local_rank=local, device=device)
        if world > 1:
            import torch.distributed as dist

            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
            topo.initialized = True
            log.info("joined process group: rank %d/%d (%s, %s)", rank, world, backend, device)
        return topo

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.initialized:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(x) for x in t.tolist()]

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.initialized:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.initialized:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False

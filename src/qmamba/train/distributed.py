"""Process-group plumbing for ``torchrun``: one process without it, N with it (NCCL on GPUs, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from qmamba.utils.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (an immutable value)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group if there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, dev)


def all_reduce_sum(value: float | int, env: DistEnv) -> float:
    if not env.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def finish(env: DistEnv) -> None:
    """The end of a run that went well: wait until every rank is done communicating, then leave the group.
    Without the barrier a rank that finished first could tear its connections down while a peer still
    reads from them (gloo then aborts that peer)."""
    barrier(env)
    shutdown(env)


def shutdown(env: DistEnv) -> None:
    """Leave the process group (also after an error, where a barrier could wait forever on a dead rank)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()

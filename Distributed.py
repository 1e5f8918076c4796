"""Data-parallel training under torchrun: process-group setup from the environment, and the few collectives.

Owns reading torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), choosing the backend
(NCCL on CUDA, gloo on CPU) and each rank's device, tearing the group down on every exit
path, and the collectives training needs: summing tensors, sharing a Python object from
rank 0. Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op, so plain
``python Engine.py`` stays a single process with no process group.

Usage:
    with process_group("auto") as dist:       # dist.rank, dist.world_size, dist.device, dist.is_main
        total = dist.all_reduce_sum(torch.tensor([loss_sum, count]))
    torchrun --standalone --nproc_per_node=2 Engine.py --mode training ...
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and the device it owns."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints progress and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (float64 on the CPU side, so sums match one process's)."""
        if not self.enabled:
            return values
        t = values.detach().to(self.device, torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a group)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def share(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (other ranks' argument is ignored). An exception is shared too."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' fails clearly when there is none.

    A CUDA process uses ``cuda:local_rank`` (one GPU per torchrun process).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available (use --device auto or cpu)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s): "
                               "start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[DistContext]:
    """Join torchrun's process group if there is one; always leave it on exit (errors and Ctrl-C too)."""
    rank, world, local = env_world()
    device = resolve_device(device_name, local)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield DistContext(rank, world, local, device)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

"""torchrun / DistributedDataParallel plumbing: one code path from one CPU process to many GPUs.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we run as a single process. The
backend is NCCL on GPUs and Gloo on CPUs (Gloo is what lets the 2-process test run on a laptop).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``train.device``: "cuda" (one GPU per local process), "cpu", or "auto".

    "auto" takes the GPUs only when there is one for every process on this machine
    (``LOCAL_WORLD_SIZE``, set by torchrun); otherwise every process takes the CPU, the same choice
    on every rank, so that they agree on the backend (NCCL vs Gloo) instead of rank 1 asking a
    1-GPU machine for ``cuda:1``.
    """
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= local_processes else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device = cuda, but torch sees no CUDA device: use train.device cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"train.device = cuda: local process {local_rank} has no GPU of its own "
                               f"({torch.cuda.device_count()} visible); start at most that many processes per machine")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sums ``t`` over the ranks, in place, and returns ``t`` (callers use either).

    Callers build their small bookkeeping tensors (the step's loss, evaluation totals) on the CPU,
    but NCCL, the backend on GPUs, reduces CUDA tensors only ("No backend type associated with
    device type cpu"). So the reduction runs on the process group's device, ``info.device`` (see
    init_distributed: NCCL for a CUDA device, Gloo for the CPU), and the sum is copied back into
    ``t``. On the CPU ``t.to`` returns ``t`` itself: no copy.
    """
    if info.distributed:
        on_device = t.to(info.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        if on_device is not t:
            t.copy_(on_device)
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()

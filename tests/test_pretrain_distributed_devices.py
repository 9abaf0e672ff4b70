"""``all_reduce_sum`` reduces on the process group's device, whatever device the caller's tensor is on.

The trainer builds its loss and evaluation totals on the CPU; NCCL (the backend on GPUs) reduces
CUDA tensors only. No GPU is needed here: ``torch.distributed.all_reduce`` is replaced by a fake
that checks what it is given, and ``Tensor.to`` towards CUDA by a spy that hands back a marked CPU
copy (standing in for the CUDA copy), so a reduction of the caller's CPU tensor itself fails.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from nasnet_det.pretrain.distributed import DistInfo, all_reduce_sum

CUDA1 = torch.device("cuda", 1)


@pytest.fixture
def fake_cuda(monkeypatch):
    """``Tensor.to(cuda...)`` gives a CPU clone recorded in the returned list (the "device copy");
    other moves are torch's own."""
    real_to = torch.Tensor.to
    copies: list[tuple[torch.device, torch.Tensor]] = []

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
            copy = self.detach().clone()
            copies.append((torch.device(target), copy))
            return copy
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return copies


@pytest.fixture
def reduced(monkeypatch):
    """A fake all_reduce over 2 equal ranks (the sum doubles the tensor); it records what it got."""
    seen: list[torch.Tensor] = []

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        assert op == dist.ReduceOp.SUM
        seen.append(tensor)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return seen


def test_cpu_tensor_is_reduced_on_the_groups_cuda_device_and_copied_back(fake_cuda, reduced):
    info = DistInfo(rank=1, local_rank=1, world_size=2, device=CUDA1)
    totals = torch.tensor([3.0, 4.0, 1.5, 8.0], dtype=torch.float64)  # as trainer.evaluate builds them
    out = all_reduce_sum(totals, info)
    assert len(fake_cuda) == 1 and fake_cuda[0][0] == CUDA1, "the tensor must go to info.device"
    assert len(reduced) == 1 and reduced[0] is fake_cuda[0][1], "NCCL must get the device copy, not the CPU tensor"
    # evaluate() reads the sum in place, the training loop from the return value: both see it
    assert out is totals
    assert totals.tolist() == [6.0, 8.0, 3.0, 16.0] and totals.device.type == "cpu"
    loss = all_reduce_sum(torch.tensor([0.25], dtype=torch.float64), info)
    assert loss.item() / info.world_size == 0.25 and loss.dtype == torch.float64


def test_gloo_group_reduces_the_callers_tensor_itself(fake_cuda, reduced):
    info = DistInfo(rank=0, world_size=2, device=torch.device("cpu"))
    t = torch.ones(3)
    assert all_reduce_sum(t, info) is t
    assert reduced == [t] and reduced[0] is t and not fake_cuda  # no copy on the CPU
    assert t.tolist() == [2.0, 2.0, 2.0]


def test_single_process_does_no_collective(fake_cuda, reduced):
    t = torch.ones(2)
    assert all_reduce_sum(t, DistInfo(device=CUDA1)) is t
    assert not reduced and not fake_cuda and t.tolist() == [1.0, 1.0]


def test_auto_takes_the_gpus_only_when_every_local_process_has_one(monkeypatch):
    """Two processes on a 1-GPU machine: "auto" gives both the CPU (one backend for all ranks), not
    cuda:1 to the second; "cuda" there is one error naming the count."""
    from nasnet_det.errors import ConfigError
    from nasnet_det.pretrain.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_device("auto", 0) == resolve_device("auto", 1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="local process 1 has no GPU of its own"):
        resolve_device("cuda", 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("auto", 0) == torch.device("cuda", 0)

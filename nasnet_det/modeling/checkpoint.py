"""Activation checkpointing that keeps a training step exact: ``checkpointed(module, fn, *inputs)``.

Why its own wrapper around ``torch.utils.checkpoint``: the recomputation in backward replays the
RNG state (so drop-path masks and dropout repeat), but it would also update every BatchNorm's
running statistics a second time. The recompute must run the same training-mode kernels (the
checkpoint checks that it saves the same tensors), so the few small BN buffers are restored after
it instead. Outputs, gradients and BN buffers then equal those of the plain model up to float
rounding. ``Cell.forward`` and ``NASNet.stem`` use it when gradient checkpointing is enabled
(``set_grad_checkpointing``; docs/modeling.md).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def recording(module: nn.Module) -> bool:
    """Whether ``module`` runs a training forward whose activations autograd keeps (what checkpointing saves)."""
    return module.training and torch.is_grad_enabled()


@contextlib.contextmanager
def _running_stats_restored(module: nn.Module) -> Iterator[None]:
    """Run the block, then put every BN running buffer of ``module`` back to its value before it."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, [b.detach().clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                              if b is not None]))
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in saved:
                bufs = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                for b, v in zip(bufs, values):
                    b.copy_(v)


def checkpointed(module: nn.Module, fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """``fn(*inputs)`` (a computation of ``module``) recomputed in backward, BN statistics updated once."""
    calls = 0

    def run(*args):
        nonlocal calls
        calls += 1
        if calls == 1:  # the real forward: BN statistics update as usual
            return fn(*args)
        with _running_stats_restored(module):  # the recompute in backward
            return fn(*args)

    return checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=True)

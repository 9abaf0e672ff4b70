"""Training-memory savings for the large NASNets: activation checkpointing per cell.

Why per cell: a NASNet cell keeps ~40 F-wide activations alive for its backward (every ReLU
output, depthwise output, BN input, pool output...) but hands only ONE tensor (its concat
output, 6F wide for NASNet-A) to the next cell. Checkpointing each cell stores just the cell
inputs and recomputes the inside during backward, one cell at a time, so activation memory
drops from the sum over all cells to (cell boundaries + one cell's interior), for about one
extra forward of compute. The stem convolution is checkpointed too (its full-resolution pre-BN
output would otherwise be the largest tensor kept). The concat outputs are the checkpoint boundaries, so the
"memory-efficient concat" comes for free: a cell's per-block tensors are never held past its
forward.

How: each selected cell's class is swapped to ``CheckpointedCell`` (a ``Cell`` subclass whose
forward wraps the plain one in ``torch.utils.checkpoint``). The module tree, parameter names
and ``state_dict`` keys are unchanged, so optimizers, converters and detectron2 checkpointers
see the same model; ``disable_memory_saving`` swaps the classes back.

Exactness: the recomputation replays the same RNG state (drop-path masks, dropout), and BatchNorm
running statistics are updated only once per step (the recompute's second update is undone), so outputs, gradients and BN buffers equal
those of the plain model up to float rounding.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .cell import Cell
from .ops import ConvBN

__all__ = ["CheckpointedCell", "CheckpointedConvBN", "enable_memory_saving", "disable_memory_saving", "memory_saving_enabled"]


@contextlib.contextmanager
def _running_stats_restored(module: nn.Module) -> Iterator[None]:
    """Run the block, then put every BN running buffer of ``module`` back to its value before it.

    The recompute must save exactly the tensors the first forward saved (checkpoint checks
    that), so BN has to run the same training-mode kernel; restoring the few small buffers
    afterwards undoes its second running-statistics update (and ``num_batches_tracked`` count).
    """
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


def _checkpointed(module: nn.Module, plain_forward, *inputs):
    """``plain_forward(module, *inputs)`` under ``torch.utils.checkpoint``, BN statistics updated once."""
    calls = 0

    def run(*args):
        nonlocal calls
        calls += 1
        if calls == 1:  # the real forward: BN statistics update as usual
            return plain_forward(module, *args)
        with _running_stats_restored(module):  # the recompute in backward
            return plain_forward(module, *args)

    return checkpoint(run, *inputs, use_reentrant=False, preserve_rng_state=True)


def _recording(module: nn.Module) -> bool:
    return module.training and torch.is_grad_enabled()


class CheckpointedCell(Cell):
    """A ``Cell`` whose training forward is recomputed in backward instead of stored.

    Active only when training with autograd recording; eval and ``no_grad`` use the plain forward.
    """

    def forward(self, h: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        if not _recording(self):
            return Cell.forward(self, h, h_prev)
        return _checkpointed(self, Cell.forward, h, h_prev)


class CheckpointedConvBN(ConvBN):
    """The stem ``ConvBN`` with its pre-BN activation recomputed in backward.

    At the stem's full resolution that one tensor (conv output kept for BN's backward) is as big
    as a whole cell's boundary, so it is worth dropping too; the BN output is the first cells'
    input and stays.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _recording(self):
            return ConvBN.forward(self, x)
        return _checkpointed(self, ConvBN.forward, x)


def _cells_of(model: nn.Module) -> nn.ModuleList:
    cells = getattr(model, "cells", None)
    if not isinstance(cells, nn.ModuleList):
        raise TypeError(f"model: expected a NASNet with a .cells ModuleList, got {type(model).__name__}")
    return cells


def enable_memory_saving(model: nn.Module, cells: Iterable[int] | None = None) -> nn.Module:
    """Checkpoint every cell of ``model`` and its stem conv (or only the cells at the positions in
    ``cells``), in place; returns ``model``.

    Works on a full ``NASNet`` and on the trimmed ones inside the detection backbone / ROI heads
    (placeholder ``nn.Identity`` cells are skipped).
    """
    all_cells = _cells_of(model)
    stem = getattr(model, "conv0", None)
    if cells is None and type(stem) is ConvBN:
        stem.__class__ = CheckpointedConvBN
    for i in (range(len(all_cells)) if cells is None else cells):
        cell = all_cells[i]
        if type(cell) is Cell:
            cell.__class__ = CheckpointedCell
        elif isinstance(cell, Cell) and not isinstance(cell, CheckpointedCell):
            raise TypeError(f"cells[{i}]: cannot checkpoint a {type(cell).__name__} (only plain Cell)")
    return model


def disable_memory_saving(model: nn.Module) -> nn.Module:
    """Undo ``enable_memory_saving`` in place."""
    if type(getattr(model, "conv0", None)) is CheckpointedConvBN:
        model.conv0.__class__ = ConvBN
    for cell in _cells_of(model):
        if type(cell) is CheckpointedCell:
            cell.__class__ = Cell
    return model


def memory_saving_enabled(model: nn.Module) -> bool:
    """Whether any cell of ``model`` is checkpointed."""
    return any(isinstance(c, CheckpointedCell) for c in _cells_of(model))

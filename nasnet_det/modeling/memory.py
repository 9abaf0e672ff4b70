"""Training-memory savings for the large NASNets: activation checkpointing per cell.

Why per cell: a NASNet cell keeps ~40 F-wide activations alive for its backward (every ReLU
output, depthwise output, BN input, pool output...) but hands only ONE tensor (its concat
output, 6F wide for NASNet-A) to the next cell. Checkpointing each cell stores just the cell
inputs and recomputes the inside during backward, one cell at a time, so activation memory
drops from the sum over all cells to (cell boundaries + one cell's interior), for about one
extra forward of compute. The stem convolution is checkpointed too (its full-resolution pre-BN
output would otherwise be the largest tensor kept). The concat outputs are the checkpoint
boundaries, so the "memory-efficient concat" comes for free: a cell's per-block tensors are never
held past its forward.

How: these functions set the ``grad_checkpointing`` flags of ``NASNet.set_grad_checkpointing`` /
``Cell.set_grad_checkpointing``; ``Cell.forward`` and ``NASNet.stem`` then run under
``modeling/checkpoint.py``'s wrapper (same RNG replay, BN statistics updated once), so outputs,
gradients and BN buffers equal those of the plain model up to float rounding. Nothing in the
module tree changes: parameter names and ``state_dict`` keys are the same, so optimizers,
converters and detectron2 checkpointers see the same model.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from .cell import Cell
from .network import NASNet

__all__ = ["enable_memory_saving", "disable_memory_saving", "memory_saving_enabled"]


def _cells_of(model: nn.Module) -> nn.ModuleList:
    cells = getattr(model, "cells", None)
    if not isinstance(cells, nn.ModuleList):
        raise TypeError(f"model: expected a NASNet with a .cells ModuleList, got {type(model).__name__}")
    return cells


def _set(model: nn.Module, enable: bool, cells: Iterable[int] | None) -> nn.Module:
    all_cells = _cells_of(model)
    if cells is None and isinstance(model, NASNet):
        model.set_grad_checkpointing(enable)
        return model
    for i in range(len(all_cells)) if cells is None else cells:
        if isinstance(all_cells[i], Cell):  # the detection stages hold nn.Identity placeholders
            all_cells[i].set_grad_checkpointing(enable)
    return model


def enable_memory_saving(model: nn.Module, cells: Iterable[int] | None = None) -> nn.Module:
    """Checkpoint every cell of ``model`` and its stem conv (or only the cells at the positions in
    ``cells``), in place; returns ``model``.

    Works on a full ``NASNet`` and on the trimmed ones inside the detection backbone / ROI heads.
    """
    return _set(model, True, cells)


def disable_memory_saving(model: nn.Module) -> nn.Module:
    """Undo ``enable_memory_saving`` in place (every cell and the stem)."""
    return _set(model, False, None)


def memory_saving_enabled(model: nn.Module) -> bool:
    """Whether any cell of ``model`` is checkpointed."""
    return any(isinstance(c, Cell) and c.grad_checkpointing for c in _cells_of(model))

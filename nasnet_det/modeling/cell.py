"""ONE cell engine that runs any valid genotype cell with TF-slim's semantics.

Built-in (NASNet-A, PNASNet-5, AmoebaNet-A) and searched genotypes all go through this class, so a
bug fixed here is fixed for all of them. The wiring follows ``nasnet_utils.BaseCell``:

1. ``h_{i-1}`` adjustment (docs/spec.md §2): (a) no previous state -> the raw current
   input; (b) larger spatial size -> ReLU + factorized reduction; (c) other width -> ReLU-1x1-BN;
   (d) otherwise unchanged. ``h_i`` always goes through ReLU-1x1-BN to F.
2. Each block applies its two ops (stride 2 only on ops reading h_i / h_{i-1} in a stride-2 cell),
   drop-path on every non-identity op output, then the combine op.
3. Output: channel concat of the ``concat`` states; a state whose size or width differs from the
   last block is fixed up by a factorized reduction (stride 2 if the size differs, else 1x1+BN).

Shapes are decided when the cell is built (widths and whether h_{i-1} is at twice h_i's
resolution), so the forward pass does no shape bookkeeping.

There is one forward for training, evaluation and inference; what differs is explicit:

* ``set_grad_checkpointing(True)``: in a training step the cell's interior is recomputed in
  backward instead of stored (``modeling/checkpoint.py``; docs/modeling.md, "One cell forward").
* When no gradient is recorded (``torch.no_grad`` / ``inference_mode``) the cell works in place on
  the tensors it just made: the separable stacks' inner ReLU and the block adds. Same values (ReLU
  and a + b are exact either way), one allocation and one memory pass fewer each.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..space.genotype import CellSpec
from .checkpoint import checkpointed, recording
from .drop_path import drop_path, drop_path_keep_prob
from .factorized_reduction import FactorizedReduction
from .ops import ConvBN, LeadingReLU, NormFactory, ReLUConvBN, build_op


@dataclass(frozen=True)
class BlockPlan:
    """What ``Cell.forward`` needs of one block, decided at build time.

    ``ops`` are the two op modules' attribute names (``comb_iter_<k>_left`` / ``_right``), ``inputs``
    the states they read, ``drop_path`` whether each output gets drop-path (every op but identity),
    ``norm`` the attribute name of the combine's norm (``add_layernorm`` / ``add_instancenorm``) or None.
    ``twin``: both ops are the same parameter-free op on the same state (NASNet-A's normal cell adds
    ``avg_pool_3x3(h) + avg_pool_3x3(h)``), so the right one reuses the left one's output.
    """

    ops: tuple[str, str]
    inputs: tuple[int, int]
    drop_path: tuple[bool, bool]
    combine: str
    norm: str | None = None
    twin: bool = False


def _combine_norm(combine: str, channels: int) -> nn.Module | None:
    if combine == "add_layernorm":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W) with a per-channel affine
    if combine == "add_instancenorm":
        return nn.InstanceNorm2d(channels, affine=True)
    return None


def _add(a: torch.Tensor, b: torch.Tensor, a_writable: bool, b_writable: bool) -> torch.Tensor:
    """``a + b``, written into whichever operand may be overwritten (same sum: addition commutes exactly)."""
    if a.shape == b.shape and a.dtype == b.dtype:
        if a_writable:
            return a.add_(b)
        if b_writable:
            return b.add_(a)
    return a + b


class Cell(nn.Module):
    """A NASNet cell built from a ``CellSpec``.

    Args:
        spec: the blocks and the concatenated states (TF index convention).
        in_channels: width of h_i (the previous cell's output).
        prev_channels: width of h_{i-1}, or None when there is none (the first cell after a stem
            conv), in which case h_{i-1} is the raw h_i.
        filters: F, the per-op width: ``int(num_conv_filters * filter_scaling)``.
        stride: 1 (normal cell) or 2 (reduction cell).
        prev_is_larger: h_{i-1} has twice h_i's spatial size (it comes from before a reduction).
        norm: BN factory (eps / momentum per model family).
        cell_num, total_num_cells, drop_path_keep_prob, drop_path_version: ScheduledDropPath.
    """

    #: Recompute the interior in backward (``set_grad_checkpointing``); off by default.
    grad_checkpointing: bool = False

    def __init__(
        self,
        spec: CellSpec,
        in_channels: int,
        prev_channels: int | None,
        filters: int,
        stride: int,
        norm: NormFactory,
        prev_is_larger: bool = False,
        cell_num: int = 0,
        total_num_cells: int = 1,
        drop_path_keep_prob: float = 1.0,
        drop_path_version: str = "v3",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride}")
        self.spec = spec
        self.stride = stride
        self.filters = filters
        self.cell_num = cell_num
        self.total_num_cells = total_num_cells
        self.drop_path_keep_prob = float(drop_path_keep_prob)
        self.drop_path_version = drop_path_version
        self.drop_path_progress = 0.0  # t = global_step / total_training_steps, set by the network
        self.current_keep_prob()  # validates drop_path_version now rather than in the first training step

        # 1. Cell base: h_{i-1} adjustment, then h_i -> ReLU-1x1-BN.
        self.prev_mode = "raw"
        if prev_channels is None:
            prev_width = in_channels
        elif prev_is_larger:
            self.prev_mode = "reduce"
            self.prev_reduction = FactorizedReduction(prev_channels, filters, norm)
            prev_width = filters
        elif prev_channels != filters:
            self.prev_mode = "project"
            self.conv_prev_1x1 = ReLUConvBN(prev_channels, filters, 1, 1, norm)
            prev_width = filters
        else:
            self.prev_mode = "as_is"
            prev_width = prev_channels
        self.conv_1x1 = ReLUConvBN(in_channels, filters, 1, 1, norm)

        # 2. Blocks. Track every state's (width, reduced?) to size the ops and the output fix-ups.
        widths = [filters, prev_width]
        reduced = [False, False]  # relative to h_i's resolution; block outputs are at the cell's output one
        plans: list[BlockPlan] = []
        for k, block in enumerate(spec.blocks):
            names = (f"comb_iter_{k}_left", f"comb_iter_{k}_right")
            for name, idx, op_name in zip(names, block.inputs, block.ops):
                op_stride = stride if idx < 2 else 1
                self.add_module(name, build_op(op_name, widths[idx], filters, op_stride, norm))
            width = 2 * filters if block.combine == "concat" else filters
            norm_mod = _combine_norm(block.combine, width)
            if norm_mod is not None:
                self.add_module(f"comb_iter_{k}_norm", norm_mod)
            twin = (block.ops[0] == block.ops[1] and block.inputs[0] == block.inputs[1]
                    and next(getattr(self, names[0]).parameters(), None) is None)
            plans.append(BlockPlan(ops=names, inputs=tuple(block.inputs),
                                   drop_path=(block.ops[0] != "identity", block.ops[1] != "identity"),
                                   combine=block.combine, norm=None if norm_mod is None else f"comb_iter_{k}_norm",
                                   twin=twin))
            widths.append(width)
            reduced.append(stride == 2)
        self.block_plan: tuple[BlockPlan, ...] = tuple(plans)

        # 3. Output: fix up the concatenated states that differ from the last block.
        final_width, final_reduced = widths[-1], reduced[-1]
        self.output_reductions = nn.ModuleDict()
        for idx in spec.concat:
            if widths[idx] == final_width and reduced[idx] == final_reduced:
                continue
            if reduced[idx] != final_reduced:
                self.output_reductions[str(idx)] = FactorizedReduction(widths[idx], final_width, norm)
            elif widths[idx] != final_width:
                self.output_reductions[str(idx)] = ConvBN(widths[idx], final_width, 1, 1, norm)
        self._concat = tuple(spec.concat)
        self.out_channels = final_width * len(spec.concat)

    # ScheduledDropPath -------------------------------------------------------------------------
    @property
    def layer_ratio(self) -> float:
        return (self.cell_num + 1) / float(self.total_num_cells)

    def current_keep_prob(self) -> float:
        """The keep probability drop-path uses now (training only)."""
        return drop_path_keep_prob(self.drop_path_keep_prob, self.drop_path_progress, self.layer_ratio,
                                   self.drop_path_version)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute this cell's interior in backward instead of storing it (timm's name for the switch).

        Only a training forward with autograd recording is checkpointed; eval and ``no_grad`` run as usual.
        """
        self.grad_checkpointing = enable

    # Forward ---------------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        if self.grad_checkpointing and recording(self):
            return checkpointed(self, self._compute, h, h_prev)
        return self._compute(h, h_prev)

    def _compute(self, h: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        """The cell: base, blocks, output concat (module docstring)."""
        inplace = not torch.is_grad_enabled()
        if self.prev_mode == "raw" or h_prev is None:
            p = h
        elif self.prev_mode == "reduce":
            p = self.prev_reduction(F.relu(h_prev))
        elif self.prev_mode == "project":
            p = self.conv_prev_1x1.body(F.relu(h_prev), inplace)
        else:
            p = h_prev
        states = [self.conv_1x1.body(F.relu(h), inplace), p]
        relus: list[torch.Tensor | None] = [None] * (len(states) + len(self.block_plan))

        def run(op: nn.Module, i: int) -> tuple[torch.Tensor, bool]:
            """(op(states[i]), whether that is a fresh tensor this cell may overwrite).

            An op starting with a ReLU gets ``relu(states[i])``, computed once per state for all its readers.
            Checked per call (not cached) so that modules swapped in later (norm conversion...) still work.
            """
            if isinstance(op, LeadingReLU):
                r = relus[i]
                if r is None:
                    r = relus[i] = F.relu(states[i])
                return op.body(r, inplace), True
            out = op(states[i])
            return out, out is not states[i]

        keep = self.current_keep_prob() if self.training and self.drop_path_keep_prob < 1.0 else 1.0
        modules = self._modules
        for plan in self.block_plan:
            a, a_fresh = run(modules[plan.ops[0]], plan.inputs[0])
            if plan.twin:  # the same output: computed once (drop-path below still draws a mask per side)
                b, b_fresh = a, False
            else:
                b, b_fresh = run(modules[plan.ops[1]], plan.inputs[1])
            if keep < 1.0:
                if plan.drop_path[0]:
                    a, a_fresh = drop_path(a, keep), True
                if plan.drop_path[1]:
                    b, b_fresh = drop_path(b, keep), True
            if plan.combine == "concat":
                out = torch.cat([a, b], dim=1)
            else:
                out = _add(a, b, inplace and a_fresh, inplace and b_fresh)
                if plan.norm is not None:
                    out = modules[plan.norm](out)
            states.append(out)
        fixups = self.output_reductions
        outs = [fixups[str(i)](states[i]) if str(i) in fixups else states[i] for i in self._concat]
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return (f"filters={self.filters}, stride={self.stride}, prev={self.prev_mode}, "
                f"out_channels={self.out_channels}, cell_num={self.cell_num}")

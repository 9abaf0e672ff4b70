"""A faster inference path for NASNet models that computes the same function as the plain one.

Why each piece (profiled on the Xeon/AMX CPU this project benchmarks on, see docs/benchmarks.md):

* **BN folding.** Every TF-slim conv here is followed by an eval-mode BatchNorm, i.e. a per-channel
  affine map. Folding it into the conv's weight and bias removes one full read+write of every
  activation (~10% of the plain forward). The BN modules become ``nn.Identity`` so module names
  (and therefore the converters' key mapping of the conv weights) are unchanged.
* **channels_last.** oneDNN's depthwise and 1x1 convolutions are 2-4x faster on NHWC tensors than
  on NCHW ones; NASNet is almost nothing but those two.
* **ReLU de-duplication.** A cell feeds the same state to several ops that each start with a ReLU
  (NASNet-A's h_{i-1} feeds three separable stacks); the fast cell computes each state's ReLU once,
  and does the separable stack's inner ReLU and the block's add in place on fresh tensors.
* **bf16** (optional, not bit-equal): ``torch.autocast`` to bfloat16; on CPUs with AMX / AVX512-BF16
  oneDNN runs the convolutions on the bf16 units. Outputs come back as float32.
* **torch.compile** (optional): each cell is compiled in place (``nn.Module.compile``), keeping the
  module tree, so ``forward_cells`` slices used by the detection heads still work.

The optimized model keeps the ``NASNet`` contract (``stem``, ``cells``, ``forward_cells``, ...):
cells and the network are re-classed to subclasses that only override ``forward`` for eval mode,
so ``isinstance`` checks and ``state_dict`` keys stay the same (BN buffers excepted: folded BNs
are gone, so load weights *before* optimizing). Training mode falls back to the plain forward.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .cell import Cell
from .factorized_reduction import FactorizedReduction
from .network import AuxHead, NASNet
from .ops import ConvBN, DilatedSepConv, FactorizedConv, ReLUConvBN, SepConvStack

__all__ = ["fold_batchnorm", "optimize_for_inference", "optimize_detector_for_inference", "InferenceCell",
           "InferenceNASNet"]


# ---------------------------------------------------------------------------------------------------
# BN folding
# ---------------------------------------------------------------------------------------------------
def _bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) of an eval-mode BN, i.e. ``bn(x) == x * scale + shift`` per channel; None if not foldable.

    Handles ``nn.BatchNorm2d`` with running statistics and detectron2-style ``FrozenBatchNorm2d``
    (same buffers, no ``track_running_stats``). Batch-statistics BN (no running stats) cannot fold.
    """
    mean, var = getattr(bn, "running_mean", None), getattr(bn, "running_var", None)
    if mean is None or var is None or not hasattr(bn, "eps"):
        return None
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.track_running_stats:
        return None
    weight = bn.weight if getattr(bn, "weight", None) is not None else torch.ones_like(mean)
    bias = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros_like(mean)
    scale = weight.detach().double() / torch.sqrt(var.double() + bn.eps)
    shift = bias.detach().double() - mean.double() * scale
    return scale, shift


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """conv <- BN(conv): scale the output channels of the weight, add the shift to the bias (float64 math)."""
    w = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight.copy_(w.to(conv.weight.dtype))
    conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _fold_pair(owner: nn.Module, conv: nn.Conv2d, bn_name: str) -> bool:
    bn = getattr(owner, bn_name)
    affine = _bn_scale_shift(bn)
    if affine is None:
        return False
    _fold_into(conv, *affine)
    setattr(owner, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BN that directly follows a conv into that conv, in place; returns the count.

    Only the known conv->BN pairs of ``nasnet_det.modeling`` are folded (a BN after a ReLU or an
    add is left alone): ReLUConvBN / ConvBN, both halves of a separable stack, the dilated
    separable conv, AmoebaNet's factorized 1xK/Kx1 bottleneck, the aux head, and the factorized
    reduction, whose BN after the channel concat splits into the two path convs.
    """
    folded = 0
    for m in list(model.modules()):
        if isinstance(m, (ReLUConvBN, ConvBN)):
            folded += _fold_pair(m, m.conv, "bn")
        elif isinstance(m, SepConvStack):
            folded += _fold_pair(m, m.separable_1.pointwise_conv2d, "bn_sep_1")
            folded += _fold_pair(m, m.separable_2.pointwise_conv2d, "bn_sep_2")
        elif isinstance(m, DilatedSepConv):
            folded += _fold_pair(m, m.separable.pointwise_conv2d, "bn")
        elif isinstance(m, FactorizedConv):
            if m.bottleneck:
                folded += _fold_pair(m, m.pre_conv, "pre_bn") + _fold_pair(m, m.post_conv, "post_bn")
            folded += _fold_pair(m, m.conv_1xk, "bn_1xk") + _fold_pair(m, m.conv_kx1, "bn")
        elif isinstance(m, AuxHead):
            folded += _fold_pair(m, m.proj, "bn0") + _fold_pair(m, m.conv, "bn1")
        elif isinstance(m, FactorizedReduction):
            affine = _bn_scale_shift(m.final_path_bn)
            if affine is not None:
                scale, shift = affine
                n1 = m.path_1.conv.out_channels
                _fold_into(m.path_1.conv, scale[:n1], shift[:n1])
                _fold_into(m.path_2.conv, scale[n1:], shift[n1:])
                m.final_path_bn = nn.Identity()
                folded += 1
    return folded


# ---------------------------------------------------------------------------------------------------
# The fast cell
# ---------------------------------------------------------------------------------------------------
def _run_preactivated(op: nn.Module, xr: torch.Tensor) -> torch.Tensor:
    """``op(x)`` for an op whose first step is ReLU, given ``xr = relu(x)`` already computed."""
    if isinstance(op, ReLUConvBN):
        return op.bn(op.conv(xr))
    if isinstance(op, SepConvStack):
        y = op.bn_sep_1(op.separable_1(xr))
        y = F.relu(y, inplace=True)  # y is a fresh tensor owned here
        return op.bn_sep_2(op.separable_2(y))
    if isinstance(op, DilatedSepConv):
        return op.bn(op.separable(xr))
    raise TypeError(f"{type(op).__name__} does not start with a ReLU")


_PREACTIVATED = (ReLUConvBN, SepConvStack, DilatedSepConv)


class InferenceCell(Cell):
    """A ``Cell`` whose eval-mode forward shares ReLUs between ops and adds in place.

    Same parameters, same math as ``Cell.forward`` (float rounding aside: ReLU is exact and the
    in-place add computes the same sums). In training mode it is the plain ``Cell.forward``.
    """

    def forward(self, h: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        if self.training:
            return super().forward(h, h_prev)
        if self.prev_mode == "raw" or h_prev is None:
            p = h
        elif self.prev_mode == "reduce":
            p = self.prev_reduction(F.relu(h_prev))
        elif self.prev_mode == "project":
            p = _run_preactivated(self.conv_prev_1x1, F.relu(h_prev))
        else:
            p = h_prev
        states: list[torch.Tensor] = [_run_preactivated(self.conv_1x1, F.relu(h)), p]
        relus: list[torch.Tensor | None] = [None, None]

        def relu_of(i: int) -> torch.Tensor:
            r = relus[i]
            if r is None:
                r = relus[i] = F.relu(states[i])
            return r

        def apply(op: nn.Module, i: int) -> tuple[torch.Tensor, bool]:
            """(output, whether it is a fresh tensor this cell may overwrite)."""
            if isinstance(op, _PREACTIVATED):
                return _run_preactivated(op, relu_of(i)), True
            out = op(states[i])
            return out, out is not states[i]

        modules = self._modules
        for k, (i0, i1, _d0, _d1, combine) in enumerate(self._block_plan):
            a, a_fresh = apply(modules[f"comb_iter_{k}_left"], i0)
            b, b_fresh = apply(modules[f"comb_iter_{k}_right"], i1)
            if combine == "concat":
                out = torch.cat([a, b], dim=1)
            else:
                if a_fresh and a.shape == b.shape and a.dtype == b.dtype:
                    out = a.add_(b)
                elif b_fresh and a.shape == b.shape and a.dtype == b.dtype:
                    out = b.add_(a)
                else:
                    out = a + b
                if combine != "add":
                    out = modules[f"comb_iter_{k}_norm"](out)
            states.append(out)
            relus.append(None)
        fixups = self.output_reductions
        outs = [fixups[str(i)](states[i]) if str(i) in fixups else states[i] for i in self._concat]
        return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------------------------------------
# The network wrapper (input layout and bf16 autocast)
# ---------------------------------------------------------------------------------------------------
class InferenceNASNet(NASNet):
    """``NASNet`` whose entry points set the memory format and (optionally) bf16 autocast.

    Attributes set by ``optimize_for_inference``: ``_fast_channels_last``, ``_fast_bf16``.
    Outputs of ``forward`` / ``forward_features`` / ``forward_cells`` / ``stem`` are float32
    whatever the autocast dtype, so callers see the plain model's dtypes.
    """

    _fast_channels_last: bool = False
    _fast_bf16: bool = False

    @contextlib.contextmanager
    def _fast_context(self) -> Iterator[None]:
        if self._fast_bf16 and not self.training:
            with torch.autocast(device_type=self._device_type(), dtype=torch.bfloat16):
                yield
        else:
            yield

    def _device_type(self) -> str:
        return next(self.parameters()).device.type

    def _prep(self, x: torch.Tensor | None) -> torch.Tensor | None:
        if x is not None and self._fast_channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _f32(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
            return x.float()
        if isinstance(x, tuple):
            return tuple(InferenceNASNet._f32(v) for v in x)
        return x

    def _entry(self, fn, *args):
        """Run ``fn`` (a plain NASNet method) with the fast context, once per outermost call.

        ``NASNet.forward`` calls ``self.stem`` and ``self.forward_cells``; the guard keeps those
        nested calls from re-entering autocast and casting bf16 activations back to float32.
        """
        if self.__dict__.get("_fast_active", False):
            return fn(*args)
        self.__dict__["_fast_active"] = True
        try:
            with self._fast_context():
                return self._f32(fn(*(self._prep(a) if isinstance(a, torch.Tensor) else a for a in args)))
        finally:
            self.__dict__["_fast_active"] = False

    def stem(self, x: torch.Tensor):
        return self._entry(super().stem, x)

    def forward_cells(self, h_prev, h, start: int = 0, stop: int | None = None):
        return self._entry(super().forward_cells, h_prev, h, start, stop)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._entry(super().forward_features, x)

    def forward(self, x: torch.Tensor):
        return self._entry(super().forward, x)


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def optimize_for_inference(
    model: NASNet,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    bf16: bool = False,
    compile: bool = False,
    fast_cells: bool = True,
    inplace: bool = False,
) -> NASNet:
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace=True``) that runs faster.

    Args:
        fold_bn: fold each conv->BN pair (needs BN running statistics; see ``fold_batchnorm``).
        channels_last: store 4-D weights NHWC and feed NHWC inputs.
        bf16: run under ``torch.autocast(bfloat16)``; results differ at bf16 precision.
        compile: ``nn.Module.compile()`` every cell (slow to warm up; needs a C++ compiler on CPU).
        fast_cells: use ``InferenceCell`` (shared ReLUs, in-place adds).
        inplace: modify ``model`` instead of a deep copy.

    The result is meant for inference only: after ``.train()`` the cells fall back to the plain
    forward, but folded BNs are not restored (train a plain model instead).
    """
    if not isinstance(model, NASNet):
        raise TypeError(f"model: expected a nasnet_det NASNet, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    if fast_cells:
        for cell in model.cells:
            if type(cell) is Cell:
                cell.__class__ = InferenceCell
    if type(model) is NASNet:
        model.__class__ = InferenceNASNet
    if isinstance(model, InferenceNASNet):
        model._fast_channels_last = channels_last
        model._fast_bf16 = bf16
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        for cell in model.cells:
            cell.compile()
    return model


def optimize_detector_for_inference(detector: nn.Module, **kwargs) -> nn.Module:
    """Apply ``optimize_for_inference`` in place to every NASNet inside a detector (backbone, ROI head).

    The detection stages call ``stem`` / ``forward_cells`` on their NASNet, which the optimized
    network keeps; detectron2's FrozenBatchNorm2d folds like an eval BatchNorm2d. Returns ``detector``.
    """
    kwargs["inplace"] = True
    nets = [m for m in detector.modules() if isinstance(m, NASNet)]
    for net in nets:
        optimize_for_inference(net, **kwargs)
    detector.eval()
    return detector

"""A faster inference path for NASNet models that computes the same function as the plain one.

Why each piece (profiled on the Xeon/AMX CPU this project benchmarks on, see docs/benchmarks.md):

* **BN folding.** Every TF-slim conv here is followed by an eval-mode BatchNorm, i.e. a per-channel
  affine map. Folding it into the conv's weight and bias removes one full read+write of every
  activation (~10% of the plain forward). The BN modules become ``nn.Identity`` so module names
  (and therefore the converters' key mapping of the conv weights) are unchanged.
* **channels_last.** oneDNN's depthwise and 1x1 convolutions are 2-4x faster on NHWC tensors than
  on NCHW ones; NASNet is almost nothing but those two.
* **In-place work on fresh tensors.** The fast cell shares each state's ReLU among the ops reading
  it (as the plain cell now does too) and runs the separable stack's inner ReLU and the block's
  add in place, saving an allocation and a memory pass each (110 adds + 100 ReLUs in A-Large).
* **Pre-packed oneDNN convs** (optional, ``mkldnn=True``): weights re-laid-out once, the inner
  ReLU fused into the pointwise conv. Measured no gain here, so off by default.
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
from .memory import disable_memory_saving
from .network import AuxHead, NASNet
from .ops import ConvBN, DilatedSepConv, FactorizedConv, LeadingReLU, ReLUConvBN, SepConvStack

__all__ = ["fold_batchnorm", "optimize_for_inference", "optimize_detector_for_inference", "InferenceCell", "PackedConv2d",
           "pack_convolutions", "mkldnn_fusion_available",
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
# oneDNN convolutions with pre-packed weights and a fused ReLU
# ---------------------------------------------------------------------------------------------------
def mkldnn_fusion_available() -> bool:
    """Whether this torch build has the oneDNN pointwise-conv ops that torch.compile's CPU backend uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn, "_convolution_pointwise") and hasattr(
            torch.ops.mkldnn, "_reorder_convolution_weight")
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


class PackedConv2d(nn.Module):
    """A conv (TF SAME or static padding) run by oneDNN with its weight pre-packed, optionally + ReLU.

    Why: eager ``F.conv2d`` on CPU re-lays-out ("reorders") the weight into oneDNN's blocked
    format on every call and runs a following ReLU as a separate pass over memory; packing once
    and fusing the ReLU as a oneDNN post-op removes both (measured ~10-25% per sep-conv pair).
    The weight is packed lazily on the first call, with that call's input shape as the layout
    hint, and dropped on copy/pickle (repacked on next use). ``weight`` / ``bias`` stay ordinary
    parameters under the same names, so ``state_dict`` keys do not change. Inputs that are not
    float32 CPU tensors take the plain ``F.conv2d`` path.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last),
                                   requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.dilation, self.groups = tuple(conv.dilation), conv.groups
        self.padding = tuple(conv.padding)
        self.dynamic = bool(getattr(conv, "_dynamic", False))
        self.relu = relu
        self._packed: torch.Tensor | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def _pads(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        from .same_padding import tf_same_pads

        return (tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0]),
                tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.dynamic:
            ph, pw = self._pads(x)
            if ph[0] == ph[1] and pw[0] == pw[1]:
                padding = (ph[0], pw[0])
            else:
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
                padding = (0, 0)
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or torch.is_grad_enabled() and (
                self.weight.requires_grad or x.requires_grad):
            y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
            return F.relu(y, inplace=True) if self.relu else y
        x = x.contiguous(memory_format=torch.channels_last)
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach(), list(padding), list(self.stride), list(self.dilation), self.groups,
                list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed, None if self.bias is None else self.bias.detach(), list(padding), list(self.stride),
            list(self.dilation), self.groups, "relu" if self.relu else "none", [], "")

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, tf_same={self.dynamic}, relu={self.relu}")


def pack_convolutions(model: nn.Module) -> int:
    """Replace the cells' and stem's convolutions by ``PackedConv2d``, fusing the separable
    stack's inner ReLU where its BN was folded away; in place, returns the count."""
    count = 0
    for m in list(model.modules()):
        if isinstance(m, SepConvStack) and isinstance(m.bn_sep_1, nn.Identity):
            pw = m.separable_1.pointwise_conv2d
            if isinstance(pw, nn.Conv2d):
                m.separable_1.pointwise_conv2d = PackedConv2d(pw, relu=True)
                m._inner_relu_fused = True
                count += 1
        for name, child in list(m.named_children()):
            if isinstance(child, nn.Conv2d) and not isinstance(m, AuxHead):
                setattr(m, name, PackedConv2d(child))
                count += 1
    return count


# ---------------------------------------------------------------------------------------------------
# The fast cell
# ---------------------------------------------------------------------------------------------------
def _run_preactivated(op: nn.Module, xr: torch.Tensor) -> torch.Tensor:
    """``op(x)`` for an op whose first step is ReLU (a ``LeadingReLU``), given ``xr = relu(x)``.

    The separable stack is spelled out so its inner ReLU runs in place on the fresh tensor
    (one allocation and one memory pass fewer per stack); other ops use their ``body``.
    """
    if isinstance(op, SepConvStack):
        y = op.bn_sep_1(op.separable_1(xr))
        if not getattr(op, "_inner_relu_fused", False):
            y = F.relu(y, inplace=True)  # y is a fresh tensor owned here
        return op.bn_sep_2(op.separable_2(y))
    return op.body(xr)


_PREACTIVATED = (LeadingReLU,)


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
    mkldnn: bool = False,
    inplace: bool = False,
) -> NASNet:
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace=True``) that runs faster.

    Args:
        fold_bn: fold each conv->BN pair (needs BN running statistics; see ``fold_batchnorm``).
        channels_last: store 4-D weights NHWC and feed NHWC inputs.
        bf16: run under ``torch.autocast(bfloat16)``; results differ at bf16 precision.
        compile: ``nn.Module.compile()`` every cell (slow to warm up; needs a C++ compiler on CPU).
        fast_cells: use ``InferenceCell`` (shared ReLUs, in-place adds).
        mkldnn: pre-pack conv weights for oneDNN and fuse the separable stacks' inner ReLU
            (``PackedConv2d``; needs ``fold_bn``, fp32, CPU). Off by default: on the benchmark
            machine it measured no gain over channels_last eager (docs/benchmarks.md).
        inplace: modify ``model`` instead of a deep copy.

    The result is meant for inference only: after ``.train()`` the cells fall back to the plain
    forward, but folded BNs are not restored (train a plain model instead).
    """
    if not isinstance(model, NASNet):
        raise TypeError(f"model: expected a nasnet_det NASNet, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    disable_memory_saving(model)  # a training-time option; its cell classes would block the fast ones
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
    if mkldnn and not bf16 and mkldnn_fusion_available():
        pack_convolutions(model)
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

"""The cell operations, one module per op name of ``nasnet_det.space.ops``, with TF-slim semantics.

Every op maps ``C_in`` input channels to ``F`` output channels (the cell's filter count), so a
genotype can wire any op to any state: a state whose width differs from F (the raw stem output,
or a block combined by ``concat``) is projected inside the op, the way TF-slim's ``nasnet_utils``
does it. Module names follow the TF scopes (docs/spec.md §9) so that weight
converters can map checkpoints by name.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..space.ops import OPS
from .same_padding import AvgPool2dSame, Conv2dSame, MaxPool2dSame

NormFactory = Callable[[int], nn.Module]


class ConvBN(nn.Module):
    """conv -> BN, no activation (stems, projections after a pool, the cell-output fix-up)."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory, padding: str = "same"
    ) -> None:
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel_size, stride, padding=padding)
        self.bn = norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LeadingReLU(nn.Module):
    """An op that starts with a ReLU. ``body`` takes the already-activated input, so a cell can
    compute ``relu(state)`` once for all the ops reading that state instead of once per op."""

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class ReLUConvBN(LeadingReLU):
    """ReLU -> conv (TF SAME) -> BN: TF-slim's order inside every cell."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel_size, stride)
        self.bn = norm(c_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SeparableConv2d(nn.Module):
    """Depthwise KxK (multiplier 1) then pointwise 1x1, with nothing in between (slim.separable_conv2d)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise_conv2d = Conv2dSame(c_in, c_in, kernel_size, stride, dilation=dilation, groups=c_in)
        self.pointwise_conv2d = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class SepConvStack(LeadingReLU):
    """``separable_KxK_2``: [ReLU, sep conv, BN] twice; stride on the first, the first maps C_in -> F."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.separable_1 = SeparableConv2d(c_in, c_out, kernel_size, stride)
        self.bn_sep_1 = norm(c_out)
        self.separable_2 = SeparableConv2d(c_out, c_out, kernel_size, 1)
        self.bn_sep_2 = norm(c_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(x))
        return self.bn_sep_2(self.separable_2(F.relu(x)))


class DilatedSepConv(LeadingReLU):
    """``dil_conv_3x3`` (DARTS): ONE ReLU -> dilated depthwise (rate 2) -> pointwise -> BN."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormFactory, dilation: int = 2) -> None:
        super().__init__()
        self.separable = SeparableConv2d(c_in, c_out, 3, stride, dilation=dilation)
        self.bn = norm(c_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.separable(x))


class FactorizedConv(LeadingReLU):
    """``conv_1x7_7x1`` / ``conv_1x3_3x1`` as AmoebaNet's TF code builds them: a bottleneck.

    ReLU -> 1x1 to the reduced width -> BN -> ReLU -> 1xK (stride [1, s]) -> BN -> ReLU -> Kx1
    (stride [s, 1]) -> BN -> ReLU -> 1x1 to F -> BN. The reduced width is F/4 for 1x7_7x1 and 3F/8
    for 1x3_3x1; when it would be < 1 the bottleneck is skipped (as in TF).
    """

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        mid = int(c_out / 4) if k == 7 else int(3 * c_out / 8)
        self.bottleneck = mid >= 1
        width = mid if self.bottleneck else c_out
        if self.bottleneck:
            self.pre_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self.pre_bn = norm(mid)
        first_in = width if self.bottleneck else c_in
        self.conv_1xk = Conv2dSame(first_in, width, (1, k), (1, stride))
        self.bn_1xk = norm(width)
        self.conv_kx1 = Conv2dSame(width, width, (k, 1), (stride, 1))
        self.bn = norm(width)
        if self.bottleneck:
            self.post_conv = nn.Conv2d(mid, c_out, 1, bias=False)
            self.post_bn = norm(c_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        if self.bottleneck:
            x = F.relu(self.pre_bn(self.pre_conv(x)))
        x = F.relu(self.bn_1xk(self.conv_1xk(x)))
        x = self.bn(self.conv_kx1(x))
        if self.bottleneck:
            x = self.post_bn(self.post_conv(F.relu(x)))
        return x


class PoolOp(nn.Module):
    """Max/avg pooling (TF SAME, avg excluding padding); 1x1 conv + BN (no ReLU) when C_in != F."""

    def __init__(self, kind: str, kernel_size: int, c_in: int, c_out: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.pool = (AvgPool2dSame if kind == "avg" else MaxPool2dSame)(kernel_size, stride)
        self.proj = ConvBN(c_in, c_out, 1, 1, norm) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return self.proj(x) if self.proj is not None else x


def build_op(name: str, c_in: int, c_out: int, stride: int, norm: NormFactory) -> nn.Module:
    """The module for op ``name`` reading ``c_in`` channels, writing ``c_out``, with ``stride``.

    ``identity`` is a true ``nn.Identity`` only at stride 1 with matching widths; otherwise it is
    TF's ReLU -> 1x1 (stride) -> BN projection.
    """
    if name not in OPS:
        raise ValueError(f"op: unknown op {name!r}; known ops: {sorted(OPS)}")
    if name == "identity":
        if stride == 1 and c_in == c_out:
            return nn.Identity()
        return ReLUConvBN(c_in, c_out, 1, stride, norm)
    if name.startswith("sep_conv_"):
        return SepConvStack(c_in, c_out, int(name[-1]), stride, norm)
    if name.endswith("_pool_3x3") or name.startswith("max_pool_"):
        kind = name.split("_")[0]
        return PoolOp(kind, int(name[-1]), c_in, c_out, stride, norm)
    if name == "conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, stride, norm)
    if name == "conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, stride, norm)
    if name == "conv_1x7_7x1":
        return FactorizedConv(c_in, c_out, 7, stride, norm)
    if name == "conv_1x3_3x1":
        return FactorizedConv(c_in, c_out, 3, stride, norm)
    if name == "dil_conv_3x3":
        return DilatedSepConv(c_in, c_out, stride, norm)
    raise NotImplementedError(f"op {name!r} has no module")  # pragma: no cover - OPS is exhaustive

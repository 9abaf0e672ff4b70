"""The cell operations with TF-slim semantics: one module class per op ``kind`` of the op registry.

``nasnet_det.space.ops.OP_REGISTRY`` declares every op as data (name, kind, constructor
parameters, labels, TF names); ``build_op`` looks the name up there and calls the builder of its
kind. Each module class that owns BatchNorms declares which convolution feeds each of them
(``ConvBNModule.conv_bn_pairs``), which is what the inference path folds.

Every op maps ``C_in`` input channels to ``F`` output channels (the cell's filter count), so a
genotype can wire any op to any state: a state whose width differs from F (the raw stem output,
or a block combined by ``concat``) is projected inside the op, the way TF-slim's ``nasnet_utils``
does it. Module names follow the TF scopes (docs/spec.md §9) so that weight
converters can map checkpoints by name.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..space.ops import get_op
from .same_padding import AvgPool2dSame, Conv2dSame, MaxPool2dSame

NormFactory = Callable[[int], nn.Module]

#: One BN fold: the convs (submodule paths) whose outputs, concatenated in this order, feed the BN
#: (a direct child's name). Usually one conv; the factorized reduction's BN follows a concat of two.
FoldRule = tuple[tuple[str, ...], str]


class ConvBNModule(nn.Module):
    """A module with BatchNorm children that each directly follow a convolution.

    Why declared, not discovered: only the module knows that nothing (no ReLU, no add) sits between
    a conv and its BN. ``inference.fold_batchnorm`` folds exactly these pairs and refuses a module
    whose BN child no rule names, so a new op cannot silently keep its BN.
    """

    CONV_BN: ClassVar[tuple[FoldRule, ...]] = ()

    def conv_bn_pairs(self) -> tuple[FoldRule, ...]:
        """The fold rules of this instance (a class may depend on how it was built)."""
        return self.CONV_BN


class ConvBN(ConvBNModule):
    """conv -> BN, no activation (stems, projections after a pool, the cell-output fix-up)."""

    CONV_BN = ((("conv",), "bn"),)

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory, padding: str = "same"
    ) -> None:
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel_size, stride, padding=padding)
        self.bn = norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LeadingReLU(ConvBNModule):
    """An op that starts with a ReLU. ``body`` takes the already-activated input, so a cell can
    compute ``relu(state)`` once for all the ops reading that state instead of once per op.

    ``inplace=True`` (the cell passes it when no gradient is recorded) lets ``body`` run its inner
    ReLUs in place on the fresh tensors it made: same values, one allocation and memory pass fewer.
    """

    def body(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class ReLUConvBN(LeadingReLU):
    """ReLU -> conv (TF SAME) -> BN: TF-slim's order inside every cell."""

    CONV_BN = ((("conv",), "bn"),)

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel_size, stride)
        self.bn = norm(c_out)

    def body(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
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

    CONV_BN = ((("separable_1.pointwise_conv2d",), "bn_sep_1"), (("separable_2.pointwise_conv2d",), "bn_sep_2"))

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.separable_1 = SeparableConv2d(c_in, c_out, kernel_size, stride)
        self.bn_sep_1 = norm(c_out)
        self.separable_2 = SeparableConv2d(c_out, c_out, kernel_size, 1)
        self.bn_sep_2 = norm(c_out)

    def body(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(x))
        return self.bn_sep_2(self.separable_2(F.relu(x, inplace=inplace)))


class DilatedSepConv(LeadingReLU):
    """``dil_conv_3x3`` (DARTS): ONE ReLU -> dilated depthwise (rate 2) -> pointwise -> BN."""

    CONV_BN = ((("separable.pointwise_conv2d",), "bn"),)

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory,
                 dilation: int = 2) -> None:
        super().__init__()
        self.separable = SeparableConv2d(c_in, c_out, kernel_size, stride, dilation=dilation)
        self.bn = norm(c_out)

    def body(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return self.bn(self.separable(x))


class FactorizedConv(LeadingReLU):
    """``conv_1x7_7x1`` / ``conv_1x3_3x1`` as AmoebaNet's TF code builds them: a bottleneck.

    ReLU -> 1x1 to the reduced width -> BN -> ReLU -> 1xK (stride [1, s]) -> BN -> ReLU -> Kx1
    (stride [s, 1]) -> BN -> ReLU -> 1x1 to F -> BN. The reduced width is F/4 for 1x7_7x1 and 3F/8
    for 1x3_3x1; when it would be < 1 the bottleneck is skipped (as in TF).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        k = kernel_size
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

    def conv_bn_pairs(self) -> tuple[FoldRule, ...]:
        pairs = ((("conv_1xk",), "bn_1xk"), (("conv_kx1",), "bn"))
        if self.bottleneck:
            pairs = ((("pre_conv",), "pre_bn"),) + pairs + ((("post_conv",), "post_bn"),)
        return pairs

    def body(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if self.bottleneck:
            x = F.relu(self.pre_bn(self.pre_conv(x)), inplace=inplace)
        x = F.relu(self.bn_1xk(self.conv_1xk(x)), inplace=inplace)
        x = self.bn(self.conv_kx1(x))
        if self.bottleneck:
            x = self.post_bn(self.post_conv(F.relu(x, inplace=inplace)))
        return x


class PoolOp(nn.Module):
    """Max/avg pooling (TF SAME, avg excluding padding); 1x1 conv + BN (no ReLU) when C_in != F."""

    def __init__(self, c_in: int, c_out: int, pool: str, kernel_size: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.pool = (AvgPool2dSame if pool == "avg" else MaxPool2dSame)(kernel_size, stride)
        self.proj = ConvBN(c_in, c_out, 1, 1, norm) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return self.proj(x) if self.proj is not None else x


def _identity(c_in: int, c_out: int, stride: int, norm: NormFactory) -> nn.Module:
    """A true ``nn.Identity`` only at stride 1 with matching widths; otherwise TF's ReLU -> 1x1 (stride) -> BN."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return ReLUConvBN(c_in, c_out, 1, stride, norm)


def _pool(c_in: int, c_out: int, stride: int, norm: NormFactory, pool: str, kernel_size: int) -> nn.Module:
    return PoolOp(c_in, c_out, pool, kernel_size, stride, norm)


def _with_kernel(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    """The builder of a kind whose class takes ``(c_in, c_out, kernel_size, stride, norm, **rest)``."""
    def build(c_in: int, c_out: int, stride: int, norm: NormFactory, kernel_size: int, **rest) -> nn.Module:
        return cls(c_in, c_out, kernel_size, stride, norm, **rest)

    return build


#: One builder per op kind of the registry: ``builder(c_in, c_out, stride, norm, **spec.kwargs)``.
OP_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "identity": _identity,
    "pool": _pool,
    "conv": _with_kernel(ReLUConvBN),
    "sep_conv": _with_kernel(SepConvStack),
    "dil_conv": _with_kernel(DilatedSepConv),
    "factorized_conv": _with_kernel(FactorizedConv),
}


def build_op(name: str, c_in: int, c_out: int, stride: int, norm: NormFactory) -> nn.Module:
    """The module for op ``name`` reading ``c_in`` channels, writing ``c_out``, with ``stride``.

    The op registry gives the kind and its parameters; unknown names raise GenotypeError (a ValueError).
    """
    spec = get_op(name)
    try:
        builder = OP_BUILDERS[spec.kind]
    except KeyError:
        raise NotImplementedError(f"op {name!r}: no module builder for its kind {spec.kind!r} "
                                  "(add one to nasnet_det.modeling.ops.OP_BUILDERS)") from None
    return builder(c_in, c_out, stride, norm, **spec.kwargs)

"""TensorFlow "SAME" padding for convolutions and pooling, exactly as TF computes it.

Why this exists: TF pads ``total = max((ceil(n/s) - 1) * s + k_eff - n, 0)`` cells per dimension and
puts the odd one at the bottom/right. At stride 2 on an even size that is asymmetric, which
PyTorch's symmetric ``padding=`` cannot express: it gives the same output shape but windows shifted
by one pixel, so published TF checkpoints would not reproduce. TF's average pooling also divides by
the number of *real* cells under the window (padding excluded). See docs/spec.md §9.

Fast path: whenever the TF padding is symmetric (always at stride 1 with odd kernels; at stride 2
on odd sizes) the op's own padding argument is used, so no extra tensor is materialized.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_pads(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding TF's SAME puts on a dimension of length ``size``.

    ``int(size)``: under a trace (TorchScript / ONNX export) ``x.shape[i]`` is a 0-d tensor, and
    the Python branches on the pads need plain ints; an export thereby fixes the spatial size it
    was traced at (only the batch stays dynamic), which is what ``nasnet_det.deploy`` documents.
    """
    size = int(size)
    k_eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _static_padding(kernel, stride, dilation) -> tuple[int, int] | None:
    """Padding that is exact for every input size, or None when it depends on the size.

    At stride 1 the SAME total is ``k_eff - 1`` whatever the size, and it is symmetric when odd k_eff.
    """
    pads = []
    for k, s, d in zip(kernel, stride, dilation):
        k_eff = (k - 1) * d + 1
        if s == 1 and k_eff % 2 == 1:
            pads.append(k_eff // 2)
        elif k == 1 and d == 1:  # a 1x1 never needs padding at any stride
            pads.append(0)
        else:
            return None
    return pads[0], pads[1]


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF SAME padding (no bias by default: every TF-slim conv here is followed by BN).

    ``padding="valid"`` gives TF VALID (no padding), used by the ImageNet stem conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding: str = "same",
    ) -> None:
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
        static = (0, 0) if padding == "valid" else _static_padding(kernel_size, stride, dilation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride,
            padding=static if static is not None else 0, dilation=dilation, groups=groups, bias=bias,
        )
        self._dynamic = static is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._dynamic:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        ph = tf_same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = tf_same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if ph[0] == ph[1] and pw[0] == pw[1]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph[0], pw[0]), self.dilation, self.groups)
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _only_trailing_pad(ph: tuple[int, int], pw: tuple[int, int], stride: int) -> bool:
    """TF pads only after the input, by less than a stride (stride 2 on even sizes).

    Then PyTorch's ``ceil_mode`` adds exactly TF's partial last window, and its divisor counts only
    real cells, so the pool runs on ``x`` itself instead of on a padded copy.
    """
    return ph[0] == 0 and pw[0] == 0 and ph[1] < stride and pw[1] < stride


def _plain_cpu_nchw(x: torch.Tensor) -> bool:
    """An eager fp32 NCHW tensor on the CPU: where PyTorch's own pooling kernels are slowest.

    Traces (exports, fvcore's MAC counts) and autocast keep the plain pool ops.
    """
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()
            and not torch.jit.is_tracing() and not torch.is_autocast_enabled("cpu"))


class _PoolSame(nn.Module):
    """TF SAME pooling. PyTorch's own pool computes two cases directly, with no padded copy:
    symmetric pads, and pads only after the input by less than a stride (via ``ceil_mode``).
    Subclasses say how to pool and how to handle the general asymmetric case."""

    extra = ""

    def __init__(self, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _pool(self, x: torch.Tensor, padding: tuple[int, int] | int, ceil_mode: bool) -> torch.Tensor:
        raise NotImplementedError

    def _pool_padded(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        ph = tf_same_pads(x.shape[-2], k, s)
        pw = tf_same_pads(x.shape[-1], k, s)
        if ph[0] == ph[1] and pw[0] == pw[1] and max(ph[0], pw[0]) <= k // 2:
            return self._pool(x, (ph[0], pw[0]), False)
        if _only_trailing_pad(ph, pw, s):
            return self._pool(x, 0, True)
        return self._pool_padded(x, (pw[0], pw[1], ph[0], ph[1]))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=TF-SAME{self.extra}"


class MaxPool2dSame(_PoolSame):
    """TF SAME max pooling: padded cells never win (PyTorch's implicit padding is -inf too).

    CPU, NCHW, no autograd: PyTorch's NCHW max-pool kernel is 3-6x slower than its channels_last
    one, more than the two layout copies cost, so the pool runs on a channels_last copy and the
    result is returned NCHW (bit-identical values). Not when recording for backward: the pool
    would save the copy, an extra activation-sized tensor per pool in training.
    """

    def _pool(self, x: torch.Tensor, padding: tuple[int, int] | int, ceil_mode: bool) -> torch.Tensor:
        if _plain_cpu_nchw(x) and not (x.requires_grad and torch.is_grad_enabled()):
            x = x.contiguous(memory_format=torch.channels_last)
            return F.max_pool2d(x, self.kernel_size, self.stride, padding, ceil_mode=ceil_mode).contiguous()
        return F.max_pool2d(x, self.kernel_size, self.stride, padding, ceil_mode=ceil_mode)

    def _pool_padded(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, pad, value=float("-inf")), self.kernel_size, self.stride)


@functools.lru_cache(maxsize=64)
def _window_sum_kernel(channels: int, kernel: int) -> torch.Tensor:
    """The all-ones depthwise weight (C, 1, k, k) that sums each k x k window, as a CPU tensor.

    Cached tensors here are made outside inference mode, so autograd may also save them.
    """
    with torch.inference_mode(False), torch.no_grad():
        return torch.ones(channels, 1, kernel, kernel)


@functools.lru_cache(maxsize=64)
def _reciprocal_window_counts(height: int, width: int, kernel: int, padding: tuple[int, int]) -> torch.Tensor:
    """1 / (number of real cells under each window) of a stride-1 pool, as a (1, 1, H, W) CPU tensor."""
    with torch.inference_mode(False), torch.no_grad():
        counts = F.conv2d(torch.ones(1, 1, height, width), _window_sum_kernel(1, kernel), padding=padding)
        return counts.reciprocal_()


class AvgPool2dSame(_PoolSame):
    """TF SAME average pooling: the divisor counts only real (unpadded) cells.

    Direct cases: ``count_include_pad=False``. General asymmetric case: pool the zero-padded input
    and a padded ones-mask of the (1, 1, H, W) plane identically and divide; the mask is tiny.

    CPU, NCHW, stride 1 (the normal cells' pools): PyTorch's NCHW ``avg_pool2d`` kernel is 3-8x
    slower than a depthwise convolution with an all-ones kernel (oneDNN), so the window sums come
    from that convolution and are scaled by the cached reciprocal window counts; the result equals
    ``avg_pool2d`` up to float rounding (~1e-7). channels_last inputs (the optimized path) and GPUs
    keep PyTorch's pool, which is fast there, and so do traces (exports and fvcore's MAC counts see
    a pool, not a convolution).
    """

    extra = ", exclude_pad"

    def _pool(self, x: torch.Tensor, padding: tuple[int, int] | int, ceil_mode: bool) -> torch.Tensor:
        k = self.kernel_size
        if self.stride == 1 and not ceil_mode and _plain_cpu_nchw(x):
            pad = (padding, padding) if isinstance(padding, int) else padding
            sums = F.conv2d(x, _window_sum_kernel(x.shape[1], k), padding=pad, groups=x.shape[1])
            return sums.mul_(_reciprocal_window_counts(x.shape[-2], x.shape[-1], k, tuple(pad)))
        return F.avg_pool2d(x, k, self.stride, padding, ceil_mode=ceil_mode, count_include_pad=False)

    def _pool_padded(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        ones = x.new_ones((1, 1, x.shape[-2], x.shape[-1]))
        return F.avg_pool2d(F.pad(x, pad), k, s) / F.avg_pool2d(F.pad(ones, pad), k, s)

"""TF-slim's ``factorized_reduction``: halve the spatial size without dropping pixels.

Why not a strided 1x1 conv: that would look at one pixel in four. Two strided 1x1 convs on grids
offset by one pixel see half the pixels each, and their channel concat keeps the width. The second
grid is TF's "pad bottom/right with one zero, drop the first row/col, take every other pixel",
i.e. ``x[1::2, 1::2]`` plus one zero row/col when the size is odd. Output size is ceil(H/2).
For an odd number of filters the extra channel goes to path 2 (newest TF).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ConvBNModule, NormFactory


class _StridedPath(nn.Module):
    """Every other pixel, starting at ``offset`` (0 or 1), then a 1x1 conv (``path{1,2}_conv``).

    The pixel grid is the conv's stride 2, not a strided slice of the input: the same numbers
    without a strided copy, and dense input strides that oneDNN's graph fusion can describe
    (it refuses ``x[:, :, ::2, ::2]`` of a batch > 1).
    """

    def __init__(self, c_in: int, c_out: int, offset: int) -> None:
        super().__init__()
        self.offset = offset
        self.conv = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.offset:
            pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
            # drop the first row/col; an odd size gets TF's zero row/col so the grid yields ceil(H/2)
            x = x[:, :, 1:, 1:]
            if pad_h or pad_w:
                x = F.pad(x, (0, int(pad_w), 0, int(pad_h)))
        return self.conv(x)


class FactorizedReduction(ConvBNModule):
    """Stride-2 factorized reduction to ``c_out`` channels: concat(path_1, path_2) -> BN (no ReLU)."""

    CONV_BN = ((("path_1.conv", "path_2.conv"), "final_path_bn"),)  # the BN splits over the two paths

    def __init__(self, c_in: int, c_out: int, norm: NormFactory) -> None:
        super().__init__()
        self.path_1 = _StridedPath(c_in, c_out // 2, offset=0)
        self.path_2 = _StridedPath(c_in, c_out - c_out // 2, offset=1)
        self.final_path_bn = norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], dim=1))

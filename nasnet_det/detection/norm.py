"""Norm-layer conversion and freezing for a NASNet that is split between backbone and ROI head.

The cell engine builds plain ``nn.BatchNorm2d`` layers (TF eps/momentum). Detection wants other
norms: FrozenBN for fine-tuning with one image per GPU (what TF's faster_rcnn_nas does), SyncBN for
multi-GPU training from scratch, GN when batches are tiny. We swap the layers in place, keeping
their names, so state-dict keys are identical for every norm and a classifier checkpoint maps
onto any of them.
"""
from __future__ import annotations

import math

from detectron2.layers import FrozenBatchNorm2d, get_norm
from torch import nn

from .config import SUPPORTED_NORMS


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def set_batchnorm_hparams(module: nn.Module, momentum: float, eps: float) -> None:
    """Override momentum / eps of every BatchNorm in ``module``; a negative value keeps the layer's own."""
    for m in module.modules():
        if _is_batchnorm(m):
            if momentum >= 0:
                m.momentum = momentum
            if eps >= 0:
                m.eps = eps


def _make_norm(norm: str, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """The replacement for one BatchNorm layer, initialised from it."""
    channels = bn.num_features
    if norm == "GN":
        # detectron2's "GN" is GroupNorm(32, C); NASNet widths (e.g. 44, 88, 264) are not always
        # multiples of 32, so use the largest group count <= 32 that divides C.
        new = nn.GroupNorm(math.gcd(32, channels), channels, eps=bn.eps)
        if bn.affine:
            new.weight.data.copy_(bn.weight.data)
            new.bias.data.copy_(bn.bias.data)
        return new
    new = get_norm(norm, channels)
    new.eps = bn.eps
    if hasattr(new, "momentum"):
        new.momentum = bn.momentum
    if bn.affine:
        new.weight.data.copy_(bn.weight.data)
        new.bias.data.copy_(bn.bias.data)
    if bn.track_running_stats and bn.running_mean is not None:
        new.running_mean.data.copy_(bn.running_mean)
        new.running_var.data.copy_(bn.running_var)
    return new


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace every BatchNorm in ``module`` by ``norm`` (a detectron2 norm name), in place.

    Returns ``module`` (or its replacement if ``module`` itself is a BatchNorm).
    """
    if norm not in SUPPORTED_NORMS:
        raise ValueError(f"MODEL.NASNET.NORM={norm!r} is not supported; use one of {SUPPORTED_NORMS}")
    if norm == "BN":
        return module  # the engine already builds BatchNorm2d
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if _is_batchnorm(module):
        return _make_norm(norm, module)
    for name, child in module.named_children():
        new = convert_norm(child, norm)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: no gradients, and its BatchNorms become FrozenBN (fixed statistics).

    This is what detectron2's ``CNNBlockBase.freeze`` does for ResNet stages, applied to a NASNet
    part; only the frozen part is converted.
    """
    for p in module.parameters():
        p.requires_grad = False
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)

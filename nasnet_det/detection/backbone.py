"""The first stage of faster_rcnn_nas as a detectron2 Backbone: stem + cells up to the split.

It returns ONE stride-16 map, the channel concat of the last two cell outputs (for NASNet-A Large
cell_10 and cell_11, 2016 + 2016 = 4032 channels). Both are returned because the second stage
continues the two-input cell recurrence on the pooled ROI features: h_{i-1} feeds the second
reduction cell and, with skip_reduction_layer_input, also the first normal cell after it.
"""
from __future__ import annotations

import logging

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..modeling.memory import enable_memory_saving
from .norm import convert_norm, freeze, set_batchnorm_hparams
from .split_nasnet import NASNetConfigError, SplitInfo, build_stage

logger = logging.getLogger(__name__)


class NASNetBackbone(Backbone):
    """stem -> cells[:split] -> cat(h_{i-1}, h_i); see module docstring."""

    def __init__(self, nasnet: nn.Module, info: SplitInfo, out_feature: str = "nas4"):
        super().__init__()
        self.nasnet = nasnet
        self.split_at = info.split_at
        self.split_channels = (info.prev_channels, info.channels)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: info.prev_channels + info.channels}
        self._out_feature_strides = {out_feature: info.stride}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h_prev, h = self.nasnet.stem(x)
        h_prev, h = self.nasnet.forward_cells(h_prev, h, 0, self.split_at)
        return {self._out_features[0]: torch.cat([h_prev, h], dim=1)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        # keyword construction: ShapeSpec is a namedtuple on v0.6 and a dataclass on main
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def freeze(self, freeze_at: int) -> "NASNetBackbone":
        """detectron2's FREEZE_AT semantics: 0 = nothing, 1 = the stem convolution,
        k >= 2 = the stem and the first k - 1 cells (stem cells count: ``cell_stem_0`` is cell 1).
        """
        if freeze_at < 0 or freeze_at > self.split_at + 1:
            raise NASNetConfigError(
                f"MODEL.BACKBONE.FREEZE_AT={freeze_at} must lie in [0, {self.split_at + 1}] "
                f"(stem + {self.split_at} backbone cells)"
            )
        if freeze_at >= 1:
            self.nasnet.conv0 = freeze(self.nasnet.conv0)
        for i in range(max(freeze_at - 1, 0)):
            self.nasnet.cells[i] = freeze(self.nasnet.cells[i])
        return self


@BACKBONE_REGISTRY.register()
def build_nasnet_backbone(cfg, input_shape: ShapeSpec) -> NASNetBackbone:
    """BACKBONE_REGISTRY entry, chosen with ``MODEL.BACKBONE.NAME: build_nasnet_backbone``."""
    if input_shape.channels != 3:
        raise NASNetConfigError("NASNet backbones take 3-channel images, "
                                f"got MODEL.PIXEL_MEAN of {input_shape.channels}")
    net, info = build_stage(cfg, "backbone")
    c = cfg.MODEL.NASNET
    set_batchnorm_hparams(net, float(c.BN_MOMENTUM), float(c.BN_EPS))
    net = convert_norm(net, c.NORM)
    backbone = NASNetBackbone(net, info, c.OUT_FEATURE)
    backbone.freeze(int(cfg.MODEL.BACKBONE.FREEZE_AT))
    if c.MEMORY_SAVING:
        enable_memory_saving(net)
    logger.info(
        "NASNet backbone: %s (genotype %s), cells[:%d], output %r stride %d, %d channels (%d + %d)",
        c.ARCH, net.config.genotype.name, info.split_at, c.OUT_FEATURE, info.stride, info.prev_channels + info.channels,
        info.prev_channels, info.channels,
    )
    return backbone

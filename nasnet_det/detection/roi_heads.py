"""The second stage of faster_rcnn_nas in detectron2's C4 pattern (a ``Res5ROIHeads`` subclass).

``Res5ROIHeads`` pools ROI features with ROIAlign, runs ``self.res5`` on them, takes the spatial
mean and feeds ``FastRCNNOutputLayers``. We keep all of that and only supply a different
``res5``: a module that splits the pooled map back into (h_{i-1}, h_i), runs the remaining NASNet
cells (the second reduction cell and the normal cells after it) with ``forward_cells`` and
applies the final ReLU, as TF's faster_rcnn_nas second stage does. TridentNet's
``TridentRes5ROIHeads`` is the precedent for plugging in through ``_build_res5_block``. The one
other override, ``_shared_roi_transform``, only changes the order of work at CPU inference
(pooling and cells chunk by chunk, ``MODEL.NASNET.ROI_CHUNK_SIZE``), not what is computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads import Res5ROIHeads
from detectron2.structures import Boxes
from torch import nn

from ..modeling.memory import enable_memory_saving
from .norm import convert_norm, set_batchnorm_hparams
from .split_nasnet import SplitInfo, build_stage


class NASNetSecondStage(nn.Module):
    """pooled cat(h_{i-1}, h_i) -> cells[split:] -> ReLU. Drop path runs as configured in training."""

    def __init__(self, nasnet: nn.Module, info: SplitInfo, chunk_size: int = 0):
        super().__init__()
        self.nasnet = nasnet
        self.start = info.split_at
        self.split_channels = [info.prev_channels, info.channels]
        self.out_channels = info.out_channels
        self.chunk_size = chunk_size  # MODEL.NASNET.ROI_CHUNK_SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunked(x.shape[0], x.device):
            return torch.cat([self.run_cells(crops) for crops in x.split(self.chunk_size)])
        return self.run_cells(x)

    def chunked(self, num_crops: int, device: torch.device) -> bool:
        """CPU inference on more crops than a chunk, outside tracing (an exported graph keeps one
        batch of any size) and training (batch-statistics norms would see smaller batches)."""
        return (0 < self.chunk_size < num_crops and not self.training and device.type == "cpu"
                and not torch.jit.is_tracing())

    def run_cells(self, x: torch.Tensor) -> torch.Tensor:
        h_prev, h = torch.split(x, self.split_channels, dim=1)
        _, out = self.nasnet.forward_cells(h_prev, h, self.start, None)
        return F.relu(out)


@ROI_HEADS_REGISTRY.register()
class NASNetROIHeads(Res5ROIHeads):
    """ROI_HEADS_REGISTRY entry, chosen with ``MODEL.ROI_HEADS.NAME: NASNetROIHeads``.

    Pooler size: ROI_BOX_HEAD.POOLER_RESOLUTION (17 in TF's config, so the second reduction cell
    gives 9x9). The module keeps detectron2's attribute name ``res5`` for the cells, which keeps
    every inherited method working; checkpoint keys are ``roi_heads.res5.nasnet.cells.<i>.*``.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise ValueError("NASNetROIHeads is box-only: set MODEL.MASK_ON and MODEL.KEYPOINT_ON to False")
        net, info = build_stage(cfg, "head")
        c = cfg.MODEL.NASNET
        set_batchnorm_hparams(net, float(c.BN_MOMENTUM), float(c.BN_EPS))
        net = convert_norm(net, c.NORM)
        if c.MEMORY_SAVING:
            enable_memory_saving(net)
        stage = NASNetSecondStage(net, info, int(c.ROI_CHUNK_SIZE))
        return stage, stage.out_channels

    def _shared_roi_transform(self, features: list[torch.Tensor], boxes: list[Boxes]) -> torch.Tensor:
        """Pool and run the cells one chunk of crops at a time when the head runs chunked.

        Pooling all crops first writes the whole pooled map (500 crops x 1056 x 17 x 17 in the
        Mobile detector: 610 MB) and reads it back; pooling each chunk just before its cells keeps
        the crops in cache. Same crops, same order: ROIAlign treats each box on its own.
        """
        num_crops = sum(len(b) for b in boxes)
        if len(self.pooler.level_poolers) != 1 or not self.res5.chunked(num_crops, features[0].device):
            return super()._shared_roi_transform(features, boxes)
        rois, align = convert_boxes_to_pooler_format(boxes), self.pooler.level_poolers[0]
        return torch.cat([self.res5.run_cells(align(features[0], part)) for part in rois.split(self.res5.chunk_size)])

"""Export a NASNet detector: one image in, (boxes, scores, classes) out, through detectron2's TracingAdapter.

The graph takes the image as the model's preprocessing expects it after resizing (C, H, W float32
in ``INPUT.FORMAT`` channel order, at the H x W it was exported at) and returns the detections
after the model's own score threshold and NMS, boxes in that image's pixel coordinates (x0, y0, x1,
y1). Resizing the original image and scaling boxes back are the caller's (``detector_inputs`` and
``scale_boxes`` do both as ``NASNetPredictor`` does).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..detection.compat import tracing_adapter
from .writers import SUFFIX, check_format, write_onnx, write_torchscript

OUTPUTS = ("boxes", "scores", "classes")


def _detections(model: torch.nn.Module, inputs: list[dict]) -> tuple[torch.Tensor, ...]:
    instances = model.inference(inputs, do_postprocess=False)[0]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def export_detector(model: torch.nn.Module, fmt: str, out: str | os.PathLike, image_hw: tuple[int, int],
                    provenance: Mapping[str, str]) -> Path:
    """Write detectron2 ``model`` (eval mode, CPU) as ``fmt`` to ``out`` for images of ``image_hw``."""
    check_format(fmt)
    out = Path(out)
    if out.suffix != SUFFIX[fmt]:
        out = out.with_name(out.name + SUFFIX[fmt])
    model.eval()
    example = torch.rand(3, *image_hw, generator=torch.Generator().manual_seed(0)) * 255
    adapter = tracing_adapter()(model, [{"image": example}], _detections)
    adapter.eval()
    if fmt == "torchscript":
        return write_torchscript(adapter, adapter.flattened_inputs, out, provenance)
    return write_onnx(adapter, adapter.flattened_inputs, out, provenance, ["image"], list(OUTPUTS))


def scale_boxes(boxes: np.ndarray, exported_hw: tuple[int, int], original_hw: tuple[int, int]) -> np.ndarray:
    """Boxes from the exported image's coordinates to the original image's."""
    sy, sx = original_hw[0] / exported_hw[0], original_hw[1] / exported_hw[1]
    return boxes * np.array([sx, sy, sx, sy], dtype=boxes.dtype)

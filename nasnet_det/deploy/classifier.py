"""Export a NASNet classifier: images (N, 3, S, S) float32 in, logits (N, num_classes) out, N dynamic."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ..modeling.network import NASNet
from .writers import SUFFIX, check_format, write_onnx, write_torchscript


class _LogitsOnly(torch.nn.Module):
    """The eval forward as a one-tensor graph (an aux head is dropped by ``eval`` already)."""

    def __init__(self, model: NASNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out[0] if isinstance(out, tuple) else out


def export_classifier(model: NASNet, fmt: str, out: str | os.PathLike, image_size: int,
                      provenance: Mapping[str, str]) -> Path:
    """Write ``model`` (eval mode, fp32, CPU) as ``fmt`` to ``out`` (suffix added when missing).

    The trace runs on a batch of 2 so no size-1 dimension is specialised away; ONNX declares the
    batch dynamic, TorchScript traces keep batch-generic ops.
    """
    check_format(fmt)
    out = Path(out)
    if out.suffix != SUFFIX[fmt]:
        out = out.with_name(out.name + SUFFIX[fmt])
    module = _LogitsOnly(model.eval()).eval()
    example = (torch.zeros(2, 3, image_size, image_size),)
    if fmt == "torchscript":
        return write_torchscript(module, example, out, provenance)
    return write_onnx(module, example, out, provenance, ["images"], ["logits"],
                      {"images": {0: "batch"}, "logits": {0: "batch"}})

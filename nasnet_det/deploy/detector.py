"""Export a NASNet detector: one image in, (boxes, scores, classes) out, through detectron2's TracingAdapter.

The graph takes the image as the model's preprocessing expects it after resizing (C, H, W float32
in ``INPUT.FORMAT`` channel order, at the H x W it was exported at) and returns the detections
after the model's own score threshold and NMS, boxes in that image's pixel coordinates (x0, y0, x1,
y1). Resizing the original image and scaling boxes back are the caller's; ``ExportedDetector`` does
the second as the eager model does, for ``NASNetPredictor(runtime=...)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from ..detection.compat import tracing_adapter
from ..errors import DeployError
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
    test_size = getattr(model, "test_size", None)
    if test_size is not None and tuple(image_hw) != tuple(test_size):
        # NASNetRCNN resizes other shapes itself, in numpy: a trace would freeze that resize's output
        raise DeployError(f"image size {tuple(image_hw)}: this detector's INPUT.FIXED_SIZE_TEST is "
                          f"{tuple(test_size)}; export at that size")
    model.eval()
    example = torch.rand(3, *image_hw, generator=torch.Generator().manual_seed(0)) * 255
    adapter = tracing_adapter()(model, [{"image": example}], _detections)
    adapter.eval()
    if fmt == "torchscript":
        return write_torchscript(adapter, adapter.flattened_inputs, out, provenance)
    return write_onnx(adapter, adapter.flattened_inputs, out, provenance, ["image"], list(OUTPUTS))




class ExportedDetector:
    """An exported detector (ONNX, or TorchScript in runtime torch) run in ``runtime``, called like the
    detectron2 model it came from.

    ``detector([{"image": (3, H, W) tensor, "height": h, "width": w}])`` returns
    ``[{"instances": Instances}]`` in original image coordinates, through detectron2's own
    ``detector_postprocess`` (scale, clip, drop empty boxes), so callers such as
    ``NASNetPredictor`` need not know which runtime runs. ``path`` is an ONNX file written by
    ``export_detector`` for ``image_hw`` images; ``from_model`` exports one into a temporary folder
    that lives as long as the object. ``threads`` and ``bf16`` are ``load_exported``'s.
    """

    def __init__(self, path: str | os.PathLike, image_hw: tuple[int, int], runtime: str,
                 threads: int | None = None, bf16: bool = False) -> None:
        from .runtime import load_exported

        self.image_hw = tuple(image_hw)
        self._run = load_exported(path, runtime, threads=threads, bf16=bf16)
        self._folder = None

    @classmethod
    def from_model(cls, model: torch.nn.Module, image_hw: tuple[int, int], runtime: str,
                   provenance: Mapping[str, str], threads: int | None = None,
                   bf16: bool = False) -> "ExportedDetector":
        """Export ``model`` for ``image_hw`` images to a temporary ONNX file and run it in ``runtime``."""
        import tempfile

        folder = tempfile.TemporaryDirectory(prefix="nasnet_det_export_")
        path = export_detector(model, "onnx", Path(folder.name) / "detector", image_hw, provenance)
        detector = cls(path, image_hw, runtime, threads=threads, bf16=bf16)
        detector._folder = folder  # removed with the object
        return detector

    def __call__(self, inputs: list[dict]) -> list[dict]:
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        results = []
        for item in inputs:
            image = item["image"]
            if tuple(image.shape[-2:]) != self.image_hw:
                raise DeployError(f"exported detector takes {self.image_hw[0]}x{self.image_hw[1]} images, got "
                                  f"{tuple(image.shape[-2:])}: resize them as NASNetPredictor does")
            boxes, scores, classes = self._run(image.numpy())
            found = Instances(self.image_hw, pred_boxes=Boxes(torch.from_numpy(boxes)),
                              scores=torch.from_numpy(scores), pred_classes=torch.from_numpy(classes))
            height, width = item.get("height", self.image_hw[0]), item.get("width", self.image_hw[1])
            results.append({"instances": detector_postprocess(found, height, width)})
        return results

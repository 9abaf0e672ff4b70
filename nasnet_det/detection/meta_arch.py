"""``NASNetRCNN``: detectron2's GeneralizedRCNN that applies INPUT.FIXED_SIZE_TEST itself at inference.

detectron2's ``DefaultPredictor`` (and any user loop built like it) resizes with
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, which cannot express TF's fixed,
non-aspect-preserving resize. So the fixed-size configs set ``INPUT.MIN_SIZE_TEST: 0`` (detectron2's
"no resize at test time"), and the model resizes any inference image whose shape is not the fixed
size with the very transform the test data mapper uses (``T.Resize`` -> ``ResizeTransform``, PIL
bilinear on uint8). The data loader and ``NASNetPredictor`` already hand over fixed-size images, so
for them this is a no-op; ``DefaultPredictor(cfg)`` hands over the original image and gets the same
pixels, hence the same boxes. Training is untouched (the mapper resizes images and boxes together).
"""
from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from .data import fixed_size

__all__ = ["NASNetRCNN"]


def _resize_like_mapper(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) image resized to ``size`` exactly as the test mapper's ``T.Resize(size)`` would."""
    h, w = image.shape[-2:]
    arr = image.permute(1, 2, 0).cpu().numpy()
    integral = arr.size and arr.min() >= 0 and arr.max() <= 255 and np.array_equal(arr, np.round(arr))
    if arr.dtype != np.uint8 and integral:
        arr = arr.astype(np.uint8)  # a decoded image as float (DefaultPredictor): the mapper resizes uint8
    out = T.ResizeTransform(h, w, size[0], size[1]).apply_image(arr)
    return torch.as_tensor(np.ascontiguousarray(out.transpose(2, 0, 1))).to(image.dtype)


@META_ARCH_REGISTRY.register()
class NASNetRCNN(GeneralizedRCNN):
    """GeneralizedRCNN plus the fixed test-time resize; same parameters and state_dict keys."""

    @configurable
    def __init__(self, *, test_size: tuple[int, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.test_size = test_size

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["test_size"] = fixed_size(cfg, is_train=False)
        return ret

    def inference(self, batched_inputs, *args, **kwargs):
        if self.test_size is not None:
            batched_inputs = [self._fixed_size_input(x) for x in batched_inputs]
        return super().inference(batched_inputs, *args, **kwargs)

    def _fixed_size_input(self, item: dict) -> dict:
        image = item["image"]
        if tuple(image.shape[-2:]) == tuple(self.test_size):
            return item
        # boxes come back in the caller's image coordinates, as GeneralizedRCNN promises
        return dict(item, image=_resize_like_mapper(image, self.test_size),
                    height=item.get("height", image.shape[-2]), width=item.get("width", image.shape[-1]))

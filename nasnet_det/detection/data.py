"""Input pipeline pieces the stock DatasetMapper lacks: a fixed, non-aspect-preserving resize and
errors that name the image file that cannot be read.

TF's faster_rcnn_nas resizes every image to a fixed 1200x1200 (``fixed_shape_resizer``: only
fully known shapes were supported) and the paper's Table 4 does the same at 600/1200. detectron2's
``ResizeShortestEdge`` keeps the aspect ratio, so we put ``T.Resize((h, w))`` in its place when
INPUT.FIXED_SIZE_TRAIN / _TEST is set. Boxes are transformed with the image, and at test time
``detector_postprocess`` rescales x and y separately back to the original (height, width), so
predictions come out in original image coordinates without further work.
"""
from __future__ import annotations

from typing import Any

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..errors import DataError


class ImageReadError(DataError, OSError):
    """An image listed in a dataset (or given to the predictor) is missing or cannot be decoded."""


def fixed_size(cfg, is_train: bool) -> tuple[int, int] | None:
    """The configured fixed (height, width), or None when the aspect-preserving resize is used."""
    size = cfg.INPUT.FIXED_SIZE_TRAIN if is_train else cfg.INPUT.FIXED_SIZE_TEST
    h, w = (int(v) for v in size)
    if h <= 0 and w <= 0:
        return None
    if h <= 0 or w <= 0:
        key = "INPUT.FIXED_SIZE_TRAIN" if is_train else "INPUT.FIXED_SIZE_TEST"
        raise ValueError(f"{key}={tuple(size)}: give both height and width (or 0, 0 to disable)")
    return h, w


def build_resize_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """detectron2's default augmentations, with the resize replaced by a fixed one if configured.

    Also what a predictor should use at test time (``is_train=False``: no flip).
    """
    augs = utils.build_augmentation(cfg, is_train)
    size = fixed_size(cfg, is_train)
    if size is not None:
        augs = [T.Resize(size) if isinstance(a, T.ResizeShortestEdge) else a for a in augs]
    return augs


def read_image_or_fail(file_name: str, image_format: str):
    """``detection_utils.read_image`` with one error type that names the file."""
    try:
        return utils.read_image(file_name, format=image_format)
    except FileNotFoundError as err:
        raise ImageReadError(f"image file {file_name!r} does not exist") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated / not an image
        raise ImageReadError(f"image file {file_name!r} cannot be read (corrupt or not an image): {err}") from err


class NASNetDatasetMapper(DatasetMapper):
    """DatasetMapper with ``build_resize_augmentations`` and file-naming read errors."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_resize_augmentations(cfg, is_train)
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        # Read once here to get the clear error; detectron2 reads again inside, which is cheap
        # next to the model and keeps us independent of DatasetMapper's internals.
        read_image_or_fail(dataset_dict["file_name"], self.image_format)
        return super().__call__(dataset_dict)

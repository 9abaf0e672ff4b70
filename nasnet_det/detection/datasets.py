"""Dataset registration helpers: any COCO-format json, and checks that give one clear error.

detectron2 already registers the COCO sets (``coco_2017_train``, ``coco_2017_val``,
``coco_2014_minival`` - the paper's "mini-val" - ...) under ``$DETECTRON2_DATASETS`` (default
``./datasets``). Registration is lazy, so a missing file would otherwise surface deep inside the
data loader; ``check_datasets`` fails early and names the file.
"""
from __future__ import annotations

import os
from typing import Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog

from . import compat
from ..errors import DataError


class DatasetError(DataError):
    """A dataset name, json file or image folder that cannot be used."""


def register_coco_json(name: str, json_file: str, image_root: str) -> str:
    """Register a COCO-format instances json under ``name`` and return the name.

    Category ids may be sparse (COCO's 1..90); detectron2 maps them to contiguous ids for training
    and COCOEvaluator maps them back. Registering the same name again replaces the old entry.
    """
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(json_file):
        raise DatasetError(f"dataset json {json_file!r} does not exist")
    if not os.path.isdir(image_root):
        raise DatasetError(f"image root {image_root!r} (for {json_file!r}) is not a directory")
    compat.register_coco_instances_once(name, {}, json_file, image_root)
    return name


def check_datasets(names: Iterable[str]) -> None:
    """Fail with one clear message if a dataset is unknown or its json / image folder is missing."""
    for name in names:
        if name not in DatasetCatalog.list():
            raise DatasetError(
                f"dataset {name!r} is not registered; register it (tools/train_net.py --dataset-json "
                "... --image-root ..., or nasnet_det.detection.register_coco_json) or use one of "
                "detectron2's builtin names such as coco_2017_val"
            )
        meta = MetadataCatalog.get(name)
        json_file = getattr(meta, "json_file", None)
        if json_file and not os.path.isfile(json_file):
            hint = ""
            if name.startswith(("coco_", "lvis_", "keypoints_coco")):
                root = os.getenv("DETECTRON2_DATASETS", "datasets")
                hint = f" (builtin dataset: set $DETECTRON2_DATASETS, now {root!r}, to the folder holding coco/)"
            raise DatasetError(f"dataset {name!r}: json file {json_file!r} does not exist{hint}")
        image_root = getattr(meta, "image_root", None)
        if image_root and not os.path.isdir(image_root):
            raise DatasetError(f"dataset {name!r}: image folder {image_root!r} does not exist")

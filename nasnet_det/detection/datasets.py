"""Dataset registration helpers: any COCO-format json, and checks that give one clear error.

detectron2 already registers the COCO sets (``coco_2017_train``, ``coco_2017_val``,
``coco_2014_minival`` - the paper's "mini-val" - ...) under ``$DETECTRON2_DATASETS`` (default
``./datasets``). Registration is lazy, so a missing file would otherwise surface deep inside the
data loader; ``check_datasets`` fails early and names the file.

``register_coco_json`` also checks the json's content (``dataset_check``): structural problems
stop with one ``DatasetError``; invalid annotations are dropped with one warning, or refused when
``DATASETS.STRICT_ANNOTATIONS`` (or ``strict=True``) asks for it. detectron2 then loads a cleaned
copy of the json, so training and COCOEvaluator's ground truth agree on what was dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Callable, Iterable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..durable import atomic_write_text
from ..errors import ConfigError
from .dataset_check import CheckResult, DatasetError, Problem, check_coco_json, read_json

__all__ = ["DatasetError", "check_datasets", "check_num_classes", "register_coco_json"]

logger = logging.getLogger(__name__)
SHOWN_PROBLEMS = 3  # how many dropped annotations the warning / error spells out


def register_coco_json(name: str, json_file: str, image_root: str, strict: bool = False) -> str:
    """Check a COCO-format instances json, register it under ``name`` and return the name.

    Category ids may be sparse (COCO's 1..90); detectron2 maps them to contiguous ids for training
    and COCOEvaluator maps them back. Registering the same name again replaces the old entry.
    ``strict``: an invalid annotation raises instead of being dropped (see ``check_datasets`` for
    the config key that does the same from tools/train_net.py).
    """
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(json_file):
        raise DatasetError(f"dataset json {json_file!r} does not exist")
    if not os.path.isdir(image_root):
        raise DatasetError(f"image root {image_root!r} (for {json_file!r}) is not a directory")
    result = check_coco_json(json_file, image_root)
    if not result.data["images"]:
        raise DatasetError(f"dataset json {json_file!r}: 'images' is empty; a detection dataset needs images "
                           "with boxes (is it the right json?)")
    if not result.data["annotations"]:  # detectron2 would stop later with "Dataset ... is empty!" (a traceback)
        why = (f"all {len(result.dropped)} were invalid and dropped: {_listing(result.dropped)}" if result.dropped
               else "'annotations' is empty")
        raise DatasetError(f"dataset json {json_file!r} has no usable box annotation ({why}); training and "
                           "evaluation need boxes")
    if strict and result.dropped:
        raise strict_error(result.dropped, "strict=True")
    loaded_json = _write_cleaned_copy(result) if result.dropped else json_file
    _register(name, loaded_json, image_root, result)
    return name


def _write_cleaned_copy(result: CheckResult) -> str:
    """The json without its invalid annotations, in the temp folder, named by its content.

    A copy, not an edit: the user's file is never rewritten, and the same content maps to the same
    file so that repeated registrations do not pile up copies.
    """
    text = json.dumps(result.data)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(result.json_file))[0]
    folder = os.path.join(tempfile.gettempdir(), f"nasnet_det-{os.getuid()}", "checked_datasets")
    path = os.path.join(folder, f"{stem}-{digest}.json")
    if not os.path.isfile(path):
        atomic_write_text(path, text)
    return path


def _register(name: str, loaded_json: str, image_root: str, result: CheckResult) -> None:
    """Register ``name`` (replacing an older entry) with a loader that warns once about drops."""
    from detectron2.data.datasets import load_coco_json

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, _warn_once_then(lambda: load_coco_json(loaded_json, image_root, name),
                                                  result.dropped, len(result.data["annotations"])))
    MetadataCatalog.get(name).set(
        json_file=loaded_json, image_root=image_root, evaluator_type="coco",
        source_json_file=result.json_file, thing_classes=result.thing_classes,
        dropped_annotations=tuple(result.dropped),
    )


def _warn_once_then(load: Callable[[], list[dict]], dropped: Sequence[Problem], kept: int) -> Callable[[], list[dict]]:
    """``load`` preceded, the first time only, by the one warning about dropped annotations.

    Warned at load rather than at registration so that a strict ``check_datasets`` in between can
    refuse the dataset without a contradicting warning first.
    """
    pending = [bool(dropped)]

    def loader() -> list[dict]:
        if pending[0]:
            pending[0] = False
            logger.warning(
                "dropped %d of %d annotations that cannot be trained on (set DATASETS.STRICT_ANNOTATIONS "
                "True to stop instead): %s", len(dropped), len(dropped) + kept, _listing(dropped))
        return load()

    return loader


def _listing(problems: Sequence[Problem]) -> str:
    shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def strict_error(problems: Sequence[Problem], setting: str) -> DatasetError:
    """The one error for invalid annotations when they may not be dropped."""
    return DatasetError(f"{len(problems)} invalid annotation(s) and {setting}: {_listing(problems)}; fix them, "
                        "or allow dropping them with a warning (DATASETS.STRICT_ANNOTATIONS False)")


def check_datasets(names: Iterable[str], cfg: Any = None) -> None:
    """Fail with one clear message if a dataset is unknown or its json / image folder is missing.

    With ``cfg`` also: ``DATASETS.STRICT_ANNOTATIONS`` (refuse datasets that had annotations
    dropped at registration) and ``check_num_classes`` for these datasets.
    """
    names = list(names)
    for name in names:
        _check_registered(name)
        if cfg is not None and cfg.DATASETS.get("STRICT_ANNOTATIONS", False):
            dropped = getattr(MetadataCatalog.get(name), "dropped_annotations", ())
            if dropped:
                raise strict_error(dropped, f"DATASETS.STRICT_ANNOTATIONS is True (dataset {name!r})")
    if cfg is not None:
        check_num_classes(cfg, names)


def _check_registered(name: str) -> None:
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


def check_num_classes(cfg: Any, names: Iterable[str] | None = None) -> None:
    """MODEL.ROI_HEADS.NUM_CLASSES must equal each dataset's number of categories.

    Too few classes fail at the first iteration with "Target 62 is out of bounds" (a device-side
    assert on a GPU); too many train and evaluate classes that no annotation has. ``names``
    defaults to DATASETS.TRAIN + DATASETS.TEST; a dataset whose classes are unknown without
    loading it (no ``thing_classes``, no json) is skipped.
    """
    if names is None:
        names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    expected = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for name in names:
        classes = _thing_classes(name)
        if classes is not None and len(classes) != expected:
            source = getattr(MetadataCatalog.get(name), "source_json_file", None) or getattr(
                MetadataCatalog.get(name), "json_file", "")
            raise ConfigError(
                f"MODEL.ROI_HEADS.NUM_CLASSES is {expected} but dataset {name!r}"
                f"{f' ({source})' if source else ''} has {len(classes)} categories; "
                f"set MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}")


def _thing_classes(name: str) -> list[str] | None:
    """The dataset's class names from its metadata, else from its json's categories, else None."""
    meta = MetadataCatalog.get(name)
    if hasattr(meta, "thing_classes"):
        return list(meta.thing_classes)
    json_file = getattr(meta, "json_file", None)
    if json_file and os.path.isfile(json_file):
        categories = read_json(json_file)["categories"]
        return [c.get("name") for c in categories if isinstance(c, dict)]
    return None

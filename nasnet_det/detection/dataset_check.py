"""The COCO-json checker run when a dataset is registered (``register_coco_json``).

Why: detectron2 reads a COCO json lazily, inside the data loader, and trusts it. A wrong field
then surfaces as a ``KeyError`` or ``AttributeError`` deep in a traceback, a ``SizeMismatchError``
at the first batch, or not at all (a box outside the image, an annotation of no image is trained on
or ignored silently). Checking once at registration names the file, the id and the field.

Two kinds of problems, two policies:

* **Structural** (the file is not UTF-8 JSON, a top-level key or an image field is missing, a
  duplicate image or category id, an unknown ``category_id``, a missing or unreadable image file,
  a width/height that disagree with the file): the dataset cannot mean what its author intended,
  so ``DatasetError`` stops with the first one.
* **One bad annotation** (no ``bbox``, a bbox that is not 4 finite numbers, width or height <= 0, a
  box with no overlap with its image, an ``image_id`` of no image, a missing or duplicate
  annotation id, a non-zero ``ignore``): dropped, as detectron2 drops empty annotations, and reported in a ``Problem``
  list. ``register_coco_json`` turns the list into one warning, or into an error when strict.

Boxes that only partly leave the image are kept: detectron2 clips them to the image when it loads
them, and COCO's own files hold many boxes that overshoot the border by a fraction of a pixel.

Image headers (PIL reads the size without decoding the pixels) are read for every image of a
dataset with up to ``FULL_SIZE_CHECK_LIMIT`` images (coco_mini: 80 images checked in 0.03 s) and
for an evenly spaced sample of ``SIZE_SAMPLE`` images beyond that; every image file's existence is
checked in both cases.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import DataError

REQUIRED_TOP_LEVEL = ("images", "annotations", "categories")
IMAGE_FIELDS = ("id", "file_name", "width", "height")
FULL_SIZE_CHECK_LIMIT = 5000  # ~0.3 ms per header (measured on coco_mini): under 2 s
SIZE_SAMPLE = 1000
# EXIF orientations that rotate by 90 degrees: detectron2's read_image applies them, so the json's
# width/height describe the rotated image.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


class DatasetError(DataError):
    """A dataset name, json file or image folder that cannot be used."""


@dataclass(frozen=True)
class Problem:
    """One invalid annotation: where it is, which field, its value and why it cannot be used."""

    json_file: str
    where: str  # "annotation id 17", or "annotations[4]" when the id itself is unusable
    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.json_file}: {self.where}, field {self.field!r} = {_short(self.value)}: {self.reason}"


@dataclass
class CheckResult:
    """The json's content with the invalid annotations removed, and what was removed."""

    json_file: str
    data: dict[str, Any]
    dropped: list[Problem]
    thing_classes: list[str]  # in detectron2's order (sorted by category id)
    headers_read: int  # image headers whose size was compared with the json


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_coco_json(json_file: str, image_root: str) -> CheckResult:
    """Check a COCO instances json against itself and its image folder.

    Raises DatasetError at the first structural problem; returns the invalid annotations as
    ``CheckResult.dropped`` and the json without them as ``CheckResult.data``.
    """
    data = read_json(json_file)
    images = _index_images(json_file, data["images"])
    categories = _index_categories(json_file, data["categories"])
    kept, dropped = _split_annotations(json_file, data["annotations"], images, categories)
    headers = _check_image_files(json_file, image_root, list(images.values()))
    names = [categories[i] for i in sorted(categories)]
    return CheckResult(json_file, {**data, "annotations": kept}, dropped, names, headers)


def read_json(json_file: str) -> dict[str, Any]:
    """The parsed json object, with one DatasetError for every way it can fail to be one."""
    try:
        with open(json_file, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DatasetError(f"dataset json {json_file!r} cannot be read: {err.strerror or err}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"dataset json {json_file!r} is not UTF-8 text (byte {err.start}); "
                           "give a COCO-format instances json") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"dataset json {json_file!r} is not valid JSON: {err.msg} at line {err.lineno} "
                           f"column {err.colno}") from None
    except RecursionError:
        raise DatasetError(f"dataset json {json_file!r} is nested too deeply to be a COCO json") from None
    if not isinstance(data, dict):
        raise DatasetError(f"dataset json {json_file!r} holds a JSON {type(data).__name__}, not an object with "
                           f"the keys {', '.join(REQUIRED_TOP_LEVEL)}")
    for key in REQUIRED_TOP_LEVEL:
        if not isinstance(data.get(key), list):
            what = "is missing" if key not in data else f"is a {type(data[key]).__name__}, not a list"
            raise DatasetError(f"dataset json {json_file!r}: top-level key {key!r} {what}; a COCO instances json "
                               f"needs {', '.join(REQUIRED_TOP_LEVEL)}")
    return data


def _index_images(json_file: str, images: list[Any]) -> dict[int, dict[str, Any]]:
    """Images by id; every entry must have an int id (unique), a file_name and a positive size."""
    by_id: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(image, dict):
            raise DatasetError(f"{json_file}: {where} is a {type(image).__name__}, not an object")
        if "id" in image and _is_id(image["id"]):
            where = f"image id {image['id']}"
        for key in IMAGE_FIELDS:
            if key not in image:
                raise DatasetError(f"{json_file}: {where} has no {key!r}; every image needs "
                                   f"{', '.join(IMAGE_FIELDS)}")
        problem = _image_field_problem(image)
        if problem:
            key, expected = problem
            raise DatasetError(f"{json_file}: {where}, field {key!r} = {_short(image[key])}: expected {expected}")
        if image["id"] in by_id:
            raise DatasetError(f"{json_file}: image id {image['id']} appears twice (file_name "
                               f"{by_id[image['id']]['file_name']!r} and {image['file_name']!r}); "
                               "image ids must be unique")
        by_id[image["id"]] = image
    return by_id


def _image_field_problem(image: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what it should be) for the first unusable image field, or None."""
    if not _is_id(image["id"]):
        return "id", "an integer"
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        return "file_name", "a path relative to the image root"
    for key in ("width", "height"):
        if not _is_id(image[key]) or image[key] <= 0:
            return key, "a positive integer (pixels)"
    return None


def _index_categories(json_file: str, categories: list[Any]) -> dict[int, str]:
    """Category names by id; ids must be unique ints, names strings."""
    by_id: dict[int, str] = {}
    for index, category in enumerate(categories):
        if (not isinstance(category, dict) or not _is_id(category.get("id"))
                or not isinstance(category.get("name"), str)):
            raise DatasetError(f"{json_file}: categories[{index}] = {_short(category)}: every category needs an "
                               "integer 'id' and a string 'name'")
        if category["id"] in by_id:
            raise DatasetError(f"{json_file}: category id {category['id']} appears twice; category ids must be unique")
        by_id[category["id"]] = category["name"]
    return by_id


def _split_annotations(json_file: str, annotations: list[Any], images: dict[int, dict[str, Any]],
                       categories: dict[int, str]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """(usable annotations, problems of the dropped ones); an unknown category id raises."""
    kept: list[dict[str, Any]] = []
    dropped: list[Problem] = []
    seen_ids: set[int] = set()
    for index, ann in enumerate(annotations):
        problem = _annotation_problem(json_file, index, ann, images, categories, seen_ids)
        if problem:
            dropped.append(problem)
        else:
            seen_ids.add(ann["id"])
            kept.append(ann)
    return kept, dropped


def _annotation_problem(json_file: str, index: int, ann: Any, images: dict[int, dict[str, Any]],
                        categories: dict[int, str], seen_ids: set[int]) -> Problem | None:
    """Why ``ann`` cannot be trained on, or None. Raises for an unknown category id (structural)."""
    if not isinstance(ann, dict):
        return Problem(json_file, f"annotations[{index}]", "(entry)", ann, "not an object")
    if not _is_id(ann.get("id")):
        return Problem(json_file, f"annotations[{index}]", "id", ann.get("id"), "missing or not an integer")
    where = f"annotation id {ann['id']}"
    if ann["id"] in seen_ids:
        return Problem(json_file, where, "id", ann["id"], "duplicate annotation id (the first one is kept)")
    if "category_id" not in ann:
        return Problem(json_file, where, "category_id", None, "missing")
    if not _is_id(ann["category_id"]) or ann["category_id"] not in categories:
        known = sorted(categories)
        raise DatasetError(f"{json_file}: {where}, field 'category_id' = {_short(ann['category_id'])} is not in "
                           f"'categories' (ids {known[:10]}{' ...' if len(known) > 10 else ''}); add the category "
                           "or fix the annotation")
    if ann.get("ignore", 0) != 0:
        return Problem(json_file, where, "ignore", ann["ignore"], "detectron2 does not support 'ignore' annotations")
    image = images.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
    if image is None:
        return Problem(json_file, where, "image_id", ann.get("image_id"), "no image has this id")
    reason = _bbox_problem(ann.get("bbox"), image["width"], image["height"]) if "bbox" in ann else "missing"
    return Problem(json_file, where, "bbox", ann.get("bbox"), reason) if reason else None


def _bbox_problem(bbox: Any, width: int, height: int) -> str | None:
    """Why a COCO [x, y, w, h] box is unusable in a width x height image, or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return "expected 4 finite numbers [x, y, width, height]"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return "width and height must be > 0"
    if min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0):
        return f"the box lies outside the {width}x{height} image"
    return None


def _check_image_files(json_file: str, image_root: str, images: list[dict[str, Any]]) -> int:
    """Every image file must exist; the json's size must match the header of those sampled.

    Returns how many headers were read.
    """
    for image in images:
        path = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(path):
            raise DatasetError(f"{json_file}: image id {image['id']}, field 'file_name' = {image['file_name']!r}: "
                               f"{path!r} does not exist; check --image-root / the image folder")
    step = 1 if len(images) <= FULL_SIZE_CHECK_LIMIT else math.ceil(len(images) / SIZE_SAMPLE)
    sampled = images[::step]
    for image in sampled:
        _check_image_size(json_file, os.path.join(image_root, image["file_name"]), image)
    return len(sampled)


def _check_image_size(json_file: str, path: str, image: dict[str, Any]) -> None:
    """Compare the json's width/height with the file's (after EXIF rotation, as detectron2 reads it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, SyntaxError, ValueError) as err:  # PIL: not an image / truncated header
        raise DatasetError(f"{json_file}: image id {image['id']}: {path!r} cannot be read as an image ({err}); "
                           "replace the file or remove the image from the json") from None
    if (width, height) != (image["width"], image["height"]):
        raise DatasetError(f"{json_file}: image id {image['id']}, fields 'width', 'height' = "
                           f"{image['width']}, {image['height']} but {path!r} is {width}x{height}; "
                           "fix the json (or the image)")

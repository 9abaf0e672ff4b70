"""Run a NASNet detector on images, folders, globs and videos, and write what it found.

Shaped like detectron2's ``demo/predictor.py``: :class:`VisualizationDemo` wraps a predictor and
gives, for an image or every frame of a video, the predictions and the picture with the boxes
drawn on it. :meth:`VisualizationDemo.annotate` is the batch form ``tools/demo.py`` and the demo
pipeline use: annotated copies, an annotated video per video file, ``results.json`` (COCO results
with the dataset's own category ids, plus file_name/frame) and ``images.json`` (the image ids).

Why the image ids of a dataset json are reused: then ``results.json`` can be scored against that
json with pycocotools directly.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from ..data.image_folder import IMAGE_EXTENSIONS
from ..durable import atomic_write_text
from ..errors import DataError
from .data import ImageReadError, read_image_or_fail
from .predictor import ClassInfo, NASNetPredictor, instances_to_coco_results

__all__ = [
    "VIDEO_EXTENSIONS", "InputError", "InputFile", "VisualizationDemo", "expand_inputs", "known_image_ids",
    "config_class_source", "load_class_info", "load_demo_config",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class InputError(DataError):
    """An input that names nothing, or a file that cannot be read; the message names it."""


@dataclass(frozen=True)
class InputFile:
    path: Path
    is_video: bool


def _kind(path: Path) -> InputFile:
    return InputFile(path, path.suffix.lower() in VIDEO_EXTENSIONS)


def expand_inputs(specs: Iterable[str]) -> list[InputFile]:
    """Files, folders (their images and videos, not recursive) and globs, in a stable order, each once."""
    found: list[InputFile] = []
    for spec in specs:
        path = Path(os.path.expanduser(spec))
        if path.is_file():
            found.append(_kind(path))
        elif path.is_dir():
            wanted = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in wanted)
            if not files:
                raise InputError(f"input folder {spec!r} holds no image or video files")
            found.extend(_kind(p) for p in files)
        elif glob.has_magic(spec):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
            if not files:
                raise InputError(f"input pattern {spec!r} matches no file")
            found.extend(_kind(p) for p in files)
        else:
            raise InputError(f"input file {spec!r} does not exist")
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def load_demo_config(config_file: str, opts: list[str], device: str, confidence_threshold: float):
    """The plugin's ``load_config`` (NASNet keys, yaml, overrides, validation), then device and threshold."""
    import torch

    from .config import load_config

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    cfg = load_config(config_file, list(opts), freeze=False)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = confidence_threshold
    cfg.freeze()
    return cfg


def load_class_info(num_classes: int, dataset_json: str | None = None, dataset: str | None = None,
                    from_config: bool = False) -> ClassInfo:
    """Class names and dataset ids from a COCO json or a registered dataset; generic ones without either.

    The count must match the model's ``num_classes``: a mismatch would label every box wrongly.
    ``from_config``: the source is the config's first test set, not one the user named (the error says so).
    """
    try:
        if dataset_json:
            info = ClassInfo.from_coco_json(dataset_json)
        elif dataset:
            info = ClassInfo.from_dataset(dataset)
        else:
            info = ClassInfo.generic(num_classes)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(str(err)) from err
    if len(info.names) != num_classes:
        source = f"dataset json {dataset_json!r}" if dataset_json else f"dataset {dataset!r}"
        hint = (" (the config's DATASETS.TEST[0]; pass --dataset-json with the json the model was trained on)"
                if from_config else "")
        raise InputError(f"{source}{hint} has {len(info.names)} classes, but the model has "
                         f"MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}: the class names would be wrong")
    return info


def config_class_source(cfg) -> tuple[str | None, str | None]:
    """``(dataset_json, dataset)`` to take class names from when the user named neither: the
    config's first test set, as detectron2's demo does (its json when the config records one in
    DATASETS.COCO_JSON, else its registered metadata, e.g. the builtin COCO sets); else nothing."""
    from detectron2.data import MetadataCatalog

    from .run_config import coco_json_entries

    if not cfg.DATASETS.TEST:
        return None, None
    name = cfg.DATASETS.TEST[0]
    for entry_name, json_file, _image_root in coco_json_entries(cfg):
        if entry_name == name:
            return json_file, None
    if hasattr(MetadataCatalog.get(name), "thing_classes"):
        return None, name
    return None, None


def known_image_ids(json_file: str | None) -> dict[str, int]:
    """file name (and base name) -> image id of a COCO json, to reuse its ids in results.json."""
    if not json_file:
        return {}
    with open(json_file) as f:
        images = json.load(f).get("images", [])
    ids: dict[str, int] = {}
    for im in images:
        ids[im["file_name"]] = int(im["id"])
        ids.setdefault(os.path.basename(im["file_name"]), int(im["id"]))
    return ids


class _Names:
    """Unique output file names, whatever folders the inputs came from."""

    def __init__(self, root: Path):
        self.root, self.used = root, set()

    def __call__(self, stem: str, suffix: str) -> Path:
        name, k = f"{stem}{suffix}", 1
        while name in self.used:
            name, k = f"{stem}_{k}{suffix}", k + 1
        self.used.add(name)
        return self.root / name


def _frame_count(item: InputFile) -> int:
    """Frames a video holds (1 when unknown), 1 for an image: the progress bar's total."""
    if not item.is_video:
        return 1
    cap = cv2.VideoCapture(str(item.path))
    count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 1) if cap.isOpened() else 1
    cap.release()
    return count


class VisualizationDemo:
    """Predictions and annotated pictures for images and videos, from one :class:`NASNetPredictor`.

    ``image_ids`` (file name -> id, see :func:`known_image_ids`) keeps a dataset's own image ids
    in the COCO results that :meth:`annotate` writes; other images get fresh ids above them.
    """

    def __init__(self, predictor: NASNetPredictor, class_info: ClassInfo, image_ids: dict[str, int] | None = None):
        self.predictor = predictor
        self.class_info = class_info
        self.metadata = class_info.metadata()
        self.image_ids = dict(image_ids or {})

    def draw(self, image_bgr: np.ndarray, instances) -> np.ndarray:
        """The image with ``instances`` drawn by detectron2's Visualizer (class names), BGR."""
        from detectron2.utils.visualizer import ColorMode, Visualizer

        h, w = image_bgr.shape[:2]
        scale = min(3.0, max(1.0, 480.0 / max(h, w)))  # small images are drawn larger, labels stay legible
        vis = Visualizer(image_bgr[:, :, ::-1], self.metadata, scale=scale, instance_mode=ColorMode.IMAGE)
        return vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]

    def run_on_image(self, image_bgr: np.ndarray):
        """(``Instances`` on the CPU, the annotated BGR image) for one (H, W, 3) uint8 BGR image."""
        instances = self.predictor(image_bgr, image_format="BGR")
        return instances, self.draw(image_bgr, instances)

    def run_on_video(self, path: str | Path) -> Iterator[tuple[np.ndarray, object, np.ndarray]]:
        """(frame, ``Instances``, annotated frame) for every frame of a video file, in order."""
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise InputError(f"video file {str(path)!r} cannot be opened (corrupt or unsupported codec)")
        frames = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames += 1
                yield (frame, *self.run_on_image(frame))
        finally:
            cap.release()
        if frames == 0:
            raise InputError(f"video file {str(path)!r} has no readable frames (corrupt or unsupported codec)")

    def annotate(self, inputs: list[InputFile], output_dir: str | Path, progress: bool = True) -> dict:
        """Annotate every input into ``output_dir``, then write results.json and images.json.

        Returns the number of images/frames and detections, the two json paths and the files
        written. Only a run that finished replaces results.json / images.json, atomically: a
        failed rerun into the same folder must not overwrite an earlier run's results.
        """
        from tqdm import tqdm

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = _Names(out)
        results: list[dict] = []
        images: list[dict] = []
        written: list[str] = []
        next_id = max(self.image_ids.values(), default=0) + 1
        bar = tqdm(total=sum(_frame_count(item) for item in inputs), unit="img", desc="demo", disable=not progress)

        def record(image_bgr: np.ndarray, instances, file_name: str, frame: int | None = None) -> None:
            nonlocal next_id
            image_id = self.image_ids.get(file_name) if frame is None else None
            if image_id is None:
                image_id, next_id = next_id, next_id + 1
            extra = {"file_name": file_name} if frame is None else {"file_name": file_name, "frame": frame}
            images.append({"id": image_id, "width": image_bgr.shape[1], "height": image_bgr.shape[0], **extra})
            results.extend(instances_to_coco_results(instances, image_id, self.class_info, **extra))
            bar.update(1)

        try:
            for item in inputs:
                if item.is_video:
                    written += self._annotate_video(item.path, names, record)
                    continue
                try:
                    image = read_image_or_fail(str(item.path), "BGR")
                except ImageReadError as err:
                    raise InputError(str(err)) from err
                instances, drawn = self.run_on_image(image)
                record(image, instances, item.path.name)
                target = names(item.path.stem, ".png" if item.path.suffix.lower() == ".png" else ".jpg")
                cv2.imwrite(str(target), drawn)
                written.append(str(target))
        finally:
            bar.close()
        atomic_write_text(out / "results.json", json.dumps(results))
        categories = [{"id": i, "name": n} for i, n in zip(self.class_info.dataset_ids, self.class_info.names)]
        atomic_write_text(out / "images.json", json.dumps({"images": images, "categories": categories}))
        return {
            "num_images": len(images),
            "num_detections": len(results),
            "results_json": str(out / "results.json"),
            "images_json": str(out / "images.json"),
            "written": written,
        }

    def _annotate_video(self, path: Path, names: _Names, record) -> list[str]:
        """Write ``<stem>_annotated.mp4`` (.avi with MJPG where OpenCV has no mp4 encoder)."""
        cap = cv2.VideoCapture(str(path))
        fps = (cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0) or 25.0
        cap.release()
        writer, written = None, []
        try:
            for frame_idx, (frame, instances, drawn) in enumerate(self.run_on_video(path)):
                record(frame, instances, path.name, frame_idx)
                if writer is None:
                    target = names(f"{path.stem}_annotated", ".mp4")
                    size = (drawn.shape[1], drawn.shape[0])
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                    if not writer.isOpened():
                        target = target.with_suffix(".avi")
                        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
                    written.append(str(target))
                writer.write(drawn)
        finally:
            if writer is not None:
                writer.release()
        return written

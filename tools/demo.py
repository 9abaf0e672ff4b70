#!/usr/bin/env python
"""Run a NASNet detector on images, folders, globs or video files.

    python tools/demo.py --config-file configs/nasnet_demo_synthetic.yaml \\
        --weights output/demo/train/model_final.pth \\
        --dataset-json output/demo/data/annotations/val.json \\
        --input output/demo/data/val/00000*.jpg clip.mp4 some/folder --output output/demo/pictures

Writes an annotated copy of every image (detectron2's Visualizer, with class names), an
annotated video per video file, ``results.json`` (COCO results: image_id, category_id in the
dataset's own ids, xywh bbox, score, plus file_name/frame) and ``images.json`` (the image ids).
When ``--dataset-json`` is given, images found in it keep their ids there, so ``results.json``
can be scored against that json with pycocotools directly.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import cv2  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402
from nasnet_det.durable import atomic_write_text  # noqa: E402
from nasnet_det.errors import DataError, NASNetError  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


class InputError(DataError):
    """An --input that names nothing, or a file that cannot be read; the message names it."""


@dataclass(frozen=True)
class InputFile:
    path: Path
    is_video: bool


def _kind(path: Path) -> InputFile:
    return InputFile(path, path.suffix.lower() in VIDEO_EXTS)


def expand_inputs(specs: list[str]) -> list[InputFile]:
    """Files, folders (their images and videos, not recursive) and globs, in a stable order."""
    found: list[InputFile] = []
    for spec in specs:
        path = Path(os.path.expanduser(spec))
        if path.is_file():
            found.append(_kind(path))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="NASNet detector inference on images and videos", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="detectron2 yaml config (configs/*.yaml)")
    p.add_argument("--weights", default=None, help="checkpoint (.pth/.pkl); default: MODEL.WEIGHTS of the config")
    p.add_argument("--input", nargs="+", required=True, help="image files, folders, globs (quote them) and video files")
    p.add_argument("--output", required=True, help="folder for annotated images/videos and results.json")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="keep detections with at least this score")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset-json", help="COCO json giving the class names and category ids (and image ids)")
    src.add_argument("--dataset", help="registered detectron2 dataset to take class names and ids from")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="load weights that need full unpickling (runs code from the file: only for files you trust)")
    p.add_argument("--fast", action="store_true",
                   help="fold BN into the convolutions and use channels_last (same detections up to fp32 rounding)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace):
    """The plugin's load_config (NASNet keys, yaml, overrides, validation) + device and threshold."""
    import nasnet_det  # noqa: F401  (registers the backbone and ROI heads)
    from nasnet_det.detection import ConfigError, load_config as plugin_load_config

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
    try:
        cfg = plugin_load_config(args.config_file, list(args.opts), freeze=False)
    except ConfigError as err:
        raise InputError(str(err)) from err
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


def class_info_for(args: argparse.Namespace, cfg):
    from nasnet_det.detection.predictor import ClassInfo

    try:
        if args.dataset_json:
            info = ClassInfo.from_coco_json(args.dataset_json)
        elif args.dataset:
            info = ClassInfo.from_dataset(args.dataset)
        else:
            info = None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(str(err)) from err
    if info is None:
        print("demo.py: no --dataset-json/--dataset given; classes are shown as class_<k>", file=sys.stderr)
        info = ClassInfo.generic(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    if len(info.names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise InputError(
            f"the dataset has {len(info.names)} classes but the model MODEL.ROI_HEADS.NUM_CLASSES="
            f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
        )
    return info


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


def _draw(image_bgr, instances, metadata):
    from detectron2.utils.visualizer import ColorMode, Visualizer

    h, w = image_bgr.shape[:2]
    scale = min(3.0, max(1.0, 480.0 / max(h, w)))  # small images are drawn larger, labels stay legible
    vis = Visualizer(image_bgr[:, :, ::-1], metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    return vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]


def run(args: argparse.Namespace) -> dict:
    """Everything after argument parsing; returns a small summary (also used by run_demo.py)."""
    from nasnet_det.detection.data import ImageReadError, read_image_or_fail
    from nasnet_det.detection.predictor import NASNetPredictor, WeightsError, instances_to_coco_results

    inputs = expand_inputs(args.input)  # before building the model: bad input fails fast
    cfg = load_config(args)
    info = class_info_for(args, cfg)
    metadata = info.metadata()
    ids_in_json = known_image_ids(args.dataset_json)
    next_id = max(ids_in_json.values(), default=0) + 1
    try:
        predictor = NASNetPredictor(cfg, weights=args.weights, optimize=args.fast,
                                    allow_unsafe_pickle=args.allow_unsafe_pickle)
    except WeightsError as err:
        raise InputError(str(err)) from err
    if not predictor.cfg.MODEL.WEIGHTS:
        print("demo.py: no weights given (--weights / MODEL.WEIGHTS): the model is randomly initialised", file=sys.stderr)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    names = _Names(out)
    results: list[dict] = []
    images: list[dict] = []
    written: list[str] = []
    total = 0
    for item in inputs:
        if item.is_video:
            cap = cv2.VideoCapture(str(item.path))
            total += max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 1) if cap.isOpened() else 1
            cap.release()
        else:
            total += 1
    bar = tqdm(total=total, unit="img", desc="demo", disable=args.no_progress)

    def predict(image_bgr, file_name: str, frame: int | None = None):
        nonlocal next_id
        image_id = ids_in_json.get(file_name) if frame is None else None
        if image_id is None:
            image_id, next_id = next_id, next_id + 1
        instances = predictor(image_bgr, image_format="BGR")
        extra = {"file_name": file_name} if frame is None else {"file_name": file_name, "frame": frame}
        entry = {"id": image_id, "width": image_bgr.shape[1], "height": image_bgr.shape[0], **extra}
        images.append(entry)
        results.extend(instances_to_coco_results(instances, image_id, info, **extra))
        bar.update(1)
        return _draw(image_bgr, instances, metadata)

    try:
        for item in inputs:
            if not item.is_video:
                try:
                    image = read_image_or_fail(str(item.path), "BGR")
                except ImageReadError as err:
                    raise InputError(str(err)) from err
                drawn = predict(image, item.path.name)
                target = names(item.path.stem, ".png" if item.path.suffix.lower() == ".png" else ".jpg")
                cv2.imwrite(str(target), drawn)
                written.append(str(target))
                continue
            cap = cv2.VideoCapture(str(item.path))
            if not cap.isOpened():
                raise InputError(f"video file {str(item.path)!r} cannot be opened (corrupt or unsupported codec)")
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            writer, frame_idx = None, 0
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    drawn = predict(frame, item.path.name, frame_idx)
                    if writer is None:
                        target = names(f"{item.path.stem}_annotated", ".mp4")
                        size = (drawn.shape[1], drawn.shape[0])
                        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                        if not writer.isOpened():  # an OpenCV build without an mp4 encoder
                            target = target.with_suffix(".avi")
                            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
                        written.append(str(target))
                    writer.write(drawn)
                    frame_idx += 1
            finally:
                cap.release()
                if writer is not None:
                    writer.release()
            if frame_idx == 0:
                raise InputError(f"video file {str(item.path)!r} has no readable frames (corrupt or unsupported codec)")
    finally:
        bar.close()
    # only a run that finished replaces results.json / images.json, atomically: a failed rerun
    # into the same folder must not overwrite an earlier run's results
    atomic_write_text(out / "results.json", json.dumps(results))
    atomic_write_text(out / "images.json", json.dumps(
        {"images": images, "categories": [{"id": i, "name": n} for i, n in zip(info.dataset_ids, info.names)]}))
    return {
        "num_images": len(images),
        "num_detections": len(results),
        "results_json": str(out / "results.json"),
        "images_json": str(out / "images.json"),
        "written": written,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except (NASNetError, FileNotFoundError) as err:
        print(f"demo.py: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{summary['num_images']} images/frames, {summary['num_detections']} detections with score >= "
        f"{args.confidence_threshold}: pictures in {args.output}/, results in {summary['results_json']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

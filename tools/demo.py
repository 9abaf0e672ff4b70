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
can be scored against that json with pycocotools directly. The work is done by
``nasnet_det.detection.visualization.VisualizationDemo``; this file is its command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import torch  # noqa: E402

import nasnet_det.detection  # noqa: E402,F401  (registers the backbone and ROI heads)
from nasnet_det.config import parse_tool_args  # noqa: E402
from nasnet_det.detection.predictor import NASNetPredictor  # noqa: E402
from nasnet_det.detection.visualization import (  # noqa: E402
    InputError,
    VisualizationDemo,
    config_class_source,
    expand_inputs,
    known_image_ids,
    load_class_info,
    load_demo_config,
)
from nasnet_det.errors import NASNetError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="NASNet detector inference on images and videos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--config-file", metavar="FILE", help="detectron2 yaml config (configs/*.yaml)")
    p.add_argument("--exported", metavar="FILE", help="instead of a config and weights: a detector file written by "
                   "tools/export.py (.onnx or .pt; its config comes with it), run in --runtime")
    p.add_argument("--weights", default=None, help="checkpoint (.pth/.pkl); default: MODEL.WEIGHTS of the config")
    p.add_argument("--input", nargs="+", required=True, help="image files, folders, globs (quote them) and video files")
    p.add_argument("--output", required=True, help="folder for annotated images/videos and results.json")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="keep detections with at least this score")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available (exported files run on the CPU)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset-json", help="COCO json giving the class names and category ids (and image ids)")
    src.add_argument("--dataset", help="registered detectron2 dataset to take class names and ids from")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="load weights that need full unpickling (runs code from the file: only for files you trust)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run without weights (a randomly initialised model), e.g. to time the pipeline")
    p.add_argument("--fast", action="store_true",
                   help="fold BN into the convolutions and use channels_last (same detections up to fp32 rounding)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime", "openvino"), default=None,
                   help="run the model eagerly (torch, the default) or exported to ONNX in ONNX Runtime / OpenVINO "
                        "(CPU, needs INPUT.FIXED_SIZE_TEST and the deploy extra); with --exported: torch for .pt, "
                        "onnxruntime (default) or openvino for .onnx")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parse_tool_args(p, argv)


def run(args: argparse.Namespace) -> dict:
    """Everything after argument parsing; returns :meth:`VisualizationDemo.annotate`'s summary."""
    inputs = expand_inputs(args.input)  # before building the model: bad input fails fast
    if args.exported:
        predictor = _exported_predictor(args)
        info, image_ids = _class_names(args, predictor.cfg)
    else:
        predictor, info, image_ids = _configured_predictor(args)
    demo = VisualizationDemo(predictor, info, image_ids)
    return demo.annotate(inputs, args.output, progress=not args.no_progress)


def _configured_predictor(args: argparse.Namespace):
    """(predictor, class info, image ids) from --config-file, its overrides and the weights."""
    if not args.config_file:
        raise InputError("give --config-file (with --weights or MODEL.WEIGHTS), or --exported FILE")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_demo_config(args.config_file, args.opts, device, args.confidence_threshold)
    info, image_ids = _class_names(args, cfg)
    if not (args.weights or cfg.MODEL.WEIGHTS) and not args.allow_random_weights:
        raise InputError("no weights given (--weights or MODEL.WEIGHTS): the detections of a randomly initialised "
                         "model mean nothing; pass --allow-random-weights to run one on purpose")
    predictor = NASNetPredictor(cfg, weights=args.weights, optimize=args.fast,
                                allow_unsafe_pickle=args.allow_unsafe_pickle, runtime=args.runtime or "torch")
    return predictor, info, image_ids


def _exported_predictor(args: argparse.Namespace) -> NASNetPredictor:
    """--exported: the file brings its config and weights, so the flags that would set them are refused."""
    given = [flag for flag, value in (("--config-file", args.config_file), ("--weights", args.weights),
                                      ("--fast", args.fast), ("--device cuda", args.device == "cuda"),
                                      ("KEY VALUE overrides", args.opts)) if value]
    if given:
        raise InputError(f"--exported runs the file with the config and weights it was exported with; drop "
                         f"{', '.join(given)} (or export again with them)")
    return NASNetPredictor.from_exported(args.exported, args.runtime, min_score=args.confidence_threshold)


def _class_names(args: argparse.Namespace, cfg):
    """(ClassInfo, image ids): from --dataset-json / --dataset, else the config's first test set."""
    dataset_json, dataset = args.dataset_json, args.dataset
    from_config = not (dataset_json or dataset)
    if from_config:
        dataset_json, dataset = config_class_source(cfg)
        if not (dataset_json or dataset):
            print("demo.py: no --dataset-json/--dataset given and the config's DATASETS.TEST has no class names; "
                  "classes are shown as class_<k>", file=sys.stderr)
    info = load_class_info(cfg.MODEL.ROI_HEADS.NUM_CLASSES, dataset_json, dataset, from_config)
    return info, known_image_ids(dataset_json)  # the ids of the json the class names came from


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

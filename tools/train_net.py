#!/usr/bin/env python
"""Train or evaluate a NASNet Faster R-CNN with detectron2 (its tools/train_net.py convention).

    python tools/train_net.py --config-file configs/nasnet_a_mobile_frcnn.yaml
    python tools/train_net.py --config-file configs/nasnet_a_large_frcnn.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --resume                      # continue a run
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file ... \\
        --dataset-json my/train.json --image-root my/images \\
        --test-json my/val.json --test-image-root my/val_images   # any COCO-format dataset

Datasets: detectron2's registered COCO sets (``coco_2017_train``, ``coco_2017_val``,
``coco_2014_minival``, ...) under ``$DETECTRON2_DATASETS``, or COCO-format json files given with
``--dataset-json/--image-root`` (registered as ``nasnet_train``; also used for testing unless
``--test-json`` is given, registered as ``nasnet_test``). Evaluation is COCOEvaluator with the
official pycocotools numbers: AP, AP50, AP75, APs, APm, APl and per-category AP.
Multi-GPU / multi-machine runs go through detectron2's ``launch``.
"""
from __future__ import annotations

import logging
import sys

import nasnet_det.detection  # noqa: F401, I001  (first: registers the backbone, ROI heads and compat layer)

# isort: split
import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

from nasnet_det.config import config_yaml, parse_tool_args
from nasnet_det.detection import ConfigError, NASNetTrainer, build_checkpointer, compat
from nasnet_det.detection.checkpoint import preflight_weights
from nasnet_det.detection.run_config import resolve_run_config, setup_run_config, training_config_kept
from nasnet_det.errors import NASNetError


def build_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--dataset-json", help="COCO-format instances json to train on (and to test on, "
                        "unless --test-json is given)")
    parser.add_argument("--image-root", help="folder with the images of --dataset-json")
    parser.add_argument("--test-json", help="COCO-format instances json to evaluate on")
    parser.add_argument("--test-image-root", help="folder with the images of --test-json")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="load MODEL.WEIGHTS / checkpoints that need full unpickling (runs code from the "
                        "file: only for files you trust)")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="with --eval-only: evaluate even when there are no weights to load (a random model)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as yaml and exit")
    return parser


def _cli_datasets(args) -> dict:
    """--dataset-json/--image-root and --test-json/--test-image-root as run_config's train/test pairs."""
    if bool(args.dataset_json) != bool(args.image_root):
        raise ConfigError("--dataset-json and --image-root go together")
    if bool(args.test_json) != bool(args.test_image_root):
        raise ConfigError("--test-json and --test-image-root go together")
    return {"train": (args.dataset_json, args.image_root) if args.dataset_json else None,
            "test": (args.test_json, args.test_image_root) if args.test_json else None}


def setup(args):
    """The run's config (nasnet_det.detection.run_config), then detectron2's default_setup."""
    cfg = setup_run_config(args.config_file, list(args.opts), **_cli_datasets(args), eval_only=args.eval_only,
                           resume=args.resume, allow_random_weights=args.allow_random_weights)
    # before default_setup writes OUTPUT_DIR/config.yaml: a run that cannot load its weights changes nothing
    preflight_weights(cfg, resume=args.resume, purpose="inference" if args.eval_only else "init",
                      allow_unsafe_pickle=args.allow_unsafe_pickle)
    if args.eval_only:
        with training_config_kept(cfg.OUTPUT_DIR):  # an evaluation does not rewrite how the model was trained
            default_setup(cfg, args)
    else:
        default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    NASNetTrainer.allow_unsafe_pickle = args.allow_unsafe_pickle
    if args.eval_only:
        model = NASNetTrainer.build_model(cfg)
        checkpointer = build_checkpointer(model, cfg.OUTPUT_DIR, args.allow_unsafe_pickle, weights_purpose="inference",
                                          cfg=cfg)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = NASNetTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = NASNetTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv: list[str] | None = None) -> None:
    args = parse_tool_args(build_parser(), argv)
    try:
        if args.print_config:
            print(config_yaml(resolve_run_config(args.config_file, list(args.opts), **_cli_datasets(args))), end="")
            return
        compat.check_launch(args.num_gpus, args.num_machines, eval_only=args.eval_only)
        if args.num_gpus * args.num_machines <= 1:
            main(args)  # in-process: errors surface directly
        else:
            launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                   dist_url=args.dist_url, args=(args,))
    except NASNetError as err:
        logging.getLogger("nasnet_det").debug("configuration error", exc_info=True)
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    invoke_main()

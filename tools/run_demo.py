#!/usr/bin/env python
"""``make demo``: synthetic data -> train a small NASNet-A detector on the CPU -> mAP + pictures.

    python tools/run_demo.py --output output/demo

Generates the synthetic shapes dataset in <output>/data, trains configs/nasnet_demo_synthetic.yaml
on the CPU (checkpoints in <output>/train), evaluates the final model with COCOEvaluator on the
held-out images, annotates some of them in <output>/pictures, then prints AP / AP50 and writes
<output>/summary.json. Running it again with the same --output reuses the dataset, resumes an
interrupted training and skips a finished one. Trailing ``KEY VALUE`` pairs override the config.
The pipeline is ``nasnet_det.detection.demo_pipeline.run_demo``; this file is its command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import nasnet_det.detection  # noqa: E402,F401  (registers the backbone, ROI heads and compat layer)
from nasnet_det.detection.demo_pipeline import DemoSettings, run_demo  # noqa: E402
from nasnet_det.errors import NASNetError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> DemoSettings:
    d = DemoSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=d.output, help="folder for data, checkpoints, pictures")
    p.add_argument("--config-file", default=d.config_file)
    p.add_argument("--num-train", type=int, default=d.num_train, help="synthetic training images")
    p.add_argument("--num-val", type=int, default=d.num_val, help="held-out synthetic images for evaluation")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--seed", type=int, default=d.seed, help="dataset seed")
    p.add_argument("--num-pictures", type=int, default=d.num_pictures, help="held-out images to annotate")
    p.add_argument("--confidence-threshold", type=float, default=d.confidence_threshold, help="for the pictures")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch CPU threads; 0 = one per core that is idle now (see demo_pipeline.auto_threads)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return DemoSettings(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        run_demo(settings)
    except NASNetError as err:
        print(f"run_demo.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

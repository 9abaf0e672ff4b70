#!/usr/bin/env python
r"""Export a NASNet classifier or detector to TorchScript (.pt) and/or ONNX (.onnx).

    python tools/export.py classifier --config-file configs/pretrain/nasnet_a_mobile_imagenet.yaml \
        --weights weights/nasnet_a_mobile_tf.safetensors --out exported/nasnet_a_mobile
    python tools/export.py detector --config-file configs/nasnet_demo_synthetic.yaml \
        --weights output/demo/train/model_final.pth --format onnx --out exported/demo_detector

Classifiers: images (N, 3, S, S) at data.image_size in, logits out, N dynamic. Detectors: one
image (3, H, W) at INPUT.FIXED_SIZE_TEST in, boxes/scores/classes out. Every file records its
provenance (genotype, config, source weights): ONNX metadata_props, TorchScript extra file
nasnet_det_provenance.json. Needs the deploy extra for ONNX: pip install -e '.[deploy]'.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def _parser() -> argparse.ArgumentParser:
    from nasnet_det.config import add_config_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    for kind, what in (("classifier", "pretraining config"), ("detector", "detection config")):
        s = sub.add_parser(kind, help=f"export the {kind} of a {what}")
        s.add_argument("--weights", default=None, help="weights file; default: MODEL.WEIGHTS for detectors, "
                       "none for classifiers (refused unless --allow-random-weights)")
        s.add_argument("--allow-random-weights", action="store_true",
                       help="export a randomly initialised model on purpose (for speed tests; the provenance says so)")
        s.add_argument("--format", choices=("torchscript", "onnx", "both"), default="both")
        s.add_argument("--out", required=True, help="output path without suffix (.pt / .onnx are added)")
        s.add_argument("--allow-unsafe-pickle", action="store_true",
                       help="load weights that need full unpickling (only for files you trust)")
        add_config_arguments(s)
    return p


def main(argv: list[str] | None = None) -> int:
    from nasnet_det.config import parse_tool_args

    args = parse_tool_args(_parser(), argv)
    from nasnet_det.config import config_yaml
    from nasnet_det.deploy.from_config import export_classifier_from_config, export_detector_from_config
    from nasnet_det.errors import ConfigError, NASNetError

    formats = ("torchscript", "onnx") if args.format == "both" else (args.format,)
    try:
        if not args.config_file:
            raise ConfigError("--config-file is required")
        if args.kind == "classifier":
            from nasnet_det.pretrain import load_config

            cfg = load_config(args.config_file, args.opts, check_paths=False)
            run = export_classifier_from_config
        else:
            import nasnet_det.detection  # noqa: F401  (registers the backbone and ROI heads)
            from nasnet_det.detection.config import load_config

            cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
            run = export_detector_from_config
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        paths = run(cfg, args.weights, formats, args.out, args.allow_unsafe_pickle, args.allow_random_weights)
    except NASNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

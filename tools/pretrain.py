#!/usr/bin/env python
r"""Pretrain a NASNet classifier on an ImageFolder dataset with the paper's recipe.

    python tools/pretrain.py --config-file configs/pretrain/nasnet_a_mobile_imagenet.yaml \
        data.train_dir /data/imagenet/train data.val_dir /data/imagenet/val
    torchrun --nproc_per_node 8 tools/pretrain.py --config-file ... train.batch_size 32
    python tools/pretrain.py --config-file ... --print-config        # the resolved config, as yaml

Overrides are trailing ``KEY VALUE`` pairs (detectron2's convention; values are YAML). A killed
run resumes from the newest checkpoint in train.output_dir when started again with the same
command (train.resume auto). Every input is checked before the output folder is touched; a
mistake is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from nasnet_det.config import add_config_arguments, config_yaml, parse_tool_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ("--config-file", "--config"))
    args = parse_tool_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from nasnet_det.errors import NASNetError
    from nasnet_det.pretrain import load_config, run_pretraining

    try:
        cfg = load_config(args.config_file, args.opts, check_paths=not args.print_config)
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        results = run_pretraining(cfg)
    except NASNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if results:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""Pretrain a NASNet classifier on an ImageFolder dataset with the paper's recipe.

    python tools/pretrain.py --config configs/pretrain/nasnet_a_mobile_imagenet.yaml \
        data.train_dir=/data/imagenet/train data.val_dir=/data/imagenet/val
    torchrun --nproc_per_node 8 tools/pretrain.py --config ... train.batch_size=32

Overrides are ``section.key=value`` (YAML values). A killed run resumes from the newest checkpoint
in train.output_dir when started again with the same command (train.resume=auto). Every input is
checked before the output folder is touched; a mistake is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (configs/pretrain/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=0.1 train.epochs=3")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    from nasnet_det.errors import NASNetError
    from nasnet_det.pretrain import load_config, run_pretraining

    try:
        cfg = load_config(args.config, args.overrides, check_paths=not args.print_config)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
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

#!/usr/bin/env python
"""``make pipeline``: search a cell on CIFAR-10 -> pretrain it, NASNet-A and a random cell -> export to
detectron2 -> train and evaluate the demo detector with each -> one report (docs/pipeline.md).

    python tools/run_pipeline.py --output output/pipeline                       # configs/pipeline/cifar10_cpu.yaml
    python tools/run_pipeline.py --output output/pipeline --resume              # continue; finished stages are skipped
    python tools/run_pipeline.py --output out/tiny detect.max_iter 20 pretrain.max_steps 30   # KEY VALUE overrides
    python tools/run_pipeline.py --print-config                                 # the resolved config, as yaml

The stages run the project's tools (search.py, pretrain.py, convert_weights.py export-d2,
run_demo.py); their output is in <output>/logs/. A mistake is one ``error:`` line and exit status 2.
The pipeline is ``nasnet_det.pipeline.run_pipeline``; this file is its command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from nasnet_det.config import add_config_arguments, config_yaml, parse_tool_args  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline" / "cifar10_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--output", help="the run folder (required unless --print-config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output (starts it if the folder holds none)")
    args = parse_tool_args(parser, argv)

    from nasnet_det.errors import NASNetError
    from nasnet_det.pipeline import load_config, run_pipeline

    try:
        cfg = load_config(args.config_file or DEFAULT_CONFIG, args.opts)
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        if not args.output:
            parser.error("--output is required (the run folder)")
        run_pipeline(cfg, args.output, resume=args.resume)
    except NASNetError as err:
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished stages are recorded in {args.output}/stages.json; continue with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

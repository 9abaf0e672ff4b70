#!/usr/bin/env python
"""Generate the synthetic shapes detection dataset (COCO json) that ``make demo`` trains on.

    python tools/make_synthetic_dataset.py --output output/demo/data --num-train 400 --num-val 100

Writes ``<output>/{train,val}/*.jpg`` and ``<output>/annotations/{train,val}.json``. Re-running with
the same arguments reuses what is there; the same seed always gives the same pixels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from nasnet_det.data.synthetic import SHAPES, SyntheticSpec, make_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="dataset folder")
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    d = SyntheticSpec()
    p.add_argument("--image-size", type=int, default=d.image_size, help="square image side in pixels")
    p.add_argument("--min-objects", type=int, default=d.min_objects)
    p.add_argument("--max-objects", type=int, default=d.max_objects)
    p.add_argument("--min-radius", type=int, default=d.min_radius, help="smallest object radius, pixels")
    p.add_argument("--max-radius", type=int, default=d.max_radius, help="largest object radius, pixels")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = SyntheticSpec(
            image_size=args.image_size, min_objects=args.min_objects, max_objects=args.max_objects,
            min_radius=args.min_radius, max_radius=args.max_radius,
        )
    except ValueError as err:
        raise SystemExit(f"make_synthetic_dataset.py: error: {err}") from None
    ds = make_dataset(args.output, args.num_train, args.num_val, args.seed, spec)
    print(f"{'reused' if ds.reused else 'wrote'} {args.num_train} train + {args.num_val} val images under {ds.root}")
    print(f"  train: --dataset-json {ds.train_json} --image-root {ds.train_images}")
    print(f"  val:   --dataset-json {ds.val_json} --image-root {ds.val_images}")
    print("  classes: " + ", ".join(f"{s.name} (id {s.id})" for s in SHAPES))
    return 0


if __name__ == "__main__":
    sys.exit(main())

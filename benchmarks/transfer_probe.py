#!/usr/bin/env python
"""What a detector weights file hands the box classifier: pooled ROI-head features, fresh vs loaded.

    # after `make pipeline` (output/pipeline): the searched cell's exported weights on its detector's data
    python benchmarks/transfer_probe.py --config-file configs/nasnet_demo_synthetic.yaml \\
        --weights output/pipeline/export/searched.pkl \\
        --dataset-json output/pipeline/detect/searched/data/annotations/train.json \\
        --image-root output/pipeline/detect/searched/data/train \\
        MODEL.NASNET.GENOTYPE output/pipeline/genotypes/searched.json

A diagnostic, not a test (docs/pipeline.md, "Transfer"). The ground-truth boxes of the first
``--images`` images go through the backbone, the ROI pooler and the ROI-head cells (training-mode
BN, as fine-tuning runs them), then the spatial mean the box predictor reads. Printed for three
initialisations of the same detector: all fresh (the config's seed), the weights file loaded
(MODEL.NASNET.TRANSFER all) and the file's backbone with fresh ROI-head cells (TRANSFER backbone):
the mean |feature| of the backbone output and of the pooled ROI features, and the share of ROI
channels that are zero for every box. A pooled feature much smaller than the fresh one means a new
linear box classifier gets a gradient that much smaller and learns that much slower.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _batch(dataset_json: str, image_root: str, count: int, size: tuple[int, int]):
    """The first ``count`` annotated images (detectron2's COCO reader) resized to ``size`` (h, w),
    RGB, and their boxes scaled alike."""
    import cv2
    from detectron2.data.datasets import load_coco_json
    from detectron2.data.detection_utils import read_image
    from detectron2.structures import Boxes, BoxMode

    records = [r for r in load_coco_json(dataset_json, image_root) if r["annotations"]][:count]
    images, boxes = [], []
    for r in records:
        rgb = read_image(r["file_name"], format="RGB")
        sy, sx = size[0] / rgb.shape[0], size[1] / rgb.shape[1]
        images.append(torch.from_numpy(cv2.resize(rgb, (size[1], size[0]))).permute(2, 0, 1))
        xyxy = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in r["annotations"]])
        boxes.append(Boxes(xyxy * torch.tensor([sx, sy, sx, sy])))
    return torch.stack(images).float(), boxes


@torch.no_grad()
def probe(model, images: torch.Tensor, boxes) -> dict[str, float]:
    model.train()  # batch statistics, as fine-tuning runs the BNs
    x = (images - model.pixel_mean) / model.pixel_std
    features = model.backbone(x)
    heads = model.roi_heads
    pooled = heads.pooler([features[k] for k in heads.in_features], boxes)
    roi = heads.res5(pooled).mean(dim=(2, 3))
    backbone_out = features[heads.in_features[0]]
    return {"backbone_abs_mean": backbone_out.abs().mean().item(), "roi_abs_mean": roi.abs().mean().item(),
            "roi_dead_channels": (roi.abs().amax(0) == 0).float().mean().item(), "rois": roi.shape[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="the detector weights file (e.g. an export-d2 .pkl)")
    p.add_argument("--dataset-json", required=True, help="COCO-format json whose boxes are probed")
    p.add_argument("--image-root", required=True)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("opts", nargs="*", help="detectron2 KEY VALUE overrides")
    args = p.parse_args(argv)
    from nasnet_det.errors import NASNetError

    for flag, path in (("--dataset-json", args.dataset_json), ("--image-root", args.image_root)):
        if not Path(path).exists():
            print(f"error: {flag} {path!r} does not exist", file=sys.stderr)
            return 2
    try:
        rows = probe_initialisations(args.config_file, args.weights, args.dataset_json, args.image_root,
                                     args.images, args.opts)
    except NASNetError as err:  # a bad config key or weights file: one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'initialisation':28s} {'|backbone out|':>15s} {'|pooled ROI|':>13s} {'dead ROI ch.':>13s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['backbone_abs_mean']:15.3f} {r['roi_abs_mean']:13.3f} {r['roi_dead_channels']:13.1%}")
    print(f"({rows['fresh']['rois']} ground-truth boxes of {args.images} images)")
    return 0


def probe_initialisations(config_file: str, weights: str, dataset_json: str, image_root: str, count: int,
                          opts: list[str]) -> dict[str, dict[str, float]]:
    """:func:`probe` of the same detector fresh, with ``weights`` loaded (TRANSFER all) and with their
    backbone only (TRANSFER backbone), on the same images."""
    import nasnet_det.detection  # noqa: F401  (first: registers the plugin and the stand-in for detectron2._C)
    from nasnet_det.detection.checkpoint import NASNetCheckpointer
    from nasnet_det.detection.config import load_config

    # isort: split
    from detectron2.modeling import build_model

    rows, batch = {}, None
    for name, transfer in (("fresh", None), ("loaded, TRANSFER all", "all"), ("loaded, TRANSFER backbone", "backbone")):
        cfg = load_config(config_file, [*opts, "MODEL.DEVICE", "cpu", "MODEL.NASNET.TRANSFER", transfer or "all"])
        if batch is None:
            fixed = tuple(cfg.INPUT.FIXED_SIZE_TEST)
            batch = _batch(dataset_json, image_root, count, fixed if fixed[0] else (cfg.INPUT.MIN_SIZE_TEST,) * 2)
        torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
        model = build_model(cfg)
        if transfer:
            NASNetCheckpointer(model, cfg=cfg).load(weights)
        rows[name] = probe(model, *batch)
    return rows


if __name__ == "__main__":
    sys.exit(main())

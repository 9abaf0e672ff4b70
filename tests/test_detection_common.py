"""Shared helpers for the detection tests: tiny configs and the coco_mini subsets.

Kept in a test module of its own (no tests here) so test_detection*.py can import it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
COCO_MINI = Path(os.environ.get("NASNET_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco_mini"
COCO_MINI_TRAIN_JSON = COCO_MINI / "annotations" / "instances_train2017.json"
COCO_MINI_TRAIN_IMAGES = COCO_MINI / "train2017"

requires_coco_mini = pytest.mark.skipif(
    not COCO_MINI_TRAIN_JSON.is_file(),
    reason=f"real COCO subset not found at {COCO_MINI} (../shared/data/coco_mini beside the project)",
)

# coco_mini train images with one or two large objects of distinct real classes (sparse COCO ids):
# bear, sheep, fire hydrant, giraffe, stop sign, zebra. Used by the overfitting test.
OVERFIT_IMAGE_IDS = (249346, 187334, 194322, 163497, 525891, 281789)


def tiny_opts(size: int = 128, cells: int = 3, penultimate: int = 96, norm: str = "BN") -> list[str]:
    """KEY VALUE overrides that shrink a shipped config to seconds-per-iteration on a CPU.

    Keeps the architecture (genotype, split at the 2nd reduction cell, C4 heads); shrinks cells,
    filters, input size, anchors and proposal counts. BatchNorm with momentum 0.1 trains from
    scratch; FrozenBN (the shipped default) assumes pretrained weights.
    """
    return [
        "MODEL.DEVICE", "cpu",
        "MODEL.NASNET.NUM_CELLS", str(cells),
        "MODEL.NASNET.PENULTIMATE_FILTERS", str(penultimate),
        "MODEL.NASNET.NORM", norm,
        "MODEL.NASNET.BN_MOMENTUM", "0.1",
        "INPUT.FIXED_SIZE_TRAIN", f"({size}, {size})",
        "INPUT.FIXED_SIZE_TEST", f"({size}, {size})",
        "MODEL.ANCHOR_GENERATOR.SIZES", f"[[{size // 8}, {size // 4}, {size // 2}, {size}]]",
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "7",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "500",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "300",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.CHECKPOINT_PERIOD", "100000",
        "TEST.EVAL_PERIOD", "0",
    ]


def write_coco_subset(src_json: Path, image_ids, dst_json: Path) -> Path:
    """A COCO json with only ``image_ids`` and the categories they use (ids stay sparse)."""
    data = json.loads(src_json.read_text())
    ids = set(image_ids)
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    used = {a["category_id"] for a in anns}
    out = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "images": [i for i in data["images"] if i["id"] in ids],
        "annotations": anns,
        "categories": [c for c in data["categories"] if c["id"] in used],
    }
    dst_json.write_text(json.dumps(out))
    return dst_json


@pytest.fixture
def no_tensorboard(monkeypatch):
    """DefaultTrainer's TensorboardXWriter imports tensorboard (and TensorFlow when installed):
    seconds of start-up per trainer that these tests do not need. metrics.json is kept."""
    from detectron2.utils.events import EventWriter

    import nasnet_det.detection  # noqa: F401  (compat first: detectron2.engine needs the _C stand-in on v0.6)

    class _NoWriter(EventWriter):
        def __init__(self, *args, **kwargs):
            pass

        def write(self):
            pass

    monkeypatch.setattr("detectron2.engine.defaults.TensorboardXWriter", _NoWriter)

"""``NASNetTrainer``: detectron2's DefaultTrainer with the plugin's data, evaluation and hooks.

What differs from DefaultTrainer and why:

* data loaders use ``NASNetDatasetMapper`` (TF's fixed-size resize when configured; a clear error
  naming any unreadable image);
* ``build_evaluator`` returns COCOEvaluator with the official pycocotools numbers (AP, AP50, AP75,
  APs/m/l and per-category AP) - DefaultTrainer leaves it unimplemented;
* the checkpointer loads ``.pth`` files on torch >= 2.6 (compat.detection_checkpointer_class);
* ``DropPathScheduleHook`` advances ScheduledDropPath with the iteration.
"""
from __future__ import annotations

import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer

from . import compat
from .data import NASNetDatasetMapper
from .hooks import DropPathScheduleHook


def build_checkpointer(model, save_dir: str = "", **checkpointables):
    """The DetectionCheckpointer to use for NASNet detectors (see compat)."""
    return compat.detection_checkpointer_class()(model, save_dir, **checkpointables)


class NASNetTrainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=NASNetDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=NASNetDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return compat.coco_evaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain DetectionCheckpointer just before calling us; swap
        # it for ours so that both resume_or_load and the periodic checkpointer use it.
        old = self.checkpointer
        self.checkpointer = build_checkpointer(old.model, old.save_dir, **old.checkpointables)
        hooks = super().build_hooks()
        total = self.cfg.MODEL.NASNET.DROP_PATH_TOTAL_STEPS or self.cfg.SOLVER.MAX_ITER
        hooks.insert(0, DropPathScheduleHook(total))
        return hooks

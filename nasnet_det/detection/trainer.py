"""``NASNetTrainer``: detectron2's DefaultTrainer with the plugin's data, evaluation and hooks.

What differs from DefaultTrainer and why:

* data loaders use ``NASNetDatasetMapper`` (TF's fixed-size resize when configured; a clear error
  naming any unreadable image);
* ``build_evaluator`` returns COCOEvaluator with the official pycocotools numbers (AP, AP50, AP75,
  APs/m/l and per-category AP) - DefaultTrainer leaves it unimplemented;
* the checkpointer (checkpoint.NASNetCheckpointer) loads weights without running pickled code,
  refuses MODEL.WEIGHTS that do not fit the model, writes checkpoints atomically and resumes from
  the newest intact one; ``allow_unsafe_pickle`` is the one way out of the safe loading;
* a ``model_final.pth`` missing after training (a resume that found nothing left to do) is written;
* ``DropPathScheduleHook`` advances ScheduledDropPath with the iteration.
"""
from __future__ import annotations

import os

import detectron2.utils.comm as comm
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer

from . import compat
from .checkpoint import LoadPurpose, NASNetCheckpointer
from .data import NASNetDatasetMapper
from .hooks import DropPathScheduleHook


def build_checkpointer(model, save_dir: str = "", allow_unsafe_pickle: bool = False, *,
                       weights_purpose: LoadPurpose = "init", cfg=None, **checkpointables) -> NASNetCheckpointer:
    """The checkpointer for NASNet detectors (see checkpoint.py for what it checks)."""
    return NASNetCheckpointer(model, save_dir, allow_unsafe_pickle=allow_unsafe_pickle,
                              weights_purpose=weights_purpose, cfg=cfg, **checkpointables)


class NASNetTrainer(DefaultTrainer):
    #: set by tools/train_net.py --allow-unsafe-pickle before the trainer is built
    allow_unsafe_pickle: bool = False

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
        return compat.coco_evaluator(dataset_name, output_dir=output_folder, fast=cfg.TEST.FAST_COCOEVAL)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain DetectionCheckpointer just before calling us; swap
        # it for ours so that both resume_or_load and the periodic checkpointer use it.
        old = self.checkpointer
        self.checkpointer = build_checkpointer(old.model, old.save_dir, self.allow_unsafe_pickle, cfg=self.cfg,
                                               **old.checkpointables)
        hooks = super().build_hooks()
        total = self.cfg.MODEL.NASNET.DROP_PATH_TOTAL_STEPS or self.cfg.SOLVER.MAX_ITER
        hooks.insert(0, DropPathScheduleHook(total))
        return hooks

    def train(self):
        result = super().train()
        final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
        if comm.is_main_process() and self.iter >= self.max_iter and not os.path.isfile(final):
            # a resume from the last periodic checkpoint had no step left to run, so fvcore's
            # PeriodicCheckpointer never wrote the final file
            self.checkpointer.save("model_final", iteration=self.max_iter - 1)
        return result

"""The detectron2 plugin: config keys, the NASNet backbone and ROI heads, data and training helpers.

``compat`` is imported first: on detectron2 v0.6 without compiled ops it installs the stand-in
for ``detectron2._C`` that ``detectron2.layers`` needs at import. Importing this package
registers ``build_nasnet_backbone`` (BACKBONE_REGISTRY), ``NASNetRCNN`` (META_ARCH_REGISTRY) and
``NASNetROIHeads`` (ROI_HEADS_REGISTRY) with detectron2.
"""
from . import compat  # noqa: F401  (must stay first)
from .backbone import NASNetBackbone, build_nasnet_backbone
from .checkpoint_mapping import classifier_to_detector_state_dict
from .config import ConfigError, add_nasnet_config, load_config
from .data import ImageReadError, NASNetDatasetMapper, build_resize_augmentations
from .datasets import DatasetError, check_datasets, register_coco_json
from .hooks import DropPathScheduleHook, set_drop_path_progress
from .meta_arch import NASNetRCNN
from .predictor import ClassInfo, NASNetPredictor
from .roi_heads import NASNetROIHeads, NASNetSecondStage
from .run_config import setup_run_config
from .split_nasnet import NASNetConfigError
from .trainer import NASNetTrainer, build_checkpointer

__all__ = [
    "ClassInfo", "NASNetPredictor", "setup_run_config",
    "ConfigError", "DatasetError", "DropPathScheduleHook", "ImageReadError", "NASNetBackbone",
    "NASNetConfigError", "NASNetDatasetMapper", "NASNetRCNN", "NASNetROIHeads", "NASNetSecondStage",
    "NASNetTrainer", "add_nasnet_config", "build_checkpointer", "build_nasnet_backbone",
    "build_resize_augmentations", "check_datasets", "classifier_to_detector_state_dict",
    "load_config", "register_coco_json", "set_drop_path_progress",
]

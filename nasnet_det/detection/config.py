"""``add_nasnet_config(cfg)``: the MODEL.NASNET.*, INPUT.FIXED_SIZE_* and DATASETS.STRICT_ANNOTATIONS
keys of the plugin; ``load_config``: a validated config from a yaml file and KEY VALUE overrides.

Call it on ``detectron2.config.get_cfg()`` *before* ``merge_from_file``: yacs rejects keys it does
not know, which is what turns a typo in a yaml file into an error instead of a silent default.
The default network is the NASNet-A Mobile preset; configs/*.yaml name another preset or
override its fields. Loading, the value rule and the error lines are ``nasnet_det.config``'s,
shared with search and pretraining.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from detectron2.config import CfgNode as CN

from .. import config as cfgsys
from ..errors import ConfigError
from ..weights.export import TRANSFER_SCOPES

# norms the backbone and ROI head can be converted to (detectron2's get_norm names)
SUPPORTED_NORMS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "GN")

#: The types of the MODEL.NASNET overrides (their default None means "the preset's value").
TYPES = {"MODEL.NASNET.GENOTYPE": str, "MODEL.NASNET.NUM_CELLS": int, "MODEL.NASNET.PENULTIMATE_FILTERS": int,
         "MODEL.NASNET.FILTERS": int, "MODEL.NASNET.STEM_MULTIPLIER": float,
         "MODEL.NASNET.SKIP_REDUCTION_LAYER_INPUT": bool, "MODEL.NASNET.DROP_PATH_KEEP_PROB": float}


def add_nasnet_config(cfg: CN) -> CN:
    """Add the NASNet keys (with defaults) to ``cfg`` in place and return it."""
    _C = cfg
    _C.MODEL.NASNET = CN()
    # The network: a preset of nasnet_det.modeling (nasnet_det.list_models()), and below the keys
    # that override its fields (None = the preset's value), resolved by resolve_network
    # (split_nasnet.NETWORK_KEYS). A yaml states only what differs from the preset.
    _C.MODEL.NASNET.ARCH = "nasnet_a_mobile"
    # A registered genotype name (nasnet_det.list_genotypes()) or a path to a genotype JSON file.
    _C.MODEL.NASNET.GENOTYPE = None
    # Number of NORMAL cells ("N" of "N @ P" is NUM_CELLS / 3); two reduction cells are added.
    _C.MODEL.NASNET.NUM_CELLS = None
    # Penultimate filters ("P" of "N @ P"); filters per op = P // 24 for NASNet-A. Or FILTERS:
    # the filters per op of the first stage (num_conv_filters) directly; set at most one.
    _C.MODEL.NASNET.PENULTIMATE_FILTERS = None
    _C.MODEL.NASNET.FILTERS = None
    _C.MODEL.NASNET.STEM_MULTIPLIER = None
    # True for NASNet-A Large: the first normal cell after a reduction reads the reduction cell's h_{i-1}.
    _C.MODEL.NASNET.SKIP_REDUCTION_LAYER_INPUT = None
    # ScheduledDropPath: keep probability at the end of the schedule (1.0 = off) and the number of
    # training iterations the schedule spans (0 = SOLVER.MAX_ITER). Active only in training.
    _C.MODEL.NASNET.DROP_PATH_KEEP_PROB = None
    _C.MODEL.NASNET.DROP_PATH_TOTAL_STEPS = 0
    # Norm layers of backbone and ROI head: one of SUPPORTED_NORMS. FrozenBN fits a pretrained
    # classifier and small batches (TF's faster_rcnn_nas keeps BN frozen); BN/SyncBN train them.
    _C.MODEL.NASNET.NORM = "FrozenBN"
    # BatchNorm momentum (PyTorch convention = 1 - TF decay) and eps; < 0 keeps the network's
    # own values (TF: decay 0.9997 -> momentum 0.0003, eps 1e-3, far too slow to train from scratch).
    _C.MODEL.NASNET.BN_MOMENTUM = -1.0
    _C.MODEL.NASNET.BN_EPS = -1.0
    # Index into the network's cell list (stem cells included) where the backbone stops and the ROI
    # head starts. -1 = at the second reduction cell, the faster_rcnn_nas split (stride 16).
    _C.MODEL.NASNET.SPLIT_AT = -1
    # Name of the backbone's single output map (RPN.IN_FEATURES / ROI_HEADS.IN_FEATURES use it).
    _C.MODEL.NASNET.OUT_FEATURE = "nas4"
    # Activation checkpointing per cell (nasnet_det.modeling.memory) of the backbone (stem conv
    # included) and the ROI head: training keeps only the cell boundaries plus one cell's interior
    # alive instead of every cell's ~40 intermediate maps, for about one extra forward of compute.
    # Outputs, gradients and state_dict keys are unchanged; inert in eval. For batches that do not fit.
    _C.MODEL.NASNET.MEMORY_SAVING = False
    # What MODEL.WEIGHTS initialises when training starts from it (resume and inference always load
    # everything). "all": backbone and ROI-head cells, as TF's faster_rcnn_nas transfers an ImageNet
    # checkpoint. "backbone": the ROI-head cells keep their initialisation. Why: cells pretrained as a
    # classifier's last stage on small images can end with most channels below zero; after the final
    # ReLU the pooled ROI features are then ~15x smaller than fresh cells' and the new box predictor
    # barely learns (docs/pipeline.md, "Transfer").
    _C.MODEL.NASNET.TRANSFER = "all"
    # Inference on CPU pools the crops and runs the ROI-head cells on chunks of this many crops (0 = all
    # at once). The crops are independent, so outputs are identical; what changes is the working set: 500 crops
    # of 17x17x1056 (Mobile) are ~600 MB per intermediate map, far past the caches, and the
    # memory-bound ReLUs, concats and pads then run at DRAM speed. 32 crops per chunk made the Mobile
    # ROI head 1.7x faster on a 2-core CPU (docs/benchmarks.md). Training, GPUs and export run unchunked.
    _C.MODEL.NASNET.ROI_CHUNK_SIZE = 32

    # Fixed (height, width) resize that ignores the aspect ratio, as TF's fixed_shape_resizer does.
    # (0, 0) = off: detectron2's ResizeShortestEdge with INPUT.MIN_SIZE_* / MAX_SIZE_*.
    _C.INPUT.FIXED_SIZE_TRAIN = (0, 0)
    _C.INPUT.FIXED_SIZE_TEST = (0, 0)

    # False: annotations that cannot be trained on (no or malformed bbox, a box outside its image,
    # an unknown image_id, a duplicate id) are dropped at registration with one warning, as
    # detectron2 drops empty annotations. True: any such annotation stops the run with an error.
    _C.DATASETS.STRICT_ANNOTATIONS = False
    # COCO-format jsons the run registers itself: [[name, json_file, image_root], ...]. tools/train_net.py
    # records its --dataset-json / --test-json here, so that the OUTPUT_DIR/config.yaml it saves is
    # complete: loading that file registers the same datasets again (see run_config.py).
    _C.DATASETS.COCO_JSON = []
    # True: detectron2's C++ COCOeval (needs compiled ops; same numbers, faster on big test sets).
    _C.TEST.FAST_COCOEVAL = False
    return cfg


def _validate(cfg: CN, source_of: Callable[[str], str]) -> None:
    """Checks that would otherwise fail late (at model build or the first batch) or silently."""
    from ..space import resolve_genotype_setting
    from .split_nasnet import network_config

    if cfg.MODEL.NASNET.GENOTYPE is not None:
        resolve_genotype_setting("MODEL.NASNET.GENOTYPE", cfg.MODEL.NASNET.GENOTYPE, error=ConfigError)
    try:
        network_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{err} ({source_of('MODEL.NASNET')})") from err
    if cfg.MODEL.NASNET.NORM not in SUPPORTED_NORMS:
        raise ConfigError(f"MODEL.NASNET.NORM={cfg.MODEL.NASNET.NORM!r}: use one of {SUPPORTED_NORMS}")
    _check_test_resize(cfg, source_of)
    for key, ok, requirement in _RANGE_CHECKS:
        value = cfgsys.lookup(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} = {value!r} ({source_of(key)}): {requirement}")


def exported_input_size(cfg: CN, what: str, otherwise: str = "") -> tuple[int, int]:
    """The (height, width) an exported detector of ``cfg`` takes: ``INPUT.FIXED_SIZE_TEST``.

    A trace has one input size, so a config that resizes the shortest edge instead (the own-data
    config does) is refused with the two overrides that give it one, and what they change: images
    are then stretched to a square the model was not trained on. ``otherwise`` names an alternative.
    """
    hw = tuple(int(v) for v in cfg.INPUT.FIXED_SIZE_TEST)
    if hw != (0, 0):
        return hw
    side = int(cfg.INPUT.MIN_SIZE_TEST) or 600
    raise ConfigError(f"{what}: an exported detector takes one input size, and this config has none: "
                      f"INPUT.FIXED_SIZE_TEST is (0, 0) and INPUT.MIN_SIZE_TEST = {cfg.INPUT.MIN_SIZE_TEST} resizes "
                      f"the shortest edge instead; add INPUT.FIXED_SIZE_TEST '({side}, {side})' INPUT.MIN_SIZE_TEST 0 "
                      f"(images are then stretched to {side}x{side}, which the model did not see in training: "
                      f"check the AP with train_net.py --eval-only and the same overrides){otherwise}")


def _check_test_resize(cfg: CN, source_of: Callable[[str], str]) -> None:
    """INPUT.FIXED_SIZE_TEST is applied by the NASNetRCNN model (detection/meta_arch.py); a
    shortest-edge resize before it would make DefaultPredictor's boxes differ from evaluation's."""
    size = cfg.INPUT.FIXED_SIZE_TEST
    if not _is_fixed_size(size) or size[0] == 0:
        return
    if cfg.MODEL.META_ARCHITECTURE != "NASNetRCNN":
        raise ConfigError(f"MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r} "
                          f"({source_of('MODEL.META_ARCHITECTURE')}): INPUT.FIXED_SIZE_TEST needs \"NASNetRCNN\", "
                          "the model that applies the fixed test size (or set INPUT.FIXED_SIZE_TEST (0, 0))")
    if cfg.INPUT.MIN_SIZE_TEST != 0:
        raise ConfigError(f"INPUT.MIN_SIZE_TEST = {cfg.INPUT.MIN_SIZE_TEST!r} ({source_of('INPUT.MIN_SIZE_TEST')}): "
                          f"must be 0 when INPUT.FIXED_SIZE_TEST = {tuple(size)} is set (the model applies the "
                          "fixed size; a shortest-edge resize first would change the boxes)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fixed_size(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value)
            and (value[0] > 0) == (value[1] > 0))


# (key, test, what the value must be): values that yacs' type check lets through but that fail
# later (a negative iteration count trains nothing and exits 0) or deep inside detectron2.
_RANGE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("MODEL.NASNET.TRANSFER", lambda v: v in TRANSFER_SCOPES,
     f"must be one of {TRANSFER_SCOPES}: what MODEL.WEIGHTS initialises (backbone and ROI-head cells, "
     "or the backbone)"),
    ("MODEL.NASNET.ROI_CHUNK_SIZE", lambda v: _is_int(v) and v >= 0,
     "must be an integer >= 0: crops per chunk of the ROI head at CPU inference (0 = all at once)"),
    ("SOLVER.MAX_ITER", lambda v: _is_int(v) and v > 0, "must be a positive integer (training iterations)"),
    ("SOLVER.BASE_LR", lambda v: isinstance(v, float) and v >= 0, "must be a number >= 0, such as 0.02"),
    ("SOLVER.IMS_PER_BATCH", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1 (images per batch)"),
    ("INPUT.FIXED_SIZE_TRAIN", _is_fixed_size, "must be (height, width) in pixels, or (0, 0) for no fixed size"),
    ("INPUT.FIXED_SIZE_TEST", _is_fixed_size, "must be (height, width) in pixels, or (0, 0) for no fixed size"),
)


def _merge_file(cfg: CN, config_file: str) -> None:
    """The yaml file (with its _BASE_ files) through the shared loader; a file of an older detectron2
    config VERSION goes through detectron2's own ``merge_from_file``, which upgrades it."""
    data = cfgsys.read_yaml(cfg, config_file)
    if data.get("VERSION", cfg.VERSION) != cfg.VERSION:
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except (KeyError, ValueError, AssertionError) as err:
            raise ConfigError(f"config file {config_file!r} (VERSION {data['VERSION']}): {err}") from err
        return
    cfgsys.merge_dict(cfg, data, f"config file {config_file!r}", TYPES)


def load_config(config_file: str | None = None, opts: Sequence[Any] | None = None, freeze: bool = True) -> CN:
    """detectron2 config + NASNet keys + ``config_file`` + ``KEY VALUE`` ``opts``, validated.

    Every mistake raises one ConfigError naming where it came from (the file or the command
    line), the key and the value: an unknown key (with the closest existing one), a value of the
    wrong type, a value out of range (SOLVER.MAX_ITER <= 0, SOLVER.BASE_LR < 0,
    SOLVER.IMS_PER_BATCH < 1, a malformed INPUT.FIXED_SIZE_*), an odd number of override items.
    MODEL.DEVICE falls back to "cpu" (with a log line) when CUDA is asked for but absent, because
    detectron2's default is "cuda" and every shipped config should run on a laptop.
    """
    import torch
    from detectron2.config import get_cfg

    cfg = add_nasnet_config(get_cfg())
    if config_file:
        _merge_file(cfg, config_file)
    overridden = cfgsys.merge_overrides(cfg, list(opts or []), TYPES)
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("nasnet_det").warning("CUDA is not available: setting MODEL.DEVICE=cpu")
        cfg.MODEL.DEVICE = "cpu"

    def source_of(key: str) -> str:
        if key in overridden or any(k.startswith(key + ".") for k in overridden):
            return "command-line override"
        return f"config file {config_file!r}" if config_file else "the default"

    _validate(cfg, source_of)
    if freeze:
        cfg.freeze()
    return cfg

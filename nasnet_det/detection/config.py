"""``add_nasnet_config(cfg)``: the MODEL.NASNET.* and INPUT.FIXED_SIZE_* keys of the plugin.

Call it on ``detectron2.config.get_cfg()`` *before* ``merge_from_file``: yacs rejects keys it does
not know, which is what turns a typo in a yaml file into an error instead of a silent default.
The defaults describe NASNet-A Mobile; configs/*.yaml override them per model.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from ..errors import ConfigError

# norms the backbone and ROI head can be converted to (detectron2's get_norm names)
SUPPORTED_NORMS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "GN")


def add_nasnet_config(cfg: CN) -> CN:
    """Add the NASNet keys (with defaults) to ``cfg`` in place and return it."""
    _C = cfg
    _C.MODEL.NASNET = CN()
    # A registered genotype name (nasnet_det.list_genotypes()) or a path to a genotype JSON file.
    _C.MODEL.NASNET.GENOTYPE = "nasnet_a"
    # Number of NORMAL cells ("N" of "N @ P" is NUM_CELLS / 3); two reduction cells are added.
    _C.MODEL.NASNET.NUM_CELLS = 12
    # Penultimate filters ("P" of "N @ P"); filters per op = P // 24 for NASNet-A. 0 = use FILTERS.
    _C.MODEL.NASNET.PENULTIMATE_FILTERS = 1056
    # Filters per op of the first stage (num_conv_filters); only read when PENULTIMATE_FILTERS is 0.
    _C.MODEL.NASNET.FILTERS = 0
    _C.MODEL.NASNET.STEM_MULTIPLIER = 1.0
    # 1 for NASNet-A Large: the first normal cell after a reduction reads the reduction cell's h_{i-1}.
    _C.MODEL.NASNET.SKIP_REDUCTION_LAYER_INPUT = 0
    # ScheduledDropPath: keep probability at the end of the schedule (1.0 = off) and the number of
    # training iterations the schedule spans (0 = SOLVER.MAX_ITER). Active only in training.
    _C.MODEL.NASNET.DROP_PATH_KEEP_PROB = 1.0
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

    # Fixed (height, width) resize that ignores the aspect ratio, as TF's fixed_shape_resizer does.
    # (0, 0) = off: detectron2's ResizeShortestEdge with INPUT.MIN_SIZE_* / MAX_SIZE_*.
    _C.INPUT.FIXED_SIZE_TRAIN = (0, 0)
    _C.INPUT.FIXED_SIZE_TEST = (0, 0)
    return cfg


def _validate(cfg: CN) -> None:
    """Checks that would otherwise fail late (at model build) or silently."""
    from ..space import GenotypeError, resolve_genotype

    spec = cfg.MODEL.NASNET.GENOTYPE
    try:
        resolve_genotype(spec)
    except GenotypeError as err:
        raise ConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: {err}") from err
    except OSError as err:
        raise ConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: cannot read the genotype file: {err}") from err
    if cfg.MODEL.NASNET.NORM not in SUPPORTED_NORMS:
        raise ConfigError(f"MODEL.NASNET.NORM={cfg.MODEL.NASNET.NORM!r}: use one of {SUPPORTED_NORMS}")


def load_config(config_file: str | None = None, opts: list[str] | None = None, freeze: bool = True) -> CN:
    """detectron2 config + NASNet keys + ``config_file`` + ``KEY VALUE`` ``opts``, validated.

    A key that does not exist raises ConfigError naming the key and where it came from.
    MODEL.DEVICE falls back to "cpu" (with a log line) when CUDA is asked for but absent, because
    detectron2's default is "cuda" and every shipped config should run on a laptop.
    """
    import logging
    import os

    import torch
    from detectron2.config import get_cfg

    cfg = add_nasnet_config(get_cfg())
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as err:
            raise ConfigError(f"config file {config_file!r}: {err.args[0] if err.args else err}") from err
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except KeyError as err:
            raise ConfigError(f"command-line override: {err.args[0] if err.args else err}") from err
        except AssertionError as err:  # yacs: odd number of KEY VALUE items
            raise ConfigError(f"command-line overrides must be KEY VALUE pairs: {err}") from err
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("nasnet_det").warning("CUDA is not available: setting MODEL.DEVICE=cpu")
        cfg.MODEL.DEVICE = "cpu"
    _validate(cfg)
    if freeze:
        cfg.freeze()
    return cfg

"""The pipeline's configuration: one fvcore ``CfgNode`` tree with ``KEY VALUE`` overrides.

Why one tree over four tools: the pipeline runs ``tools/search.py``, ``tools/pretrain.py``,
``tools/convert_weights.py`` and ``tools/run_demo.py``, each with its own config file. This tree
names those files (``search.config``, ``pretrain.config``, ``detect.config``) and holds only what
must be the same across stages (the backbone skeleton that pretraining and detection share, the
data, the budgets), so the one command line of ``tools/run_pipeline.py`` sets all of it. Extra
``KEY VALUE`` pairs for one tool go in that stage's ``opts`` list.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import config as cfgsys
from ..config import Config
from ..errors import ConfigError
from ..weights.export import TRANSFER_SCOPES

REPO = Path(__file__).resolve().parents[2]


class PipelineConfig(Config):
    """``cfg.search.config``, ``cfg.pretrain.epochs`` ...; ``to_dict()`` is what ``config.yaml`` holds."""


def _defaults() -> PipelineConfig:
    c = PipelineConfig(new_allowed=False)
    # CIFAR-10: an ImageFolder (root/train/<class>/*, root/test/<class>/*), else torchvision's
    # download (torchvision_root/cifar-10-batches-py), of which the first *_per_class images of each
    # class are written as an ImageFolder into the run folder.
    c.data = PipelineConfig({"root": "../shared/data/cifar10", "torchvision_root": "data",
                             "train_per_class": 1000, "test_per_class": 200})
    # Stage 1: tools/search.py with this config file (data.root is set to the CIFAR-10 above).
    c.search = PipelineConfig({"config": "configs/search/cifar10_weight_sharing.yaml", "opts": []})
    # The ImageNet-style skeleton every backbone shares, in pretraining and in the detector.
    c.backbone = PipelineConfig({
        "arch": "nasnet_a_mobile",   # skeleton preset (stem cells, reductions); the cells vary
        "num_cells": 3,              # N of "N @ P": 1 normal cell per stage
        "penultimate_filters": 384,  # P of "N @ P"
        "random_seed": 0,            # the random cell: uniform decisions of the search space, this seed
    })
    # Stage 2: tools/pretrain.py, the same recipe and budget for each backbone.
    c.pretrain = PipelineConfig({"config": "configs/pretrain/cifar10_backbone.yaml", "epochs": 4.0,
                                 "max_steps": 0, "opts": []})
    # Stage 4: tools/run_demo.py (train + COCOEvaluator on held-out synthetic images), same iterations.
    # transfer: the pretrained detectors' MODEL.NASNET.TRANSFER ("all" or "backbone"; docs/pipeline.md).
    c.detect = PipelineConfig({"config": "configs/nasnet_demo_synthetic.yaml", "max_iter": 200,
                               "num_train": 400, "num_val": 100, "transfer": "backbone", "opts": []})
    c.threads = 2  # torch threads of pretraining and detection (the search has its own executor.workers)
    return c


DEFAULTS = _defaults()

_POSITIVE = ("data.train_per_class", "data.test_per_class", "backbone.num_cells", "backbone.penultimate_filters",
             "detect.max_iter", "detect.num_train", "detect.num_val", "threads")
_FILES = ("search.config", "pretrain.config", "detect.config")


def resolve(path: str) -> Path:
    """A path of the config: absolute, or relative to the working folder, else to the repository."""
    p = Path(path).expanduser()
    return p.resolve() if p.is_absolute() or p.exists() else REPO / p


def validate(cfg: PipelineConfig, where: str) -> PipelineConfig:
    """Ranges, the three tool config files, and the ``opts`` lists (KEY VALUE pairs of strings)."""
    for key in _POSITIVE:
        if cfgsys.lookup(cfg, key) < 1:
            raise ConfigError(f"{where}: {key}: must be >= 1, got {cfgsys.lookup(cfg, key)}")
    if cfg.backbone.random_seed < 0:
        raise ConfigError(f"{where}: backbone.random_seed: must be >= 0, got {cfg.backbone.random_seed}")
    if cfg.pretrain.epochs <= 0 and cfg.pretrain.max_steps <= 0:
        raise ConfigError(f"{where}: pretrain.epochs / pretrain.max_steps: one of them must be > 0")
    if cfg.pretrain.max_steps < 0:
        raise ConfigError(f"{where}: pretrain.max_steps: must be >= 0, got {cfg.pretrain.max_steps}")
    if cfg.detect.transfer not in TRANSFER_SCOPES:
        raise ConfigError(f"{where}: detect.transfer: must be one of {TRANSFER_SCOPES}, got {cfg.detect.transfer!r}")
    for key in _FILES:
        if not resolve(cfgsys.lookup(cfg, key)).is_file():
            raise ConfigError(f"{where}: {key}: file {cfgsys.lookup(cfg, key)!r} does not exist")
    for stage in ("search", "pretrain", "detect"):
        opts = cfg[stage].opts
        if len(opts) % 2 or not all(isinstance(k, str) for k in opts[0::2]):
            raise ConfigError(f"{where}: {stage}.opts: expected KEY VALUE pairs for that stage's tool "
                              f"(e.g. [child.epochs, 1]), got {list(opts)!r}")
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults, then the yaml file, then ``KEY VALUE`` pairs, then :func:`validate`."""
    cfg, overridden = cfgsys.load(DEFAULTS, path, overrides)
    where = f"config file {str(path)!r}" if path is not None else "config"
    return validate(cfg, where + (" + command-line overrides" if overridden else ""))

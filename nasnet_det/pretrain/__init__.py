"""Classifier pretraining with the NASNet paper's ImageNet recipe (docs/pretrain.md).

``load_config`` reads a YAML config with ``section.key=value`` overrides; ``run_pretraining`` trains
on one process or, under torchrun, on many with DistributedDataParallel.
"""
from .config import ConfigError, PretrainConfig, load_config
from .optim import LRSchedule, ModelEMA, TFRMSprop

__all__ = ["ConfigError", "LRSchedule", "ModelEMA", "PretrainConfig", "TFRMSprop", "load_config", "run_pretraining"]


def run_pretraining(cfg: PretrainConfig) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the last evaluation's metrics."""
    from .trainer import run_pretraining as _run

    return _run(cfg)

"""Build the model a config describes, load its weights and export it: what ``tools/export.py`` runs.

Classifiers come from a pretraining config (``model.arch`` + ``model.overrides``, exported at
``data.image_size``), detectors from a detection config (exported at ``INPUT.FIXED_SIZE_TEST``,
because a traced detector has one input size).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..config import config_yaml
from ..errors import ConfigError
from .classifier import export_classifier
from .provenance import build_provenance
from .writers import check_format


def _random_weights_refused(kind: str, where: str) -> ConfigError:
    return ConfigError(f"no weights given ({where}): an exported randomly initialised {kind} computes nothing "
                      f"useful; pass --allow-random-weights (allow_random_weights=True) to export one on purpose")


def export_classifier_from_config(cfg, weights: str | None, formats: Sequence[str], out: str | os.PathLike,
                                  allow_unsafe_pickle: bool = False, allow_random_weights: bool = False) -> list[Path]:
    """Export the classifier of pretraining config ``cfg`` with ``weights`` to ``out``.*.

    The class count is ``model.num_classes``, else the weights file's, else 1000. Without weights
    it is refused unless ``allow_random_weights`` (a speed test); the provenance then says so.
    """
    from ..modeling.network import NASNet
    from ..pretrain.config import network_config
    from ..weights.io import load_state_dict, load_weights_into

    formats = [check_format(f) for f in formats]
    if not weights and not allow_random_weights:
        raise _random_weights_refused("classifier", "--weights")
    num_classes = cfg.model.num_classes
    if num_classes is None and weights:
        num_classes = int(load_state_dict(weights, allow_unsafe_pickle)[1].get("num_classes", 1000))
    model = NASNet(network_config(cfg, num_classes=num_classes or 1000))
    if weights:
        load_weights_into(model, weights, allow_unsafe_pickle)
    size = int(cfg.data.image_size)
    prov = build_provenance(model, "classifier", config_yaml(cfg), weights, {"images": ["batch", 3, size, size]})
    return [export_classifier(model, fmt, out, size, prov) for fmt in formats]


def export_detector_from_config(cfg, weights: str | None, formats: Sequence[str], out: str | os.PathLike,
                                allow_unsafe_pickle: bool = False, allow_random_weights: bool = False) -> list[Path]:
    """Export the detector of detection config ``cfg`` (weights loaded as the demo loads them: ``weights``,
    else ``MODEL.WEIGHTS``; with neither, refused unless ``allow_random_weights``)."""
    from ..detection.config import exported_input_size
    from ..detection.predictor import NASNetPredictor
    from .detector import export_detector  # imports detectron2: only for detectors

    formats = [check_format(f) for f in formats]
    hw = exported_input_size(cfg, "export")
    if not (weights or cfg.MODEL.WEIGHTS) and not allow_random_weights:
        raise _random_weights_refused("detector", "--weights or MODEL.WEIGHTS")
    model = NASNetPredictor(cfg, weights=weights, allow_unsafe_pickle=allow_unsafe_pickle).model.cpu()
    prov = build_provenance(model, "detector", cfg.dump(), weights or cfg.MODEL.WEIGHTS or None,
                            {"image": [3, *hw], "format": cfg.INPUT.FORMAT,
                             "outputs": "boxes (x0 y0 x1 y1, exported image pixels), scores, classes"})
    return [export_detector(model, fmt, out, hw, prov) for fmt in formats]

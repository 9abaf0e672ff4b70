"""Map a NASNet *classifier* state dict onto the detector's parameter names.

Used by the export-to-detectron2 tool (classifier checkpoint -> detectron2 weights file).

Rule (the detector keeps the classifier's cell indices, see split_nasnet.py):

=================================  ===========================================
classifier key                     detector key
=================================  ===========================================
``conv0.<rest>`` (stem conv)       ``backbone.nasnet.conv0.<rest>``
``cells.<i>.<rest>``, i < split    ``backbone.nasnet.cells.<i>.<rest>``
``cells.<i>.<rest>``, i >= split   ``roi_heads.res5.nasnet.cells.<i>.<rest>``
``classifier.*``, ``aux_head.*``   dropped (the detector has its own box predictor)
``*.num_batches_tracked``          dropped (a step counter FrozenBN never reads)
``*.running_mean/var`` with GN     dropped (GroupNorm keeps no statistics)
=================================  ===========================================

``split`` is MODEL.NASNET.SPLIT_AT, or the index of the second reduction cell when it is -1.
A leading ``module.`` (DistributedDataParallel) or ``model.`` wrapper prefix is removed first.
Every backbone and ROI-head cell parameter of the detector gets a value; only the RPN and the
box predictor stay at their initialisation.

Write the result as a detectron2 weights file that both v0.6 and main read the same way::

    mapped, dropped = classifier_to_detector_state_dict(state, cfg)
    with open("nasnet_a_large_d2.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in mapped.items()},
                     "__author__": "nasnet_det", "matching_heuristics": False}, f)

and train with ``MODEL.WEIGHTS nasnet_a_large_d2.pkl``.
"""
from __future__ import annotations

import torch

BACKBONE_PREFIX = "backbone.nasnet."
ROI_HEAD_PREFIX = "roi_heads.res5.nasnet."
_WRAPPER_PREFIXES = ("module.", "model.")


def detector_split_index(cfg) -> int:
    """The split cell index of ``cfg``'s detector, found on a parameter-free (meta) network."""
    from .split_nasnet import build_full_nasnet, split_index

    with torch.device("meta"):
        net = build_full_nasnet(cfg)
    return split_index(cfg, net)


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def classifier_to_detector_state_dict(classifier_state: dict, cfg) -> tuple[dict, list[str]]:
    """Return ``(mapped, dropped)``: detector-named tensors and the classifier keys left out.

    ``classifier_state`` is the ``state_dict()`` of a ``nasnet_det`` NASNet with the genotype,
    cell count and filters of ``cfg`` (MODEL.NASNET.*), possibly wrapped (``module.``/``model.``).
    Shapes are not checked here; detectron2's checkpointer reports any mismatch on load.
    """
    split = detector_split_index(cfg)
    gn = cfg.MODEL.NASNET.NORM == "GN"
    mapped: dict = {}
    dropped: list[str] = []
    for key, value in classifier_state.items():
        name = _strip_wrappers(key)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked" or (gn and leaf in ("running_mean", "running_var")):
            dropped.append(key)
        elif name.startswith("conv0."):
            mapped[BACKBONE_PREFIX + name] = value
        elif name.startswith("cells."):
            index = name.split(".", 2)[1]
            if not index.isdigit():
                dropped.append(key)
                continue
            prefix = BACKBONE_PREFIX if int(index) < split else ROI_HEAD_PREFIX
            mapped[prefix + name] = value
        else:
            dropped.append(key)
    return mapped, dropped

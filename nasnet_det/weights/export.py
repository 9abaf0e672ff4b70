"""Classifier weights -> a detectron2 ``MODEL.WEIGHTS`` file for the NASNet Faster R-CNN.

The key mapping itself belongs to the detection package
(``nasnet_det.detection.checkpoint_mapping.classifier_to_detector_state_dict``); this module adds
what an export needs around it: reading any weights file safely, building the detector of the
config to CHECK the result (every backbone and ROI-head cell tensor present with the right shape;
only the RPN and box predictor may stay at their initialisation), and writing the file in the
format both detectron2 v0.6 and main read: a pickle ``{"model": {name: numpy array},
"__author__": ..., "matching_heuristics": False}`` (no heuristic renaming on load).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..durable import atomic_write
from .io import WeightsError

#: The parts of a detector a classifier checkpoint cannot provide: the RPN and the box predictor
#: (detectron2 initialises them when training starts from such a file).
DETECTOR_HEAD_PREFIXES = ("proposal_generator.", "roi_heads.box_predictor.")
#: Buffers no weights file needs to carry: detectron2 fills them from MODEL.PIXEL_MEAN / PIXEL_STD.
PIXEL_STAT_KEYS = ("pixel_mean", "pixel_std")
#: Everything of a detector that a classifier checkpoint does not give.
DETECTOR_ONLY_PREFIXES = DETECTOR_HEAD_PREFIXES + PIXEL_STAT_KEYS
#: What such a file initialises when a detector starts training from it (MODEL.NASNET.TRANSFER):
#: backbone and ROI-head cells, or the backbone alone (nasnet_det.detection.checkpoint).
TRANSFER_SCOPES = ("all", "backbone")


@dataclass
class ExportReport:
    written: Path
    mapped: int
    dropped: list[str] = field(default_factory=list)
    detector_only: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for k in self.dropped:
            head = k.split(".")[0] if not k.endswith("num_batches_tracked") else "num_batches_tracked"
            kinds[head] = kinds.get(head, 0) + 1
        lines = [f"wrote {self.written}", f"mapped {self.mapped} tensors into the detector",
                 "dropped: " + ", ".join(f"{k} ({n})" for k, n in sorted(kinds.items())),
                 f"left at detectron2's initialisation: {len(self.detector_only)} tensors (RPN, box predictor)"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _place_dropped_backbone_keys(classifier_state: dict, mapped: dict, dropped: list[str],
                                 detector_keys: set[str], notes: list[str]) -> list[str]:
    """Place classifier keys the mapping dropped but the detector backbone has under the same name.

    Why: the stem convolution is ``conv0`` in our NASNet; a mapping that only knows ``stem.*`` and
    ``cells.*`` would drop it and leave the detector's stem at random init, which detectron2 merely
    logs. Returns the keys that stay dropped.
    """
    still = []
    for key in dropped:
        if key.endswith("num_batches_tracked"):  # dropped on purpose (FrozenBN never reads it)
            still.append(key)
            continue
        name = key[len("module."):] if key.startswith("module.") else key
        target = "backbone.nasnet." + name
        if target in detector_keys and target not in mapped:
            mapped[target] = classifier_state[key]
            notes.append(f"{key} -> {target} (placed by the exporter; the detection mapping dropped it)")
        else:
            still.append(key)
    return still


def export_to_detectron2(classifier_state: dict, cfg, out_path: str | os.PathLike,
                         check: bool = True) -> ExportReport:
    """Map ``classifier_state`` (our NASNet's state dict) onto ``cfg``'s detector and write ``out_path``.

    ``check`` builds the detector to verify names and shapes (seconds for Large; skip in a hurry).
    """
    from nasnet_det.detection.checkpoint_mapping import classifier_to_detector_state_dict

    mapped, dropped = classifier_to_detector_state_dict(dict(classifier_state), cfg)
    mapped = dict(mapped)
    notes: list[str] = []
    detector_only: list[str] = []
    if check:
        from detectron2.modeling import build_model

        meta_cfg = cfg.clone()
        meta_cfg.defrost()
        meta_cfg.MODEL.DEVICE = "meta"  # names and shapes only: no memory, no init time
        with torch.device("meta"):
            detector = build_model(meta_cfg)
        own = detector.state_dict()
        dropped = _place_dropped_backbone_keys(classifier_state, mapped, list(dropped), set(own), notes)
        missing = [k for k in own if k not in mapped and not k.startswith(DETECTOR_ONLY_PREFIXES)
                   and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in mapped if k not in own]
        wrong = [f"{k}: {tuple(mapped[k].shape)} vs detector {tuple(own[k].shape)}"
                 for k in mapped if k in own and tuple(mapped[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise WeightsError(
                "the classifier weights do not fit the detector of this config "
                f"(MODEL.NASNET.* must describe the same network): {len(missing)} detector tensors without a value "
                f"(e.g. {missing[:3]}), {len(unexpected)} without a place (e.g. {unexpected[:3]}), "
                f"{len(wrong)} with another shape (e.g. {wrong[:2]})")
        # detectron2 main gives FrozenBatchNorm2d a num_batches_tracked buffer (v0.6 has none): it is
        # a counter, not a weight, so it is neither exported nor reported as left at initialisation
        detector_only = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": {k: v.detach().cpu().numpy() for k, v in mapped.items()},
               "__author__": "nasnet_det.weights.export", "matching_heuristics": False}
    with atomic_write(out) as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    return ExportReport(written=out, mapped=len(mapped), dropped=list(dropped), detector_only=detector_only,
                        notes=notes)

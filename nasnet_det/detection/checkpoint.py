"""The detector's checkpointer: safe loading, atomic saving, and loads that must fit the model.

detectron2's ``DetectionCheckpointer`` trusts its files in three ways this project does not:

* **Code in files.** It unpickles ``.pkl`` with ``pickle.load`` and fvcore calls ``torch.load``
  without ``weights_only``, so a crafted weights file runs its code. We read ``.pth`` with
  ``torch.load(weights_only=True)`` and ``.pkl`` with a numpy-only unpickler
  (``nasnet_det.weights.io``); anything else is refused with one WeightsError naming
  ``--allow-unsafe-pickle``.
* **Fit.** It loads whatever names match and only *logs* the rest, so a timm ``.pth`` or our
  classifier ``.safetensors`` given as ``MODEL.WEIGHTS`` trains from scratch after 1,100 lines of
  warnings, and a demo runs with a random box head. We check every load against its purpose
  (:data:`LoadPurpose`) and raise one WeightsError that names the file and what to run.
* **Torn files.** fvcore writes ``model_*.pth`` and ``last_checkpoint`` in place; a kill mid-write
  leaves a 0-byte file that ``--resume`` then fails on. We write through
  ``nasnet_det.durable.atomic_write``, and ``--resume`` falls back to the newest checkpoint that
  reads (files left torn by older versions).

Our classifier ``.safetensors`` (from ``tools/convert_weights.py``) is accepted directly as
``MODEL.WEIGHTS``: it is mapped onto the detector with
``checkpoint_mapping.classifier_to_detector_state_dict``, as ``export-d2`` would.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..durable import atomic_write, atomic_write_text
from ..errors import UnsafeFileError, WeightsError
from ..weights.export import DETECTOR_HEAD_PREFIXES, PIXEL_STAT_KEYS
from ..weights.io import load_state_dict, safe_torch_load, safe_unpickle

_logger = logging.getLogger(__name__)

#: ``init``: MODEL.WEIGHTS to start training from; the backbone must be covered, the box head
#: may differ (fine-tuning to other classes). ``inference``: the weights to evaluate or run;
#: every tensor must be there with the model's shape.
LoadPurpose = Literal["init", "inference"]

#: Tensors a weights file may lack in any load: the pixel statistics (``PIXEL_STAT_KEYS``) and
#: ``num_batches_tracked`` (FrozenBN on detectron2 main has one; never read). An ``init`` file
#: need not provide ``DETECTOR_HEAD_PREFIXES`` either (a classifier cannot).
#: The ROI-head cells, left at their initialisation by an ``init`` load with MODEL.NASNET.TRANSFER "backbone".
_HEAD_CELL_PREFIX = "roi_heads.res5."
#: ``init`` loads must give at least this share of the other tensors; a file of the right
#: network gives 100%, a file of another network or format gives a few percent.
MIN_INIT_COVERAGE = 0.9

_CHECKPOINT_NAME = re.compile(r"model_(final|\d+)\.pth")
_CONVERT_HINT = ("To start from a classifier checkpoint, convert it first: tools/convert_weights.py "
                 "timm|cadene|tf ... --out X.safetensors, then use MODEL.WEIGHTS X.safetensors (or "
                 "tools/convert_weights.py export-d2 --weights X.safetensors --config <this config> --out X.pkl).")


def resume_candidates(save_dir: str) -> list[str]:
    """The files ``--resume`` tries in ``save_dir``, in order: the one ``last_checkpoint`` names,
    then every ``model_final.pth`` / ``model_NNNNNNN.pth``, newest first."""
    if not save_dir or not os.path.isdir(save_dir):
        return []
    tag = os.path.join(save_dir, "last_checkpoint")
    tagged = os.path.basename(Path(tag).read_text().strip()) if os.path.isfile(tag) else ""

    def order(name: str) -> float:
        step = _CHECKPOINT_NAME.fullmatch(name).group(1)
        return float("inf") if step == "final" else int(step)

    found = sorted((n for n in os.listdir(save_dir) if _CHECKPOINT_NAME.fullmatch(n)), key=order, reverse=True)
    names = ([tagged] if tagged and os.path.isfile(os.path.join(save_dir, tagged)) else []) + \
        [n for n in found if n != tagged]
    return [os.path.join(save_dir, n) for n in names]


def _optional(key: str) -> bool:
    return key in PIXEL_STAT_KEYS or key.endswith("num_batches_tracked")


class NASNetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that never runs code from a file, never leaves a torn checkpoint,
    and refuses weights that do not fit the model.

    ``weights_purpose`` says how a non-resume load (``load`` / ``resume_or_load(resume=False)``)
    is checked; resuming from this run's own checkpoints is always checked as ``inference`` (a run
    whose config changed, e.g. ``NUM_CLASSES``, must not continue over its old checkpoints).
    ``cfg`` (the detector's config) is needed only to map a classifier ``.safetensors``.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, allow_unsafe_pickle: bool = False,
                 weights_purpose: LoadPurpose = "init", cfg=None, **checkpointables: Any):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.weights_purpose = weights_purpose
        self.cfg = cfg
        self._purpose: LoadPurpose | Literal["resume"] = weights_purpose
        self._loading = ""
        self._resumed_from: str | None = None
        self._resume_attempted = False

    # ---------------------------------------------------------------------------------- loading
    def load(self, path: str, checkpointables: list[str] | None = None) -> dict:
        if path and "://" not in path and not os.path.isfile(path):
            raise WeightsError(f"weights file {path!r} does not exist (MODEL.WEIGHTS / --weights)")
        self._loading = path
        return super().load(path, checkpointables)

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """Resume from the newest intact checkpoint of ``save_dir``, else load ``path``."""
        if resume:
            self._resume_attempted = True
            for candidate in resume_candidates(self.save_dir):
                try:
                    data = self._load_file(candidate)
                except UnsafeFileError:
                    raise  # planted, not torn: never skip past it
                except WeightsError as err:
                    _logger.warning("skipping checkpoint %s: %s", candidate, err)
                    continue
                self._resumed_from = candidate
                self._purpose = "resume"
                try:
                    return self._load_loaded(candidate, data)
                finally:
                    self._purpose = self.weights_purpose
            if resume_candidates(self.save_dir):
                start = f"MODEL.WEIGHTS {path!r}" if path else "random initialisation (MODEL.WEIGHTS is empty)"
                _logger.warning("--resume: no intact checkpoint in %s; starting again from %s", self.save_dir, start)
        return self.load(path, checkpointables=[])

    def _load_loaded(self, path: str, checkpoint: dict) -> dict:
        """fvcore's ``load`` for a file already read (the fallback loop reads before it decides)."""
        self._loading = path
        self.logger.info("[Checkpointer] Resuming from %s ...", path)
        incompatible = self._load_model(checkpoint)
        if incompatible is not None:
            self._log_incompatible_keys(incompatible)
        for key in self.checkpointables:
            if key in checkpoint:
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        return checkpoint

    def has_checkpoint(self) -> bool:
        """Whether there is a checkpoint to resume from; after a resume, whether one was loaded.

        DefaultTrainer asks this after ``resume_or_load`` to decide to continue at the loaded
        iteration + 1: with only torn files (or an empty ``last_checkpoint``) nothing was loaded,
        and training must start at iteration 0.
        """
        if self._resume_attempted:
            return self._resumed_from is not None
        return bool(resume_candidates(self.save_dir))

    def _load_file(self, filename: str) -> dict:
        if not os.path.isfile(filename):
            raise WeightsError(f"checkpoint file {filename!r} does not exist")
        if os.path.getsize(filename) == 0:
            raise WeightsError(f"checkpoint file {filename!r} is empty (a write cut short?)")
        if filename.endswith(".safetensors"):
            return self._classifier_safetensors(filename)
        if filename.endswith(".pkl"):
            data = safe_unpickle(filename, self.allow_unsafe_pickle)
            if not isinstance(data, dict):
                raise WeightsError(f"{filename!r}: expected a dict of arrays, got {type(data).__name__}")
            if "model" in data and "__author__" in data:  # detectron2 model-zoo format
                return data
            data = data.get("blobs", data)  # Caffe2 / Detectron1 (as detectron2 reads them)
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):
            raise WeightsError(f"{filename!r}: pycls .pyth files are not supported; convert to .pth")
        loaded = safe_torch_load(filename, self.allow_unsafe_pickle)
        if not isinstance(loaded, dict):
            raise WeightsError(f"{filename!r} holds no checkpoint dict ({type(loaded).__name__})")
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _classifier_safetensors(self, filename: str) -> dict:
        from .checkpoint_mapping import classifier_to_detector_state_dict

        state, _meta = load_state_dict(filename)
        if any(k.startswith(("backbone.", "roi_heads.")) for k in state):  # already detector-named
            return {"model": state}
        if self.cfg is None:
            raise WeightsError(f"{filename!r} is a classifier checkpoint; mapping it onto the detector needs the "
                               "config (NASNetCheckpointer(cfg=...))")
        mapped, _dropped = classifier_to_detector_state_dict(state, self.cfg)
        return {"model": mapped, "__author__": "nasnet_det classifier", "matching_heuristics": False}

    def _fresh_prefixes(self) -> tuple[str, ...]:
        """Tensors this load leaves at their initialisation: the box head of an ``init`` load, and
        its ROI-head cells too when the config says MODEL.NASNET.TRANSFER "backbone"."""
        if self._purpose != "init":
            return ()
        backbone_only = self.cfg is not None and self.cfg.MODEL.NASNET.get("TRANSFER", "all") == "backbone"
        return DETECTOR_HEAD_PREFIXES + ((_HEAD_CELL_PREFIX,) if backbone_only else ())

    def _load_model(self, checkpoint: dict):
        fresh = self._fresh_prefixes()
        if _HEAD_CELL_PREFIX in fresh:
            model = checkpoint["model"]
            skipped = [k for k in model if k.startswith(_HEAD_CELL_PREFIX)]
            for key in skipped:
                del model[key]
            self.logger.info("MODEL.NASNET.TRANSFER=backbone: the ROI-head cells keep their initialisation "
                             "(%d tensors of %s not loaded)", len(skipped), self._loading)
        incompatible = super()._load_model(checkpoint)
        if _HEAD_CELL_PREFIX in fresh:  # left out on purpose (logged above), not worth a warning per tensor
            incompatible = incompatible._replace(
                missing_keys=[k for k in incompatible.missing_keys if not k.startswith(_HEAD_CELL_PREFIX)])
        self._check_fit(incompatible, fresh)
        return incompatible

    def _check_fit(self, incompatible, fresh: tuple[str, ...]) -> None:
        """Raise one WeightsError when the file does not fit this load's purpose (``fresh``: the prefixes
        it leaves at their initialisation, from ``_fresh_prefixes``)."""
        model_keys = [k for k in self.model.state_dict() if not _optional(k)]
        missing = {k for k in incompatible.missing_keys if not _optional(k)}
        wrong = {k: (tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes if not _optional(k)}
        name = self._loading
        if self._purpose in ("resume", "inference"):
            if wrong:
                key, (have, want) = next(iter(sorted(wrong.items())))
                cause = (" This run's config changed since the checkpoint was written (e.g. "
                         "MODEL.ROI_HEADS.NUM_CLASSES): use a new OUTPUT_DIR, or the config it was trained with."
                         if self._purpose == "resume" else
                         " It was trained with another config (e.g. MODEL.ROI_HEADS.NUM_CLASSES or "
                         "MODEL.NASNET.*): use the config it was trained with.")
                raise WeightsError(f"{name!r}: {len(wrong)} tensors have another shape than this model's, e.g. "
                                   f"{key}: {have} in the file vs {want} in the model.{cause}")
            if missing:
                raise WeightsError(
                    f"{name!r} lacks {len(missing)} of the model's {len(model_keys)} tensors (e.g. "
                    f"{sorted(missing)[:3]}): it is not a full checkpoint of this detector, so part of the model "
                    "would stay random. Give a model_final.pth trained with this config.")
            return
        body = [k for k in model_keys if not k.startswith(fresh)]
        body_wrong = sorted(k for k in wrong if not k.startswith(fresh))
        if body_wrong:
            have, want = wrong[body_wrong[0]]
            raise WeightsError(f"{name!r}: {len(body_wrong)} backbone or head-cell tensors have another shape than "
                               f"this model's, e.g. {body_wrong[0]}: {have} in the file vs {want} in the model "
                               "(weights of another network: MODEL.NASNET.* must describe the network the file "
                               "was trained as).")
        matched = sum(k not in missing for k in body)
        if body and matched < MIN_INIT_COVERAGE * len(body):
            raise WeightsError(f"{name!r} gives only {matched} of the {len(body)} backbone and head-cell tensors of "
                               f"this detector (at least {MIN_INIT_COVERAGE:.0%} needed): it is not detector weights "
                               f"for this network. {_CONVERT_HINT}")
        head_wrong = sorted(k for k in wrong if k.startswith(fresh))
        if head_wrong:
            _logger.warning("%s: %d head tensors have another shape and keep their initialisation (fine-tuning to "
                            "another class count): %s", name, len(head_wrong), ", ".join(head_wrong))

    # ----------------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_write(save_file) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)


def preflight_weights(cfg, *, resume: bool, purpose: LoadPurpose, allow_unsafe_pickle: bool = False) -> None:
    """Read and check the weights a run will load, before the run writes anything.

    detectron2's ``default_setup`` writes ``OUTPUT_DIR/config.yaml`` and the log, and the trainer
    its event files, before any weights are read: a run with an unreadable ``MODEL.WEIGHTS``, or
    a ``--resume`` refused for a changed ``NUM_CLASSES``, would fail only after overwriting the
    previous run's ``config.yaml``. This does the same reading and fit checks as the real load,
    on a parameter-free (meta-device) copy of the detector, so it costs the file read and a second.
    """
    from detectron2.modeling import build_model

    meta_cfg = cfg.clone()
    meta_cfg.defrost()
    meta_cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(meta_cfg)
    checker = NASNetCheckpointer(model, cfg.OUTPUT_DIR, allow_unsafe_pickle=allow_unsafe_pickle,
                                 weights_purpose=purpose, cfg=cfg)
    with warnings.catch_warnings():  # torch warns once per tensor that copying into meta is a no-op
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
        checker.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)

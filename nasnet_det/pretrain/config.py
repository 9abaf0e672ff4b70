"""Pretraining configuration: defaults as an fvcore ``CfgNode`` tree, a YAML file, ``KEY VALUE`` overrides.

Why a strict schema: a long ImageNet run that silently ignores ``optim.lr_decay_epoch`` (a typo of
``lr_decay_epochs``) wastes days, so every unknown key, wrong type or missing path is an error that
names the key (``nasnet_det.config`` loads and type-checks; ``PretrainConfig.validate`` checks
ranges, paths and the network). Defaults are the paper's recipe (appendix A.7 and the TF-slim
training notes of ``nasnet.py``, docs/spec.md §4); family-specific values (weight
decay, clipping) resolve from the model preset when left ``null``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from .. import config as cfgsys
from ..config import Config
from ..errors import ConfigError

# L2 weight decay (slim ``l2_regularizer`` scale) per model family, docs/spec.md §2.
FAMILY_WEIGHT_DECAY = {"cifar": 5e-4, "mobile": 4e-5, "large": 5e-5}
# Gradient clipping by global norm from the TF-slim training notes (CIFAR 5, ImageNet 10).
FAMILY_CLIP_NORM = {"cifar": 5.0, "mobile": 10.0, "large": 10.0}


def model_family(arch: str | None, dataset: str = "imagenet") -> str:
    """``cifar`` / ``mobile`` / ``large`` from a preset name (or the network's ``dataset`` override)."""
    text = (arch or "").lower()
    if "cifar" in text or dataset == "cifar":
        return "cifar"
    if "large" in text or "amoeba" in text:
        return "large"
    return "mobile"


class PretrainConfig(Config):
    """A pretraining run: ``cfg.optim.lr`` etc., plus the family-resolved values and ``validate``."""

    @property
    def family(self) -> str:
        return model_family(self.model.arch, self.model.overrides.get("dataset", "imagenet"))

    def resolved_weight_decay(self) -> float:
        if self.optim.weight_decay is not None:
            return float(self.optim.weight_decay)
        return FAMILY_WEIGHT_DECAY[self.family]

    def resolved_clip_norm(self) -> float:
        if self.optim.clip_grad_norm is not None:
            return float(self.optim.clip_grad_norm)
        return FAMILY_CLIP_NORM[self.family]

    def validate(self, check_paths: bool = True) -> "PretrainConfig":
        """Raise ConfigError (GenotypeError for the genotype) naming the first bad field.

        ``check_paths=False`` (``--print-config``, shipped-config tests) skips the data folders
        and genotype files, which may exist only on the training machine.
        """
        m, o, t = self.model, self.optim, self.train
        if m.factory is not None and ":" not in m.factory:
            raise ConfigError(f"model.factory: expected 'package.module:function', got {m.factory!r}")
        if o.optimizer not in ("rmsprop_tf", "sgd", "adamw"):
            raise ConfigError(f"optim.optimizer: expected rmsprop_tf, sgd or adamw, got {o.optimizer!r}")
        if o.schedule not in ("exponential", "cosine", "constant"):
            raise ConfigError(f"optim.schedule: expected exponential, cosine or constant, got {o.schedule!r}")
        if t.epochs <= 0 and t.max_steps == 0:
            raise ConfigError("train.epochs / train.max_steps: one of them must be > 0")
        if t.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device: expected auto, cpu or cuda, got {t.device!r}")
        if t.amp_dtype not in ("auto", "bfloat16", "float16"):
            raise ConfigError(f"train.amp_dtype: expected auto, bfloat16 or float16, got {t.amp_dtype!r}")
        for key, value, ok, rule in _numeric_rules(self):
            if not ok(value):
                raise ConfigError(f"{key}: must be {rule}, got {value}")
        if check_paths:
            _check_paths(self.data)
        if m.factory is None:
            network_config(self, check_files=check_paths)
        return self


def _defaults() -> PretrainConfig:
    c = PretrainConfig()
    # Which network to train: a preset of nasnet_det.modeling (list_models()) and the NASNetConfig
    # fields that differ (``genotype``: a registered name or a JSON path; ``penultimate_filters``:
    # P of "N @ P"), resolved by nasnet_det.modeling.resolve_network. ``factory``:
    # "package.module:function" returning an nn.Module instead (research / tests), called with
    # num_classes and the overrides.
    c.model = PretrainConfig({"arch": "nasnet_a_mobile", "overrides": {},
                              "num_classes": None,  # None: the number of class folders in data.train_dir
                              "factory": None})
    c.model.overrides.set_new_allowed(True)
    # ImageFolder data (``train_dir/<class>/*.jpg``) and Inception-style augmentation.
    c.data = PretrainConfig({
        "train_dir": "", "val_dir": "",
        "image_size": 224,          # 224 mobile, 331 large, 32 CIFAR
        "eval_resize": 0.875,       # central crop fraction at eval (Inception: 0.875)
        "min_crop_area": 0.08,      # RandomResizedCrop scale lower bound (Inception: 0.08..1)
        "color_jitter": 0.0,        # brightness/contrast/saturation strength; 0 = off
        "cifar_style": False,       # pad-4 random crop + flip instead of RandomResizedCrop
        "workers": 4,
        "train_subset": 0,          # use only the first N images per class (0 = all); fast tests
        "val_subset": 0,
    })
    # RMSProp with TF semantics, exponential or cosine decay, warm-up, L2 on weights, EMA.
    c.optim = PretrainConfig({
        "optimizer": "rmsprop_tf",  # rmsprop_tf | sgd | adamw
        "lr": 0.04,                 # per ``lr_batch_size`` images (TF notes: 0.04 per 32)
        "lr_batch_size": 32,        # lr scales linearly with global batch / lr_batch_size
        "rmsprop_decay": 0.9, "rmsprop_eps": 1.0, "momentum": 0.9,
        "weight_decay": None,       # None: FAMILY_WEIGHT_DECAY[family]
        "schedule": "exponential",  # exponential | cosine | constant
        "lr_decay_rate": 0.97, "lr_decay_epochs": 2.4, "warmup_epochs": 0.0, "min_lr": 0.0,
        "clip_grad_norm": None,     # None: FAMILY_CLIP_NORM[family]; 0 = off
        "label_smoothing": 0.1, "aux_loss_weight": 0.4,
        "ema_decay": 0.9999,        # 0 = no EMA
        "ema_warmup": True,         # TF num_updates: decay = min(decay, (1+n)/(10+n))
    })
    # The run: length, batch, precision, distributed settings, checkpoints and logs.
    c.train = PretrainConfig({
        "output_dir": "output/pretrain",
        "epochs": 1.0,
        "max_steps": 0,             # > 0: stop after this many optimizer steps (total = this)
        "batch_size": 32,           # PER PROCESS; global = batch_size * world_size
        "seed": 0,
        "device": "auto",           # auto | cpu | cuda
        "amp": False,               # bf16 autocast on CPU, fp16 + GradScaler on CUDA
        "amp_dtype": "auto",        # auto | bfloat16 | float16
        "channels_last": False,
        "memory_saving": False,     # checkpoint every cell: less activation memory, ~1 extra forward
        "freeze_bn": False,         # BN in eval mode (running stats) while training
        "checkpoint_every_steps": 0,  # 0: only at the end of every epoch
        "keep_checkpoints": 2,
        "resume": "auto",           # auto (latest in output_dir) | never | <path>
        "eval_every_epochs": 1.0,
        "eval_ema": True,           # evaluate the EMA weights (and the raw ones)
        "log_every_steps": 20,
        "tensorboard": True,
        "progress_bar": True,
        "threads": 0,               # torch.set_num_threads on CPU (0 = leave)
    })
    return c


DEFAULTS = _defaults()

#: The type of each key whose default is None (None stays allowed).
TYPES = {"model.num_classes": int, "model.factory": str, "optim.weight_decay": float, "optim.clip_grad_norm": float}

#: Keys of earlier versions and where they live now.
MOVED = {"model.name": "model.arch", "model.genotype": "model.overrides.genotype",
         "model.num_cells": "model.overrides.num_cells",
         "model.penultimate_filters": "model.overrides.penultimate_filters"}


def network_config(cfg: PretrainConfig, num_classes: int | None = None, check_files: bool = True) -> Any:
    """The ``NASNetConfig`` of ``model.arch`` + ``model.overrides`` (+ the dataset's class count).

    ``check_files=False`` leaves a genotype JSON file unread (it may exist only on the training machine).
    """
    from ..modeling import resolve_network
    from ..space import resolve_genotype_setting

    m = cfg.model
    overrides = dict(m.overrides)
    spec = overrides.get("genotype")
    if not check_files and isinstance(spec, str) and spec.endswith(".json"):
        overrides.pop("genotype")
    if num_classes is not None or m.num_classes is not None:
        overrides["num_classes"] = num_classes if num_classes is not None else m.num_classes
    spell = lambda key: "model.arch" if key == "arch" else f"model.overrides.{key}"  # noqa: E731
    if "genotype" in overrides:  # here, so that its error names the key as detection's does
        overrides["genotype"] = resolve_genotype_setting("model.overrides.genotype", overrides["genotype"])
    return resolve_network(m.arch, name=spell, **overrides)


def _numeric_rules(cfg: PretrainConfig) -> list[tuple[str, Any, Callable[[Any], bool], str]]:
    """(key, value, test, rule) for every number whose bad value would fail late or train silently wrong.

    Why here: a negative lr otherwise fails inside the optimizer's constructor as a bare ValueError,
    and ``max_steps=-3`` silently fell back to ``epochs``.
    """
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    positive, non_negative = (lambda v: v > 0), (lambda v: v >= 0)
    fraction = lambda v: 0.0 < v <= 1.0  # noqa: E731
    rules = [
        ("optim.lr", o.lr, positive, "> 0"),
        ("optim.lr_batch_size", o.lr_batch_size, positive, ">= 1"),
        ("optim.rmsprop_decay", o.rmsprop_decay, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ("optim.rmsprop_eps", o.rmsprop_eps, positive, "> 0"),
        ("optim.momentum", o.momentum, non_negative, ">= 0"),
        ("optim.lr_decay_rate", o.lr_decay_rate, fraction, "in (0, 1]"),
        ("optim.lr_decay_epochs", o.lr_decay_epochs, positive, "> 0"),
        ("optim.warmup_epochs", o.warmup_epochs, non_negative, ">= 0"),
        ("optim.min_lr", o.min_lr, non_negative, ">= 0"),
        ("optim.aux_loss_weight", o.aux_loss_weight, non_negative, ">= 0"),
        ("optim.ema_decay", o.ema_decay, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ("optim.label_smoothing", o.label_smoothing, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ("train.batch_size", t.batch_size, positive, ">= 1"),
        ("train.epochs", t.epochs, non_negative, ">= 0"),
        ("train.max_steps", t.max_steps, non_negative, ">= 1 (or 0: train for train.epochs)"),
        ("train.checkpoint_every_steps", t.checkpoint_every_steps, non_negative, ">= 0"),
        ("train.keep_checkpoints", t.keep_checkpoints, non_negative, ">= 0"),
        ("train.eval_every_epochs", t.eval_every_epochs, positive, "> 0"),
        ("train.log_every_steps", t.log_every_steps, non_negative, ">= 0"),
        ("train.threads", t.threads, non_negative, ">= 0"),
        ("data.image_size", d.image_size, lambda v: v >= 8, ">= 8"),
        ("data.eval_resize", d.eval_resize, fraction, "in (0, 1]"),
        ("data.min_crop_area", d.min_crop_area, fraction, "in (0, 1]"),
        ("data.color_jitter", d.color_jitter, non_negative, ">= 0"),
        ("data.workers", d.workers, non_negative, ">= 0"),
        ("data.train_subset", d.train_subset, non_negative, ">= 0"),
        ("data.val_subset", d.val_subset, non_negative, ">= 0"),
    ]
    for key in ("weight_decay", "clip_grad_norm"):
        if getattr(o, key) is not None:
            rules.append((f"optim.{key}", getattr(o, key), non_negative, ">= 0"))
    if m.num_classes is not None:
        rules.append(("model.num_classes", m.num_classes, positive, ">= 1 (or null)"))
    return rules


def _check_paths(d: Config) -> None:
    if not d.train_dir:
        raise ConfigError("data.train_dir: not set (an ImageFolder root: <dir>/<class>/*.jpg)")
    for key in ("train_dir", "val_dir"):
        path = getattr(d, key)
        if path and not os.path.isdir(path):
            raise ConfigError(f"data.{key}: directory {path!r} does not exist")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                check_paths: bool = True) -> PretrainConfig:
    """Read a YAML file (optional), apply ``KEY VALUE`` overrides, validate."""
    cfg, _ = cfgsys.load(DEFAULTS, path, overrides, types=TYPES, moved=MOVED)
    return cfg.validate(check_paths=check_paths)


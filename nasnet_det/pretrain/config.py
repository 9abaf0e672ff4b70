"""Pretraining configuration: one dataclass tree, read from YAML, overridden from the command line.

Why a strict schema: a long ImageNet run that silently ignores ``optim.lr_decay_epoch`` (a typo of
``lr_decay_epochs``) wastes days, so every unknown key, wrong type or missing path is an error that
names the key. Defaults are the paper's recipe (appendix A.7 and the TF-slim training notes of
``nasnet.py``, docs/spec.md §4); family-specific values (weight decay, clipping)
resolve from the model name when left ``null``.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, get_type_hints

import yaml
from ..errors import ConfigError, GenotypeError


# L2 weight decay (slim ``l2_regularizer`` scale) per model family, docs/spec.md §2.
FAMILY_WEIGHT_DECAY = {"cifar": 5e-4, "mobile": 4e-5, "large": 5e-5}
# Gradient clipping by global norm from the TF-slim training notes (CIFAR 5, ImageNet 10).
FAMILY_CLIP_NORM = {"cifar": 5.0, "mobile": 10.0, "large": 10.0}


def model_family(name: str | None, dataset: str = "imagenet") -> str:
    """``cifar`` / ``mobile`` / ``large`` from a model name; genotype-built nets use their dataset."""
    text = (name or "").lower()
    if "cifar" in text or dataset == "cifar":
        return "cifar"
    if "large" in text or "amoeba" in text:
        return "large"
    return "mobile"


@dataclass
class ModelConfig:
    """Which network to train. Exactly one of ``name``, ``genotype`` or ``factory`` is used.

    ``name``: a ``create_model`` name (``nasnet_a_mobile``...). ``genotype``: a registered genotype
    name or a JSON path, built with ``build_nasnet(genotype, dataset, num_cells, penultimate_filters)``.
    ``factory``: ``"package.module:function"`` returning an ``nn.Module`` (research / tests).
    ``overrides`` are passed to the constructor (e.g. ``drop_path_keep_prob``, ``use_aux_head``).
    """

    name: str | None = "nasnet_a_mobile"
    genotype: str | None = None
    dataset: str = "imagenet"
    num_cells: int | None = None
    penultimate_filters: int | None = None
    num_classes: int | None = None  # None: the number of class folders in data.train_dir
    factory: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """ImageFolder data (``train_dir/<class>/*.jpg``) and Inception-style augmentation."""

    train_dir: str = ""
    val_dir: str = ""
    image_size: int = 224            # 224 mobile, 331 large, 32 CIFAR
    eval_resize: float = 0.875       # central crop fraction at eval (Inception: 0.875)
    min_crop_area: float = 0.08      # RandomResizedCrop scale lower bound (Inception: 0.08..1)
    color_jitter: float = 0.0        # brightness/contrast/saturation strength; 0 = off
    cifar_style: bool = False        # pad-4 random crop + flip instead of RandomResizedCrop
    workers: int = 4
    train_subset: int = 0            # use only the first N images per class (0 = all); fast tests
    val_subset: int = 0


@dataclass
class OptimConfig:
    """RMSProp with TF semantics, exponential or cosine decay, warm-up, L2 on weights, EMA."""

    optimizer: str = "rmsprop_tf"    # rmsprop_tf | sgd | adamw
    lr: float = 0.04                 # per ``lr_batch_size`` images (TF notes: 0.04 per 32)
    lr_batch_size: int = 32          # lr scales linearly with global batch / lr_batch_size
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1.0
    momentum: float = 0.9
    weight_decay: float | None = None  # None: FAMILY_WEIGHT_DECAY[family]
    schedule: str = "exponential"    # exponential | cosine | constant
    lr_decay_rate: float = 0.97
    lr_decay_epochs: float = 2.4
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    clip_grad_norm: float | None = None  # None: FAMILY_CLIP_NORM[family]; 0 = off
    label_smoothing: float = 0.1
    aux_loss_weight: float = 0.4
    ema_decay: float = 0.9999        # 0 = no EMA
    ema_warmup: bool = True          # TF num_updates: decay = min(decay, (1+n)/(10+n))


@dataclass
class TrainConfig:
    """The run: length, batch, precision, distributed settings, checkpoints and logs."""

    output_dir: str = "output/pretrain"
    epochs: float = 1.0
    max_steps: int = 0               # > 0: stop after this many optimizer steps (total = this)
    batch_size: int = 32             # PER PROCESS; global = batch_size * world_size
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    amp: bool = False                # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    amp_dtype: str = "auto"          # auto | bfloat16 | float16
    channels_last: bool = False
    memory_saving: bool = False      # checkpoint every cell: less activation memory, ~1 extra forward
    freeze_bn: bool = False          # BN in eval mode (running stats) while training
    checkpoint_every_steps: int = 0  # 0: only at the end of every epoch
    keep_checkpoints: int = 2
    resume: str = "auto"             # auto (latest in output_dir) | never | <path>
    eval_every_epochs: float = 1.0
    eval_ema: bool = True            # evaluate the EMA weights (and the raw ones)
    log_every_steps: int = 20
    tensorboard: bool = True
    progress_bar: bool = True
    threads: int = 0                 # torch.set_num_threads on CPU (0 = leave)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ----------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return model_family(self.model.name or self.model.genotype, self.model.dataset)

    def resolved_weight_decay(self) -> float:
        if self.optim.weight_decay is not None:
            return float(self.optim.weight_decay)
        return FAMILY_WEIGHT_DECAY[self.family]

    def resolved_clip_norm(self) -> float:
        if self.optim.clip_grad_norm is not None:
            return float(self.optim.clip_grad_norm)
        return FAMILY_CLIP_NORM[self.family]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, check_paths: bool = True) -> "PretrainConfig":
        """Raise ConfigError (GenotypeError for the genotype) naming the first bad field.

        ``check_paths=False`` (``--print-config``, shipped-config tests) skips the data folders
        and genotype files, which may exist only on the training machine.
        """
        m, d, o, t = self.model, self.data, self.optim, self.train
        chosen = [k for k in ("factory", "genotype", "name") if getattr(m, k)]
        if not chosen:
            raise ConfigError("model: set one of model.name, model.genotype or model.factory")
        if m.factory and ":" not in m.factory:
            raise ConfigError(f"model.factory: expected 'package.module:function', got {m.factory!r}")
        if m.dataset not in ("imagenet", "cifar"):
            raise ConfigError(f"model.dataset: expected 'imagenet' or 'cifar', got {m.dataset!r}")
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
            _check_paths(d)
        _check_model(m, check_files=check_paths)
        return self


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
    for key in ("num_cells", "penultimate_filters", "num_classes"):
        if getattr(m, key) is not None:
            rules.append((f"model.{key}", getattr(m, key), positive, ">= 1 (or null)"))
    return rules


def _check_paths(d: DataConfig) -> None:
    if not d.train_dir:
        raise ConfigError("data.train_dir: not set (an ImageFolder root: <dir>/<class>/*.jpg)")
    for key in ("train_dir", "val_dir"):
        path = getattr(d, key)
        if path and not os.path.isdir(path):
            raise ConfigError(f"data.{key}: directory {path!r} does not exist")


def _check_model(m: ModelConfig, check_files: bool) -> None:
    """The model the config names exists: a known create_model name, or a valid genotype.

    Why before the run: a typo otherwise fails at model build, after the output folder was touched.
    """
    if m.factory:
        return
    if m.genotype:
        if check_files or not m.genotype.endswith(".json"):
            _check_genotype(m.genotype)
    else:
        _check_model_name(m.name)
    _check_overrides(m.overrides)


def _check_genotype(spec: str) -> None:
    """The same ``GenotypeError`` lines detection gives, prefixed with the key."""
    from ..space import resolve_genotype

    try:
        resolve_genotype(spec)
    except GenotypeError as err:
        raise GenotypeError(f"model.genotype={spec!r}: {err}") from None


def _check_model_name(name: str) -> None:
    from ..modeling import list_models

    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"model.name: unknown model {name!r}; {hint}known: {', '.join(known)} "
                          "(or set model.name=null and model.genotype=<name or .json>)")


def _check_overrides(overrides: dict) -> None:
    """``model.overrides`` keys are NASNetConfig fields (checked here, not as a TypeError at build)."""
    from ..modeling.config import NASNetConfig

    known = {f.name for f in fields(NASNetConfig)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"model.overrides.{key}: unknown model option{hint}; known: {', '.join(sorted(known))}")


# ---------------------------------------------------------------------------------------------
# dict / YAML / CLI plumbing
# ---------------------------------------------------------------------------------------------
def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert ``value`` against a dataclass field type, naming ``key`` on failure."""
    text = str(hint)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null")
    if "dict" in text:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if "bool" in text:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if "float" in text:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if "int" in text:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if "str" in text:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key; valid keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def config_from_dict(data: dict | None) -> PretrainConfig:
    cfg = PretrainConfig()
    _apply(cfg, data or {})
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.1`` -> (["optim", "lr"], 0.1); the value is parsed as YAML (so 1e-4, true, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value (e.g. optim.lr=0.1)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                check_paths: bool = True) -> PretrainConfig:
    """Read a YAML file (optional), apply ``section.key=value`` overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r}: the top level must be a mapping")
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return config_from_dict(data).validate(check_paths=check_paths)

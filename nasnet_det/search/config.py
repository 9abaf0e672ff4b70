"""The search configuration: a small typed schema read from YAML, with ``KEY VALUE`` overrides.

Why dataclasses rather than a free-form dict: a search runs for days, so a typo such as
``child.epoch: 1`` must stop the run before the first child is trained, with a message that names
the file, the key and the expected type. Every key has a default equal to the paper's setting
(Zoph et al. 2018, section 4 and appendix A), so a config file only lists what it changes.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nasnet_det.space.ops import PAPER_COMBINES, PAPER_OPS
from ..errors import ConfigError


@dataclass
class SpaceConfig:
    """The search space: B blocks per cell over an op and a combine vocabulary."""

    num_blocks: int = 5
    ops: list[str] = field(default_factory=lambda: list(PAPER_OPS))
    combines: list[str] = field(default_factory=lambda: list(PAPER_COMBINES))


@dataclass
class PPOConfig:
    """The controller and its PPO update (paper appendix A.2)."""

    hidden_size: int = 100
    init_range: float = 0.1
    lr: float = 0.00035
    entropy_weight: float = 0.00001
    baseline_decay: float = 0.95
    batch_size: int = 20  # rewards per controller update (the paper's minibatch of 20 architectures)
    clip: float = 0.2
    epochs: int = 1  # optimisation passes over each minibatch
    grad_clip: float = 0.0  # 0 = off


@dataclass
class EvolutionConfig:
    """Regularized evolution (Real et al. 2019): ageing population, tournament, one mutation."""

    population: int = 100
    sample_size: int = 25


@dataclass
class ChildConfig:
    """How each sampled architecture is trained to produce its reward."""

    trainer: str = "cifar"  # "cifar", "synthetic", or "package.module:function"
    num_cells: int = 2  # N normal cells per stage
    filters: int = 32  # F, the first stage's filters per op; fixed for every child (P then varies with the cell)
    bn_momentum: float = 0.1  # PyTorch convention; TF's 0.9997 decay would not settle in a short schedule
    dense_dropout_keep_prob: float = 1.0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0005
    count_macs: bool = True
    threads: int = 1  # torch intra-op threads per CPU worker
    device: str = "auto"  # "auto" (the worker's GPU if any, else CPU), "cpu", "cuda"
    timeout_s: float = 0.0  # kill a child running longer than this (0 = no limit)
    synthetic_sleep_s: float = 0.0  # the synthetic trainer's pretend training time


@dataclass
class DataConfig:
    """The proxy dataset ("dataset of interest") and its held-out validation split."""

    format: str = "imagefolder"  # "imagefolder" (root/train/<class>/*.png) or "cifar10" (torchvision)
    root: str = "../shared/data/cifar10"
    val_size: int = 5000  # held out from the training images; children never train on it
    train_size: int = 0  # 0 = every remaining training image
    split_seed: int = 0  # the split is the same for every child of a search
    image_size: int = 32
    pad: int = 4  # random-crop padding
    flip: bool = True


@dataclass
class ExecutorConfig:
    """Where children run: inline, local worker processes, or Ray."""

    kind: str = "process"  # "inline" | "process" | "ray"
    workers: int = 0  # 0 = one per GPU, else one per 2 CPU cores (at least 1)
    max_retries: int = 2  # re-runs of a trial whose worker died, before it is recorded as failed
    ray_address: str = ""  # "" = start Ray locally; "auto" or host:port to join a cluster
    ray_num_cpus: int = 0  # local Ray only; 0 = Ray's default


@dataclass
class SearchConfig:
    """A whole search."""

    name: str = "search"
    strategy: str = "ppo"  # "ppo" | "random" | "evolution"
    num_archs: int = 20000
    seed: int = 0
    top_k: int = 10
    space: SpaceConfig = field(default_factory=SpaceConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    child: ChildConfig = field(default_factory=ChildConfig)
    data: DataConfig = field(default_factory=DataConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "strategy": ("ppo", "random", "evolution"),
    "data.format": ("imagefolder", "cifar10"),
    "executor.kind": ("inline", "process", "ray"),
    "child.device": ("auto", "cpu", "cuda"),
}
_POSITIVE = {
    "num_archs", "top_k", "space.num_blocks", "ppo.hidden_size", "ppo.batch_size", "ppo.epochs",
    "evolution.population", "evolution.sample_size", "child.num_cells", "child.filters",
    "child.epochs", "child.batch_size", "child.threads", "data.image_size", "ppo.lr", "child.lr",
}
_NON_NEGATIVE = {
    "seed", "ppo.init_range", "ppo.entropy_weight", "ppo.clip", "ppo.grad_clip", "child.momentum",
    "child.weight_decay", "child.timeout_s", "child.bn_momentum", "child.synthetic_sleep_s", "data.val_size",
    "data.train_size", "data.split_seed", "data.pad", "executor.workers", "executor.max_retries",
    "executor.ray_num_cpus",
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{source}: {key}: unsupported type")  # pragma: no cover - schema guard
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {hint}")  # pragma: no cover


def _merge(obj: Any, data: Any, prefix: str, source: str) -> None:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {data!r}")
    hints = _hints(type(obj))
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in hints:
            known = ", ".join(prefix + k for k in hints)
            raise ConfigError(f"{source}: unknown key '{dotted}' (known keys here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, dotted + ".", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted, source))


def _lookup(cfg: SearchConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: SearchConfig, source: str = "config") -> SearchConfig:
    """Range and choice checks that a type hint cannot express; raises ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        if _lookup(cfg, key) not in choices:
            raise ConfigError(f"{source}: {key}: {_lookup(cfg, key)!r} is not one of {list(choices)}")
    for key in _POSITIVE:
        if not _lookup(cfg, key) > 0:
            raise ConfigError(f"{source}: {key}: must be > 0, got {_lookup(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        if _lookup(cfg, key) < 0:
            raise ConfigError(f"{source}: {key}: must be >= 0, got {_lookup(cfg, key)!r}")
    if not 0.0 < cfg.ppo.baseline_decay < 1.0:
        raise ConfigError(f"{source}: ppo.baseline_decay: must be in (0, 1), got {cfg.ppo.baseline_decay}")
    if cfg.evolution.sample_size > cfg.evolution.population:
        raise ConfigError(
            f"{source}: evolution.sample_size: {cfg.evolution.sample_size} exceeds "
            f"evolution.population {cfg.evolution.population}"
        )
    if not 0.0 < cfg.child.dense_dropout_keep_prob <= 1.0:
        raise ConfigError(f"{source}: child.dense_dropout_keep_prob: must be in (0, 1], "
                          f"got {cfg.child.dense_dropout_keep_prob}")
    if cfg.child.trainer not in ("cifar", "synthetic") and ":" not in cfg.child.trainer:
        raise ConfigError(
            f"{source}: child.trainer: {cfg.child.trainer!r} is not 'cifar', 'synthetic' or 'module:function'"
        )
    from nasnet_det.space import GenotypeError, SearchSpace

    try:
        SearchSpace(cfg.space.num_blocks, tuple(cfg.space.ops), tuple(cfg.space.combines))
    except GenotypeError as err:
        raise ConfigError(f"{source}: space: {err}") from None
    return cfg


def parse_override_value(text: str) -> Any:
    """``KEY VALUE`` on the command line: the value is read as YAML, so ``1``, ``0.1``, ``true``, ``[a, b]`` work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML file, then ``data`` (a dict), then ``KEY VALUE`` pairs, then validation."""
    cfg = SearchConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        _merge(cfg, loaded, "", str(path))
    if data:
        _merge(cfg, data, "", "config dict")
    overrides = list(overrides or [])
    if len(overrides) % 2:
        raise ConfigError(f"command line: overrides come in KEY VALUE pairs; '{overrides[-1]}' has no value")
    for key, text in zip(overrides[::2], overrides[1::2]):
        nested: dict[str, Any] = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_override_value(text)
        _merge(cfg, nested, "", "command line")
    source = str(path) if path is not None else "config"
    if overrides:
        source += " + command-line overrides"
    return validate(cfg, source)


def config_from_dict(data: dict[str, Any], source: str = "config") -> SearchConfig:
    """Rebuild a config saved as a dict (e.g. the ``config.yaml`` in a search folder)."""
    cfg = SearchConfig()
    _merge(cfg, data, "", source)
    return validate(cfg, source)

"""The search configuration: defaults as an fvcore ``CfgNode`` tree, a yaml file, ``KEY VALUE`` overrides.

Why strict: a search runs for days, so a typo such as ``child.epoch: 1`` must stop the run before
the first child is trained, with a message that names the file, the key and the expected type
(``nasnet_det.config`` does the loading and type checks; ``validate`` the ranges and choices).
Every key has a default equal to the paper's setting (Zoph et al. 2018, section 4 and appendix A),
so a config file only lists what it changes. Workers rebuild their section from a plain dict with
``Config(task["child"])``; nothing here imports detectron2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nasnet_det.space.ops import PAPER_COMBINES, PAPER_OPS

from .. import config as cfgsys
from ..config import Config
from ..errors import ConfigError


class SearchConfig(Config):
    """A whole search: ``cfg.child.epochs`` etc.; ``to_dict()`` is what ``config.yaml`` holds."""


def _defaults() -> SearchConfig:
    c = SearchConfig(new_allowed=False)
    c.name = "search"
    # "multi_trial": the paper's search, every architecture trained from scratch (child.*, executor.*);
    # "weight_sharing": ENAS-style, one set of shared weights trained for all (weight_sharing.*).
    c.mode = "multi_trial"
    c.strategy = "ppo"  # "ppo" | "reinforce" | "random" | "evolution"
    c.num_archs = 20000
    c.seed = 0
    c.top_k = 10
    # The search space: B blocks per cell over an op and a combine vocabulary.
    c.space = SearchConfig({"num_blocks": 5, "ops": list(PAPER_OPS), "combines": list(PAPER_COMBINES)})
    # The controller and its PPO update (paper appendix A.2).
    c.ppo = SearchConfig({
        "hidden_size": 100, "init_range": 0.1, "lr": 0.00035, "entropy_weight": 0.00001, "baseline_decay": 0.95,
        "batch_size": 20,  # rewards per controller update (the paper's minibatch of 20 architectures)
        "clip": 0.2,
        "epochs": 1,  # optimisation passes over each minibatch
        "grad_clip": 0.0,  # 0 = off
    })
    # Regularized evolution (Real et al. 2019): ageing population, tournament, one mutation.
    c.evolution = SearchConfig({"population": 100, "sample_size": 25})
    # How each sampled architecture is trained to produce its reward.
    c.child = SearchConfig({
        "trainer": "cifar",  # "cifar", "synthetic", or "package.module:function"
        # The child network: a preset of nasnet_det.modeling whose cells the sampled genotype
        # replaces, and the NASNetConfig fields that differ (resolve_network). F (num_conv_filters)
        # is fixed for every child (P then varies with the cell); no aux head, no drop path.
        "arch": "nasnet_a_cifar",
        "network": {"num_cells": 2, "num_conv_filters": 32, "use_aux_head": False, "drop_path_keep_prob": 1.0},
        "epochs": 20, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005,
        "count_macs": True,
        # NHWC activations: oneDNN's convolutions and pools are about 2x (forward) and 2.5x (training
        # step) faster on CPU than NCHW for these children (benchmarks/search_throughput.py); same values
        # up to float rounding. Both modes use it: the child trainer and the weight-sharing supernet.
        "channels_last": True,
        "threads": 1,  # torch intra-op threads per CPU worker
        "device": "auto",  # "auto" (the worker's GPU if any, else CPU), "cpu", "cuda"
        "timeout_s": 0.0,  # kill a child running longer than this (0 = no limit)
        "synthetic_sleep_s": 0.0,  # the synthetic trainer's pretend training time
    })
    c.child.network.set_new_allowed(True)  # any NASNetConfig field; resolve_network checks them
    # The proxy dataset ("dataset of interest") and its held-out validation split.
    c.data = SearchConfig({
        "format": "imagefolder",  # "imagefolder" (root/train/<class>/*.png) or "cifar10" (torchvision)
        "root": "../shared/data/cifar10",
        "val_size": 5000,  # held out from the training images; children never train on it
        "train_size": 0,  # 0 = every remaining training image
        "split_seed": 0,  # the split is the same for every child of a search
        # What a child is evaluated on: "val" (the held-out split above: the reward) or "test" (the
        # dataset's test images, <root>/test or torchvision's test batch: only for final comparisons
        # of fixed cells, e.g. tools/search.py compare; a search would select on the test set).
        "eval_split": "val",
        "image_size": 32, "pad": 4,  # random-crop padding
        "flip": True,
    })
    # Weight-sharing mode (ENAS, Pham et al. 2018): each epoch trains the shared weights on the
    # training split (one controller-sampled architecture per minibatch, child.batch_size / lr /
    # momentum / weight_decay), then scores num_archs / epochs proposals on held-out minibatches and
    # feeds those rewards to the strategy. At the end final_archs proposals of the trained
    # controller are scored on the whole held-out split; they are the ones the report ranks.
    c.weight_sharing = SearchConfig({
        "epochs": 10,
        "eval_batch_size": 256,  # held-out images per reward during the search (ENAS: one minibatch)
        "final_archs": 100,
        "grad_clip": 5.0,  # ENAS's bound on the shared weights' gradient norm; 0 = off
        # what turns the last cell's states into logits in the supernet: "projection" (a shared
        # projection + BN + ReLU + linear, as ENAS ends its cells; supernet.py says why) or
        # "classifier" (each sub-network's own NASNet classifier, read slot by slot)
        "head": "projection",
        "head_width": 64,
    })
    # Cost-aware rewards, both modes: reward = accuracy * (cost / target) ** weight (MnasNet's soft
    # objective, Tan et al. 2019, w = -0.07), and architectures whose cost exceeds limit are rejected
    # before any training. cost: fvcore MACs or parameters of the child network, or its batch-1
    # forward latency in milliseconds measured on this machine.
    c.cost = SearchConfig({
        "metric": "none",  # "none" | "macs" | "params" | "latency"
        "target": 0.0,  # 0 = no soft objective
        "weight": -0.07,
        "limit": 0.0,  # 0 = no hard limit
        "latency_repeats": 5,
    })
    # Where children run: inline, local worker processes, or Ray.
    c.executor = SearchConfig({
        "kind": "process",  # "inline" | "process" | "ray"
        "workers": 0,  # 0 = one per GPU, else one per 2 CPU cores (at least 1)
        "max_retries": 2,  # re-runs of a trial whose worker died, before it is recorded as failed
        "ray_address": "",  # "" = start Ray locally; "auto" or host:port to join a cluster
        "ray_num_cpus": 0,  # local Ray only; 0 = Ray's default
    })
    return c


DEFAULTS = _defaults()

#: The unit of each ``cost.metric`` (messages, plot axes).
COST_UNITS = {"macs": "MACs", "params": "parameters", "latency": "ms"}

#: Keys of earlier versions and where they live now (old configs and search folders still load).
MOVED = {"child.num_cells": "child.network.num_cells", "child.filters": "child.network.num_conv_filters",
         "child.bn_momentum": "child.network.bn_momentum",
         "child.dense_dropout_keep_prob": "child.network.dense_dropout_keep_prob"}

_CHOICES = {
    "mode": ("multi_trial", "weight_sharing"),
    "strategy": ("ppo", "reinforce", "random", "evolution"),
    "cost.metric": ("none", "macs", "params", "latency"),
    "data.format": ("imagefolder", "cifar10"),
    "data.eval_split": ("val", "test"),
    "executor.kind": ("inline", "process", "ray"),
    "child.device": ("auto", "cpu", "cuda"),
    "weight_sharing.head": ("projection", "classifier"),
}
_POSITIVE = {
    "num_archs", "top_k", "space.num_blocks", "ppo.hidden_size", "ppo.batch_size", "ppo.epochs",
    "evolution.population", "evolution.sample_size", "child.epochs", "child.batch_size", "child.threads",
    "data.image_size", "ppo.lr", "child.lr", "weight_sharing.epochs", "weight_sharing.eval_batch_size",
    "weight_sharing.head_width", "cost.latency_repeats",
}
_NON_NEGATIVE = {
    "seed", "ppo.init_range", "ppo.entropy_weight", "ppo.clip", "ppo.grad_clip", "child.momentum",
    "child.weight_decay", "child.timeout_s", "child.synthetic_sleep_s", "data.val_size",
    "data.train_size", "data.split_seed", "data.pad", "executor.workers", "executor.max_retries",
    "executor.ray_num_cpus", "weight_sharing.final_archs", "weight_sharing.grad_clip", "cost.target", "cost.limit",
}


def child_network(child: Any, genotype: Any = "nasnet_a", **runtime: Any) -> Any:
    """The ``NASNetConfig`` of a child: ``child.arch`` + ``child.network`` + the sampled genotype
    (+ ``runtime`` fields such as ``num_classes``, known only once the data is loaded)."""
    from ..modeling import resolve_network

    spell = lambda key: "child.arch" if key == "arch" else f"child.network.{key}"  # noqa: E731
    return resolve_network(child.arch, name=spell, **{**dict(child.network), "genotype": genotype, **runtime})


def validate(cfg: SearchConfig, source: str = "config") -> SearchConfig:
    """Range and choice checks that a type cannot express; raises ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        if cfgsys.lookup(cfg, key) not in choices:
            raise ConfigError(f"{source}: {key}: {cfgsys.lookup(cfg, key)!r} is not one of {list(choices)}")
    for key in sorted(_POSITIVE):
        if not cfgsys.lookup(cfg, key) > 0:
            raise ConfigError(f"{source}: {key}: must be > 0, got {cfgsys.lookup(cfg, key)!r}")
    for key in sorted(_NON_NEGATIVE):
        if cfgsys.lookup(cfg, key) < 0:
            raise ConfigError(f"{source}: {key}: must be >= 0, got {cfgsys.lookup(cfg, key)!r}")
    if not 0.0 < cfg.ppo.baseline_decay < 1.0:
        raise ConfigError(f"{source}: ppo.baseline_decay: must be in (0, 1), got {cfg.ppo.baseline_decay}")
    if cfg.evolution.sample_size > cfg.evolution.population:
        raise ConfigError(
            f"{source}: evolution.sample_size: {cfg.evolution.sample_size} exceeds "
            f"evolution.population {cfg.evolution.population}"
        )
    if (cfg.cost.target > 0 or cfg.cost.limit > 0) and cfg.cost.metric == "none":
        raise ConfigError(f"{source}: cost.metric: 'none' with cost.target/cost.limit set; choose macs, params "
                          f"or latency")
    if cfg.mode == "weight_sharing" and cfg.child.trainer != "cifar":
        raise ConfigError(f"{source}: child.trainer: {cfg.child.trainer!r}; mode weight_sharing trains its "
                          f"shared weights on data.* itself (child.trainer cifar)")
    if cfg.data.eval_split == "val" and cfg.data.val_size == 0:
        raise ConfigError(f"{source}: data.val_size: 0 leaves no held-out images to evaluate children on "
                          f"(data.eval_split val); set data.val_size > 0, or data.eval_split test")
    if cfg.mode == "weight_sharing" and cfg.data.eval_split == "test":
        raise ConfigError(f"{source}: data.eval_split: 'test' in mode weight_sharing would train the controller "
                          f"on the test images; use data.eval_split val")
    if cfg.mode == "weight_sharing" and cfg.num_archs < cfg.weight_sharing.epochs:
        raise ConfigError(f"{source}: num_archs: {cfg.num_archs} is less than weight_sharing.epochs "
                          f"{cfg.weight_sharing.epochs}; each epoch scores num_archs / epochs architectures")
    if cfg.child.trainer not in ("cifar", "synthetic") and ":" not in cfg.child.trainer:
        raise ConfigError(
            f"{source}: child.trainer: {cfg.child.trainer!r} is not 'cifar', 'synthetic' or 'module:function'"
        )
    from nasnet_det.space import GenotypeError

    from .strategies import space_of  # not at the top: strategies imports this module

    try:
        space_of(cfg)
    except GenotypeError as err:
        raise ConfigError(f"{source}: space: {err}") from None
    try:
        child_network(cfg.child, image_size=cfg.data.image_size)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the YAML file, then ``data`` (a dict), then ``KEY VALUE`` pairs, then validation."""
    cfg, overridden = cfgsys.load(DEFAULTS, path, overrides, moved=MOVED, data=data)
    source = f"config file {str(path)!r}" if path is not None else "config"
    if overridden:
        source += " + command-line overrides"
    return validate(cfg, source)


def config_from_dict(data: dict[str, Any], source: str = "config") -> SearchConfig:
    """Rebuild a config saved as a dict (e.g. the ``config.yaml`` in a search folder)."""
    cfg = DEFAULTS.clone()
    cfgsys.merge_dict(cfg, data, source, moved=MOVED)
    return validate(cfg, source)

"""Cost-aware rewards (both search modes): what an architecture costs, and what that does to its reward.

MnasNet's soft objective (Tan et al. 2019) is ``accuracy * (cost / target) ** weight``: with the
default ``weight = -0.07``, an architecture twice the target loses about 5% of its reward, one at
half the target gains about 5%, so the search trades accuracy against cost instead of ignoring
it. The hard limit rejects an architecture before any training (a trial with status
``rejected``), so a user's MACs or latency budget is never spent on what cannot be deployed.

Why MACs are counted per module: fvcore's whole-network count traces the network with the JIT,
about 1 s for a CIFAR child, longer than scoring it with shared weights. Every counted op of a
NASNet (conv, linear, norm) sits in a leaf module, so the network's fvcore count is the sum of its
leaf modules' fvcore counts at their input shapes. The shapes come from one forward pass on the
meta device (no arithmetic), and each (module, input shape) is traced once per process.
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Any

import torch
from torch import nn

from nasnet_det.modeling import NASNet
from nasnet_det.modeling.config import NASNetConfig
from nasnet_det.space import Genotype

from ..config import Config
from .config import COST_UNITS
from .trial_log import Trial

_LEAF_MACS: dict[tuple[str, tuple[int, ...]], int] = {}


def _leaf_macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis

    key = (repr(module), shape)
    if key not in _LEAF_MACS:
        real = copy.deepcopy(module).to_empty(device="cpu")  # the values do not matter, only the shapes
        analysis = FlopCountAnalysis(real.eval(), torch.zeros(shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        _LEAF_MACS[key] = int(analysis.total())
    return _LEAF_MACS[key]


def count_macs(network: NASNetConfig | nn.Module, image_size: int) -> int:
    """fvcore multiply-adds of one image's forward pass, summed over the leaf modules (module docstring)."""
    if isinstance(network, NASNetConfig):
        with torch.device("meta"):
            model = NASNet(network)
    else:
        model = network
    shapes: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: shapes.append((m, tuple(args[0].shape))))
             for m in model.modules() if not list(m.children())]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sum(_leaf_macs(m, shape) for m, shape in shapes)


def measure_latency_ms(network: NASNetConfig, image_size: int, repeats: int) -> float:
    """Median batch-1 eval forward time on this machine (random weights: the time does not depend on them)."""
    model = NASNet(network).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


class CostModel:
    """``cfg.cost`` applied to architectures of one child skeleton.

    ``measure`` gives an architecture's cost (None with metric ``none``), ``rejection`` the reason
    the hard limit refuses it (or None), ``reward`` the soft objective.
    """

    def __init__(self, cost: Config, base: NASNetConfig, image_size: int) -> None:
        self.metric = cost.metric
        self.target = float(cost.target)
        self.weight = float(cost.weight)
        self.limit = float(cost.limit)
        self.repeats = int(cost.latency_repeats)
        self.base = base
        self.image_size = image_size
        self._cache: dict[tuple, float] = {}

    @property
    def enabled(self) -> bool:
        return self.metric != "none"

    def measure(self, genotype: Genotype) -> float | None:
        if not self.enabled:
            return None
        key = (genotype.normal, genotype.reduce)  # the architecture, whatever its name
        if key not in self._cache:
            network = self.base.replace(genotype=genotype)
            if self.metric == "macs":
                value = float(count_macs(network, self.image_size))
            elif self.metric == "params":
                with torch.device("meta"):
                    value = float(sum(p.numel() for p in NASNet(network).parameters()))
            else:
                value = measure_latency_ms(network, self.image_size, self.repeats)
            self._cache[key] = value
        return self._cache[key]

    def rejection(self, cost: float | None) -> str | None:
        if self.limit > 0 and cost is not None and cost > self.limit:
            return (f"rejected before training: {self.metric} {cost:.6g} {COST_UNITS[self.metric]} exceeds "
                    f"cost.limit {self.limit:.6g}")
        return None

    def reward(self, accuracy: float, cost: float | None) -> float:
        """``accuracy * (cost / target) ** weight``, or the accuracy itself without a target."""
        if self.target <= 0 or cost is None or cost <= 0:
            return accuracy
        return accuracy * (cost / self.target) ** self.weight

    def info(self, cost: float | None) -> dict[str, Any]:
        """What a trial record keeps of its cost."""
        return {} if cost is None else {"cost": cost, "cost_metric": self.metric}

    def reject(self, trial: Trial, genotype: Genotype) -> bool:
        """The hard limit, applied before ``trial`` is trained or scored: over it, the trial becomes
        ``rejected`` (the reason in ``error``, its cost in ``extra``) and True is returned."""
        cost = self.measure(genotype)
        reason = self.rejection(cost)
        if reason is None:
            return False
        trial.status, trial.reward, trial.error = "rejected", None, reason
        trial.extra = self.info(cost)
        return True

    def settle(self, trial: Trial, genotype: Genotype, accuracy: float) -> None:
        """``trial.reward`` from its accuracy by the soft objective; ``extra`` keeps the raw accuracy
        and the cost, so the report can draw the accuracy/cost front and nothing is lost."""
        cost = self.measure(genotype)
        trial.reward = self.reward(accuracy, cost)
        trial.extra.update({"accuracy": accuracy, **self.info(cost)})


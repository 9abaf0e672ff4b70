"""Optimizer, learning-rate schedule and weight EMA with TF-slim semantics.

Why our own RMSProp: the NASNet recipe (RMSProp decay 0.9, epsilon 1.0, momentum 0.9) was tuned
for TensorFlow's update rule, which differs from ``torch.optim.RMSprop`` in three ways:

1. epsilon sits INSIDE the square root: ``g / sqrt(ms + eps)``; torch uses ``g / (sqrt(ms) + eps)``.
   With eps = 1.0 that is a large difference (torch would damp every step by at least 1/(1+...)).
2. the mean-square accumulator starts at ONE (TF's ``rms`` slot initialiser), not zero, so the
   first steps are not blown up by a tiny denominator;
3. the learning rate is applied inside the momentum buffer: ``mom = m * mom + lr * g / sqrt(ms+eps)``
   and ``p -= mom``, so a learning-rate decay does not rescale momentum accumulated earlier.

We implement TF's rule exactly (``TFRMSprop``). L2 weight decay is TF's ``l2_regularizer(scale)``
on conv and FC weights only (not BN parameters, not biases): ``scale * ||w||^2 / 2`` added to the
loss, i.e. ``scale * w`` added to the gradient before the RMSProp statistics.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class TFRMSprop(torch.optim.Optimizer):
    """TensorFlow's ``RMSPropOptimizer`` (centered=False) with L2 decay added to the gradient.

    ms  <- decay * ms + (1 - decay) * g^2          (ms starts at 1.0)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)
    p   <- p - mom
    """

    def __init__(self, params, lr: float, decay: float = 0.9, eps: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or not 0.0 <= decay < 1.0 or eps < 0 or momentum < 0:
            raise ValueError(f"TFRMSprop: bad hyperparameters lr={lr} decay={decay} eps={eps} momentum={momentum}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, eps, mom_f, wd = (group[k] for k in ("lr", "decay", "eps", "momentum", "weight_decay"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(decay).addcmul_(g, g, value=1.0 - decay)
                mom.mul_(mom_f).addcdiv_(g, ms.add(eps).sqrt_(), value=lr)
                p.sub_(mom)
        return loss


def split_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: conv/linear weights (ndim > 1) get L2, BN params and biases do not.

    Why: slim's arg scopes put ``weights_regularizer`` on conv, separable conv and FC layers only.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = split_decay_groups(model, cfg.resolved_weight_decay())
    if o.optimizer == "rmsprop_tf":
        return TFRMSprop(groups, lr=lr, decay=o.rmsprop_decay, eps=o.rmsprop_eps, momentum=o.momentum)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


class LRSchedule:
    """Learning rate as a pure function of the global step (so resume needs only the step).

    ``exponential``: TF-slim's staircase decay ``lr * rate ** floor(epoch / decay_epochs)``;
    ``cosine``: the CIFAR recipe; ``constant``. A linear warm-up from 0 over ``warmup_steps``
    multiplies any of them (large-batch runs need it; the paper's asynchronous replicas did not).
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, total_steps: int, schedule: str = "exponential",
                 decay_rate: float = 0.97, decay_epochs: float = 2.4, warmup_epochs: float = 0.0,
                 min_lr: float = 0.0) -> None:
        self.base_lr, self.steps_per_epoch, self.total_steps = base_lr, max(1, steps_per_epoch), max(1, total_steps)
        self.schedule, self.decay_rate, self.decay_epochs = schedule, decay_rate, decay_epochs
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self.min_lr = min_lr

    def __call__(self, step: int) -> float:
        if self.schedule == "exponential":
            epoch = step / self.steps_per_epoch
            lr = self.base_lr * self.decay_rate ** math.floor(epoch / self.decay_epochs)
        elif self.schedule == "cosine":
            t = min(1.0, step / self.total_steps)
            lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))
        else:
            lr = self.base_lr
        if self.warmup_steps > 0 and step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return max(lr, self.min_lr) if self.schedule != "cosine" else lr

    def state_dict(self) -> dict:
        return dict(vars(self))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class ModelEMA:
    """Exponential moving average of every floating parameter AND buffer (BN moving statistics).

    TF's ``ExponentialMovingAverage(decay, num_updates)`` uses ``min(decay, (1+n)/(10+n))`` so the
    average is meaningful early in a run (0.9999 alone would need ~10k steps to forget the random
    init); the published checkpoints store these averages, and we evaluate and export them too.
    Integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.num_updates += 1
        src = model.state_dict()
        for name, ema_t in self.module.state_dict().items():
            cur = src[name].detach()
            if ema_t.dtype.is_floating_point:
                ema_t.mul_(d).add_(cur.to(ema_t.dtype), alpha=1.0 - d)
            else:
                ema_t.copy_(cur)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])

"""Child training: turn one sampled genotype into a reward (held-out validation accuracy).

``run_trial`` is the single entry point every executor calls (inline, worker process, Ray task),
with a plain-dict task so it pickles anywhere. The trainer is pluggable: ``cifar`` is the paper's
proxy training; ``synthetic`` computes a reward from the genotype alone (tests, benchmarks of the
driver's own overhead); ``package.module:function`` lets a user plug in their own.
"""
from __future__ import annotations

import importlib
import math
import os
import socket
import time
from typing import Any, Callable

from nasnet_det.space import Genotype

from ..config import Config
from .config import child_network

#: (genotype, the ``child`` section, the ``data`` section, seed, device) -> result dict
Trainer = Callable[[Genotype, Config, Config, int, str], dict]

#: Per-op scores of the synthetic reward: separable convolutions (the paper's winners) score high.
SYNTHETIC_OP_SCORES = {"sep_conv_3x3": 1.0, "sep_conv_5x5": 0.8, "sep_conv_7x7": 0.6}


def synthetic_reward(genotype: Genotype) -> float:
    """A reward in (0, 1] computed from the genotype alone: the mean per-op score.

    A random architecture scores about 0.26, the best possible 1.0; a learner must discover which
    op each of the 4B op decisions should take, so it exercises every op head of the controller.
    """
    ops = [op for cell in (genotype.normal, genotype.reduce) for b in cell.blocks for op in b.ops]
    return sum(SYNTHETIC_OP_SCORES.get(op, 0.1) for op in ops) / len(ops)


def train_synthetic(genotype: Genotype, child: Config, data: Config, seed: int, device: str) -> dict:
    """No training: the synthetic reward, after ``child.synthetic_sleep_s`` of pretend work."""
    if child.synthetic_sleep_s:
        time.sleep(child.synthetic_sleep_s)
    ops = [op for cell in (genotype.normal, genotype.reduce) for b in cell.blocks for op in b.ops]
    return {"reward": synthetic_reward(genotype), "params": sum(op.startswith(("sep", "conv", "dil")) for op in ops),
            "macs": 0}


def build_child_model(genotype: Genotype, child: Config, num_classes: int, image_size: int = 32) -> Any:
    """The child skeleton (``child.arch`` + ``child.network``, by default NASNet-A CIFAR with N cells
    per stage, F filters, no aux head, no drop-path) with the sampled genotype's cells.

    F is fixed (not P) so that every child of a search gets the same per-op width, as in the paper.
    ``child.channels_last``: the network takes NHWC inputs (training and evaluation).
    """
    from nasnet_det.modeling import NASNet

    model = NASNet(child_network(child, genotype, num_classes=num_classes, image_size=image_size))
    model.set_inference_options(channels_last=bool(child.channels_last))
    return model


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("child.device: 'cuda' requested but no GPU is visible to this worker")
    return device


def train_cifar(genotype: Genotype, child: Config, data: Config, seed: int, device: str) -> dict:
    """The paper's proxy training: SGD with momentum, L2 weight decay, one cosine period, fixed epochs."""
    import torch

    from .cost import count_macs
    from .data import augment, load_child_data, normalize

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    ds = load_child_data(data)
    model = build_child_model(genotype, child, ds.num_classes, data.image_size).to(device)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, data.image_size) if child.count_macs else 0
    mean, std = ds.mean.to(device), ds.std.to(device)
    decay, no_decay = [], []
    for p in model.parameters():  # L2 on weights, not on BN scales/shifts or biases
        (no_decay if p.dim() <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": child.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=child.lr, momentum=child.momentum)
    n = len(ds.train_x)
    bs = min(child.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # drop the ragged last batch: a batch of 1 breaks batch norm
    total = steps_per_epoch * child.epochs
    step = 0
    model.train()
    t0 = time.perf_counter()
    for _epoch in range(child.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x = augment(ds.train_x[idx], data.pad, data.flip, gen).to(device)
            x = normalize(x, mean, std)
            y = ds.train_y[idx].to(device)
            for g in opt.param_groups:  # single-period cosine decay, per step
                g["lr"] = 0.5 * child.lr * (1 + math.cos(math.pi * step / total))
            if hasattr(model, "set_drop_path_progress"):
                model.set_drop_path_progress(step / total)
            out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            loss = torch.nn.functional.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"child training diverged at step {step} (loss {float(loss)})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    train_seconds = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(ds.val_x), 256):
            x = normalize(ds.val_x[i:i + 256].to(device), mean, std)
            out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((logits.argmax(1).cpu() == ds.val_y[i:i + 256]).sum())
    return {"reward": correct / len(ds.val_x), "params": params, "macs": macs,
            "train_loss": float(loss.detach()), "train_seconds": train_seconds, "train_images": n,
            "eval_images": len(ds.val_x)}


def resolve_trainer(name: str) -> Trainer:
    if name == "cifar":
        return train_cifar
    if name == "synthetic":
        return train_synthetic
    module, _, func = name.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"child.trainer: cannot import {name!r} ({err})") from None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """Train one child. ``task``: trial_id, seed, genotype (dict), child and data (config dicts), and
    optionally threads and device (set by the executor). Returns reward, params, macs, seconds, worker."""
    child = Config(task["child"])
    data = Config(task["data"])
    if task.get("threads"):
        import torch

        torch.set_num_threads(int(task["threads"]))
    device = resolve_device(task.get("device") or child.device)
    genotype = Genotype.from_dict(task["genotype"], source=f"trial {task['trial_id']} genotype")
    t0 = time.perf_counter()
    result = dict(resolve_trainer(child.trainer)(genotype, child, data, int(task["seed"]), device))
    if "reward" not in result:
        raise ValueError(f"child.trainer {child.trainer!r} returned no 'reward'")
    result["reward"] = float(result["reward"])
    result["seconds"] = time.perf_counter() - t0
    result["worker"] = task.get("worker") or worker_name()
    result["device"] = device
    return result

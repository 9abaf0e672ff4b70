"""Compare a state dict with a model before loading it, so a wrong-architecture file fails with one
readable sentence instead of torch's multi-screen ``load_state_dict`` error.

Shared by the pretraining checkpoints and the weights files, which both load into these networks.
"""
from __future__ import annotations

from typing import Mapping

import torch


def state_dict_mismatch(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """A one-line summary of missing, unexpected and mis-shaped tensors; None when ``state`` fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        parts.append(f"{len(wrong)} with another shape (e.g. {wrong[0]})")
    return "; ".join(parts) or None

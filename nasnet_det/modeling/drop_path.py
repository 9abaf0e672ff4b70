"""ScheduledDropPath exactly as TF-slim computes it (docs/spec.md §5).

Why a schedule: dropping whole paths hurts early training, so the drop rate grows linearly with
training progress t and (TF's default 'v3') with the cell's depth in the network:
``keep = 1 - t * layer_ratio * (1 - p)``, ``layer_ratio = (cell_num + 1) / total_num_cells``.
AmoebaNet's TF code uses 'v1' (time only); 'v2' is depth only.
"""
from __future__ import annotations

import torch

DROP_PATH_VERSIONS = ("v1", "v2", "v3")


def drop_path_keep_prob(p: float, progress: float, layer_ratio: float, version: str = "v3") -> float:
    """The keep probability TF uses for configured keep prob ``p`` at progress ``t`` and depth ratio."""
    if version not in DROP_PATH_VERSIONS:
        raise ValueError(f"drop_path_version: expected one of {DROP_PATH_VERSIONS}, got {version!r}")
    keep = p
    if version in ("v2", "v3"):
        keep = 1.0 - layer_ratio * (1.0 - keep)
    if version in ("v1", "v3"):
        t = min(1.0, max(0.0, float(progress)))
        keep = 1.0 - t * (1.0 - keep)
    return keep


def drop_path(x: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Zero whole examples with probability 1 - keep_prob and rescale the rest by 1 / keep_prob.

    The mask has shape [B, 1, 1, 1] (TF: ``floor(keep + U[0, 1))``, i.e. Bernoulli(keep)).
    """
    if keep_prob >= 1.0:
        return x
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep_prob)
    return x * (mask / keep_prob)

"""``create_model`` (the published networks by name) and ``build_nasnet`` (any genotype, "N @ P" sized).

Why two entry points: checkpoints and benchmarks want the exact published networks; the search
and user experiments want a genotype sized by the paper's "N @ P" notation (N normal cells per
stage, P filters in the penultimate layer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..space.genotype import Genotype
from ..space.named import resolve_genotype
from .config import MODEL_PRESETS, NASNetConfig, _CIFAR, _MOBILE
from .network import NASNet


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(MODEL_PRESETS)


def create_model(name: str, num_classes: int = 1000, **overrides: Any) -> NASNet:
    """A published network by name, e.g. ``create_model("nasnet_a_large", num_classes=1001)``.

    ``overrides`` replace any ``NASNetConfig`` field (``drop_path_keep_prob=1.0``, ``use_aux_head=False``...).
    ``num_classes`` always applies (default 1000, as the contract says): pass ``num_classes=10`` for
    CIFAR-10 and 1001 for TF checkpoints (class 0 = background).
    """
    if name not in MODEL_PRESETS:
        raise ValueError(f"model name: unknown model {name!r}; known: {list_models()}")
    fields = dict(MODEL_PRESETS[name])
    fields["num_classes"] = num_classes
    config = NASNetConfig(**fields).replace(**overrides) if overrides else NASNetConfig(**fields)
    return NASNet(config)


def _normal_cell_width_multiplier(genotype: Genotype) -> int:
    """Output width of the normal cell in units of F (6 for NASNet-A, 5 for PNASNet-5, 4 for AmoebaNet-A)."""
    cell = genotype.normal
    widths = [1, 1]
    for block in cell.blocks:
        widths.append(2 if block.combine == "concat" else 1)
    final = widths[-1]
    return final * len(cell.concat)


def build_nasnet(
    genotype: "str | Path | Genotype",
    dataset: str = "imagenet",
    num_cells: int | None = None,
    penultimate_filters: int | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> NASNet:
    """A network for any genotype: ``num_cells`` normal cells (3N) and ``penultimate_filters`` (P).

    F (``num_conv_filters``) is ``P // (m * rate^R)`` with m the normal cell's output width in
    units of F (NASNet-A: P = 24 F). Other hyperparameters default to NASNet-A Mobile's (ImageNet)
    or NASNet-A CIFAR's; ``overrides`` replace any ``NASNetConfig`` field.
    """
    genotype = resolve_genotype(genotype)
    if dataset not in ("imagenet", "cifar"):
        raise ValueError(f"dataset: expected 'imagenet' or 'cifar', got {dataset!r}")
    base = dict(_CIFAR if dataset == "cifar" else _MOBILE)
    base["genotype"] = genotype
    if num_cells is not None:
        base["num_cells"] = num_cells
    if num_classes is not None:
        base["num_classes"] = num_classes
    if penultimate_filters is not None and "num_conv_filters" not in overrides:
        rate = overrides.get("filter_scaling_rate", 2.0)
        reductions = overrides.get("num_reduction_layers", 2)
        divisor = _normal_cell_width_multiplier(genotype) * rate ** reductions
        filters = int(penultimate_filters // divisor)
        if filters < 1:
            raise ValueError(f"penultimate_filters: {penultimate_filters} gives fewer than 1 filter per op")
        base["num_conv_filters"] = filters
    return NASNet(NASNetConfig(**base).replace(**overrides) if overrides else NASNetConfig(**base))

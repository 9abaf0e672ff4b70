"""Every hyperparameter of a NASNet-style network in one dataclass, plus the published presets.

Why one dataclass: the presets, ``build_nasnet``'s "N @ P" sizing, configs and checkpoints all
describe a network the same way, and ``model.config`` records exactly what was built. Configs
name a preset and the fields that differ; ``factory.resolve_network`` turns that into one of these. Values are
TF's (docs/spec.md §4 and §7; AmoebaNet from tensorflow/tpu ``amoeba_net``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..space.genotype import Genotype
from ..space.named import resolve_genotype

DATASETS = ("imagenet", "cifar")
REDUCTION_STYLES = ("insert", "stride")


def calc_reduction_layers(num_cells: int, num_reduction_layers: int) -> list[int]:
    """TF's placement: reduction r (1-based) goes before cell ``int(r / (R + 1) * num_cells)``."""
    return [int(float(r) / (num_reduction_layers + 1) * num_cells) for r in range(1, num_reduction_layers + 1)]


@dataclass
class NASNetConfig:
    """A NASNet-style network. Field names follow TF-slim's hparams where one exists.

    ``reduction_style``: "insert" (NASNet, AmoebaNet) inserts a reduction cell before the cells
    chosen by ``calc_reduction_layers``; "stride" (PNASNet) runs those cells themselves with stride 2
    and the reduction genotype, so ``num_cells`` then counts them too.
    """

    genotype: Genotype | str = "nasnet_a"
    dataset: str = "imagenet"
    num_cells: int = 12
    num_conv_filters: int = 44
    stem_multiplier: float = 1.0
    stem_filters: int | None = None  # overrides int(32 * stem_multiplier) (AmoebaNet: 32)
    filter_scaling_rate: float = 2.0
    num_reduction_layers: int = 2
    num_stem_cells: int = 2  # ImageNet only
    reduction_style: str = "insert"
    skip_reduction_layer_input: bool = False
    drop_path_keep_prob: float = 1.0
    drop_path_version: str = "v3"
    total_training_steps: int = 250_000
    dense_dropout_keep_prob: float = 0.5
    use_aux_head: bool = True
    aux_scaling: float = 1.0
    num_classes: int = 1000
    image_size: int = 224  # the size the aux head's last conv kernel is sized for
    bn_eps: float = 1e-3
    bn_momentum: float = 0.0003  # PyTorch momentum = 1 - TF decay
    weight_decay: float = 4e-5  # recorded for training code; the model does not use it

    def __post_init__(self) -> None:
        self.genotype = resolve_genotype(self.genotype)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        if self.reduction_style not in REDUCTION_STYLES:
            raise ValueError(f"reduction_style: expected one of {REDUCTION_STYLES}, got {self.reduction_style!r}")
        if self.num_cells < 1:
            raise ValueError(f"num_cells: must be >= 1, got {self.num_cells}")
        if self.num_conv_filters < 1:
            raise ValueError(f"num_conv_filters: must be >= 1, got {self.num_conv_filters}")
        for name in ("drop_path_keep_prob", "dense_dropout_keep_prob"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name}: must be in (0, 1], got {v}")
        if not 0.0 <= self.bn_momentum <= 1.0 or not self.bn_eps > 0:
            raise ValueError(f"bn_momentum: must be in [0, 1] with bn_eps > 0, got {self.bn_momentum}, {self.bn_eps}")
        if self.num_classes is None or self.num_classes < 0:
            raise ValueError(f"num_classes: must be >= 0 (0 = no classifier), got {self.num_classes}")

    def replace(self, **overrides: Any) -> "NASNetConfig":
        """A copy with some fields changed; unknown field names raise a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown NASNetConfig field(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: the genotype becomes its dict form."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["genotype"] = self.genotype.to_dict()
        return out


_CIFAR = dict(
    dataset="cifar", num_cells=18, num_conv_filters=32, stem_multiplier=3.0, drop_path_keep_prob=0.6,
    total_training_steps=937_500, dense_dropout_keep_prob=1.0, image_size=32, bn_eps=1e-5, bn_momentum=0.1,
    weight_decay=5e-4, num_classes=10,
)
_MOBILE = dict(
    dataset="imagenet", num_cells=12, num_conv_filters=44, stem_multiplier=1.0, drop_path_keep_prob=1.0,
    dense_dropout_keep_prob=0.5, image_size=224, weight_decay=4e-5,
)
_LARGE = dict(
    dataset="imagenet", num_cells=18, num_conv_filters=168, stem_multiplier=3.0, drop_path_keep_prob=0.7,
    skip_reduction_layer_input=True, dense_dropout_keep_prob=0.5, image_size=331, weight_decay=5e-5,
)

#: The named models of ``create_model``: NASNetConfig fields per name.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "nasnet_a_cifar": dict(genotype="nasnet_a", **_CIFAR),
    "nasnet_a_mobile": dict(genotype="nasnet_a", **_MOBILE),
    "nasnet_a_large": dict(genotype="nasnet_a", **_LARGE),
    "pnasnet5_mobile": dict(
        genotype="pnasnet5", reduction_style="stride", num_cells=9, num_conv_filters=54, stem_multiplier=1.0,
        skip_reduction_layer_input=True, drop_path_keep_prob=1.0, dense_dropout_keep_prob=0.5,
        image_size=224, weight_decay=4e-5,
    ),
    "pnasnet5_large": dict(
        genotype="pnasnet5", reduction_style="stride", num_cells=12, num_conv_filters=216, stem_multiplier=3.0,
        skip_reduction_layer_input=True, drop_path_keep_prob=0.6, dense_dropout_keep_prob=0.5,
        image_size=331, weight_decay=4e-5,
    ),
    # tensorflow/tpu models/official/amoeba_net: N=6 (18 cells), F=190, stem 32 filters,
    # drop-connect 0.7 'v1' (time only), aux head scaled by 0.4.
    "amoebanet_a": dict(
        genotype="amoebanet_a", num_cells=18, num_conv_filters=190, stem_filters=32,
        skip_reduction_layer_input=False, drop_path_keep_prob=0.7, drop_path_version="v1",
        dense_dropout_keep_prob=0.5, aux_scaling=0.4, image_size=331, weight_decay=4e-5,
    ),
}

"""Build the NASNet a detector config describes and cut it in two at the faster_rcnn_nas split.

The network is MODEL.NASNET.ARCH (a preset of ``nasnet_det.modeling``) with the MODEL.NASNET keys
of ``NETWORK_KEYS`` as overrides, resolved by ``resolve_network`` like every other config's.

The backbone (first stage) and the ROI head (second stage) each hold a *trimmed* copy of the same
network under the attribute name ``nasnet``: the backbone keeps the stem convolution ``conv0`` and
``cells[:split]``, the head keeps ``cells[split:]``; the other positions hold parameter-free
``nn.Identity`` placeholders.
Keeping the full-length ``cells`` list has two purposes:

* ``NASNet.forward_cells(h_prev, h, start, stop)`` runs any slice with the two-input recurrence
  (including ``skip_reduction_layer_input``) and ScheduledDropPath keeps each cell's depth
  ratio, so neither part re-implements the cell wiring;
* every cell keeps its classifier index, so detector keys are ``backbone.nasnet.cells.3.*`` /
  ``roi_heads.res5.nasnet.cells.15.*`` for classifier keys ``cells.3.*`` / ``cells.15.*``
  (see checkpoint_mapping.py): a classifier checkpoint maps onto the detector by a fixed rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..modeling import NASNet, NASNetConfig, resolve_network
from ..space import resolve_genotype_setting


class NASNetConfigError(ConfigError):
    """A MODEL.NASNET.* value that cannot be built; the message names the key."""


@dataclass(frozen=True)
class SplitInfo:
    """Where the network is cut and what crosses the cut."""

    split_at: int  # index into NASNet.cells of the first second-stage cell
    stride: int  # input stride of the first-stage output
    prev_channels: int  # channels of h_{i-1} (the next-to-last first-stage cell)
    channels: int  # channels of h_i (the last first-stage cell)
    out_channels: int  # channels of the last cell (what the box predictor sees)


#: MODEL.NASNET keys that override a NASNetConfig field of the MODEL.NASNET.ARCH preset (None = the preset's).
NETWORK_KEYS = {
    "GENOTYPE": "genotype", "NUM_CELLS": "num_cells", "PENULTIMATE_FILTERS": "penultimate_filters",
    "FILTERS": "num_conv_filters", "STEM_MULTIPLIER": "stem_multiplier",
    "SKIP_REDUCTION_LAYER_INPUT": "skip_reduction_layer_input", "DROP_PATH_KEEP_PROB": "drop_path_keep_prob",
}
_FIELD_KEYS = {field: key for key, field in NETWORK_KEYS.items()}


def network_config(cfg) -> NASNetConfig:
    """The ``NASNetConfig`` of MODEL.NASNET.ARCH + the MODEL.NASNET overrides, without a classifier.

    Errors are one ConfigError naming the MODEL.NASNET key (a GenotypeError for the genotype).
    """
    c = cfg.MODEL.NASNET
    overrides = {field: c[key] for key, field in NETWORK_KEYS.items() if c[key] is not None}
    if c.PENULTIMATE_FILTERS is not None and c.FILTERS is not None:
        raise NASNetConfigError("MODEL.NASNET.PENULTIMATE_FILTERS and MODEL.NASNET.FILTERS are both set; set one")
    if int(c.DROP_PATH_TOTAL_STEPS) > 0:
        overrides["total_training_steps"] = int(c.DROP_PATH_TOTAL_STEPS)
    overrides.update(num_classes=0, use_aux_head=False)  # the box predictor replaces the classifier

    def spell(field: str) -> str:
        return "MODEL.NASNET.ARCH" if field == "arch" else f"MODEL.NASNET.{_FIELD_KEYS.get(field, field.upper())}"

    return resolve_network(c.ARCH, name=spell, **overrides)


def build_full_nasnet(cfg) -> nn.Module:
    """The whole network of MODEL.NASNET.*; errors name the offending config key."""
    if cfg.MODEL.NASNET.GENOTYPE is not None:  # first, so that its error names the key
        resolve_genotype_setting("MODEL.NASNET.GENOTYPE", cfg.MODEL.NASNET.GENOTYPE, error=NASNetConfigError)
    try:
        return NASNet(network_config(cfg))
    except NASNetConfigError:
        raise
    except ConfigError as err:
        raise NASNetConfigError(str(err)) from err


def split_index(cfg, net: nn.Module) -> int:
    """MODEL.NASNET.SPLIT_AT, or the position of the second body reduction cell (-1)."""
    split = int(cfg.MODEL.NASNET.SPLIT_AT)
    if split < 0:
        reductions = list(net.reduction_indices)
        if len(reductions) < 2:
            raise NASNetConfigError(
                f"MODEL.NASNET.SPLIT_AT=-1 needs two reduction cells; this network has {reductions}"
            )
        split = reductions[1]
    if not 2 <= split < len(net.cells):
        raise NASNetConfigError(
            f"MODEL.NASNET.SPLIT_AT={split} must lie in [2, {len(net.cells) - 1}] "
            f"(cells: {list(getattr(net, 'cell_names', range(len(net.cells))))})"
        )
    return split


def split_info(cfg, net: nn.Module, split: int) -> SplitInfo:
    """Stride and channels at the cut, read from the cells (``Cell.out_channels``, ``Cell.stride``).

    The first stage ends with (h_{i-1}, h_i) = outputs of cells[split-2] and cells[split-1]; they
    must share a resolution to be concatenated, i.e. cells[split-1] must not reduce.
    """
    cells = net.cells
    if cells[split - 1].stride != 1:
        raise NASNetConfigError(
            f"MODEL.NASNET.SPLIT_AT={split}: cell {split - 1} ({net.cell_names[split - 1]}) reduces, so the "
            "two hidden states at the cut differ in size; cut after a normal cell"
        )
    stem_stride = 2 if net.config.dataset == "imagenet" else 1  # conv0: 3x3 stride 2 VALID on ImageNet
    stride = stem_stride * 2 ** sum(1 for c in cells[:split] if c.stride == 2)
    return SplitInfo(
        split_at=split, stride=stride, prev_channels=int(cells[split - 2].out_channels),
        channels=int(cells[split - 1].out_channels), out_channels=int(cells[-1].out_channels),
    )


def _trim(net: nn.Module, keep_stem: bool, keep: range) -> nn.Module:
    """Replace the parts of ``net`` this stage does not run by parameter-free placeholders."""
    if not keep_stem:
        net.conv0 = nn.Identity()  # the stem convolution (``NASNet.stem`` runs it)
    for i in range(len(net.cells)):
        if i not in keep:
            net.cells[i] = nn.Identity()
    for attr in ("classifier", "aux_head"):
        if getattr(net, attr, None) is not None:
            setattr(net, attr, None)
    return net


def build_stage(cfg, stage: str) -> tuple[nn.Module, SplitInfo]:
    """The trimmed network for ``stage`` ("backbone" or "head") and the split information."""
    net = build_full_nasnet(cfg)
    split = split_index(cfg, net)
    info = split_info(cfg, net, split)
    if stage == "backbone":
        return _trim(net, True, range(0, split)), info
    if stage == "head":
        return _trim(net, False, range(split, len(net.cells))), info
    raise ValueError(f"stage must be 'backbone' or 'head', not {stage!r}")

"""Build the NASNet a detector config describes and cut it in two at the faster_rcnn_nas split.

The backbone (first stage) and the ROI head (second stage) each hold a *trimmed* copy of the same
network under the attribute name ``nasnet``: the backbone keeps the stem convolution ``conv0`` and
``cells[:split]``, the head keeps ``cells[split:]``; the other positions hold parameter-free ``nn.Identity`` placeholders.
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

from ..modeling import build_nasnet
from ..space import GenotypeError, resolve_genotype
from ..errors import ConfigError


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


def nasnet_build_kwargs(cfg) -> dict:
    """``build_nasnet`` keyword arguments from MODEL.NASNET.*."""
    c = cfg.MODEL.NASNET
    kwargs = dict(
        dataset="imagenet",
        num_cells=int(c.NUM_CELLS),
        num_classes=0,  # no classifier: the box predictor replaces it
        stem_multiplier=float(c.STEM_MULTIPLIER),
        skip_reduction_layer_input=int(c.SKIP_REDUCTION_LAYER_INPUT),
        drop_path_keep_prob=float(c.DROP_PATH_KEEP_PROB),
        use_aux_head=False,
    )
    if int(c.PENULTIMATE_FILTERS) > 0:
        kwargs["penultimate_filters"] = int(c.PENULTIMATE_FILTERS)
    elif int(c.FILTERS) > 0:
        kwargs["num_conv_filters"] = int(c.FILTERS)
    else:
        raise NASNetConfigError("MODEL.NASNET.PENULTIMATE_FILTERS and MODEL.NASNET.FILTERS are both 0; set one")
    if int(c.DROP_PATH_TOTAL_STEPS) > 0:
        kwargs["total_training_steps"] = int(c.DROP_PATH_TOTAL_STEPS)
    return kwargs


def build_full_nasnet(cfg) -> nn.Module:
    """The whole network of MODEL.NASNET.*; errors name the offending config key."""
    spec = cfg.MODEL.NASNET.GENOTYPE
    try:
        genotype = resolve_genotype(spec)
    except GenotypeError as err:
        raise NASNetConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: {err}") from err
    except OSError as err:
        raise NASNetConfigError(f"MODEL.NASNET.GENOTYPE={spec!r}: cannot read the genotype file: {err}") from err
    try:
        return build_nasnet(genotype, **nasnet_build_kwargs(cfg))
    except (GenotypeError, ValueError) as err:
        if isinstance(err, NASNetConfigError):
            raise
        raise NASNetConfigError(f"MODEL.NASNET (genotype {spec!r}): {err}") from err


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

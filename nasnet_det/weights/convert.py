"""Import published NASNet / PNASNet weights (timm, Cadene pretrained-models, TF-slim) into ours.

The contract of every converter: each SOURCE tensor is either used or listed as dropped with a
reason; each TARGET tensor is filled (``num_batches_tracked`` counters, which no source has, are
set to 0 and listed as defaulted); otherwise a WeightsError lists what is missing. The result is a
``(state_dict, ConversionReport)`` for our ``NASNet`` built with the matching config.

Naming (docs/spec.md §9): the PyTorch ports name cells ``cell_stem_0``, ``cell_k``,
``reduction_cell_r`` and ops ``comb_iter_k_{left,right}`` exactly like TF's scopes, and so do we,
inside ``cells.<position>``. The differences we translate:

==========================================  =============================================
port key                                    ours
==========================================  =============================================
``conv0.*`` / ``conv_0.*`` (pnasnet)        ``conv0.*``
``<cell>.path_1|path_2|final_path_bn``      ``cells.i.prev_reduction.*`` (FirstCell)
``<cell>.conv_prev_1x1.path_*`` (pnasnet)   ``cells.i.prev_reduction.*``
``<cell>.comb_iter_k_x.conv|bn`` on a pool  ``cells.i.comb_iter_k_x.proj.conv|bn``
``last_linear.*``                           ``classifier.*``
Cadene mobile ``cell_6..9``, ``cell_12..15``  TF ``cell_4..7``, ``cell_8..11``
==========================================  =============================================

The 1001-class TF checkpoints have class 0 = "background"; converting into a 1000-class model
drops that row (reported), converting into a 1001-class model keeps it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from ..space.ops import OpSpec, get_op
from .io import WeightsError


@dataclass
class ConversionReport:
    """What happened to every tensor (printed by tools/convert_weights.py, asserted by the tests)."""

    source: str
    used: dict[str, str] = field(default_factory=dict)        # source key -> target key
    dropped: dict[str, str] = field(default_factory=dict)     # source key -> reason
    defaulted: dict[str, str] = field(default_factory=dict)   # target key -> reason
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"source: {self.source}", f"used {len(self.used)} source tensors",
                 f"dropped {len(self.dropped)}", f"defaulted {len(self.defaulted)} target tensors"]
        reasons: dict[str, int] = {}
        for r in self.dropped.values():
            reasons[r] = reasons.get(r, 0) + 1
        lines += [f"  dropped ({n}): {r}" for r, n in sorted(reasons.items())]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fit_classifier(key: str, value: torch.Tensor, target: torch.Tensor, report: ConversionReport) -> torch.Tensor:
    """Handle the 1001-class (background = class 0) offset for the classifier and aux FC."""
    if value.shape == target.shape:
        return value
    if value.ndim >= 1 and value.shape[0] == target.shape[0] + 1 and value.shape[1:] == target.shape[1:]:
        report.notes.append(f"{key}: dropped row 0 (TF's background class) for a {target.shape[0]}-class model")
        return value[1:]
    raise WeightsError(f"{key}: source shape {tuple(value.shape)} does not fit target {tuple(target.shape)}")


def finalize(model: nn.Module, mapped: dict[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Check that every target tensor is filled with the right shape; default the BN counters."""
    target = model.state_dict()
    unexpected = [k for k in mapped if k not in target]
    if unexpected:
        raise WeightsError(f"{report.source}: {len(unexpected)} converted tensors have no place in the model "
                           f"(e.g. {unexpected[:3]}); the source is a different architecture")
    out: dict[str, torch.Tensor] = {}
    missing, wrong = [], []
    for key, ref in target.items():
        if key in mapped:
            value = mapped[key]
            if key.startswith(("classifier.", "aux_head.fc.")):
                value = _fit_classifier(key, value, ref, report)
            if tuple(value.shape) != tuple(ref.shape):
                wrong.append(f"{key}: source {tuple(value.shape)} vs model {tuple(ref.shape)}")
                continue
            out[key] = value.to(ref.dtype).contiguous()
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(ref)
            report.defaulted[key] = "BN update counter (no source has it); set to 0"
        else:
            missing.append(key)
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors not found in the source (e.g. {missing[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {wrong[:2]})")
        raise WeightsError(f"{report.source}: " + "; ".join(parts))
    return out


# ---------------------------------------------------------------------------------------------
# timm and Cadene (PyTorch ports)
# ---------------------------------------------------------------------------------------------
def cadene_cell_name(name: str, num_cells: int) -> str:
    """Cadene's numbering of normal cells: stage s, j-th cell -> ``cell_{6 s + j}`` (mobile has gaps)."""
    m = re.fullmatch(r"cell_(\d+)", name)
    if not m:
        return name
    k, per_stage = int(m.group(1)), max(1, num_cells // 3)
    return f"cell_{6 * (k // per_stage) + k % per_stage}"


def _port_key(key: str, cell_index: Mapping[str, int], target_keys: set[str]) -> str | None:
    head, _, rest = key.partition(".")
    if head in ("conv0", "conv_0"):
        return "conv0." + rest
    if head == "last_linear":
        return "classifier." + rest
    if head not in cell_index:
        return None
    prefix = f"cells.{cell_index[head]}."
    rest = re.sub(r"^(?:conv_prev_1x1\.)?(path_1|path_2|final_path_bn)\.", r"prev_reduction.\1.", rest)
    candidates = [rest]
    m = re.match(r"^(comb_iter_\d+_(?:left|right))\.(conv|bn)\.(.+)$", rest)
    if m:
        candidates.append(f"{m.group(1)}.proj.{m.group(2)}.{m.group(3)}")
    for cand in candidates:
        if prefix + cand in target_keys:
            return prefix + cand
    return prefix + candidates[0]


def convert_torch_port(state: Mapping[str, torch.Tensor], model: nn.Module, source: str,
                       cell_name_in_source: Callable[[str], str] = lambda n: n) -> tuple[dict, ConversionReport]:
    """timm / Cadene state dict -> ours. ``cell_name_in_source`` maps our TF cell names to theirs."""
    report = ConversionReport(source=source)
    target_keys = set(model.state_dict())
    cell_index = {cell_name_in_source(n): i for i, n in enumerate(model.cell_names)}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            report.dropped[key] = "not a tensor"
            continue
        new = _port_key(key, cell_index, target_keys)
        if new is None:
            raise WeightsError(f"{source}: tensor {key!r} belongs to no known module (cells {sorted(cell_index)[:4]}..., "
                               "conv0, last_linear); is this the right architecture?")
        mapped[new] = value
        report.used[key] = new
    return finalize(model, mapped, report), report


def convert_timm(state: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[dict, ConversionReport]:
    """timm ``nasnetalarge`` / ``pnasnet5large`` -> ours (the model: ``use_aux_head=False``)."""
    return convert_torch_port(state, model, "timm")


def convert_cadene(state: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[dict, ConversionReport]:
    """Cadene ``nasnetalarge`` / ``nasnetamobile`` -> ours (the model: ``use_aux_head=False``)."""
    n = model.config.num_cells
    return convert_torch_port(state, model, "cadene", lambda name: cadene_cell_name(name, n))


# ---------------------------------------------------------------------------------------------
# TF-slim checkpoints
# ---------------------------------------------------------------------------------------------
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _bn_names(scope: str, leaf: str) -> str:
    return f"{scope}/{_BN[leaf]}"


def tf_name(key: str, model: nn.Module, shape: tuple[int, ...]) -> tuple[list[str], str] | None:
    """Our key -> (candidate TF variable names, layout) or None for keys TF has no variable for.

    Layouts: ``conv`` HWIO, ``depthwise`` [k,k,C,1], ``fc`` [in,out], ``vector``.
    """
    parts = key.split(".")
    leaf = parts[-1]
    if leaf == "num_batches_tracked":
        return None
    if parts[0] == "conv0":
        return (["conv0/weights"], "conv") if parts[1] == "conv" else ([_bn_names("conv0_bn", leaf)], "vector")
    if parts[0] == "classifier":
        return ([f"final_layer/FC/{'weights' if leaf == 'weight' else 'biases'}"], "fc" if leaf == "weight" else "vector")
    if parts[0] == "aux_head":
        scope = f"aux_{model.cell_names[model.aux_index].split('_')[-1]}/aux_logits"
        mod = parts[1]
        if mod == "proj":
            return [f"{scope}/proj/weights"], "conv"
        if mod == "conv":
            return [f"{scope}/Conv/weights", f"{scope}/conv/weights"], "conv"
        if mod in ("bn0", "bn1"):
            return [_bn_names(f"{scope}/aux_bn{mod[-1]}", leaf)], "vector"
        if mod == "fc":
            return ([f"{scope}/FC/{'weights' if leaf == 'weight' else 'biases'}"], "fc" if leaf == "weight" else "vector")
    if parts[0] != "cells":
        raise WeightsError(f"no TF-slim name is known for {key!r}")
    cell = model.cell_names[int(parts[1])]
    rest = parts[2:]
    # cell base
    if rest[0] in ("conv_1x1", "conv_prev_1x1"):
        conv, bn = ("1x1", "beginning_bn") if rest[0] == "conv_1x1" else ("prev_1x1", "prev_bn")
        return ([f"{cell}/{conv}/weights"], "conv") if rest[1] == "conv" else ([_bn_names(f"{cell}/{bn}", leaf)], "vector")
    if rest[0] == "prev_reduction":
        return _factorized_names(f"{cell}", rest[1:], leaf)
    if rest[0] == "output_reductions":
        scope = f"{cell}/cell_output/reduction_{rest[1]}"
        if rest[2] in ("conv", "bn"):  # stride-1 fix-up: path_conv + path_bn
            return ([f"{scope}/path_conv/weights"], "conv") if rest[2] == "conv" else ([_bn_names(f"{scope}/path_bn", leaf)], "vector")
        return _factorized_names(scope, rest[2:], leaf)
    m = re.fullmatch(r"comb_iter_(\d+)_(left|right)", rest[0])
    if m:
        k, side = int(m.group(1)), m.group(2)
        op = get_op(model.cells[int(parts[1])].spec.blocks[k].ops[side == "right"])
        return _op_variable(f"{cell}/comb_iter_{k}/{side}", op, ".".join(rest[1:]), shape, key)
    raise WeightsError(f"no TF-slim name is known for {key!r}")


def _op_variable(scope: str, op: OpSpec, sub: str, shape: tuple[int, ...], key: str) -> tuple[list[str], str]:
    """The TF variable of parameter ``sub`` of op ``op``, from the op registry's ``tf_scopes``."""
    for ours, tf in op.tf_scopes:
        if not sub.startswith(ours + "."):
            continue
        leaf = sub[len(ours) + 1:]
        if leaf in ("depthwise_conv2d.weight", "pointwise_conv2d.weight"):  # slim.separable_conv2d
            part = leaf.split("_")[0]
            return [f"{scope}/{tf}/{part}_weights"], "depthwise" if part == "depthwise" else "conv"
        if leaf == "weight" and len(shape) == 4:
            return [f"{scope}/{tf}/weights"], "conv"
        if leaf in _BN:
            return [_bn_names(f"{scope}/{tf}", leaf)], "vector"
    if not op.tf_scopes:
        raise WeightsError(f"no TF-slim name is known for {key!r}: no TF-slim checkpoint holds op {op.name!r}")
    raise WeightsError(f"no TF-slim name is known for {key!r}")


def _factorized_names(scope: str, rest: list[str], leaf: str) -> tuple[list[str], str]:
    if rest[0] in ("path_1", "path_2"):
        return [f"{scope}/path{rest[0][-1]}_conv/weights"], "conv"
    return [_bn_names(f"{scope}/final_path_bn", leaf)], "vector"


# TF -> torch axis order of each weight layout: conv HWIO -> OIHW, depthwise HWCM -> CMHW (C*M = groups * 1).
_TF_TO_TORCH_AXES = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1), "fc": (1, 0)}


def tf_to_torch_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    axes = _TF_TO_TORCH_AXES.get(layout)
    return value if axes is None else value.permute(*axes)


def torch_to_tf_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of ``tf_to_torch_layout`` (used to write test checkpoints)."""
    axes = _TF_TO_TORCH_AXES.get(layout)
    return value if axes is None else value.permute(*sorted(range(len(axes)), key=axes.__getitem__))


EMA_SUFFIX = "/ExponentialMovingAverage"
_OPTIMIZER_SLOT = re.compile(r"/(RMSProp(_\d+)?|Momentum|Adam(_\d+)?)$")


def read_tf_checkpoint(path: str) -> dict[str, "object"]:
    """All variables of a TF checkpoint as numpy arrays (needs tensorflow)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise WeightsError("reading a TF-slim checkpoint needs TensorFlow: pip install tensorflow-cpu "
                           "(only for the conversion; the converted safetensors file does not need it)") from None
    try:
        reader = tf.train.load_checkpoint(path)
        names = reader.get_variable_to_shape_map()
        return {n: reader.get_tensor(n) for n in names}
    except Exception as err:  # noqa: BLE001 - NotFoundError, DataLossError...
        raise WeightsError(f"cannot read TF checkpoint {path!r} (give the prefix, e.g. .../model.ckpt, "
                           f"not the .index/.data file): {type(err).__name__}: {str(err).splitlines()[0]}") from None


def convert_tf(variables: Mapping[str, "object"], model: nn.Module, source: str = "tf-slim",
               prefer_ema: bool = True) -> tuple[dict, ConversionReport]:
    """TF-slim variables (name -> array) -> ours. ``/ExponentialMovingAverage`` values win when present."""
    report = ConversionReport(source=source)
    available = dict(variables)
    mapped: dict[str, torch.Tensor] = {}
    used_tf: set[str] = set()
    for key, ref in model.state_dict().items():
        spec = tf_name(key, model, tuple(ref.shape))
        if spec is None:
            continue
        names, layout = spec
        chosen = None
        for name in names:
            if prefer_ema and name + EMA_SUFFIX in available:
                chosen = name + EMA_SUFFIX
                break
            if name in available:
                chosen = name
                break
        if chosen is None:
            continue  # reported as missing by finalize()
        value = torch.as_tensor(available[chosen])
        mapped[key] = tf_to_torch_layout(value, layout)
        used_tf.add(chosen)
        report.used[chosen] = key
    for name in available:
        if name in used_tf:
            continue
        base = name[: -len(EMA_SUFFIX)] if name.endswith(EMA_SUFFIX) else name
        if base + EMA_SUFFIX in used_tf:
            report.dropped[name] = "raw value superseded by its ExponentialMovingAverage"
        elif name.endswith(EMA_SUFFIX) and base in used_tf:
            report.dropped[name] = "EMA value not used (prefer_ema=False)"
        elif name == "global_step" or name.endswith("/global_step"):
            report.dropped[name] = "training step counter"
        elif _OPTIMIZER_SLOT.search(base):
            report.dropped[name] = "optimizer slot"
        elif base.startswith("aux_") and model.aux_head is None:
            report.dropped[name] = "aux head (the model was built without one)"
        else:
            raise WeightsError(f"{source}: TF variable {name!r} maps to nothing in the model; is this the right "
                               "architecture (model name, num_cells, filters)?")
    return finalize(model, mapped, report), report


def export_tf_variables(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict under TF-slim names and layouts (tests write TF checkpoints with it)."""
    out = {}
    for key, value in model.state_dict().items():
        spec = tf_name(key, model, tuple(value.shape))
        if spec is None:
            continue
        names, layout = spec
        out[names[0]] = torch_to_tf_layout(value, layout).contiguous()
    return out

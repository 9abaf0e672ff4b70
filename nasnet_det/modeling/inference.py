"""A faster inference path for NASNet models that computes the same function as the plain one.

Why each piece (profiled on the Xeon/AMX CPU this project benchmarks on, see docs/benchmarks.md):

* **BN folding.** Every TF-slim conv here is followed by an eval-mode BatchNorm, i.e. a per-channel
  affine map. Folding it into the conv's weight and bias removes one full read+write of every
  activation (~10% of the plain forward). The BN modules become ``nn.Identity`` so module names
  (and therefore the converters' key mapping of the conv weights) are unchanged. Which conv feeds
  which BN is declared by each module class (``ops.ConvBNModule.conv_bn_pairs``); a BN no rule
  names is an error, never silently kept.
* **channels_last.** oneDNN's depthwise and 1x1 convolutions are 2-4x faster on NHWC tensors than
  on NCHW ones; NASNet is almost nothing but those two.
* **In-place work on fresh tensors** needs no option: ``Cell.forward`` does it whenever no gradient
  is recorded (``torch.no_grad`` / ``inference_mode``), for the plain model as well.
* **bf16** (optional, not bit-equal): ``torch.autocast`` to bfloat16; on CPUs with AMX / AVX512-BF16
  oneDNN runs the convolutions on the bf16 units. Outputs come back as float32. With
  ``compile="onednn"`` the fused traces run in bf16 too (the fastest bf16 path measured).
* **torch.compile** (optional, ``compile=True``): the whole forward goes through inductor
  (``nn.Module.compile``, so the model stays a ``NASNet``) with *freezing*: under ``inference_mode``
  / ``no_grad`` the weights become constants, so inductor folds them, pre-packs them into oneDNN's
  blocked layouts once instead of per call, and fuses the ReLU/add/concat glue between the
  convolutions into generated C++ loops, without a Python module call per op (that glue and those
  calls are about half of what separates the eager path from OpenVINO: docs/benchmarks.md, per-op
  profile). Compiling the Large model takes about 2 minutes on 2 cores; inductor keeps its FX
  graph and AOTAutograd caches on disk (``TORCHINDUCTOR_CACHE_DIR``, default
  ``/tmp/torchinductor_<user>``), so a second process with the same model, shapes, thread count and
  torch version skips inductor's code generation and C++ builds (about 20 s left, mostly Dynamo's
  trace). ``compile="cells"`` compiles each cell instead, which is what the detection stages need:
  they call ``stem`` and ``forward_cells`` slices, never ``forward``.

The optimized model is the same ``NASNet`` with flags set (``NASNet.set_inference_options``), so
``isinstance`` checks and ``state_dict`` keys stay the same (BN buffers excepted: folded BNs are
gone, so load weights *before* optimizing).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .graph_fusion import DEFAULT_BATCH_CHUNK, check_batch_chunk
from .network import NASNet
from .ops import ConvBNModule

__all__ = ["COMPILE_MODES", "fold_batchnorm", "optimize_for_inference", "optimize_detector_for_inference"]

#: ``optimize_for_inference(compile=...)``: False, True (= "model"), "model", "cells" or "onednn".
COMPILE_MODES = ("model", "cells", "onednn")
#: inductor options of the compiled path: weights as constants (needs no_grad / inference_mode at
#: call time, else inductor compiles without it), and the on-disk FX graph cache (on by default in
#: torch 2.x; set here so a user config that turned it off does not silently cost a minute per process).
COMPILE_OPTIONS = {"freezing": True, "fx_graph_cache": True}


def _is_batchnorm(module: nn.Module) -> bool:
    """nn.BatchNorm* or a look-alike with running statistics (detectron2's FrozenBatchNorm2d)."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or getattr(module, "running_var", None) is not None


def _foldable(bn: nn.Module) -> bool:
    """An eval-mode BN with running statistics is a per-channel affine map; batch-statistics BN, GN... are not."""
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return False
    return not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.track_running_stats


@torch.no_grad()
def _fold(owner: nn.Module, convs: tuple[str, ...], bn_name: str) -> bool:
    """Fold ``owner.<bn_name>`` into the convs feeding it (their outputs concatenated in order), in place."""
    bn = getattr(owner, bn_name)
    if not _foldable(bn):
        return False
    start = 0
    for path in convs:
        conv = owner.get_submodule(path)
        part = slice(start, start + conv.out_channels)
        start = part.stop

        def stat(t: torch.Tensor | None, part: slice = part) -> torch.Tensor | None:
            return None if t is None else t.detach()[part].double()  # float64 math, rounded once

        weight, bias = fuse_conv_bn_weights(
            conv.weight.detach().double(), None if conv.bias is None else conv.bias.detach().double(),
            stat(bn.running_mean), stat(bn.running_var), bn.eps, stat(getattr(bn, "weight", None)),
            stat(getattr(bn, "bias", None)))
        conv.weight.copy_(weight.to(conv.weight.dtype))
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    setattr(owner, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BN that directly follows a conv into that conv, in place; returns the count.

    The pairs are those the module classes declare (``ConvBNModule.conv_bn_pairs``): ReLUConvBN /
    ConvBN, both halves of a separable stack, the dilated separable conv, AmoebaNet's factorized
    1xK/Kx1 bottleneck, the aux head, and the factorized reduction, whose BN after the channel
    concat splits into the two path convs. A BN that is not foldable (no running statistics, or
    converted to GroupNorm) stays. Raises NotImplementedError for a module with a BN child that no
    rule covers: a module class that forgot to declare its pairs is a bug to fix, not to skip.
    """
    folded = 0
    for owner in list(model.modules()):
        rules = owner.conv_bn_pairs() if isinstance(owner, ConvBNModule) else ()
        covered = {bn for _, bn in rules}
        for name, child in owner.named_children():
            if _is_batchnorm(child) and name not in covered:
                raise NotImplementedError(
                    f"fold_batchnorm: {type(owner).__name__}.{name} is a BatchNorm that no fold rule names; "
                    "declare its conv in the module class (ConvBNModule.CONV_BN / conv_bn_pairs)")
        for convs, bn_name in rules:
            folded += _fold(owner, convs, bn_name)
    return folded


def optimize_for_inference(
    model: NASNet,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    bf16: bool = False,
    compile: bool | str = False,
    compile_options: dict[str, Any] | None = None,
    batch_chunk: int | None = DEFAULT_BATCH_CHUNK,
    inplace: bool = False,
) -> NASNet:
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace=True``) that runs faster.

    Args:
        fold_bn: fold each conv->BN pair (needs BN running statistics; see ``fold_batchnorm``).
        channels_last: store 4-D weights NHWC and feed NHWC inputs.
        bf16: run under ``torch.autocast(bfloat16)``; results differ at bf16 precision.
        compile: ``True`` or ``"model"``: compile ``model(x)`` with inductor and freezing (the first
            call compiles: about a minute for nasnet_a_large on 2 cores, less with a warm on-disk
            cache; needs a C++ compiler on CPU; one compilation per input shape and grad mode);
            ``"cells"``: compile each cell, for callers of ``stem`` / ``forward_cells``;
            ``"onednn"``: trace ``model(x)`` per input shape, freeze it and run it with oneDNN
            Graph fusion (``graph_fusion.py``; CPU, whole-model ``forward`` only; float32, or
            bf16 with ``bf16=True``; the first call of a shape traces, warms up and checks the
            fused graph, 5-10 s for nasnet_a_large): the fastest path on the CPUs measured
            (docs/benchmarks.md).
        compile_options: inductor options added to :data:`COMPILE_OPTIONS` (e.g.
            ``{"cpp_wrapper": True}``: measured 1.03x on nasnet_a_large at batch 1, for a cold
            compile of 6 minutes instead of 2; docs/benchmarks.md).
        batch_chunk: with ``compile="onednn"``, batches larger than this run in chunks of this many
            images (None: whole batches; ``graph_fusion.FusedGraphs``). The other paths take whole batches.
        inplace: modify ``model`` instead of a deep copy.

    The result is meant for inference only: folded BNs are not restored by ``.train()`` (train a
    plain model instead).
    """
    if not isinstance(model, NASNet):
        raise TypeError(f"model: expected a nasnet_det NASNet, got {type(model).__name__}")
    mode = "model" if compile is True else compile
    if mode and mode not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r}: expected False, True or one of {', '.join(COMPILE_MODES)}")
    if compile_options and mode not in ("model", "cells"):
        raise ValueError(f"compile_options={compile_options!r} without compile='model' or 'cells' (got "
                         f"compile={compile!r}): nothing would use these inductor options")
    check_batch_chunk(batch_chunk)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_bn:
        fold_batchnorm(model)
    model.set_inference_options(channels_last=channels_last, bf16=bf16, graph_fusion=mode == "onednn",
                                batch_chunk=batch_chunk)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    options = {**COMPILE_OPTIONS, **(compile_options or {})}
    if mode == "model":
        model.compile(backend="inductor", options=options)
    elif mode == "cells":
        _allow_recompiles(len(model.cells))
        for cell in model.cells:
            cell.compile(backend="inductor", options=options)
    return model


def _allow_recompiles(cells: int) -> None:
    """Let dynamo compile every cell. All cells run the one ``Cell.forward``, and dynamo counts
    compilations per code object (8 by default); past its limit it runs the remaining cells
    eagerly with only a log warning, which silently gave a 14-cell detector backbone almost no
    speed-up. The limit is process-wide, so it is only ever raised: one compilation per cell and
    grad mode, twice over for a second input shape, on top of what other networks already use."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(config, name, getattr(config, name) + 2 * cells)


def optimize_detector_for_inference(detector: nn.Module, **kwargs) -> nn.Module:
    """Apply ``optimize_for_inference`` in place to every NASNet inside a detector (backbone, ROI head).

    The detection stages call ``stem`` / ``forward_cells`` on their NASNet, which the optimized
    network keeps; detectron2's FrozenBatchNorm2d folds like an eval BatchNorm2d. For the same
    reason ``compile=True`` compiles per cell here (``"cells"``). Returns ``detector``.
    """
    kwargs["inplace"] = True
    if kwargs.get("compile") == "onednn":
        raise ValueError("compile='onednn' fuses whole-network forward calls, and a detector calls its NASNet in "
                         "stages (stem, forward_cells): use compile=True (each cell compiled by inductor)")
    if kwargs.get("compile") is True:
        kwargs["compile"] = "cells"
    nets = [m for m in detector.modules() if isinstance(m, NASNet)]
    for net in nets:
        optimize_for_inference(net, **kwargs)
    detector.eval()
    return detector

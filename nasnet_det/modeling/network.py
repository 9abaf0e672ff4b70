"""The NASNet network skeletons (CIFAR and ImageNet), the head and the auxiliary head.

One class covers NASNet-A, PNASNet-5 and AmoebaNet-A: they differ only in the genotype and in
``NASNetConfig`` (docs/spec.md §4 and §7). The cells sit in ONE ``nn.ModuleList`` in
forward order so the detection code can run any contiguous slice (``forward_cells``).

Options that change how (never what) the network computes are flags set by methods, not
subclasses: ``set_grad_checkpointing`` (training memory, ``modeling/memory.py``) and
``set_inference_options`` (input layout, bf16 autocast and oneDNN Graph fusion, ``modeling/inference.py``).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .cell import Cell
from .checkpoint import checkpointed, recording
from .config import NASNetConfig, calc_reduction_layers
from .graph_fusion import BF16_TOLERANCE, DEFAULT_BATCH_CHUNK, FP32_TOLERANCE, FusedGraphs
from .ops import ConvBN, ConvBNModule

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _as_float32(x: Any) -> Any:
    """Floating tensors (also inside tuples) back to float32, so callers see the plain model's dtypes."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    if isinstance(x, tuple):
        return tuple(_as_float32(v) for v in x)
    return x


def _entry_point(method: _Method) -> _Method:
    """Apply the inference options around a public entry (``stem``, ``forward_cells``, ...).

    Once per outermost call: ``forward`` calls ``stem`` and ``forward_cells``, and the guard keeps
    those nested calls from re-entering autocast and casting bf16 activations back to float32.
    With no option set this is one attribute test.
    """
    @functools.wraps(method)
    def entry(self: "NASNet", *args, **kwargs):
        if self._in_entry or not (self.channels_last_input or self.bf16_autocast):
            return method(self, *args, **kwargs)
        if self.channels_last_input:
            args = tuple(a.contiguous(memory_format=torch.channels_last)
                         if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)
        context = contextlib.nullcontext()
        if self.bf16_autocast and not self.training:
            context = torch.autocast(device_type=next(self.parameters()).device.type, dtype=torch.bfloat16)
        self._in_entry = True
        try:
            with context:
                return _as_float32(method(self, *args, **kwargs))
        finally:
            self._in_entry = False

    return entry  # type: ignore[return-value]


class AuxHead(ConvBNModule):
    """TF's auxiliary classifier (training only): ReLU -> avgpool 5/3 VALID -> 1x1 -> BN -> ReLU ->
    conv over the whole remaining map -> BN -> ReLU -> FC.

    TF sizes the second conv's kernel from the graph's static shape; here it is sized for
    ``config.image_size``. At other input sizes the pooled map is resampled to that kernel size
    (adaptive average pooling), which is a no-op at the design size.
    """

    CONV_BN = ((("proj",), "bn0"), (("conv",), "bn1"))

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int, norm, scaling: float = 1.0) -> None:
        super().__init__()
        proj, mid = int(128 * scaling), int(768 * scaling)
        self.kernel_size = kernel_size
        self.proj = nn.Conv2d(in_channels, proj, 1, bias=False)
        self.bn0 = norm(proj)
        self.conv = nn.Conv2d(proj, mid, kernel_size, bias=False)
        self.bn1 = norm(mid)
        self.fc = nn.Linear(mid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if x.shape[-2] >= 5 and x.shape[-1] >= 5:
            x = F.avg_pool2d(x, 5, 3)
        x = F.relu(self.bn0(self.proj(x)))
        if x.shape[-2] != self.kernel_size or x.shape[-1] != self.kernel_size:
            x = F.adaptive_avg_pool2d(x, self.kernel_size)
        x = F.relu(self.bn1(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


def _spatial_after(config: NASNetConfig, num_halvings: int) -> int:
    """Spatial size at ``config.image_size`` after the stem conv and ``num_halvings`` SAME stride-2 steps."""
    size = config.image_size
    if config.dataset == "imagenet":
        size = (size - 3) // 2 + 1  # conv0: 3x3 stride 2 VALID
    for _ in range(num_halvings):
        size = math.ceil(size / 2)
    return size


def init_module(m: nn.Module) -> None:
    """Initialize one module's own tensors as ``NASNet.reset_parameters`` does (also used by the
    search's shared weights, which materialize modules one at a time)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)):
        if getattr(m, "track_running_stats", False) and m.running_mean is not None:
            m.reset_running_stats()
        if m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class NASNet(nn.Module):
    """A NASNet-style classifier; see docs/DEVELOPING.md for the contract.

    Attributes: ``config``, ``conv0`` (stem conv + BN), ``cells``, ``cell_names``,
    ``reduction_indices``, ``aux_index`` (cell whose output feeds the aux head), ``aux_head``,
    ``classifier`` (None when ``num_classes == 0``), ``dropout``.

    Flags (class defaults, changed only through the setters below): ``grad_checkpointing`` (the
    stem conv is recomputed in backward), ``channels_last_input`` and ``bf16_autocast`` (what the
    public entry points do to their inputs and the autocast they run under), ``fused_graphs``
    (the fused traces ``forward`` dispatches to, or None).
    """

    grad_checkpointing: bool = False
    channels_last_input: bool = False
    bf16_autocast: bool = False
    fused_graphs: FusedGraphs | None = None
    _in_entry: bool = False

    def __init__(self, config: NASNetConfig) -> None:
        super().__init__()
        # per instance from the start: torch.compile guards on the instance dict, and a first call
        # that adds the key would force a recompilation on the second call
        self._in_entry = False
        self.config = config
        cfg = config
        genotype = cfg.genotype
        norm = functools.partial(nn.BatchNorm2d, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        imagenet = cfg.dataset == "imagenet"

        # Stem convolution.
        if imagenet:
            stem_channels = cfg.stem_filters or int(32 * cfg.stem_multiplier)
            # TF: 3x3 stride 2 VALID (the detection extractor keeps VALID too)
            self.conv0 = ConvBN(3, stem_channels, 3, 2, norm, padding="valid")
        else:
            stem_channels = cfg.stem_filters or int(cfg.num_conv_filters * cfg.stem_multiplier)
            self.conv0 = ConvBN(3, stem_channels, 3, 1, norm)

        self.cells = nn.ModuleList()
        self.cell_names: list[str] = []
        self.reduction_indices: list[int] = []
        self._skip_input: list[bool] = []  # cell takes the previous cell's h_{i-1} instead of its h_i
        plan: list[tuple[str, object, int, float, bool]] = []  # name, spec, stride, filter scaling, skip

        rate = cfg.filter_scaling_rate
        num_stem = cfg.num_stem_cells if imagenet else 0
        scaling = 1.0 / rate ** num_stem
        for s in range(num_stem):
            plan.append((f"cell_stem_{s}", genotype.reduce, 2, scaling, False))
            scaling *= rate
        red_layers = calc_reduction_layers(cfg.num_cells, cfg.num_reduction_layers)
        scaling = 1.0
        for k in range(cfg.num_cells):
            if cfg.reduction_style == "insert":
                skip_next = False
                if k in red_layers:
                    scaling *= rate
                    self.reduction_indices.append(len(plan))
                    plan.append((f"reduction_cell_{red_layers.index(k)}", genotype.reduce, 2, scaling, False))
                    skip_next = bool(cfg.skip_reduction_layer_input)
                plan.append((f"cell_{k}", genotype.normal, 1, scaling, skip_next))
            else:
                is_red = k in red_layers
                if is_red:
                    scaling *= rate
                    self.reduction_indices.append(len(plan))
                # TF pnasnet.py: with skip_reduction_layer_input=0 a strided cell reuses the stale prev_layer.
                skip = is_red and not cfg.skip_reduction_layer_input
                plan.append((f"cell_{k}", genotype.reduce if is_red else genotype.normal, 2 if is_red else 1,
                             scaling, skip))

        # Build the cells, tracking (channels, resolution level, producer) of h_{i-1} and h_i; the
        # producer is the index of the cell that computed the state, -1 for the stem convolution.
        total = len(plan)
        h_prev_state: tuple[int, int, int] | None = None
        h_state = (stem_channels, 0, -1)
        last_prev_in: tuple[int, int, int] | None = None
        self.stage_channels: list[int] = []
        #: per cell, the producers of the h_i and h_{i-1} it reads in a whole forward pass (None: no h_{i-1})
        self.cell_inputs: list[tuple[int, int | None]] = []
        for num, (name, spec, stride, scale, skip) in enumerate(plan):
            prev_state = last_prev_in if skip else h_prev_state
            if prev_state is not None and prev_state[1] not in (h_state[1], h_state[1] - 1):
                raise ValueError(f"{name}: h_i-1 is more than one reduction away from h_i")
            cell = Cell(
                spec,
                in_channels=h_state[0],
                prev_channels=None if prev_state is None else prev_state[0],
                filters=int(cfg.num_conv_filters * scale),
                stride=stride,
                norm=norm,
                prev_is_larger=prev_state is not None and prev_state[1] < h_state[1],
                cell_num=num,
                total_num_cells=total,
                drop_path_keep_prob=cfg.drop_path_keep_prob,
                drop_path_version=cfg.drop_path_version,
            )
            self.cells.append(cell)
            self.cell_names.append(name)
            self._skip_input.append(skip)
            self.cell_inputs.append((h_state[2], None if prev_state is None else prev_state[2]))
            last_prev_in = prev_state
            h_prev_state, h_state = h_state, (cell.out_channels, h_state[1] + (stride == 2), num)
        self.num_features = h_state[0]

        # Aux head: reads the cell just before the second body reduction (TF: reduction_indices[1] - 1).
        self.aux_index: int | None = None
        self.aux_head: AuxHead | None = None
        if cfg.use_aux_head and cfg.num_classes and len(self.reduction_indices) >= 2:
            self.aux_index = self.reduction_indices[1] - 1
            halvings = sum(1 for c in self.cells[: self.aux_index + 1] if c.stride == 2)
            size = _spatial_after(cfg, halvings)
            kernel = max((size - 5) // 3 + 1, 1) if size >= 5 else size
            self.aux_head = AuxHead(self.cells[self.aux_index].out_channels, cfg.num_classes, kernel, norm,
                                    cfg.aux_scaling)

        self.dropout = nn.Dropout(1.0 - cfg.dense_dropout_keep_prob)
        self.classifier = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes else None
        self.reset_parameters()

    # Initialization ------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """TF's ``variance_scaling_initializer(mode='FAN_OUT')`` (He, fan-out) for convs and FC; BN 1/0."""
        for m in self.modules():
            if getattr(m, "weight", None) is not None and m.weight.is_meta:
                continue  # nothing to initialize (shape analysis); random init on meta is slow Python
            init_module(m)

    # Options ---------------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the stem conv and every cell in backward instead of storing their activations.

        timm's name for the switch; see ``modeling/memory.py`` for why per cell, and
        ``enable_memory_saving`` for a subset of the cells.
        """
        self.grad_checkpointing = enable
        for cell in self.cells:
            if isinstance(cell, Cell):  # the detection stages hold nn.Identity placeholders
                cell.set_grad_checkpointing(enable)

    def set_inference_options(self, *, channels_last: bool = False, bf16: bool = False,
                              graph_fusion: bool = False, batch_chunk: int | None = DEFAULT_BATCH_CHUNK) -> None:
        """What the entry points do: feed NHWC inputs (in training too: the search's children and
        supernet use it), run eval calls under bf16 autocast (float32 out); ``graph_fusion``:
        ``forward`` runs eval CPU calls on float32 inputs without gradients through a traced,
        oneDNN-Graph-fused copy of itself (``graph_fusion.FusedGraphs``; in bf16 with ``bf16``),
        ``batch_chunk`` images at a time.

        ``optimize_for_inference`` sets these; the weights' layout is the caller's (``model.to(memory_format=...)``).
        """
        self.channels_last_input = channels_last
        self.bf16_autocast = bf16
        tolerance = BF16_TOLERANCE if bf16 else FP32_TOLERANCE  # what the fused trace is checked to
        self.fused_graphs = FusedGraphs(batch_chunk, tolerance=tolerance) if graph_fusion else None

    # Forward pieces --------------------------------------------------------------------------------
    @_entry_point
    def stem(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        """The stem convolution: ``(None, conv0_bn(conv0(x)))`` (no ReLU, as in TF).

        With gradient checkpointing its full-resolution conv output (kept for BN's backward, as big
        as a whole cell boundary) is recomputed; the BN output is the first cells' input and stays.
        """
        if self.grad_checkpointing and recording(self.conv0):
            return None, checkpointed(self.conv0, self.conv0, x)
        return None, self.conv0(x)

    @_entry_point
    def forward_cells(
        self, h_prev: torch.Tensor | None, h: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run ``cells[start:stop]`` with the two-input recurrence; returns the last ``(h_prev, h)``.

        A cell flagged by ``skip_reduction_layer_input`` takes as h_{i-1} the h_{i-1} that the cell
        before it received. When such a cell is the first of the slice, the ``h_prev`` given here
        is used as is (the caller passes the right state).
        """
        return self._run_cells(h_prev, h, start, stop)[:2]

    def _run_cells(self, h_prev, h, start, stop, last_prev_in=None, continuing=False):
        """The recurrence; also returns the h_{i-1} the last cell received, so a run can continue."""
        stop = len(self.cells) if stop is None else stop
        for i in range(start, stop):
            prev = last_prev_in if (self._skip_input[i] and (i > start or continuing)) else h_prev
            out = self.cells[i](h, prev)
            last_prev_in = prev
            h_prev, h = h, out
        return h_prev, h, last_prev_in

    @_entry_point
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's output (before the head's ReLU)."""
        h_prev, h = self.stem(x)
        return self.forward_cells(h_prev, h)[1]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """ReLU -> global average pool -> dropout -> FC (pooled features when there is no classifier)."""
        x = F.relu(features).mean(dim=(2, 3))
        if self.classifier is None:
            return x
        return self.classifier(self.dropout(x))

    @_entry_point
    def forward(self, x: torch.Tensor):
        """Logits; in training with the aux head, ``(logits, aux_logits)``."""
        if self.fused_graphs is not None and self.fused_graphs.applies(self, x):
            return self.fused_graphs(self, x)
        h_prev, h = self.stem(x)
        if self.training and self.aux_head is not None:
            h_prev, h, last_prev_in = self._run_cells(h_prev, h, 0, self.aux_index + 1)
            aux = self.aux_head(h)
            h = self._run_cells(h_prev, h, self.aux_index + 1, None, last_prev_in, continuing=True)[1]
            return self.forward_head(h), aux
        return self.forward_head(self.forward_cells(h_prev, h)[1])

    # Training schedule -----------------------------------------------------------------------------
    def set_drop_path_progress(self, t: float) -> None:
        """Set ScheduledDropPath's progress ``t = global_step / total_training_steps`` (clipped to [0, 1])."""
        t = min(1.0, max(0.0, float(t)))
        for cell in self.cells:
            cell.drop_path_progress = t

    def extra_repr(self) -> str:
        g = self.config.genotype.name or "custom"
        return f"genotype={g}, dataset={self.config.dataset}, cells={len(self.cells)}, features={self.num_features}"

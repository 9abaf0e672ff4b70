"""Shared weights for every architecture of the search space (ENAS, Pham et al. 2018).

Why there is no supernet network here: every architecture runs as the real
``nasnet_det.modeling.NASNet`` of its genotype (the one cell engine and the one op set), built once
on the meta device (no memory, about 40 ms) and called with ``torch.func.functional_call`` on
tensors taken from a shared bank. So a sub-network *is* a stand-alone network with the bank's
tensors in it, by construction, and nothing of the ops or of the cell wiring exists twice.

The sharing rule names each tensor by its role, as ENAS indexes its weights by node and op: the
same cell and module path, and for an op module the same block, side and op, whichever earlier
state it reads. A tensor is created (and initialized as ``NASNet`` initializes it) the first time
an architecture needs it, so the bank holds exactly the candidates the search has reached.

Widths are not part of the name. A state's width depends on earlier choices (a ``concat`` block is
2F wide), so one role is seen at several shapes. The bank keeps one tensor per role at the largest
shape seen so far, and an architecture uses its leading slice (Once-for-All slices channels the
same way).

A cell's output is the concat of its unused states, and which states those are changes with the
architecture. So the parameters that read a cell's output on their input dimension (the next
cells' input 1x1 convolutions and factorized reductions, the classifier) are stored with one slot
of 2F input channels per state of the producing cell, and an architecture gathers the slots of
the states it concatenates, in its order (ENAS gathers its output convolution the same way). A
weight then always meets the same state, whatever else is concatenated beside it. Two first
versions did not: keying by shape split those tensors into many rarely trained copies, and a
leading slice fed each weight whichever state happened to come first; with either, the
shared-weight accuracies of sampled architectures stayed at chance on CIFAR-10.

The classifier is the one reader that slot gathering does not make shareable. A cell's input
1x1 convolutions map the gathered states into F channels and normalize them (BN), so the next
cell sees one representation whatever was concatenated; NASNet's classifier instead reads the
pooled states directly, and each state is a different op's output in each architecture, so a
step that fits one architecture's logits makes the next one's confidently wrong (losses of 4-8,
far above chance, under uniform sampling). The search head (``head="projection"``, the default;
ENAS ends its cells the same way) is that fix-up for the classifier: the pooled slots are gathered
by one shared projection to ``head_width`` features, normalized with batch statistics, ReLU, and a
shared linear classifier. Only the supernet has it: the body of every sub-network is still the
stand-alone network's, and a stand-alone child trains its own NASNet classifier.
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nasnet_det.errors import StateError
from nasnet_det.modeling import NASNet
from nasnet_det.modeling.config import NASNetConfig
from nasnet_det.modeling.network import init_module
from nasnet_det.space import Genotype

_OP_MODULE = "comb_iter_"
HEADS = ("projection", "classifier")
_HEAD = "search_head"  # bank key prefix of the projection head's tensors
_HEAD_TENSORS = ("proj", "bn/weight", "bn/bias", "fc/weight", "fc/bias")
_HEAD_EPS = 1e-3  # the BN epsilon of the NASNet CIFAR children


class _Built(NamedTuple):
    """A genotype's meta-device network and how its tensors come from the bank."""

    child: NASNet
    params: list["_Use"]
    buffers: list["_Use"]
    head_slots: torch.Tensor | None  # projection head: its bank columns for the pooled features


class _Use(NamedTuple):
    """How one tensor of a sub-network is taken from the bank."""

    name: str  # in the sub-network
    key: str  # in the bank
    shape: torch.Size  # in the sub-network
    bank_shape: torch.Size  # the smallest bank entry that serves it
    slots: torch.Tensor | None  # bank channels of input dimension 1, in the sub-network's order; None: leading slice


def role_key(child: NASNet, name: str) -> str:
    """The bank key of ``child``'s tensor ``name``: its role in the space (module docstring)."""
    parts = name.split(".")
    if parts[0] == "cells" and parts[2].startswith(_OP_MODULE) and parts[2].endswith(("_left", "_right")):
        cell = child.cells[int(parts[1])]
        k_text, side = parts[2][len(_OP_MODULE):].rsplit("_", 1)
        block = cell.spec.blocks[int(k_text)]
        op = block.ops[0 if side == "left" else 1]
        return f"cells/{parts[1]}/b{k_text}{side[0]}/{op}/" + "/".join(parts[3:])
    return "/".join(parts)


def state_slots(cell: torch.nn.Module) -> tuple[int, torch.Tensor]:
    """The slot layout of ``cell``'s output: (bank channels, the bank channel of each output channel).

    Every state of the cell (its two inputs and its B blocks) owns 2F channels, the widest a state
    can be; a concatenated state of width w uses the first w of its slot.
    """
    slot = 2 * cell.filters
    width = cell.out_channels // len(cell.spec.concat)
    index = torch.cat([torch.arange(s * slot, s * slot + width) for s in cell.spec.concat])
    return slot * (2 + len(cell.spec.blocks)), index


def _cell_output_readers(child: NASNet) -> dict[str, int]:
    """Module path prefix -> index of the cell whose output those modules read on their input dimension."""
    readers: dict[str, int] = {}
    for j, (h_source, prev_source) in enumerate(child.cell_inputs):
        for prefix, source in ((f"cells.{j}.conv_1x1.", h_source), (f"cells.{j}.conv_prev_1x1.", prev_source),
                               (f"cells.{j}.prev_reduction.", prev_source)):
            if source is not None and source >= 0:
                readers[prefix] = source
    if child.classifier is not None and len(child.cells):
        readers["classifier."] = len(child.cells) - 1
    return readers


def _use(child: NASNet, name: str, shape: torch.Size, readers: dict[str, int], device: torch.device) -> _Use:
    key = role_key(child, name)
    source = next((c for prefix, c in readers.items() if name.startswith(prefix)), None)
    if source is None or len(shape) < 2:
        return _Use(name, key, shape, shape, None)
    width, slots = state_slots(child.cells[source])
    if shape[1] != len(slots):
        raise AssertionError(f"{name}: input width {shape[1]} is not cell {source}'s output width {len(slots)}")
    return _Use(name, key, shape, torch.Size((shape[0], width, *shape[2:])), slots.to(device))


def _take(t: torch.Tensor, use: _Use) -> torch.Tensor:
    """The sub-network's tensor from bank entry ``t``: a leading slice, or for a reader of a cell
    output the gather of its states' slots (gradients reach the bank either way)."""
    if use.slots is None:
        return _leading(t, use.shape)
    return _leading(t, use.bank_shape).index_select(1, use.slots)


def _leading(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``t``'s leading slice of ``shape`` (``t`` itself when the shapes agree): a view, so
    gradients and in-place statistics updates reach the bank."""
    if t.shape == shape:
        return t
    return t[tuple(slice(0, n) for n in shape)]


def _grown(old: torch.Tensor, fresh: torch.Tensor, seed: int) -> torch.Tensor:
    """A tensor of the elementwise larger shape of ``old`` and ``fresh``: ``old``'s (trained)
    values in its leading slice, ``fresh``'s initial values where only ``fresh`` reaches, and
    elsewhere (a corner neither covers) seeded draws with ``fresh``'s mean and spread."""
    shape = tuple(max(a, b) for a, b in zip(old.shape, fresh.shape))
    out = torch.empty(shape, dtype=old.dtype)
    if out.is_floating_point():
        gen = torch.Generator().manual_seed(seed)
        spread = float(fresh.float().std()) if fresh.numel() > 1 else 0.0
        out.normal_(float(fresh.float().mean()), spread, generator=gen)
    else:
        out.fill_(int(fresh.flatten()[0]))
    out[tuple(slice(0, n) for n in fresh.shape)] = fresh
    out[tuple(slice(0, n) for n in old.shape)] = old
    return out


def _role_seed(seed: int, role: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{role}".encode()).digest()[:8], "little") >> 1


class SharedWeights(nn.Module):
    """The bank of shared tensors and the sub-networks that run on it.

    Args:
        base: the child skeleton (``NASNetConfig``); each architecture replaces its genotype.
        cache_size: sub-networks (meta-device modules and their key lists) kept built.
        seed: a tensor's initial value is a function of this seed and its role key alone, so it
            does not depend on which architecture happened to need it first (exact resume).
        head: "projection" (the search head of the module docstring) or "classifier" (each
            sub-network's own NASNet classifier: the sub-network is then the whole stand-alone network).
        head_width: the projection head's features.
        channels_last: sub-networks take NHWC inputs (``NASNet.set_inference_options``); the bank
            stays NCHW, so saved banks do not depend on it.
        device: where the bank lives and the sub-networks run ("cpu", "cuda"). New and
            grown entries are initialized on the CPU (the same seeded values on every device) and
            then moved there; ``bank_state`` gives CPU tensors, so a saved bank does not depend on it.

    ``on_new_parameter(key, p)`` and ``on_grown_parameter(old, new)`` tell the optimizer about a
    parameter the bank created or replaced by a larger one (``old``'s values lead ``new``).
    """

    def __init__(self, base: NASNetConfig, cache_size: int = 512, seed: int = 0, channels_last: bool = False,
                 device: str | torch.device = "cpu", head: str = "projection", head_width: int = 64) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        self.base = base
        self.seed = seed
        self.channels_last = channels_last
        self.device = torch.device(device)
        self.head = head
        self.head_width = int(head_width)
        self.weights = nn.ParameterDict()  # role key (no dots) -> shared parameter
        self.stats = nn.Module()  # role key -> shared buffer (BN running statistics)
        self.cache_size = cache_size
        self._built: OrderedDict[tuple, tuple[NASNet, list[_Use], list[_Use]]] = OrderedDict()
        self.on_new_parameter: Callable[[str, nn.Parameter], None] | None = None
        self.on_grown_parameter: Callable[[nn.Parameter, nn.Parameter], None] | None = None

    # Building ----------------------------------------------------------------------------------
    def network(self, genotype: Genotype) -> _Built:
        """The meta-device network of ``genotype`` (without its classifier under the projection
        head) and its (name, key, shape) lists for parameters and buffers."""
        tag = (genotype.normal, genotype.reduce)  # the architecture, whatever its name
        hit = self._built.get(tag)
        if hit is not None:
            self._built.move_to_end(tag)
            return hit
        cfg = self.base.replace(genotype=genotype)
        with torch.device("meta"):
            child = NASNet(cfg.replace(num_classes=0) if self.head == "projection" else cfg)
        child.set_inference_options(channels_last=self.channels_last)
        readers = _cell_output_readers(child)
        params = [_use(child, n, p.shape, readers, self.device) for n, p in child.named_parameters()]
        buffers = [_use(child, n, b.shape, {}, self.device) for n, b in child.named_buffers()]
        slots = state_slots(child.cells[-1])[1].to(self.device) if self.head == "projection" else None
        self._built[tag] = _Built(child, params, buffers, slots)
        if len(self._built) > self.cache_size:
            self._built.popitem(last=False)
        return self._built[tag]

    @staticmethod
    def _covers(t: torch.Tensor | None, shape: torch.Size) -> bool:
        return t is not None and t.dim() == len(shape) and all(a >= b for a, b in zip(t.shape, shape))

    def _entries_needed(self, genotype: Genotype) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The parameters and buffers, by key, that the bank lacks or holds too small for
        ``genotype``: new ones initialized as NASNet does (seeded by role), grown ones with the
        bank's values leading. Nothing is changed; ``tensors`` decides whether to keep them."""
        child, params, buffers, _ = self.network(genotype)
        weights, stats = dict(self.weights.items()), dict(self.stats.named_buffers())
        missing = {u.name.rsplit(".", 1)[0] for u in params if not self._covers(weights.get(u.key), u.bank_shape)}
        missing |= {u.name.rsplit(".", 1)[0] for u in buffers if not self._covers(stats.get(u.key), u.bank_shape)}
        gathered = {u.name: u.bank_shape for u in params if u.slots is not None}
        new_weights: dict[str, torch.Tensor] = {}
        new_stats: dict[str, torch.Tensor] = {}
        for path in sorted(missing):
            module = copy.deepcopy(child.get_submodule(path)).to_empty(device="cpu", recurse=False)
            for name, _ in list(module.named_parameters(recurse=False)):
                if f"{path}.{name}" in gathered:  # created at its slot layout (init depends on the output side only)
                    setattr(module, name, nn.Parameter(torch.empty(gathered[f"{path}.{name}"])))
            role = role_key(child, f"{path}.{next(iter(module.state_dict()))}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_role_seed(self.seed, role))
                init_module(module)
            for table, new, own in ((weights, new_weights, module.named_parameters(recurse=False)),
                                    (stats, new_stats, module.named_buffers(recurse=False))):
                for name, fresh in own:
                    key = role_key(child, f"{path}.{name}")
                    old = table.get(key)
                    if old is None:
                        new[key] = fresh.detach().to(self.device, copy=True)
                    elif not self._covers(old, fresh.shape):
                        grown = _grown(old.detach().cpu(), fresh.detach(), _role_seed(self.seed, key))
                        new[key] = grown.to(self.device)
        if self.head == "projection" and f"{_HEAD}/proj" not in weights:
            new_weights.update(self._new_head(state_slots(child.cells[-1])[0]))
        return new_weights, new_stats

    def _new_head(self, slot_width: int) -> dict[str, torch.Tensor]:
        """The projection head's initial tensors, seeded by role as every bank entry: the projection
        as NASNet initializes a 1x1 convolution (He, fan-out), the classifier small (std 0.01), so
        that the first logits are near zero and the first losses near chance."""
        classes = self.base.num_classes
        gen = torch.Generator().manual_seed(_role_seed(self.seed, _HEAD))
        p = self.head_width
        head = dict(zip(_HEAD_TENSORS, (torch.randn(p, slot_width, generator=gen) * (2.0 / p) ** 0.5,
                                        torch.ones(p), torch.zeros(p),
                                        torch.randn(classes, p, generator=gen) * 0.01, torch.zeros(classes))))
        return {f"{_HEAD}/{k}": v.to(self.device) for k, v in head.items()}

    def _keep(self, new_weights: dict[str, torch.Tensor], new_stats: dict[str, torch.Tensor]) -> None:
        """Store entries from ``_entries_needed`` and tell the optimizer."""
        for key, value in new_weights.items():
            old = self.weights[key] if key in self.weights else None
            self.weights[key] = nn.Parameter(value)
            if old is None and self.on_new_parameter is not None:
                self.on_new_parameter(key, self.weights[key])
            elif old is not None and self.on_grown_parameter is not None:
                self.on_grown_parameter(old, self.weights[key])
        for key, value in new_stats.items():
            if hasattr(self.stats, key):
                setattr(self.stats, key, value)
            else:
                self.stats.register_buffer(key, value)

    # Running -----------------------------------------------------------------------------------
    def keys(self, genotype: Genotype) -> dict[str, str]:
        """Name -> bank key of every parameter and buffer of ``genotype``'s network."""
        built = self.network(genotype)
        return {u.name: u.key for u in built.params + built.buffers}

    def tensors(self, genotype: Genotype, read_only: bool = False) -> dict[str, torch.Tensor]:
        """Name -> shared tensor (the leading slice of its bank entry) for ``genotype``'s network.

        ``read_only`` leaves the bank exactly as it was: entries it lacks are lent, not kept, and
        the running statistics are copies. Only training changes the bank, so the bank after an
        epoch does not depend on which proposals were scored before it (exact resume).
        """
        return self._tensors(genotype, read_only)[0]

    def _tensors(self, genotype: Genotype, read_only: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``tensors`` and the projection head's (by bank key; empty for the classifier head)."""
        built = self.network(genotype)
        new_weights, new_stats = self._entries_needed(genotype)
        if not read_only:
            self._keep(new_weights, new_stats)
            new_weights, new_stats = {}, {}

        def weight(key: str) -> torch.Tensor:
            return new_weights[key] if key in new_weights else self.weights[key]

        out = {u.name: _take(weight(u.key), u) for u in built.params}
        for u in built.buffers:
            b = _take(new_stats[u.key] if u.key in new_stats else getattr(self.stats, u.key), u)
            out[u.name] = b.clone() if read_only else b
        head = {} if built.head_slots is None else {k: weight(f"{_HEAD}/{k}") for k in _HEAD_TENSORS}
        return out, head

    def forward(self, x: torch.Tensor, genotype: Genotype, train: bool = True,
                read_only: bool = False) -> torch.Tensor:
        """Logits of ``genotype``'s sub-network on the shared tensors.

        ``train``: batch statistics in the norms (ENAS's setting for both steps: one set of running
        statistics cannot fit every architecture); ``read_only`` (the reward step): see ``tensors``.
        """
        built = self.network(genotype)
        built.child.train(train)
        body, head = self._tensors(genotype, read_only)
        out = torch.func.functional_call(built.child, body, (x,))
        out = out[0] if isinstance(out, (tuple, list)) else out
        if built.head_slots is None:
            return out
        # out: the pooled features (ReLU, global average pool) of the last cell's concatenated states
        z = F.linear(out, head["proj"].index_select(1, built.head_slots))
        z = F.batch_norm(z, None, None, head["bn/weight"], head["bn/bias"], training=True, eps=_HEAD_EPS)
        return F.linear(F.relu(z), head["fc/weight"], head["fc/bias"])

    def state_dict_for(self, genotype: Genotype) -> dict[str, torch.Tensor]:
        """The stand-alone state dict of ``genotype``'s network (copies): loads into
        ``NASNet(base.replace(genotype=genotype))`` with ``strict=True``; under the projection
        head the body's only (``num_classes=0``: the search head is not a NASNet classifier)."""
        return {n: t.detach().clone() for n, t in self.tensors(genotype).items()}

    def num_parameters(self, genotype: Genotype) -> int:
        """Parameters of the stand-alone network of ``genotype`` (with its NASNet classifier)."""
        child = self.network(genotype).child
        own = sum(p.numel() for p in child.parameters())
        if child.classifier is None and self.base.num_classes:
            own += (child.num_features + 1) * self.base.num_classes
        return own

    # Saving ------------------------------------------------------------------------------------
    def bank_state(self) -> dict[str, Any]:
        """The bank as plain data (``state.save_state`` writes it): keys in creation order."""
        return {"weights": {k: p.detach().cpu() for k, p in self.weights.items()},
                "stats": {k: b.cpu() for k, b in self.stats.named_buffers()},
                "order": list(self.weights.keys()), "head": self.head}

    def load_bank_state(self, state: dict[str, Any]) -> None:
        """Recreate the bank saved by ``bank_state`` (parameters in their creation order, so an
        optimizer rebuilt over them lines up with its saved state). A bank trained under another
        head is refused (its classifier tensors were never trained, or are missing)."""
        saved = state.get("head", "classifier")  # banks saved before the projection head had none
        if saved != self.head:
            raise StateError(f"these shared weights were trained with weight_sharing.head {saved!r}, "
                             f"not {self.head!r}; use weight_sharing.head {saved}")
        self.weights = nn.ParameterDict()
        self.stats = nn.Module()
        self._built.clear()
        for key in state["order"]:
            self.weights[key] = nn.Parameter(state["weights"][key].to(self.device, copy=True))
        for key, b in state["stats"].items():
            self.stats.register_buffer(key, b.to(self.device, copy=True))

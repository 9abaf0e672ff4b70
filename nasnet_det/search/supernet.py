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
2F wide, a cell's output is as wide as its unused states, and so are the next cell's input
convolutions and the classifier), so one role is seen at several shapes. The bank keeps one tensor
per role at the largest shape seen so far, and an architecture uses its leading slice (ENAS slices
its output convolution by the used states; Once-for-All slices channels the same way). Keying by
shape instead splits the classifier and every cell input into several rarely trained copies: a
first version did, and its shared-weight accuracies stayed at chance.
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn

from nasnet_det.modeling import NASNet
from nasnet_det.modeling.config import NASNetConfig
from nasnet_det.modeling.network import init_module
from nasnet_det.space import Genotype

_OP_MODULE = "comb_iter_"
_Use = tuple[str, str, torch.Size]  # (name in the network, bank key, shape there)


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

    ``on_new_parameter(key, p)`` and ``on_grown_parameter(old, new)`` tell the optimizer about a
    parameter the bank created or replaced by a larger one (``old``'s values lead ``new``).
    """

    def __init__(self, base: NASNetConfig, cache_size: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.seed = seed
        self.weights = nn.ParameterDict()  # role key (no dots) -> shared parameter
        self.stats = nn.Module()  # role key -> shared buffer (BN running statistics)
        self.cache_size = cache_size
        self._built: OrderedDict[tuple, tuple[NASNet, list[_Use], list[_Use]]] = OrderedDict()
        self.on_new_parameter: Callable[[str, nn.Parameter], None] | None = None
        self.on_grown_parameter: Callable[[nn.Parameter, nn.Parameter], None] | None = None

    # Building ----------------------------------------------------------------------------------
    def network(self, genotype: Genotype) -> tuple[NASNet, list[_Use], list[_Use]]:
        """The meta-device network of ``genotype`` and its (name, key, shape) lists for
        parameters and buffers."""
        tag = (genotype.normal, genotype.reduce)  # the architecture, whatever its name
        hit = self._built.get(tag)
        if hit is not None:
            self._built.move_to_end(tag)
            return hit
        with torch.device("meta"):
            child = NASNet(self.base.replace(genotype=genotype))
        params = [(n, role_key(child, n), p.shape) for n, p in child.named_parameters()]
        buffers = [(n, role_key(child, n), b.shape) for n, b in child.named_buffers()]
        self._built[tag] = (child, params, buffers)
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
        child, params, buffers = self.network(genotype)
        weights, stats = dict(self.weights.items()), dict(self.stats.named_buffers())
        missing = {n.rsplit(".", 1)[0] for n, k, shape in params if not self._covers(weights.get(k), shape)}
        missing |= {n.rsplit(".", 1)[0] for n, k, shape in buffers if not self._covers(stats.get(k), shape)}
        new_weights: dict[str, torch.Tensor] = {}
        new_stats: dict[str, torch.Tensor] = {}
        for path in sorted(missing):
            module = copy.deepcopy(child.get_submodule(path)).to_empty(device="cpu", recurse=False)
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
                        new[key] = fresh.detach().clone()
                    elif not self._covers(old, fresh.shape):
                        new[key] = _grown(old.detach(), fresh.detach(), _role_seed(self.seed, key))
        return new_weights, new_stats

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
        _child, params, buffers = self.network(genotype)
        return {n: k for n, k, _ in params + buffers}

    def tensors(self, genotype: Genotype, read_only: bool = False) -> dict[str, torch.Tensor]:
        """Name -> shared tensor (the leading slice of its bank entry) for ``genotype``'s network.

        ``read_only`` leaves the bank exactly as it was: entries it lacks are lent, not kept, and
        the running statistics are copies. Only training changes the bank, so the bank after an
        epoch does not depend on which proposals were scored before it (exact resume).
        """
        _child, params, buffers = self.network(genotype)
        new_weights, new_stats = self._entries_needed(genotype)
        if not read_only:
            self._keep(new_weights, new_stats)
            new_weights, new_stats = {}, {}
        out = {n: _leading(new_weights[k] if k in new_weights else self.weights[k], shape) for n, k, shape in params}
        for n, k, shape in buffers:
            b = _leading(new_stats[k] if k in new_stats else getattr(self.stats, k), shape)
            out[n] = b.clone() if read_only else b
        return out

    def forward(self, x: torch.Tensor, genotype: Genotype, train: bool = True,
                read_only: bool = False) -> torch.Tensor:
        """Logits of ``genotype``'s sub-network on the shared tensors.

        ``train``: batch statistics in the norms (ENAS's setting for both steps: one set of running
        statistics cannot fit every architecture); ``read_only`` (the reward step): see ``tensors``.
        """
        child, _, _ = self.network(genotype)
        child.train(train)
        out = torch.func.functional_call(child, self.tensors(genotype, read_only), (x,))
        return out[0] if isinstance(out, (tuple, list)) else out

    def state_dict_for(self, genotype: Genotype) -> dict[str, torch.Tensor]:
        """The stand-alone state dict of ``genotype``'s network (copies): loads into
        ``NASNet(base.replace(genotype=genotype))`` with ``strict=True``."""
        return {n: t.detach().clone() for n, t in self.tensors(genotype).items()}

    def num_parameters(self, genotype: Genotype) -> int:
        """Parameters of the stand-alone network of ``genotype``."""
        child, _, _ = self.network(genotype)
        return sum(p.numel() for p in child.parameters())

    # Saving ------------------------------------------------------------------------------------
    def bank_state(self) -> dict[str, Any]:
        """The bank as plain data (``state.save_state`` writes it): keys in creation order."""
        return {"weights": {k: p.detach() for k, p in self.weights.items()},
                "stats": {k: b for k, b in self.stats.named_buffers()},
                "order": list(self.weights.keys())}

    def load_bank_state(self, state: dict[str, Any]) -> None:
        """Recreate the bank saved by ``bank_state`` (parameters in their creation order, so an
        optimizer rebuilt over them lines up with its saved state)."""
        self.weights = nn.ParameterDict()
        self.stats = nn.Module()
        self._built.clear()
        for key in state["order"]:
            self.weights[key] = nn.Parameter(state["weights"][key].clone())
        for key, b in state["stats"].items():
            self.stats.register_buffer(key, b.clone())

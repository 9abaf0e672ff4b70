"""Shared weights for every architecture of the search space (ENAS, Pham et al. 2018).

Why there is no supernet network here: every architecture runs as the real
``nasnet_det.modeling.NASNet`` of its genotype (the one cell engine and the one op set), built once
on the meta device (no memory, about 40 ms) and called with ``torch.func.functional_call`` on
tensors taken from a shared bank. So a sub-network *is* a stand-alone network with the bank's
tensors in it, by construction, and nothing of the ops or of the cell wiring exists twice.

The sharing rule names each tensor by its role, as ENAS indexes its weights by node, op and
input: the same cell, the same module path, and for an op module the same block, side, op and
input state, with the same shape. A tensor is created (and initialized as ``NASNet`` initializes
it) the first time an architecture needs it, so the bank holds exactly the candidates the search
has reached. Shapes are part of the name because a state's width depends on earlier choices (a
``concat`` block is 2F wide, a cell's output is as wide as its unused states); a module seen at
another width is another candidate.
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from nasnet_det.modeling import NASNet
from nasnet_det.modeling.config import NASNetConfig
from nasnet_det.modeling.network import init_module
from nasnet_det.space import Genotype

_OP_MODULE = "comb_iter_"


def role_key(child: NASNet, name: str, shape: torch.Size) -> str:
    """The bank key of ``child``'s tensor ``name``: its role in the space (module docstring)."""
    parts = name.split(".")
    shape_tag = "x".join(str(s) for s in shape) or "scalar"
    if parts[0] == "cells" and parts[2].startswith(_OP_MODULE) and parts[2].endswith(("_left", "_right")):
        cell = child.cells[int(parts[1])]
        k_text, side = parts[2][len(_OP_MODULE):].rsplit("_", 1)
        block = cell.spec.blocks[int(k_text)]
        j = 0 if side == "left" else 1
        role = f"cells/{parts[1]}/b{k_text}{side[0]}/{block.ops[j]}/in{block.inputs[j]}/" + "/".join(parts[3:])
    else:
        role = "/".join(parts)
    return f"{role}@{shape_tag}"


def _role_seed(seed: int, role: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{role}".encode()).digest()[:8], "little") >> 1


class SharedWeights(nn.Module):
    """The bank of shared tensors and the sub-networks that run on it.

    Args:
        base: the child skeleton (``NASNetConfig``); each architecture replaces its genotype.
        cache_size: sub-networks (meta-device modules and their key lists) kept built.
        seed: a tensor's initial value is a function of this seed and its role key alone, so it
            does not depend on which architecture happened to need it first (exact resume).
    """

    def __init__(self, base: NASNetConfig, cache_size: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.seed = seed
        self.weights = nn.ParameterDict()  # role key (no dots) -> shared parameter
        self.stats = nn.Module()  # role key -> shared buffer (BN running statistics)
        self.cache_size = cache_size
        self._built: OrderedDict[tuple, tuple[NASNet, list[tuple[str, str]], list[tuple[str, str]]]] = OrderedDict()
        self.on_new_parameter = None  # called with each new parameter (the optimizer adds it)

    # Building ----------------------------------------------------------------------------------
    def network(self, genotype: Genotype) -> tuple[NASNet, list[tuple[str, str]], list[tuple[str, str]]]:
        """The meta-device network of ``genotype`` and its (name, key) lists for parameters and buffers."""
        tag = (genotype.normal, genotype.reduce)  # the architecture, whatever its name
        hit = self._built.get(tag)
        if hit is not None:
            self._built.move_to_end(tag)
            return hit
        with torch.device("meta"):
            child = NASNet(self.base.replace(genotype=genotype))
        params = [(n, role_key(child, n, p.shape)) for n, p in child.named_parameters()]
        buffers = [(n, role_key(child, n, b.shape)) for n, b in child.named_buffers()]
        self._materialize(child, params, buffers)
        self._built[tag] = (child, params, buffers)
        if len(self._built) > self.cache_size:
            self._built.popitem(last=False)
        return self._built[tag]

    def _materialize(self, child: NASNet, params: list[tuple[str, str]], buffers: list[tuple[str, str]]) -> None:
        """Create the bank entries this network needs and the bank lacks, initialized as NASNet does."""
        missing = {n.rsplit(".", 1)[0] for n, k in params if k not in self.weights}
        missing |= {n.rsplit(".", 1)[0] for n, k in buffers if not hasattr(self.stats, k)}
        for path in sorted(missing):
            module = copy.deepcopy(child.get_submodule(path)).to_empty(device="cpu", recurse=False)
            own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            role = role_key(child, f"{path}.{own[0][0]}", own[0][1].shape)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_role_seed(self.seed, role))
                init_module(module)
            for pname, p in module.named_parameters(recurse=False):
                key = role_key(child, f"{path}.{pname}", p.shape)
                if key not in self.weights:
                    self.weights[key] = nn.Parameter(p.detach().clone())
                    if self.on_new_parameter is not None:
                        self.on_new_parameter(key, self.weights[key])
            for bname, b in module.named_buffers(recurse=False):
                key = role_key(child, f"{path}.{bname}", b.shape)
                if not hasattr(self.stats, key):
                    self.stats.register_buffer(key, b.detach().clone())

    # Running -----------------------------------------------------------------------------------
    def tensors(self, genotype: Genotype, fresh_stats: bool = False) -> dict[str, torch.Tensor]:
        """Name -> shared tensor for ``genotype``'s network; ``fresh_stats`` gives copies of the
        running statistics, so a forward in training mode leaves the bank's untouched."""
        _child, params, buffers = self.network(genotype)
        out = {n: self.weights[k] for n, k in params}
        for n, k in buffers:
            b = getattr(self.stats, k)
            out[n] = b.clone() if fresh_stats else b
        return out

    def forward(self, x: torch.Tensor, genotype: Genotype, train: bool = True,
                fresh_stats: bool = False) -> torch.Tensor:
        """Logits of ``genotype``'s sub-network on the shared tensors.

        ``train``: batch statistics in the norms (ENAS's setting for both steps: one set of running
        statistics cannot fit every architecture); with ``fresh_stats`` the bank's running
        statistics are not updated (the reward step).
        """
        child, _, _ = self.network(genotype)
        child.train(train)
        out = torch.func.functional_call(child, self.tensors(genotype, fresh_stats), (x,))
        return out[0] if isinstance(out, (tuple, list)) else out

    def state_dict_for(self, genotype: Genotype) -> dict[str, torch.Tensor]:
        """The stand-alone state dict of ``genotype``'s network (copies): loads into
        ``NASNet(base.replace(genotype=genotype))`` with ``strict=True``."""
        return {n: t.detach().clone() for n, t in self.tensors(genotype).items()}

    def num_parameters(self, genotype: Genotype) -> int:
        """Parameters of the stand-alone network of ``genotype``."""
        child, params, _ = self.network(genotype)
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

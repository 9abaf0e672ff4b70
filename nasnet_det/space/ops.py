"""The op registry: every cell operation declared once, as data (standard library only).

Why one registry: an op is known to five consumers (the genotype validator and search space, the
cell engine, the BN folding of the inference path, the cell diagrams, and the TF-slim weight
converter). Each reads the entry below instead of keeping its own list of names, so adding an op
is one ``OpSpec`` here, plus a module class in ``nasnet_det.modeling.ops`` only when its ``kind``
is new (see docs/DEVELOPING.md).

This layer must not import torch (``tools/draw_cell.py`` writing a .dot file stays torch-free), so
an entry holds only data: ``kind`` names the module family ``nasnet_det.modeling.ops`` builds and
``params`` its constructor arguments. The module class of a kind declares its own conv->BN pairs
for folding.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GenotypeError


@dataclass(frozen=True)
class OpSpec:
    """One operation of the cell vocabulary.

    Attributes:
        name: the op's name in genotypes and configs (``"sep_conv_3x3"``).
        kind: the module family that builds it (``nasnet_det.modeling.ops.build_op`` has one builder
            per kind); ``params`` are that builder's keyword arguments besides the widths and stride.
        label: the short label of the cell diagrams, in the paper's wording.
        family: the diagram colour family (``space.diagram.COLORS``).
        tf_name: the op's token in TF-slim's ``operations`` lists (``nasnet.py`` / ``pnasnet.py``),
            used to transcribe the published genotypes. Ops TF-slim never wrote get a token in the
            same style.
        tf_scopes: the TF-slim variable scope of each of the op module's parts, as (our submodule
            path, TF scope) pairs, for the weight converter. Empty: no TF-slim checkpoint holds
            this op, and converting one is an error that says so.
    """

    name: str
    kind: str
    label: str
    family: str
    tf_name: str
    params: tuple[tuple[str, int | str], ...] = ()
    tf_scopes: tuple[tuple[str, str], ...] = ()

    @property
    def kwargs(self) -> dict[str, int | str]:
        """``params`` as keyword arguments for the kind's builder."""
        return dict(self.params)


#: TF-slim's names for the projection a pool or a non-trivial identity applies (nasnet_utils ``1x1`` / ``bn_1``).
_PROJECTION_SCOPES = (("conv", "1x1"), ("bn", "bn_1"))


def _sep_conv(k: int) -> OpSpec:
    """``separable_KxK_2``: TF names each of the two layers' conv and BN after the kernel and layer number."""
    scopes = tuple(pair for j in (1, 2) for pair in ((f"separable_{j}", f"separable_{k}x{k}_{j}"),
                                                      (f"bn_sep_{j}", f"bn_sep_{k}x{k}_{j}")))
    return OpSpec(f"sep_conv_{k}x{k}", "sep_conv", f"sep {k}x{k}", "separable", f"separable_{k}x{k}_2",
                  (("kernel_size", k),), scopes)


def _pool(pool: str, k: int) -> OpSpec:
    return OpSpec(f"{pool}_pool_{k}x{k}", "pool", f"{pool} {k}x{k}", f"{pool}_pool", f"{pool}_pool_{k}x{k}",
                  (("pool", pool), ("kernel_size", k)), tuple((f"proj.{ours}", tf) for ours, tf in _PROJECTION_SCOPES))


#: Every op this project can build (today exactly the paper's list, section 3, in its order).
OP_REGISTRY: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("identity", "identity", "identity", "identity", "none", tf_scopes=_PROJECTION_SCOPES),
    OpSpec("conv_1x7_7x1", "factorized_conv", "1x7 then 7x1", "conv", "1x7_7x1", (("kernel_size", 7),)),
    _pool("avg", 3),
    _pool("max", 5),
    _pool("max", 3),
    _pool("max", 7),
    OpSpec("conv_1x1", "conv", "conv 1x1", "conv", "1x1", (("kernel_size", 1),), _PROJECTION_SCOPES),
    _sep_conv(3),
    _sep_conv(5),
    _sep_conv(7),
    OpSpec("conv_1x3_3x1", "factorized_conv", "1x3 then 3x1", "conv", "1x3_3x1", (("kernel_size", 3),)),
    OpSpec("dil_conv_3x3", "dil_conv", "dil 3x3", "dilated", "dil_conv_3x3", (("kernel_size", 3), ("dilation", 2))),
    OpSpec("conv_3x3", "conv", "conv 3x3", "conv", "3x3", (("kernel_size", 3),)),
)}

#: The 13 operations the controller chooses from, in the order the paper lists them.
PAPER_OPS: tuple[str, ...] = (
    "identity",
    "conv_1x7_7x1",
    "avg_pool_3x3",
    "max_pool_5x5",
    "max_pool_3x3",
    "max_pool_7x7",
    "conv_1x1",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
    "conv_1x3_3x1",
    "dil_conv_3x3",
    "conv_3x3",
)

#: The paper's two combine ops, and the appendix's extensions (used by NASNet-B/C).
PAPER_COMBINES: tuple[str, ...] = ("add", "concat")
EXTENDED_COMBINES: tuple[str, ...] = ("add", "concat", "add_layernorm", "add_instancenorm")

#: Every op name a genotype may use (the registry's keys).
OPS: frozenset[str] = frozenset(OP_REGISTRY)
COMBINES: frozenset[str] = frozenset(EXTENDED_COMBINES)

#: TF-slim op token -> our op name (transcribing the published genotypes, ``space.named``).
TF_OP_NAMES: dict[str, str] = {spec.tf_name: name for name, spec in OP_REGISTRY.items()}


def get_op(name: str) -> OpSpec:
    """The registry entry of op ``name``; raises GenotypeError listing the known ops."""
    try:
        return OP_REGISTRY[name]
    except KeyError:
        raise GenotypeError(f"op: unknown op {name!r}; known ops: {sorted(OPS)}") from None

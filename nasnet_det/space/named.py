"""The published genotypes, transcribed from the TF reference code, and the genotype registry.

Each cell is given in TF-slim's own encoding (``operations``, ``hiddenstate_indices``,
``used_hiddenstates``) so it can be checked line by line against the source; see
docs/spec.md §3 and §7. NASNet-B and -C are deliberately absent: their wiring is
published only as figures.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import NASNetError
from .genotype import Block, CellSpec, Genotype, GenotypeError, is_file, short_repr
from .ops import TF_OP_NAMES


def from_tf_encoding(ops: list[str], indices: list[int], used: list[int]) -> CellSpec:
    """Build a cell from TF's flat lists: 2 ops and 2 indices per block, a used-flag per state.

    The op tokens are TF-slim's (``"separable_5x5_2"``, ``"none"``...), translated by the op registry.
    """
    if len(ops) != len(indices) or len(ops) % 2:
        raise GenotypeError(f"tf encoding: {len(ops)} ops and {len(indices)} indices do not pair up")
    unknown = sorted(set(ops) - set(TF_OP_NAMES))
    if unknown:
        raise GenotypeError(f"tf encoding: unknown TF op tokens {unknown}; known: {sorted(TF_OP_NAMES)}")
    blocks = tuple(
        Block(inputs=(indices[i], indices[i + 1]), ops=(TF_OP_NAMES[ops[i]], TF_OP_NAMES[ops[i + 1]]))
        for i in range(0, len(ops), 2)
    )
    return CellSpec(blocks=blocks, concat=tuple(i for i, flag in enumerate(used) if not flag))


NASNET_A = Genotype(
    name="nasnet_a",
    normal=from_tf_encoding(
        [
            "separable_5x5_2", "separable_3x3_2", "separable_5x5_2", "separable_3x3_2", "avg_pool_3x3",
            "none", "avg_pool_3x3", "avg_pool_3x3", "separable_3x3_2", "none",
        ],
        [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ),
    reduce=from_tf_encoding(
        [
            "separable_5x5_2", "separable_7x7_2", "max_pool_3x3", "separable_7x7_2", "avg_pool_3x3",
            "separable_5x5_2", "none", "avg_pool_3x3", "separable_3x3_2", "max_pool_3x3",
        ],
        [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
        [1, 1, 1, 0, 0, 0, 0],
    ),
)

_PNAS_CELL = from_tf_encoding(
    [
        "separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3", "separable_5x5_2",
        "separable_3x3_2", "separable_3x3_2", "max_pool_3x3", "separable_3x3_2", "none",
    ],
    [1, 1, 0, 0, 0, 0, 4, 0, 1, 0],
    [1, 1, 0, 0, 0, 0, 0],
)
#: PNASNet-5 (Liu et al. 2018) has one cell, used with stride 1 and stride 2.
PNASNET_5 = Genotype(name="pnasnet5", normal=_PNAS_CELL, reduce=_PNAS_CELL)

AMOEBANET_A = Genotype(
    name="amoebanet_a",
    normal=from_tf_encoding(
        [
            "avg_pool_3x3", "max_pool_3x3", "separable_3x3_2", "none", "none",
            "avg_pool_3x3", "separable_3x3_2", "separable_5x5_2", "avg_pool_3x3", "separable_3x3_2",
        ],
        [0, 0, 1, 1, 0, 1, 0, 2, 5, 0],
        [1, 0, 1, 0, 0, 1, 0],
    ),
    reduce=from_tf_encoding(
        [
            "separable_3x3_2", "avg_pool_3x3", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
            "max_pool_3x3", "separable_3x3_2", "1x7_7x1", "avg_pool_3x3", "separable_7x7_2",
        ],
        [1, 0, 0, 2, 1, 0, 4, 0, 1, 0],
        [1, 1, 0, 0, 0, 0, 0],
    ),
)

#: DARTS-V2 (Liu et al. 2019) wiring, translated to TF indices (DARTS node 0 is h_{i-1}, i.e. TF 1).
#: It runs under this engine's TF-slim semantics, not DARTS' own input preprocessing, so its
#: parameter count differs from the DARTS paper's 3.3M.
DARTS_V2 = Genotype(
    name="darts_v2",
    normal=CellSpec(
        blocks=(
            Block((1, 0), ("sep_conv_3x3", "sep_conv_3x3")),
            Block((1, 0), ("sep_conv_3x3", "sep_conv_3x3")),
            Block((0, 1), ("sep_conv_3x3", "identity")),
            Block((1, 2), ("identity", "dil_conv_3x3")),
        ),
        concat=(2, 3, 4, 5),
    ),
    reduce=CellSpec(
        blocks=(
            Block((1, 0), ("max_pool_3x3", "max_pool_3x3")),
            Block((2, 0), ("identity", "max_pool_3x3")),
            Block((1, 2), ("max_pool_3x3", "identity")),
            Block((2, 0), ("identity", "max_pool_3x3")),
        ),
        concat=(2, 3, 4, 5),
    ),
)

_REGISTRY: dict[str, Genotype] = {}


def register_genotype(genotype: Genotype, name: str | None = None) -> Genotype:
    """Make ``genotype`` available by name to ``get_genotype``, configs and the command-line tools."""
    key = name or genotype.name
    if not key:
        raise GenotypeError("register_genotype: the genotype has no name; pass name=")
    _REGISTRY[key] = genotype
    return genotype


def list_genotypes() -> list[str]:
    return sorted(_REGISTRY)


def get_genotype(name: str) -> Genotype:
    """A registered genotype by name; raises GenotypeError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GenotypeError(f"unknown genotype name {short_repr(name)}; known: {list_genotypes()}") from None


def resolve_genotype(spec: "str | Path | Genotype") -> Genotype:
    """Accept what configs and CLIs accept: a Genotype, a registered name, or a JSON file path."""
    if isinstance(spec, Genotype):
        return spec
    text = str(spec)
    if text in _REGISTRY:
        return _REGISTRY[text]
    if text.endswith(".json") or is_file(text):
        return Genotype.from_json(Path(text))
    return get_genotype(text)


def resolve_genotype_setting(key: str, spec: "str | Path | Genotype",
                             error: type[NASNetError] = GenotypeError) -> Genotype:
    """``resolve_genotype`` for the value of config key ``key``; the one place a bad genotype
    setting becomes an error. It starts ``key=value:``, so every config layer (detection's
    MODEL.NASNET.GENOTYPE, pretraining's model.overrides.genotype) reports it in the same words;
    ``error`` is the class the caller's layer raises (detection: its ConfigError)."""
    try:
        return resolve_genotype(spec)
    except GenotypeError as err:
        raise error(f"{key}={spec!r}: {err}") from err
    except (OSError, ValueError) as err:  # ValueError: e.g. a NUL byte in the path
        raise error(f"{key}={spec!r}: cannot read the genotype file: {err}") from err


for _g in (NASNET_A, PNASNET_5, AMOEBANET_A, DARTS_V2):
    register_genotype(_g)

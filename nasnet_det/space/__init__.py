"""The NASNet search space as data (standard library only): the op registry, genotypes, named cells."""
from .diagram import cell_dot, genotype_dot
from .genotype import Block, CellSpec, Genotype, GenotypeError, unused_states
from .named import (
    AMOEBANET_A,
    DARTS_V2,
    NASNET_A,
    PNASNET_5,
    get_genotype,
    list_genotypes,
    register_genotype,
    resolve_genotype,
    resolve_genotype_setting,
)
from .ops import (
    COMBINES,
    EXTENDED_COMBINES,
    OP_REGISTRY,
    OPS,
    PAPER_COMBINES,
    PAPER_OPS,
    TF_OP_NAMES,
    OpSpec,
    get_op,
)
from .search_space import SearchSpace

__all__ = [
    "AMOEBANET_A", "DARTS_V2", "NASNET_A", "PNASNET_5", "Block", "CellSpec", "Genotype",
    "GenotypeError", "OpSpec", "SearchSpace", "cell_dot", "genotype_dot", "COMBINES", "EXTENDED_COMBINES", "OPS",
    "OP_REGISTRY", "PAPER_COMBINES", "PAPER_OPS", "TF_OP_NAMES", "get_genotype", "get_op", "list_genotypes",
    "register_genotype", "resolve_genotype", "resolve_genotype_setting", "unused_states",
]

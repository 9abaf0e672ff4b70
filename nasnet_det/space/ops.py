"""The op and combine vocabulary of the NASNet search space (paper section 3), as plain names.

The names are the contract between the search space (pure data) and the cell engine
(``nasnet_det.modeling``), which maps each name to a module with TF-slim semantics.
"""
from __future__ import annotations

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

OPS: frozenset[str] = frozenset(PAPER_OPS)
COMBINES: frozenset[str] = frozenset(EXTENDED_COMBINES)

#: Ops that never have parameters at stride 1 with matching channels; DropPath skips "identity".
PARAMETER_FREE_OPS: frozenset[str] = frozenset(
    {"identity", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7"}
)

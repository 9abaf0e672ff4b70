"""The controller's view of the space: a genotype as a flat sequence of categorical decisions.

Paper section 3: for each of the B blocks of the normal cell, then of the reduction cell, five
decisions are made in order: first input, second input, first op, second op, combine op. The
input choice set grows with the block index (h_i, h_{i-1} and every earlier block).
"""
from __future__ import annotations

from dataclasses import dataclass

from .genotype import Block, CellSpec, Genotype, GenotypeError
from .ops import COMBINES, OPS, PAPER_COMBINES, PAPER_OPS

#: Decision kinds in the order they are made for each block.
DECISION_KINDS: tuple[str, ...] = ("input", "input", "op", "op", "combine")


@dataclass(frozen=True)
class SearchSpace:
    """B blocks per cell over an op and a combine vocabulary (defaults: the paper's)."""

    num_blocks: int = 5
    ops: tuple[str, ...] = PAPER_OPS
    combines: tuple[str, ...] = PAPER_COMBINES

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise GenotypeError(f"search space num_blocks: must be >= 1, got {self.num_blocks}")
        for op in self.ops:
            if op not in OPS:
                raise GenotypeError(f"search space ops: unknown op {op!r}; known ops: {sorted(OPS)}")
        for c in self.combines:
            if c not in COMBINES:
                raise GenotypeError(f"search space combines: unknown combine {c!r}; known: {sorted(COMBINES)}")

    @property
    def num_decisions(self) -> int:
        return 2 * 5 * self.num_blocks

    def decision_sizes(self) -> list[int]:
        """Number of choices of each decision, normal cell first: ``[2, 2, |ops|, |ops|, |comb|, 3, 3, ...]``."""
        sizes = []
        for _cell in range(2):
            for k in range(self.num_blocks):
                sizes += [2 + k, 2 + k, len(self.ops), len(self.ops), len(self.combines)]
        return sizes

    def decision_kinds(self) -> list[str]:
        return list(DECISION_KINDS) * (2 * self.num_blocks)

    def decode(self, decisions: list[int], name: str = "") -> Genotype:
        """Turn a decision sequence into a Genotype whose outputs concat the unused states."""
        sizes = self.decision_sizes()
        if len(decisions) != len(sizes):
            raise GenotypeError(f"decisions: expected {len(sizes)} decisions, got {len(decisions)}")
        for i, (d, n) in enumerate(zip(decisions, sizes)):
            if not 0 <= int(d) < n:
                raise GenotypeError(f"decisions[{i}]: value {d} out of range 0..{n - 1}")
        cells = []
        per_cell = 5 * self.num_blocks
        for c in range(2):
            chunk = [int(d) for d in decisions[c * per_cell : (c + 1) * per_cell]]
            blocks = [
                Block(
                    inputs=(chunk[5 * k], chunk[5 * k + 1]),
                    ops=(self.ops[chunk[5 * k + 2]], self.ops[chunk[5 * k + 3]]),
                    combine=self.combines[chunk[5 * k + 4]],
                )
                for k in range(self.num_blocks)
            ]
            cells.append(CellSpec.from_blocks(blocks))
        return Genotype(normal=cells[0], reduce=cells[1], name=name)

    def encode(self, genotype: Genotype) -> list[int]:
        """Inverse of ``decode`` (the concat lists are not encoded: they follow from the blocks)."""
        genotype.validate(num_blocks=self.num_blocks)
        out: list[int] = []
        for field, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            for k, b in enumerate(cell.blocks):
                for j, op in enumerate(b.ops):
                    if op not in self.ops:
                        raise GenotypeError(f"{field}.blocks[{k}].ops[{j}]: op {op!r} is not in this search space")
                if b.combine not in self.combines:
                    raise GenotypeError(f"{field}.blocks[{k}].combine: {b.combine!r} is not in this search space")
                out += [b.inputs[0], b.inputs[1], self.ops.index(b.ops[0]), self.ops.index(b.ops[1]),
                        self.combines.index(b.combine)]
        return out

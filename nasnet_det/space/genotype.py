"""A NASNet architecture as plain data: two cells of B blocks, validated, with JSON read/write.

State indices follow the TF-slim convention (``nasnet_utils.py``) so published specs can be
transcribed verbatim: 0 = h_i (the previous cell's output), 1 = h_{i-1} (the one before that),
2 + k = the output of block k of this cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .ops import COMBINES, OPS
from ..errors import GenotypeError


@dataclass(frozen=True)
class Block:
    """One block: ``combine(ops[0](state[inputs[0]]), ops[1](state[inputs[1]]))``."""

    inputs: tuple[int, int]
    ops: tuple[str, str]
    combine: str = "add"

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "ops": list(self.ops), "combine": self.combine}


def unused_states(blocks: Iterable[Block]) -> tuple[int, ...]:
    """The paper's output rule: every hidden state no block reads is concatenated.

    Cells produced by the search use this; published cells state their concat list explicitly
    (TF's ``used_hiddenstates``), because their authors concatenated some states that are also read.
    """
    blocks = tuple(blocks)
    read = {i for b in blocks for i in b.inputs}
    return tuple(i for i in range(2, 2 + len(blocks)) if i not in read)


@dataclass(frozen=True)
class CellSpec:
    """A cell: its blocks and the states (by index) whose channel concat is the cell output."""

    blocks: tuple[Block, ...]
    concat: tuple[int, ...]

    @classmethod
    def from_blocks(cls, blocks: Iterable[Block]) -> "CellSpec":
        """A cell whose output follows the paper's rule (concat of the unused hidden states)."""
        blocks = tuple(blocks)
        return cls(blocks=blocks, concat=unused_states(blocks))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks], "concat": list(self.concat)}

    def validate(self, field: str) -> None:
        if not self.blocks:
            raise GenotypeError(f"{field}.blocks: a cell needs at least one block")
        for k, block in enumerate(self.blocks):
            where = f"{field}.blocks[{k}]"
            if len(block.inputs) != 2:
                raise GenotypeError(f"{where}.inputs: expected 2 inputs, got {list(block.inputs)}")
            if len(block.ops) != 2:
                raise GenotypeError(f"{where}.ops: expected 2 ops, got {list(block.ops)}")
            for j, idx in enumerate(block.inputs):
                if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < 2 + k:
                    raise GenotypeError(
                        f"{where}.inputs[{j}]: input index {idx!r} out of range; block {k} may read "
                        f"0 (h_i), 1 (h_i-1) or earlier blocks 2..{1 + k}"
                    )
            for j, op in enumerate(block.ops):
                if op not in OPS:
                    raise GenotypeError(f"{where}.ops[{j}]: unknown op {op!r}; known ops: {sorted(OPS)}")
            if block.combine not in COMBINES:
                raise GenotypeError(
                    f"{where}.combine: unknown combine op {block.combine!r}; known: {sorted(COMBINES)}"
                )
        n_states = 2 + len(self.blocks)
        if not self.concat:
            raise GenotypeError(f"{field}.concat: the cell output concatenates no state")
        if list(self.concat) != sorted(set(self.concat)):
            raise GenotypeError(f"{field}.concat: must be strictly increasing, got {list(self.concat)}")
        for j, idx in enumerate(self.concat):
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n_states:
                raise GenotypeError(f"{field}.concat[{j}]: state index {idx!r} out of range 0..{n_states - 1}")


@dataclass(frozen=True)
class Genotype:
    """A searched architecture: a normal cell (stride 1) and a reduction cell (stride 2).

    PNASNet-5 uses one cell for both roles; its ``reduce`` is simply equal to ``normal``.
    """

    normal: CellSpec
    reduce: CellSpec
    name: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, num_blocks: int | None = None) -> None:
        """Raise GenotypeError naming the first bad field; ``num_blocks`` also checks B."""
        for field, cell in (("normal", self.normal), ("reduce", self.reduce)):
            if not isinstance(cell, CellSpec):
                raise GenotypeError(f"{field}: expected a CellSpec, got {type(cell).__name__}")
            cell.validate(field)
            if num_blocks is not None and cell.num_blocks != num_blocks:
                raise GenotypeError(f"{field}.blocks: expected {num_blocks} blocks, got {cell.num_blocks}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "normal": self.normal.to_dict(), "reduce": self.reduce.to_dict()}

    def to_json(self, path: str | Path | None = None) -> str:
        """The genotype as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"name", "normal", "reduce", "num_blocks"}
        if unknown:
            raise GenotypeError(f"{source}: unknown field(s) {sorted(unknown)}")
        cells = {}
        for field in ("normal", "reduce"):
            if field not in data:
                raise GenotypeError(f"{source}: missing field '{field}'")
            cells[field] = _cell_from_dict(data[field], f"{source}: {field}")
        try:
            genotype = cls(normal=cells["normal"], reduce=cells["reduce"], name=str(data.get("name", "")))
        except GenotypeError as err:
            raise GenotypeError(f"{source}: {err}") from None
        if "num_blocks" in data:
            try:
                genotype.validate(num_blocks=data["num_blocks"])
            except GenotypeError as err:
                raise GenotypeError(f"{source}: {err}") from None
        return genotype

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Genotype":
        """Parse JSON text, or read a ``.json`` file when given a path."""
        source = "genotype"
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if not path.is_file():
                raise GenotypeError(f"{path}: genotype file not found")
            source, text = str(path), path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"{source}: not valid JSON ({err})") from None
        return cls.from_dict(data, source)


def _cell_from_dict(data: Any, field: str) -> CellSpec:
    if not isinstance(data, dict) or "blocks" not in data:
        raise GenotypeError(f"{field}: expected an object with 'blocks' (and optionally 'concat')")
    if not isinstance(data["blocks"], list):
        raise GenotypeError(f"{field}.blocks: expected a list")
    blocks = []
    for k, b in enumerate(data["blocks"]):
        if not isinstance(b, dict) or not {"inputs", "ops"} <= set(b):
            raise GenotypeError(f"{field}.blocks[{k}]: expected an object with 'inputs' and 'ops'")
        unknown = set(b) - {"inputs", "ops", "combine"}
        if unknown:
            raise GenotypeError(f"{field}.blocks[{k}]: unknown field(s) {sorted(unknown)}")
        for key in ("inputs", "ops"):
            if not isinstance(b[key], list):
                raise GenotypeError(f"{field}.blocks[{k}].{key}: expected a list of 2, got {b[key]!r}")
        blocks.append(Block(tuple(b["inputs"]), tuple(b["ops"]), b.get("combine", "add")))
    concat = data.get("concat")
    if concat is not None and not isinstance(concat, list):
        raise GenotypeError(f"{field}.concat: expected a list of state indices, got {concat!r}")
    return CellSpec(tuple(blocks), tuple(concat)) if concat is not None else CellSpec.from_blocks(blocks)

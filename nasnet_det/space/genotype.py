"""A NASNet architecture as plain data: two cells of B blocks, validated, with JSON read/write.

State indices follow the TF-slim convention (``nasnet_utils.py``) so published specs can be
transcribed verbatim: 0 = h_i (the previous cell's output), 1 = h_{i-1} (the one before that),
2 + k = the output of block k of this cell.

Why every parse error is a ``GenotypeError``: genotypes arrive from users (JSON files, configs,
search logs), and the CLIs print a ``GenotypeError`` as one ``error:`` line naming the file and
field. The parser therefore checks every value's *type* before it hashes, sorts or prints it, and
shows values through :func:`short_repr` (bounded, recursion-safe), so a binary file, a list where a
string belongs or a 100 000-deep nesting gives one such error, never a ``TypeError`` or
``RecursionError``.

Block count: a cell may have any number (>= 1) of blocks. The engine builds any B, and published
cells differ (DARTS-V2 has 4, NASNet-A 5). The paper's search space fixes B = 5; that constraint
is checked where a search space is involved (``SearchSpace.encode``, and a JSON file's optional
``"num_blocks"`` field), not by the parser.
"""
from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..durable import atomic_write_text
from ..errors import GenotypeError
from .ops import COMBINES, OPS

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60


def short_repr(value: Any) -> str:
    """A short repr for error messages: bounded in depth and length, so never a RecursionError."""
    return _SHORT_REPR.repr(value)


def _is_index(value: Any) -> bool:
    """A JSON integer (``bool`` is an ``int`` subclass in Python, but ``true`` is no state index)."""
    return isinstance(value, int) and not isinstance(value, bool)


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
    read = {i for b in blocks for i in b.inputs if _is_index(i)}  # bad inputs: left to CellSpec.validate
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
        """Raise GenotypeError naming the first bad ``field.blocks[k]...`` or ``field.concat``."""
        if not self.blocks:
            raise GenotypeError(f"{field}.blocks: a cell needs at least one block")
        for k, block in enumerate(self.blocks):
            _validate_block(block, k, f"{field}.blocks[{k}]")
        n_states = 2 + len(self.blocks)
        if not self.concat:
            raise GenotypeError(f"{field}.concat: the cell output concatenates no state")
        for j, idx in enumerate(self.concat):
            if not _is_index(idx) or not 0 <= idx < n_states:
                raise GenotypeError(
                    f"{field}.concat[{j}]: state index {short_repr(idx)} out of range 0..{n_states - 1}")
        if list(self.concat) != sorted(set(self.concat)):
            raise GenotypeError(f"{field}.concat: must be strictly increasing, got {short_repr(list(self.concat))}")


def _validate_block(block: Block, k: int, where: str) -> None:
    """Block ``k`` reads two earlier states through two known ops and combines them with a known op."""
    if len(block.inputs) != 2:
        raise GenotypeError(f"{where}.inputs: expected 2 inputs, got {short_repr(list(block.inputs))}")
    if len(block.ops) != 2:
        raise GenotypeError(f"{where}.ops: expected 2 ops, got {short_repr(list(block.ops))}")
    for j, idx in enumerate(block.inputs):
        if not _is_index(idx) or not 0 <= idx < 2 + k:
            raise GenotypeError(
                f"{where}.inputs[{j}]: input index {short_repr(idx)} out of range; block {k} may read "
                f"0 (h_i), 1 (h_i-1) or earlier blocks 2..{1 + k}"
            )
    for j, op in enumerate(block.ops):
        if not isinstance(op, str) or op not in OPS:
            raise GenotypeError(f"{where}.ops[{j}]: unknown op {short_repr(op)}; known ops: {sorted(OPS)}")
    if not isinstance(block.combine, str) or block.combine not in COMBINES:
        raise GenotypeError(
            f"{where}.combine: unknown combine op {short_repr(block.combine)}; known: {sorted(COMBINES)}"
        )


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
        """Raise GenotypeError naming the first bad field; ``num_blocks`` also checks B.

        Without ``num_blocks`` any B >= 1 is accepted (see the module docstring).
        """
        for field, cell in (("normal", self.normal), ("reduce", self.reduce)):
            if not isinstance(cell, CellSpec):
                raise GenotypeError(f"{field}: expected a CellSpec, got {type(cell).__name__}")
            cell.validate(field)
            if num_blocks is not None and cell.num_blocks != num_blocks:
                raise GenotypeError(f"{field}.blocks: expected {num_blocks} blocks, got {cell.num_blocks}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "normal": self.normal.to_dict(), "reduce": self.reduce.to_dict()}

    def to_json(self, path: str | Path | None = None) -> str:
        """The genotype as JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
        """A genotype from parsed JSON; every problem is a GenotypeError prefixed with ``source``."""
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"name", "normal", "reduce", "num_blocks"}
        if unknown:
            raise GenotypeError(f"{source}: unknown field(s) {short_repr(sorted(map(str, unknown)))}")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise GenotypeError(f"{source}: name: expected a string, got {short_repr(name)}")
        num_blocks = data.get("num_blocks")
        if num_blocks is not None and (not _is_index(num_blocks) or num_blocks < 1):
            raise GenotypeError(f"{source}: num_blocks: expected an integer >= 1, got {short_repr(num_blocks)}")
        cells = {}
        for field in ("normal", "reduce"):
            if field not in data:
                raise GenotypeError(f"{source}: missing field '{field}'")
            cells[field] = _cell_from_dict(data[field], f"{source}: {field}")
        try:
            genotype = cls(normal=cells["normal"], reduce=cells["reduce"], name=name)
            genotype.validate(num_blocks=num_blocks)
        except GenotypeError as err:
            raise GenotypeError(f"{source}: {err}") from None
        return genotype

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Genotype":
        """Parse JSON text, or read a ``.json`` file when given a path."""
        source = "genotype"
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            source, text = str(text_or_path), _read_genotype_file(Path(text_or_path))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"{source}: not valid JSON ({err})") from None
        except RecursionError:
            raise GenotypeError(f"{source}: not a genotype: the JSON is nested too deeply") from None
        return cls.from_dict(data, source)


def is_file(path: str | Path) -> bool:
    """``Path.is_file`` that answers False for names no file can have (NUL bytes, too long)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _read_genotype_file(path: Path) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 (binary) file is a GenotypeError naming it."""
    if not is_file(path):
        raise GenotypeError(f"{path}: genotype file not found")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise GenotypeError(f"{path}: not a JSON text file (byte {err.start} is not UTF-8); "
                            "a genotype is a .json file written by Genotype.to_json") from None
    except OSError as err:
        raise GenotypeError(f"{path}: cannot read the genotype file: {err.strerror or err}") from None


def _cell_from_dict(data: Any, field: str) -> CellSpec:
    """A cell from parsed JSON: checks the shape (objects, lists, known keys); ``validate`` the values."""
    if not isinstance(data, dict) or "blocks" not in data:
        raise GenotypeError(f"{field}: expected an object with 'blocks' (and optionally 'concat')")
    if not isinstance(data["blocks"], list):
        raise GenotypeError(f"{field}.blocks: expected a list")
    unknown = set(data) - {"blocks", "concat"}
    if unknown:
        raise GenotypeError(f"{field}: unknown field(s) {short_repr(sorted(map(str, unknown)))}")
    blocks = [_block_from_dict(b, f"{field}.blocks[{k}]") for k, b in enumerate(data["blocks"])]
    concat = data.get("concat")
    if concat is not None and not isinstance(concat, list):
        raise GenotypeError(f"{field}.concat: expected a list of state indices, got {short_repr(concat)}")
    return CellSpec(tuple(blocks), tuple(concat)) if concat is not None else CellSpec.from_blocks(blocks)


def _block_from_dict(data: Any, where: str) -> Block:
    if not isinstance(data, dict) or not {"inputs", "ops"} <= set(data):
        raise GenotypeError(f"{where}: expected an object with 'inputs' and 'ops'")
    unknown = set(data) - {"inputs", "ops", "combine"}
    if unknown:
        raise GenotypeError(f"{where}: unknown field(s) {short_repr(sorted(map(str, unknown)))}")
    for key in ("inputs", "ops"):
        if not isinstance(data[key], list):
            raise GenotypeError(f"{where}.{key}: expected a list of 2, got {short_repr(data[key])}")
    return Block(tuple(data["inputs"]), tuple(data["ops"]), data.get("combine", "add"))

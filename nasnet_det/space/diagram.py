"""A cell as the figure of the NASNet paper (Fig. 4): Graphviz DOT text and a layered layout.

The picture reads bottom to top: the two cell inputs h_i and h_{i-1} (grey), one box per op
(coloured by op family), one node per combine that is also the block's output state, and the
final ``concat`` collecting the cell's ``concat`` states into h_{i+1}.

Everything here is standard library. ``cell_dot`` / ``genotype_dot`` give text for the ``dot``
binary; ``cell_graph`` gives the graph that ``nasnet_det.visualize.layout.layout_cell`` lays out
(node positions and edge routes) so that a renderer without Graphviz can draw the same picture.

Node ids are stable and carry the wiring, so tests and scripts can read a DOT file back:
``state<i>`` is hidden state i in TF numbering (0 = h_i, 1 = h_{i-1}, 2 + k = block k's combine),
``block<k>_op<j>`` is op j of block k, ``concat`` the cell output concat, ``output`` h_{i+1}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from .genotype import CellSpec, Genotype
from .ops import OP_REGISTRY

CellChoice = Literal["normal", "reduce", "both"]

#: Short labels in the paper's wording ("sep 3x3", "avg 3x3", ...), from the op registry.
OP_LABELS: dict[str, str] = {name: spec.label for name, spec in OP_REGISTRY.items()}

COMBINE_LABELS: dict[str, str] = {
    "add": "add",
    "concat": "concat",
    "add_layernorm": "add + LN",
    "add_instancenorm": "add + IN",
}

#: Fill colours per node family; ops of one family share a colour so the cell's mix is visible.
COLORS: dict[str, str] = {
    "state": "#d9d9d9",
    "separable": "#cfe2f3",
    "conv": "#d9d2e9",
    "dilated": "#ead1dc",
    "avg_pool": "#fff2cc",
    "max_pool": "#fce5cd",
    "identity": "#ffffff",
    "combine": "#d9ead3",
    "concat": "#f4cccc",
}


def op_family(op: str) -> str:
    """The colour family the op registry gives ``op`` (unknown names fall back to plain ``conv``)."""
    spec = OP_REGISTRY.get(op)
    return spec.family if spec is not None else "conv"


@dataclass(frozen=True)
class Node:
    """One drawn node. ``kind`` is input / op / combine / concat / output; ``label`` is plain text."""

    id: str
    label: str
    kind: str
    family: str

    @property
    def color(self) -> str:
        return COLORS[self.family]


@dataclass(frozen=True)
class CellGraph:
    """The drawn graph of one cell: nodes, directed edges (source id, target id), and a title."""

    title: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    #: Row of each node id, 0 = the inputs at the bottom; nodes of one row are drawn side by side.
    rows: dict[str, int]


INPUT_LABELS = {0: "h_i", 1: "h_{i-1}"}
OUTPUT_LABEL = "h_{i+1}"


def state_depths(cell: CellSpec) -> list[int]:
    """Depth of every hidden state: 0 for the inputs, 1 + the deeper of its two inputs for a block."""
    depth = [0, 0]
    for block in cell.blocks:
        depth.append(1 + max(depth[i] for i in block.inputs))
    return depth


def cell_graph(cell: CellSpec, title: str = "") -> CellGraph:
    """The cell as nodes and edges, with the paper's rows: inputs, then per depth an op row and a
    combine row, then the output concat and h_{i+1}."""
    depth = state_depths(cell)
    top = max(depth)
    nodes = [Node(f"state{i}", INPUT_LABELS[i], "input", "state") for i in (0, 1)]
    rows = {"state0": 0, "state1": 0}
    edges: list[tuple[str, str]] = []
    for k, block in enumerate(cell.blocks):
        state = f"state{2 + k}"
        d = depth[2 + k]
        for j, (src, op) in enumerate(zip(block.inputs, block.ops)):
            op_id = f"block{k}_op{j}"
            nodes.append(Node(op_id, OP_LABELS.get(op, op.replace("_", " ")), "op", op_family(op)))
            rows[op_id] = 2 * d - 1
            edges += [(f"state{src}", op_id), (op_id, state)]
        nodes.append(Node(state, COMBINE_LABELS.get(block.combine, block.combine), "combine", "combine"))
        rows[state] = 2 * d
    nodes += [Node("concat", "concat", "concat", "concat"), Node("output", OUTPUT_LABEL, "output", "state")]
    rows["concat"], rows["output"] = 2 * top + 1, 2 * top + 2
    edges += [(f"state{i}", "concat") for i in cell.concat] + [("concat", "output")]
    return CellGraph(title=title, nodes=tuple(nodes), edges=tuple(edges), rows=rows)


def cell_title(genotype: Genotype, which: str) -> str:
    """``"nasnet_a: normal cell"`` / ``"nasnet_a: reduction cell (stride 2)"``."""
    name = genotype.name or "genotype"
    if which == "reduce":
        return f"{name}: reduction cell (stride 2)"
    return f"{name}: normal cell"


def genotype_graphs(genotype: Genotype, which: CellChoice = "normal") -> list[CellGraph]:
    """The graphs to draw for ``which``: one cell, or normal then reduction for ``"both"``."""
    if which not in ("normal", "reduce", "both"):
        raise ValueError(f"cell: expected 'normal', 'reduce' or 'both', got {which!r}")
    names = ("normal", "reduce") if which == "both" else (which,)
    return [cell_graph(getattr(genotype, n), cell_title(genotype, n)) for n in names]


# --- DOT -------------------------------------------------------------------------------------------

def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(node: Node) -> str:
    """HTML labels for the h states so i, i-1, i+1 render as subscripts; quoted text otherwise."""
    if node.kind in ("input", "output"):
        sub = node.label[2:].strip("{}")
        return f"<<I>h</I><SUB>{sub}</SUB>>"
    return _dot_quote(node.label)


_DOT_SHAPES = {
    "input": 'shape=box, style="rounded,filled", width=0.9',
    "output": 'shape=box, style="rounded,filled", width=0.9',
    "op": 'shape=box, style="filled"',
    "combine": 'shape=ellipse, style="filled"',
    "concat": 'shape=box, style="rounded,filled,bold"',
}


def _dot_body(graph: CellGraph, prefix: str, indent: str) -> list[str]:
    lines = []
    for node in graph.nodes:
        lines.append(
            f"{indent}{prefix}{node.id} [label={_dot_label(node)}, {_DOT_SHAPES[node.kind]}, "
            f'fillcolor="{node.color}"];'
        )
    by_row: dict[int, list[str]] = {}
    for node_id, row in graph.rows.items():
        by_row.setdefault(row, []).append(prefix + node_id)
    for row in sorted(by_row):
        lines.append(f"{indent}{{ rank=same; {'; '.join(by_row[row])}; }}")
    lines += [f"{indent}{prefix}{a} -> {prefix}{b};" for a, b in graph.edges]
    return lines


_DOT_DEFAULTS = [
    '  node [fontname="Helvetica", fontsize=12, color="#444444", penwidth=1.0];',
    '  edge [color="#555555", arrowsize=0.7];',
]


def graphs_dot(graphs: Iterable[CellGraph], name: str = "cell") -> str:
    """DOT text for one or more cell graphs (several become side-by-side clusters)."""
    graphs = list(graphs)
    lines = [f"digraph {_dot_quote(name)} {{"]
    lines.append('  graph [rankdir=BT, fontname="Helvetica", nodesep=0.25, ranksep=0.45, newrank=true];')
    lines += _DOT_DEFAULTS
    if len(graphs) == 1:
        lines.append(f"  label={_dot_quote(graphs[0].title)}; labelloc=t; fontsize=16;")
        lines += _dot_body(graphs[0], "", "  ")
    else:
        for n, graph in enumerate(graphs):
            lines.append(f"  subgraph cluster_{n} {{")
            # With rankdir=BT a cluster label at "b" is drawn at the top, above h_{i+1}.
            lines.append(f'    label={_dot_quote(graph.title)}; labelloc=b; fontsize=16; color="#bbbbbb";')
            lines += _dot_body(graph, f"c{n}_", "    ")
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def cell_dot(cell: CellSpec, title: str = "") -> str:
    """DOT text for one cell."""
    return graphs_dot([cell_graph(cell, title)])


def genotype_dot(genotype: Genotype, which: CellChoice = "normal") -> str:
    """DOT text for a genotype's normal cell, reduction cell, or both side by side."""
    return graphs_dot(genotype_graphs(genotype, which), name=genotype.name or "genotype")

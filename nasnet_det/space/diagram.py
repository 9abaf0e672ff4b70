"""A cell as the figure of the NASNet paper (Fig. 4): Graphviz DOT text and a layered layout.

The picture reads bottom to top: the two cell inputs h_i and h_{i-1} (grey), one box per op
(coloured by op family), one node per combine that is also the block's output state, and the
final ``concat`` collecting the cell's ``concat`` states into h_{i+1}.

Everything here is standard library. ``cell_dot`` / ``genotype_dot`` give text for the ``dot``
binary; ``layout_cell`` computes node positions and edge routes so that a renderer without
Graphviz (``nasnet_det.visualize``) can draw the same graph.

Node ids are stable and carry the wiring, so tests and scripts can read a DOT file back:
``state<i>`` is hidden state i in TF numbering (0 = h_i, 1 = h_{i-1}, 2 + k = block k's combine),
``block<k>_op<j>`` is op j of block k, ``concat`` the cell output concat, ``output`` h_{i+1}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


# --- layered layout (for renderers without Graphviz) -----------------------------------------------

@dataclass
class Layout:
    """Positions in abstract units (1 unit ~ one inch at the renderer's default scale).

    ``centers`` holds the centre of every node, ``sizes`` its (width, height), and ``routes`` one
    polyline per edge: source top, any bend points in between rows, target bottom.
    """

    graph: CellGraph
    centers: dict[str, tuple[float, float]] = field(default_factory=dict)
    sizes: dict[str, tuple[float, float]] = field(default_factory=dict)
    routes: list[list[tuple[float, float]]] = field(default_factory=list)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) over nodes and routes."""
        xs, ys = [], []
        for node_id, (x, y) in self.centers.items():
            w, h = self.sizes[node_id]
            xs += [x - w / 2, x + w / 2]
            ys += [y - h / 2, y + h / 2]
        for route in self.routes:
            xs += [p[0] for p in route]
        return min(xs), max(xs), min(ys), max(ys)


#: Geometry in layout units: least row pitch, node height, gap between neighbours in a row,
#: width of a bend point, text width per character, spacing of edge ends along a node.
ROW_HEIGHT = 0.85
NODE_HEIGHT = 0.42
GAP = 0.22
DUMMY_WIDTH = 0.12
CHAR_WIDTH = 0.095
PORT_PITCH = 0.12


def node_size(node: Node) -> tuple[float, float]:
    """Box size from the label length; the h states and combines are compact."""
    if node.kind in ("input", "output"):
        return 0.9, NODE_HEIGHT
    if node.kind == "combine":
        return max(0.75, CHAR_WIDTH * len(node.label) + 0.35), NODE_HEIGHT
    return CHAR_WIDTH * len(node.label) + 0.3, NODE_HEIGHT


def _isotonic_place(desired: list[float], widths: list[float]) -> list[float]:
    """x positions closest (least squares) to ``desired`` that keep the order and never overlap.

    Subtracting each item's cumulative minimum offset turns "x[j+1] - x[j] >= gap" into "y is
    non-decreasing", which pool-adjacent-violators solves exactly.
    """
    offsets = [0.0]
    for a, b in zip(widths, widths[1:]):
        offsets.append(offsets[-1] + (a + b) / 2 + GAP)
    blocks: list[list[float]] = []  # [mean, count]
    for d, o in zip(desired, offsets):
        blocks.append([d - o, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    ys = [m for m, c in blocks for _ in range(int(c))]
    return [y + o for y, o in zip(ys, offsets)]


def _crossings(order: dict[int, list[str]], links: list[tuple[str, str]], rows: dict[str, int]) -> int:
    """How many pairs of links between the same two rows cross, given each row's order."""
    pos = {v: i for row in order.values() for i, v in enumerate(row)}
    count = 0
    for i, (a, b) in enumerate(links):
        for c, d in links[i + 1:]:
            if rows[a] == rows[c] and a != c and b != d and (pos[a] - pos[c]) * (pos[b] - pos[d]) < 0:
                count += 1
    return count


def layout_cell(graph: CellGraph) -> Layout:
    """A Sugiyama-style layered layout: long edges get bend points in the rows they cross, rows
    are ordered by the barycentre of what feeds them (a block's two ops stay side by side), and
    x positions are relaxed towards neighbours without overlaps."""
    nodes = {n.id: n for n in graph.nodes}
    rows = dict(graph.rows)
    widths = {nid: node_size(n)[0] for nid, n in nodes.items()}
    # Split every edge into one link per row crossed; the in-between points are dummy nodes.
    links: list[tuple[str, str]] = []
    chains: list[list[str]] = []
    for a, b in graph.edges:
        chain = [a]
        for r in range(rows[a] + 1, rows[b]):
            dummy = f"~{a}>{b}@{r}"
            rows[dummy], widths[dummy] = r, DUMMY_WIDTH
            chain.append(dummy)
        chain.append(b)
        chains.append(chain)
        links += list(zip(chain, chain[1:]))
    below: dict[str, list[str]] = {}
    above: dict[str, list[str]] = {}
    for a, b in links:
        below.setdefault(b, []).append(a)
        above.setdefault(a, []).append(b)
    n_rows = max(rows.values()) + 1
    members: dict[int, list[str]] = {r: [] for r in range(n_rows)}
    for nid, r in rows.items():
        members[r].append(nid)

    def unit_of(nid: str) -> str:
        # The two ops of a block move together, so the block reads as one unit like in the paper.
        return nid.rsplit("_op", 1)[0] if nid.startswith("block") else nid

    def order_rows(first: list[str]) -> dict[int, list[str]]:
        order = {0: first}
        for r in range(1, n_rows):
            pos = {v: i for i, v in enumerate(order[r - 1])}
            units: dict[str, list[str]] = {}
            for nid in members[r]:
                units.setdefault(unit_of(nid), []).append(nid)

            def bary(items: list[str]) -> float:
                feeds = [pos[s] for nid in items for s in below.get(nid, [])]
                return sum(feeds) / len(feeds) if feeds else 0.0

            ranked = sorted(units.values(), key=lambda items: (bary(items), items[0]))
            order[r] = [nid for items in ranked for nid in sorted(items, key=lambda v: bary([v]))]
        return order

    candidates = [order_rows(["state1", "state0"]), order_rows(["state0", "state1"])]
    order = min(candidates, key=lambda o: _crossings(o, links, rows))

    # x: start packed, then alternately pull each row towards its neighbours; links between two
    # bend points weigh more so that a long edge runs straight up instead of wandering.
    x: dict[str, float] = {}
    for r in range(n_rows):
        xs = _isotonic_place([0.0] * len(order[r]), [widths[v] for v in order[r]])
        shift = (xs[0] + xs[-1]) / 2
        x.update({v: p - shift for v, p in zip(order[r], xs)})

    def pull(v: str) -> float:
        near = [(u, 4.0 if u[0] == v[0] == "~" else 1.0) for u in below.get(v, []) + above.get(v, [])]
        total = sum(w for _, w in near)
        return sum(x[u] * w for u, w in near) / total if near else x[v]

    for _ in range(10):
        for r in list(range(n_rows - 2, -1, -1)) + list(range(1, n_rows)):
            desired = [pull(v) for v in order[r]]
            x.update(zip(order[r], _isotonic_place(desired, [widths[v] for v in order[r]])))

    _straighten(chains, order, x, widths)

    # y: a row sits higher above the previous one when the edges between them travel far sideways,
    # so fanned-out edges stay steep enough to follow.
    y = [0.0]
    for r in range(1, n_rows):
        spread = max((abs(x[a] - x[b]) for a, b in links if rows[b] == r), default=0.0)
        y.append(y[-1] + min(max(ROW_HEIGHT, 0.45 + 0.16 * spread), 1.6))

    out = Layout(graph)
    for nid, node in nodes.items():
        out.centers[nid] = (x[nid], y[rows[nid]])
        out.sizes[nid] = node_size(node)
    # Ports: edges leave a node's top and enter its bottom spread out, in the order of their other
    # ends, so arrowheads into one node stay apart and do not cross just outside it.
    outgoing: dict[str, list[int]] = {}
    incoming: dict[str, list[int]] = {}
    for c, chain in enumerate(chains):
        outgoing.setdefault(chain[0], []).append(c)
        incoming.setdefault(chain[-1], []).append(c)
    port_x: dict[tuple[int, str], float] = {}
    for ports, other in ((outgoing, 1), (incoming, -2)):
        for nid, cs in ports.items():
            cs.sort(key=lambda c: x[chains[c][other]])
            w = out.sizes[nid][0]
            spread = min(0.6 * w, PORT_PITCH * (len(cs) - 1))
            for i, c in enumerate(cs):
                offset = spread * (i / (len(cs) - 1) - 0.5) if len(cs) > 1 else 0.0
                port_x[(c, "out" if other == 1 else "in")] = offset
    for c, chain in enumerate(chains):
        a, b = chain[0], chain[-1]
        route = [_port(out, nodes[a], port_x[(c, "out")], top=True)]
        for d in chain[1:-1]:
            route += [(x[d], y[rows[d]] - NODE_HEIGHT / 2), (x[d], y[rows[d]] + NODE_HEIGHT / 2)]
        route.append(_port(out, nodes[b], port_x[(c, "in")], top=False))
        out.routes.append(route)
    return out


def _straighten(
    chains: list[list[str]], order: dict[int, list[str]], x: dict[str, float], widths: dict[str, float]
) -> None:
    """Give each long edge one x for all its bend points where its neighbours in every row leave
    room, so it runs as a straight vertical instead of zig-zagging between rows."""
    where = {v: (r, i) for r, row in order.items() for i, v in enumerate(row)}
    for chain in chains:
        dummies = chain[1:-1]
        if len(dummies) < 2:
            continue
        lo, hi = float("-inf"), float("inf")
        for d in dummies:
            r, i = where[d]
            row = order[r]
            if i > 0:
                lo = max(lo, x[row[i - 1]] + (widths[row[i - 1]] + widths[d]) / 2 + GAP)
            if i + 1 < len(row):
                hi = min(hi, x[row[i + 1]] - (widths[row[i + 1]] + widths[d]) / 2 - GAP)
        if lo <= hi:
            target = min(max(sum(x[d] for d in dummies) / len(dummies), lo), hi)
            x.update((d, target) for d in dummies)


def _port(layout: Layout, node: Node, offset: float, top: bool) -> tuple[float, float]:
    """The point ``offset`` right of centre on a node's top or bottom outline (ellipses curve)."""
    (cx, cy), (w, h) = layout.centers[node.id], layout.sizes[node.id]
    half = h / 2
    if node.kind == "combine":
        half *= max(0.0, 1 - (2 * offset / w) ** 2) ** 0.5
    return cx + offset, cy + half if top else cy - half

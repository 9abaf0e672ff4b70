"""A Sugiyama-style layered layout of a cell graph, for renderers without Graphviz.

``layout_cell`` computes node centres, node sizes and one polyline per edge from the rows that
``nasnet_det.space.diagram.cell_graph`` assigns; the matplotlib renderer of
``nasnet_det.visualize`` draws exactly that. Why it lives here and not in ``space``: positions in
inches are a rendering concern, and the pure-data layer should only say what the cell *is*.
Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..space.diagram import CellGraph, Node


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

    def bary(items: list[str], pos: dict[str, int]) -> float:
        feeds = [pos[s] for nid in items for s in below.get(nid, [])]
        return sum(feeds) / len(feeds) if feeds else 0.0

    def order_rows(first: list[str]) -> dict[int, list[str]]:
        order = {0: first}
        for r in range(1, n_rows):
            pos = {v: i for i, v in enumerate(order[r - 1])}
            units: dict[str, list[str]] = {}
            for nid in members[r]:
                units.setdefault(unit_of(nid), []).append(nid)
            ranked = sorted(units.values(), key=lambda items, pos=pos: (bary(items, pos), items[0]))
            order[r] = [nid for items in ranked for nid in sorted(items, key=lambda v, pos=pos: bary([v], pos))]
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

"""Draw NASNet cells to files: .dot always, .png/.svg/.pdf with Graphviz or, without it, matplotlib.

The graph itself comes from ``nasnet_det.space.diagram`` (what the cell is); positions for the
matplotlib fallback come from ``nasnet_det.visualize.layout``; this module renders. Graphviz
(the ``dot`` binary) is preferred where installed because its edge routing is the reference look;
the matplotlib fallback draws the same nodes and edges with a layered layout, so the project can
produce a picture on a machine with nothing but the Python environment.

This module imports neither torch nor detectron2, and matplotlib only when it draws.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

from ..errors import NASNetError
from ..space.diagram import CellChoice, CellGraph, genotype_graphs, graphs_dot
from ..space.genotype import Genotype
from .layout import Layout, layout_cell

Engine = Literal["auto", "graphviz", "matplotlib"]

#: Output formats by file extension; .dot is the DOT text itself and needs no renderer.
FORMATS: tuple[str, ...] = (".png", ".svg", ".pdf", ".dot")
ENGINES: tuple[str, ...] = ("auto", "graphviz", "matplotlib")
#: Raster resolution; keeps the NASNet-A cell PNGs legible and well under 200 KB.
PNG_DPI = 130


class DiagramError(NASNetError, ValueError):
    """A request that cannot be drawn (bad extension, unknown engine, Graphviz missing or failing)."""


def output_format(path: str | Path) -> str:
    """The format ('png', 'svg', 'pdf', 'dot') named by the file extension of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DiagramError(
            f"{path}: unsupported output extension {suffix or '(none)'!r}; use one of {', '.join(FORMATS)}"
        )
    return suffix[1:]


def choose_engine(engine: Engine = "auto") -> str:
    """'graphviz' when asked for or when ``auto`` finds ``dot`` on PATH, else 'matplotlib'."""
    if engine not in ENGINES:
        raise DiagramError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    has_dot = shutil.which("dot") is not None
    if engine == "graphviz" and not has_dot:
        raise DiagramError(
            "engine 'graphviz' needs the 'dot' binary on PATH; install graphviz or use --engine matplotlib"
        )
    if engine == "auto":
        return "graphviz" if has_dot else "matplotlib"
    return engine


def draw_genotype(
    genotype: Genotype, out: str | Path, cell: CellChoice = "normal", engine: Engine = "auto"
) -> Path:
    """Write the diagram of ``genotype``'s ``cell`` to ``out`` (format from the extension).

    ``cell="both"`` draws the normal and the reduction cell side by side in one file.
    Returns the written path.
    """
    out = Path(out)
    fmt = output_format(out)
    graphs = genotype_graphs(genotype, cell)
    dot_text = graphs_dot(graphs, name=genotype.name or "genotype")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(dot_text)
    elif choose_engine(engine) == "graphviz":
        render_graphviz(dot_text, out, fmt)
    else:
        render_matplotlib(graphs, out, fmt)
    return out


def render_graphviz(dot_text: str, out: Path, fmt: str) -> None:
    """Run ``dot -T<fmt>`` on the DOT text; Graphviz's own message is kept if it fails."""
    cmd = ["dot", f"-T{fmt}", f"-Gdpi={PNG_DPI}", "-o", str(out)]
    result = subprocess.run(cmd, input=dot_text, text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise DiagramError(f"graphviz failed ({' '.join(cmd)}): {result.stderr.strip()}")


# --- matplotlib fallback ---------------------------------------------------------------------------

_TITLE_SPACE = 0.6  # inches above the tallest cell, holding its title
_MARGIN = 0.25
_FONT = 10


def _mathtext(label: str) -> str:
    """``h_{i-1}`` as matplotlib math so the index is a subscript, as in the paper."""
    return f"${label}$"


def _edge_path(route: list[tuple[float, float]]):
    """A smooth curve through the route: each row-to-row hop is a cubic leaving and entering
    vertically, the way Graphviz draws layered edges."""
    from matplotlib.path import Path as MplPath

    verts = [route[0]]
    codes = [MplPath.MOVETO]
    for (x0, y0), (x1, y1) in zip(route, route[1:]):
        dy = (y1 - y0) / 2
        verts += [(x0, y0 + dy), (x1, y1 - dy), (x1, y1)]
        codes += [MplPath.CURVE4] * 3
    return MplPath(verts, codes)


def _draw_layout(ax, layout: Layout, dx: float, dy: float) -> None:
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

    for route in layout.routes:
        shifted = [(x + dx, y + dy) for x, y in route]
        ax.add_patch(
            FancyArrowPatch(
                path=_edge_path(shifted), arrowstyle="-|>", mutation_scale=10,
                color="#555555", linewidth=0.9, zorder=1,
            )
        )
    for node in layout.graph.nodes:
        x, y = layout.centers[node.id]
        w, h = layout.sizes[node.id]
        x, y = x + dx, y + dy
        if node.kind == "combine":
            patch = Ellipse((x, y), w, h, facecolor=node.color, edgecolor="#444444", linewidth=1.0, zorder=2)
        else:
            style = "round,pad=0,rounding_size=0.1" if node.kind != "op" else "square,pad=0"
            patch = FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle=style, facecolor=node.color,
                edgecolor="#444444", linewidth=1.6 if node.kind == "concat" else 1.0, zorder=2,
            )
        ax.add_patch(patch)
        text = _mathtext(node.label) if node.kind in ("input", "output") else node.label
        ax.text(x, y, text, ha="center", va="center", fontsize=_FONT + (2 if node.kind in ("input", "output") else 0),
                zorder=3)


def render_matplotlib(graphs: list[CellGraph], out: Path, fmt: str) -> None:
    """Lay out each graph in layers and draw them side by side, one unit of layout per inch."""
    from matplotlib.figure import Figure

    layouts = [layout_cell(g) for g in graphs]
    ymax = max(layout.bounds[3] for layout in layouts)
    placed = []  # (layout, x shift, y shift): side by side, tops aligned under the titles
    cursor = _MARGIN
    for layout in layouts:
        xmin, xmax, _, top = layout.bounds
        title_width = 0.085 * (_FONT + 2) / _FONT * len(layout.graph.title)
        width = max(xmax - xmin, title_width)
        placed.append((layout, cursor + width / 2 - (xmin + xmax) / 2, ymax - top))
        cursor += width + 2 * _MARGIN
    ymin = min(layout.bounds[2] + dy for layout, _, dy in placed)
    fig_w = cursor - _MARGIN
    fig_h = (ymax - ymin) + _TITLE_SPACE + _MARGIN
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(ymin - _MARGIN, ymin - _MARGIN + fig_h)
    ax.set_axis_off()
    for layout, dx, dy in placed:
        _draw_layout(ax, layout, dx, dy)
        xmin, xmax, _, _ = layout.bounds
        ax.text(dx + (xmin + xmax) / 2, ymax + _TITLE_SPACE - 0.25, layout.graph.title,
                ha="center", va="center", fontsize=_FONT + 2, fontweight="bold")
    fig.savefig(out, format=fmt, dpi=PNG_DPI, facecolor="white")

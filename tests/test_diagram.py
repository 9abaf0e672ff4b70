"""The cell diagram: DOT wiring equals the genotype, layouts never overlap, both renderers write
real files, and the CLI works end to end and fails with one clear line."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from nasnet_det import visualize
from nasnet_det.space import NASNET_A, CellSpec, get_genotype, list_genotypes
from nasnet_det.space.diagram import COMBINE_LABELS, OP_LABELS, cell_graph, genotype_dot
from nasnet_det.visualize.layout import GAP, layout_cell

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "draw_cell.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

NODE_RE = re.compile(r'^\s*(\w+) \[label=(".*?"|<.*?>),', re.M)
EDGE_RE = re.compile(r"^\s*(\w+) -> (\w+);", re.M)


def expected_edges(cell: CellSpec, prefix: str = "") -> Counter:
    """The wiring read straight off the genotype, in the diagram's node ids."""
    edges = []
    for k, block in enumerate(cell.blocks):
        for j, src in enumerate(block.inputs):
            edges += [(f"state{src}", f"block{k}_op{j}"), (f"block{k}_op{j}", f"state{2 + k}")]
    edges += [(f"state{i}", "concat") for i in cell.concat] + [("concat", "output")]
    return Counter((prefix + a, prefix + b) for a, b in edges)


@pytest.mark.parametrize("which", ["normal", "reduce"])
def test_dot_has_every_op_and_edge_of_nasnet_a(which):
    cell = getattr(NASNET_A, which)
    dot = genotype_dot(NASNET_A, which)
    assert dot.startswith('digraph "nasnet_a" {') and dot.rstrip().endswith("}")
    labels = {node: label.strip('"') for node, label in NODE_RE.findall(dot)}
    for k, block in enumerate(cell.blocks):
        for j, op in enumerate(block.ops):
            assert labels[f"block{k}_op{j}"] == OP_LABELS[op]
        assert labels[f"state{2 + k}"] == COMBINE_LABELS[block.combine]
    assert labels["concat"] == "concat"
    assert {"state0", "state1", "output"} <= set(labels)
    assert sum(1 for n in labels if "_op" in n) == 2 * cell.num_blocks == 10
    assert Counter(EDGE_RE.findall(dot)) == expected_edges(cell)


def test_dot_both_cells_side_by_side_as_clusters():
    dot = genotype_dot(NASNET_A, "both")
    assert "subgraph cluster_0" in dot and "subgraph cluster_1" in dot
    assert "nasnet_a: normal cell" in dot and "nasnet_a: reduction cell" in dot
    edges = Counter(EDGE_RE.findall(dot))
    assert edges == expected_edges(NASNET_A.normal, "c0_") + expected_edges(NASNET_A.reduce, "c1_")


@pytest.mark.parametrize("name", list_genotypes())
def test_layout_keeps_nodes_apart_and_edges_attached(name):
    genotype = get_genotype(name)
    for which in ("normal", "reduce"):
        graph = cell_graph(getattr(genotype, which))
        layout = layout_cell(graph)
        rows: dict[float, list[tuple[float, float]]] = {}
        for node in graph.nodes:
            (x, y), (w, _) = layout.centers[node.id], layout.sizes[node.id]
            rows.setdefault(round(y, 6), []).append((x - w / 2, x + w / 2))
        for spans in rows.values():
            spans.sort()
            for (_, right), (left, _) in zip(spans, spans[1:]):
                assert left - right >= GAP - 1e-6, f"{name} {which}: boxes overlap in a row"
        assert len(layout.routes) == len(graph.edges)
        for (a, b), route in zip(graph.edges, layout.routes):
            (xa, ya), (wa, ha) = layout.centers[a], layout.sizes[a]
            (xb, yb), (wb, hb) = layout.centers[b], layout.sizes[b]
            assert abs(route[0][0] - xa) <= wa / 2 and route[0][1] <= ya + ha / 2 + 1e-9
            assert abs(route[-1][0] - xb) <= wb / 2 and route[-1][1] >= yb - hb / 2 - 1e-9
            assert route[0][1] < route[-1][1]  # every edge points up, inputs at the bottom


def test_matplotlib_fallback_when_dot_is_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    assert visualize.choose_engine("auto") == "matplotlib"
    png = visualize.draw_genotype(NASNET_A, tmp_path / "normal.png", cell="normal")
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    svg = visualize.draw_genotype(NASNET_A, tmp_path / "reduce.svg", cell="reduce")
    assert "<svg" in svg.read_text()[:1000]
    with pytest.raises(visualize.DiagramError, match="needs the 'dot' binary"):
        visualize.draw_genotype(NASNET_A, tmp_path / "x.png", engine="graphviz")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_graphviz_engine(tmp_path):
    out = visualize.draw_genotype(NASNET_A, tmp_path / "reduce.png", cell="reduce", engine="graphviz")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_dot_output_needs_no_renderer(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    out = visualize.draw_genotype(NASNET_A, tmp_path / "sub" / "cell.dot", cell="reduce")
    assert out.read_text() == genotype_dot(NASNET_A, "reduce")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_net", "--out", "{tmp}/x.png"], "unknown genotype name 'no_such_net'; known: ["),
        (["nasnet_a", "--out", "{tmp}/cell.jpg"], "unsupported output extension '.jpg'"),
        (["{tmp}/missing.json", "--out", "{tmp}/cell.png"], "missing.json: genotype file not found"),
    ],
)
def test_cli_bad_input_gives_one_clear_error(argv, message, tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), *[arg.format(tmp=tmp_path) for arg in argv]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err.startswith("draw_cell.py: error: ") and message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_cli_end_to_end(tmp_path):
    """The tool runs as a script and draws a JSON genotype and a registered one."""
    genotype_json = tmp_path / "mine.json"
    NASNET_A.to_json(genotype_json)
    out = tmp_path / "cells.png"
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['draw_cell.py', {str(genotype_json)!r}, '--cell', 'both', '--engine', 'matplotlib',"
        f" '--out', {str(out)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(TOOL)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert out.read_bytes()[:8] == PNG_MAGIC

    dot_out = tmp_path / "pnas.dot"
    result = subprocess.run(
        [sys.executable, str(TOOL), "pnasnet5", "--cell", "reduce", "--out", str(dot_out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Counter(EDGE_RE.findall(dot_out.read_text())) == expected_edges(get_genotype("pnasnet5").reduce)

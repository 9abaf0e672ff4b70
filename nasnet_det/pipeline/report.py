"""The pipeline's report: one table, one plot, ``summary.json``, every number read from its source file.

Why each value carries its source: the report is the pipeline's claim ("the searched cell
transfers"), so ``summary.json`` names, for every number, the file and the field it was read
from; the slow test reads each source again and compares. The comparisons at the end are
computed from the table, and say which way they came out, including the wrong way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..durable import atomic_write, atomic_write_json, atomic_write_text
from ..errors import PipelineError
from .ledger import LEDGER_NAME

ROWS = (("searched", "searched", True), ("nasnet_a", "nasnet_a", True), ("random", "random", True),
        ("searched_scratch", "searched", False))
LABELS = {"searched": "searched cell", "nasnet_a": "NASNet-A", "random": "random cell",
          "searched_scratch": "searched cell, from scratch"}
#: column key -> (header, decimals)
COLUMNS = {"proxy_accuracy": ("proxy acc. %", 1), "pretrain_top1": ("pretrain top-1 %", 1), "AP": ("AP", 1),
           "AP50": ("AP50", 1), "params": ("params", 0), "macs": ("MACs", 0),
           "pretrain_seconds": ("pretrain s", 0), "export_seconds": ("export s", 0), "detect_seconds": ("detect s", 0)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PipelineError(f"report: cannot read {path} ({err}); rerun the step that writes it") from None


def pretrain_summary(metrics: Path) -> dict:
    """The last ``summary`` record of a pretraining run's metrics.jsonl (its final evaluation)."""
    last = None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "summary":
            last = record
    if last is None:
        raise PipelineError(f"report: {metrics} has no summary record (the pretraining did not finish)")
    return last


def _value(value: Any, source: Path, field: str) -> dict:
    return {"value": value, "source": str(source), "field": field}


def collect(out: Path) -> dict[str, dict[str, dict]]:
    """``{row: {column: {"value", "source", "field"}}}`` for the table, from the files of each step."""
    steps = _read_json(out / LEDGER_NAME)["steps"]
    ledger = out / LEDGER_NAME
    top_path = out / "search" / "top_genotypes.json"
    top = _read_json(top_path)
    rows: dict[str, dict[str, dict]] = {}
    for row, net, pretrained in ROWS:
        cells: dict[str, dict] = {}
        if net == "searched":
            cells["proxy_accuracy"] = _value(100.0 * float(top[0]["reward"]), top_path, "[0].reward x 100")
        stats_path = out / "export" / f"{net}.stats.json"
        stats = _read_json(stats_path)
        cells["params"] = _value(stats["params"], stats_path, "params")
        cells["macs"] = _value(stats["macs"], stats_path, "macs")
        if pretrained:
            metrics = out / "pretrain" / net / "metrics.jsonl"
            cells["pretrain_top1"] = _value(pretrain_summary(metrics)["ema_top1"], metrics,
                                            "last kind=summary record: ema_top1")
            for stage in ("pretrain", "export"):
                cells[f"{stage}_seconds"] = _value(steps[f"{stage}/{net}"]["seconds"], ledger,
                                                   f"steps[{stage}/{net}].seconds")
        detect_path = out / "detect" / row / "summary.json"
        detect = _read_json(detect_path)
        for key in ("AP", "AP50"):
            cells[key] = _value(detect[key], detect_path, key)
        cells["detect_seconds"] = _value(steps[f"detect/{row}"]["seconds"], ledger, f"steps[detect/{row}].seconds")
        rows[row] = cells
    return rows


def fmt(value: Any, decimals: int) -> str:
    """How the table writes a number (the test formats the source values the same way)."""
    if value is None:
        return "n/a"
    if decimals == 0:
        return f"{round(float(value)):,}"
    return f"{float(value):.{decimals}f}"


def stage_seconds(out: Path) -> dict[str, float]:
    """Wall seconds per stage (the sum of its steps' last attempts), from stages.json."""
    totals: dict[str, float] = {}
    for name, entry in _read_json(out / LEDGER_NAME)["steps"].items():
        if entry.get("status") == "done":
            stage = name.split("/")[0]
            totals[stage] = round(totals.get(stage, 0.0) + float(entry["seconds"]), 1)
    return totals


def comparisons(rows: dict[str, dict[str, dict]]) -> list[str]:
    """The three questions of the pipeline, answered from the detector AP (and AP50) as measured."""
    def ap(row: str) -> float | None:
        return rows[row]["AP"]["value"]

    def verdict(a: str, b: str, ahead: str, behind: str) -> str:
        x, y = ap(a), ap(b)
        if x is None or y is None:
            return f"{LABELS[a]} vs {LABELS[b]}: not measured (no AP)"
        said = ahead if x > y else behind if x < y else "equal AP"
        return (f"{LABELS[a]} AP {x:.1f} vs {LABELS[b]} AP {y:.1f} ({x - y:+.1f}; AP50 "
                f"{rows[a]['AP50']['value']:.1f} vs {rows[b]['AP50']['value']:.1f}): {said}")

    return [
        "pretraining: " + verdict("searched", "searched_scratch", "pretraining helped",
                                  "pretraining did NOT help (the wrong way)"),
        "search vs random: " + verdict("searched", "random", "the searched cell beats the random one",
                                       "the searched cell does NOT beat the random one (the wrong way)"),
        "search vs NASNet-A: " + verdict("searched", "nasnet_a", "the searched cell is ahead of NASNet-A",
                                         "the searched cell is behind NASNet-A"),
    ]


#: CIFAR-10's chance top-1 (%), and how close to it a pretraining counts as not having learned.
CHANCE_TOP1, CHANCE_MARGIN = 10.0, 2.0


def warnings(rows: dict[str, dict[str, dict]]) -> list[str]:
    """Pretrainings that ended at chance: their detectors start from untrained weights, so the AP
    comparisons above say nothing about transfer. Said loudly, not left to be read off the table."""
    out = []
    for row, cells in rows.items():
        top1 = cells.get("pretrain_top1", {}).get("value")
        if top1 is not None and float(top1) <= CHANCE_TOP1 + CHANCE_MARGIN:
            out.append(f"WARNING: the {LABELS[row]} pretraining did not learn (top-1 {float(top1):.1f}%, chance "
                       f"{CHANCE_TOP1:.0f}%): its detector starts from weights that learned nothing; see "
                       f"{cells['pretrain_top1']['source']} and logs/pretrain_{row}.log")
    return out


def search_warnings(out: Path) -> list[str]:
    """A weight-sharing search whose shared weights stayed at chance ranked nothing: its "searched"
    cell is a random cell, and the searched-vs-random rows compare two random cells."""
    from nasnet_det.search.report import shared_weights_check, untrained_warning

    said = untrained_warning(shared_weights_check(out / "search"))
    return [f"WARNING: the search: {said} (search/summary.json)"] if said else []


def transfer_scope(out: Path) -> dict:
    """What the pretrained detectors took from their weights (MODEL.NASNET.TRANSFER), read from the
    config detectron2 saved for the searched cell's run: the AP comparisons mean different things for
    "all" (backbone and ROI-head cells pretrained) and "backbone" (ROI-head cells trained from init)."""
    import yaml

    path = out / "detect" / "searched" / "train" / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"report: cannot read {path} ({err}); rerun the detect step") from None
    return _value(saved["MODEL"]["NASNET"].get("TRANSFER", "all"), path, "MODEL.NASNET.TRANSFER")


def transfer_note(scope: dict) -> str:
    what = ("backbone and ROI-head cells" if scope["value"] == "all" else
            "the backbone only; their ROI-head cells start from initialisation, as in the scratch run")
    return f"transfer: MODEL.NASNET.TRANSFER = {scope['value']}: the pretrained detectors take {what}"


def table_markdown(rows: dict[str, dict[str, dict]], stages: dict[str, float], notes: list[str]) -> str:
    head = "| backbone | " + " | ".join(h for h, _ in COLUMNS.values()) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for row, cells in rows.items():
        values = [fmt(cells[k]["value"], d) if k in cells else "n/a" for k, (_, d) in COLUMNS.items()]
        lines.append(f"| {LABELS[row]} | " + " | ".join(values) + " |")
    stage_line = ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
    return "\n".join(lines + ["", f"time per stage: {stage_line} (total {sum(stages.values()):.0f} s)", ""]
                     + [f"- {n}" for n in notes]) + "\n"


def plot(rows: dict[str, dict[str, dict]], path: Path) -> Path:
    """Detector AP / AP50 per backbone, and pretraining top-1, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    for i, key in enumerate(("pretrain_top1", "AP", "AP50")):
        values = [(rows[n][key]["value"] if key in rows[n] and rows[n][key]["value"] is not None else 0.0)
                  for n in names]
        ax.bar([j + (i - 1) * width for j in range(len(names))], values, width, label=COLUMNS[key][0])
    ax.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("Searched cell vs NASNet-A vs random cell: CIFAR-10 pretraining and synthetic-shapes detection")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def write_report(out: str | Path) -> dict[str, str]:
    """``report.md``, ``report.png`` and ``summary.json`` in ``out``; returns their paths."""
    out = Path(out)
    rows = collect(out)
    stages = stage_seconds(out)
    scope = transfer_scope(out)
    said = search_warnings(out) + warnings(rows)
    notes = said + comparisons(rows) + [transfer_note(scope)] + [
        "proxy acc.: the search's reward of the searched cell (only it is trained by the search); "
        "pretrain top-1: EMA weights on the CIFAR-10 test images; AP/AP50: COCOEvaluator on the held-out "
        "synthetic images; params/MACs: the pretrained classifier without aux head, MACs of one image at "
        "the pretraining size; one seed each, so small differences are within noise"]
    table = table_markdown(rows, stages, notes)
    paths = {"table": out / "report.md", "plot": out / "report.png", "summary": out / "summary.json"}
    atomic_write_text(paths["table"], table)
    plot(rows, paths["plot"])
    atomic_write_json(paths["summary"], {"rows": rows, "stage_seconds": stages, "comparisons": comparisons(rows),
                                         "warnings": said, "transfer": scope,
                                         "table": str(paths["table"]), "plot": str(paths["plot"])})
    return {k: str(v) for k, v in paths.items()}

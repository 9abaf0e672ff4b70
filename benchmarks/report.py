"""Merge the benchmark JSONs into the tables and target checks of docs/benchmarks.md.

    .venv/bin/python -m benchmarks.report            # prints markdown; --write updates the doc

Timing rows come from ``<name>.json`` (the timed run); peak memory from ``<name>_memory.json``
when the timed run skipped memory (memory does not depend on machine load, timing does).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS_DIR

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str, results: Path) -> dict[str, Any] | None:
    p = results / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _merge_memory(rows: list[dict], mem: dict | None, keys: tuple[str, ...]) -> None:
    if not mem:
        return
    index = {tuple(r.get(k) for k in keys): r for r in mem["rows"]}
    for r in rows:
        m = index.get(tuple(r.get(k) for k in keys))
        if m and "peak_mb" not in r:
            r["peak_mb"], r["delta_mb"] = m["peak_mb"], m["delta_mb"]


def _fmt(v: Any, f: str) -> str:
    if v is None:
        return "-"
    return format(v, f) if f else str(v)


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    out = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(out)


def _when(result: dict[str, Any]) -> str:
    """When and how a result was measured, for its heading: time, load at the start, threads."""
    m = result["machine"]
    return f"({m['utc']} UTC, load avg {m['loadavg_1_5_15'][0]:.1f}, {m['torch_threads']} threads)"


def _section(heading: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    return f"### {heading}\n\n{_table(rows, cols)}\n"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def build(results: Path) -> str:
    parts: list[str] = []
    targets: list[str] = []
    cls, cls_mem = _load("classifier_inference", results), _load("classifier_inference_memory", results)
    if cls:
        rows = cls["rows"]
        _merge_memory(rows, cls_mem, ("model", "impl", "batch"))
        parts.append(_section(f"Classifier inference {_when(cls)}", rows, [
            ("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("img_s", "img/s", ".3f"),
            ("speedup_vs_timm", "x timm (wall)", ".2f"), ("cpu_speedup_vs_timm", "x timm (CPU time)", ".2f"),
            ("peak_mb", "peak RSS MB", ".0f"), ("delta_mb", "step delta MB", ".0f"),
            ("rel_diff_vs_ours_plain", "max rel diff vs ours plain", ".1e"),
            ("rel_diff_vs_timm", "max rel diff vs timm", ".1e"), ("top1_agree_vs_timm", "top-1 agree", ".2f")]))
        for r in rows:
            if r["model"] == "nasnet_a_large" and r["impl"] == "ours_fast" and "speedup_vs_timm" in r:
                ok = r["speedup_vs_timm"] >= 1.5 and r.get("rel_diff_vs_ours_plain", 1) < 1e-4
                targets.append(f"- Inference, nasnet_a_large batch {r['batch']}: optimized ours / timm = "
                               f"**{r['speedup_vs_timm']:.2f}x** wall (target >= 1.5x; CPU-time ratio "
                               f"{r['cpu_speedup_vs_timm']:.2f}x), output max rel diff to the plain model "
                               f"{r.get('rel_diff_vs_ours_plain', float('nan')):.1e}: {_verdict(ok)}")
            if r["model"] == "nasnet_a_large" and r["impl"] == "ours" and "speedup_vs_timm" in r:
                targets.append(f"- (for reference) plain ours / timm, nasnet_a_large batch {r['batch']}: "
                               f"{r['speedup_vs_timm']:.2f}x wall")
    bf16 = _load("classifier_inference_bf16", results)
    if bf16:
        title = f"bf16 autocast (AMX or AVX512-BF16) inference, its own side-by-side run {_when(bf16)}"
        parts.append(_section(title, bf16["rows"], [
            ("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("img_s", "img/s", ".3f"),
            ("speedup_vs_timm", "x timm (wall)", ".2f"),
            ("rel_diff_vs_ours_plain", "max rel diff vs ours plain", ".1e"),
            ("top1_agree_vs_timm", "top-1 agree", ".2f")]))
    tr, tr_mem = _load("training_step", results), _load("training_step_memory", results)
    if tr:
        rows = tr["rows"]
        parts.append(_section(f"Training step {_when(tr)}", rows, [
            ("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("img_s", "img/s", ".3f"),
            ("speedup_vs_timm", "x timm (wall)", ".2f"), ("cpu_speedup_vs_timm", "x timm (CPU time)", ".2f")]))
        by = {r["impl"]: r for r in rows}
        if "ours" in by and "speedup_vs_timm" in by["ours"]:
            r = by["ours"]
            targets.append(f"- Training throughput, memory option off: ours / timm = **{r['speedup_vs_timm']:.2f}x** "
                           f"wall (CPU-time {r['cpu_speedup_vs_timm']:.2f}x; target >= 1.0): "
                           f"{_verdict(r['speedup_vs_timm'] >= 1.0)}")
        if "ours_cl" in by and "speedup_vs_timm" in by["ours_cl"]:
            r = by["ours_cl"]
            targets.append(f"- Training throughput, memory option off, channels_last: ours / timm = "
                           f"**{r['speedup_vs_timm']:.2f}x** wall (CPU-time {r['cpu_speedup_vs_timm']:.2f}x): "
                           f"{_verdict(r['speedup_vs_timm'] >= 1.0)}")
        if "ours_ckpt" in by and "speedup_vs_timm" in by["ours_ckpt"]:
            targets.append(f"- (for reference) training throughput with checkpointing: "
                           f"{by['ours_ckpt']['speedup_vs_timm']:.2f}x timm")
    if tr_mem:
        rows = tr_mem["rows"]
        parts.append(_section("Training step peak memory (fresh process per row; peak RSS includes the torch "
                              "runtime, weights, gradients and momentum buffers)", rows, [
            ("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"),
            ("peak_mb", "peak RSS MB", ".0f"), ("delta_mb", "step delta MB", ".0f"),
            ("peak_vs_timm", "peak / timm", ".2f"), ("delta_vs_timm", "delta / timm", ".2f")]))
        for r in rows:
            if r["impl"] == "ours_ckpt" and "peak_vs_timm" in r:
                targets.append(f"- Training memory, nasnet_a_large batch {r['batch']} with memory saving: peak RSS "
                               f"**{r['peak_vs_timm']:.2f}x** timm (whole process), step delta "
                               f"{r['delta_vs_timm']:.2f}x timm (target <= 0.6x): {_verdict(r['peak_vs_timm'] <= 0.6)}")
    det, det_mem = _load("detector_latency", results), _load("detector_latency_memory", results)
    if det:
        rows = det["rows"]
        _merge_memory(rows, det_mem, ("detector", "size"))
        parts.append(_section(f"Detector latency {_when(det)}", rows, [
            ("detector", "detector", ""), ("size", "input", "d"), ("proposals", "proposals", "d"),
            ("ms", "ms / image", ".0f"), ("cpu_ms", "CPU ms / image", ".0f"),
            ("speedup_vs_r50", "x R50-C4 (wall)", ".2f"),
            ("speedup_vs_r50_same_proposals", "x R50-C4 same proposals", ".2f"),
            ("peak_mb", "peak RSS MB", ".0f"), ("delta_mb", "step delta MB", ".0f")]))
        for r in rows:
            if r["detector"].startswith("nasnet_mobile") and "speedup_vs_r50" in r:
                same = r.get("speedup_vs_r50_same_proposals")
                targets.append(f"- Detector, {r['detector']} @ {r['size']}: {r['ms']:.0f} ms vs R50-C4 (model-zoo "
                               f"config) {r['ms'] * r['speedup_vs_r50']:.0f} ms = **{r['speedup_vs_r50']:.2f}x** "
                               f"faster (target > 1.0x): {_verdict(r['speedup_vs_r50'] > 1.0)}; vs R50-C4 given "
                               f"the same {r.get('proposals')} proposals: {_fmt(same, '.2f')}x")
    mac = _load("mac_efficiency", results)
    if mac:
        mm = mac["matmul"]
        parts.append(_section(f"Achieved multiply-adds vs dense fp32 matmul "
                              f"(torch.mm {mm['n']}^3: {mm['macs_per_s'] / 1e9:.1f} GMAC/s)", mac["rows"], [
            ("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"),
            ("gmacs_per_image", "GMACs / image", ".2f"), ("img_s", "img/s", ".3f"),
            ("achieved_gmac_s", "achieved GMAC/s", ".1f"), ("fraction_of_matmul", "fraction of matmul", ".3f")]))
    return "\n".join(parts) + "\n\n### Targets\n\n" + ("\n".join(targets) or "(no timed results yet)") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    ap.add_argument("--write", action="store_true", help=f"replace the block between the markers in {DOC}")
    args = ap.parse_args()
    text = build(args.results)
    print(text)
    if args.write:
        doc = DOC.read_text()
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()

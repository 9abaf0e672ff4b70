"""Classifier inference: images/s and peak memory, ours (plain and optimized) vs timm, same weights.

    .venv/bin/python -m benchmarks.classifier_inference                 # everything
    .venv/bin/python -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 16

Contenders per model: ``timm`` (its default NCHW fp32 eager model), ``ours`` (plain eval model),
``ours_fast`` (``optimize_for_inference``: BN folded, channels_last, shared ReLUs; fp32) and, with
``--bf16``, ``ours_bf16``. Ours carries timm's weights (converted), and the script records the
output difference to the plain model and to timm so "same outputs" is checked on the run itself.
"""
from __future__ import annotations

import sys
from typing import Any

import torch

from benchmarks import builders, common

SIZES = {"nasnet_a_large": 331, "pnasnet5_large": 331, "nasnet_a_mobile": 224}
DEFAULT_ITERS = {1: 5, 16: 3}  # batch 16 at 331 takes ~10-30 s per forward on 2 cores


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def run_model(name: str, batches: list[int], iters: int | None, warmup: int, memory: bool, timing: bool,
              bf16: bool) -> list[dict[str, Any]]:
    size = SIZES[name]
    if not timing:  # memory only: every number comes from fresh subprocesses
        names = ((["timm"] if name in builders.TIMM_PEERS else []) + ["ours", "ours_fast"]
                 + (["ours_bf16"] if bf16 else []))
        rows = []
        for batch in batches:
            for k in names:
                kw = dict(name=name, impl="timm" if k == "timm" else "ours", batch=batch, size=size,
                          optimized=k.startswith("ours_"), bf16=k == "ours_bf16")
                mem = common.measure_memory("benchmarks.builders:classifier", kw)
                print(f"   memory {name} b{batch} {k}: {mem}", flush=True)
                rows.append({"model": name, "impl": k, "batch": batch, "size": size, "memory": mem,
                             "peak_mb": mem["peak_mb"], "delta_mb": mem["delta_mb"]})
        return rows
    ours, peer = builders.build_pair_models(name)
    ours.eval()
    from nasnet_det.modeling.inference import optimize_for_inference

    models: dict[str, torch.nn.Module] = {"ours": ours, "ours_fast": optimize_for_inference(ours)}
    if bf16:
        models["ours_bf16"] = optimize_for_inference(ours, bf16=True)
    if peer is not None:
        models = {"timm": peer.eval(), **models}
    rows = []
    for batch in batches:
        x = builders._input(batch, size)
        outs = {}
        if timing:
            with torch.inference_mode():
                outs = {k: m(x) for k, m in models.items()}
        steps = {k: (lambda m=m, x=x: _infer(m, x)) for k, m in models.items()}
        n = iters or DEFAULT_ITERS.get(batch, 3)
        print(f"== {name} batch {batch} @ {size}: {n} alternating runs of {list(steps)}", flush=True)
        timings = common.time_alternating(steps, n, warmup=0) if timing else {}  # the equality forwards above warmed up
        for k in models:
            row: dict[str, Any] = {"model": name, "impl": k, "batch": batch, "size": size}
            if timing:
                t = timings[k]
                row.update(img_s=batch / t.wall_median, wall_median_s=t.wall_median, cpu_median_s=t.cpu_median,
                           img_per_cpu_s=batch / t.cpu_median, runs=t.as_dict())
            if outs:
                row["rel_diff_vs_ours_plain"] = _rel(outs[k], outs["ours"])
            if "timm" in outs:
                row["rel_diff_vs_timm"] = _rel(outs[k], outs["timm"])
                row["top1_agree_vs_timm"] = float((outs[k].argmax(1) == outs["timm"].argmax(1)).float().mean())
            if memory:
                kw = dict(name=name, impl="timm" if k == "timm" else "ours", batch=batch, size=size,
                          optimized=k.startswith("ours_"), bf16=k == "ours_bf16")
                row["memory"] = common.measure_memory("benchmarks.builders:classifier", kw)
                row["peak_mb"] = row["memory"]["peak_mb"]
                row["delta_mb"] = row["memory"]["delta_mb"]
            rows.append(row)
        if timing and "timm" in models:
            for r in rows[-len(models):]:
                base = next(q for q in rows[-len(models):] if q["impl"] == "timm")
                r["speedup_vs_timm"] = r["img_s"] / base["img_s"]
                r["cpu_speedup_vs_timm"] = base["cpu_median_s"] / r["cpu_median_s"]
    return rows


def _infer(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


COLUMNS = [("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("img_s", "img/s", ".3f"),
           ("speedup_vs_timm", "x timm (wall)", ".2f"), ("cpu_speedup_vs_timm", "x timm (cpu)", ".2f"),
           ("peak_mb", "peak MB", ".0f"), ("delta_mb", "step delta MB", ".0f"),
           ("rel_diff_vs_ours_plain", "rel diff vs ours", ".1e"), ("rel_diff_vs_timm", "rel diff vs timm", ".1e")]


def main(argv: list[str] | None = None) -> None:
    p = common.base_parser(__doc__)
    p.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--bf16", action="store_true", help="also time the bf16 autocast path")
    p.add_argument("--memory-only", action="store_true", help="skip timing (memory is contention-proof)")
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)
    print(common.machine_info(), flush=True)
    rows = []
    for name in args.models:
        rows += run_model(name, args.batches, args.iters, args.warmup, not args.no_memory, not args.memory_only,
                          args.bf16)
    table = common.print_table(rows, COLUMNS)
    common.write_json("classifier_inference" + args.tag, {"rows": rows, "table": table, "argv": sys.argv}, args.out)


if __name__ == "__main__":
    main()

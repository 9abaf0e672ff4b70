"""One training step (images/s, peak memory): nasnet_a_large vs timm nasnetalarge, same weights.

    .venv/bin/python -m benchmarks.training_step --batch 2

Contenders: ``timm``, ``ours`` (plain training forward), ``ours_ckpt`` (``enable_memory_saving``:
activation checkpointing per cell) and ``ours_cl`` (plain, channels_last weights and input).
A step is zero_grad(set_to_none) -> forward -> cross-entropy ->
backward -> SGD(momentum) step, in train mode (BN batch statistics). Ours runs without the aux
head (timm has none) and with drop-path progress 0 (keep = 1; timm has no drop-path).
Peak memory is the fresh-process VmHWM of one step after a warm-up step (so the momentum buffers
exist in both the baseline and the peak); ``delta_mb`` is activations + gradients + workspaces.
"""
from __future__ import annotations

import sys
from typing import Any

from benchmarks import builders, common

CONTENDERS = {"timm": dict(impl="timm"), "ours": dict(impl="ours"), "ours_ckpt": dict(impl="ours", memory_saving=True),
              "ours_cl": dict(impl="ours", channels_last=True)}
COLUMNS = [("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("img_s", "img/s", ".3f"),
           ("speedup_vs_timm", "x timm (wall)", ".2f"), ("cpu_speedup_vs_timm", "x timm (cpu)", ".2f"),
           ("peak_mb", "peak MB", ".0f"), ("delta_mb", "step delta MB", ".0f"),
           ("peak_vs_timm", "peak / timm", ".2f"), ("delta_vs_timm", "delta / timm", ".2f"), ("loss", "loss", ".5f")]


def main(argv: list[str] | None = None) -> None:
    p = common.base_parser(__doc__)
    p.add_argument("--model", default="nasnet_a_large", choices=list(builders.TIMM_PEERS))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=331)
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)
    print(common.machine_info(), flush=True)
    steps, losses = {}, {}
    # the memory runs measure the NCHW contenders only (timm, ours, ours_ckpt)
    contenders = {k: kw for k, kw in CONTENDERS.items() if not (args.memory_only and k == "ours_cl")}
    if not args.memory_only:
        steps = {k: builders.training(args.model, batch=args.batch, size=args.size, **kw)
                 for k, kw in contenders.items()}
        losses = {k: s() for k, s in steps.items()}  # also the warm-up (first step's one-time allocations)
    rows: list[dict[str, Any]] = []
    timings = {} if args.memory_only else common.time_alternating(steps, args.iters or 3, warmup=0)
    for k, kw in contenders.items():
        row: dict[str, Any] = {"model": args.model, "impl": k, "batch": args.batch, "size": args.size,
                               "loss": losses.get(k)}
        if timings:
            t = timings[k]
            row.update(img_s=args.batch / t.wall_median, cpu_median_s=t.cpu_median, runs=t.as_dict())
        if not args.no_memory:
            row["memory"] = common.measure_memory("benchmarks.builders:training",
                                           dict(name=args.model, batch=args.batch, size=args.size, **kw))
            row["peak_mb"], row["delta_mb"] = row["memory"]["peak_mb"], row["memory"]["delta_mb"]
        rows.append(row)
    base = rows[0]
    for r in rows:
        if timings:
            r["speedup_vs_timm"] = r["img_s"] / base["img_s"]
            r["cpu_speedup_vs_timm"] = base["cpu_median_s"] / r["cpu_median_s"]
        if "peak_mb" in r:
            r["peak_vs_timm"] = r["peak_mb"] / base["peak_mb"]
            r["delta_vs_timm"] = r["delta_mb"] / base["delta_mb"]
    table = common.print_table(rows, COLUMNS)
    common.write_json("training_step" + args.tag, {"rows": rows, "table": table, "argv": sys.argv}, args.out)


if __name__ == "__main__":
    main()

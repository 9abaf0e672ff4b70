#!/usr/bin/env python
"""Search throughput on this machine (a benchmark, not a test).

Three numbers:
  0. architectures evaluated per hour in weight-sharing mode (same child size and data as 1: one
     supernet training pass over the training images, then --ws-archs proposals each scored on one
     held-out minibatch; the wall time includes the training pass), and its ratio to 1;
  1. child trainings per hour: real CIFAR children (stated N, F, images, epochs) through the
     local process pool, measured after the workers have started (start-up reported separately);
  2. the driver's own overhead per architecture: the same driver with the synthetic no-training
     trainer and the inline executor, so all that is timed is propose + log (fsync) + PPO update.

  .venv/bin/python benchmarks/search_throughput.py --output output/bench_search.json
  # at the weight-sharing search's own size (configs/search/cifar10_weight_sharing.yaml):
  .venv/bin/python benchmarks/search_throughput.py --num-cells 2 --filters 16 --batch-size 64 --train-size 8000 \
      --val-size 2000 --children 4 --ws-epochs 2 --ws-archs 70 --output output/bench_search_ws_size.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def driver_overhead(num_archs: int, strategy: str) -> dict:
    from nasnet_det.search import InlineExecutor, load_config, run_search

    cfg = load_config(None, ["child.trainer", "synthetic", "num_archs", str(num_archs), "strategy", strategy,
                             "executor.kind", "inline"])
    folder = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    try:
        t0 = time.perf_counter()
        summary = run_search(cfg, folder, executor=InlineExecutor())
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"strategy": strategy, "archs": num_archs, "seconds": seconds,
            "ms_per_arch": 1000 * seconds / num_archs, "controller_updates": summary.updates}


def child_throughput(args: argparse.Namespace) -> dict:
    from nasnet_det.search import ProcessExecutor, load_config, run_search

    opts = ["child.num_cells", str(args.num_cells), "child.filters", str(args.filters), "child.epochs",
            str(args.epochs), "child.batch_size", str(args.batch_size), "data.train_size", str(args.train_size),
            "data.val_size", str(args.val_size), "data.root", args.data, "num_archs", str(args.children),
            "child.threads", str(args.threads), "strategy", "random"]
    cfg = load_config(None, opts)
    folder = Path(tempfile.mkdtemp(prefix="bench_child_"))
    t0 = time.perf_counter()
    pool = ProcessExecutor(args.workers, threads=args.threads)
    try:
        warm = load_config(None, opts + ["num_archs", str(args.workers)])  # one child per worker: start-up + data
        run_search(warm, folder / "warmup", executor=pool)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        summary = run_search(cfg, folder / "timed", executor=pool)
        seconds = time.perf_counter() - t1
        recs = [json.loads(x) for x in (folder / "timed" / "trials.jsonl").read_text().splitlines()]
        ok = [r for r in recs if r["status"] == "ok"]
    finally:
        pool.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    return {"children": summary.ok, "workers": args.workers, "threads_per_worker": args.threads,
            "child": {"num_cells": args.num_cells, "filters": args.filters, "epochs": args.epochs,
                      "batch_size": args.batch_size, "train_images": args.train_size, "val_images": args.val_size,
                      "params_mean": sum(r["params"] for r in ok) / len(ok),
                      "macs_mean": sum(r["macs"] for r in ok) / len(ok)},
            "pool_startup_and_first_children_s": startup, "seconds": seconds,
            "children_per_hour": 3600 * summary.ok / seconds,
            "child_seconds_mean": sum(r["seconds"] for r in ok) / len(ok)}


def weight_sharing_throughput(args: argparse.Namespace) -> dict:
    from nasnet_det.search import load_config, run_search

    opts = ["mode", "weight_sharing", "child.network.num_cells", str(args.num_cells),
            "child.network.num_conv_filters", str(args.filters), "child.batch_size", str(args.batch_size),
            "data.train_size", str(args.train_size), "data.val_size", str(args.val_size), "data.root", args.data,
            "num_archs", str(args.ws_archs), "weight_sharing.epochs", str(args.ws_epochs or args.epochs),
            "weight_sharing.final_archs", "0", "weight_sharing.eval_batch_size", str(args.ws_eval_batch)]
    cfg = load_config(None, opts)
    folder = Path(tempfile.mkdtemp(prefix="bench_ws_"))
    try:
        t0 = time.perf_counter()
        summary = run_search(cfg, folder / "ws")
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"archs": summary.ok, "seconds": seconds, "archs_per_hour": 3600 * summary.ok / seconds,
            "eval_images_per_arch": min(args.ws_eval_batch, args.val_size), "epochs": args.ws_epochs or args.epochs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--children", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-cells", type=int, default=1)
    p.add_argument("--filters", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--driver-archs", type=int, default=200)
    p.add_argument("--ws-archs", type=int, default=200, help="weight-sharing proposals scored")
    p.add_argument("--ws-epochs", type=int, default=0,
                   help="supernet training passes (default: --epochs); proposals are spread over them")
    p.add_argument("--paper-epochs", type=int, default=20,
                   help="also state children per hour at this many epochs (the paper's), from the measured one")
    p.add_argument("--ws-eval-batch", type=int, default=250, help="held-out images per weight-sharing reward")
    p.add_argument("--output", default="output/bench_search_throughput.json")
    args = p.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0],
                          "python": platform.python_version()},
              "driver_overhead": [driver_overhead(args.driver_archs, s) for s in ("ppo", "random")]}
    for d in result["driver_overhead"]:
        print(f"driver overhead ({d['strategy']}): {d['ms_per_arch']:.1f} ms per architecture "
              f"({d['archs']} archs, {d['controller_updates']} controller updates)")
    if Path(args.data, "train").is_dir():
        c = child_throughput(args)
        result["child_training"] = c
        ch = c["child"]
        print(f"child trainings: {c['children_per_hour']:.0f} per hour with {c['workers']} CPU workers x "
              f"{c['threads_per_worker']} thread (N={ch['num_cells']}, F={ch['filters']}, {ch['epochs']} epoch on "
              f"{ch['train_images']} images, reward on {ch['val_images']}; {ch['params_mean']:.0f} params, "
              f"{ch['macs_mean'] / 1e6:.1f} M multiply-adds; {c['child_seconds_mean']:.1f} s per child); "
              f"pool start-up incl. first children {c['pool_startup_and_first_children_s']:.1f} s")
        w = weight_sharing_throughput(args)
        w["ratio_vs_child_trainings"] = w["archs_per_hour"] / c["children_per_hour"]
        # A child's time is its epochs' (data and model set up once): the paper's budget per child
        # is extrapolated from the measured one, stated as such, not timed.
        w["paper_epochs"] = args.paper_epochs
        w["ratio_vs_paper_budget_children"] = w["ratio_vs_child_trainings"] * args.paper_epochs / args.epochs
        result["weight_sharing"] = w
        print(f"weight sharing: {w['archs_per_hour']:.0f} architectures evaluated per hour (same child size and "
              f"data, {w['eval_images_per_arch']} held-out images each, {w['epochs']} supernet epoch included): "
              f"{w['ratio_vs_child_trainings']:.0f}x the child trainings per hour; "
              f"~{w['ratio_vs_paper_budget_children']:.0f}x children of {args.paper_epochs} epochs (extrapolated)")
    else:
        print(f"child trainings: skipped, {args.data}/train not found")
    result["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

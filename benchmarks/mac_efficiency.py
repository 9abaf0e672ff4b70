"""Achieved multiply-adds per second vs the machine's measured dense fp32 matmul rate.

    .venv/bin/python -m benchmarks.mac_efficiency            # reads benchmarks/results/classifier_inference*.json

The physical limit is measured, not looked up: the best of several ``torch.mm`` calls on large
square fp32 matrices (n^3 multiply-adds each) with the same thread count. MACs per image come
from fvcore's ``FlopCountAnalysis`` (which counts one "flop" per multiply-add for conv/linear) on
the plain model. achieved = MACs/image x images/s; the fraction is achieved / matmul rate.
The throughputs are taken from the newest classifier_inference JSON (pass --results to choose).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import builders
from benchmarks.common import RESULTS_DIR, apply_threads, base_parser, machine_info, print_table, write_json


def matmul_rate(n: int = 4096, reps: int = 5) -> dict[str, float]:
    """Best-of-``reps`` dense fp32 ``torch.mm`` rate in multiply-adds per second (n x n x n)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return {"n": n, "best_s": best, "macs_per_s": n ** 3 / best}


def model_macs(name: str, impl: str, size: int) -> float:
    from fvcore.nn import FlopCountAnalysis

    model = builders.classifier_models(name, impl)
    x = builders._input(1, size)
    with torch.no_grad():
        fca = FlopCountAnalysis(model, x)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(fca.total())


def main(argv: list[str] | None = None) -> None:
    p = base_parser(__doc__)
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "classifier_inference.json")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    apply_threads(args.threads)
    print(machine_info(), flush=True)
    mm = matmul_rate(args.n)
    print(f"torch.mm {args.n}^3 fp32: {mm['macs_per_s'] / 1e9:.1f} GMAC/s", flush=True)
    data = json.loads(args.results.read_text())
    rows: list[dict[str, Any]] = []
    macs_cache: dict[tuple[str, str], float] = {}
    for r in data["rows"]:
        if "img_s" not in r:
            continue
        impl = "timm" if r["impl"] == "timm" else "ours"
        key = (r["model"], impl)
        if key not in macs_cache:
            macs_cache[key] = model_macs(r["model"], impl, r["size"])
        macs = macs_cache[key]
        achieved = macs * r["img_s"]
        rows.append({"model": r["model"], "impl": r["impl"], "batch": r["batch"], "gmacs_per_image": macs / 1e9,
                     "img_s": r["img_s"], "achieved_gmac_s": achieved / 1e9,
                     "fraction_of_matmul": achieved / mm["macs_per_s"]})
    table = print_table(rows, [("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"),
                               ("gmacs_per_image", "GMACs/img", ".2f"), ("img_s", "img/s", ".3f"),
                               ("achieved_gmac_s", "GMAC/s", ".1f"), ("fraction_of_matmul", "of mm peak", ".3f")])
    write_json("mac_efficiency" + args.tag, {"matmul": mm, "rows": rows, "table": table, "argv": sys.argv,
                                             "source": str(args.results)}, args.out)


if __name__ == "__main__":
    main()

"""Classifier inference: images/s and peak memory, ours (plain, optimized, compiled) vs timm and vs the
deployment runtimes (ONNX Runtime, OpenVINO) on the same weights.

    .venv/bin/python -m benchmarks.classifier_inference                 # everything
    .venv/bin/python -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 16
    .venv/bin/python -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 --threads 1 \
        --runtimes onnxruntime openvino --compile --bf16 --no-memory --tag _deploy_t1

Contenders per model: ``timm`` (its default NCHW fp32 eager model; the named peer of every ratio),
``ours`` (plain eval model), ``ours_fast`` (``optimize_for_inference``: BN folded, channels_last,
shared ReLUs; fp32), with ``--compile`` ``ours_compiled`` (``optimize_for_inference(compile=True)``:
inductor with freezing; its first call, the compilation, is timed apart as ``compile_s``; with
``--cpp-wrapper`` also ``ours_compiled_cpp``, the same plus inductor's ``cpp_wrapper``), with
``--onednn`` ``ours_onednn`` (``optimize_for_inference(compile="onednn")``: the traced, frozen,
oneDNN-Graph-fused forward; its first call, trace and profiling runs, timed apart), with
``--bf16`` ``ours_bf16`` (autocast) and, with ``--onednn`` too, ``ours_onednn_bf16``, with
``--batch-chunks C ...`` also ``ours_onednn_chunk<C>`` (the fused path in chunks of C images), and with
``--runtimes`` each runtime on two ONNX files of the same weights: ``<rt>_ours_onnx``
(``nasnet_det.deploy.export_classifier``) and ``<rt>_timm_onnx`` (timm's model through
``torch.onnx.export``), ``rt`` = ``ort`` (ONNX Runtime, fp32) or ``ov`` (OpenVINO fp32; with
``--bf16`` also ``ov_bf16`` via its inference precision hint). bf16 rows run only where this CPU has
bf16 units (``common.bf16_support``, printed). Every runtime gets ``--threads`` intra-op threads.
Ours carries timm's weights (converted); every contender's output on the same images is compared
with our plain eager model (max relative difference, top-1 agreement) so "same outputs" is
checked on the run itself.
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks import builders, common

SIZES = {"nasnet_a_large": 331, "pnasnet5_large": 331, "nasnet_a_mobile": 224}
DEFAULT_ITERS = {1: 5, 16: 3}  # batch 16 at 331 takes ~10-30 s per forward on 2 cores
RUNTIME_SHORT = {"onnxruntime": "ort", "openvino": "ov"}
#: contenders whose first call compiles (timed apart; their memory is the compiler's, not measured)
COMPILED = ("ours_compiled", "ours_onednn")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def run_model(name: str, batches: list[int], iters: int | None, memory: bool, timing: bool, bf16: bool,
              compiled: bool = False, runtimes: Sequence[str] = (), threads: int | None = None,
              check_images: int = 4, device: str = "cpu", cpp_wrapper: bool = False,
              onednn: bool = False, batch_chunks: Sequence[int] = ()) -> list[dict[str, Any]]:
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
    ours.eval().to(device)
    if peer is not None:
        peer.to(device)
    from nasnet_det.modeling.graph_fusion import DEFAULT_BATCH_CHUNK
    from nasnet_det.modeling.inference import optimize_for_inference

    models: dict[str, torch.nn.Module] = {"ours": ours, "ours_fast": optimize_for_inference(ours)}
    if bf16:
        models["ours_bf16"] = optimize_for_inference(ours, bf16=True)
    if compiled:
        models["ours_compiled"] = optimize_for_inference(ours, compile=True)
    if cpp_wrapper:
        models["ours_compiled_cpp"] = optimize_for_inference(ours, compile=True, compile_options={"cpp_wrapper": True})
    for chunk in (DEFAULT_BATCH_CHUNK, *batch_chunks) if onednn else ():
        for half in (False, True) if bf16 else (False,):
            chunked = "" if chunk == DEFAULT_BATCH_CHUNK else f"_chunk{chunk}"
            models[f"ours_onednn{chunked}{'_bf16' if half else ''}"] = optimize_for_inference(
                ours, compile="onednn", bf16=half, batch_chunk=chunk)
    if peer is not None:
        models = {"timm": peer.eval(), **models}
    folder = tempfile.TemporaryDirectory(prefix="bench_onnx_")
    exports = {}
    if runtimes:
        t0 = time.perf_counter()
        exports = builders.classifier_exports(ours, peer, size, folder.name)
        print(f"   exported {sorted(exports)} to ONNX in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for batch in batches:
        rows += _run_batch(name, size, batch, models, exports, runtimes, bf16, threads, iters, timing, memory,
                           check_images, device)
    folder.cleanup()
    return rows


def _runtime_contenders(exports: dict[str, Any], runtimes: list[str], bf16: bool, threads: int | None,
                        batch: int) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]]:
    """``{name: (run, facts)}``: each runtime on each export, with ``threads`` intra-op threads;
    OpenVINO compiled for this batch (a static shape, as its users deploy)."""
    from nasnet_det.deploy import load_exported

    out = {}
    for rt in runtimes:
        for precision in ("fp32", "bf16") if rt == "openvino" and bf16 else ("fp32",):
            for src, path in exports.items():
                run = load_exported(path, rt, threads=threads, bf16=precision == "bf16", batch=batch)
                key = f"{RUNTIME_SHORT[rt]}{'_bf16' if precision == 'bf16' else ''}_{src}_onnx"
                out[key] = (lambda a, run=run: run(a)[0],
                            {"runtime": rt, "export": src, "precision": precision})
    return out


def _run_batch(name: str, size: int, batch: int, models: dict[str, torch.nn.Module], exports: dict[str, Any],
               runtimes: list[str], bf16: bool, threads: int | None, iters: int | None, timing: bool,
               memory: bool, check_images: int, device: str) -> list[dict[str, Any]]:
    # the output check covers at least check_images images, in calls of the timed batch size (no recompilation)
    checks = [builders._input(batch, size, seed=123 + j).to(device) for j in range(math.ceil(check_images / batch))]
    x = checks[0]  # the timed input
    steps: dict[str, Callable[[], torch.Tensor]] = {}
    facts: dict[str, dict[str, Any]] = {}
    outs: dict[str, torch.Tensor] = {}
    for k, m in models.items():
        facts[k] = {"runtime": "torch", "export": "-", "precision": "bf16" if k.endswith("_bf16") else "fp32"}
        if k.startswith(COMPILED):
            facts[k].update(_time_compilation(m, x))
        with torch.inference_mode():
            outs[k] = torch.cat([m(c).float().cpu() for c in checks])
        steps[k] = lambda m=m, x=x: _infer(m, x)
    xn = x.cpu().numpy()
    for k, (run, info) in _runtime_contenders(exports, runtimes, bf16, threads, batch).items():
        facts[k] = info
        outs[k] = torch.cat([torch.from_numpy(run(c.cpu().numpy())) for c in checks])
        steps[k] = lambda run=run: run(xn)
    n = iters or DEFAULT_ITERS.get(batch, 3)
    print(f"== {name} batch {batch} @ {size}: {n} alternating runs of {list(steps)}", flush=True)
    timings = common.time_alternating(steps, n, warmup=0) if timing else {}  # the check forwards above warmed up
    rows = []
    for k in steps:
        row: dict[str, Any] = {"model": name, "impl": k, "batch": batch, "size": size, **facts[k],
                               "check_images": int(outs[k].shape[0])}
        if timing:
            t = timings[k]
            row.update(img_s=batch / t.wall_median, wall_median_s=t.wall_median, cpu_median_s=t.cpu_median,
                       ms=1e3 * t.wall_median / batch, cpu_ms=1e3 * t.cpu_median / batch,
                       img_per_cpu_s=batch / t.cpu_median, runs=t.as_dict())
        row["rel_diff_vs_ours_plain"] = _rel(outs[k], outs["ours"])
        row["top1_agree_vs_ours_plain"] = _agree(outs[k], outs["ours"])
        if "timm" in outs:
            row["rel_diff_vs_timm"] = _rel(outs[k], outs["timm"])
            row["top1_agree_vs_timm"] = _agree(outs[k], outs["timm"])
        if memory and facts[k]["runtime"] == "torch" and not k.startswith(COMPILED):
            kw = dict(name=name, impl="timm" if k == "timm" else "ours", batch=batch, size=size,
                      optimized=k.startswith("ours_"), bf16=k == "ours_bf16")
            row["memory"] = common.measure_memory("benchmarks.builders:classifier", kw)
            row["peak_mb"] = row["memory"]["peak_mb"]
            row["delta_mb"] = row["memory"]["delta_mb"]
        rows.append(row)
    if timing and "timm" in steps:
        base = next(q for q in rows if q["impl"] == "timm")
        for r in rows:
            r["speedup_vs_timm"] = r["img_s"] / base["img_s"]
            r["cpu_speedup_vs_timm"] = base["cpu_median_s"] / r["cpu_median_s"]
    return rows


def _time_compilation(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """A compiled contender's first call (Dynamo trace + inductor or its on-disk cache; or the oneDNN
    Graph trace and its profiling runs), timed apart."""
    from torch._dynamo.utils import counters

    before = dict(counters["inductor"])
    t0 = time.perf_counter()
    _infer(model, x)
    seconds = time.perf_counter() - t0
    delta = {k: v - before.get(k, 0) for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
    print(f"   compiled contender: first call (compilation) {seconds:.1f} s, FX graph cache {delta}", flush=True)
    return {"compile_s": seconds, "fx_graph_cache": delta}


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """The named comparisons of issue 13, per model and batch: time of B / time of A, > 1 = A faster."""
    lines = []
    for key in sorted({(r["model"], r["batch"]) for r in rows if "img_s" in r}):
        by = {r["impl"]: r for r in rows if (r["model"], r["batch"]) == key and "img_s" in r}
        best, best_bf16 = (_fastest_ours(by, precision) for precision in ("fp32", "bf16"))
        pairs = [(best, "timm")] + [(best, k) for k in ("ov_ours_onnx", "ov_timm_onnx", "ort_ours_onnx")]
        pairs += [(best_bf16, k) for k in ("ov_bf16_ours_onnx", "ov_bf16_timm_onnx")]
        pairs += [("ort_ours_onnx", "ort_timm_onnx"), ("ov_ours_onnx", "ov_timm_onnx")]
        for a, b in pairs:
            if a in by and b in by:
                ra, rb = by[a], by[b]
                lines.append(f"{key[0]} batch {key[1]}: {a} vs {b}: {rb['ms'] / ra['ms']:.2f}x wall "
                             f"({ra['ms']:.0f} vs {rb['ms']:.0f} ms/image), "
                             f"{rb['cpu_ms'] / ra['cpu_ms']:.2f}x CPU time "
                             f"({ra['cpu_ms']:.0f} vs {rb['cpu_ms']:.0f} ms/image); vs ours plain: "
                             f"{_agreement(ra)} / {_agreement(rb)}")
    return lines


def _fastest_ours(by: dict[str, dict[str, Any]], precision: str) -> str | None:
    """Our fastest torch contender of one precision (what a user gets from ``optimize_for_inference``)."""
    ours = [k for k in by if by[k]["runtime"] == "torch" and k.startswith("ours_") and by[k]["precision"] == precision]
    return max(ours, key=lambda k: by[k]["img_s"]) if ours else None


def _agreement(row: dict[str, Any]) -> str:
    return f"rel diff {row['rel_diff_vs_ours_plain']:.1e}, top-1 {row['top1_agree_vs_ours_plain']:.2f}"


def _infer(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    if x.is_cuda:
        torch.cuda.synchronize()  # the timer measures the work, not the launch
    return out


COLUMNS = [("model", "model", ""), ("impl", "impl", ""), ("batch", "batch", "d"), ("ms", "ms / image", ".0f"),
           ("cpu_ms", "CPU ms / image", ".0f"), ("img_s", "img/s", ".3f"), ("speedup_vs_timm", "x timm (wall)", ".2f"),
           ("cpu_speedup_vs_timm", "x timm (cpu)", ".2f"), ("peak_mb", "peak MB", ".0f"),
           ("delta_mb", "step delta MB", ".0f"), ("rel_diff_vs_ours_plain", "rel diff vs ours", ".1e"),
           ("top1_agree_vs_ours_plain", "top-1 agree vs ours", ".2f"), ("rel_diff_vs_timm", "rel diff vs timm", ".1e"),
           ("compile_s", "compile s", ".0f")]


def main(argv: list[str] | None = None) -> None:
    p = common.base_parser(__doc__)
    p.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--bf16", action="store_true",
                   help="also time the bf16 paths (ours: autocast, and fused with --onednn; OpenVINO: precision hint), "
                        "where the CPU has bf16")
    p.add_argument("--compile", action="store_true", help="also time optimize_for_inference(compile=True)")
    p.add_argument("--cpp-wrapper", action="store_true",
                   help="also time compile=True with inductor's cpp_wrapper (a much longer first compilation)")
    p.add_argument("--onednn", action="store_true",
                   help="also time optimize_for_inference(compile='onednn') (TorchScript + oneDNN Graph fusion)")
    p.add_argument("--batch-chunks", nargs="*", type=int, default=[],
                   help="with --onednn, also time the fused path with these batch_chunk values (besides the default)")
    p.add_argument("--runtimes", nargs="*", default=[], choices=list(RUNTIME_SHORT),
                   help="deployment runtimes to time on ONNX exports of the same weights (the deploy extra)")
    p.add_argument("--check-images", type=int, default=4,
                   help="images whose outputs every contender must reproduce (top-1 agreement is over these)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: torch contenders only, no memory rows)")
    p.add_argument("--memory-only", action="store_true", help="skip timing (memory is contention-proof)")
    p.add_argument("--tag", default="", help="suffix of the JSON file name")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)
    print(common.machine_info(), flush=True)
    bf16 = args.bf16
    if args.batch_chunks and not args.onednn:
        p.error("--batch-chunks times the fused path's chunk sizes: add --onednn")
    if args.device != "cpu" and (args.runtimes or args.memory_only or not args.no_memory):
        p.error("--device cuda times the torch contenders only: add --no-memory, drop --runtimes / --memory-only")
    if args.device == "cpu" and (bf16 or args.runtimes):
        support = common.bf16_support()
        print(support["note"], flush=True)
        if bf16 and not (support["torch_mkldnn_bf16"] and support["openvino_bf16"] is not False):
            print("   bf16 rows skipped: this CPU has no bf16 units; they would time a fallback, not bf16", flush=True)
            bf16 = False
    rows = []
    for name in args.models:
        rows += run_model(name, args.batches, args.iters, not args.no_memory, not args.memory_only, bf16,
                          args.compile, args.runtimes, args.threads, args.check_images, args.device,
                          args.cpp_wrapper, args.onednn, args.batch_chunks)
    table = common.print_table(rows, COLUMNS)
    lines = ratios(rows)
    print("\n".join(lines), flush=True)
    common.write_json("classifier_inference" + args.tag, {"rows": rows, "table": table, "ratios": lines,
                                                         "argv": sys.argv}, args.out)


if __name__ == "__main__":
    main()

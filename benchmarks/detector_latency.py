"""Detector latency per image (ms) and peak memory: NASNet-A Faster R-CNNs vs detectron2's R50-C4.

    .venv/bin/python -m benchmarks.detector_latency                     # mobile @600 and large @1200
    .venv/bin/python -m benchmarks.detector_latency --which mobile
    .venv/bin/python -m benchmarks.detector_latency --lowproposals --threads 1   # standard vs low-proposal
    .venv/bin/python -m benchmarks.detector_latency --lowproposals --config-file C.yaml --weights model_final.pth \
        --images val_images/ [KEY VALUE ...]            # the same, on a trained checkpoint and real images

All detectors have random weights and run on CPU on the same synthetic image of the NASNet
config's fixed test size; the R50-C4 model gets that same image size (its model-side
preprocessing does not resize; ResizeShortestEdge lives in the data mapper, not used here).
Speed does not depend on the weights except through the number of proposals reaching the second
stage, so every RPN is made to hand over exactly its config's test count, as a trained RPN does on
a real image (``benchmarks.builders._pin_proposals``): R50-C4's model-zoo 1000 and NASNet's
TF-config 50. A second R50-C4 row runs with NASNet's proposal count, to separate the backbone
from the proposal budget.
R50-C4: ``COCO-Detection/faster_rcnn_R_50_C4_1x.yaml`` from detectron2's model zoo, MODEL.DEVICE cpu.

With ``--compile`` a ``_compiled`` row runs ``optimize_detector_for_inference(compile=True)``
(each cell compiled by inductor; its first call, the compilation, is timed apart and not in the
median).

With ``--runtimes onnxruntime openvino`` the plain NASNet detector (the same object, same weights,
same pinned proposals) is exported once to ONNX (``nasnet_det.deploy.detector.export_detector``)
and each runtime runs it through ``ExportedDetector`` (``--threads`` intra-op threads), with a
bf16 OpenVINO row under ``--bf16`` where the CPU has bf16 units; each row's detections are compared
with the eager detector's (count, max box and score difference).

With ``--config-file`` and ``--weights``, ``--lowproposals`` times one trained checkpoint instead,
under the two proposal budgets of the Large configs (``builders.proposal_budgets``), on real images
through ``NASNetPredictor``, RPN not pinned; it also reports how many proposals reached the second stage.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any, Sequence

import torch

from benchmarks import builders, common

NASNETS = {"mobile": "nasnet_mobile", "large": "nasnet_large"}
RUNTIME_SHORT = {"onnxruntime": "ort", "openvino": "ov"}
COLUMNS = [("detector", "detector", ""), ("size", "input", "d"), ("proposals", "proposals", "d"),
           ("ms", "ms / image", ".0f"), ("cpu_ms", "cpu ms / image", ".0f"), ("speedup_vs_plain", "x plain", ".2f"),
           ("speedup_vs_r50", "x R50-C4 (wall)", ".2f"),
           ("speedup_vs_r50_same_proposals", "x R50-C4 same proposals", ".2f"),
           ("cpu_speedup_vs_r50", "x R50-C4 (cpu)", ".2f"), ("peak_mb", "peak MB", ".0f"),
           ("delta_mb", "step delta MB", ".0f"), ("num_detections", "dets", "d"),
           ("vs_eager_text", "detections vs eager plain", "")]


def _config_source(which: str) -> str:
    if which == "r50_c4":
        return str(builders.r50_c4_cfg().BENCHMARK_CONFIG_SOURCE)
    return builders.NASNET_CONFIGS[which]


def _runtime_steps(model: torch.nn.Module, size: int, runtimes: Sequence[str], bf16: bool, threads: int | None,
                   folder: str, prefix: str) -> dict[str, Any]:
    """``{name: (step, facts)}``: ``model`` exported once to ONNX, run by each runtime (fp32; OpenVINO also bf16)."""
    from pathlib import Path

    from nasnet_det.deploy import build_provenance
    from nasnet_det.deploy.detector import ExportedDetector, export_detector

    path = export_detector(model, "onnx", Path(folder) / prefix, (size, size),
                           build_provenance(model, "detector", "", None, {"image": [3, size, size]}))
    steps = {}
    for rt in runtimes:
        for precision in ("fp32", "bf16") if rt == "openvino" and bf16 else ("fp32",):
            name = f"{prefix}_{RUNTIME_SHORT[rt]}{'_bf16' if precision == 'bf16' else ''}"
            runner = ExportedDetector(path, (size, size), rt, threads=threads, bf16=precision == "bf16")
            steps[name] = (builders.detector_step(runner, size), {"runtime": rt, "precision": precision})
    return steps


def _agreement(got: list[dict], ref: list[dict]) -> dict[str, Any]:
    """Detections of a contender against the eager plain detector's: same count, then box/score differences."""
    a, b = got[0]["instances"], ref[0]["instances"]
    out: dict[str, Any] = {"same_count": len(a) == len(b)}
    if len(a) == len(b) and len(a):
        out["max_box_diff_px"] = float((a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max())
        out["max_score_diff"] = float((a.scores - b.scores).abs().max())
        out["same_classes"] = bool(torch.equal(a.pred_classes, b.pred_classes))
    return out


def run(which: str, iters: int, memory: bool, timing: bool, runtimes: Sequence[str] = (), bf16: bool = False,
        threads: int | None = None, compiled: bool = False) -> list[dict[str, Any]]:
    det = NASNETS[which]
    size = builders.configured_test_size(det)
    nasnet_proposals, zoo_proposals = (int(builders.detector_cfg(w, size).MODEL.RPN.POST_NMS_TOPK_TEST)
                                       for w in (det, "r50_c4"))
    contenders = {f"{det}": dict(which=det, optimized=False, proposals=nasnet_proposals),
                  f"{det}_fast": dict(which=det, optimized=True, proposals=nasnet_proposals),
                  **({f"{det}_bf16": dict(which=det, optimized=True, proposals=nasnet_proposals, bf16=True)}
                     if bf16 else {}),
                  **({f"{det}_compiled": dict(which=det, optimized=True, proposals=nasnet_proposals, compiled=True)}
                     if compiled else {}),
                  f"r50_c4_{nasnet_proposals}p": dict(which="r50_c4", optimized=False, proposals=nasnet_proposals),
                  "r50_c4": dict(which="r50_c4", optimized=False, proposals=zoo_proposals)}
    if not timing:
        rows = []
        for k, kw in contenders.items():
            if kw.get("compiled"):
                continue  # compiled code's memory is inductor's, measured apart from ours
            mem = common.measure_memory("benchmarks.builders:detector", dict(size=size, **kw))
            print(f"   memory {k} @{size}: {mem}", flush=True)
            rows.append({"detector": k, "size": size, "memory": mem, "peak_mb": mem["peak_mb"],
                         "delta_mb": mem["delta_mb"]})
        return rows
    models = {k: builders.detector_model(size=size, **kw) for k, kw in contenders.items()}
    steps = {k: builders.detector_step(m, size) for k, m in models.items()}
    facts = {k: {"runtime": "torch", "precision": "bf16" if kw.get("bf16") else "fp32"} for k, kw in contenders.items()}
    folder = tempfile.TemporaryDirectory(prefix="bench_onnx_")
    if runtimes:  # right after the eager plain detector they export
        exported = _runtime_steps(models[det], size, runtimes, bf16, threads, folder.name, det)
        steps = {det: steps[det], **{k: v[0] for k, v in exported.items()},
                 **{k: v for k, v in steps.items() if k != det}}
        facts.update({k: v[1] for k, v in exported.items()})
    outs = {}
    for k, s in steps.items():  # warm-up; the compiled contender compiles here
        t0 = time.perf_counter()
        outs[k] = s()
        if k.endswith("_compiled"):
            facts[k]["compile_s"] = time.perf_counter() - t0
            print(f"   {k}: first call (compilation) {facts[k]['compile_s']:.1f} s", flush=True)
    print(f"== detectors @ {size}x{size}: {iters} alternating runs of {list(steps)}", flush=True)
    timings = common.time_alternating(steps, iters, warmup=0) if timing else {}
    folder.cleanup()
    rows = []
    for k in steps:
        kw = contenders.get(k, contenders[det])  # an export runs the plain detector
        row: dict[str, Any] = {"detector": k, "size": size, "proposals": kw["proposals"], **facts[k],
                               "num_detections": len(outs[k][0]["instances"]), "config": _config_source(kw["which"])}
        if kw["which"] == det:
            row["vs_eager"] = _agreement(outs[k], outs[det])
            agree = row["vs_eager"]
            row["vs_eager_text"] = ("same count" if agree["same_count"] else "count differs") + "".join(
                f", {n} {agree[n]:.1e}" for n in ("max_box_diff_px", "max_score_diff") if n in agree)
        if timings:
            row.update(ms=1e3 * timings[k].wall_median, cpu_ms=1e3 * timings[k].cpu_median,
                       runs=timings[k].as_dict())
        if memory and k in contenders and not kw.get("compiled"):
            row["memory"] = common.measure_memory("benchmarks.builders:detector", dict(size=size, **kw))
            row["peak_mb"], row["delta_mb"] = row["memory"]["peak_mb"], row["memory"]["delta_mb"]
        rows.append(row)
    if timings:
        zoo, same = rows[-1], rows[-2]
        for r in rows:
            r["speedup_vs_r50"] = zoo["ms"] / r["ms"]
            r["cpu_speedup_vs_r50"] = zoo["cpu_ms"] / r["cpu_ms"]
            r["speedup_vs_r50_same_proposals"] = same["ms"] / r["ms"]
            r["speedup_vs_plain"] = rows[0]["ms"] / r["ms"]
    return rows


def run_lowproposals(iters: int, size: int) -> list[dict[str, Any]]:
    """NASNet-A Large with its standard config (500 proposals) against the low-proposal config (50),
    alternating rounds on the same image, each RPN pinned to its config's count; ratio = standard / low."""
    contenders = {w: dict(which=w, proposals=int(builders.detector_cfg(w, size).MODEL.RPN.POST_NMS_TOPK_TEST))
                  for w in ("nasnet_large", "nasnet_large_lowproposals")}
    steps = {k: builders.detector(size=size, **kw) for k, kw in contenders.items()}
    for s in steps.values():
        s()  # warm-up
    print(f"== standard vs low-proposal @ {size}x{size}: {iters} alternating runs", flush=True)
    timings = common.time_alternating(steps, iters, warmup=0)
    rows = [{"detector": k, "size": size, "proposals": kw["proposals"], "config": _config_source(k),
             "ms": 1e3 * timings[k].wall_median, "cpu_ms": 1e3 * timings[k].cpu_median, "runs": timings[k].as_dict()}
            for k, kw in contenders.items()]
    ratio = rows[0]["ms"] / rows[1]["ms"]
    for r in rows:
        r["speedup_vs_standard"] = rows[0]["ms"] / r["ms"]
    print(f"   low-proposal is {ratio:.2f}x faster than standard (wall median)", flush=True)
    return rows


def _image_files(spec: str, limit: int) -> list[str]:
    """The first ``limit`` images (sorted) of a folder, or the files a glob matches."""
    import glob
    import os

    paths = sorted(glob.glob(os.path.join(spec, "*")) if os.path.isdir(spec) else glob.glob(spec))
    paths = [p for p in paths if p.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))][:limit]
    if not paths:
        sys.exit(f"detector_latency: error: --images {spec!r} holds no .jpg/.jpeg/.png/.bmp image")
    return paths


def run_lowproposals_checkpoint(config_file: str, weights: str, images: list[str], opts: list[str],
                                iters: int) -> list[dict[str, Any]]:
    """One trained checkpoint under the standard and the low-proposal budget (``opts`` on top of
    both), alternating rounds over the same images; ms per image and proposals per image."""
    budgets = builders.proposal_budgets()
    seen: dict[str, list[int]] = {k: [] for k in budgets}
    steps = {k: builders.checkpoint_detector(config_file, weights, [*opts, *v], images, seen[k])
             for k, v in budgets.items()}
    outs = {k: s() for k, s in steps.items()}  # warm-up
    print(f"== {config_file} + {weights}, standard vs low-proposal on {len(images)} images: "
          f"{iters} alternating runs", flush=True)
    timings = common.time_alternating(steps, iters, warmup=0)
    rows = []
    for k, v in budgets.items():
        rows.append({"detector": k, "overrides": [*opts, *v], "images": len(images),
                     "proposals": sum(seen[k]) / len(seen[k]), "max_proposals": max(seen[k]),
                     "num_detections": sum(len(o) for o in outs[k]) / len(images),
                     "ms": 1e3 * timings[k].wall_median / len(images),
                     "cpu_ms": 1e3 * timings[k].cpu_median / len(images), "runs": timings[k].as_dict()})
    for r in rows:
        r["speedup_vs_standard"] = rows[0]["ms"] / r["ms"]
    print(f"   low-proposal is {rows[0]['ms'] / rows[1]['ms']:.2f}x faster than standard (wall median)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = common.base_parser(__doc__)
    p.add_argument("--which", nargs="+", default=["mobile", "large"], choices=list(NASNETS))
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--tag", default="")
    p.add_argument("--lowproposals", action="store_true", help="NASNet-A Large: standard vs low-proposal config")
    p.add_argument("--size", type=int, default=0, help="with --lowproposals: input size (default: the config's)")
    p.add_argument("--runtimes", nargs="*", default=[], choices=list(RUNTIME_SHORT),
                   help="also run the plain NASNet detector exported to ONNX in these runtimes (the deploy extra)")
    p.add_argument("--bf16", action="store_true", help="also the bf16 paths (ours, OpenVINO), where the CPU has bf16")
    p.add_argument("--compile", action="store_true",
                   help="also optimize_detector_for_inference(compile=True) (cells compiled by inductor)")
    p.add_argument("--config-file", help="with --lowproposals and --weights: a trained detector's config")
    p.add_argument("--weights", help="with --lowproposals and --config-file: that detector's checkpoint")
    p.add_argument("--images", help="with --weights: a folder or glob of images to run on")
    p.add_argument("--num-images", type=int, default=20, help="with --weights: how many of --images (sorted)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="with --weights: KEY VALUE overrides for both budgets")
    args = p.parse_args(argv)
    if bool(args.config_file) != bool(args.weights) or (args.weights and not (args.lowproposals and args.images)):
        p.error("--config-file and --weights go together, with --lowproposals and --images")
    common.apply_threads(args.threads)
    print(common.machine_info(), flush=True)
    bf16 = args.bf16
    if bf16 or args.runtimes:
        support = common.bf16_support()
        print(support["note"], flush=True)
        if bf16 and not (support["torch_mkldnn_bf16"] and support["openvino_bf16"] is not False):
            print("   bf16 rows skipped: this CPU has no bf16 units; they would time a fallback, not bf16", flush=True)
            bf16 = False
    if args.weights:
        rows = run_lowproposals_checkpoint(args.config_file, args.weights, _image_files(args.images, args.num_images),
                                           args.opts, args.iters or 3)
        table = common.print_table(rows, [COLUMNS[0], ("proposals", "proposals / image", ".1f"),
                                          ("num_detections", "dets / image", ".1f"), *COLUMNS[3:5],
                                          ("speedup_vs_standard", "x standard (wall)", ".2f")])
        common.write_json("detector_latency_lowproposals_checkpoint" + args.tag,
                          {"rows": rows, "table": table, "argv": sys.argv,
                           "config_file": args.config_file, "weights": args.weights}, args.out)
        return
    if args.lowproposals:
        size = args.size or builders.configured_test_size("nasnet_large")
        rows = run_lowproposals(args.iters or 3, size)
        table = common.print_table(rows, COLUMNS[:5] + [("speedup_vs_standard", "x standard (wall)", ".2f")])
        common.write_json("detector_latency_lowproposals" + args.tag, {"rows": rows, "table": table,
                                                                       "argv": sys.argv}, args.out)
        return
    rows = []
    for w in args.which:
        rows += run(w, args.iters or 3, not args.no_memory, not args.memory_only, args.runtimes, bf16, args.threads,
                    args.compile)
    table = common.print_table(rows, COLUMNS)
    common.write_json("detector_latency" + args.tag, {"rows": rows, "table": table, "argv": sys.argv}, args.out)


if __name__ == "__main__":
    main()

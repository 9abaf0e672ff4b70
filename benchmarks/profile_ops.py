"""Where a forward's time goes, per op type: ours (plain and ``optimize_for_inference``) under
torch.profiler, and OpenVINO on our ONNX export of the same weights under its own per-layer counters.

    .venv/bin/python -m benchmarks.profile_ops                                   # nasnet_a_large @331, batch 1
    .venv/bin/python -m benchmarks.profile_ops --model nasnet_a_mobile --threads 1 --no-openvino

Torch: every op the forward calls directly (the outermost ``aten::`` op of each call stack, so
nested ops are not counted twice) is put in one group by its name and, for convolutions, by its
weight's shape: depthwise (one input channel per group), pointwise (1x1, one group), other convs
(the stem 3x3, grouped or factorized ones). The stride-1 average pools of the plain NCHW path run
as all-ones depthwise convolutions times cached reciprocal counts (``same_padding.py``), so they
land in "depthwise conv" and "other" (the multiply). "framework" is the forward's wall time not
inside any op (Python, module calls, dispatcher). The times are the calling thread's; with
several threads the ops' work is spread over the pool inside each op.

OpenVINO: ``PERF_COUNT`` per executed node of the compiled graph, grouped the same way from the
node's type and kernel (``..._dw_...`` depthwise, ``..._1x1_...`` pointwise). Nodes that OpenVINO
fused into a convolution (ReLUs, adds, BN) are "not run"; their counts are printed.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from typing import Any

import torch

from benchmarks import builders, common

GROUPS = ("conv", "depthwise conv", "pointwise conv", "cat", "add", "relu", "pooling", "batch norm",
          "copies/layout", "other", "framework")
_BY_NAME = {
    "aten::cat": "cat", "aten::add": "add", "aten::add_": "add", "aten::relu": "relu", "aten::relu_": "relu",
    "aten::clamp_min": "relu", "aten::clamp_min_": "relu", "aten::max_pool2d": "pooling",
    "aten::avg_pool2d": "pooling", "aten::adaptive_avg_pool2d": "pooling", "aten::mean": "pooling",
    "aten::max_pool2d_with_indices": "pooling", "aten::batch_norm": "batch norm",
    "aten::native_batch_norm": "batch norm", "aten::_batch_norm_impl_index": "batch norm",
    "aten::copy_": "copies/layout", "aten::contiguous": "copies/layout", "aten::clone": "copies/layout",
    "aten::to": "copies/layout", "aten::_to_copy": "copies/layout", "aten::constant_pad_nd": "copies/layout",
    "aten::pad": "copies/layout",
}
_CONV = ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution")


def conv_group(input_shape: list[int], weight_shape: list[int]) -> str:
    """depthwise / pointwise / conv from the (N, C, H, W) input and (O, C/groups, kh, kw) weight shapes."""
    if len(weight_shape) != 4 or len(input_shape) != 4:
        return "conv"
    if weight_shape[1] == 1 and input_shape[1] > 1:
        return "depthwise conv"
    if weight_shape[2:] == [1, 1] and weight_shape[1] == input_shape[1]:
        return "pointwise conv"
    return "conv"


def torch_group(name: str, shapes: list[list[int]]) -> str:
    if name in _CONV:
        return conv_group(shapes[0], shapes[1]) if len(shapes) > 1 else "conv"
    return _BY_NAME.get(name, "other")


def profile_torch(model: torch.nn.Module, x: torch.Tensor, iters: int) -> dict[str, Any]:
    """Per-group milliseconds per forward (median over ``iters`` profiled forwards after one warm-up)."""
    with torch.inference_mode():
        model(x)
    per_iter: list[dict[str, float]] = []
    for _ in range(iters):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(x)
            wall_ms = 1e3 * (time.perf_counter() - t0)
        ms: dict[str, float] = defaultdict(float)
        for ev in prof.events():
            if not ev.name.startswith("aten::"):
                continue
            parent = ev.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            if parent is None:  # outermost op: its time includes what it calls
                ms[torch_group(ev.name, [list(s) for s in ev.input_shapes])] += ev.cpu_time_total / 1e3
        ms["framework"] = max(wall_ms - sum(ms.values()), 0.0)
        ms["total"] = wall_ms
        per_iter.append(ms)
    return {g: statistics.median(m.get(g, 0.0) for m in per_iter) for g in (*GROUPS, "total")}


def openvino_group(node_type: str, exec_type: str) -> str:
    if node_type in ("Convolution", "GroupConvolution"):
        if "_dw" in exec_type or node_type == "GroupConvolution":
            return "depthwise conv"
        return "pointwise conv" if "1x1" in exec_type else "conv"
    return {"Concat": "cat", "Add": "add", "Relu": "relu", "MaxPool": "pooling", "AvgPool": "pooling",
            "ReduceMean": "pooling", "Reorder": "copies/layout", "Transpose": "copies/layout",
            "Pad": "copies/layout", "Slice": "copies/layout"}.get(node_type, "other")


def profile_openvino(path: str, x: torch.Tensor, threads: int | None, iters: int) -> dict[str, Any]:
    """OpenVINO's own per-node counters (fp32, static shape), grouped like the torch profile."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({i.get_any_name(): list(x.shape) for i in model.inputs})
    config: dict[str, Any] = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", config).create_infer_request()
    data = np.ascontiguousarray(x.numpy())
    request.infer([data])
    per_iter, fused = [], Counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        request.infer([data])
        wall_ms = 1e3 * (time.perf_counter() - t0)
        ms: dict[str, float] = defaultdict(float)
        fused = Counter()
        for node in request.get_profiling_info():
            if "EXECUTED" in str(node.status):
                ms[openvino_group(node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e3
            elif node.node_type not in ("Parameter", "Result", "Constant"):
                fused[node.node_type] += 1
        ms["framework"] = max(wall_ms - sum(ms.values()), 0.0)
        ms["total"] = wall_ms
        per_iter.append(ms)
    out: dict[str, Any] = {g: statistics.median(m.get(g, 0.0) for m in per_iter) for g in (*GROUPS, "total")}
    out["not_run"] = dict(fused)
    return out


def table(profiles: dict[str, dict[str, Any]]) -> str:
    names = list(profiles)
    head = "| op group | " + " | ".join(f"{n} ms | {n} %" for n in names) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(names))]
    for g in (*GROUPS, "total"):
        cells = []
        for n in names:
            ms, total = profiles[n].get(g, 0.0), profiles[n]["total"]
            cells += [f"{ms:.1f}", f"{100 * ms / total:.0f}"]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SIZES = {"nasnet_a_large": 331, "pnasnet5_large": 331, "nasnet_a_mobile": 224}


def main(argv: list[str] | None = None) -> None:
    p = common.base_parser(__doc__)
    p.add_argument("--model", default="nasnet_a_large", choices=list(SIZES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO's per-layer profile of our export")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    common.apply_threads(args.threads)
    iters = args.iters or 3
    machine = common.machine_info()
    print(machine, flush=True)
    from nasnet_det.modeling.inference import optimize_for_inference

    ours, _ = builders.build_pair_models(args.model)
    ours.eval()
    size = SIZES[args.model]
    x = builders._input(args.batch, size)
    profiles = {"plain": profile_torch(ours, x, iters),
                "optimize_for_inference": profile_torch(optimize_for_inference(ours), x, iters)}
    if not args.no_openvino:
        with tempfile.TemporaryDirectory(prefix="profile_onnx_") as folder:
            path = builders.classifier_exports(ours, None, size, folder)["ours"]
            profiles["OpenVINO (our export)"] = profile_openvino(str(path), x, args.threads, iters)
        print(f"OpenVINO nodes fused away (not run): {profiles['OpenVINO (our export)']['not_run']}", flush=True)
    text = table(profiles)
    print(f"{args.model} @{size}, batch {args.batch}, {torch.get_num_threads()} torch threads, "
          f"median of {iters} profiled forwards, load average {machine['loadavg_1_5_15']}:\n{text}", flush=True)
    common.write_json("profile_ops" + args.tag, {"model": args.model, "size": size, "batch": args.batch,
                                                 "profiles": profiles, "table": text, "argv": sys.argv}, args.out)


if __name__ == "__main__":
    main()

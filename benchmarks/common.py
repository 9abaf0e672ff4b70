"""The measurement harness shared by every benchmark script.

Timing: all contenders live in one process and run *alternately* (A B A B ..., the order
flipping every round) after warm-up, so slow drift of the machine (other jobs, thermal, turbo)
hits both sides equally; we report medians and also process CPU time, which is far less
sensitive to other processes than wall time on a shared machine.

Memory: tracemalloc does not see torch's C++ allocations, and peak RSS of a process that already
ran other models is meaningless, so each memory number comes from a FRESH subprocess
(``python -m benchmarks.common --job ...``) that builds one model, runs one warm-up step, then
resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and runs
ONE measured step. Reported: ``peak_mb`` = VmHWM after the step (weights included) and
``delta_mb`` = VmHWM - VmRSS before the step (activations, workspaces, gradients). glibc is told
to serve every allocation >= 64 KiB by mmap and to trim freed memory (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_), so freed tensors leave RSS at once and the baseline is not inflated by
cached free memory. Caveat: RSS is per page, so lazily-touched buffers count only once written.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

Step = Callable[[], Any]


# ---------------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, load average: what a reader needs to compare numbers."""
    import torch

    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "loadavg_1_5_15": os.getloadavg(),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def bf16_support() -> dict[str, Any]:
    """Whether bf16 rows mean anything here: the CPU's flags, torch's and OpenVINO's own verdicts.

    Without AVX512-BF16 or AMX, torch's bf16 convolutions leave oneDNN for reference kernels
    (a depthwise conv ~50x slower than fp32 on an AVX2 EPYC) and OpenVINO silently keeps f32
    under its bf16 hint, so a bf16 row would time a fallback, not bf16.
    """
    import torch

    info = machine_info()
    out: dict[str, Any] = {"amx_bf16": info["amx_bf16"], "avx512_bf16": info["avx512_bf16"],
                           "torch_mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    try:
        import openvino

        out["openvino_bf16"] = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        out["openvino_bf16"] = None
    out["note"] = ("bf16: " + ("AMX" if out["amx_bf16"] else "no AMX") + ", "
                   + ("AVX512-BF16" if out["avx512_bf16"] else "no AVX512-BF16") + " in /proc/cpuinfo flags; "
                   f"torch oneDNN bf16 kernels: {'yes' if out['torch_mkldnn_bf16'] else 'no'}; "
                   f"OpenVINO bf16: {'yes' if out['openvino_bf16'] else 'no'}")
    return out


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Per-run wall and process-CPU seconds of one contender."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def as_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "wall_median_s": self.wall_median,
                "cpu_median_s": self.cpu_median}


def time_alternating(steps: dict[str, Step], iters: int, warmup: int = 1, log: bool = True) -> dict[str, Timing]:
    """Warm each step up, then run them in alternating order ``iters`` times each; per-run timings.

    The order is reversed every round (A B, B A, A B, ...) so neither side always follows the other.
    """
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    out = {n: Timing() for n in names}
    for r in range(iters):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            steps[n]()
            t1, c1 = time.perf_counter(), time.process_time()
            out[n].wall.append(t1 - t0)
            out[n].cpu.append(c1 - c0)
            if log:
                print(f"    [{r + 1}/{iters}] {n}: {t1 - t0:.3f}s wall, {c1 - c0:.3f}s cpu", flush=True)
    return out


# ---------------------------------------------------------------------------------------------------
# Peak memory in a fresh subprocess
# ---------------------------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def resolve(target: str) -> Callable[..., Step]:
    """``"module:function"`` -> the function (a step builder)."""
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Inside the fresh subprocess: build, warm up, reset the high-water mark, measure one step."""
    import torch

    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    step = resolve(job["builder"])(**job.get("kwargs", {}))
    step()  # warm-up: one-time allocations (oneDNN primitives, optimizer state) are not the step's
    gc.collect()
    exact = _reset_peak_rss()
    base_kb = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    step()
    wall = time.perf_counter() - t0
    peak_kb = _proc_status_kb("VmHWM")
    return {"peak_mb": peak_kb / 1024, "base_mb": base_kb / 1024, "delta_mb": (peak_kb - base_kb) / 1024,
            "hwm_reset": exact, "wall_s": wall}


def measure_memory(builder: str, kwargs: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Peak memory of one step of ``builder(**kwargs)`` in a fresh Python process (see module doc)."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    job = json.dumps({"builder": builder, "kwargs": kwargs})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.common", "--job", job], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMJSON "):
            return json.loads(line[len("MEMJSON "):])
    raise RuntimeError(f"memory job {builder} {kwargs} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------
def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table of ``rows``; ``columns`` = (key, header, format). Returns the text printed."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``payload`` (plus machine info) to ``benchmarks/results/<name>.json``."""
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"machine": machine_info(), **payload}
    from nasnet_det.durable import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}", flush=True)
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--iters", type=int, default=None, help="measured runs per contender (default per script)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", type=Path, default=None, help="directory for the JSON (default benchmarks/results)")
    return p


def apply_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def main() -> None:
    ap = argparse.ArgumentParser(description="run one memory job (internal)")
    ap.add_argument("--job", required=True)
    args = ap.parse_args()
    print("MEMJSON " + json.dumps(_run_job(json.loads(args.job))), flush=True)


if __name__ == "__main__":
    main()

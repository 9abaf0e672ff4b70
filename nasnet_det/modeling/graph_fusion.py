"""oneDNN Graph fusion of a whole NASNet forward: the compiled path ``optimize_for_inference(compile="onednn")``.

Why: on a CPU, NASNet-A is a chain of thousands of small depthwise and 1x1 convolutions with
ReLU / add / concat glue between them. Eager PyTorch calls oneDNN one op at a time; OpenVINO and
ONNX Runtime compile the graph and fuse the glue into the convolutions. PyTorch ships the same
kind of graph compiler for TorchScript: oneDNN Graph ("LLGA", ``torch.jit.enable_onednn_fusion``)
partitions a frozen graph into fused conv + post-op kernels with weights packed once. On
nasnet_a_large @331 it is faster than inductor's freezing path and ready in seconds instead of
minutes (docs/benchmarks.md, "oneDNN Graph").

How: per input shape, the model's own forward is traced (``torch.jit.trace``: the one cell
forward path, nothing written twice), frozen (weights become constants) and run with oneDNN Graph
fusion on; the executor profiles the first calls and fuses from the third on, and that fused call
is checked against the plain forward once (``FusedGraphs``). Traces are kept for the last few
shapes (each holds its own copy of the weights: a second shape of nasnet_a_large added 460 MB of
resident memory to its 356 MB of weights). Only eval-mode CPU calls on float32 inputs without
gradients take this path; anything else runs the plain forward.

bf16 (``optimize_for_inference(bf16=True, compile="onednn")``): the trace runs inside the model's
bf16 autocast, so it records the casts; freezing folds the weights' casts into bf16 constants and
oneDNN Graph fuses bf16 convolutions with their glue (on an AVX512-BF16 CPU: 1.33-1.49x the
eager autocast path on nasnet_a_large, docs/benchmarks.md). The check then compares with the plain
bf16 forward at a bf16 tolerance (``BF16_TOLERANCE``): the two round at different points.

TorchScript is deprecated upstream (torch 2.14 warns on ``torch.jit.trace`` / ``freeze``; this
module silences those warnings, since the user chose this path). It works on the torch this
project pins; when TorchScript goes, ``compile=True`` (inductor) remains.
"""
from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from typing import Any, Iterator

import torch

#: calls a new trace needs before the fused kernels run: the profiling executor's warm-up
PROFILING_CALLS = 2
#: images per fused call by default (``FusedGraphs.batch_chunk``): on nasnet_a_large @331, batch 16,
#: chunks of 2 were the fastest or on par at 1 and 2 threads, fp32 and bf16 (docs/benchmarks.md)
DEFAULT_BATCH_CHUNK = 2
#: the check's bound for float32 traces: float32 reordering gives ~1e-6
FP32_TOLERANCE = 1e-5
#: the check's bound for bf16 traces: a fused bf16 trace and the eager bf16 forward differ by ~4e-3
#: (relative) on nasnet_a_large, where they round at different points; the wiring faults it must
#: catch were 16-36 % off
BF16_TOLERANCE = 5e-2


def check_batch_chunk(batch_chunk: int | None) -> int | None:
    """``batch_chunk`` itself when it is None or a positive int; else a ValueError naming it."""
    if batch_chunk is not None and (isinstance(batch_chunk, bool) or not isinstance(batch_chunk, int)
                                    or batch_chunk < 1):
        raise ValueError(f"batch_chunk={batch_chunk!r}: expected a positive number of images or None")
    return batch_chunk


@contextlib.contextmanager
def _onednn_fusion() -> Iterator[None]:
    """oneDNN Graph fusion on for TorchScript graphs run inside (a process-wide switch, restored after)."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


class FusedGraphs:
    """Traced, frozen, oneDNN-Graph-fused forwards of one model, by input shape.

    Every new trace is checked once against the plain forward on the input that made it: oneDNN
    Graph fusion in torch 2.14 computes some cell wirings wrongly (two blocks of one PNASNet-5 cell
    adding the same state; docs/benchmarks.md) and refuses others with a RuntimeError. A trace that
    fails, or disagrees by more than ``tolerance`` (max difference relative to the largest plain
    output), is dropped with a warning and that shape runs the plain forward, so this path never
    returns other numbers than the plain model. An input the plain model rejects raises its error.

    Args:
        batch_chunk: larger batches run in chunks of at most this many images (None: whole), so
            each fused kernel's activations stay near the caches, as the ROI head's chunks do
            (nasnet_a_large @331, batch 16: chunks of 2 1.06x / 1.07x faster than chunks of 4 at
            1 / 2 threads in fp32, and the whole batch in one trace 1.2x slower than any chunk).
        max_shapes: traces kept (least recently used dropped first).
        tolerance: the check's bound: ``FP32_TOLERANCE``, the equality the fast paths keep with the
            plain model, or ``BF16_TOLERANCE`` for a model running under bf16 autocast.
    """

    def __init__(self, batch_chunk: int | None = DEFAULT_BATCH_CHUNK, max_shapes: int = 4,
                 tolerance: float = FP32_TOLERANCE) -> None:
        self.batch_chunk = check_batch_chunk(batch_chunk)
        self.max_shapes = max_shapes
        self.tolerance = tolerance
        self._graphs: OrderedDict[tuple, torch.jit.ScriptModule | None] = OrderedDict()  # None: plain forward
        self._plain = False  # set while the plain forward runs for the check

    def applies(self, model: torch.nn.Module, x: Any) -> bool:
        """Whether a call of ``model`` on ``x`` takes the fused path (else: the plain forward)."""
        return (not self._plain and isinstance(x, torch.Tensor) and not model.training
                and not torch.is_grad_enabled() and not torch.jit.is_tracing() and x.device.type == "cpu"
                and x.dtype == torch.float32)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor) -> Any:
        """``model(x)`` through the fused trace for ``x``'s shape (traced and checked on first sight)."""
        if self.batch_chunk is not None and x.shape[0] > self.batch_chunk:
            return torch.cat([self(model, part) for part in x.split(self.batch_chunk)])
        key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last))
        if key in self._graphs:
            graph = self._graphs.pop(key)
        else:
            graph = self._build(model, x)
        self._graphs[key] = graph
        while len(self._graphs) > self.max_shapes:
            self._graphs.popitem(last=False)
        if graph is None:
            return self._plain_forward(model, x)
        with _onednn_fusion():
            return graph(x)

    def _build(self, model: torch.nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule | None:
        """The checked trace for ``x``'s shape, or None (with a warning) when fusion fails or disagrees."""
        try:
            with _onednn_fusion():
                graph = self._trace(model, x)
                fused = graph(x)
        except RuntimeError as err:  # oneDNN Graph refusing a graph ("bad optional access", strides...)
            graph, fused, fault = None, None, (str(err).strip().splitlines() or [type(err).__name__])[0]
        plain = self._plain_forward(model, x)  # a wrong input fails here, as it would without fusion
        if fused is not None:
            fused, reference = fused.float(), plain.float()  # bf16 traces compare in float32
            diff = float((fused - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
            fault = f"it differs from the plain forward by {diff:.1e} (relative)"
            if diff <= self.tolerance:
                return graph
        warnings.warn(f"optimize_for_inference(compile='onednn'): the fused trace for input shape {tuple(x.shape)} "
                      f"is not used: {fault}; a oneDNN Graph fault of this torch, so this shape runs the plain "
                      f"forward", stacklevel=3)
        return None

    def _plain_forward(self, model: torch.nn.Module, x: torch.Tensor) -> Any:
        self._plain = True
        try:
            return model(x)
        finally:
            self._plain = False

    @staticmethod
    def _trace(model: torch.nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
        # check_trace would run the model twice more; the trace is of straight-line code (the
        # network's Python control flow depends on shapes only, which the key fixes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the sizes the trace fixes: keyed on
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            graph = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False).eval())
            for _ in range(PROFILING_CALLS):
                graph(x)
        return graph

    def __len__(self) -> int:
        return len(self._graphs)

    def __deepcopy__(self, memo: dict) -> "FusedGraphs":
        # the traces hold the old model's weights: a copy starts empty
        return FusedGraphs(self.batch_chunk, self.max_shapes, self.tolerance)

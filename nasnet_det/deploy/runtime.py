"""Run an exported file in TorchScript, ONNX Runtime or OpenVINO behind one call: arrays in, arrays out.

The optional runtimes come from the ``deploy`` extra (``pip install -e .[deploy]``); ``require``
turns their absence into one error that says so.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DeployError

RUNTIMES = ("torch", "onnxruntime", "openvino")


def require(module: str) -> Any:
    """Import an optional deploy dependency, or one DeployError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DeployError(f"{module} is not installed: install the deploy extra "
                          f"(pip install -e '.[deploy]') to export or run exported models") from err


#: An input as a file declares it: its name, and per dimension a size or a name (a dynamic dimension).
InputSpec = tuple[str, list[int | str | None]]
Runner = Callable[..., list[np.ndarray]]


def _torchscript(path: Path, threads: int | None, bf16: bool, batch: int | None) -> tuple[Runner, list[InputSpec]]:
    if bf16:
        raise DeployError("runtime torch: bf16 runs through optimize_for_inference(bf16=True), not a TorchScript file")
    import torchvision  # noqa: F401  (registers torchvision::nms & co., which exported detectors call)

    from .provenance import TORCHSCRIPT_EXTRA, declared_inputs

    if threads:
        torch.set_num_threads(threads)
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise _unreadable(path, err) from err
    # a trace fixes the image size without checking it: the provenance says which size was traced
    specs = declared_inputs(json.loads(extra[TORCHSCRIPT_EXTRA] or "{}"))

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    return run, specs


def _onnxruntime(path: Path, threads: int | None, bf16: bool, batch: int | None) -> tuple[Runner, list[InputSpec]]:
    if bf16:
        raise DeployError("runtime onnxruntime: its CPU provider has no bf16 kernels for these graphs; use openvino")
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail...), not importable by name
        raise _unreadable(path, err) from err
    specs = [(i.name, list(i.shape)) for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {name: a for (name, _), a in zip(specs, arrays)})

    return run, specs


def _openvino(path: Path, threads: int | None, bf16: bool, batch: int | None) -> tuple[Runner, list[InputSpec]]:
    ov = require("openvino")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        raise _unreadable(path, err) from err
    dynamic = {i.get_any_name(): i.get_partial_shape() for i in model.inputs
               if i.get_partial_shape().rank.is_static and i.get_partial_shape()[0].is_dynamic}
    if batch and dynamic:
        # a static shape lets OpenVINO plan memory and pick kernels once (~15% faster on NASNet-A Mobile)
        model.reshape({name: ov.PartialShape([ov.Dimension(batch), *list(shape)[1:]])
                       for name, shape in dynamic.items()})
    compiled = core.compile_model(model, "CPU", config)
    specs = [(i.get_any_name(), [d.get_length() if d.is_static else None for d in i.get_partial_shape()])
             for i in compiled.inputs]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        result = compiled(list(arrays))
        return [np.asarray(result[o]) for o in compiled.outputs]

    return run, specs


def _unreadable(path: Path, err: Exception) -> DeployError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return DeployError(f"exported file {str(path)!r} cannot be loaded ({first}): it is damaged or not an export; "
                       f"export it again with tools/export.py")


def check_inputs(path: Path, specs: list[InputSpec], arrays: tuple[np.ndarray, ...]) -> None:
    """One DeployError for inputs the file was not exported for (runtimes raise their own long errors,
    and a TorchScript trace may even run on another image size and give wrong numbers)."""
    if not specs:  # a TorchScript file without nasnet_det's provenance declares nothing to check against
        return
    if len(arrays) != len(specs):
        raise DeployError(f"exported file {str(path)!r} takes {len(specs)} input(s) "
                          f"({', '.join(name for name, _ in specs)}), got {len(arrays)}")
    for (name, dims), a in zip(specs, arrays):
        a = np.asarray(a)
        if a.dtype != np.float32:
            raise DeployError(f"exported file {str(path)!r}: input {name!r} must be float32, got {a.dtype}")
        if a.ndim != len(dims) or any(isinstance(d, int) and d != n for d, n in zip(dims, a.shape)):
            wanted = ", ".join("any" if not isinstance(d, int) else str(d) for d in dims)
            raise DeployError(f"exported file {str(path)!r}: input {name!r} has shape {tuple(a.shape)}, the file "
                              f"takes ({wanted}); resize the images to that size, or export again for yours")


_LOADERS = {"torch": _torchscript, "onnxruntime": _onnxruntime, "openvino": _openvino}


def load_exported(path: str | os.PathLike, runtime: str, threads: int | None = None,
                  bf16: bool = False, batch: int | None = None) -> Runner:
    """A function running ``path`` in ``runtime``: float32 arrays in, the outputs' arrays out.

    ``torch`` runs TorchScript files; ``onnxruntime`` and ``openvino`` run ONNX files. ``threads``
    sets the runtime's intra-op threads. ``bf16`` asks OpenVINO for bf16 inference (its precision
    hint; on a CPU without AMX / AVX512-BF16 OpenVINO keeps f32). ``batch`` fixes a dynamic batch
    dimension for OpenVINO, which compiles static shapes to faster code; the other runtimes take
    any batch either way.
    """
    if runtime not in RUNTIMES:
        raise DeployError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"exported file {str(path)!r} does not exist")
    wanted = ".pt" if runtime == "torch" else ".onnx"
    if path.suffix != wanted:
        raise DeployError(f"runtime {runtime} runs {wanted} files, got {str(path)!r}")
    run, specs = _LOADERS[runtime](path, threads, bf16, batch)

    def checked(*arrays: np.ndarray) -> list[np.ndarray]:
        check_inputs(path, specs, arrays)
        return run(*arrays)

    return checked

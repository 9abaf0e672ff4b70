"""Run an exported file in TorchScript, ONNX Runtime or OpenVINO behind one call: arrays in, arrays out.

The optional runtimes come from the ``deploy`` extra (``pip install -e .[deploy]``); ``require``
turns their absence into one error that says so.
"""
from __future__ import annotations

import importlib
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


def _torchscript(path: Path, threads: int | None, bf16: bool, batch: int | None) -> Callable[..., list[np.ndarray]]:
    if bf16:
        raise DeployError("runtime torch: bf16 runs through optimize_for_inference(bf16=True), not a TorchScript file")
    if threads:
        torch.set_num_threads(threads)
    module = torch.jit.load(str(path), map_location="cpu")

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    return run


def _onnxruntime(path: Path, threads: int | None, bf16: bool, batch: int | None) -> Callable[..., list[np.ndarray]]:
    if bf16:
        raise DeployError("runtime onnxruntime: its CPU provider has no bf16 kernels for these graphs; use openvino")
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, arrays)))

    return run


def _openvino(path: Path, threads: int | None, bf16: bool, batch: int | None) -> Callable[..., list[np.ndarray]]:
    ov = require("openvino")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    model = core.read_model(str(path))
    dynamic = {i.get_any_name(): i.get_partial_shape() for i in model.inputs
               if i.get_partial_shape().rank.is_static and i.get_partial_shape()[0].is_dynamic}
    if batch and dynamic:
        # a static shape lets OpenVINO plan memory and pick kernels once (~15% faster on NASNet-A Mobile)
        model.reshape({name: ov.PartialShape([ov.Dimension(batch), *list(shape)[1:]])
                       for name, shape in dynamic.items()})
    compiled = core.compile_model(model, "CPU", config)

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        result = compiled(list(arrays))
        return [np.asarray(result[o]) for o in compiled.outputs]

    return run


_LOADERS = {"torch": _torchscript, "onnxruntime": _onnxruntime, "openvino": _openvino}


def load_exported(path: str | os.PathLike, runtime: str, threads: int | None = None,
                  bf16: bool = False, batch: int | None = None) -> Callable[..., list[np.ndarray]]:
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
    return _LOADERS[runtime](path, threads, bf16, batch)

"""Trace a module into TorchScript or ONNX and attach the provenance; shared by classifiers and detectors."""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from ..errors import DeployError
from .provenance import TORCHSCRIPT_EXTRA

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
#: ONNX opset: 17 is read by every onnxruntime and openvino release of the last years.
OPSET = 17


@contextlib.contextmanager
def _quiet_trace() -> Iterator[None]:
    """Tracer warnings name the Python ints the trace fixes (the spatial size): expected, documented."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # detectron2's post-processing indexes boxes with the output of nonzero / nms, never negative, so
        # the exporter's "if indices include negative values, ... incorrect results" cannot apply; the
        # exported detectors match the eager one (tests/test_deploy_detector.py)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing",
                                category=UserWarning)
        # torch 2.9+ calls TorchScript deprecated; it is still the format the runtimes and this export read
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def write_torchscript(module: torch.nn.Module, example: tuple, path: str | os.PathLike,
                      provenance: Mapping[str, str]) -> Path:
    """``torch.jit.trace`` ``module`` on ``example`` and save it with the provenance as an extra file."""
    with _quiet_trace(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    path = _writable(path)
    try:
        traced.save(str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(dict(provenance), sort_keys=True)})
    except RuntimeError as err:  # torch reports a failed write as a RuntimeError
        raise DeployError(f"cannot write {str(path)!r}: {str(err).strip().splitlines()[0]}") from err
    return path


def _writable(path: str | os.PathLike) -> Path:
    """``path`` with its folder made, or one DeployError naming it (read-only disk, a file in the way...)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise DeployError(f"cannot write {str(path)!r}: {err.strerror or err}{where}; choose another --out") from err
    return path


def write_onnx(module: torch.nn.Module, example: tuple, path: str | os.PathLike, provenance: Mapping[str, str],
               input_names: Sequence[str], output_names: Sequence[str],
               dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> Path:
    """Export through the TorchScript-based ONNX exporter (``dynamo=False``: it needs no onnxscript
    and handles detectron2's traced graphs), then store the provenance in ``metadata_props``."""
    from .runtime import require

    onnx = require("onnx")
    path = _writable(path)
    try:
        with _quiet_trace(), torch.no_grad():
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dict(dynamic_axes or {}))
    except Exception as err:  # the exporter raises many types; the message is what a user needs
        raise DeployError(f"ONNX export to {str(path)!r} failed: {str(err).splitlines()[0]}") from err
    proto = onnx.load(str(path))
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DeployError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt

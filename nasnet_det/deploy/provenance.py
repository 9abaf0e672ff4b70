"""What an exported file says about its origin: genotype, network and run config, source weights.

Stored as string key/values: ONNX ``metadata_props`` and a TorchScript extra file
(``nasnet_det_provenance.json``) hold the same dict, and ``read_provenance`` reads either back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import DeployError
from ..weights.io import file_sha256, model_metadata

TORCHSCRIPT_EXTRA = "nasnet_det_provenance.json"


def build_provenance(network: torch.nn.Module, kind: str, config_yaml: str, weights: str | None,
                     inputs: Mapping[str, Any]) -> dict[str, str]:
    """The provenance of an export of ``network`` (a NASNet, or a detector holding one).

    ``weights`` None means random initialisation, said so explicitly rather than left blank.
    """
    from .. import __version__
    from ..modeling.network import NASNet

    network = next((m for m in network.modules() if isinstance(m, NASNet)), network)

    meta = {"nasnet_det_version": str(__version__), "kind": kind, "config": config_yaml,
            "source_weights": os.path.abspath(weights) if weights else "none (random initialisation)",
            "source_weights_sha256": file_sha256(weights) if weights and os.path.isfile(weights) else "",
            "inputs": json.dumps(dict(inputs), sort_keys=True)}
    meta.update(model_metadata(network))
    return meta


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    """The provenance dict of an exported ``.onnx`` or TorchScript ``.pt`` file."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"exported file {str(path)!r} does not exist")
    if path.suffix == ".onnx":
        from .runtime import require

        onnx = require("onnx")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf's DecodeError and the like
            raise DeployError(f"{str(path)!r} is not an ONNX file: {str(err).strip() or type(err).__name__}") from err
        return {p.key: p.value for p in proto.metadata_props}
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise DeployError(f"{str(path)!r} is not a TorchScript file: {str(err).splitlines()[0]}") from err
    if not extra[TORCHSCRIPT_EXTRA]:
        raise DeployError(f"{str(path)!r} has no {TORCHSCRIPT_EXTRA} (not exported by nasnet_det)")
    return json.loads(extra[TORCHSCRIPT_EXTRA])


def declared_inputs(provenance: Mapping[str, str]) -> list[tuple[str, list]]:
    """The tensor inputs an export's provenance records: (name, dims), a dim a size or a name."""
    declared = json.loads(provenance.get("inputs", "{}"))
    return [(name, dims) for name, dims in declared.items() if isinstance(dims, list)]

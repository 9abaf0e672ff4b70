"""Checkpoint import/export: safe loading, our safetensors format, timm / Cadene / TF-slim converters,
and the export of classifier weights to detectron2 (see docs/weights.md)."""
from .convert import (ConversionReport, convert_cadene, convert_tf, convert_timm, export_tf_variables,
                      read_tf_checkpoint)
from .io import (WeightsError, check_architecture, file_sha256, load_state_dict, load_weights_into, save_weights,
                 tensors_sha256)

__all__ = [
    "ConversionReport", "WeightsError", "check_architecture", "convert_cadene", "convert_tf", "convert_timm",
    "export_tf_variables", "file_sha256", "load_state_dict", "load_weights_into", "read_tf_checkpoint",
    "save_weights", "tensors_sha256",
]

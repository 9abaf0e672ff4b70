"""Export NASNet classifiers and detectors (TorchScript, ONNX) and run the exports (ONNX Runtime, OpenVINO).

Why a package of its own: exported files leave the project, so each records where it came from
(``provenance``), and the runtimes they run in (``runtime``) are an optional ``deploy`` extra that
only this package imports. An export fixes the spatial size it was traced at; the batch stays
dynamic for classifiers.
"""
from .classifier import export_classifier
from .provenance import build_provenance, read_provenance
from .runtime import RUNTIMES, load_exported

__all__ = ["RUNTIMES", "build_provenance", "export_classifier", "load_exported", "read_provenance"]

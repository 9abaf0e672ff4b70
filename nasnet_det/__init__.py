"""nasnet_det: NASNet (Zoph et al. 2018) as a detectron2 plugin.

``import nasnet_det`` gives the model constructors and, when detectron2 is installed, registers
the backbone, ROI heads and config keys with detectron2 (the plugin convention).
"""
import importlib.util as _importlib_util

from .space import Genotype, GenotypeError, get_genotype, list_genotypes, register_genotype, resolve_genotype

try:  # the torch layer; the pure-data layer above works without it
    from .modeling import build_nasnet, create_model, list_models
except ImportError as _err:  # pragma: no cover - only without torch
    if "torch" not in str(_err):
        raise

if _importlib_util.find_spec("detectron2") is not None:
    from . import detection  # noqa: F401  (registers with detectron2)

__version__ = "0.1.0"
__all__ = [
    "Genotype", "GenotypeError", "build_nasnet", "create_model", "get_genotype", "list_genotypes",
    "list_models", "register_genotype", "resolve_genotype",
]

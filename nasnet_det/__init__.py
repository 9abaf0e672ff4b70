"""nasnet_det: NASNet (Zoph et al. 2018) as a detectron2 plugin.

``import nasnet_det`` is light: it loads the pure-data search space (standard library only) and
nothing else, so a search worker or ``tools/draw_cell.py`` writing a .dot file never pays for
torch or detectron2. The model constructors are still reachable here (``nasnet_det.create_model``),
imported from ``nasnet_det.modeling`` on first use (PEP 562).

Registration with detectron2 is explicit, as in detectron2's own projects:
``import nasnet_det.detection`` adds the backbone, the ROI heads and the config keys.
"""
from __future__ import annotations

from typing import Any

from .space import Genotype, GenotypeError, get_genotype, list_genotypes, register_genotype, resolve_genotype

#: Names served lazily from ``nasnet_det.modeling`` (importing it imports torch).
_MODELING_NAMES = ("build_nasnet", "create_model", "list_models")

__version__ = "0.1.0"
__all__ = [
    "Genotype", "GenotypeError", "build_nasnet", "create_model", "get_genotype", "list_genotypes",
    "list_models", "register_genotype", "resolve_genotype",
]


def __getattr__(name: str) -> Any:
    if name in _MODELING_NAMES:
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'nasnet_det' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODELING_NAMES))

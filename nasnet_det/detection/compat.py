"""Every difference between detectron2 v0.6 (the registry route) and upstream main, in one place.

detectron2 has made no release since v0.6 and main still reports ``__version__ == "0.6"``, so this
module detects features, never versions. Import it before anything from ``detectron2.layers``:
``nasnet_det.detection`` does so on import.
"""
from __future__ import annotations

import importlib
import sys
import types

_BUILD_HINT = (
    "This detectron2 was installed without its compiled C++/CUDA ops (the pb1-detectron2 route of "
    "tools/install_detectron2.py). Build detectron2 from source "
    "(pip install --no-build-isolation 'git+<detectron2 repository>') to use it."
)


class MissingCompiledOps(types.ModuleType):
    """Stand-in for ``detectron2._C``: importing succeeds, *using* any op raises one clear error.

    v0.6 imports ``_C`` at module level in layers/deform_conv.py, rotated_boxes.py,
    roi_align_rotated.py and evaluation/fast_eval_api.py, so without a stand-in even
    ``import detectron2.modeling`` fails, although a Faster R-CNN never calls those ops.
    """

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"detectron2 compiled op '{name}' is not available. {_BUILD_HINT}")


def _install_compiled_ops_stand_in() -> bool:
    """Register the stand-in when the real extension cannot be imported; return True if it has."""
    try:
        importlib.import_module("detectron2._C")
        return True
    except ImportError:
        sys.modules["detectron2._C"] = MissingCompiledOps("detectron2._C")
        import detectron2

        detectron2._C = sys.modules["detectron2._C"]
        return False


HAS_COMPILED_OPS: bool = _install_compiled_ops_stand_in()

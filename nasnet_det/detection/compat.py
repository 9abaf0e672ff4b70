"""Every difference between detectron2 v0.6 (the registry route) and upstream main, in one place.

detectron2 has made no release since v0.6 and main still reports ``__version__ == "0.6"``, so this
module detects features, never versions. Import it before anything from ``detectron2.layers``:
``nasnet_det.detection`` does so on import.
"""
from __future__ import annotations

import importlib
import inspect
import os
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

    # detectron2.utils.collect_env (run by default_setup) reports these for any importable _C
    def get_compiler_version(self) -> str:
        return "none (detectron2 installed without compiled ops)"

    def get_cuda_version(self) -> str:
        return "none (detectron2 installed without compiled ops)"

    def has_cuda(self) -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"detectron2 compiled op '{name}' is not available. {_BUILD_HINT}")


def _install_compiled_ops_stand_in() -> bool:
    """Register the stand-in when there is no compiled extension; return True if there is one.

    Only an *absent* ``_C`` gets the stand-in. A ``_C`` that exists but fails to load (e.g.
    ``undefined symbol`` after a torch upgrade) is a broken build, and hiding it behind "installed
    without compiled ops" would tell the user the wrong cause, so its real error is raised.
    """
    import importlib.util

    loaded = sys.modules.get("detectron2._C")
    if loaded is not None:  # imported before (or our stand-in, installed before)
        return not isinstance(loaded, MissingCompiledOps)
    if importlib.util.find_spec("detectron2._C") is not None:
        try:
            importlib.import_module("detectron2._C")
        except ImportError as err:
            raise ImportError(f"detectron2's compiled ops (detectron2._C) exist but fail to load: {err}. "
                              "Rebuild detectron2 against the installed torch.") from err
        return True
    sys.modules["detectron2._C"] = MissingCompiledOps("detectron2._C")
    import detectron2

    detectron2._C = sys.modules["detectron2._C"]
    _install_torch_ops_stand_in()
    return False


def _install_torch_ops_stand_in() -> None:
    """``layers.nms_rotated`` calls ``torch.ops.detectron2.nms_rotated``, registered by ``_C``.

    Without ``_C`` torch's namespace would raise a bare AttributeError; give it the same clear
    error as the module stand-in.
    """
    import torch

    try:
        torch.ops.detectron2.nms_rotated  # noqa: B018  (registered by some other build?)
    except (AttributeError, RuntimeError):
        torch.ops.detectron2 = MissingCompiledOps("torch.ops.detectron2")


HAS_COMPILED_OPS: bool = _install_compiled_ops_stand_in()


def _import_modeling_without_torchscript_warnings() -> None:
    """Import ``detectron2.modeling`` once, silencing torch's "``torch.jit.script`` is deprecated".

    detectron2 (v0.6 and main) scripts a few functions at import (``box_regression``...), and
    torch >= 2.9 warns about it, so every tool printed two lines of FutureWarning before its own
    output or its one ``error:`` line. Scoped to this import: user code still sees the warning.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        importlib.import_module("detectron2.modeling")


_import_modeling_without_torchscript_warnings()


# --------------------------------------------------------------------------------------------
# Everything below is imported lazily from detectron2 so that importing this module stays the
# first thing ``nasnet_det.detection`` does (before detectron2.layers needs ``_C``).
# --------------------------------------------------------------------------------------------


def coco_evaluator(dataset_name: str, output_dir: str | None = None, distributed: bool = True,
                   fast: bool = False):
    """A COCOEvaluator; by default with the *official* pycocotools numbers.

    detectron2's default ``use_fast_impl=True`` needs ``_C`` (COCOeval_opt); v0.6 would then fail
    at evaluation time and main silently falls back. So the default is False, the same numbers on
    every build. ``fast`` (``TEST.FAST_COCOEVAL``) asks for detectron2's C++ COCOeval, which gives
    the same numbers faster; without compiled ops it is refused rather than silently ignored.
    """
    from detectron2.evaluation import COCOEvaluator

    from ..errors import ConfigError

    if fast and not HAS_COMPILED_OPS:
        raise ConfigError("TEST.FAST_COCOEVAL True needs detectron2's compiled ops (detectron2._C), which this "
                          "install lacks; leave it False (the official pycocotools evaluation, same numbers)")
    return COCOEvaluator(
        dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
        use_fast_impl=fast,
    )


def launch_supports_cpu_workers() -> bool:
    """True when detectron2's ``launch`` can start several processes without CUDA (main: GLOO)."""
    # the module, not the function ``detectron2.engine.launch`` that shadows it as an attribute
    launch_module = importlib.import_module("detectron2.engine.launch")
    source = inspect.getsource(launch_module)
    return "gloo" in source.lower()


def check_launch(num_gpus: int, num_machines: int, eval_only: bool = False) -> None:
    """One clear error for the multi-process runs this detectron2 cannot do without CUDA.

    v0.6 launches several processes only with NCCL on GPUs (a bare ``assert
    torch.cuda.is_available()`` in each worker otherwise). main launches CPU workers with GLOO,
    and evaluation works there, but its ``create_ddp_model`` (called by DefaultTrainer) passes
    ``device_ids=[local_rank]`` for a CPU module, which DistributedDataParallel rejects: CPU
    multi-process *training* is refused here rather than crashing in every worker.
    """
    import torch

    from ..errors import ConfigError

    world = num_gpus * num_machines
    if world <= 1 or torch.cuda.is_available():
        return
    if not launch_supports_cpu_workers():
        raise ConfigError(
            f"--num-gpus {num_gpus} x --num-machines {num_machines} asks for {world} processes, but "
            "there is no CUDA device and this detectron2 (v0.6) can only launch several processes "
            "with NCCL on GPUs. Use --num-gpus 1 on CPU, or upstream detectron2 main (GLOO on CPU).")
    if not eval_only:
        raise ConfigError(
            f"--num-gpus {num_gpus}: training in {world} CPU processes is not supported (detectron2's "
            "create_ddp_model gives DistributedDataParallel device_ids for a CPU model). Train with "
            "--num-gpus 1 on CPU; --eval-only --num-gpus N works.")


def tracing_adapter() -> type:
    """detectron2's ``TracingAdapter`` (images in, flattened Instances fields out), on v0.6 and main.

    v0.6's ``detectron2/export/__init__.py`` imports caffe2 (gone from torch) before anything else,
    so there the package is registered as a bare namespace over its folder and only
    ``export.flatten`` (pure PyTorch) is imported from it; on main the package imports normally.
    """
    try:
        return importlib.import_module("detectron2.export.flatten").TracingAdapter
    except ModuleNotFoundError as err:
        if "caffe2" not in str(err):
            raise
    import detectron2

    package = types.ModuleType("detectron2.export")
    package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
    sys.modules["detectron2.export"] = package
    return importlib.import_module("detectron2.export.flatten").TracingAdapter

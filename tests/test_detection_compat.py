"""compat.py tells an absent compiled ``detectron2._C`` from a broken one (issue 14 item 6)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

from test_detection_common import COCO_MINI_TRAIN_IMAGES, COCO_MINI_TRAIN_JSON, requires_coco_mini  # noqa: E402

_BROKEN_C = r'''
import importlib.abc, importlib.machinery, sys

class BrokenLoader(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError("detectron2/_C.so: undefined symbol: _ZN3c106detail14torchCheckFail")
    def exec_module(self, module):
        pass

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "detectron2._C":
            return importlib.machinery.ModuleSpec(name, BrokenLoader())
        return None

sys.meta_path.insert(0, Finder())
try:
    import nasnet_det.detection.compat
except ImportError as err:
    print("IMPORT-ERROR:", err)
else:
    print("LOADED, HAS_COMPILED_OPS =", nasnet_det.detection.compat.HAS_COMPILED_OPS)
'''


def test_a_broken_compiled_extension_reports_its_real_error():
    proc = subprocess.run([sys.executable, "-c", _BROKEN_C], capture_output=True, text=True, timeout=120)
    assert "IMPORT-ERROR:" in proc.stdout, proc.stdout + proc.stderr
    assert "undefined symbol" in proc.stdout and "Rebuild detectron2" in proc.stdout
    assert "installed without its compiled" not in proc.stdout


def test_an_absent_compiled_extension_gets_the_stand_in():
    from nasnet_det.detection import compat

    if compat.HAS_COMPILED_OPS:
        pytest.skip("this detectron2 has its compiled ops")
    with pytest.raises(RuntimeError, match="without its compiled"):
        sys.modules["detectron2._C"].nms_rotated  # noqa: B018


@requires_coco_mini
def test_fast_cocoeval_is_offered_only_with_compiled_ops(tmp_path):
    from nasnet_det.detection import compat, register_coco_json
    from nasnet_det.errors import ConfigError

    name = register_coco_json("nasnet_test_fast_eval", str(COCO_MINI_TRAIN_JSON), str(COCO_MINI_TRAIN_IMAGES))
    assert compat.coco_evaluator(name, str(tmp_path))._use_fast_impl is False  # the default
    if compat.HAS_COMPILED_OPS:
        assert compat.coco_evaluator(name, str(tmp_path), fast=True)._use_fast_impl is True
    else:
        with pytest.raises(ConfigError, match="TEST.FAST_COCOEVAL"):
            compat.coco_evaluator(name, str(tmp_path), fast=True)

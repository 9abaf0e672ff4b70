"""``import nasnet_det`` stays light and registration with detectron2 is explicit.

Why it matters: a search worker, or ``tools/draw_cell.py`` writing a .dot file, must not pay for
torch or detectron2 (seconds of import, and detectron2's stand-in ``_C`` installed as a side
effect). Each check runs in a fresh interpreter, since this test session has imported both.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; report which heavy packages it imported."""
    probe = code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('torch', 'detectron2')}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_nasnet_det_loads_neither_torch_nor_detectron2():
    assert _modules_after("import nasnet_det") == {"torch": False, "detectron2": False}


def test_model_constructors_stay_reachable_from_the_package():
    loaded = _modules_after("import nasnet_det\nassert callable(nasnet_det.create_model)\n"
                            "assert 'create_model' in dir(nasnet_det)")
    assert loaded["torch"] and not loaded["detectron2"]


def test_unknown_attribute_is_an_attribute_error():
    import nasnet_det

    with pytest.raises(AttributeError, match="no_such_name"):
        nasnet_det.no_such_name  # noqa: B018


def test_draw_cell_dot_output_imports_neither_torch_nor_detectron2(tmp_path):
    out = tmp_path / "cell.dot"
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "tools" / "draw_cell.py"), "nasnet_a",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert "nasnet_det.visualize" in imported  # the probe does see the tool's imports
    assert not {name.split(".")[0] for name in imported} & {"torch", "detectron2", "matplotlib"}
    assert out.read_text().startswith("digraph")


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed")
def test_import_nasnet_det_detection_registers_with_detectron2():
    code = ("import nasnet_det.detection\nfrom detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY\n"
            "assert 'build_nasnet_backbone' in BACKBONE_REGISTRY and 'NASNetROIHeads' in ROI_HEADS_REGISTRY")
    assert _modules_after(code)["detectron2"]

"""tools/export.py: a classifier export from a pretraining config with weights, and its one-line errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nasnet_det
from nasnet_det.deploy import read_provenance
from nasnet_det.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.overrides.num_cells", "3", "model.overrides.num_conv_filters", "8", "model.num_classes", "5",
         "data.image_size", "32"]


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools/export.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_classifier_export_records_weights(tmp_path):
    model = nasnet_det.create_model("nasnet_a_mobile", num_classes=5, num_cells=3, num_conv_filters=8)
    weights = save_weights(model.state_dict(), tmp_path / "w.safetensors", model=model, source="test")
    done = _export("classifier", "--config-file", "configs/pretrain/nasnet_a_mobile_imagenet.yaml",
                   "--weights", str(weights), "--format", "torchscript", "--out", str(tmp_path / "net"), *SMALL)
    assert done.returncode == 0, done.stderr
    prov = read_provenance(tmp_path / "net.pt")
    assert prov["source_weights"] == str(weights.resolve())
    assert len(prov["source_weights_sha256"]) == 64
    assert json.loads(prov["genotype"]) == model.config.genotype.to_dict()
    assert "num_cells: 3" in prov["config"]


def test_errors_are_one_line(tmp_path):
    done = _export("classifier", "--config-file", "configs/pretrain/nasnet_a_mobile_imagenet.yaml",
                   "--out", str(tmp_path / "x"), "model.no_such_key", "1")
    assert done.returncode == 2 and done.stderr.startswith("error:") and len(done.stderr.splitlines()) == 1
    done = _export("detector", "--config-file", "configs/nasnet_custom_cpu.yaml", "--out", str(tmp_path / "d"))
    assert done.returncode == 2 and "INPUT.FIXED_SIZE_TEST" in done.stderr, done.stderr
    # the own-data config resizes the shortest edge: the error gives the two overrides that export it
    fix = re.search(r"add (INPUT\.FIXED_SIZE_TEST) '(\(\d+, \d+\))' (INPUT\.MIN_SIZE_TEST) (0)", done.stderr)
    assert fix, done.stderr
    done = _export("detector", "--config-file", "configs/nasnet_custom_cpu.yaml", "--out", str(tmp_path / "d"),
                   "--allow-random-weights", "--format", "torchscript", *fix.groups())
    assert done.returncode == 0 and (tmp_path / "d.pt").is_file(), done.stderr
    done = _export("detector", "--config-file", "configs/nasnet_demo_synthetic.yaml", "--out", str(tmp_path / "d"),
                   "MODEL.WEIGHTS", "")
    assert done.returncode == 2 and "--allow-random-weights" in done.stderr, done.stderr
    (tmp_path / "file").write_text("in the way")
    done = _export("classifier", "--config-file", "configs/pretrain/nasnet_a_mobile_imagenet.yaml",
                   "--allow-random-weights", "--format", "torchscript", "--out", str(tmp_path / "file" / "net"), *SMALL)
    assert done.returncode == 2 and done.stderr.startswith("error: cannot write"), done.stderr
    assert len(done.stderr.splitlines()) == 1

"""``make demo``'s pipeline (``nasnet_det.detection.demo_pipeline``) end to end, in seconds: tiny
images, two iterations.

This checks the plumbing - dataset -> NASNetTrainer -> COCOEvaluator -> VisualizationDemo ->
summary - and that a second run reuses the data and the finished training. Whether the detector
really learns is measured by ``make demo`` itself (docs/demo.md), not here.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

ROOT = Path(__file__).resolve().parents[1]


def test_run_demo_pipeline_and_rerun(tmp_path, capsys):
    from nasnet_det.detection.demo_pipeline import DemoSettings, run_demo

    out = tmp_path / "demo"
    settings = DemoSettings(output=str(out), num_train=4, num_val=3, image_size=64, num_pictures=2, threads=1, opts=[
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.FIXED_SIZE_TRAIN", "(64, 64)", "INPUT.FIXED_SIZE_TEST", "(64, 64)",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[8, 16, 32]]",
    ])
    summary = run_demo(settings)
    printed = capsys.readouterr().out
    assert "COCO bbox AP" in printed and "pictures:" in printed
    assert "Running with full config" not in printed  # the long dumps stay out of the console
    for key in ("AP", "AP50", "AP75"):
        assert isinstance(summary[key], float) and (math.isnan(summary[key]) or 0.0 <= summary[key] <= 100.0)
    assert (out / "train" / "model_final.pth").is_file()
    assert json.loads((out / "summary.json").read_text())["max_iter"] == 2
    pictures = out / "pictures"
    assert sorted(p.name for p in pictures.glob("*.jpg")) == ["000000.jpg", "000001.jpg"]
    assert isinstance(json.loads((pictures / "results.json").read_text()), list)
    assert (out / "train" / "inference" / "nasnet_test").is_dir()  # COCOEvaluator's output

    # a second run reuses the dataset and the finished training
    final = out / "train" / "model_final.pth"
    mtime = final.stat().st_mtime_ns
    again = run_demo(settings)
    printed = capsys.readouterr().out
    assert "dataset reused" in printed and "training already finished" in printed
    assert final.stat().st_mtime_ns == mtime
    assert again["AP"] == pytest.approx(summary["AP"], nan_ok=True)


def test_run_demo_cli_bad_config_is_one_error_line(tmp_path):
    """tools/run_demo.py maps its flags onto DemoSettings and reports a bad config in one line."""
    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--output", str(tmp_path / "demo"), "--config-file",
         str(missing), "--num-train", "1", "--num-val", "1", "--image-size", "32", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("run_demo.py: error: ")]
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in result.stderr
    assert (tmp_path / "demo" / "data" / "annotations" / "train.json").is_file()  # step 1 ran first

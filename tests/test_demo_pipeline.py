"""``make demo``'s pipeline (tools/run_demo.py) end to end, in seconds: tiny images, two iterations.

This checks the plumbing - dataset -> tools/train_net.py machinery -> COCOEvaluator -> tools/demo.py
-> summary - and that a second run reuses the data and the finished training. Whether the detector
really learns is measured by ``make demo`` itself (docs/demo.md), not here.
"""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("detectron2")


def test_run_demo_pipeline_and_rerun(tmp_path, capsys, load_tool):
    run_demo = load_tool("run_demo")
    out = tmp_path / "demo"
    argv = [
        "--output", str(out), "--num-train", "4", "--num-val", "3", "--image-size", "64",
        "--num-pictures", "2", "--threads", "1",
        "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.FIXED_SIZE_TRAIN", "(64, 64)", "INPUT.FIXED_SIZE_TEST", "(64, 64)",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[8, 16, 32]]",
    ]
    summary = run_demo.main(argv)
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
    again = run_demo.main(argv)
    printed = capsys.readouterr().out
    assert "dataset reused" in printed and "training already finished" in printed
    assert final.stat().st_mtime_ns == mtime
    assert again["AP"] == pytest.approx(summary["AP"], nan_ok=True)

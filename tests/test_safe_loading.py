"""A crafted weights file whose unpickling writes a marker must never run, at any detection entry point.

The table of issue 15: train_net MODEL.WEIGHTS (.pth, .pkl), --eval-only, --resume on a planted
checkpoint, demo.py --weights. Each must stop with one ``error:`` line naming
``--allow-unsafe-pickle`` and leave no marker. Checkpoints the trainer writes itself still load.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "nasnet_demo_synthetic.yaml")


class _Plant:
    """Unpickling calls ``open(marker, 'w')``: code from the file runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pth(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Plant(marker)}, path)
    return path


def _plant_pkl(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": {"x": np.zeros(1)}, "__author__": "x", "p": _Plant(marker)}))
    return path


@pytest.fixture
def coco(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((64, 64, 3), 127, np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": k + 1, "bbox": [4 + 10 * k, 4, 8, 8],
                             "area": 64, "iscrowd": 0} for k in range(5)],
            "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(5)]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return path, images


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=300)


def _assert_refused(proc: subprocess.CompletedProcess, marker: Path) -> None:
    assert not marker.exists(), "the planted file's code ran"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--allow-unsafe-pickle" in errors[0], proc.stderr[-3000:]


@pytest.mark.parametrize("kind", ["pth", "pkl"])
@pytest.mark.parametrize("mode", ["train", "eval-only"])
def test_train_net_weights_never_run_code(tmp_path, coco, kind, mode):
    marker = tmp_path / "marker"
    weights = (_plant_pth if kind == "pth" else _plant_pkl)(tmp_path / f"w.{kind}", marker)
    json_file, images = coco
    extra = ["--eval-only"] if mode == "eval-only" else []
    proc = _run([str(ROOT / "tools" / "train_net.py"), "--config-file", DEMO, *extra, "--dataset-json", str(json_file),
                 "--image-root", str(images), "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "out"),
                 "MODEL.WEIGHTS", str(weights)])
    _assert_refused(proc, marker)


def test_train_net_resume_on_a_planted_checkpoint_never_runs_code(tmp_path, coco):
    marker = tmp_path / "marker"
    out = tmp_path / "out"
    out.mkdir()
    _plant_pth(out / "model_final.pth", marker)
    (out / "last_checkpoint").write_text("model_final.pth")
    json_file, images = coco
    proc = _run([str(ROOT / "tools" / "train_net.py"), "--config-file", DEMO, "--resume", "--dataset-json",
                 str(json_file), "--image-root", str(images), "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)])
    _assert_refused(proc, marker)


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_demo_weights_never_run_code(tmp_path, coco, kind):
    marker = tmp_path / "marker"
    weights = (_plant_pth if kind == "pth" else _plant_pkl)(tmp_path / f"w.{kind}", marker)
    _, images = coco
    proc = _run([str(ROOT / "tools" / "demo.py"), "--config-file", DEMO, "--input", str(images / "a.png"),
                 "--output", str(tmp_path / "demo"), "--weights", str(weights), "--no-progress"])
    _assert_refused(proc, marker)


def test_checkpointer_round_trip_is_safe_and_atomic(tmp_path):
    """What our checkpointer writes loads with weights_only=True and leaves no temporary file."""
    import torch
    from torch import nn

    from nasnet_det.detection import build_checkpointer

    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = build_checkpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000009", iteration=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000009.pth"]
    assert torch.load(tmp_path / "model_0000009.pth", weights_only=True)["iteration"] == 9
    fresh = nn.Linear(3, 2)
    extra = build_checkpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert torch.equal(fresh.weight, model.weight)


def test_unsafe_flag_is_the_one_way_out(tmp_path):
    import torch
    from torch import nn

    from nasnet_det.detection import build_checkpointer
    from nasnet_det.errors import WeightsError

    marker = tmp_path / "marker"
    path = tmp_path / "w.pth"
    torch.save({"model": nn.Linear(1, 1).state_dict(), "payload": _Plant(marker)}, path)
    with pytest.raises(WeightsError, match="--allow-unsafe-pickle"):
        build_checkpointer(nn.Linear(1, 1)).load(str(path))
    assert not marker.exists()
    build_checkpointer(nn.Linear(1, 1), allow_unsafe_pickle=True).load(str(path))
    assert marker.exists()

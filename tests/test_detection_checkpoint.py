"""The detector checkpointer refuses weights that do not fit, and resumes from the newest intact file.

A small module with the detector's top-level names (``backbone.``, ``roi_heads.box_predictor.``)
stands in for the detector: the checks read only names and shapes. The CLI-level refusals are in
tests/test_fault_corpus.py and tests/test_safe_loading.py.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2")

from nasnet_det.detection import build_checkpointer  # noqa: E402
from nasnet_det.errors import WeightsError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Heads(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.res5 = nn.Linear(4, 4)  # stands in for the ROI-head cells
        self.box_predictor = nn.Linear(4, classes)


class TinyDetector(nn.Module):
    def __init__(self, classes: int = 3, width: int = 4):
        super().__init__()
        self.backbone = nn.Sequential(*[nn.Linear(width, width) for _ in range(10)])
        self.roi_heads = _Heads(classes)


def _save(state: dict, path: Path) -> str:
    torch.save({"model": state}, path)
    return str(path)


def test_init_weights_must_cover_the_backbone(tmp_path):
    donor = TinyDetector().state_dict()
    few = {k: v for k, v in donor.items() if k.startswith(("backbone.0.", "roi_heads."))}
    with pytest.raises(WeightsError, match=r"gives only 4 of the 22 backbone and head-cell tensors.*convert_weights"):
        build_checkpointer(TinyDetector()).load(_save(few, tmp_path / "timm_like.pth"))
    model = TinyDetector()
    build_checkpointer(model).load(_save(donor, tmp_path / "full.pth"))
    assert torch.equal(model.backbone[3].weight, donor["backbone.3.weight"])


def test_init_allows_another_class_count_but_not_another_backbone(tmp_path, caplog):
    donor = TinyDetector(classes=81).state_dict()
    model = TinyDetector(classes=3)
    build_checkpointer(model).load(_save(donor, tmp_path / "coco.pth"))  # fine-tuning to 3 classes
    assert torch.equal(model.backbone[0].weight, donor["backbone.0.weight"])
    assert "head tensors have another shape" in caplog.text
    with pytest.raises(WeightsError, match="backbone or head-cell tensors have another shape"):
        build_checkpointer(TinyDetector(width=4)).load(_save(TinyDetector(width=8).state_dict(), tmp_path / "b.pth"))


def _transfer_cfg(scope: str):
    from detectron2.config import get_cfg

    from nasnet_det.detection import add_nasnet_config

    cfg = add_nasnet_config(get_cfg())
    cfg.MODEL.NASNET.TRANSFER = scope
    return cfg


def test_transfer_backbone_leaves_the_head_cells_at_their_initialisation(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    donor = TinyDetector().state_dict()
    path = _save(donor, tmp_path / "pretrained.pth")
    model = TinyDetector()
    initial = model.roi_heads.res5.weight.clone()
    build_checkpointer(model, cfg=_transfer_cfg("backbone")).load(path)
    assert torch.equal(model.backbone[9].weight, donor["backbone.9.weight"])
    assert torch.equal(model.roi_heads.res5.weight, initial)
    assert "ROI-head cells keep their initialisation (2 tensors" in caplog.text
    assert "roi_heads.res5" not in caplog.text  # no per-tensor "not found in the checkpoint" warning
    model = TinyDetector()
    build_checkpointer(model, cfg=_transfer_cfg("all")).load(path)
    assert torch.equal(model.roi_heads.res5.weight, donor["roi_heads.res5.weight"])
    # a file without the head cells is enough for "backbone"; resume and inference still load them all
    backbone_only = _save({k: v for k, v in donor.items() if k.startswith("backbone.")}, tmp_path / "b.pth")
    build_checkpointer(TinyDetector(), cfg=_transfer_cfg("backbone")).load(backbone_only)
    model = TinyDetector()
    build_checkpointer(model, cfg=_transfer_cfg("backbone"), weights_purpose="inference").load(path)
    assert torch.equal(model.roi_heads.res5.weight, donor["roi_heads.res5.weight"])


def test_a_bad_transfer_scope_is_a_config_error(tmp_path):
    from nasnet_det.detection.config import load_config
    from nasnet_det.errors import ConfigError

    with pytest.raises(ConfigError, match="MODEL.NASNET.TRANSFER = 'head'.*must be one of"):
        load_config(str(ROOT / "configs" / "nasnet_demo_synthetic.yaml"), ["MODEL.NASNET.TRANSFER", "head"])


def test_inference_weights_must_be_complete(tmp_path):
    donor = TinyDetector().state_dict()
    backbone_only = {k: v for k, v in donor.items() if k.startswith("backbone.")}
    path = _save(backbone_only, tmp_path / "backbone_only.pth")
    build_checkpointer(TinyDetector()).load(path)  # enough to start training from
    with pytest.raises(WeightsError, match=r"lacks 4 of the model's 24 tensors"):
        build_checkpointer(TinyDetector(), weights_purpose="inference").load(path)
    with pytest.raises(WeightsError, match="another shape"):
        build_checkpointer(TinyDetector(classes=5), weights_purpose="inference").load(_save(donor, tmp_path / "f.pth"))


def _run(tmp_path: Path, iterations: list[int]) -> TinyDetector:
    """A run folder with periodic checkpoints at ``iterations``, tagged as detectron2 does."""
    model = TinyDetector()
    ckpt = build_checkpointer(model, str(tmp_path))
    for it in iterations:
        with torch.no_grad():
            model.backbone[0].bias.fill_(it)
        ckpt.save(f"model_{it:07d}", iteration=it)
    return model


def test_resume_falls_back_past_a_torn_checkpoint(tmp_path, caplog):
    _run(tmp_path, [9, 19])
    (tmp_path / "model_0000029.pth").write_bytes(b"PK\x03\x04 torn")  # an older version's torn write
    (tmp_path / "model_final.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000029.pth")
    fresh = TinyDetector()
    ckpt = build_checkpointer(fresh, str(tmp_path))
    extra = ckpt.resume_or_load("", resume=True)
    assert extra["iteration"] == 19 and float(fresh.backbone[0].bias[0]) == 19
    assert ckpt.has_checkpoint()
    assert "skipping checkpoint" in caplog.text and "model_0000029.pth" in caplog.text


def test_resume_with_an_empty_last_checkpoint(tmp_path):
    _run(tmp_path, [4])
    (tmp_path / "last_checkpoint").write_text("")
    extra = build_checkpointer(TinyDetector(), str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "last_checkpoint").write_text("")
    ckpt = build_checkpointer(TinyDetector(), str(empty))
    assert ckpt.resume_or_load("", resume=True) == {}  # nothing to resume: from scratch, no AssertionError
    assert not ckpt.has_checkpoint()  # DefaultTrainer then starts at iteration 0


def test_resume_with_a_changed_class_count_is_refused(tmp_path):
    _run(tmp_path, [9])
    with pytest.raises(WeightsError, match="NUM_CLASSES.*new OUTPUT_DIR"):
        build_checkpointer(TinyDetector(classes=7), str(tmp_path)).resume_or_load("", resume=True)
    before = (tmp_path / "model_0000009.pth").read_bytes()
    assert (tmp_path / "model_0000009.pth").read_bytes() == before


def test_eval_only_without_weights_is_refused(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file",
           str(ROOT / "configs" / "nasnet_demo_synthetic.yaml"), "--eval-only", "MODEL.DEVICE", "cpu",
           "OUTPUT_DIR", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MODEL.WEIGHTS" in errors[0] and "--allow-random-weights" in errors[0]

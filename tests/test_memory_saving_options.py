"""The user-facing switches for per-cell activation checkpointing (nasnet_det/modeling/memory.py).

``MODEL.NASNET.MEMORY_SAVING`` (detection) and ``train.memory_saving`` (pretraining) must turn it on
where the networks are built, and must not change what a training step computes or what a
checkpoint holds: tiny networks, one training step each, compared with the plain model.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nasnet_det.modeling.cell import Cell
from nasnet_det.modeling.memory import memory_saving_enabled
from nasnet_det.pretrain import load_config as load_pretrain_config
from nasnet_det.pretrain.config import ConfigError as PretrainConfigError
from nasnet_det.pretrain.trainer import build_train_model

ROOT = Path(__file__).resolve().parents[1]


def _cells(net: nn.Module) -> list[nn.Module]:
    """The real cells of a (possibly trimmed) NASNet: detection stages hold nn.Identity placeholders."""
    return [c for c in net.cells if isinstance(c, Cell)]


# ------------------------------------------------------------------------------ detection
def _detector(norm: str, memory_saving: bool) -> nn.Module:
    pytest.importorskip("detectron2")
    import nasnet_det.detection  # noqa: F401  (first: registers the plugin and the compat layer)
    # isort: split
    from detectron2.modeling import build_model
    from test_detection_common import CONFIGS, tiny_opts

    from nasnet_det.detection import load_config

    opts = tiny_opts(size=64, cells=6, penultimate=96, norm=norm) + ["MODEL.NASNET.MEMORY_SAVING", str(memory_saving)]
    cfg = load_config(str(CONFIGS / "nasnet_a_large_frcnn.yaml"), opts)  # drop path 0.7: RNG replay matters
    torch.manual_seed(0)
    return build_model(cfg).train()


def _fake_batch(size: int = 64) -> list[dict]:
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(1)
    batch = []
    for cls in (3, 5):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[size * 0.1, size * 0.2, size * 0.7, size * 0.9]]))
        inst.gt_classes = torch.tensor([cls])
        batch.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst})
    return batch


def _train_step(model: nn.Module, batch: list[dict]) -> dict[str, torch.Tensor]:
    from detectron2.utils.events import EventStorage

    from nasnet_det.detection import set_drop_path_progress

    set_drop_path_progress(model, 0.5)
    torch.manual_seed(7)  # drop-path masks, RPN / ROI sampling: the same draws for both models
    with EventStorage(0):
        losses = model(batch)
    sum(losses.values()).backward()
    return {k: v.detach() for k, v in losses.items()}


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_detector_memory_saving_is_exact(norm):
    plain = _detector(norm, memory_saving=False)
    saving = _detector(norm, memory_saving=True)
    for net in (saving.backbone.nasnet, saving.roi_heads.res5.nasnet):
        assert _cells(net) and all(c.grad_checkpointing for c in _cells(net))
    assert saving.backbone.nasnet.grad_checkpointing  # the stem conv
    assert not any(isinstance(m, Cell) and m.grad_checkpointing for m in plain.modules())
    # detectron2's checkpointer saves model.state_dict(): same keys, so checkpoints load either way
    assert list(saving.state_dict()) == list(plain.state_dict())
    saving.load_state_dict(plain.state_dict())

    batch = _fake_batch()
    ref, got = _train_step(plain, batch), _train_step(saving, copy.deepcopy(batch))
    assert ref.keys() == got.keys()
    for k in ref:
        assert math.isfinite(ref[k].item()), k
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-7, msg=k)
    assert plain.backbone.nasnet.conv0.conv.weight.grad is not None  # the step reached the stem
    for (name, p), q in zip(plain.named_parameters(), saving.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    for (name, b), c in zip(plain.named_buffers(), saving.buffers()):  # BN statistics updated once
        torch.testing.assert_close(c, b, rtol=1e-6, atol=1e-7, msg=name)


# ------------------------------------------------------------------------------ pretraining
TINY_MODEL = ["model.arch", "nasnet_a_cifar", "model.overrides",
              "{num_cells: 3, penultimate_filters: 48, image_size: 16}"]


def _pretrain_cfg(*overrides: str):
    return load_pretrain_config(None, TINY_MODEL + list(overrides), check_paths=False)


def test_pretrain_config_accepts_memory_saving_and_rejects_non_bools():
    assert _pretrain_cfg().train.memory_saving is False
    assert _pretrain_cfg("train.memory_saving", "true").train.memory_saving is True
    for bad in ("maybe", "2"):  # same coercion as every bool key (channels_last, amp, ...)
        with pytest.raises(PretrainConfigError, match=r"train\.memory_saving: expected true/false"):
            _pretrain_cfg("train.memory_saving", str(bad))


def test_shipped_large_config_names_the_option(tmp_path):
    """The commented line in the large ImageNet config is a valid key once uncommented."""
    text = (ROOT / "configs" / "pretrain" / "nasnet_a_large_imagenet.yaml").read_text()
    assert "  # memory_saving: false" in text
    path = tmp_path / "large.yaml"
    path.write_text(text.replace("  # memory_saving: false", "  memory_saving: true"))
    assert load_pretrain_config(path, check_paths=False).train.memory_saving is True


def test_trainer_model_is_checkpointed_and_exact():
    device = torch.device("cpu")
    torch.manual_seed(0)
    plain = build_train_model(_pretrain_cfg(), 4, device)
    torch.manual_seed(0)
    saving = build_train_model(_pretrain_cfg("train.memory_saving", "true"), 4, device)
    assert all(c.grad_checkpointing for c in saving.cells) and saving.grad_checkpointing
    assert not memory_saving_enabled(plain) and not plain.grad_checkpointing
    assert list(saving.state_dict()) == list(plain.state_dict())
    saving.load_state_dict(plain.state_dict())

    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    grads = []
    for model in (plain, saving):
        model.train()
        torch.manual_seed(7)
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        nn.functional.cross_entropy(logits, y).backward()
        grads.append([p.grad for p in model.parameters()])
    for g, h in zip(*grads):
        torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-7)


def not_a_nasnet(num_classes: int) -> nn.Module:
    """A ``model.factory`` network without cells (used by the test below)."""
    return nn.Linear(3, num_classes)


def test_memory_saving_on_a_network_without_cells_is_a_config_error():
    cfg = load_pretrain_config(None, ["model.factory", "test_memory_saving_options:not_a_nasnet",
                                      "train.memory_saving", "true"], check_paths=False)
    with pytest.raises(PretrainConfigError, match=r"train\.memory_saving: .*cells"):
        build_train_model(cfg, 4, torch.device("cpu"))

"""Pretraining building blocks: TF RMSProp, schedules, EMA, sampler, seeded augmentation, config."""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from nasnet_det.pretrain.config import ConfigError, load_config
from nasnet_det.pretrain.data import GlobalBatchSampler, SeededImageFolder, train_transform
from nasnet_det.pretrain.optim import LRSchedule, ModelEMA, TFRMSprop, split_decay_groups


def test_tf_rmsprop_matches_tensorflow_update_rule():
    """ms starts at 1, eps inside the sqrt, lr inside the momentum buffer (docstring of optim.py)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    opt = TFRMSprop([p], lr=0.1, decay=0.9, eps=1.0, momentum=0.9, weight_decay=0.01)
    ref, ms, mom = p.detach().clone(), torch.ones(5), torch.zeros(5)
    for step, lr in enumerate([0.1, 0.1, 0.05]):
        g = torch.randn(5)
        p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        g_eff = g + 0.01 * ref
        ms = 0.9 * ms + 0.1 * g_eff ** 2
        mom = 0.9 * mom + lr * g_eff / torch.sqrt(ms + 1.0)
        ref = ref - mom
        assert torch.allclose(p.detach(), ref, atol=1e-6), step


def test_weight_decay_only_on_conv_and_fc_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(2))
    net(torch.zeros(1, 3, 5, 5))
    decay, no_decay = split_decay_groups(net, 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    assert {tuple(p.shape) for p in decay["params"]} == {(4, 3, 3, 3), (2, 36)}
    assert len(no_decay["params"]) == 3  # BN gamma, beta, FC bias


def test_exponential_staircase_decay_and_warmup():
    s = LRSchedule(1.0, steps_per_epoch=10, total_steps=100, schedule="exponential", decay_rate=0.97,
                   decay_epochs=2.4, warmup_epochs=0.5)
    assert s(0) == pytest.approx(0.2)       # warm-up: (0+1)/5
    assert s(4) == pytest.approx(1.0)
    assert s(23) == pytest.approx(1.0)      # epoch 2.3 < 2.4
    assert s(24) == pytest.approx(0.97)     # staircase at 2.4 epochs
    assert s(49) == pytest.approx(0.97 ** 2)
    c = LRSchedule(1.0, 10, 100, "cosine")
    assert c(0) == pytest.approx(1.0) and c(50) == pytest.approx(0.5) and c(100) == pytest.approx(0.0)


def test_ema_uses_tf_num_updates_warmup():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = ModelEMA(net, decay=0.9999)
    assert ema.current_decay() == pytest.approx(0.1)        # (1 + 0) / (10 + 0)
    net.weight.data.fill_(1.0)
    ema.update(net)
    assert ema.module.weight.item() == pytest.approx(0.9)   # 0.1 * 0 + 0.9 * 1
    ema.num_updates = 10 ** 6
    assert ema.current_decay() == pytest.approx(0.9999)
    state = ema.state_dict()
    other = ModelEMA(net, decay=0.9999)
    other.load_state_dict(state)
    assert other.num_updates == 10 ** 6 and torch.equal(other.module.weight, ema.module.weight)


def test_global_batch_sampler_ranks_partition_the_global_batch_and_resume():
    one = list(GlobalBatchSampler(50, 8, seed=3, epoch=2))
    r0 = list(GlobalBatchSampler(50, 4, rank=0, world_size=2, seed=3, epoch=2))
    r1 = list(GlobalBatchSampler(50, 4, rank=1, world_size=2, seed=3, epoch=2))
    assert len(one) == len(r0) == len(r1) == 6
    for b, b0, b1 in zip(one, r0, r1):
        assert b == b0 + b1
    assert list(GlobalBatchSampler(50, 8, seed=3, epoch=2, start_batch=4)) == one[4:]
    assert list(GlobalBatchSampler(50, 8, seed=3, epoch=3)) != one


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 100, 50, 200)).save(tmp_path / c / f"{i}.png")
    ds = SeededImageFolder(str(tmp_path), train_transform(16), seed=0)
    first = ds[(1, 2)][0]
    torch.manual_seed(123)
    torch.rand(10)  # the trainer's RNG state must not matter
    assert torch.equal(ds[(1, 2)][0], first)
    state = torch.get_rng_state()
    ds[(5, 0)]
    assert torch.equal(torch.get_rng_state(), state), "loading data must not consume the trainer's RNG"


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError,
                       match="unknown config key 'optim.lr_decay_epoch' \\(did you mean 'optim.lr_decay_epochs'"):
        load_config(None, ["optim.lr_decay_epoch", "2.4"], check_paths=False)
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        load_config(None, ["train.batch_size", "abc"], check_paths=False)
    with pytest.raises(ConfigError, match="data.train_dir: directory .* does not exist"):
        load_config(None, ["data.train_dir", "/nonexistent/dir"])
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  arch: x\n  arc: y\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.arc' \\(did you mean 'model.arch'"):
        load_config(bad, check_paths=False)
    cfg = load_config(None, ["model.arch", "nasnet_a_large", "optim.lr", "1e-3", "train.amp", "true"],
                      check_paths=False)
    assert cfg.optim.lr == 1e-3 and cfg.train.amp is True
    assert cfg.resolved_weight_decay() == 5e-5 and cfg.resolved_clip_norm() == 10.0
    assert load_config(None, ["model.arch", "nasnet_a_mobile"], check_paths=False).resolved_weight_decay() == 4e-5
    cifar = load_config(None, ["model.arch", "nasnet_a_cifar"], check_paths=False)
    assert cifar.resolved_weight_decay() == 5e-4 and math.isclose(cifar.resolved_clip_norm(), 5.0)


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "pretrain"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        load_config(f, check_paths=False)


def test_training_checkpoint_errors(tmp_path):
    from nasnet_det.pretrain.checkpoint import (
        CheckpointError,
        load_checkpoint,
        load_model_state_strict,
        save_checkpoint,
    )

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = save_checkpoint({"model": net.state_dict(), "step": 3}, tmp_path, 3)
    assert load_checkpoint(path)["step"] == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    with pytest.raises(CheckpointError, match="different architecture: .*another shape"):
        load_model_state_strict(other, net.state_dict(), "checkpoint x")
    evil = tmp_path / "checkpoint_step00000009.pth"
    torch.save({"model": {}, "step": 9, "x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused to load .* no --allow-unsafe-pickle"):
        load_checkpoint(evil)


class Payload:
    def __reduce__(self):
        import os

        return (os.getcwd, ())

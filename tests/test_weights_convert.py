"""Import of timm / Cadene / TF-slim NASNet weights: every tensor accounted for, same outputs.

timm models are built with pretrained=False (random weights, no download); TF checkpoints are
written here from one of our models under TF-slim names, so the TF path runs without a download.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import nasnet_det
from nasnet_det.weights import WeightsError, convert_cadene, convert_tf, convert_timm, export_tf_variables
from nasnet_det.weights.convert import cadene_cell_name

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_VAL = SHARED / "coco_mini" / "val2017"

timm = pytest.importorskip("timm")


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics/affines, so that a wrong mapping of any BN shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))


def _real_images(size: int, count: int) -> torch.Tensor:
    if not COCO_VAL.is_dir():
        pytest.skip(f"real images need ../shared/data/coco_mini (not found at {COCO_VAL})")
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    files = sorted(os.listdir(COCO_VAL))[:count]
    return torch.stack([tf(Image.open(COCO_VAL / f).convert("RGB")) for f in files])


# The fast tests use timm's own ``nasnetalarge`` builder at 1/21 width (num_features 192 -> 8 filters
# per op instead of 168): every cell, op and tensor name of the real network, at a fraction of the
# CPU time. ``test_full_size_nasnetalarge`` (slow) repeats both checks on the real 88.9M network.
NARROW = dict(num_features=192)
NARROW_OURS = dict(num_conv_filters=8)


def _timm_large(**kwargs):
    torch.manual_seed(0)
    model = timm.create_model("nasnetalarge", pretrained=False, **kwargs).eval()
    _randomize_bn(model)
    return model


def _convert_large(timm_model, **kwargs):
    ours = nasnet_det.create_model("nasnet_a_large", use_aux_head=False, **kwargs).eval()
    state, report = convert_timm(timm_model.state_dict(), ours)
    return ours, state, report


@pytest.fixture(scope="module")
def timm_large():
    return _timm_large(**NARROW)


@pytest.fixture(scope="module")
def converted_large(timm_large):
    return _convert_large(timm_large, **NARROW_OURS)


def _check_every_tensor(timm_model, converted) -> None:
    ours, state, report = converted
    source = timm_model.state_dict()
    assert set(report.used) == set(source), "every timm tensor must be used"
    assert not report.dropped
    assert set(state) == set(ours.state_dict()), "every target tensor must be filled"
    ours.load_state_dict(state)
    for src_key, dst_key in report.used.items():
        assert torch.equal(source[src_key], state[dst_key]), src_key


def test_timm_nasnetalarge_every_tensor_used_and_filled(timm_large, converted_large):
    _check_every_tensor(timm_large, converted_large)


def test_wrong_architecture_is_one_clear_error(timm_large):
    """(Runs before the agreement test changes the fixture's pools; only names/shapes matter here.)"""
    ours = nasnet_det.create_model("nasnet_a_mobile", use_aux_head=False, **NARROW_OURS)
    with pytest.raises(WeightsError, match="architecture"):
        convert_timm(timm_large.state_dict(), ours)


def _tf_exact_avg_pools(model: torch.nn.Module) -> int:
    """Swap timm's AvgPool2dSame (counts the SAME padding) for ours (excludes it, like TF)."""
    from timm.layers.pool2d_same import AvgPool2dSame as TimmAvg

    from nasnet_det.modeling import AvgPool2dSame

    swapped = 0
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, TimmAvg):
                setattr(mod, child_name, AvgPool2dSame(child.kernel_size[0], child.stride[0]))
                swapped += 1
    return swapped


def test_timm_nasnetalarge_outputs_agree_on_real_images(timm_large, converted_large):
    _check_outputs_agree(timm_large, converted_large)


@pytest.mark.slow
def test_full_size_nasnetalarge():
    """The real 88.9M-parameter nasnetalarge (random weights): every tensor, same top-1."""
    model = _timm_large()
    converted = _convert_large(model)
    _check_every_tensor(model, converted)
    _check_outputs_agree(model, converted, size=224, count=4)


def _check_outputs_agree(timm_large, converted_large, size: int = 64, count: int = 3) -> None:
    """Top-1 agreement on real images; the residual difference is timm's padded stride-2 avg pool.

    With timm's AvgPool2dSame replaced by a TF-exact one the logits agree to float precision,
    which pins every difference on docs/spec.md §9 item 3 (border averages counting padding).
    """
    # Any size works for both (dynamic SAME padding); small images keep the CPU time low.
    images = _real_images(size, count)
    ours, state, _ = converted_large
    ours.load_state_dict(state)
    with torch.no_grad():
        ref = timm_large(images)
        out = ours(images)
        assert torch.equal(ref.argmax(1), out.argmax(1)), "top-1 must agree"
        swapped = _tf_exact_avg_pools(timm_large)  # last use of the fixture: modify it in place
        assert swapped > 0
        ref_exact = timm_large(images)
    rel_plain = ((out - ref).abs().max() / ref.abs().max()).item()
    rel_exact = ((out - ref_exact).abs().max() / ref_exact.abs().max()).item()
    assert rel_exact < 1e-4, f"with TF-exact pooling the outputs must match (rel diff {rel_exact:.2e})"
    assert rel_exact <= rel_plain
    print(f"nasnetalarge vs timm: top-1 agree on {count} images at {size}px; max rel logit diff "
          f"{rel_plain:.2e} (timm pooling), {rel_exact:.2e} (TF-exact pooling)")


def test_timm_pnasnet5large_every_tensor_used():
    torch.manual_seed(0)
    source = timm.create_model("pnasnet5large", pretrained=False).state_dict()
    ours = nasnet_det.create_model("pnasnet5_large", num_classes=1000, use_aux_head=False)
    state, report = convert_timm(source, ours)
    assert set(report.used) == set(source)
    assert set(state) == set(ours.state_dict())
    # pool projections and the PNAS FactorizedReduction land where they belong
    assert report.used["cell_stem_0.comb_iter_0_right.conv.weight"] == "cells.0.comb_iter_0_right.proj.conv.weight"
    assert report.used["cell_stem_1.conv_prev_1x1.path_1.conv.weight"] == "cells.1.prev_reduction.path_1.conv.weight"


def test_cadene_naming():
    """Cadene Large uses timm's names; Cadene Mobile renumbers cells 4-7 -> 6-9 and 8-11 -> 12-15."""
    assert [cadene_cell_name(f"cell_{k}", 12) for k in (0, 3, 4, 7, 8, 11)] == \
        ["cell_0", "cell_3", "cell_6", "cell_9", "cell_12", "cell_15"]
    assert [cadene_cell_name(f"cell_{k}", 18) for k in (0, 5, 6, 17)] == ["cell_0", "cell_5", "cell_6", "cell_17"]
    # Mobile: a Cadene-named state dict (built from our model under Cadene's names) round-trips.
    torch.manual_seed(0)
    ours = nasnet_det.create_model("nasnet_a_mobile", use_aux_head=False)
    _randomize_bn(ours, 1)
    names = ours.cell_names
    cadene = {}
    for key, value in ours.state_dict().items():
        parts = key.split(".")
        if parts[0] == "cells":
            rest = ".".join(parts[2:]).replace("prev_reduction.", "")
            cadene[f"{cadene_cell_name(names[int(parts[1])], 12)}.{rest}"] = value
        else:
            cadene[key.replace("classifier.", "last_linear.")] = value
    assert "cell_15.comb_iter_4_left.bn_sep_2.weight" in cadene and "cell_4.conv_1x1.conv.weight" not in cadene
    fresh = nasnet_det.create_model("nasnet_a_mobile", use_aux_head=False)
    state, report = convert_cadene(cadene, fresh)
    assert set(report.used) == set(cadene)
    for k, v in ours.state_dict().items():
        assert torch.equal(state[k], v), k
    # Cadene Large: timm's structure is Cadene's (timm's port derives from it): same conversion.
    large_keys = set(timm.create_model("nasnetalarge", pretrained=False).state_dict())
    assert "cell_17.comb_iter_4_left.bn_sep_2.weight" in large_keys


@pytest.fixture(scope="module")
def tf_module():
    return pytest.importorskip("tensorflow", reason="TF-slim checkpoints are read with tensorflow (tensorflow-cpu)")


def _write_tf_checkpoint(tf, variables: dict, prefix: str) -> None:
    """A TF1-style checkpoint with exactly these variable names (what tf.train.load_checkpoint reads)."""
    # slim wrote name-based TF1 checkpoints; SaveV2 writes one directly (eager, no graph/session).
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n].numpy()) for n in names])


def test_tf_slim_checkpoint_roundtrip_prefers_ema(tf_module, tmp_path):
    """TF names/layouts: our model -> TF-slim checkpoint (1001 classes, EMA + raw + optimizer slots) -> ours."""
    tf = tf_module
    torch.manual_seed(0)
    src = nasnet_det.build_nasnet("nasnet_a", dataset="imagenet", num_cells=3, penultimate_filters=96,
                                  num_classes=1001, image_size=96)
    _randomize_bn(src, 2)
    variables = export_tf_variables(src)
    assert "cell_stem_0/comb_iter_0/left/separable_5x5_1/depthwise_weights" in variables
    assert "final_layer/FC/weights" in variables and variables["final_layer/FC/weights"].shape[-1] == 1001
    written = {}
    for name, value in variables.items():
        written[name + "/ExponentialMovingAverage"] = value
        written[name] = torch.zeros_like(value)  # raw weights differ: the EMA ones must win
    first = next(n for n in variables if n.endswith("weights"))
    written[first + "/RMSProp"] = torch.zeros_like(variables[first])
    written["global_step"] = torch.tensor(7, dtype=torch.int64)
    prefix = str(tmp_path / "model.ckpt")
    _write_tf_checkpoint(tf, written, prefix)

    from nasnet_det.weights import read_tf_checkpoint

    read = read_tf_checkpoint(prefix)
    dst = nasnet_det.build_nasnet("nasnet_a", dataset="imagenet", num_cells=3, penultimate_filters=96,
                                  num_classes=1000, image_size=96)
    state, report = convert_tf(read, dst)
    assert set(report.used) | set(report.dropped) == set(read), "every TF variable used or dropped"
    assert report.dropped[first + "/RMSProp"] == "optimizer slot"
    assert report.dropped["global_step"] == "training step counter"
    assert all(r.startswith("raw value superseded") for k, r in report.dropped.items()
               if k in variables)
    ref = src.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("classifier.", "aux_head.fc.")):
            assert torch.equal(value, ref[key][1:]), f"{key}: background row 0 must be dropped"
        else:
            assert torch.equal(value, ref[key]), key
    assert any("background" in n for n in report.notes)


def test_tf_missing_tensorflow_is_clear(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from nasnet_det.weights import read_tf_checkpoint

    with pytest.raises(WeightsError, match="needs TensorFlow"):
        read_tf_checkpoint("/nonexistent/model.ckpt")

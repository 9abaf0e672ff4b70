"""ScheduledDropPath: TF's keep-probability formula, per-example masks, where it applies."""
from __future__ import annotations

import pytest
import torch

from nasnet_det.modeling import build_nasnet, create_model, drop_path, drop_path_keep_prob


@pytest.mark.parametrize("cell_index, progress", [(0, 0.0), (0, 1.0), (5, 0.3), (13, 0.5), (21, 1.0), (21, 2.0)])
def test_keep_prob_formula_large(cell_index, progress):
    """keep = 1 - t * (cell_num + 1) / total_num_cells * (1 - p); Large: p = 0.7, 22 cells."""
    with torch.device("meta"):
        model = create_model("nasnet_a_large")
    model.set_drop_path_progress(progress)
    cell = model.cells[cell_index]
    t = min(progress, 1.0)
    expected = 1 - t * (cell_index + 1) / 22 * (1 - 0.7)
    assert cell.current_keep_prob() == pytest.approx(expected, abs=1e-12)


def test_keep_prob_versions():
    assert drop_path_keep_prob(0.6, 0.5, 0.25, "v3") == pytest.approx(1 - 0.5 * 0.25 * 0.4)
    assert drop_path_keep_prob(0.6, 0.5, 0.25, "v1") == pytest.approx(1 - 0.5 * 0.4)
    assert drop_path_keep_prob(0.6, 0.5, 0.25, "v2") == pytest.approx(1 - 0.25 * 0.4)
    assert drop_path_keep_prob(0.6, 0.0, 1.0, "v3") == 1.0  # step 0: nothing dropped (TF's schedule)
    with torch.device("meta"):
        amoeba = create_model("amoebanet_a", num_classes=1001)
    amoeba.set_drop_path_progress(0.5)
    assert amoeba.cells[3].current_keep_prob() == pytest.approx(1 - 0.5 * 0.3)  # v1: time only


def test_drop_path_masks_whole_examples():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.7)
    per_example = y.flatten(1)
    # every example is either all zeros or all 1/keep
    assert torch.all((per_example == 0).all(1) | torch.isclose(per_example, torch.tensor(1 / 0.7)).all(1))
    kept = (per_example[:, 0] > 0).float().mean().item()
    assert abs(kept - 0.7) < 0.03
    assert drop_path(x, 1.0) is x


def _tiny_cifar(**overrides):
    return build_nasnet("nasnet_a", dataset="cifar", num_cells=3, num_conv_filters=4, num_classes=3,
                        use_aux_head=False, **overrides)


def test_drop_path_only_in_training_and_only_when_p_below_one():
    torch.manual_seed(0)
    model = _tiny_cifar(drop_path_keep_prob=0.5)
    model.set_drop_path_progress(1.0)
    x = torch.randn(4, 3, 12, 12)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b)  # eval: deterministic
    calls = []
    import nasnet_det.modeling.cell as cell_module

    original = cell_module.drop_path
    cell_module.drop_path = lambda t, keep: calls.append(keep) or original(t, keep)
    try:
        model.train()
        model(x)
        n_train = len(calls)
        calls.clear()
        off = _tiny_cifar(drop_path_keep_prob=1.0).train()
        off.set_drop_path_progress(1.0)
        off(x)
        assert not calls  # p = 1: never called
        calls.clear()
        model.set_drop_path_progress(0.0)
        model(x)
        assert not calls  # t = 0: keep = 1
    finally:
        cell_module.drop_path = original
    # NASNet-A: 8 non-identity ops per normal cell, 9 per reduction cell (identity is never dropped)
    kinds = [c.stride for c in model.cells]
    assert n_train == sum(9 if s == 2 else 8 for s in kinds)


def test_drop_path_changes_training_outputs_per_example():
    torch.manual_seed(0)
    model = _tiny_cifar(drop_path_keep_prob=0.3).train()
    model.set_drop_path_progress(1.0)
    x = torch.randn(1, 3, 12, 12).expand(6, 3, 12, 12).contiguous()
    feats = model.forward_features(x)
    # identical inputs, different per-example masks -> different features across the batch
    assert not all(torch.allclose(feats[0], feats[i]) for i in range(1, 6))

"""The networks: exact parameter counts and MACs, stage shapes, the two-input recurrence (checked
against a transcription of TF's build loops), aux head, CIFAR cell_0 projections, forward+backward.

Shape and parameter checks build the models on the ``meta`` device (no memory, no compute).
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from nasnet_det import space
from nasnet_det.errors import ConfigError
from nasnet_det.modeling import NASNet, NASNetConfig, build_nasnet, create_model, list_models
from nasnet_det.modeling.factorized_reduction import FactorizedReduction
from nasnet_det.modeling.ops import ConvBN, PoolOp, ReLUConvBN


@functools.lru_cache(maxsize=None)
def _meta_model_cached(name: str, items: tuple) -> NASNet:
    with torch.device("meta"):
        return create_model(name, **dict(items))


def meta_model(name: str, **kwargs) -> NASNet:
    """A model on the meta device, cached: the tests using it only read its structure."""
    return _meta_model_cached(name, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=2)
def real_model(name: str, num_classes: int) -> NASNet:
    """A real model, built once per test session and shared by the MAC count and forward+backward
    tests (building the large ones dominates their cost on a 2-core machine)."""
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes)


def n_params(model: nn.Module) -> int:
    """Trainable parameters, classifier included, aux head excluded (the published convention)."""
    return sum(p.numel() for k, p in model.named_parameters() if p.requires_grad and not k.startswith("aux_head."))


PARAMS = {
    ("nasnet_a_mobile", 1000): 5_289_978,
    ("nasnet_a_large", 1000): 88_753_150,
    ("nasnet_a_cifar", 10): 3_346_538,
    ("pnasnet5_large", 1001): 86_061_989,
    ("pnasnet5_mobile", 1001): 5_065_568,
    ("amoebanet_a", 1001): 86_721_838,
}


PARAMS_BY_NAME = [(name, classes) for name, classes in PARAMS]


def test_list_models():
    assert list_models() == sorted(name for name, _ in PARAMS)


@pytest.mark.parametrize("name, classes", list(PARAMS), ids=[n for n, _ in PARAMS])
def test_exact_parameter_counts(name, classes):
    assert n_params(meta_model(name, num_classes=classes)) == PARAMS[(name, classes)]


def test_build_nasnet_n_at_p_sizing_matches_presets():
    from nasnet_det.modeling.factory import _normal_cell_width_multiplier

    with torch.device("meta"):
        cifar = build_nasnet("nasnet_a", dataset="cifar", num_cells=18, penultimate_filters=768, num_classes=10)
        mobile = build_nasnet(space.NASNET_A, num_cells=12, penultimate_filters=1056, num_classes=1000)
    assert cifar.config.num_conv_filters == 32 and n_params(cifar) == 3_346_538
    assert mobile.config.num_conv_filters == 44 and n_params(mobile) == 5_289_978
    # output width of the normal cell in units of F: P = m * 4 * F
    assert [_normal_cell_width_multiplier(g) for g in (space.NASNET_A, space.PNASNET_5, space.AMOEBANET_A)] == [6, 5, 4]


def _stage_shapes(model: NASNet, size: int):
    x = torch.empty(1, 3, size, size, device="meta")
    h_prev, h = model.stem(x)
    shapes = {"stem": (h.shape[-1], h.shape[1])}
    last_prev_in = h_prev
    for i, name in enumerate(model.cell_names):
        h_prev, h, last_prev_in = model._run_cells(h_prev, h, i, i + 1, last_prev_in, continuing=True)
        shapes[name] = (h.shape[-1], h.shape[1])
    return shapes


def test_feature_shapes_mobile_224():
    m = meta_model("nasnet_a_mobile", num_classes=1000)
    s = _stage_shapes(m, 224)
    assert s["stem"] == (111, 32) and s["cell_stem_0"] == (56, 44) and s["cell_stem_1"] == (28, 88)
    assert all(s[f"cell_{k}"] == (28, 264) for k in range(4))
    assert s["reduction_cell_0"] == (14, 352) and all(s[f"cell_{k}"] == (14, 528) for k in range(4, 8))
    assert s["reduction_cell_1"] == (7, 704) and all(s[f"cell_{k}"] == (7, 1056) for k in range(8, 12))
    assert m.num_features == 1056


def test_feature_shapes_large_331():
    m = meta_model("nasnet_a_large", num_classes=1000)
    s = _stage_shapes(m, 331)
    assert s["stem"] == (165, 96) and s["cell_stem_0"] == (83, 168) and s["cell_stem_1"] == (42, 336)
    assert all(s[f"cell_{k}"] == (42, 1008) for k in range(6))
    assert s["reduction_cell_0"] == (21, 1344) and all(s[f"cell_{k}"] == (21, 2016) for k in range(6, 12))
    assert s["reduction_cell_1"] == (11, 2688) and all(s[f"cell_{k}"] == (11, 4032) for k in range(12, 18))


def test_feature_shapes_cifar_32():
    m = meta_model("nasnet_a_cifar", num_classes=10)
    s = _stage_shapes(m, 32)
    assert s["stem"] == (32, 96)
    assert all(s[f"cell_{k}"] == (32, 192) for k in range(6))
    assert s["reduction_cell_0"] == (16, 256) and all(s[f"cell_{k}"] == (16, 384) for k in range(6, 12))
    assert s["reduction_cell_1"] == (8, 512) and all(s[f"cell_{k}"] == (8, 768) for k in range(12, 18))


def test_pnasnet_has_strided_cells_not_reduction_cells():
    m = meta_model("pnasnet5_large", num_classes=1001)
    assert m.cell_names == ["cell_stem_0", "cell_stem_1"] + [f"cell_{k}" for k in range(12)]
    assert m.reduction_indices == [6, 10] and [c.stride for c in m.cells].count(2) == 4
    s = _stage_shapes(m, 331)
    assert s["cell_3"] == (42, 1080) and s["cell_4"] == (21, 2160) and s["cell_11"] == (11, 4320)
    mobile = meta_model("pnasnet5_mobile", num_classes=1001)
    # F = 54 / 4 = 13 in cell_stem_0; cell_stem_1 (F = 27, odd) reduces conv0 with a factorized reduction
    assert mobile.cells[0].filters == 13 and mobile.cells[1].filters == 27
    fr = mobile.cells[1].prev_reduction
    assert (fr.path_1.conv.out_channels, fr.path_2.conv.out_channels) == (13, 14)


def test_drop_path_numbering_and_aux_position():
    for name, total, aux in [("nasnet_a_mobile", 16, "cell_7"), ("nasnet_a_large", 22, "cell_11"),
                             ("nasnet_a_cifar", 20, "cell_11"), ("pnasnet5_large", 14, "cell_7"),
                             ("amoebanet_a", 22, "cell_11")]:
        m = meta_model(name, num_classes=dict(PARAMS_BY_NAME)[name])
        assert [c.cell_num for c in m.cells] == list(range(total))
        assert all(c.total_num_cells == total for c in m.cells)
        assert m.cell_names[m.aux_index] == aux, name


def test_cifar_cell0_projections():
    """CIFAR cell_0 reads the raw 96-ch stem as h_{i-1}: pool/identity ops on it project to F=32 and the
    output concat fixes it up with 1x1+BN (TF ``cell_output/reduction_1/path_conv``)."""
    m = meta_model("nasnet_a_cifar", num_classes=10)
    c0 = m.cells[0]
    assert c0.prev_mode == "raw" and c0.conv_1x1.conv.in_channels == 96
    fix = c0.output_reductions["1"]
    assert isinstance(fix, ConvBN) and (fix.conv.in_channels, fix.conv.out_channels) == (96, 32)
    assert set(c0.output_reductions) == {"1"}
    assert isinstance(c0.comb_iter_2_right, ReLUConvBN) and c0.comb_iter_2_right.conv.in_channels == 96
    assert isinstance(c0.comb_iter_3_left, PoolOp) and c0.comb_iter_3_left.proj.conv.in_channels == 96
    assert c0.comb_iter_1_left.separable_1.pointwise_conv2d.in_channels == 96
    assert c0.out_channels == 192
    c1 = m.cells[1]  # h_{i-1} = stem (96 ch, same size) -> ReLU-1x1-BN; no fix-up needed
    assert c1.prev_mode == "project" and not c1.output_reductions
    assert isinstance(m.cells[7].prev_reduction, FactorizedReduction)  # cell_6 after reduction_cell_0


def _tf_wiring(cfg: NASNetConfig):
    """(h, h_prev) source names per cell, transcribed from TF's _build_nasnet_base / _build_pnasnet_base."""
    outputs, wiring = [None, "conv0"], {}
    for s in range(cfg.num_stem_cells if cfg.dataset == "imagenet" else 0):
        wiring[f"cell_stem_{s}"] = (outputs[-1], outputs[-2])
        outputs.append(f"cell_stem_{s}")
    red = [int(r / 3 * cfg.num_cells) for r in (1, 2)]
    prev_layer = None
    for k in range(cfg.num_cells):
        if cfg.reduction_style == "insert":
            if cfg.skip_reduction_layer_input:
                prev_layer = outputs[-2]
            if k in red:
                name = f"reduction_cell_{red.index(k)}"
                wiring[name] = (outputs[-1], outputs[-2])
                outputs.append(name)
            if not cfg.skip_reduction_layer_input:
                prev_layer = outputs[-2]
        elif cfg.skip_reduction_layer_input or k not in red:
            prev_layer = outputs[-2]
        wiring[f"cell_{k}"] = (outputs[-1], prev_layer)
        outputs.append(f"cell_{k}")
    return wiring


@pytest.mark.parametrize("genotype, style", [("nasnet_a", "insert"), ("pnasnet5", "stride")])
@pytest.mark.parametrize("skip", [False, True])
def test_two_input_recurrence_matches_tf(genotype, style, skip):
    torch.manual_seed(0)
    model = build_nasnet(genotype, num_cells=6, num_classes=3, num_conv_filters=4, stem_filters=8,
                         reduction_style=style, skip_reduction_layer_input=skip).eval()
    names = {}
    seen = {}
    model.conv0.register_forward_hook(lambda mod, args, out: names.__setitem__(id(out), "conv0"))
    for name, cell in zip(model.cell_names, model.cells):
        cell.register_forward_hook(lambda mod, args, out, name=name: names.__setitem__(id(out), name))
        cell.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args))
    with torch.no_grad():
        model(torch.randn(1, 3, 45, 38))
    got = {n: (names[id(a[0])], None if a[1] is None else names[id(a[1])]) for n, a in seen.items()}
    assert got == _tf_wiring(model.config)


def test_forward_cells_slices_compose_like_detection_split():
    """Backbone up to reduction_cell_1, the rest run separately (the ROI-head split), equals one run."""
    torch.manual_seed(0)
    model = build_nasnet("nasnet_a", num_cells=6, num_classes=0, num_conv_filters=4, stem_filters=8,
                         skip_reduction_layer_input=True).eval()
    x = torch.randn(2, 3, 50, 42)
    with torch.no_grad():
        full = model.forward_features(x)
        split = model.reduction_indices[1]
        h_prev, h = model.forward_cells(*model.stem(x), 0, split)
        parts = model.forward_cells(h_prev, h, split)[1]
        pooled = model(x)
    torch.testing.assert_close(parts, full, rtol=0, atol=0)
    assert model.classifier is None and pooled.shape == (2, model.num_features)


def test_aux_head_only_in_training():
    torch.manual_seed(0)
    model = create_model("nasnet_a_cifar", num_classes=10, num_cells=3, num_conv_filters=4)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 10)
    assert model.aux_head.conv.kernel_size == (4, 4)  # 16 -> avgpool 5/3 -> 4
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert create_model("nasnet_a_cifar", num_classes=10, use_aux_head=False, num_cells=3).aux_head is None
    amoeba = meta_model("amoebanet_a", num_classes=1001)
    assert amoeba.aux_head.proj.out_channels == 51 and amoeba.aux_head.conv.out_channels == 307  # scaling 0.4


def _fvcore_macs(model, size):
    fvcore = pytest.importorskip("fvcore.nn")
    flops = fvcore.FlopCountAnalysis(model.eval(), torch.randn(1, 3, size, size))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_op = flops.by_operator()
    return sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "matmul"))


@pytest.mark.parametrize("name, size, expected", [("nasnet_a_mobile", 224, 563.6e6),
                                                  ("nasnet_a_large", 331, 23.78e9)])
def test_fvcore_macs(name, size, expected):
    """Convs + FC multiply-adds (fvcore counts one MAC as one flop); BN is not counted, as in the paper."""
    with torch.no_grad():
        macs = _fvcore_macs(real_model(name, 1000), size)
    assert abs(macs - expected) / expected < 0.005, macs


FWD_BWD = [  # the first two reuse the models of the MAC tests (real_model keeps the last two)
    ("nasnet_a_large", 1000, (48, 67)),
    ("nasnet_a_mobile", 1000, (96, 131)),
    ("nasnet_a_cifar", 10, (24, 40)),
    ("pnasnet5_mobile", 1001, (96, 131)),
    ("pnasnet5_large", 1001, (48, 67)),
    ("amoebanet_a", 1001, (48, 67)),
]


@pytest.mark.parametrize("name, classes, size", FWD_BWD, ids=[n for n, _, _ in FWD_BWD])
def test_forward_backward_non_default_size(name, classes, size):
    torch.manual_seed(0)
    model = real_model(name, classes).train()
    model.zero_grad(set_to_none=True)
    model.set_drop_path_progress(0.5)
    logits, aux = model(torch.randn(2, 3, *size))
    assert logits.shape == aux.shape == (2, classes)
    (logits.logsumexp(1).mean() + 0.4 * aux.logsumexp(1).mean()).backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_searched_genotypes_run(seed):
    """Any decoded genotype runs, including concat / layernorm / instancenorm combines."""
    import random

    rng = random.Random(seed)
    search = space.SearchSpace(combines=space.EXTENDED_COMBINES)
    genotype = search.decode([rng.randrange(n) for n in search.decision_sizes()])
    for dataset, size in (("cifar", 20), ("imagenet", 37)):
        model = build_nasnet(genotype, dataset=dataset, num_cells=3, penultimate_filters=96, num_classes=4,
                             drop_path_keep_prob=0.5).train()
        model.set_drop_path_progress(1.0)
        logits, aux = model(torch.randn(2, 3, size, size + 3))
        (logits.sum() + aux.sum()).backward()
        assert logits.shape == (2, 4)


def test_darts_v2_and_json_path(tmp_path):
    path = tmp_path / "darts.json"
    space.DARTS_V2.to_json(path)
    model = build_nasnet(str(path), dataset="cifar", num_cells=3, penultimate_filters=64, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'nasnet_z'"):
        create_model("nasnet_z")
    with pytest.raises(ConfigError, match=r"unknown NASNetConfig field\(s\) \['num_cell'\]"):
        create_model("nasnet_a_mobile", num_cell=3)
    with pytest.raises(ValueError, match="dataset"):
        build_nasnet("nasnet_a", dataset="mnist")
    with pytest.raises(space.GenotypeError, match="unknown genotype name"):
        build_nasnet("nasnet_q")
    with pytest.raises(ValueError, match="drop_path_version"):
        create_model("nasnet_a_cifar", drop_path_version="v9", num_cells=3)


def test_bn_hyperparameters_per_family():
    mobile = meta_model("nasnet_a_mobile", num_classes=1000)
    cifar = meta_model("nasnet_a_cifar", num_classes=10)
    bn_m = mobile.cells[0].conv_1x1.bn
    bn_c = cifar.cells[0].conv_1x1.bn
    assert (bn_m.eps, bn_m.momentum) == (1e-3, 0.0003)
    assert (bn_c.eps, bn_c.momentum) == (1e-5, 0.1)
    assert mobile.dropout.p == pytest.approx(0.5) and cifar.dropout.p == 0.0


@pytest.mark.parametrize("genotype, stride", [("nasnet_a", 1), ("nasnet_a", 2), ("amoebanet_a", 2), ("darts_v2", 1)])
def test_cell_matches_a_plain_reference(genotype, stride):
    """The cell (shared ReLUs, fix-ups) equals a literal reading of the spec built from its own op modules."""
    from nasnet_det.modeling import Cell

    torch.manual_seed(0)
    g = space.resolve_genotype(genotype)
    spec = g.reduce if stride == 2 else g.normal
    cell = Cell(spec, in_channels=12, prev_channels=10, filters=8, stride=stride,
                norm=lambda c: nn.BatchNorm2d(c, eps=1e-3), prev_is_larger=True).eval()
    for m in cell.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    h, h_prev = torch.randn(2, 12, 9, 11), torch.randn(2, 10, 17, 21)
    with torch.no_grad():
        states = [cell.conv_1x1(h), cell.prev_reduction(torch.relu(h_prev))]
        for k, block in enumerate(spec.blocks):
            a = getattr(cell, f"comb_iter_{k}_left")(states[block.inputs[0]])
            b = getattr(cell, f"comb_iter_{k}_right")(states[block.inputs[1]])
            states.append(a + b)
        ref = torch.cat([cell.output_reductions[str(i)](states[i]) if str(i) in cell.output_reductions
                         else states[i] for i in spec.concat], 1)
        out = cell(h, h_prev)
    assert out.shape[1] == cell.out_channels
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_twin_ops_run_once():
    """NASNet-A's normal cell adds avg_pool_3x3(h) to itself: the pooling runs once, the sum is exact
    (the reference above checks the value bit for bit); ops with weights are never shared."""
    from nasnet_det.modeling import Cell

    g = space.resolve_genotype("nasnet_a")
    cell = Cell(g.normal, in_channels=12, prev_channels=8, filters=8, stride=1,
                norm=lambda c: nn.BatchNorm2d(c)).eval()
    twins = [k for k, plan in enumerate(cell.block_plan) if plan.twin]
    assert twins == [k for k, b in enumerate(g.normal.blocks) if b.ops == ("avg_pool_3x3", "avg_pool_3x3")] != []
    calls = []
    for k in twins:
        for side in ("left", "right"):
            getattr(cell, f"comb_iter_{k}_{side}").register_forward_hook(lambda m, i, o, side=side: calls.append(side))
    with torch.no_grad():
        cell(torch.randn(1, 12, 7, 7), torch.randn(1, 8, 7, 7))
    assert calls == ["left"] * len(twins)
    from nasnet_det.space.genotype import Block, CellSpec

    spec = CellSpec.from_blocks([Block((0, 0), ("sep_conv_3x3", "sep_conv_3x3")), Block((1, 1), ("max_pool_3x3",) * 2)])
    pair = Cell(spec, in_channels=12, prev_channels=8, filters=8, stride=1, norm=lambda c: nn.BatchNorm2d(c))
    assert [plan.twin for plan in pair.block_plan] == [False, True]  # two separable convs have two sets of weights
    x, x_prev = torch.randn(2, 12, 7, 7, requires_grad=True), torch.randn(2, 8, 7, 7)
    pair.train()(x, x_prev).sum().backward()  # training: the shared output feeds both sides of the sum
    assert x.grad is not None and torch.isfinite(x.grad).all()

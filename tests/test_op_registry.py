"""The op registry (nasnet_det/space/ops.py) is the one place an op is declared, and every consumer reads it.

Each registered op must build, fold its BNs, have a diagram label and family, a TF token, and
either TF-slim variable scopes that name every parameter or an explicit "no TF checkpoint" error.
"""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from nasnet_det.errors import GenotypeError, WeightsError
from nasnet_det.modeling import build_nasnet, build_op
from nasnet_det.modeling.inference import fold_batchnorm
from nasnet_det.modeling.ops import OP_BUILDERS, ConvBNModule
from nasnet_det.space import OP_REGISTRY, PAPER_OPS, TF_OP_NAMES, Block, CellSpec, Genotype, SearchSpace
from nasnet_det.space.diagram import COLORS, OP_LABELS, op_family
from nasnet_det.weights import export_tf_variables

ROOT = Path(__file__).resolve().parents[1]
OPS = sorted(OP_REGISTRY)


def _bn(c: int) -> nn.Module:
    return nn.BatchNorm2d(c)


def _randomize_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def test_every_kind_has_a_builder_and_the_paper_list_is_drawn_from_the_registry():
    assert {spec.kind for spec in OP_REGISTRY.values()} <= set(OP_BUILDERS)
    assert set(PAPER_OPS) <= set(OP_REGISTRY) and len(set(PAPER_OPS)) == len(PAPER_OPS) == 13
    assert SearchSpace().ops == PAPER_OPS


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("stride,c_in", [(1, 8), (2, 6)])
def test_every_op_builds_and_folds_exactly(name, stride, c_in):
    torch.manual_seed(0)
    op = build_op(name, c_in, 8, stride, _bn)
    _randomize_bn(op)
    op.eval()
    ref = copy.deepcopy(op)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in op.modules())
    assert fold_batchnorm(op) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in op.modules())
    x = torch.randn(2, c_in, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(op(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_a_label_a_family_and_a_tf_token(name):
    spec = OP_REGISTRY[name]
    assert OP_LABELS[name] == spec.label and spec.label
    assert op_family(name) == spec.family and spec.family in COLORS
    assert TF_OP_NAMES[spec.tf_name] == name


def _all_ops_genotype(ops: list[str]) -> Genotype:
    """One cell that uses every op in ``ops`` once (both cells the same), inputs from both cell inputs."""
    blocks = [Block((k % 2, 1 - k % 2), (a, b)) for k, (a, b) in enumerate(zip(ops[::2], ops[1::2] + ops[:1]))]
    cell = CellSpec.from_blocks(blocks)
    return Genotype(normal=cell, reduce=cell, name="all_ops")


def test_tf_scopes_name_every_parameter_of_the_ops_that_have_them():
    ops = [n for n in OPS if OP_REGISTRY[n].tf_scopes]
    assert {"identity", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3"} <= set(ops)
    torch.manual_seed(0)
    model = build_nasnet(_all_ops_genotype(ops), dataset="imagenet", num_cells=3, penultimate_filters=96,
                         num_classes=10, image_size=96)
    names = export_tf_variables(model)
    tensors = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(names) == len(tensors)  # every parameter and statistic has its own TF variable
    assert any(n.endswith("/separable_3x3_1/depthwise_weights") for n in names)
    assert any(n.endswith("/bn_sep_7x7_2/gamma") for n in names)


@pytest.mark.parametrize("name", [n for n in OPS if not OP_REGISTRY[n].tf_scopes])
def test_an_op_no_tf_checkpoint_holds_is_a_clear_conversion_error(name):
    model = build_nasnet(_all_ops_genotype([name, "identity"]), dataset="imagenet", num_cells=3,
                         penultimate_filters=96, num_classes=10, image_size=96)
    with pytest.raises(WeightsError, match=f"no TF-slim checkpoint holds op '{name}'"):
        export_tf_variables(model)


def test_unknown_op_is_a_genotype_error():
    with pytest.raises(GenotypeError, match="unknown op 'warp'"):
        build_op("warp", 8, 8, 1, _bn)


class _NoRule(nn.Module):
    """A new op module that forgot to declare its conv -> BN pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)


class _PartialRule(ConvBNModule):
    CONV_BN = ((("conv",), "bn"),)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)


@pytest.mark.parametrize("module", [_NoRule, _PartialRule])
def test_a_bn_without_a_fold_rule_is_an_error_not_a_silent_no_op(module):
    with pytest.raises(NotImplementedError, match=r"\.bn2? is a BatchNorm that no fold rule names"):
        fold_batchnorm(nn.Sequential(module().eval()))


def test_the_space_layer_does_not_import_torch():
    """nasnet_det/space is pure data: tools/draw_cell.py writing a .dot file must not need torch."""
    for path in sorted((ROOT / "nasnet_det" / "space").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(m.split(".")[0] in ("torch", "numpy") for m in mods), f"{path.name} imports {mods}"

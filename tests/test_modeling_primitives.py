"""TF-exactness of the primitives: SAME padding, pooling, factorized reduction, separable stacks.

The reference is TensorFlow itself (tensorflow-cpu, imported lazily: these tests skip without it).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasnet_det.modeling import AvgPool2dSame, Conv2dSame, FactorizedReduction, MaxPool2dSame, tf_same_pads
from nasnet_det.modeling.ops import SepConvStack, build_op


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu is the reference for TF-exactness")
    return tf


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def _nchw(y) -> torch.Tensor:
    return torch.from_numpy(np.array(y)).permute(0, 3, 1, 2)


SIZES = [(8, 8), (9, 9), (8, 11), (7, 10)]


def test_tf_same_pads_formula():
    assert tf_same_pads(8, 3, 2) == (0, 1)
    assert tf_same_pads(9, 3, 2) == (1, 1)
    assert tf_same_pads(8, 5, 2) == (1, 2)
    assert tf_same_pads(8, 7, 2) == (2, 3)
    assert tf_same_pads(10, 3, 1) == (1, 1)
    assert tf_same_pads(10, 3, 1, dilation=2) == (2, 2)
    assert tf_same_pads(8, 1, 2) == (0, 0)


def test_stride1_conv_uses_static_padding():
    conv = Conv2dSame(4, 4, 5, 1)
    assert conv.padding == (2, 2) and not conv._dynamic
    assert Conv2dSame(4, 4, 3, 2)._dynamic


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k, stride", [(3, 2), (5, 2), (7, 2), (3, 1), (5, 1)])
def test_depthwise_conv_matches_tf(tf, size, k, stride):
    torch.manual_seed(0)
    conv = Conv2dSame(3, 3, k, stride, groups=3)
    x = torch.randn(2, 3, *size)
    ours = conv(x).detach()
    w = conv.weight.detach().permute(2, 3, 0, 1).numpy()  # [C,1,k,k] -> [k,k,C,1]
    ref = tf.nn.depthwise_conv2d(_nhwc(x), w, [1, stride, stride, 1], "SAME")
    assert ours.shape == _nchw(ref).shape
    torch.testing.assert_close(ours, _nchw(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kernel, stride", [(3, 2), ((1, 7), (1, 2)), ((7, 1), (2, 1)), (3, 1)])
def test_regular_conv_matches_tf(tf, size, kernel, stride):
    torch.manual_seed(0)
    conv = Conv2dSame(3, 5, kernel, stride)
    x = torch.randn(2, 3, *size)
    ours = conv(x).detach()
    w = conv.weight.detach().permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO
    s = stride if isinstance(stride, tuple) else (stride, stride)
    ref = tf.nn.conv2d(_nhwc(x), w, [1, s[0], s[1], 1], "SAME")
    torch.testing.assert_close(ours, _nchw(ref), atol=1e-5, rtol=1e-5)


def test_dilated_depthwise_matches_tf(tf):
    torch.manual_seed(0)
    conv = Conv2dSame(3, 3, 3, 1, dilation=2, groups=3)
    x = torch.randn(1, 3, 9, 10)
    w = conv.weight.detach().permute(2, 3, 0, 1).numpy()
    ref = tf.nn.depthwise_conv2d(_nhwc(x), w, [1, 1, 1, 1], "SAME", dilations=[2, 2])
    torch.testing.assert_close(conv(x).detach(), _nchw(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k, stride", [(3, 2), (3, 1), (5, 2), (7, 2), (5, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])  # NCHW on CPU pools a channels_last copy
def test_max_pool_matches_tf(tf, size, k, stride, layout):
    x = torch.randn(2, 3, *size) - 5.0  # all negative: zero padding would win, -inf must not
    ref = tf.nn.max_pool2d(_nhwc(x), k, stride, "SAME")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(MaxPool2dSame(k, stride)(x), _nchw(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k, stride", [(3, 2), (3, 1), (5, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])  # NCHW stride 1 runs as an all-ones depthwise conv
def test_avg_pool_excludes_padding_like_tf(tf, size, k, stride, layout):
    x = torch.randn(2, 3, *size) + 3.0
    ref = tf.nn.avg_pool2d(_nhwc(x), k, stride, "SAME")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(AvgPool2dSame(k, stride)(x), _nchw(ref), atol=1e-5, rtol=1e-5)


def _tf_factorized_reduction(tf, x_nhwc, w1, w2):
    """TF-slim's stride-2 factorized_reduction (nasnet_utils), without the final BN."""
    path1 = tf.nn.avg_pool2d(x_nhwc, 1, 2, "VALID")
    path1 = tf.nn.conv2d(path1, w1, 1, "VALID")
    path2 = tf.pad(x_nhwc, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
    path2 = tf.nn.avg_pool2d(path2, 1, 2, "VALID")
    path2 = tf.nn.conv2d(path2, w2, 1, "VALID")
    return tf.concat([path1, path2], axis=3)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c_out", [6, 7])
def test_factorized_reduction_matches_tf(tf, size, c_out):
    torch.manual_seed(0)
    fr = FactorizedReduction(4, c_out, lambda c: nn.Identity())
    assert fr.path_1.conv.out_channels == c_out // 2
    assert fr.path_2.conv.out_channels == c_out - c_out // 2  # odd F: the extra channel goes to path 2
    x = torch.randn(2, 4, *size)
    w1 = fr.path_1.conv.weight.detach().permute(2, 3, 1, 0).numpy()
    w2 = fr.path_2.conv.weight.detach().permute(2, 3, 1, 0).numpy()
    ref = _tf_factorized_reduction(tf, _nhwc(x), w1, w2)
    torch.testing.assert_close(fr(x).detach(), _nchw(ref), atol=1e-5, rtol=1e-5)


def test_separable_stack_matches_tf(tf):
    """separable_5x5_2 at stride 2 on an even size, C_in != F, BN in eval (moving stats)."""
    torch.manual_seed(0)
    eps = 1e-3
    op = SepConvStack(4, 6, 5, 2, lambda c: nn.BatchNorm2d(c, eps=eps)).eval()
    for bn in (op.bn_sep_1, op.bn_sep_2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 4, 10, 12)

    def tf_sep(h, sep, bn, stride):
        h = tf.nn.relu(h)
        dw = sep.depthwise_conv2d.weight.detach().permute(2, 3, 0, 1).numpy()
        pw = sep.pointwise_conv2d.weight.detach().permute(2, 3, 1, 0).numpy()
        h = tf.nn.separable_conv2d(h, dw, pw, [1, stride, stride, 1], "SAME")
        return tf.nn.batch_normalization(h, bn.running_mean.numpy(), bn.running_var.numpy(),
                                         bn.bias.detach().numpy(), bn.weight.detach().numpy(), eps)

    ref = tf_sep(_nhwc(x), op.separable_1, op.bn_sep_1, 2)
    ref = tf_sep(ref, op.separable_2, op.bn_sep_2, 1)
    with torch.no_grad():
        torch.testing.assert_close(op(x), _nchw(ref), atol=1e-4, rtol=1e-5)


def test_identity_and_pool_projections():
    bn = lambda c: nn.BatchNorm2d(c)  # noqa: E731
    assert isinstance(build_op("identity", 8, 8, 1, bn), nn.Identity)
    proj = build_op("identity", 8, 8, 2, bn)
    assert proj.conv.stride == (2, 2) and proj.conv.kernel_size == (1, 1)
    assert build_op("identity", 6, 8, 1, bn).conv.in_channels == 6
    assert build_op("avg_pool_3x3", 8, 8, 1, bn).proj is None
    assert build_op("max_pool_3x3", 6, 8, 2, bn).proj.conv.in_channels == 6
    with pytest.raises(ValueError, match="unknown op 'warp'"):
        build_op("warp", 8, 8, 1, bn)


@pytest.mark.parametrize("name", ["conv_1x7_7x1", "conv_1x3_3x1", "dil_conv_3x3", "conv_3x3", "conv_1x1",
                                  "max_pool_5x5", "max_pool_7x7", "sep_conv_7x7"])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_shape(name, stride):
    op = build_op(name, 6, 8, stride, lambda c: nn.BatchNorm2d(c))
    y = op(torch.randn(2, 6, 9, 10))
    assert y.shape == (2, 8, 5 if stride == 2 else 9, 5 if stride == 2 else 10)


def test_conv_1x7_7x1_is_the_amoebanet_bottleneck():
    op = build_op("conv_1x7_7x1", 6, 16, 2, lambda c: nn.BatchNorm2d(c))
    assert op.pre_conv.out_channels == 4 and op.post_conv.out_channels == 16
    assert op.conv_1xk.kernel_size == (1, 7) and op.conv_1xk.stride == (1, 2)
    assert op.conv_kx1.kernel_size == (7, 1) and op.conv_kx1.stride == (2, 1)
    n_params = sum(p.numel() for p in op.parameters())
    assert n_params == 6 * 4 + 2 * 4 + 4 * 4 * 7 * 2 + 2 * 4 * 2 + 4 * 16 + 2 * 16

"""Locally connected (eq. 9.9), tiled (eq. 9.10) and partially connected layers (sec. 9.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF
from descend.nn.local import position_major
from reference import conv as ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "valid"), (1, "same"), (2, "full")])
def test_locally_connected2d_matches_eq_9_9(stride, padding):
    x = rand(2, 3, 7, 6, seed=1)
    oh, ow = DF.output_size((7, 6), (3, 2), stride, padding)
    w = rand(4, oh, ow, 3, 3, 2, seed=2)
    b = rand(4, oh, ow, seed=3)
    z = DF.locally_connected2d(x, w, b, stride, padding)
    pads = DF.resolve_padding(padding, (3, 2))
    for n in range(2):
        expected = ref.locally_connected2d(x[n].numpy(), w.numpy(), (stride, stride), pads) + b.numpy()
        np.testing.assert_allclose(z[n].numpy(), expected, atol=1e-12)


def test_locally_connected_with_shared_weights_is_convolution():
    x, k = rand(2, 3, 6, 6), rand(4, 3, 3, 3)
    w = k[:, None, None].expand(4, 4, 4, 3, 3, 3)        # the same kernel at every location
    torch.testing.assert_close(DF.locally_connected2d(x, w), F.conv2d(x, k))


@pytest.mark.parametrize("tiles", [(1, 1), (2, 2), (2, 3), (3, 1), (4, 4)])   # <= 4 tiles: grouped conv; more: per-position engine
@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "same"), (1, "full")])
def test_tiled_conv2d_matches_eq_9_10(tiles, stride, padding):
    x = rand(2, 2, 8, 7, seed=4)
    K = rand(3, 2, 3, 2, *tiles, seed=5)
    z = DF.tiled_conv2d(x, K, None, stride, padding)
    pads = DF.resolve_padding(padding, (3, 2))
    for n in range(2):
        np.testing.assert_allclose(z[n].numpy(), ref.tiled_conv2d(x[n].numpy(), K.numpy(), (stride, stride), pads),
                                   atol=1e-12)


def test_tiled_limits_convolution_and_locally_connected():
    # fig. 9.16: t = 1 is convolution; t = output width is a locally connected layer.
    x = rand(2, 3, 7, 7, seed=6)
    k = rand(4, 3, 3, 3, seed=7)
    torch.testing.assert_close(DF.tiled_conv2d(x, k[..., None, None]), F.conv2d(x, k))
    K = rand(4, 3, 3, 3, 5, 5, seed=8)
    torch.testing.assert_close(DF.tiled_conv2d(x, K), DF.locally_connected2d(x, K.permute(0, 4, 5, 1, 2, 3)))


def test_tile_bias_cycles_like_the_kernels():
    x = torch.zeros(1, 1, 6, 7, dtype=torch.float64)
    K = torch.zeros(2, 1, 2, 2, 2, 3, dtype=torch.float64)
    b = rand(2, 2, 3, seed=9)
    z = DF.tiled_conv2d(x, K, b)
    for j in range(5):
        for k in range(6):
            torch.testing.assert_close(z[0, :, j, k], b[:, j % 2, k % 3])


def test_1d_layers_match_2d_oracles():
    x = rand(2, 3, 11, seed=10)
    w = rand(2, 5, 3, 3, seed=11)                         # (O, OL, C, k): stride 2 valid -> 5
    z = DF.locally_connected1d(x, w, None, 2)
    for n in range(2):
        expected = ref.locally_connected2d(x[n].numpy()[:, None], w.numpy()[:, None, :, :, None],
                                           (1, 2), ((0, 0), (0, 0)))[:, 0]
        np.testing.assert_allclose(z[n].numpy(), expected, atol=1e-12)
    K = rand(2, 3, 3, 2, seed=12)                         # (O, C, k, t)
    zt = DF.tiled_conv1d(x, K, rand(2, 2, seed=13), 1, "same")
    layer = dnn.TiledConv1d(3, 2, 3, 2, padding="same").double()
    with torch.no_grad():
        layer.weight.copy_(K)
        layer.bias.copy_(rand(2, 2, seed=13))
    torch.testing.assert_close(layer(x), zt)
    for n in range(2):
        expected = ref.tiled_conv2d(x[n].numpy()[:, None], K.numpy()[:, :, None, :, None, :], (1, 1),
                                    ((0, 0), (1, 1)))[:, 0] + np.tile(rand(2, 2, seed=13).numpy(), (1, 6))[:, :11]
        np.testing.assert_allclose(zt[n].numpy(), expected, atol=1e-12)


def test_gradcheck_local_and_tiled():
    x = rand(1, 2, 5, 5, seed=14).requires_grad_()
    w = rand(2, 2, 2, 2, 3, 3, seed=15).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: DF.locally_connected2d(x, w, None, 2), (x, w))
    K = rand(2, 2, 2, 2, 2, 2, seed=16).requires_grad_()
    b = rand(2, 2, 2, seed=17).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, K, b: DF.tiled_conv2d(x, K, b, 1, "same"), (x, K, b))
    K6 = rand(2, 2, 2, 2, 3, 2, seed=18).requires_grad_()      # 6 tiles: the per-position engine
    assert torch.autograd.gradcheck(lambda x, K: DF.tiled_conv2d(x, K, None, 2, "full"), (x, K6))


# The hand-written backward of the unshared engine (_UnsharedConv), checked against
# finite differences in float64: every weight layout it distinguishes (the module's
# position-major storage, a contiguous book-layout weight, the tiled kernels), stride,
# padding, incomplete tiles, one and several input channels, and second derivatives.
@pytest.mark.parametrize("channels,stride,padding", [(1, 1, "valid"), (3, 2, "same"), (2, (2, 1), "full")])
def test_unshared_backward_passes_gradcheck_for_every_weight_layout(channels, stride, padding):
    x = rand(2, channels, 6, 5, seed=20).requires_grad_()
    oh, ow = DF.output_size((6, 5), (3, 2), stride, padding)
    w = rand(2, oh, ow, channels, 3, 2, seed=21)
    for weight in (w.clone(), position_major(w)):
        weight.requires_grad_()
        f = lambda x, weight: DF.locally_connected2d(x, weight, None, stride, padding)   # noqa: E731
        assert torch.autograd.gradcheck(f, (x, weight))
        assert torch.autograd.gradgradcheck(f, (x, weight))
    K = rand(2, channels, 3, 2, 2, 3, seed=22).requires_grad_()          # 6 tiles: not a whole number per axis
    f = lambda x, K: DF.tiled_conv2d(x, K, None, stride, padding)          # noqa: E731
    assert torch.autograd.gradcheck(f, (x, K))
    assert torch.autograd.gradgradcheck(f, (x, K))


def test_position_major_module_weight_matches_the_book_layout():
    layer = dnn.LocallyConnected2d(3, 4, (7, 6), (3, 2), stride=(2, 1), padding="same").double()
    w = layer.weight.detach()
    assert w.shape == (4, 4, 6, 3, 3, 2) and not w.is_contiguous()
    assert w.stride()[0] == 1                                             # (positions, k, C, O) in memory
    x = rand(2, 3, 7, 6, seed=23).requires_grad_()
    out = layer(x)
    pads = DF.resolve_padding("same", (3, 2))
    for n in range(2):
        np.testing.assert_allclose((out - layer.bias)[n].detach().numpy(),
                                   ref.locally_connected2d(x[n].detach().numpy(), w.numpy(), (2, 1), pads),
                                   atol=1e-12)
    # Same values as a contiguous copy through the functional form: outputs and gradients agree.
    wc = w.contiguous().requires_grad_()
    xc = x.detach().clone().requires_grad_()
    ((out - layer.bias) ** 2).sum().backward()
    (DF.locally_connected2d(xc, wc, None, (2, 1), "same") ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wc.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xc.grad, rtol=1e-12, atol=1e-12)
    assert layer.weight.grad.stride() == layer.weight.stride()           # no copy to store the gradient
    one_d = dnn.LocallyConnected1d(2, 3, 9, 3)
    assert torch.equal(one_d.weight, position_major(one_d.weight.contiguous()))


def test_unshared_gradients_when_only_some_inputs_need_them():
    # First layer (input without grad), frozen weights, channels-last input.
    x = rand(2, 3, 6, 6, seed=24)
    w = rand(2, 4, 4, 3, 3, 3, seed=25)
    ref_x, ref_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    (DF.locally_connected2d(ref_x, ref_w) ** 2).sum().backward()
    frozen_x = x.clone().requires_grad_()
    (DF.locally_connected2d(frozen_x, w) ** 2).sum().backward()
    torch.testing.assert_close(frozen_x.grad, ref_x.grad)
    learnt_w = position_major(w).requires_grad_()
    (DF.locally_connected2d(x.contiguous(memory_format=torch.channels_last), learnt_w) ** 2).sum().backward()
    torch.testing.assert_close(learnt_w.grad, ref_w.grad)


def test_unshared_layers_train_under_bfloat16_autocast():
    # The forward follows autocast (bf16 products); the hand-written backward then gets a
    # bf16 output gradient and must still return float32 gradients close to float32's.
    torch.manual_seed(0)
    layer = dnn.LocallyConnected2d(3, 4, 8, 3, bias=None)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected = torch.autograd.grad(layer(x).sum(), (x, layer.weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
    got = torch.autograd.grad(z.float().sum(), (x, layer.weight))
    assert z.dtype == torch.bfloat16
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=0.05, atol=0.05)

def test_modules_parameters_and_biases():
    lc = dnn.LocallyConnected2d(3, 4, (8, 8), 3, stride=2)
    assert lc.weight.shape == (4, 3, 3, 3, 3, 3) and lc.bias.shape == (4, 3, 3)
    assert lc(torch.randn(2, 3, 8, 8)).shape == (2, 4, 3, 3)
    assert dnn.LocallyConnected1d(2, 3, 10, 3, bias="channel").bias.shape == (3,)
    tc = dnn.TiledConv2d(3, 4, 3, tiles=(2, 3))
    assert tc.weight.shape == (4, 3, 3, 3, 2, 3) and tc.bias.shape == (4, 2, 3)
    assert tc(torch.randn(2, 3, 9, 11)).shape == (2, 4, 7, 9)


def test_partially_connected_blocks_and_tables():
    x = rand(2, 4, 6, 6)
    blocks = dnn.PartiallyConnectedConv2d(4, 6, 3, groups=2).double()
    dense = blocks.dense_weight()
    assert (dense[:3, 2:] == 0).all() and (dense[3:, :2] == 0).all()
    np.testing.assert_allclose(blocks(x)[0].detach().numpy(),
                               ref.group_correlate(x[0].numpy(), blocks.weight.detach().numpy(), 2)
                               + blocks.bias.detach().numpy()[:, None, None], atol=1e-12)
    table = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    layer = dnn.PartiallyConnectedConv2d(4, 3, 3, connections=table).double()
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.dense_weight(), layer.bias))
    layer(x).sum().backward()
    assert (layer.weight.grad[~table] == 0).all()        # absent connections never learn


def test_shape_errors():
    with pytest.raises(ShapeError, match="output grid"):
        DF.locally_connected2d(torch.randn(1, 3, 8, 8), torch.randn(2, 5, 5, 3, 3, 3))
    with pytest.raises(ShapeError, match="channel mismatch"):
        DF.tiled_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 3, 3, 3, 2, 2))
    with pytest.raises(ShapeError, match="larger than the input"):
        dnn.LocallyConnected2d(1, 1, 4, 5)
    with pytest.raises(ShapeError, match="does not divide"):
        dnn.TiledConv2d(1, 1, 3, tiles=4, input_size=8, require_whole_tiles=True)
    with pytest.raises(ConfigError, match="exactly one"):
        dnn.PartiallyConnectedConv2d(4, 4, 3)
    with pytest.raises(ConfigError, match="groups"):
        dnn.PartiallyConnectedConv2d(4, 6, 3, groups=4)

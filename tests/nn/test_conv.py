"""Convolution vs cross-correlation, 1D/2D/3D, padding and stride (Deep Learning 9.1, 9.5, 9.7)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF
from reference import conv as ref

PADDINGS = ["valid", "same", "full", 1]


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dims,size,k", [(1, (9,), (3,)), (1, (8,), (4,)), (2, (7, 6), (3, 2)), (3, (4, 3, 4), (2, 2, 3))])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("stride", [1, 2])
def test_correlate_and_convolve_match_loop_oracles(dims, size, k, padding, stride):
    x = rand(2, 2, *size, seed=1)
    K = rand(3, 2, *k, seed=2)
    pads = DF.resolve_padding(padding, k)
    s = (stride,) * dims
    z = DF.correlate(x, K, stride=stride, padding=padding)
    conv = DF.convolve(x, K, stride=stride, padding=padding)
    for n in range(2):
        np.testing.assert_allclose(z[n].numpy(), ref.correlate(x[n].numpy(), K.numpy(), s, pads), atol=1e-12)
        np.testing.assert_allclose(conv[n].numpy(), ref.convolve(x[n].numpy(), K.numpy(), s, pads), atol=1e-12)
    assert z.shape[2:] == DF.output_size(size, k, stride, padding)


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_single_channel_matches_scipy(mode):
    x, k = rand(1, 1, 10, 9, seed=3), rand(1, 1, 4, 3, seed=4)
    np.testing.assert_allclose(DF.convolve2d(x, k, padding=mode)[0, 0].numpy(),
                               scipy.signal.convolve(x[0, 0].numpy(), k[0, 0].numpy(), mode), atol=1e-12)
    np.testing.assert_allclose(DF.correlate2d(x, k, padding=mode)[0, 0].numpy(),
                               scipy.signal.correlate(x[0, 0].numpy(), k[0, 0].numpy(), mode), atol=1e-12)


def test_same_padding_odd_kernel_matches_scipy_and_torch():
    x, k = rand(1, 1, 8, 7, seed=5), rand(1, 1, 3, 5, seed=6)
    np.testing.assert_allclose(DF.convolve2d(x, k, padding="same")[0, 0].numpy(),
                               scipy.signal.convolve(x[0, 0].numpy(), k[0, 0].numpy(), "same"), atol=1e-12)
    torch.testing.assert_close(DF.correlate(x, k, padding="same"), F.conv2d(x, k, padding="same"))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_even_same_padding_keeps_size_and_matches_torch():
    x, k = rand(2, 3, 9, 8), rand(4, 3, 4, 2)
    z = DF.correlate(x, k, padding="same")
    assert z.shape[2:] == x.shape[2:]
    torch.testing.assert_close(z, F.conv2d(x, k, padding="same"))


def test_convolution_flips_the_kernel_and_is_commutative_in_1d():
    # eq. 9.5: (K * I) == (I * K) for true convolution; cross-correlation is not commutative.
    a, b = rand(1, 1, 7, seed=7), rand(1, 1, 4, seed=8)
    torch.testing.assert_close(DF.convolve1d(a, b, padding="full"), DF.convolve1d(b, a, padding="full"))
    assert not torch.allclose(DF.correlate1d(a, b, padding="full"), DF.correlate1d(b, a, padding="full"))
    torch.testing.assert_close(DF.convolve(a, b), DF.correlate(a, b.flip(-1)))


def test_groups_match_oracle_and_torch():
    x, k = rand(1, 4, 6, 6), rand(6, 2, 3, 3)
    z = DF.correlate(x, k, groups=2)
    np.testing.assert_allclose(z[0].numpy(), ref.group_correlate(x[0].numpy(), k.numpy(), 2), atol=1e-12)
    torch.testing.assert_close(z, F.conv2d(x, k, groups=2))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 12), k=st.integers(1, 6), s=st.integers(1, 4),
       padding=st.sampled_from(["valid", "same", "full", 0, 2]))
def test_output_size_arithmetic(m, k, s, padding):
    pads = DF.resolve_padding(padding, (k,))[0]
    if k > m + sum(pads):
        with pytest.raises(ShapeError):
            DF.output_size(m, k, s, padding)
        return
    (o,) = DF.output_size(m, k, s, padding)
    assert o == (m + sum(pads) - k) // s + 1
    if s == 1:
        expected = {"valid": m - k + 1, "same": m, "full": m + k - 1}.get(padding, m + 2 * pads[0] - k + 1)
        assert o == expected
    assert DF.correlate1d(torch.ones(1, 1, m), torch.ones(1, 1, k), stride=s, padding=padding).shape[-1] == o


def test_gradcheck_correlate_and_convolve():
    x = rand(1, 2, 5, 4, seed=9).requires_grad_()
    k = rand(2, 2, 2, 3, seed=10).requires_grad_()
    b = rand(2, seed=11).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, k, b: DF.correlate(x, k, b, 2, "same"), (x, k, b))
    assert torch.autograd.gradcheck(lambda x, k: DF.convolve(x, k, None, 1, "full"), (x, k))


def test_errors_are_descend_errors():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ShapeError, match="larger than the input"):
        DF.correlate(x, torch.randn(2, 3, 5, 5), padding="valid")
    with pytest.raises(ShapeError, match="channel mismatch"):
        DF.correlate(x, torch.randn(2, 2, 3, 3))
    with pytest.raises(ShapeError, match="spatial axes"):
        DF.correlate(torch.randn(3, 4, 4), torch.randn(2, 3, 3, 3))
    with pytest.raises(ConfigError, match="padding"):
        DF.correlate(x, torch.randn(2, 3, 3, 3), padding="circular")
    with pytest.raises(ConfigError, match="stride"):
        DF.correlate(x, torch.randn(2, 3, 3, 3), stride=0)
    with pytest.raises(ShapeError, match="dtype"):
        DF.correlate(x.double(), torch.randn(2, 3, 3, 3))


def test_conv_modules_shared_and_location_bias():
    x = rand(2, 3, 6, 5)
    layer = dnn.Conv2d(3, 4, 3, padding="same", bias="location", input_size=(6, 5)).double()
    assert layer.bias.shape == (4, 6, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, padding=1) + layer.bias)
    flipped = dnn.Conv1d(2, 3, 4, stride=2, padding="full", flip=True).double()
    x1 = rand(2, 2, 9)
    torch.testing.assert_close(flipped(x1), DF.convolve(x1, flipped.weight, flipped.bias, 2, "full"))
    c3 = dnn.Conv3d(2, 2, (2, 3, 3), padding="same").double()
    x3 = rand(1, 2, 4, 5, 6)
    torch.testing.assert_close(c3(x3), DF.correlate(x3, c3.weight, c3.bias, 1, "same"))
    with pytest.raises(ConfigError, match="input_size"):
        dnn.Conv2d(3, 4, 3, bias="location")
    with pytest.raises(ShapeError, match="bias per location"):
        layer(rand(2, 3, 7, 5))


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "valid"), (2, "same"), (3, 1)])
def test_conv_transpose_is_the_adjoint_and_matches_torch(stride, padding):
    # <conv(x), y> == <x, conv_transpose(y)>: the transpose of the convolution matrix.
    x, k = rand(2, 3, 9, 8, seed=12), rand(4, 3, 3, 3, seed=13)
    z = DF.correlate(x, k, None, stride, padding)
    y = rand(*z.shape, seed=14)
    xt = DF.conv_transpose(y, k, None, stride, padding, output_size=x.shape[2:])
    assert xt.shape == x.shape
    torch.testing.assert_close((z * y).sum(), (x * xt).sum())
    if isinstance(padding, int) or padding == "valid":
        p = 0 if padding == "valid" else padding
        torch.testing.assert_close(DF.conv_transpose(y, k, None, stride, padding),
                                   F.conv_transpose2d(y, k, None, stride, p))


def test_conv_transpose_layer_upsamples_with_explicit_size():
    up = dnn.ConvTranspose2d(3, 2, 3, stride=2, padding="same").double()
    y = rand(1, 3, 4, 4)
    assert up(y, output_size=(8, 8)).shape == (1, 2, 8, 8)
    assert up(y, output_size=(7, 7)).shape == (1, 2, 7, 7)
    with pytest.raises(ShapeError, match="output_size"):
        up(y, output_size=(12, 12))
    assert torch.autograd.gradcheck(lambda t: up(t, output_size=(8, 8)), (y.requires_grad_(),))


def test_grouped_conv_transpose_matches_torch():
    y, k = rand(2, 4, 5, 5, seed=15), rand(4, 3, 3, 3, seed=16)     # 4 in, 2 groups of 3 out
    torch.testing.assert_close(DF.conv_transpose(y, k, None, 2, "valid", groups=2),
                               F.conv_transpose2d(y, k, None, 2, groups=2))
    layer = dnn.ConvTranspose1d(4, 6, 3, stride=2, groups=2).double()
    y1 = rand(2, 4, 7, seed=17)
    torch.testing.assert_close(layer(y1), F.conv_transpose1d(y1, layer.weight, layer.bias, 2, groups=2))

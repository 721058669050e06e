"""Pooling, Deep Learning sec. 9.3 (figs. 9.8-9.11) and Nielsen ch. 6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF
from reference import pooling as ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["max", "avg", "l2", "weighted"])
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1), (4, 3)])
@pytest.mark.parametrize("size", [(7, 8), (9,)])
def test_pooling_matches_loop_oracle_with_partial_regions(kind, k, s, size):
    x = rand(2, 3, *size, seed=1)
    y = DF.pool(x, kind, k, s)
    for n in range(2):
        np.testing.assert_allclose(y[n].numpy(), ref.pool(x[n].numpy(), kind, k, s), atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg", "l2"])
def test_pooling_without_partial_region(kind):
    x = rand(1, 2, 7, 7, seed=2)
    y = DF.pool(x, kind, 3, 2, partial=False)
    np.testing.assert_allclose(y[0].numpy(), ref.pool(x[0].numpy(), kind, 3, 2, partial=False), atol=1e-12)


def test_fig_9_10_width_three_stride_two_keeps_the_smaller_last_region():
    x = torch.tensor([[[0.1, 1.0, 0.2, 0.1, 0.0, 0.3]]], dtype=torch.float64)
    # regions [0:3], [2:5], [4:6]: the last one has two units but is kept.
    torch.testing.assert_close(DF.max_pool(x, 3, 2), torch.tensor([[[1.0, 0.2, 0.3]]], dtype=torch.float64))


def test_agrees_with_torch_where_semantics_coincide():
    x = rand(2, 3, 9, 8, seed=3)
    torch.testing.assert_close(DF.max_pool(x, 3, 2), F.max_pool2d(x, 3, 2, ceil_mode=True))
    torch.testing.assert_close(DF.avg_pool(x, 3, 2), F.avg_pool2d(x, 3, 2, ceil_mode=True))
    torch.testing.assert_close(DF.l2_pool(x, 2, 2, partial=False), F.lp_pool2d(x, 2, 2, 2))
    torch.testing.assert_close(DF.max_pool(x[:, :, 0], 2), F.max_pool1d(x[:, :, 0], 2, ceil_mode=True))


def test_max_pooling_invariance_fig_9_8():
    # Shifting the detector outputs by one pixel changes few max-pooled outputs (width 3, stride 1).
    x = torch.tensor([[[0.1, 1.0, 0.2, 0.1, 0.0, 0.1, 0.3, 0.2]]], dtype=torch.float64)
    shifted = torch.roll(x, 1, dims=-1)
    a, b = DF.max_pool(x, 3, 1, partial=False), DF.max_pool(shifted, 3, 1, partial=False)
    assert (x != shifted).all() and (a != b).sum() < a.numel()


def test_global_channel_and_adaptive_pooling():
    x = rand(2, 6, 7, 9, seed=4)
    torch.testing.assert_close(DF.global_pool(x, "avg"), x.mean(dim=(2, 3)))
    torch.testing.assert_close(DF.global_pool(x, "max"), x.amax(dim=(2, 3)))
    y = DF.channel_pool(x, 3)
    np.testing.assert_allclose(y[1].numpy(), ref.maxout(x[1].numpy(), 3), atol=0)
    for out in [(2, 2), (3, 4), (7, 9)]:
        torch.testing.assert_close(DF.adaptive_pool(x, out, "max"), F.adaptive_max_pool2d(x, out))
        torch.testing.assert_close(DF.adaptive_pool(x, out, "avg"), F.adaptive_avg_pool2d(x, out))
        for kind in ["max", "avg", "l2"]:
            np.testing.assert_allclose(DF.adaptive_pool(x, out, kind)[0].numpy(),
                                       ref.adaptive_pool2d(x[0].numpy(), *out, kind), atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 30), w=st.integers(2, 30))
def test_adaptive_pooling_gives_fixed_size_for_any_input(h, w):
    x = torch.randn(1, 2, h, w)
    assert DF.adaptive_pool(x, 2).shape == (1, 2, 2, 2)       # "one for each quadrant"


@settings(max_examples=20, deadline=None)
@given(L=st.integers(1, 20), k=st.integers(1, 6), s=st.integers(1, 6))
def test_partial_pooling_covers_every_unit(L, k, s):
    n = DF.pooled_size(L, k, s)
    assert (n - 1) * s < L                      # every region starts inside the input
    assert (n - 1) * s + k >= L or n * s >= L   # and no unit is left after the last one
    x = torch.arange(L, dtype=torch.float64)[None, None]
    np.testing.assert_allclose(DF.avg_pool(x, k, s)[0].numpy(), ref.pool(x[0].numpy(), "avg", k, s))


def test_gradients():
    x = rand(1, 2, 5, 6, seed=5).requires_grad_()
    for kind in ["avg", "l2", "weighted"]:
        assert torch.autograd.gradcheck(lambda t: DF.pool(t, kind, 3, 2), (x,))
    assert torch.autograd.gradcheck(lambda t: DF.adaptive_pool(t, (2, 3), "avg"), (x,))
    zero = torch.zeros(1, 1, 4, 4, requires_grad=True)
    DF.l2_pool(zero, 2).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_modules_and_maxout_conv():
    x = rand(2, 3, 8, 8)
    assert dnn.Pool("max", 3, 2)(x).shape == (2, 3, 4, 4)
    assert dnn.GlobalPool("avg")(x).shape == (2, 3)
    assert dnn.AdaptivePool((3, 3), "avg")(x).shape == (2, 3, 3, 3)
    m = dnn.MaxoutConv2d(3, 4, 3, pieces=3).double()
    torch.testing.assert_close(m(x), F.conv2d(x, m.conv.weight, m.conv.bias).reshape(2, 4, 3, 6, 6).amax(2))


def test_pooling_errors():
    with pytest.raises(ConfigError, match="Unknown pooling kind"):
        dnn.Pool("median", 2)
    with pytest.raises(ShapeError, match="multiple of pool_size"):
        DF.channel_pool(torch.randn(1, 5, 2, 2), 2)
    with pytest.raises(ShapeError, match="larger than the input"):
        DF.max_pool(torch.randn(1, 1, 3, 3), 4, partial=False)
    with pytest.raises(ShapeError, match="cannot be split"):
        DF.adaptive_pool(torch.randn(1, 1, 3, 3), 4)

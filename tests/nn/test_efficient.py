"""FFT and separable convolution, Deep Learning sec. 9.8."""

from __future__ import annotations

import pytest
import torch

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("size,k", [((20,), (5,)), ((16, 13), (5, 4)), ((6, 7, 5), (3, 2, 3))])
@pytest.mark.parametrize("padding", ["valid", "same", "full"])
@pytest.mark.parametrize("stride", [1, 2])
def test_fft_conv_equals_direct_convolution(size, k, padding, stride):
    x, K, b = rand(2, 3, *size, seed=1, dtype=torch.float32), rand(4, 3, *k, seed=2, dtype=torch.float32), rand(4, dtype=torch.float32)
    torch.testing.assert_close(DF.fft_conv(x, K, b, stride, padding), DF.correlate(x, K, b, stride, padding),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(DF.fft_conv(x, K, None, stride, padding, flip=True),
                               DF.convolve(x, K, None, stride, padding), atol=1e-5, rtol=1e-5)


def test_fft_conv_large_kernel_and_gradcheck():
    x, K = rand(1, 2, 32, 32, seed=3, dtype=torch.float32), rand(3, 2, 17, 17, seed=4, dtype=torch.float32) / 20
    torch.testing.assert_close(DF.fft_conv(x, K, padding="same"), DF.correlate(x, K, padding="same"), atol=1e-5, rtol=1e-5)
    xs, Ks = rand(1, 2, 6, 5, seed=5).requires_grad_(), rand(2, 2, 3, 3, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: DF.fft_conv(a, b, None, 1, "same"), (xs, Ks))


def test_rank_one_kernel_as_two_1d_passes():
    col, row = rand(4, 3, 1, 5, seed=7, dtype=torch.float32), rand(4, 3, 1, 5, seed=8, dtype=torch.float32)
    K = DF.separable_kernel(col, row)
    assert torch.linalg.matrix_rank(K[0, 0]) == 1
    x = rand(2, 3, 17, 15, seed=9, dtype=torch.float32)
    for stride, padding in [(1, "valid"), (2, "same"), (1, "full"), (3, 2)]:
        torch.testing.assert_close(DF.separable_conv2d(x, col, row, None, stride, padding),
                                   DF.correlate(x, K, None, stride, padding), atol=1e-5, rtol=1e-5)


def test_svd_low_rank_terms():
    K = rand(3, 2, 5, 4, seed=10)
    col, row = DF.low_rank_kernel(K)                        # full rank: exact
    torch.testing.assert_close(DF.separable_kernel(col, row), K)
    s = torch.linalg.svdvals(K)                            # Eckart-Young error of rank 2
    col2, row2 = DF.low_rank_kernel(K, 2)
    err = (DF.separable_kernel(col2, row2) - K).flatten(2).norm(dim=2)
    torch.testing.assert_close(err, s[..., 2:].norm(dim=-1))
    x = rand(1, 2, 12, 12, seed=11)
    torch.testing.assert_close(DF.separable_conv2d(x, col, row, None, 1, "same"), DF.correlate(x, K, None, 1, "same"))


def test_modules():
    x = rand(2, 3, 16, 16, seed=12, dtype=torch.float32)
    fft = dnn.FFTConv2d(3, 4, 7, padding="same")
    torch.testing.assert_close(fft(x), DF.correlate(x, fft.weight, fft.bias, 1, "same"), atol=1e-5, rtol=1e-5)
    conv = dnn.Conv2d(3, 4, 5, padding="same")
    sep = dnn.SeparableConv2d.from_kernel(conv.weight, conv.bias, rank=5, padding="same")
    torch.testing.assert_close(sep(x), conv(x), atol=1e-5, rtol=1e-5)
    one = dnn.SeparableConv2d(3, 4, 5, rank=1, stride=2)
    assert sum(p.numel() for p in [one.column, one.row]) == 2 * 4 * 3 * 5     # O(w d) parameters
    torch.testing.assert_close(one(x), DF.correlate(x, one.kernel(), one.bias, 2), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="rank"):
        dnn.SeparableConv2d(3, 4, 5, rank=6)
    with pytest.raises(ShapeError):
        DF.separable_conv2d(x, torch.randn(4, 2, 1, 3), torch.randn(4, 2, 1, 3))

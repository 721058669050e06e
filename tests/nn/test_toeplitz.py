"""Convolution as a Toeplitz / doubly block circulant matrix (Deep Learning sec. 9.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.errors import ShapeError
from descend.nn import functional as DF
from reference import conv as ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("size,k", [((9,), (3,)), ((6, 5), (3, 2)), ((4, 3, 4), (2, 2, 3))])
@pytest.mark.parametrize("padding", ["valid", "same", "full", 1])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("flip", [False, True])
def test_matrix_product_equals_convolution(size, k, padding, stride, flip):
    x, K = rand(3, 2, *size, seed=1), rand(2, 2, *k, seed=2)
    M = DF.conv_matrix(K, size, stride, padding, flip=flip)
    op = DF.convolve if flip else DF.correlate
    z = op(x, K, None, stride, padding)
    torch.testing.assert_close((x.reshape(3, -1) @ M.T).reshape(z.shape), z)
    # Its transpose is the transpose convolution h (sec. 9.5).
    y = rand(*z.shape, seed=3)
    if not flip:
        torch.testing.assert_close((y.reshape(3, -1) @ M).reshape(x.shape),
                                   DF.conv_transpose(y, K, None, stride, padding, output_size=size))


def test_1d_matrix_is_toeplitz_and_sparse():
    # "each row of the matrix is constrained to be equal to the row above shifted by one element"
    K = rand(1, 1, 3, seed=4)
    M = DF.conv_matrix(K, (8,), padding="valid").numpy()
    assert M.shape == (6, 8)
    for i in range(1, 6):
        np.testing.assert_array_equal(M[i, 1:], M[i - 1, :-1])
    assert (M != 0).sum() == 6 * 3       # k nonzeros per row: sparse interactions (sec. 9.2)


def test_2d_matrix_is_block_toeplitz_with_toeplitz_blocks():
    K = rand(1, 1, 2, 3, seed=5)
    H, W = 5, 6
    M = DF.conv_matrix(K, (H, W)).numpy()
    oh, ow = 4, 4
    blocks = M.reshape(oh, ow, H, W).transpose(0, 2, 1, 3)   # block (output row, input row)
    for i in range(1, oh):
        for r in range(1, H):
            np.testing.assert_array_equal(blocks[i, r], blocks[i - 1, r - 1])
    for i in range(oh):
        for r in range(H):
            b = blocks[i, r]
            for j in range(1, ow):
                np.testing.assert_array_equal(b[j, 1:], b[j - 1, :-1])


def test_circulant_matrix_is_doubly_block_circulant_and_periodic_convolution():
    K, x = rand(1, 1, 3, 2, seed=6), rand(5, 4, seed=7)
    C = DF.circulant_matrix(K, (5, 4))
    np.testing.assert_allclose((C @ x.reshape(-1)).reshape(5, 4).numpy(),
                               ref.circular_convolve2d(x.numpy(), K[0, 0].numpy()), atol=1e-12)
    blocks = C.numpy().reshape(5, 4, 5, 4).transpose(0, 2, 1, 3)
    for i in range(5):
        for r in range(5):
            np.testing.assert_array_equal(blocks[i, r], blocks[(i + 1) % 5, (r + 1) % 5])
            b = blocks[i, r]
            np.testing.assert_array_equal(np.roll(np.roll(b, 1, 0), 1, 1), b)
    # The DFT diagonalizes it: circular convolution is a product of spectra (sec. 9.8).
    spectrum = torch.fft.fft2(x) * torch.fft.fft2(K[0, 0], s=(5, 4))
    torch.testing.assert_close((C @ x.reshape(-1)).reshape(5, 4), torch.fft.ifft2(spectrum).real)


def test_matrix_errors():
    with pytest.raises(ShapeError, match="larger than the input"):
        DF.conv_matrix(torch.randn(1, 1, 5, 5), (3, 3))
    with pytest.raises(ShapeError, match="larger than the periodic input"):
        DF.circulant_matrix(torch.randn(1, 1, 5, 5), (3, 3))

"""The three operations c, g, h of Deep Learning sec. 9.5 (eqs. 9.8, 9.11, 9.12-9.13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.errors import ShapeError
from descend.nn import functional as DF
from reference import conv as ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("size", [(7, 7), (8, 9)])
def test_c_g_h_match_equations_and_autograd(s, size):
    V = rand(2, *size, seed=1).requires_grad_()
    K = rand(3, 2, 3, 2, seed=2).requires_grad_()
    Z = DF.c(K, V, s)
    np.testing.assert_allclose(Z.detach().numpy(),
                               ref.correlate(V.detach().numpy(), K.detach().numpy(), (s, s), ((0, 0), (0, 0))),
                               atol=1e-12)
    G = rand(*Z.shape, seed=3)
    (Z * G).sum().backward()               # J = <G, Z>, so dJ/dZ = G
    g = DF.g(G, V.detach(), s, kernel_size=(3, 2))
    h = DF.h(K.detach(), G, s, input_size=size)
    torch.testing.assert_close(g, K.grad)
    torch.testing.assert_close(h, V.grad)
    np.testing.assert_allclose(g.numpy(), ref.kernel_gradient(G.numpy(), V.detach().numpy(), s, (3, 2)), atol=1e-12)
    np.testing.assert_allclose(h.numpy(), ref.input_gradient(K.detach().numpy(), G.numpy(), s, size), atol=1e-12)


@pytest.mark.parametrize("kernel", [(3,), (2, 3, 2)])
def test_c_g_h_batched_1d_and_3d(kernel):
    dims = len(kernel)
    V = rand(2, 2, *([7] * dims), seed=4).requires_grad_()
    K = rand(3, 2, *kernel, seed=5).requires_grad_()
    Z = DF.c(K, V, 2)
    G = rand(*Z.shape, seed=6)
    (Z * G).sum().backward()
    torch.testing.assert_close(DF.g(G, V.detach(), 2, kernel_size=kernel), K.grad)
    torch.testing.assert_close(DF.h(K.detach(), G, 2, input_size=V.shape[2:]), V.grad)


def test_autoencoder_identities_of_eq_9_14():
    # R = h(K, H, s): decoder gradient g(H, E, s), encoder gradient c(K, E, s).
    K = rand(3, 2, 3, 3, seed=7).requires_grad_()
    H = rand(3, 4, 4, seed=8).requires_grad_()
    R = DF.h(K, H, 2, input_size=(9, 9))
    E = rand(*R.shape, seed=9)
    (R * E).sum().backward()
    torch.testing.assert_close(DF.g(H.detach(), E, 2, kernel_size=3), K.grad)
    torch.testing.assert_close(DF.c(K.detach(), E, 2), H.grad)


def test_g_and_h_are_differentiable():
    G = rand(2, 3, 3, seed=10).requires_grad_()
    V = rand(2, 7, 7, seed=11).requires_grad_()
    K = rand(2, 2, 3, 3, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(lambda G, V: DF.g(G, V, 2, 3), (G, V))
    assert torch.autograd.gradcheck(lambda K, G: DF.h(K, G, 2, (7, 7)), (K, G))


def test_size_ambiguity_and_errors():
    # "multiple sizes of input to forward propagation can result in the same size of output map"
    K = rand(1, 1, 3, 3)
    G = rand(1, 3, 3)
    assert DF.h(K, G, 2).shape == (1, 7, 7)
    assert DF.h(K, G, 2, input_size=(8, 8)).shape == (1, 8, 8)
    with pytest.raises(ShapeError):
        DF.h(K, G, 2, input_size=(9, 9))
    with pytest.raises(ShapeError):
        DF.g(G, rand(1, 7, 7), 2, kernel_size=5)

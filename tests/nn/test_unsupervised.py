"""Kernels without supervised training, Deep Learning sec. 9.9-9.10 (eqs. 9.16-9.18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF
from descend.nn import unsupervised as U
from reference import gabor as ref


@pytest.mark.parametrize("params", [
    dict(alpha=1.0, beta_x=0.1, beta_y=0.1, f=1.0, phi=0.0, x0=0.0, y0=0.0, tau=0.0),
    dict(alpha=2.0, beta_x=0.05, beta_y=0.2, f=0.7, phi=1.0, x0=1.0, y0=-0.5, tau=0.6),
    dict(alpha=0.5, beta_x=0.3, beta_y=0.02, f=2.0, phi=math.pi / 2, x0=-2.0, y0=1.5, tau=2.5),
])
@pytest.mark.parametrize("size", [7, 8])
def test_gabor_matches_eqs_9_16_to_9_18(params, size):
    np.testing.assert_allclose(U.gabor_kernel(size, **params).numpy(), ref.gabor(size, **params), atol=1e-6)


def test_gabor_bank_quadrature_pairs_and_normalization():
    bank = U.gabor_bank(9, orientations=4, frequencies=(1.0,), phases=(0.0, math.pi / 2))
    assert bank.shape == (8, 1, 9, 9)
    np.testing.assert_allclose(bank.flatten(1).norm(dim=1).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(bank.flatten(1).sum(dim=1).numpy(), 0, atol=1e-5)
    # even (cos) and odd (sin) members of a quadrature pair are orthogonal
    assert abs(float((bank[0] * bank[1]).sum())) < 1e-5


def test_edge_kernels_respond_to_brightness_rising_along_their_direction():
    k = U.edge_kernels(5, orientations=8).double()
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    phi = 0.7
    ramp = (math.cos(phi) * xx + math.sin(phi) * yy).double()[None, None]
    response = DF.correlate(ramp, k)[0, :, 4, 4]             # interior: same everywhere
    theta = torch.arange(8) * (2 * math.pi / 8)
    expected = torch.cos(theta - phi).double()
    torch.testing.assert_close(response / response.abs().max(), expected / expected.abs().max(), atol=1e-6, rtol=1e-5)
    flat = DF.correlate(torch.ones(1, 1, 8, 8, dtype=torch.float64), k)
    assert flat.abs().max() < 1e-12                          # no response to flat regions


def test_random_kernels_are_zero_mean_unit_norm_and_seeded():
    a = U.random_kernels(6, 2, 5, torch.Generator().manual_seed(3))
    b = U.random_kernels(6, 2, 5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    np.testing.assert_allclose(a.flatten(1).norm(dim=1).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(a.flatten(1).mean(dim=1).numpy(), 0, atol=1e-6)


def test_zca_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4000, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    mean, w = U.zca_whitening(data, eps=0.0)
    white = (data - mean) @ w
    np.testing.assert_allclose(torch.cov(white.T).numpy(), np.eye(5), atol=1e-8)
    torch.testing.assert_close(w, w.T)                       # ZCA: symmetric, stays in pixel space


def test_kmeans_recovers_separated_clusters_like_sklearn():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]], dtype=torch.float64)
    data = (centres[:, None] + 0.3 * torch.randn(4, 100, 2, generator=g, dtype=torch.float64)).reshape(-1, 2)
    ours, assign = U.kmeans(data, 4, iterations=30, generator=torch.Generator().manual_seed(2))
    theirs = KMeans(4, n_init=5, random_state=0).fit(data.numpy()).cluster_centers_
    order = lambda c: np.array(sorted(map(tuple, np.round(c, 6))))
    np.testing.assert_allclose(order(ours.numpy()), order(theirs), atol=1e-6)
    assert torch.bincount(assign).tolist() == [100, 100, 100, 100]


def test_kmeans_kernels_fold_whitening_into_a_convolution():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(50, 1, 12, 12, generator=g, dtype=torch.float64)
    kernels, bias = U.kmeans_kernels(images, 5, 4, patches=500, iterations=5, generator=torch.Generator().manual_seed(5))
    assert kernels.shape == (5, 1, 4, 4) and bias.shape == (5,)
    # A kernel's response equals the filter applied to the brightness-normalized patch (plus bias).
    conv = DF.correlate(images[:1], kernels, bias)
    patch = images[0, 0, 3:7, 5:9].reshape(-1)
    filt = kernels.reshape(5, -1)
    direct = filt @ (patch - patch.mean()) + bias
    torch.testing.assert_close(conv[0, :, 3, 5], direct)
    np.testing.assert_allclose(filt.sum(dim=1).numpy(), 0, atol=1e-10)


def test_conv_features_shapes_and_errors():
    feats = U.ConvFeatures(U.gabor_bank(5, 2, (1.0,), (0.0,)), grid=3)
    x = torch.rand(7, 1, 16, 16)
    assert feats.extract(x, batch_size=3).shape == (7, feats.num_features) == (7, 2 * 2 * 9)
    assert not list(feats.parameters())                       # nothing to train
    with pytest.raises(ConfigError):
        U.ConvFeatures(torch.randn(2, 1, 3, 3), rectify="square")
    with pytest.raises(ShapeError):
        U.extract_patches(torch.rand(2, 1, 4, 4), 5, 3)

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from descend.data.preprocessing import Preprocess, fit_preprocessing, with_preprocessing
from descend.errors import ConfigError, DataError, ShapeError
from reference import preprocessing as ref


def correlated(n=400, shape=(2, 3, 3), seed=0):
    """Inputs with very different scales and correlations (a random linear mix + offset)."""
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, d, dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + 3.0).reshape(n, *shape)


@pytest.mark.parametrize("method", ["pca", "zca"])
def test_whitening_gives_identity_covariance_on_its_fitting_data(method):
    x = correlated()
    pre = Preprocess(method, x.shape[1:], eps=0.0).double().fit(x)
    out = pre(x).reshape(len(x), -1).numpy()
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.eye(out.shape[1]), atol=1e-8)


def test_whitening_matrices_match_the_eigendecomposition_formula():
    x = correlated(seed=1)
    flat = x.reshape(len(x), -1).numpy()
    pca_ref, zca_ref = ref.whitening_matrices(flat, eps=0.1)
    zca = Preprocess("zca", x.shape[1:], eps=0.1).double().fit(x)
    np.testing.assert_allclose(zca.matrix.numpy(), zca_ref, rtol=1e-8, atol=1e-10)
    pca = Preprocess("pca", x.shape[1:], eps=0.1).double().fit(x)
    # Eigenvectors are defined up to sign: compare the sign-free W^T W.
    np.testing.assert_allclose(pca.matrix.numpy().T @ pca.matrix.numpy(), pca_ref.T @ pca_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.abs(pca.matrix.numpy()), np.abs(pca_ref), rtol=1e-6, atol=1e-9)
    # ZCA is symmetric and keeps the input's shape.
    np.testing.assert_allclose(zca.matrix.numpy(), zca.matrix.numpy().T, atol=1e-12)
    assert zca(x).shape == x.shape


def test_pca_with_fewer_components_is_flat_and_white():
    x = correlated(seed=2)
    pre = Preprocess("pca", x.shape[1:], eps=0.0, n_components=5).double().fit(x)
    out = pre(x)
    assert out.shape == (len(x), 5)
    np.testing.assert_allclose(np.cov(out.numpy(), rowvar=False), np.eye(5), atol=1e-8)


def test_standardize_and_center_use_training_statistics_only():
    train, test = correlated(seed=3), correlated(seed=4) * 2
    pre = fit_preprocessing("standardize", train, eps=0.05).double()
    pre.fit(train)
    expected = ref.standardize(train.reshape(len(train), -1).numpy(), test.reshape(len(test), -1).numpy(), 0.05)
    np.testing.assert_allclose(pre(test).reshape(len(test), -1).numpy(), expected, rtol=1e-10)
    exact = Preprocess("standardize", train.shape[1:], eps=0.0).double().fit(train)(train)
    np.testing.assert_allclose(exact.reshape(len(train), -1).var(0, unbiased=True).numpy(), 1.0, rtol=1e-10)
    centred = Preprocess("center", train.shape[1:]).double().fit(train)
    np.testing.assert_allclose(centred(test).numpy(), (test - train.mean(0)).numpy(), rtol=1e-12)


def test_per_channel_standardization():
    x = torch.rand(50, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64)[:, None, None]
    pre = Preprocess("standardize", (3, 4, 4), eps=0.0, per="channel").double().fit(x)
    out = pre(x)
    for c in range(3):
        channel = x[:, c].numpy().ravel()
        np.testing.assert_allclose(out[:, c].numpy().ravel(), (channel - channel.mean()) / channel.std(ddof=1),
                                   rtol=1e-10)


def test_constant_features_are_left_at_zero_not_blown_up():
    x = torch.rand(30, 1, 3, 3)
    x[:, 0, 0, 0] = 0.0  # like MNIST's border pixels
    out = Preprocess("standardize", (1, 3, 3), eps=0.0).fit(x)(x)
    assert torch.isfinite(out).all() and torch.all(out[:, 0, 0, 0] == 0)
    with pytest.raises(DataError, match="eps > 0"):
        Preprocess("zca", (1, 3, 3), eps=0.0).fit(x)
    assert torch.isfinite(Preprocess("zca", (1, 3, 3), eps=0.01).fit(x)(x)).all()


def test_statistics_travel_in_the_state_dict():
    x = correlated(seed=5).float()
    model = with_preprocessing(nn.Sequential(nn.Flatten(), nn.Linear(18, 3)), fit_preprocessing("zca", x))
    fresh = with_preprocessing(nn.Sequential(nn.Flatten(), nn.Linear(18, 3)), Preprocess("zca", (2, 3, 3)))
    with pytest.raises(DataError, match="before fit"):
        fresh(x)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), model(x))


def test_preprocessing_bad_input():
    with pytest.raises(ConfigError, match="unknown preprocessing 'whiten'"):
        Preprocess("whiten", (1, 2, 2))
    with pytest.raises(ConfigError, match="n_components"):
        Preprocess("zca", (1, 2, 2), n_components=2)
    with pytest.raises(ConfigError, match="eps"):
        Preprocess("pca", (1, 2, 2), eps=-1)
    pre = Preprocess("center", (1, 2, 2))
    with pytest.raises(ShapeError, match=r"\(1, 2, 2\)"):
        pre.fit(torch.rand(5, 1, 3, 3))
    with pytest.raises(DataError, match="at least 2"):
        pre.fit(torch.rand(1, 1, 2, 2))

"""Batch normalization, Deep Learning sec. 8.7.1, eqs. 8.35-8.37."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError
from descend.nn import functional as DF
from reference import batchnorm as ref


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5), (2, 4, 3, 5)])
def test_forward_and_backward_match_numpy_transcription(shape):
    x = (3.0 + 2.0 * rand(*shape, seed=1)).requires_grad_()
    gamma = rand(4, seed=2).requires_grad_()
    beta = rand(4, seed=3).requires_grad_()
    delta = 1e-5
    y = DF.batch_norm(x, gamma, beta, training=True, delta=delta)
    dy = rand(*shape, seed=4)
    y.backward(dy)
    H = ref.to_design_matrix(x.detach().numpy())
    expected, _, _ = ref.forward(H, gamma.detach().numpy(), beta.detach().numpy(), delta)
    np.testing.assert_allclose(y.detach().numpy(), ref.from_design_matrix(expected, shape), atol=1e-10)
    dH, dgamma, dbeta = ref.backward(ref.to_design_matrix(dy.numpy()), H, gamma.detach().numpy(), delta)
    np.testing.assert_allclose(x.grad.numpy(), ref.from_design_matrix(dH, shape), atol=1e-10)
    np.testing.assert_allclose(gamma.grad.numpy(), dgamma, atol=1e-10)
    np.testing.assert_allclose(beta.grad.numpy(), dbeta, atol=1e-10)


def test_gradient_has_no_component_that_only_shifts_or_scales_a_unit():
    # sec. 8.7.1: "the gradient will never propose an operation that acts simply to increase
    # the standard deviation or mean of h_i".
    x = rand(8, 3, seed=5).requires_grad_()
    DF.batch_norm(x, None, None, training=True, delta=0.0)[:, 0].pow(3).sum().backward()
    g = x.grad.numpy()
    np.testing.assert_allclose(g.sum(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose((g * x.detach().numpy()).sum(axis=0), 0, atol=1e-8)


def test_statistics_are_shared_over_spatial_positions():
    x = rand(4, 3, 5, 6, seed=6)
    y = DF.batch_norm(x, None, None, training=True, delta=0.0)
    np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-12)


def test_running_averages_and_eval_mode_compared_with_torch():
    ours = dnn.BatchNorm2d(3, momentum=0.2).double()
    theirs = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.2).double()
    for seed in range(3):
        x = 1.0 + 2.0 * rand(5, 3, 4, 4, seed=10 + seed)
        torch.testing.assert_close(ours(x), theirs(x))     # same normalization in training
        m = x.numel() // 3
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    # torch averages the unbiased variance, the text's sigma^2 divides by m; with a constant
    # m the two running averages differ exactly by m / (m - 1).
    torch.testing.assert_close(ours.running_var - (1 - 0.2) ** 3,
                               (theirs.running_var - (1 - 0.2) ** 3) * (m - 1) / m)
    ours.eval()
    x = rand(2, 3, 4, 4, seed=20)
    expected = (x - ours.running_mean[None, :, None, None]) / torch.sqrt(1e-5 + ours.running_var)[None, :, None, None]
    torch.testing.assert_close(ours(x), expected)           # gamma = 1, beta = 0 initially
    single = ours(x[:1])                                     # one example works at test time
    torch.testing.assert_close(single, expected[:1])


def test_batchnorm1d_on_design_matrix_and_gradcheck():
    bn = dnn.BatchNorm1d(4).double()
    x = rand(7, 4, seed=30).requires_grad_()
    assert torch.autograd.gradcheck(bn, (x,))
    torch.testing.assert_close(bn(x), torch.nn.functional.batch_norm(x, None, None, bn.gamma, bn.beta, True))


def test_errors():
    with pytest.raises(ShapeError, match="features"):
        dnn.BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ShapeError, match="axes"):
        dnn.BatchNorm2d(3)(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="more than one value"):
        dnn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ConfigError, match="momentum"):
        dnn.BatchNorm1d(3, momentum=2.0)

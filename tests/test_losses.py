from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend import losses
from descend.errors import ConfigError, ShapeError
from reference import losses as ref


@given(n=st.integers(1, 6), k=st.integers(2, 7), seed=st.integers(0, 10_000), scale=st.sampled_from([0.5, 3.0, 8.0]))
@settings(max_examples=40, deadline=None)
def test_costs_and_their_gradients_match_the_text(n, k, seed, scale):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).requires_grad_()
    y = torch.randint(0, k, (n,), generator=g)
    expected = ref.costs(z.detach().numpy(), y.numpy())
    expected_grads = ref.gradients(z.detach().numpy(), y.numpy())
    for fn, cost, grad in zip((losses.softmax_log_likelihood, losses.sigmoid_cross_entropy, losses.quadratic),
                              expected, expected_grads):
        value = fn(z, y)
        (dz,) = torch.autograd.grad(value, z)
        np.testing.assert_allclose(value.item(), cost, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(dz.numpy(), grad, rtol=1e-8, atol=1e-15)


def test_quadratic_gradient_vanishes_on_a_saturated_wrong_unit_but_cross_entropy_does_not():
    # NNDL ch. 3's neuron: output far from its target 0 (z = 8, a ~ 1).
    z = torch.tensor([[8.0, -8.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1])
    (g_quad,) = torch.autograd.grad(losses.quadratic(z, y), z)
    (g_ce,) = torch.autograd.grad(losses.sigmoid_cross_entropy(z, y), z)
    assert abs(g_quad[0, 0]) < 1e-3 and abs(g_ce[0, 0]) > 0.99


def test_softmax_quadratic_and_gradcheck():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1])
    assert torch.autograd.gradcheck(lambda z: losses.quadratic(z, y, output="softmax"), (z,))
    a = z.detach().softmax(1).numpy()
    t = np.eye(4)[y.numpy()]
    np.testing.assert_allclose(losses.quadratic(z, y, output="softmax").item(), 0.5 * ((a - t) ** 2).sum() / 3)


def test_losses_bad_input():
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        losses.get_loss("hinge")
    with pytest.raises(ShapeError, match="labels"):
        losses.sigmoid_cross_entropy(torch.randn(3, 4), torch.rand(3))
    with pytest.raises(ShapeError, match="logits"):
        losses.quadratic(torch.randn(3, 4, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="output unit"):
        losses.quadratic(torch.randn(3, 4), torch.tensor([0, 1, 2]), output="tanh")
    assert losses.get_loss("quadratic") is losses.quadratic

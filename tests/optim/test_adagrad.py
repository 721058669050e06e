"""AdaGrad, Algorithm 8.4."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError
from descend.optim import AdaGrad
from optim_harness import (
    assert_moves,
    assert_same_trajectory,
    check_foreach_matches_single,
    check_matches_torch,
    check_state_dict_roundtrip,
    oracle_network,
    oracle_rosenbrock,
    run_network,
    run_rosenbrock,
)
from reference import first_order as ref


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_algorithm_8_4_on_rosenbrock(foreach):
    actual = run_rosenbrock(lambda p: AdaGrad(p, lr=0.05, eps=1e-7, foreach=foreach))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.adagrad, lr=0.05, delta=1e-7))


def test_matches_algorithm_8_4_on_network():
    actual = run_network(lambda p: AdaGrad(p, lr=0.1, eps=1e-3))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.adagrad, lr=0.1, delta=1e-3))


def test_weight_decay_coupled_and_decoupled():
    coupled = run_network(lambda p: AdaGrad(p, lr=0.1, weight_decay=0.2))
    assert_same_trajectory(coupled, oracle_network(ref.adagrad, lr=0.1, delta=1e-7, l2=0.2))
    decoupled = run_network(lambda p: AdaGrad(p, lr=0.1, weight_decay=0.2, decoupled_weight_decay=True))
    assert_same_trajectory(decoupled, oracle_network(ref.adagrad, lr=0.1, delta=1e-7, decay=0.2))


def test_equals_torch_adagrad():
    """torch places eps as the book does (delta + sqrt(r))."""
    check_matches_torch(lambda p: AdaGrad(p, lr=0.1, eps=1e-7), lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-7))


def test_effective_rate_decays_as_one_over_sqrt_t():
    """Sec. 8.5.1: rates scale inversely with the root of the summed squared gradients, so
    with a constant gradient g the rate after t steps is eps / (delta + |g| sqrt(t)), and
    parameters with larger derivatives have their rate cut faster."""
    eps, delta = 0.1, 1e-7
    g = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = AdaGrad([theta], lr=eps, eps=delta)
    rates = []
    for t in range(1, 101):
        theta.grad = g.clone()
        opt.step()
        rate = opt.effective_learning_rates()[theta]
        np.testing.assert_allclose(rate.numpy(), eps / (delta + g.abs().numpy() * np.sqrt(t)), rtol=1e-12)
        rates.append(rate)
    assert torch.all(rates[-1] < rates[0])
    np.testing.assert_allclose((rates[0] / rates[-1]).numpy(), np.sqrt(100), rtol=1e-4)
    # Larger derivatives, smaller rates; the step taken (rate * |g|) is nearly the same for all:
    # "greater progress in the more gently sloped directions" relative to their slope.
    assert rates[-1][0] > rates[-1][1] > rates[-1][2]
    np.testing.assert_allclose(theta.detach().numpy(), theta.detach().numpy()[1], rtol=1e-4)


def test_foreach_matches_single_tensor():
    check_foreach_matches_single(AdaGrad, lr=0.05, weight_decay=1e-3)


def test_state_dict_round_trip():
    check_state_dict_roundtrip(AdaGrad, lr=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr": -0.1}, "lr must be >= 0"), ({"eps": 0.0}, "eps must be > 0"), ({"eps": -1e-8}, "eps must be > 0")],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AdaGrad([torch.nn.Parameter(torch.zeros(2))], **kwargs)

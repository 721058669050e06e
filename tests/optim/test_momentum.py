"""Momentum, Algorithm 8.2, and its behaviour on the ill-conditioned quadratic of fig. 8.5."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError
from descend.optim import SGD, Momentum
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
def test_matches_algorithm_8_2_on_rosenbrock(foreach):
    actual = run_rosenbrock(lambda p: Momentum(p, lr=0.005, momentum=0.9, foreach=foreach))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.momentum, lr=0.005, alpha=0.9))


def test_matches_algorithm_8_2_on_network():
    actual = run_network(lambda p: Momentum(p, lr=0.1, momentum=0.8))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.momentum, lr=0.1, alpha=0.8))


def test_weight_decay_coupled_and_decoupled():
    coupled = run_network(lambda p: Momentum(p, lr=0.1, momentum=0.8, weight_decay=0.3))
    assert_same_trajectory(coupled, oracle_network(ref.momentum, lr=0.1, alpha=0.8, l2=0.3))
    decoupled = run_network(lambda p: Momentum(p, lr=0.1, momentum=0.8, weight_decay=0.3, decoupled_weight_decay=True))
    assert_same_trajectory(decoupled, oracle_network(ref.momentum, lr=0.1, alpha=0.8, decay=0.3))


def test_equals_torch_sgd_momentum_at_constant_lr():
    check_matches_torch(lambda p: Momentum(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))


def test_momentum_zero_is_sgd():
    assert_same_trajectory(run_network(lambda p: Momentum(p, lr=0.2, momentum=0.0)), run_network(lambda p: SGD(p, lr=0.2)),
                           rtol=1e-12, atol=1e-14)


def test_foreach_matches_single_tensor():
    check_foreach_matches_single(Momentum, lr=0.05, momentum=0.9, weight_decay=1e-3)


def test_state_dict_round_trip():
    check_state_dict_roundtrip(Momentum, lr=0.05, momentum=0.9)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr": -1.0}, "lr must be >= 0"), ({"momentum": 1.5}, r"momentum must be in \[0, 1\]"),
     ({"momentum": -0.1}, r"\[0, 1\]")],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Momentum([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def _steps_to_reach(make_optimizer, threshold=1e-3, max_steps=5000):
    """Fig. 8.5: J(theta) = 0.5 theta^T H theta with H = diag(1, 100), condition number 100."""
    h = torch.tensor([1.0, 100.0], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.tensor([-10.0, 1.0], dtype=torch.float64))
    opt = make_optimizer([theta])
    for k in range(1, max_steps + 1):
        opt.zero_grad()
        loss = 0.5 * (h * theta**2).sum()
        loss.backward()
        opt.step()
        if 0.5 * float((h * theta.detach() ** 2).sum()) < threshold:
            return k
    return max_steps


def test_momentum_crosses_the_ill_conditioned_canyon_much_faster_than_sgd():
    # Both at the largest stable-ish rate for the steep direction (lr < 2 / 100).
    sgd_steps = _steps_to_reach(lambda p: SGD(p, lr=0.019))
    momentum_steps = _steps_to_reach(lambda p: Momentum(p, lr=0.019, momentum=0.8))
    assert sgd_steps > 3 * momentum_steps, (sgd_steps, momentum_steps)


def test_terminal_velocity_eq_8_17():
    """With a constant gradient g the step size tends to eps ||g|| / (1 - alpha)."""
    theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = Momentum([theta], lr=0.1, momentum=0.9)
    previous = theta.detach().clone()
    for _ in range(300):
        theta.grad = g.clone()
        opt.step()
        step, previous = theta.detach() - previous, theta.detach().clone()
    np.testing.assert_allclose(float(step.norm()), 0.1 * float(g.norm()) / (1 - 0.9), rtol=1e-9)

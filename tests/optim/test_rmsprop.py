"""RMSProp, Algorithm 8.5, and RMSProp with Nesterov momentum, Algorithm 8.6."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import RMSProp, RMSPropNesterov
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


@pytest.mark.parametrize("placement", ["book", "torch"])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_algorithm_8_5_on_rosenbrock(placement, foreach):
    actual = run_rosenbrock(lambda p: RMSProp(p, lr=0.01, rho=0.9, eps=1e-6, eps_placement=placement, foreach=foreach))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.rmsprop, lr=0.01, rho=0.9, delta=1e-6, placement=placement))


def test_matches_algorithm_8_5_on_network():
    # delta large enough that its placement changes the trajectory visibly
    book = run_network(lambda p: RMSProp(p, lr=0.01, rho=0.8, eps=1e-2))
    assert_moves(book)
    assert_same_trajectory(book, oracle_network(ref.rmsprop, lr=0.01, rho=0.8, delta=1e-2))
    other = oracle_network(ref.rmsprop, lr=0.01, rho=0.8, delta=1e-2, placement="torch")
    assert max(np.abs(a - b).max() for a, b in zip(book[-1], other[-1])) > 1e-4


def test_weight_decay_coupled_and_decoupled():
    coupled = run_network(lambda p: RMSProp(p, lr=0.01, weight_decay=0.2))
    assert_same_trajectory(coupled, oracle_network(ref.rmsprop, lr=0.01, rho=0.9, delta=1e-6, l2=0.2))
    decoupled = run_network(lambda p: RMSProp(p, lr=0.01, weight_decay=0.2, decoupled_weight_decay=True))
    assert_same_trajectory(decoupled, oracle_network(ref.rmsprop, lr=0.01, rho=0.9, delta=1e-6, decay=0.2))


def test_torch_placement_equals_torch_rmsprop():
    check_matches_torch(
        lambda p: RMSProp(p, lr=0.01, rho=0.95, eps=1e-8, eps_placement="torch", weight_decay=0.01),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-8, weight_decay=0.01),
    )


@pytest.mark.parametrize("delta, placement", [(0.0, "book"), (1e-6, "book"), (1e-6, "torch")])
@pytest.mark.parametrize("foreach", [False, True])
def test_nesterov_matches_algorithm_8_6_on_rosenbrock(delta, placement, foreach):
    actual = run_rosenbrock(
        lambda p: RMSPropNesterov(p, lr=0.002, rho=0.9, momentum=0.8, eps=delta, eps_placement=placement, foreach=foreach)
    )
    assert_moves(actual)
    expected = oracle_rosenbrock(ref.rmsprop_nesterov, lr=0.002, rho=0.9, alpha=0.8, delta=delta, placement=placement)
    assert_same_trajectory(actual, expected)


def test_nesterov_matches_algorithm_8_6_on_network():
    actual = run_network(lambda p: RMSPropNesterov(p, lr=0.005, rho=0.9, momentum=0.7, eps=0.0))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.rmsprop_nesterov, lr=0.005, rho=0.9, alpha=0.7))


def test_nesterov_without_delta_reads_zero_over_zero_as_zero():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = RMSPropNesterov([p], lr=0.1, eps=0.0)

    def closure():
        opt.zero_grad()
        loss = (p[0] - 3) ** 2  # no gradient on p[1]: r = 0 there
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert torch.isfinite(p).all()
    assert float(p.detach()[1]) == 2.0


def test_nesterov_requires_a_closure():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    assert RMSPropNesterov.needs_closure
    with pytest.raises(OptimizationError, match="closure"):
        RMSPropNesterov([p]).step()


@pytest.mark.parametrize("cls", [RMSProp, RMSPropNesterov])
@pytest.mark.parametrize("placement", ["book", "torch"])
def test_foreach_matches_single_tensor(cls, placement):
    check_foreach_matches_single(cls, lr=0.01, eps_placement=placement, weight_decay=1e-3)


def test_nesterov_foreach_matches_single_tensor_decoupled_and_without_delta():
    check_foreach_matches_single(RMSPropNesterov, lr=0.01, eps=0.0, weight_decay=1e-2, decoupled_weight_decay=True)


@pytest.mark.parametrize("cls", [RMSProp, RMSPropNesterov])
def test_state_dict_round_trip(cls):
    check_state_dict_roundtrip(cls, lr=0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, "lr must be >= 0"),
        ({"rho": 1.0}, r"rho must be in \[0, 1\)"),
        ({"rho": -0.5}, r"rho must be in \[0, 1\)"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"eps_placement": "inside"}, "eps_placement"),
    ],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RMSProp([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_nesterov_invalid_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="eps must be >= 0"):
        RMSPropNesterov(p, eps=-1e-6)
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\]"):
        RMSPropNesterov(p, momentum=1.2)

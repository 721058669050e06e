"""SGD, Algorithm 8.1."""

import pytest
import torch

from descend.errors import ConfigError
from descend.optim import SGD
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
def test_matches_algorithm_8_1_on_rosenbrock(foreach):
    actual = run_rosenbrock(lambda p: SGD(p, lr=0.01, foreach=foreach))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.sgd, lr=0.01))


def test_matches_algorithm_8_1_on_network():
    actual = run_network(lambda p: SGD(p, lr=0.3))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.sgd, lr=0.3))


def test_coupled_weight_decay_is_the_l2_penalty_gradient():
    actual = run_rosenbrock(lambda p: SGD(p, lr=0.01, weight_decay=0.5))
    assert_same_trajectory(actual, oracle_rosenbrock(ref.sgd, lr=0.01, l2=0.5))


def test_decoupled_weight_decay():
    actual = run_network(lambda p: SGD(p, lr=0.3, weight_decay=0.2, decoupled_weight_decay=True))
    assert_same_trajectory(actual, oracle_network(ref.sgd, lr=0.3, decay=0.2))


def test_equals_torch_sgd():
    check_matches_torch(lambda p: SGD(p, lr=0.3, weight_decay=0.01), lambda p: torch.optim.SGD(p, lr=0.3, weight_decay=0.01))


def test_foreach_matches_single_tensor():
    check_foreach_matches_single(SGD, lr=0.05, weight_decay=1e-3)


def test_state_dict_round_trip():
    check_state_dict_roundtrip(SGD, lr=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, "lr must be >= 0"),
        ({"lr": float("nan")}, "learning rate"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"foreach": "yes"}, "foreach must be"),
    ],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_skips_parameters_without_gradient():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = SGD([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3))
    assert torch.allclose(a, torch.full((3,), 0.9))

"""Adam, Algorithm 8.7, and AMSGrad."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError
from descend.optim import AMSGrad, Adam
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


@pytest.mark.parametrize("cls, amsgrad", [(Adam, False), (AMSGrad, True)])
@pytest.mark.parametrize("placement", ["book", "torch"])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_algorithm_8_7_on_rosenbrock(cls, amsgrad, placement, foreach):
    actual = run_rosenbrock(lambda p: cls(p, lr=0.02, betas=(0.9, 0.99), eps=1e-8, eps_placement=placement, foreach=foreach))
    assert_moves(actual)
    expected = oracle_rosenbrock(ref.adam, lr=0.02, rho1=0.9, rho2=0.99, delta=1e-8, placement=placement, amsgrad=amsgrad)
    assert_same_trajectory(actual, expected)


@pytest.mark.parametrize("cls, amsgrad", [(Adam, False), (AMSGrad, True)])
def test_matches_algorithm_8_7_on_network(cls, amsgrad):
    actual = run_network(lambda p: cls(p, lr=0.01, betas=(0.8, 0.9), eps=1e-4))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.adam, lr=0.01, rho1=0.8, rho2=0.9, delta=1e-4, amsgrad=amsgrad))


def test_amsgrad_differs_from_adam_when_the_second_moment_shrinks():
    adam = oracle_network(ref.adam, steps=40, lr=0.05, rho1=0.9, rho2=0.9, delta=1e-8)
    ams = run_network(lambda p: AMSGrad(p, lr=0.05, betas=(0.9, 0.9)), steps=40)
    assert max(np.abs(a - b).max() for a, b in zip(adam[-1], ams[-1])) > 1e-5


def test_weight_decay_coupled_and_decoupled():
    coupled = run_network(lambda p: Adam(p, lr=0.01, weight_decay=0.2))
    assert_same_trajectory(coupled, oracle_network(ref.adam, lr=0.01, rho1=0.9, rho2=0.999, delta=1e-8, l2=0.2))
    decoupled = run_network(lambda p: Adam(p, lr=0.01, weight_decay=0.2, decoupled_weight_decay=True))
    assert_same_trajectory(decoupled, oracle_network(ref.adam, lr=0.01, rho1=0.9, rho2=0.999, delta=1e-8, decay=0.2))


@pytest.mark.parametrize("foreach", [False, True])
def test_torch_placement_equals_torch_adam(foreach):
    check_matches_torch(
        lambda p: Adam(p, lr=0.01, eps_placement="torch", weight_decay=0.01, foreach=foreach),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01, foreach=foreach),
    )


def test_torch_placement_equals_torch_adamw_and_amsgrad():
    check_matches_torch(
        lambda p: Adam(p, lr=0.01, eps_placement="torch", weight_decay=0.1, decoupled_weight_decay=True),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    )
    check_matches_torch(
        lambda p: AMSGrad(p, lr=0.01, betas=(0.9, 0.9), eps_placement="torch"),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.9), amsgrad=True),
    )


def test_book_delta_takes_smaller_steps_on_tiny_gradients():
    """delta under the root acts like a gradient of size sqrt(delta): with |g| << sqrt(delta)
    the book's first step is about eps |g| / sqrt(delta), torch's about eps."""
    steps = {}
    for placement in ("book", "torch"):
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        p.grad = torch.full((1,), 1e-6, dtype=torch.float64)
        Adam([p], lr=0.1, eps=1e-8, eps_placement=placement).step()
        steps[placement] = abs(float(p.detach()))
    np.testing.assert_allclose(steps["book"], 0.1 * 1e-6 / np.sqrt(1e-12 + 1e-8), rtol=1e-9)
    np.testing.assert_allclose(steps["torch"], 0.1 * 1e-6 / (1e-6 + 1e-8), rtol=1e-9)


@pytest.mark.parametrize("cls", [Adam, AMSGrad])
@pytest.mark.parametrize("placement", ["book", "torch"])
def test_foreach_matches_single_tensor(cls, placement):
    check_foreach_matches_single(cls, lr=0.01, eps_placement=placement, weight_decay=1e-3)


@pytest.mark.parametrize("cls", [Adam, AMSGrad])
def test_state_dict_round_trip(cls):
    check_state_dict_roundtrip(cls, lr=0.01)


@pytest.mark.parametrize("cls", [Adam, AMSGrad])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.001}, "lr must be >= 0"),
        ({"betas": (1.0, 0.999)}, r"betas must be in \[0, 1\)"),
        ({"betas": (0.9, -0.1)}, r"betas must be in \[0, 1\)"),
        ({"betas": 0.9}, "pair"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"eps_placement": "outside"}, "eps_placement"),
    ],
)
def test_invalid_hyperparameters(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)

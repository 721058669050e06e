"""Nesterov momentum, Algorithm 8.3 (book form with a closure) and its reformulation."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import NesterovMomentum, NesterovMomentumReformulated
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
def test_book_form_matches_algorithm_8_3_on_rosenbrock(foreach):
    actual = run_rosenbrock(lambda p: NesterovMomentum(p, lr=0.005, momentum=0.9, foreach=foreach))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.nesterov, lr=0.005, alpha=0.9))


def test_book_form_matches_algorithm_8_3_on_network():
    actual = run_network(lambda p: NesterovMomentum(p, lr=0.1, momentum=0.8))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_network(ref.nesterov, lr=0.1, alpha=0.8))


def test_book_form_weight_decay():
    coupled = run_network(lambda p: NesterovMomentum(p, lr=0.1, momentum=0.8, weight_decay=0.3))
    # Coupled L2 is part of the cost, so its gradient is taken at the interim point too.
    assert_same_trajectory(coupled, oracle_network(ref.nesterov, lr=0.1, alpha=0.8, l2=0.3))
    decoupled = run_network(
        lambda p: NesterovMomentum(p, lr=0.1, momentum=0.8, weight_decay=0.3, decoupled_weight_decay=True)
    )
    assert_same_trajectory(decoupled, oracle_network(ref.nesterov, lr=0.1, alpha=0.8, decay=0.3))


def test_reformulated_matches_its_transcription():
    actual = run_rosenbrock(lambda p: NesterovMomentumReformulated(p, lr=0.005, momentum=0.9))
    assert_moves(actual)
    assert_same_trajectory(actual, oracle_rosenbrock(ref.nesterov_reformulated, lr=0.005, alpha=0.9))
    net = run_network(lambda p: NesterovMomentumReformulated(p, lr=0.1, momentum=0.8, weight_decay=0.1))
    assert_same_trajectory(net, oracle_network(ref.nesterov_reformulated, lr=0.1, alpha=0.8, l2=0.1))


def test_reformulated_equals_torch_sgd_nesterov():
    check_matches_torch(
        lambda p: NesterovMomentumReformulated(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    )


def test_book_and_reformulated_iterates_differ_by_alpha_v():
    """phi_k = theta_k + alpha v_k, where phi are the reformulation's iterates."""
    alpha = 0.9
    book_params = [torch.nn.Parameter(torch.tensor([1.5, -0.5], dtype=torch.float64))]
    phi_params = [torch.nn.Parameter(book_params[0].detach().clone())]
    book = NesterovMomentum(book_params, lr=0.01, momentum=alpha)
    phi = NesterovMomentumReformulated(phi_params, lr=0.01, momentum=alpha)

    def f(p):
        x, y = p[0], p[1]
        return (1 - x) ** 2 + 5 * (y - x**2) ** 2

    def closure_for(opt, params):
        def closure():
            opt.zero_grad()
            loss = f(params[0])
            loss.backward()
            return loss
        return closure

    for _ in range(30):
        book.step(closure_for(book, book_params))
        phi.step(closure_for(phi, phi_params))
        v = book.state[book_params[0]]["velocity"]
        np.testing.assert_allclose(phi_params[0].detach().numpy(), (book_params[0] + alpha * v).detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
    assert float((book_params[0].detach() - torch.tensor([1.5, -0.5], dtype=torch.float64)).abs().max()) > 0.05


def test_book_form_requires_a_closure():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    assert NesterovMomentum.needs_closure
    with pytest.raises(OptimizationError, match="closure"):
        NesterovMomentum([p], lr=0.1).step()


def test_book_form_restores_parameters_when_the_closure_fails():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = NesterovMomentum([p], lr=0.1, momentum=0.9)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    opt.step(closure)
    before = p.detach().clone()

    def failing():
        raise RuntimeError("data loader died")

    with pytest.raises(RuntimeError, match="data loader"):
        opt.step(failing)
    np.testing.assert_allclose(p.detach().numpy(), before.numpy(), rtol=0, atol=1e-15)


def test_book_form_leaves_parameters_without_gradient_at_theta():
    used = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    unused = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = NesterovMomentum([used, unused], lr=0.1, momentum=0.9)
    # give the unused parameter a velocity from an earlier step
    unused.grad = torch.tensor([1.0], dtype=torch.float64)
    used.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step(lambda: None)  # gradients already set; closure does nothing
    theta_unused = unused.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (used**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert unused.grad is None
    np.testing.assert_allclose(unused.detach().numpy(), theta_unused.numpy(), atol=1e-15)


@pytest.mark.parametrize("cls", [NesterovMomentum, NesterovMomentumReformulated])
def test_foreach_matches_single_tensor(cls):
    check_foreach_matches_single(cls, lr=0.05, momentum=0.9, weight_decay=1e-3)
    check_foreach_matches_single(cls, lr=0.05, momentum=0.9, weight_decay=1e-2, decoupled_weight_decay=True)


@pytest.mark.parametrize("cls", [NesterovMomentum, NesterovMomentumReformulated])
def test_state_dict_round_trip(cls):
    check_state_dict_roundtrip(cls, lr=0.05, momentum=0.9)


@pytest.mark.parametrize("cls", [NesterovMomentum, NesterovMomentumReformulated])
def test_invalid_hyperparameters(cls):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="lr must be >= 0"):
        cls(p, lr=-0.1)
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\]"):
        cls(p, momentum=2.0)

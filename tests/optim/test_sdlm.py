"""Stochastic diagonal Levenberg-Marquardt (cs189): the update against a NumPy transcription,
exact H z vs finite differences, foreach vs single-tensor paths, resume, the Trainer."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import SDLM
from reference import minimize_problems as mp
from reference import second_order as ref

A = np.array([[4.0, 0.5, 0.01], [9.0, 0.2, 2.0]])  # a diagonal Hessian, two parameter tensors


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


def _diag_quadratic(create_graph):
    """J = sum a_i x_i^2 / 2 over two tensors: H = diag(a), so z * (H z) = a for every z."""
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64)) for _ in range(2)]
    a = [torch.tensor(row) for row in A]

    def closure():
        loss = sum(0.5 * (ai * p * p).sum() for ai, p in zip(a, ps))
        if create_graph:
            grads = torch.autograd.grad(loss, ps, create_graph=True)
            for p, gr in zip(ps, grads):
                p.grad = gr
        else:
            for p in ps:
                p.grad = None
            loss.backward()
        return loss

    return ps, closure


@pytest.mark.parametrize("create_graph", [True, False])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_the_update_equations(create_graph, foreach):
    ps, closure = _diag_quadratic(create_graph)
    theta = [p.detach().numpy().copy() for p in ps]
    h = [np.zeros(3), np.zeros(3)]
    lr, mu, beta = 0.3, 0.05, 0.9
    opt = SDLM(ps, lr=lr, mu=mu, beta=beta, foreach=foreach)
    for t in range(1, 6):
        opt.step(closure)
        for i in range(2):
            g = A[i] * theta[i]
            theta[i], h[i] = ref.sdlm_update(theta[i], g, h[i], A[i], lr, mu, beta, t)
    for p, th in zip(ps, theta):
        np.testing.assert_allclose(p.detach().numpy(), th, rtol=1e-7, atol=1e-10)


def test_foreach_and_single_tensor_paths_are_identical_on_a_network():
    def run(foreach):
        problem = mp.SmallMLP()
        opt = SDLM(problem.parameters(), lr=0.05, mu=0.1, foreach=foreach, update_every=2)
        closure = mp.closure_for(problem, create_graph=True)
        for _ in range(7):
            opt.step(closure)
        return mp.flat(problem)

    np.testing.assert_array_equal(run(False), run(True))


def test_a_given_diagonal_replaces_the_estimate():
    ps, closure = _diag_quadratic(False)
    theta = [p.detach().numpy().copy() for p in ps]
    given = [torch.full((3,), 2.0, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)]
    opt = SDLM(ps, lr=0.1, mu=0.1, beta=0.5)
    opt.step(closure, diagonal=given)
    for i, p in enumerate(ps):
        expected, _ = ref.sdlm_update(theta[i], A[i] * theta[i], np.zeros(3), given[i].numpy(), 0.1, 0.1, 0.5, 1)
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)


def test_resume_from_state_dict_draws_the_same_vectors():
    def run(split):
        problem = mp.SmallMLP()
        closure = mp.closure_for(problem, create_graph=True)
        opt = SDLM(problem.parameters(), lr=0.05, seed=3)
        for _ in range(3):
            opt.step(closure)
        if split:
            state = opt.state_dict()
            opt = SDLM(problem.parameters(), lr=0.05, seed=3)
            opt.load_state_dict(state)
        for _ in range(3):
            opt.step(closure)
        return mp.flat(problem)

    np.testing.assert_array_equal(run(False), run(True))


def test_trains_a_network_in_the_trainer_with_minibatches():
    from descend.data import Splits, TensorPair
    from descend.train import Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = SDLM(net.parameters(), lr=0.05, mu=0.05)
    trainer = Trainer(net, opt, Splits(TensorPair(x, y)), epochs=4, batch_size=32, quiet=True,
                      evaluate_test=False, checkpoint=False)
    history = trainer.fit()
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert trainer.evaluate(x, y)["accuracy"] > 0.9


def test_bad_input_raises():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ConfigError, match="mu"):
        SDLM([p], mu=0.0)
    with pytest.raises(ConfigError, match="beta"):
        SDLM([p], beta=1.0)
    with pytest.raises(ConfigError, match="learning rate"):
        SDLM([p], lr=-1)
    with pytest.raises(ConfigError, match="update_every"):
        SDLM([p], update_every=0)
    opt = SDLM([p])
    with pytest.raises(OptimizationError, match="returned NoneType"):
        opt.step(lambda: None)
    p.grad = torch.ones(2)
    with pytest.raises(OptimizationError, match="needs curvature"):
        opt.step()
    with pytest.raises(OptimizationError, match="diagonal has 2 tensors"):
        opt.step(diagonal=[torch.ones(2), torch.ones(2)])

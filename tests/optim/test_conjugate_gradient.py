"""Nonlinear conjugate gradients, Algorithm 8.9: iterates against a NumPy transcription with
the analytic line search, <= k line searches on a k-dimensional quadratic, restarts, the
minimizers of scipy.optimize.minimize(method="CG"), and bad input."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import NonlinearCG
from reference import minimize_problems as mp
from reference import second_order as ref


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


def _quadratic(k, seed, cond=100.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    A = Q @ np.diag(np.geomspace(1.0, cond, k)) @ Q.T
    return A, rng.normal(size=k), rng.normal(size=k)


def _cg_on_quadratic(A, b, x0, iterations, **kw):
    At, bt = torch.tensor(A), torch.tensor(b)
    x = torch.nn.Parameter(torch.tensor(x0))
    opt = NonlinearCG([x], line_search="exact", max_iter=1, tolerance_grad=0.0, tolerance_change=0.0,
                      restart_threshold=None, **kw)

    def closure():
        x.grad = None
        loss = 0.5 * x @ At @ x - bt @ x
        loss.backward()
        return loss

    iterates = [x.detach().numpy().copy()]
    for _ in range(iterations):
        opt.step(closure)
        iterates.append(x.detach().numpy().copy())
    return iterates


@pytest.mark.parametrize("beta", ["fletcher-reeves", "polak-ribiere"])
def test_iterates_match_algorithm_8_9_with_exact_line_search(beta):
    A, b, x0 = _quadratic(6, 0, cond=10.0)
    expected = ref.conjugate_gradient_exact(A, b, x0, 5, beta=beta)
    actual = _cg_on_quadratic(A, b, x0, 5, beta=beta)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("beta", ["fletcher-reeves", "polak-ribiere", "polak-ribiere+"])
@pytest.mark.parametrize("k", [2, 5, 12])
def test_converges_in_at_most_k_line_searches_on_a_quadratic(beta, k):
    A, b, x0 = _quadratic(k, k)
    x_star = np.linalg.solve(A, b)
    iterates = _cg_on_quadratic(A, b, x0, k, beta=beta)
    # exact in exact arithmetic; in float64 (condition number 100) to about 1e-7, as the NumPy
    # transcription of Algorithm 8.9 itself
    oracle = ref.conjugate_gradient_exact(A, b, x0, k, beta="fletcher-reeves" if beta == "fletcher-reeves" else "pr")
    assert np.abs(iterates[k] - x_star).max() <= max(1e-5, 10 * np.abs(oracle[k] - x_star).max())
    assert np.abs(iterates[k - 1] - x_star).max() > 1e3 * np.abs(iterates[k] - x_star).max()
    # and not by accident: steepest descent (restart every step) is far from done after k steps
    sd = _cg_on_quadratic(A, b, x0, k, beta=beta, restart_every=1)
    assert np.abs(sd[k] - x_star).max() > 1e-3


@pytest.mark.parametrize("name", ["rosenbrock", "logistic", "mlp"])
def test_same_minimizer_as_scipy_cg(name):
    problem = mp.PROBLEMS[name]()
    expected = mp.scipy_minimize(problem, "CG")
    opt = NonlinearCG(problem.parameters(), max_iter=20000, max_eval=50000, tolerance_grad=1e-9,
                      tolerance_change=0.0)
    opt.step(mp.closure_for(problem))
    assert opt.status in ("converged: gradient", "line search failed"), opt.status
    assert max(float(p.grad.abs().max()) for p in problem.parameters()) <= 1e-7
    assert np.abs(expected.jac).max() <= 1e-7
    assert float(problem.loss().detach()) == pytest.approx(expected.fun, rel=1e-6, abs=1e-10)
    # the MLP's minimum is flatter (|x - x*| ~ |g| / lambda_min with lambda_min ~ 1e-3)
    np.testing.assert_allclose(mp.flat(problem), expected.x, atol=1e-6 if name != "mlp" else 1e-4)


@pytest.mark.parametrize("name", ["rosenbrock", "logistic", "mlp"])
def test_strong_wolfe_holds_at_every_accepted_step(name):
    """Every step accepted before round-off dominates (max|g| > 1e-6) met both conditions."""
    problem = mp.PROBLEMS[name]()
    opt = NonlinearCG(problem.parameters(), max_iter=20000, max_eval=50000, tolerance_grad=1e-6, tolerance_change=0.0)
    opt.step(mp.closure_for(problem))
    assert opt.status == "converged: gradient"
    assert opt.state[next(problem.parameters())].get("wolfe_failures", 0) == 0


def test_restarts_every_k_and_on_lost_conjugacy():
    problem = mp.SmallMLP()
    opt = NonlinearCG(problem.parameters(), restart_every=3, max_iter=1, restart_threshold=None)
    closure = mp.closure_for(problem)
    restarts = []
    for _ in range(9):
        opt.step(closure)
        restarts.append(opt.state[next(problem.parameters())]["since_restart"] == 0)
    assert restarts[::3] == [True, True, True]
    # Powell's test fires when consecutive gradients are far from orthogonal: with nu tiny it always does
    opt = NonlinearCG(problem.parameters(), restart_threshold=1e-12, max_iter=1)
    for _ in range(3):
        opt.step(closure)
        assert opt.state[next(problem.parameters())]["since_restart"] == 0


def test_bad_input_raises():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ConfigError, match="beta"):
        NonlinearCG([p], beta="hestenes")
    with pytest.raises(ConfigError, match="restart_every"):
        NonlinearCG([p], restart_every=0)
    with pytest.raises(ConfigError, match="line_search"):
        NonlinearCG([p], line_search="armijo")
    with pytest.raises(ConfigError, match="max_iter"):
        NonlinearCG([p], max_iter=0)
    opt = NonlinearCG([p], line_search="exact")

    def concave():  # -|x|^2: no positive curvature, the exact step does not exist
        p.grad = None
        loss = -(p * p).sum()
        loss.backward()
        return loss

    with pytest.raises(OptimizationError, match="positive curvature"):
        opt.step(concave)

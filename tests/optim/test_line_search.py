"""Line searches: the strong Wolfe conditions hold at every accepted step (hypothesis, over
random quadratics and smooth non-quadratic functions); the exact step for quadratics
against its formula; the closure objective's validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.errors import ConfigError, OptimizationError
from descend.optim.line_search import ClosureObjective, exact_quadratic_step, model_closure, strong_wolfe
from reference import second_order as ref


def _phi_for(f, x0, d):
    """phi(a) for a torch function f of a flat vector, by autograd (independent of descend)."""

    def phi(a):
        x = (x0 + a * d).detach().requires_grad_(True)
        y = f(x)
        (g,) = torch.autograd.grad(y, x)
        return float(y.detach()), g, float(g @ d)

    return phi


def _search_and_check(f, x0, d, c1, c2, step):
    phi = _phi_for(f, x0, d)
    f0, g0, d0 = phi(0.0)
    assert d0 < 0
    res = strong_wolfe(phi, f0, d0, g0, step, c1=c1, c2=c2, max_evals=50)
    assert res.success
    fa, _, da = phi(res.step)  # re-evaluate independently at the accepted step
    assert ref.strong_wolfe_holds(f0, d0, fa, da, res.step, c1, c2)
    assert fa == pytest.approx(res.loss, rel=1e-12, abs=1e-12)


seeds = st.integers(0, 2**31 - 1)
constants = st.sampled_from([(1e-4, 0.9), (1e-4, 0.1), (1e-3, 0.4), (0.3, 0.5)])
steps = st.floats(1e-3, 1e3)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 8), cond=st.floats(0.0, 4.0), c=constants, step=steps)
def test_strong_wolfe_on_random_quadratics(seed, n, cond, c, step):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = torch.tensor(Q @ np.diag(10 ** rng.uniform(0, cond, size=n)) @ Q.T)
    b = torch.tensor(rng.normal(size=n))
    x0 = torch.tensor(rng.normal(size=n))
    g0 = A @ x0 - b
    d = -g0 + 0.5 * torch.tensor(rng.normal(size=n)) * g0.norm() / math.sqrt(n)  # some descent direction
    if float(g0 @ d) >= -1e-12 * float(g0 @ g0):
        d = -g0
    if float(g0.norm()) < 1e-8:
        return
    _search_and_check(lambda x: 0.5 * x @ A @ x - b @ x, x0, d, *c, step)


def _smooth(kind, rng, n):
    a = torch.tensor(rng.uniform(0.5, 2.0, size=n))
    if kind == "quartic":  # sum a_i x_i^4 + x_i^2 - x_i
        return lambda x: (a * x**4 + x**2 - x).sum()
    if kind == "logsumexp":  # log sum exp(a_i x_i) + |x|^2 / 2
        return lambda x: torch.logsumexp(a * x, 0) + 0.5 * x @ x
    if kind == "rosenbrock":
        return lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum() if n > 1 else (1 - x[0]) ** 2
    return lambda x: (torch.cosh(a * x) + 0.1 * torch.sin(3 * x)).sum()  # "cosh"


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 6), kind=st.sampled_from(["quartic", "logsumexp", "rosenbrock", "cosh"]),
       c=constants, step=steps)
def test_strong_wolfe_on_smooth_functions(seed, n, kind, c, step):
    rng = np.random.default_rng(seed)
    f = _smooth(kind, rng, n)
    x0 = torch.tensor(rng.uniform(-1.5, 1.5, size=n))
    x = x0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(f(x), x)
    if float(g0.norm()) < 1e-6:
        return
    _search_and_check(f, x0, -g0, *c, step)


def test_non_finite_trial_losses_are_stepped_back_from():
    # J = -log(1 - x) blows up at x = 1; the first trial (a = 10) lands beyond it
    f = lambda x: -torch.log1p(-x[0]) + 0.5 * x[0] ** 2  # noqa: E731
    x0 = torch.tensor([-2.0], dtype=torch.float64)

    def phi(a):
        x = (x0 + a * torch.tensor([1.0], dtype=torch.float64)).requires_grad_(True)
        y = f(x)
        if not torch.isfinite(y):
            return float("inf"), torch.full_like(x, float("nan")), float("nan")
        (g,) = torch.autograd.grad(y, x)
        return float(y.detach()), g, float(g[0])

    f0, g0, d0 = phi(0.0)
    res = strong_wolfe(phi, f0, d0, g0, 10.0)
    assert res.success and 0 < res.step < 3


def test_exact_step_minimizes_a_quadratic_along_the_line():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    A = M @ M.T + np.eye(5)
    x, d = rng.normal(size=5), rng.normal(size=5)
    g = A @ x
    a = exact_quadratic_step(float(g @ d), float(d @ A @ d))
    assert (A @ (x + a * d)) @ d == pytest.approx(0.0, abs=1e-10)  # the new gradient is orthogonal to d
    with pytest.raises(OptimizationError, match="positive curvature"):
        exact_quadratic_step(-1.0, -2.0)


def test_bad_constants_and_directions_raise():
    phi = lambda a: (0.0, torch.zeros(1), 0.0)  # noqa: E731
    with pytest.raises(ConfigError, match="0 < c1 < c2 < 1"):
        strong_wolfe(phi, 0.0, -1.0, torch.zeros(1), c1=0.9, c2=0.1)
    with pytest.raises(OptimizationError, match="not a descent direction"):
        strong_wolfe(phi, 0.0, 1.0, torch.zeros(1))


def test_closure_objective_validates_the_closure():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(OptimizationError, match="needs a closure"):
        ClosureObjective([p], None, "X")
    with pytest.raises(OptimizationError, match="returned float"):
        ClosureObjective([p], lambda: 1.0, "X").evaluate()
    with pytest.raises(OptimizationError, match="scalar"):
        ClosureObjective([p], lambda: p * 2, "X").evaluate()


def test_model_closure_with_graph_keeps_second_derivatives():
    net = torch.nn.Linear(3, 1).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    obj = ClosureObjective(list(net.parameters()), model_closure(net, torch.nn.functional.mse_loss, x, y,
                                                                 create_graph=True), "X")
    f, g = obj.evaluate()
    assert obj.graph_grads is not None and all(gg.requires_grad for gg in obj.graph_grads)
    assert not any(p.grad.requires_grad for p in net.parameters())  # the cycle is broken
    expected = torch.nn.functional.mse_loss(net(x), y)
    assert f == pytest.approx(float(expected.detach()))

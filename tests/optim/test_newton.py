"""Newton's method (Algorithm 8.8, eq. 8.28), saddle-free Newton (sec. 8.2.3) and Newton-CG:
steps against NumPy transcriptions with Hessians from torch.autograd.functional.hessian,
one-step convergence on a quadratic, saddle-point behaviour, SciPy's Newton-CG."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import Newton, NewtonCG, SaddleFreeNewton
from descend.optim.newton import truncated_cg
from reference import minimize_problems as mp
from reference import second_order as ref


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


def _quadratic_closure(x, A, b):
    def closure():
        loss = 0.5 * x @ A @ x - b @ x
        (g,) = torch.autograd.grad(loss, [x], create_graph=True)
        x.grad = g
        return loss

    return closure


def _oracle_hessian_and_grad(problem):
    """H and g of the MLP's loss written out as a function of the flat parameter vector
    (W1, b1, W2, b2 in parameter order), by torch.autograd.functional (independent of descend)."""
    x0 = torch.tensor(mp.flat(problem))
    _, f = mp.mlp_flat_outputs(problem)
    H = torch.autograd.functional.hessian(f, x0)
    g = torch.autograd.functional.jacobian(f, x0)
    return H.numpy(), g.numpy(), x0.numpy()


@pytest.mark.parametrize("adaptive", [True, False])
def test_newton_solves_a_positive_definite_quadratic_in_one_step(adaptive):
    g = torch.Generator().manual_seed(0)
    M = torch.randn(7, 7, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.1 * torch.eye(7, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64)
    x = torch.nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64))
    opt = Newton([x], adaptive=adaptive, max_iter=1)
    opt.step(_quadratic_closure(x, A, b))
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(A.numpy(), b.numpy()), rtol=1e-10, atol=1e-12)
    assert opt.state[x]["n_iter"] == 1 and opt.state[x]["func_evals"] == 2


@pytest.mark.parametrize("cls,step", [(Newton, ref.newton_step), (SaddleFreeNewton, ref.saddle_free_step)])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_one_step_matches_the_equation_on_a_network(cls, step, alpha):
    problem = mp.SmallMLP()
    H, g, x0 = _oracle_hessian_and_grad(problem)
    opt = cls(problem.parameters(), damping=alpha, adaptive=False, max_iter=1)
    opt.step(mp.closure_for(problem, create_graph=True))
    np.testing.assert_allclose(mp.flat(problem) - x0, step(H, g, alpha), rtol=1e-7, atol=1e-9)


def test_levenberg_marquardt_decreases_monotonically_and_adapts_damping():
    problem = mp.PROBLEMS["rosenbrock"]()
    opt = Newton(problem.parameters(), max_iter=1)
    closure = mp.closure_for(problem, create_graph=True)
    losses, dampings = [float(problem.loss().detach())], []
    for _ in range(40):
        opt.step(closure)
        losses.append(float(problem.loss().detach()))
        dampings.append(opt.state[problem.x]["damping"])
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    np.testing.assert_allclose(mp.flat(problem), [1.0, 1.0], atol=1e-8)
    assert max(dampings) > 0  # the rule had to damp somewhere on the way


@pytest.mark.parametrize("cls,kw", [(Newton, {}), (Newton, {"line_search": "strong-wolfe"}), (SaddleFreeNewton, {})])
def test_same_minimizer_as_scipy_on_the_strictly_convex_problem(cls, kw):
    problem = mp.PROBLEMS["logistic"]()
    expected = mp.scipy_minimize(problem, "BFGS")
    opt = cls(problem.parameters(), max_iter=50, tolerance_grad=1e-10, tolerance_change=0.0, **kw)
    opt.step(mp.closure_for(problem, create_graph=True))
    np.testing.assert_allclose(mp.flat(problem), expected.x, atol=1e-6)


def _saddle_closure(x):
    """f(x, y) = x^2/2 + y^4/4 - y^2/2: a saddle at 0, minima at (0, +-1)."""

    def closure():
        loss = 0.5 * x[0] ** 2 + 0.25 * x[1] ** 4 - 0.5 * x[1] ** 2
        (g,) = torch.autograd.grad(loss, [x], create_graph=True)
        x.grad = g
        return loss

    return closure


def test_newton_is_attracted_to_the_saddle_and_saddle_free_newton_escapes():
    start = [1.0, 0.3]
    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    Newton([x], adaptive=False, max_iter=20, tolerance_change=0.0).step(_saddle_closure(x))
    np.testing.assert_allclose(x.detach().numpy(), [0.0, 0.0], atol=1e-8)

    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    SaddleFreeNewton([x], adaptive=False, max_iter=20, tolerance_change=0.0).step(_saddle_closure(x))
    np.testing.assert_allclose(x.detach().numpy(), [0.0, 1.0], atol=1e-8)

    # modified Newton (damping raised until H + alpha I is positive definite) + line search: a minimum too
    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    Newton([x], line_search="strong-wolfe", max_iter=50, tolerance_change=0.0).step(_saddle_closure(x))
    np.testing.assert_allclose(np.abs(x.detach().numpy()), [0.0, 1.0], atol=1e-8)

    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    sgd = torch.optim.SGD([x], lr=0.1)
    closure = _saddle_closure(x)
    for _ in range(300):
        sgd.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), [0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("name", ["rosenbrock", "logistic", "mlp"])
@pytest.mark.parametrize("exact", [True, False])
def test_newton_cg_same_minimizer_as_scipy(name, exact):
    problem = mp.PROBLEMS[name]()
    expected = mp.scipy_minimize(problem, "Newton-CG")
    opt = NewtonCG(problem.parameters(), max_iter=2000, max_eval=20000, tolerance_grad=1e-9, tolerance_change=0.0)
    opt.step(mp.closure_for(problem, create_graph=exact))
    assert opt.status in ("converged: gradient", "line search failed"), opt.status
    assert max(float(p.grad.abs().max()) for p in problem.parameters()) <= 1e-7
    assert float(problem.loss().detach()) == pytest.approx(expected.fun, rel=1e-6, abs=1e-10)
    # the MLP's minimum is flatter (|x - x*| ~ |g| / lambda_min with lambda_min ~ 1e-3)
    np.testing.assert_allclose(mp.flat(problem), expected.x, atol=1e-6 if name != "mlp" else 1e-4)
    assert opt.state[next(problem.parameters())]["hvp_evals"] > 0


def test_truncated_cg_solves_a_positive_definite_system_like_linear_cg():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(8, 8))
    A = M @ M.T + np.eye(8)
    g = rng.normal(size=8)
    At = torch.tensor(A)
    p, n, neg = truncated_cg(lambda v: At @ v, torch.tensor(g), tolerance=1e-12)
    assert not neg and n <= 8 + 2
    np.testing.assert_allclose(p.numpy(), np.linalg.solve(A, -g), rtol=1e-8, atol=1e-10)
    # stopped early, it returns the linear-CG iterate of the same index
    p3, n3, _ = truncated_cg(lambda v: At @ v, torch.tensor(g), tolerance=0.0, max_iter=3)
    np.testing.assert_allclose(p3.numpy(), ref.linear_cg(A, -g, 3)[-1], rtol=1e-10, atol=1e-12)
    # negative curvature at the first direction: steepest descent
    p, _, neg = truncated_cg(lambda v: -v, torch.tensor(g))
    assert neg
    np.testing.assert_allclose(p.numpy(), -g)


def test_exact_curvature_needs_a_graph_and_bad_options_raise():
    x = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))

    def plain():
        x.grad = None
        loss = (x**4).sum()
        loss.backward()
        return loss

    with pytest.raises(OptimizationError, match="create_graph=True"):
        Newton([x]).step(plain)
    with pytest.raises(ConfigError, match="damping"):
        Newton([x], damping=-1.0)
    with pytest.raises(ConfigError, match="damping_factor"):
        Newton([x], damping_factor=1.0)
    with pytest.raises(ConfigError, match="line_search"):
        Newton([x], line_search="exact")
    with pytest.raises(ConfigError, match="damping"):
        NewtonCG([x], damping=-0.1)
    with pytest.raises(OptimizationError, match="returned NoneType"):
        Newton([x]).step(lambda: None)

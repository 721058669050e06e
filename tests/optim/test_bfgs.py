"""BFGS and L-BFGS (sec. 8.6.3): the update formulas against NumPy transcriptions, the
minimizers against scipy.optimize.minimize, bounded memory, checkpoints and bad input."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, Diverged, OptimizationError
from descend.optim import BFGS, LBFGS
from descend.optim.bfgs import lbfgs_inverse_hessian_product
from reference import minimize_problems as mp
from reference import second_order as ref


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


def _run(cls, problem, **kw):
    opt = cls(problem.parameters(), max_iter=5000, max_eval=20000, tolerance_grad=1e-9, tolerance_change=0.0, **kw)
    opt.step(mp.closure_for(problem))
    return opt


def _max_grad(problem):
    return max(float(p.grad.abs().max()) for p in problem.parameters())


@pytest.mark.parametrize("name", ["rosenbrock", "logistic", "mlp"])
@pytest.mark.parametrize("cls,method", [(BFGS, "BFGS"), (LBFGS, "L-BFGS-B")])
def test_same_minimizer_as_scipy(cls, method, name):
    """Same start, float64, a tight gradient tolerance: the same point (convex / Rosenbrock)
    or, for the non-convex MLP, the same loss value with a vanishing gradient."""
    problem = mp.PROBLEMS[name]()
    expected = mp.scipy_minimize(problem, method)
    opt = _run(cls, problem)
    # converged, or stopped by round-off (no decrease measurable) with a vanishing gradient
    assert opt.status in ("converged: gradient", "line search failed"), opt.status
    assert _max_grad(problem) <= 1e-7
    assert np.abs(expected.jac).max() <= 1e-7
    assert float(problem.loss().detach()) == pytest.approx(expected.fun, rel=1e-6, abs=1e-10)
    # the MLP's minimum is flatter (|x - x*| ~ |g| / lambda_min with lambda_min ~ 1e-3)
    np.testing.assert_allclose(mp.flat(problem), expected.x, atol=1e-6 if name != "mlp" else 1e-4)
    if name == "rosenbrock":
        np.testing.assert_allclose(mp.flat(problem), [1.0, 1.0], atol=1e-8)


@pytest.mark.parametrize("cls,method", [(BFGS, "BFGS"), (LBFGS, "L-BFGS-B")])
def test_from_the_network_initialization_both_reach_a_critical_point(cls, method):
    """Non-convex: from the initialization descend and SciPy may end in different local
    minima (both correct); each must reach a vanishing gradient below the starting loss."""
    problem = mp.PROBLEMS["mlp-far"]()
    start = float(problem.loss().detach())
    expected = mp.scipy_minimize(problem, method)
    _run(cls, problem)
    assert _max_grad(problem) <= 1e-7 and np.abs(expected.jac).max() <= 1e-7
    assert float(problem.loss().detach()) < start and expected.fun < start


def test_bfgs_update_matches_textbook_formula():
    """After the first step on a quadratic, M equals N&W eq. 6.17 applied to (gamma I, s, y)."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = A @ A.T + torch.eye(5, dtype=torch.float64)
    x = torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    opt = BFGS([x], max_iter=1, tolerance_change=0.0)
    x0 = x.detach().clone()

    def closure():
        x.grad = None
        loss = 0.5 * x @ A @ x
        loss.backward()
        return loss

    opt.step(closure)
    s = (x.detach() - x0).numpy()
    y = (A.numpy() @ x.detach().numpy()) - A.numpy() @ x0.numpy()
    gamma = (s @ y) / (y @ y)  # eq. 6.20
    expected = ref.bfgs_inverse_update(gamma * np.eye(5), s, y)
    np.testing.assert_allclose(opt.state[x]["inverse_hessian"].numpy(), expected, rtol=1e-10, atol=1e-12)
    # the secant condition M y = s
    np.testing.assert_allclose(expected @ y, s, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("m", [1, 3, 7])
def test_lbfgs_compact_product_matches_two_loop_recursion(m):
    rng = np.random.default_rng(m)
    n = 12
    S, Y = [], []
    for _ in range(m):
        s = rng.normal(size=n)
        y = s + 0.3 * rng.normal(size=n)  # s.y > 0
        S.append(s)
        Y.append(y)
    g = rng.normal(size=n)
    expected = ref.lbfgs_two_loop(g, S, Y)
    pairs = torch.tensor(np.array([S, Y]))
    actual = lbfgs_inverse_hessian_product(torch.tensor(g), pairs)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_lbfgs_memory_is_bounded_to_the_latest_pairs():
    problem = mp.SmallMLP()
    params = list(problem.parameters())
    opt = LBFGS(params, history_size=4, max_iter=1)
    closure = mp.closure_for(problem)
    steps = []
    for _ in range(8):
        x0 = torch.tensor(mp.flat(problem))
        opt.step(closure)
        steps.append(torch.tensor(mp.flat(problem)) - x0)
    pairs = opt.state[params[0]]["pairs"]
    assert pairs.shape == (2, 4, 21)
    torch.testing.assert_close(pairs[0], torch.stack(steps[-4:]))  # the last four s_i, oldest first


@pytest.mark.parametrize("name", ["rosenbrock", "logistic", "mlp"])
@pytest.mark.parametrize("cls", [BFGS, LBFGS])
def test_strong_wolfe_holds_at_every_accepted_step(cls, name):
    """Every step accepted before round-off dominates (max|g| > 1e-6) met both conditions."""
    problem = mp.PROBLEMS[name]()
    opt = cls(problem.parameters(), max_iter=5000, max_eval=20000, tolerance_grad=1e-6, tolerance_change=0.0)
    opt.step(mp.closure_for(problem))
    assert opt.status == "converged: gradient"
    assert opt.state[next(problem.parameters())].get("wolfe_failures", 0) == 0


@pytest.mark.parametrize("cls", [BFGS, LBFGS])
def test_checkpoint_resume_continues_identically(cls):
    def run(split):
        problem = mp.SmallMLP()
        opt = cls(problem.parameters(), max_iter=10, tolerance_change=0.0)
        closure = mp.closure_for(problem)
        opt.step(closure)
        if split:
            state = opt.state_dict()
            opt = cls(problem.parameters(), max_iter=10, tolerance_change=0.0)
            opt.load_state_dict(state)
        opt.step(closure)
        return mp.flat(problem)

    np.testing.assert_array_equal(run(False), run(True))


def test_works_on_a_module_with_several_parameter_tensors_in_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True).sin()
    from descend.optim import model_closure

    closure = model_closure(net, torch.nn.functional.mse_loss, x, y)
    first = float(closure().detach())
    opt = LBFGS(net.parameters(), max_iter=50)
    opt.step(closure)
    assert float(closure().detach()) < 0.1 * first


@pytest.mark.parametrize("m", [0, -1, 2.5, True])
def test_bad_history_size_raises(m):
    with pytest.raises(ConfigError, match="history_size"):
        LBFGS([torch.nn.Parameter(torch.zeros(2))], history_size=m)


@pytest.mark.parametrize("cls", [BFGS, LBFGS])
def test_bad_input_raises_descend_errors(cls):
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ConfigError, match="learning rate"):
        cls([p], lr=-1.0)
    with pytest.raises(ConfigError, match="c1"):
        cls([p], c1=0.5, c2=0.1)
    with pytest.raises(ConfigError, match="one parameter group"):
        cls([{"params": [p]}, {"params": [torch.nn.Parameter(torch.ones(1))]}])
    opt = cls([p])
    with pytest.raises(OptimizationError, match="needs a closure"):
        opt.step()
    with pytest.raises(OptimizationError, match="returned NoneType"):
        opt.step(lambda: None)

    def nan_closure():
        p.grad = torch.zeros_like(p)
        return torch.tensor(float("nan"))

    with pytest.raises(Diverged, match="not finite"):
        opt.step(nan_closure)

"""Coordinate and block coordinate descent (sec. 8.7.2): Gauss-Seidel against a loop
transcription, the book's slow coupled example vs Newton's one step, and sparse coding
(eq. 8.38): the H step against ISTA and the lasso optimality conditions, the W step
against NumPy least squares, a monotonically decreasing objective."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, ShapeError
from descend.optim import Newton
from descend.optim.coordinate_descent import (
    block_coordinate_descent,
    coordinate_descent,
    coupled_quadratic,
    dictionary_least_squares,
    sparse_codes,
    sparse_coding,
    sparse_coding_objective,
)
from reference import second_order as ref


def _spd(n, seed):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    return M @ M.T + n * np.eye(n), rng.normal(size=n), rng.normal(size=n)


def test_coordinate_descent_matches_gauss_seidel_and_decreases_monotonically():
    A, b, x0 = _spd(6, 0)
    x, history = coordinate_descent(torch.tensor(A), torch.tensor(b), torch.tensor(x0), sweeps=4)
    np.testing.assert_allclose(x.numpy(), ref.gauss_seidel(A, b, x0, 4), rtol=1e-12)
    assert all(b_ <= a_ for a_, b_ in zip(history, history[1:]))
    x, _ = coordinate_descent(torch.tensor(A), torch.tensor(b), torch.tensor(x0), sweeps=500)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-7)


def test_one_block_of_everything_is_one_exact_solve():
    A, b, x0 = _spd(5, 1)
    x, history = coordinate_descent(torch.tensor(A), torch.tensor(b), torch.tensor(x0), sweeps=1,
                                    blocks=[range(5)])
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-12)
    x2, _ = coordinate_descent(torch.tensor(A), torch.tensor(b), torch.tensor(x0), sweeps=60,
                               blocks=[[0, 1], [2, 3, 4]])
    np.testing.assert_allclose(x2.numpy(), np.linalg.solve(A, b), rtol=1e-7)


def test_coupled_variables_make_coordinate_descent_slow_where_newton_takes_one_step():
    """Sec. 8.7.2: f(x) = (x1 - x2)^2 + alpha (x1^2 + x2^2), small alpha."""
    alpha = 0.01
    A, b = coupled_quadratic(alpha)
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    x, _ = coordinate_descent(A, b, x0, sweeps=20)
    # each sweep multiplies x by 1 / (1 + alpha)^2 (after the first): far from 0 after 20 sweeps
    assert float(x.abs().max()) > 0.5 * float(x0.abs().max()) / (1 + alpha) ** 40
    assert float(x.abs().max()) > 0.1
    p = torch.nn.Parameter(x0.clone())

    def closure():
        loss = (p[0] - p[1]) ** 2 + alpha * (p @ p)
        (g,) = torch.autograd.grad(loss, [p], create_graph=True)
        p.grad = g
        return loss

    Newton([p], max_iter=1).step(closure)
    assert float(p.detach().abs().max()) < 1e-12


def _codes_problem(seed=0, d=10, m=30, k=6):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(k, d))
    H_true = rng.normal(size=(k, m)) * (rng.random((k, m)) < 0.3)
    X = W.T @ H_true + 0.05 * rng.normal(size=(d, m))
    return X, W


@pytest.mark.parametrize("sparsity", [0.5, 2.0])
def test_sparse_codes_solve_the_lasso(sparsity):
    X, W = _codes_problem()
    H = sparse_codes(torch.tensor(X), torch.tensor(W), sparsity=sparsity, sweeps=2000, tol=1e-14).numpy()
    np.testing.assert_allclose(H, ref.lasso_ista(X, W, sparsity, 20000), atol=1e-6)
    # optimality (subgradient) conditions of sparsity |h| + ||x - W^T h||^2, per entry
    G = 2 * W @ (X - W.T @ H)
    nz = H != 0
    np.testing.assert_allclose(G[nz], sparsity * np.sign(H[nz]), atol=1e-8)
    assert np.all(np.abs(G[~nz]) <= sparsity + 1e-8)


def test_dictionary_step_is_least_squares():
    X, W = _codes_problem(1)
    H = sparse_codes(torch.tensor(X), torch.tensor(W)).numpy()
    W_new = dictionary_least_squares(torch.tensor(X), torch.tensor(H)).numpy()
    expected = np.linalg.lstsq(H.T, X.T, rcond=None)[0]
    np.testing.assert_allclose(W_new, expected, rtol=1e-8, atol=1e-10)
    W_wd = dictionary_least_squares(torch.tensor(X), torch.tensor(H), weight_decay=0.3).numpy()
    np.testing.assert_allclose(W_wd, np.linalg.solve(H @ H.T + 0.3 * np.eye(len(H)), H @ X.T), rtol=1e-10)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_coding_objective_decreases_monotonically(weight_decay):
    X, _ = _codes_problem(2, d=12, m=80, k=8)
    Xt = torch.tensor(X)
    result = sparse_coding(Xt, 8, iterations=15, weight_decay=weight_decay, generator=torch.Generator().manual_seed(0))
    J = np.array(result.objective)
    assert len(J) == 31 and result.steps[:3] == ["init", "H", "W"]
    assert np.all(np.diff(J) <= 1e-9 * np.abs(J[:-1]))
    assert J[-1] < 0.5 * J[0]
    if weight_decay == 0:
        assert J[-1] == pytest.approx(ref.sparse_coding_objective(X, result.W.numpy(), result.H.numpy()), rel=1e-12)
    assert sparse_coding_objective(Xt, result.W, result.H, weight_decay=weight_decay) == pytest.approx(J[-1])


def test_block_coordinate_descent_stops_when_a_sweep_stalls():
    calls = []
    value = [10.0]

    def block():
        calls.append(1)
        value[0] = max(value[0] - 1.0, 7.0)

    history = block_coordinate_descent(lambda: value[0], [block], sweeps=100, tol=0.0)
    assert history == [10.0, 9.0, 8.0, 7.0, 7.0] and len(calls) == 4


def test_bad_input_raises():
    with pytest.raises(ShapeError, match="n x n"):
        coordinate_descent(torch.eye(3), torch.zeros(2))
    with pytest.raises(ConfigError, match="cover every coordinate"):
        coordinate_descent(torch.eye(3), torch.zeros(3), blocks=[[0, 1]])
    X = torch.randn(5, 7, dtype=torch.float64)
    with pytest.raises(ShapeError, match="W must be k x d"):
        sparse_codes(X, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ConfigError, match="n_atoms"):
        sparse_coding(X, 0)
    with pytest.raises(ShapeError, match="share m"):
        dictionary_least_squares(X, torch.randn(3, 6, dtype=torch.float64))

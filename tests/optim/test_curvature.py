"""Curvature tools: Hessian-vector products against finite differences and
torch.autograd.functional.hessian, the full Hessian and its spectrum, Lanczos, the
Gauss-Newton product against an explicit J^T H_L J, Hutchinson's diagonal."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError, ShapeError
from descend.optim.curvature import (
    GaussNewtonOperator,
    HessianOperator,
    flat_grad,
    gauss_newton_diagonal,
    hessian,
    hessian_eigenspectrum,
    hessian_vector_product,
    hutchinson_diagonal,
    lanczos,
)
from reference import minimize_problems as mp


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


@pytest.fixture
def mlp():
    problem = mp.SmallMLP()
    outputs, loss = mp.mlp_flat_outputs(problem)
    x0 = torch.tensor(mp.flat(problem))
    H = torch.autograd.functional.hessian(loss, x0)
    return problem, outputs, loss, x0, H


def test_hvp_matches_autograd_functional_hessian(mlp):
    problem, _, _, _, H = mlp
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hv = hessian_vector_product(problem.loss(), list(problem.parameters()), v)
    torch.testing.assert_close(hv, H @ v, rtol=1e-10, atol=1e-12)


def test_hvp_matches_central_finite_differences_of_the_gradient(mlp):
    problem, _, loss, x0, _ = mlp
    v = torch.randn(x0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 1e-5

    def grad_at(x):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x), x)
        return g

    fd = (grad_at(x0 + h * v) - grad_at(x0 - h * v)) / (2 * h)
    hv = hessian_vector_product(problem.loss(), list(problem.parameters()), v)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)


def test_operator_reuses_one_backward_and_batches_products(mlp):
    problem, _, _, _, H = mlp
    op = HessianOperator(problem.loss(), list(problem.parameters()))
    V = torch.randn(5, op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op.matmul(V), V @ H, rtol=1e-10, atol=1e-12)
    for v in V:
        torch.testing.assert_close(op(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.grad.detach(), flat_grad(problem.loss(), list(problem.parameters())))


@pytest.mark.parametrize("chunk_size", [1, 7, 256])
def test_full_hessian_and_spectrum(mlp, chunk_size):
    problem, _, _, _, H = mlp
    params = list(problem.parameters())
    torch.testing.assert_close(hessian(problem.loss(), params, chunk_size=chunk_size), H, rtol=1e-10, atol=1e-12)
    lam = hessian_eigenspectrum(problem.loss(), params)
    np.testing.assert_allclose(lam.numpy(), np.linalg.eigvalsh(H.numpy()), rtol=1e-8, atol=1e-10)
    lam, Q = hessian_eigenspectrum(problem.loss(), params, eigenvectors=True)
    torch.testing.assert_close(Q @ torch.diag(lam) @ Q.T, H, rtol=1e-8, atol=1e-10)


def test_lanczos_finds_the_extreme_eigenvalues(mlp):
    problem, _, _, _, H = mlp
    op = HessianOperator(problem.loss(), list(problem.parameters()))
    ritz = lanczos(op, op.dim, steps=op.dim, generator=torch.Generator().manual_seed(0))
    lam = np.linalg.eigvalsh(H.numpy())
    assert float(ritz[0]) == pytest.approx(lam[0], rel=1e-6, abs=1e-8)
    assert float(ritz[-1]) == pytest.approx(lam[-1], rel=1e-6)
    # a large random symmetric matrix: 40 steps give its largest eigenvalue closely
    g = torch.Generator().manual_seed(3)
    M = torch.randn(300, 300, dtype=torch.float64, generator=g)
    A = (M + M.T) / 2
    ritz = lanczos(lambda v: A @ v, 300, steps=60, generator=g)
    assert float(ritz[-1]) == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-3)


def test_gauss_newton_product_matches_explicit_jacobian(mlp):
    problem, outputs, _, x0, _ = mlp
    J = torch.autograd.functional.jacobian(outputs, x0).reshape(-1, x0.numel())  # (n_out, k)
    out = outputs(x0)
    H_L = torch.autograd.functional.hessian(lambda z: ((z - problem.y.reshape(-1)) ** 2).mean(), out.reshape(-1))
    G = J.T @ H_L @ J
    v = torch.randn(x0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z = problem.net(problem.X)
    loss = torch.nn.functional.mse_loss(z, problem.y)
    gv = GaussNewtonOperator(z, loss, list(problem.parameters()))(v)
    torch.testing.assert_close(gv, G @ v, rtol=1e-10, atol=1e-12)


def test_gauss_newton_equals_hessian_for_linear_least_squares():
    g = torch.Generator().manual_seed(5)
    lin = torch.nn.Linear(4, 3).double()
    X = torch.randn(20, 4, dtype=torch.float64, generator=g)
    Y = torch.randn(20, 3, dtype=torch.float64, generator=g)
    params = list(lin.parameters())
    z = lin(X)
    loss = torch.nn.functional.mse_loss(z, Y)
    op = GaussNewtonOperator(z, loss, params)
    v = torch.randn(op.dim, dtype=torch.float64, generator=g)
    torch.testing.assert_close(op(v), hessian_vector_product(torch.nn.functional.mse_loss(lin(X), Y), params, v))


def test_hutchinson_is_exact_for_a_diagonal_and_unbiased_otherwise(mlp):
    d = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    est = hutchinson_diagonal(lambda v: d * v, 4, samples=1, dtype=torch.float64)
    torch.testing.assert_close(est, d)
    problem, _, _, _, H = mlp
    op = HessianOperator(problem.loss(), list(problem.parameters()))
    est = hutchinson_diagonal(op, op.dim, samples=1000, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    # the estimator's standard deviation is sqrt(sum_{j != i} H_ij^2 / samples)
    sd = torch.sqrt(((H**2).sum(1) - H.diagonal() ** 2) / 1000)
    assert bool(((est - H.diagonal()).abs() <= 5 * sd + 1e-12).all())


def test_gauss_newton_diagonal_estimates_the_explicit_one(mlp):
    problem, outputs, _, x0, _ = mlp
    J = torch.autograd.functional.jacobian(outputs, x0).reshape(-1, x0.numel())
    n = J.shape[0]
    G_diag = (2.0 / n) * (J**2).sum(0)  # MSE: H_L = (2/n) I
    z = problem.net(problem.X)
    est = gauss_newton_diagonal(z, torch.nn.functional.mse_loss(z, problem.y), list(problem.parameters()),
                                samples=300, generator=torch.Generator().manual_seed(7))
    G = J.T @ J * (2.0 / n)
    sd = torch.sqrt(((G**2).sum(1) - G.diagonal() ** 2) / 300)
    assert bool(((est - G_diag).abs() <= 5 * sd + 1e-12).all())


def test_unused_parameters_and_linear_losses_give_zero_curvature():
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    v = torch.ones(5, dtype=torch.float64)
    hv = hessian_vector_product((a**2).sum(), [a, unused], v)
    torch.testing.assert_close(hv, torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(hessian_vector_product(a.sum(), [a], torch.ones(2, dtype=torch.float64)),
                               torch.zeros(2, dtype=torch.float64))


def test_bad_input_raises():
    a = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ShapeError, match="scalar"):
        hessian_vector_product(a * 2, [a], torch.ones(3))
    with pytest.raises(ShapeError, match="3 elements"):
        hessian_vector_product((a**2).sum(), [a], torch.ones(4))
    with pytest.raises(ShapeError, match="require grad"):
        with torch.no_grad():
            loss = (a**2).sum()
        hessian_vector_product(loss, [a], torch.ones(3))
    with pytest.raises(ConfigError, match="params is empty"):
        hessian((a**2).sum(), [])
    with pytest.raises(ConfigError, match="samples"):
        hutchinson_diagonal(lambda v: v, 3, samples=0)

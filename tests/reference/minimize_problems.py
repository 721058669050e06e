"""Full-batch test problems for the line-search and Newton methods, and a SciPy runner.

Three problems, each a torch module in float64 with a fixed starting point:
Rosenbrock (SciPy's ``rosen`` is its NumPy twin), L2-regularized logistic regression
(strictly convex: a unique minimizer) and a small tanh MLP regression (non-convex: from
its initialization, descend and SciPy may stop in different local minima, so "mlp"
starts near one of them and "mlp-far" is compared only by reaching a critical point).
``scipy_minimize`` runs ``scipy.optimize.minimize`` on the *same* closure through
numpy <-> torch, so only the optimizer differs.
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.optimize
import torch
from torch import nn


class Rosenbrock(nn.Module):
    def __init__(self, x0):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(x0, dtype=torch.float64))

    def loss(self):
        x = self.x
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


class LogisticRegression(nn.Module):
    def __init__(self, n=200, d=5, l2=1e-2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, d, generator=g, dtype=torch.float64)
        w_true = torch.randn(d, generator=g, dtype=torch.float64)
        p = torch.sigmoid(self.X @ w_true)
        self.y = (torch.rand(n, generator=g, dtype=torch.float64) < p).to(torch.float64)
        self.l2 = l2
        self.w = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def loss(self):
        logits = self.X @ self.w + self.b
        nll = nn.functional.binary_cross_entropy_with_logits(logits, self.y)
        return nll + 0.5 * self.l2 * (self.w @ self.w)


class SmallMLP(nn.Module):
    """3-4-1 tanh network on noisy targets with a little L2: a non-zero-residual, non-convex fit."""

    def __init__(self, n=64, d=3, hidden=4, l2=1e-3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, d, generator=g, dtype=torch.float64)
        noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
        self.y = torch.sin(self.X.sum(1, keepdim=True)) + 0.3 * noise
        self.l2 = l2
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1)).double()

    def loss(self):
        penalty = sum((p * p).sum() for p in self.net.parameters())
        return nn.functional.mse_loss(self.net(self.X), self.y) + 0.5 * self.l2 * penalty


def mlp_flat_outputs(problem):
    """The SmallMLP's outputs and loss written out as functions of the flat parameter vector
    (W1, b1, W2, b2 in parameter order), for torch.autograd.functional oracles."""
    d, h = problem.X.shape[1], problem.net[0].out_features

    def outputs(v):
        W1, b1, W2, b2 = v.split([h * d, h, h, 1])
        return torch.tanh(problem.X @ W1.view(h, d).T + b1) @ W2.view(1, h).T + b2

    def loss(v):
        return ((outputs(v) - problem.y) ** 2).mean() + 0.5 * problem.l2 * (v @ v)

    return outputs, loss


def mlp_near_a_minimum(noise=0.05, seed=1):
    """The SmallMLP started at a perturbation of one of its local minima (found by SciPy's BFGS).

    From an arbitrary start, two correct optimizers of a non-convex loss can stop in
    different local minima; from inside a basin both must return to its minimum, which
    makes "the same minimizer" a fair test for the network too.
    """
    problem = SmallMLP()
    x_star = scipy_minimize(problem, "BFGS", gtol=1e-10).x
    g = np.random.default_rng(seed)
    start = x_star + noise * g.normal(size=x_star.shape)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(start).clone(), list(problem.parameters()))
    return problem


PROBLEMS = {
    "rosenbrock": lambda: Rosenbrock([-1.2, 1.0]),
    "logistic": lambda: LogisticRegression(),
    "mlp": mlp_near_a_minimum,
    "mlp-far": lambda: SmallMLP(),
}


def closure_for(problem, create_graph=False):
    params = list(problem.parameters())

    def closure():
        loss = problem.loss()
        if create_graph:
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            for p in params:
                p.grad = None
            loss.backward()
        return loss

    return closure


def flat(problem):
    return torch.cat([p.detach().reshape(-1) for p in problem.parameters()]).numpy().copy()


def scipy_minimize(problem, method, gtol=1e-9, maxiter=10000):
    """SciPy's optimizer on the problem's own torch loss and gradient (and H p for Newton-CG)."""
    params = list(problem.parameters())
    x0 = flat(problem)

    def load(x):
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(x, dtype=np.float64)).clone(), params)

    def fun(x):
        load(x)
        loss = problem.loss()
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]).numpy()

    def hessp(x, v):
        load(x)
        loss = problem.loss()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat_g = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat_g, params, grad_outputs=torch.from_numpy(v))
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    options = {"maxiter": maxiter}
    kwargs = {}
    if method == "L-BFGS-B":
        options.update(gtol=gtol, ftol=0.0, maxfun=10 * maxiter)
    elif method == "Newton-CG":
        options.update(xtol=1e-14)
        kwargs["hessp"] = hessp
    else:
        options.update(gtol=gtol)
    result = scipy.optimize.minimize(fun, x0, jac=True, method=method, options=options, **kwargs)
    load(x0)  # leave the problem at its starting point
    return result


@contextlib.contextmanager
def single_thread():
    """One BLAS / torch thread: on a shared 2-core machine, spinning thread pools make tiny
    problems 10-100x slower (SciPy's L-BFGS-B calls LAPACK on 21 x 21 matrices)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(n)

"""Deterministic test problems in NumPy and PyTorch, for the optimizer oracles.

Each problem has a NumPy gradient written out by hand (independent of autograd) and a
PyTorch twin whose parameters start at the same values, so an optimizer's trajectory in
descend can be compared with a NumPy transcription of the book's algorithm.
"""

from __future__ import annotations

import numpy as np
import torch

# ------------------------------------------------------------------ a non-quadratic function
# A chained Rosenbrock function on the concatenation z of all parameter tensors:
#   f(z) = sum_i (1 - z_i)^2 + B (z_{i+1} - z_i^2)^2
# spread over tensors of different shapes so every optimizer handles several tensors.

ROSENBROCK_SHAPES = [(3, 4), (5,), (2, 1, 3)]
B = 5.0


def rosenbrock_init(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.8, 0.8, size=s) for s in ROSENBROCK_SHAPES]


def _flat(theta: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([t.ravel() for t in theta])


def _unflat(z: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, k = [], 0
    for t in like:
        out.append(z[k : k + t.size].reshape(t.shape))
        k += t.size
    return out


def rosenbrock_value(theta: list[np.ndarray]) -> float:
    z = _flat(theta)
    return float(np.sum((1 - z) ** 2) + B * np.sum((z[1:] - z[:-1] ** 2) ** 2))


def rosenbrock_grad(theta: list[np.ndarray]) -> list[np.ndarray]:
    z = _flat(theta)
    g = -2 * (1 - z)
    d = z[1:] - z[:-1] ** 2
    g[:-1] += -4 * B * z[:-1] * d
    g[1:] += 2 * B * d
    return _unflat(g, theta)


def rosenbrock_torch(params: list[torch.Tensor]) -> torch.Tensor:
    z = torch.cat([p.reshape(-1) for p in params])
    return torch.sum((1 - z) ** 2) + B * torch.sum((z[1:] - z[:-1] ** 2) ** 2)


# ------------------------------------------------------------------ a small network
# x (N, 3) -> tanh(x W1^T + b1) (N, 5) -> h W2^T + b2 (N, 2); loss 0.5 * mean_n ||out - y||^2.
# Parameter order matches torch.nn.Sequential(Linear(3, 5), Tanh(), Linear(5, 2)).parameters().


def network_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3))
    y = rng.normal(size=(8, 2))
    theta = [
        rng.normal(scale=0.6, size=(5, 3)),
        rng.normal(scale=0.1, size=(5,)),
        rng.normal(scale=0.6, size=(2, 5)),
        rng.normal(scale=0.1, size=(2,)),
    ]
    return x, y, theta


def network_grad(theta: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    w1, b1, w2, b2 = theta
    n = x.shape[0]
    h = np.tanh(x @ w1.T + b1)
    out = h @ w2.T + b2
    d_out = (out - y) / n  # d loss / d out
    g_w2 = d_out.T @ h
    g_b2 = d_out.sum(0)
    d_h = d_out @ w2 * (1 - h**2)
    g_w1 = d_h.T @ x
    g_b1 = d_h.sum(0)
    return [g_w1, g_b1, g_w2, g_b2]


def network_torch(theta: list[np.ndarray]) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    with torch.no_grad():
        for p, t in zip(net.parameters(), theta):
            p.copy_(torch.from_numpy(t))
    return net


def network_loss_torch(net: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return 0.5 * ((net(xt) - yt) ** 2).sum(1).mean()

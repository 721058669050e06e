"""NumPy oracles for descend.init: the formulas of Deep Learning sec. 8.4, written out.

Each weight scheme is described by its distribution: ("uniform", bound) or ("normal", std),
from which the test derives the mean, the variance and its sampling error.
"""

import math

import numpy as np


def distribution(scheme: str, m: int, n: int, gain: float = 1.0):
    """(family, parameter) of W_ij for a layer with fan-in m and fan-out n."""
    if scheme == "uniform":  # U(-1/sqrt(m), 1/sqrt(m)), sec. 8.4
        return "uniform", gain / math.sqrt(m)
    if scheme == "normalized":  # eq. 8.23
        return "uniform", gain * math.sqrt(6.0 / (m + n))
    if scheme == "lecun":  # Var = 1/m
        return "normal", gain * math.sqrt(1.0 / m)
    if scheme == "lecun-uniform":  # Var = 1/m = bound^2 / 3
        return "uniform", gain * math.sqrt(3.0 / m)
    if scheme == "he":  # Var = 2/m
        return "normal", gain * math.sqrt(2.0 / m)
    if scheme == "he-uniform":
        return "uniform", gain * math.sqrt(6.0 / m)
    raise ValueError(scheme)


def moments(family: str, param: float):
    """(variance, fourth central moment) of U(-a, a) or N(0, s^2)."""
    if family == "uniform":
        return param**2 / 3.0, param**4 / 5.0
    return param**2, 3.0 * param**4


def softmax(b):
    e = np.exp(b - np.max(b))
    return e / e.sum()


def sigmoid(b):
    return 1.0 / (1.0 + np.exp(-b))


def lsuv_mlp(weights, biases, x, activation, tol=0.1, max_iter=10):
    """Mishkin & Matas (2015), Algorithm 1, on a chain of dense layers h = act(W h + b):
    for each layer in turn, rescale W by 1/sqrt(Var(W h + b)) until |Var - 1| < tol."""
    weights = [w.copy() for w in weights]
    h_in = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        v = (h_in @ w.T + b).var(ddof=1)
        for _ in range(max_iter):
            if abs(v - 1.0) < tol:
                break
            w = w / np.sqrt(v)
            v = (h_in @ w.T + b).var(ddof=1)
        weights[i] = w
        z = h_in @ w.T + b
        h_in = activation(z) if i < len(weights) - 1 else z
    return weights

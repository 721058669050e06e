"""NumPy oracles for descend.losses: the costs of NNDL ch. 3 and their derivatives in z,
example by example, class by class."""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def one_hot(y, k):
    t = np.zeros(k)
    t[y] = 1.0
    return t


def costs(z, y):
    """Mean (softmax log-likelihood, sigmoid cross-entropy, quadratic) costs over the batch."""
    n, k = z.shape
    ll = ce = quad = 0.0
    for i in range(n):
        t = one_hot(y[i], k)
        a = sigmoid(z[i])
        ll += -np.log(softmax(z[i])[y[i]])
        for j in range(k):
            # 1 - sigmoid(z) = sigmoid(-z), written so for large z it keeps its digits.
            ce += -(t[j] * np.log(a[j]) + (1 - t[j]) * np.log(sigmoid(-z[i, j])))
            quad += 0.5 * (a[j] - t[j]) ** 2
    return ll / n, ce / n, quad / n


def gradients(z, y):
    """dC/dz of each cost: softmax(z) - t, a - t, (a - t) a (1 - a); divided by n (batch mean)."""
    n, k = z.shape
    g_ll, g_ce, g_quad = np.zeros_like(z), np.zeros_like(z), np.zeros_like(z)
    for i in range(n):
        t = one_hot(y[i], k)
        a = sigmoid(z[i])
        g_ll[i] = (softmax(z[i]) - t) / n
        g_ce[i] = (a - t) / n
        g_quad[i] = (a - t) * a * (1 - a) / n
    return g_ll, g_ce, g_quad

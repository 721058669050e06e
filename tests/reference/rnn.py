"""NumPy transcriptions of the recurrent networks of Deep Learning sec. 10.2.

One sequence at a time, column vectors, plain loops over t: the oracles that
``descend.nn.recurrent`` and ``descend.nn.bptt`` are checked against. Indices are
0-based, so ``h[0]`` is ``h(1)`` of the book and ``h0`` is ``h(0)``.
"""

from __future__ import annotations

import numpy as np


def softmax(o):
    e = np.exp(o - o.max())
    return e / e.sum()


def rnn_forward(x, U, W, b, V, c, h0=None):
    """Eqs. 10.8-10.11 for one sequence x (T, F): returns h (T, H), o (T, K), y_hat (T, K)."""
    T = x.shape[0]
    H = W.shape[0]
    h_prev = np.zeros(H) if h0 is None else h0
    hs, os, ys = [], [], []
    for t in range(T):
        a = b + W @ h_prev + U @ x[t]  # eq. 10.8
        h = np.tanh(a)  # eq. 10.9
        o = c + V @ h  # eq. 10.10
        y_hat = softmax(o)  # eq. 10.11
        hs.append(h), os.append(o), ys.append(y_hat)
        h_prev = h
    return np.array(hs), np.array(os), np.array(ys)


def rnn_loss(y_hat, y):
    """Eqs. 10.12-10.14: L = sum_t L(t) = -sum_t log p_model(y(t) | x(1..t))."""
    return -sum(np.log(y_hat[t][y[t]]) for t in range(len(y)))


def rnn_bptt(x, y, U, W, b, V, c, h0=None):
    """Eqs. 10.17-10.21 and the parameter gradients (book eqs. 10.22-10.28), one sequence.

    The Jacobians are written as the text writes them, as matrices: diag(1 - h^2).
    """
    T = x.shape[0]
    H = W.shape[0]
    h0 = np.zeros(H) if h0 is None else h0
    h, o, y_hat = rnn_forward(x, U, W, b, V, c, h0)
    grad_o = np.zeros_like(o)
    for t in range(T):
        dL_dLt = 1.0  # eq. 10.17
        onehot = np.zeros(o.shape[1])
        onehot[y[t]] = 1.0
        grad_o[t] = dL_dLt * (y_hat[t] - onehot)  # eq. 10.18
    grad_h = np.zeros_like(h)
    grad_h[T - 1] = V.T @ grad_o[T - 1]  # eq. 10.19
    for t in range(T - 2, -1, -1):
        jac = np.diag(1 - h[t + 1] ** 2)  # d h(t+1) / d a(t+1)
        grad_h[t] = W.T @ jac @ grad_h[t + 1] + V.T @ grad_o[t]  # eqs. 10.20-10.21
    grad = {"o": grad_o, "h": grad_h}
    grad["c"] = sum(grad_o[t] for t in range(T))
    grad["b"] = sum(np.diag(1 - h[t] ** 2) @ grad_h[t] for t in range(T))
    grad["V"] = sum(np.outer(grad_o[t], h[t]) for t in range(T))
    h_prev = [h0] + [h[t] for t in range(T - 1)]
    grad["W"] = sum(np.diag(1 - h[t] ** 2) @ np.outer(grad_h[t], h_prev[t]) for t in range(T))
    grad["U"] = sum(np.diag(1 - h[t] ** 2) @ np.outer(grad_h[t], x[t]) for t in range(T))
    grad["h0"] = W.T @ np.diag(1 - h[0] ** 2) @ grad_h[0]
    return rnn_loss(y_hat, y), grad


def output_recurrent_forward(x, fed, U, W, b, V, c):
    """Fig. 10.4 for one sequence: h(t) = tanh(b + W fed(t) + U x(t)), o(t) = c + V h(t).

    ``fed`` (T, K) is what enters each step from the previous output: under teacher
    forcing (sec. 10.2.1) fed(t) = onehot(y(t-1)), with fed(1) = 0.
    """
    T = x.shape[0]
    out = []
    for t in range(T):
        h = np.tanh(b + W @ fed[t] + U @ x[t])
        out.append(c + V @ h)
    return np.array(out)


def teacher_forced_inputs(y, K):
    """fed(t) = onehot(y(t-1)) for t >= 2 and zeros at t = 1 (fig. 10.6, left)."""
    fed = np.zeros((len(y), K))
    for t in range(1, len(y)):
        fed[t, y[t - 1]] = 1.0
    return fed


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def lstm_forward(x, U, W, b, h0, s0):
    """Sec. 10.10, the gate blocks in torch's order [g (input), f (forget), z (cell input), q (output)]."""
    H = h0.shape[0]
    h, s = h0, s0
    hs = []
    for t in range(x.shape[0]):
        pre = b + U @ x[t] + W @ h
        g, f, z, q = sigmoid(pre[:H]), sigmoid(pre[H : 2 * H]), np.tanh(pre[2 * H : 3 * H]), sigmoid(pre[3 * H :])
        s = f * s + g * z
        h = np.tanh(s) * q
        hs.append(h)
    return np.array(hs), s

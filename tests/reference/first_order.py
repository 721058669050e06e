"""NumPy transcriptions of the first-order algorithms of Deep Learning ch. 8.

Each function follows its algorithm box line by line, on a list of arrays ``theta`` with a
gradient function ``grad(theta) -> list of arrays``, and returns the parameters after
every step. Plain loops and no cleverness: these are the oracles descend.optim is checked
against. ``decay`` is decoupled weight decay, ``theta <- (1 - lr decay) theta`` (coupled L2
is checked separately by adding the penalty to the objective).
"""

from __future__ import annotations

import copy

import numpy as np


def _copy(theta):
    return [t.copy() for t in theta]


def sgd(theta, grad, steps, lr, decay=0.0):
    """Algorithm 8.1."""
    theta, out = _copy(theta), []
    for _ in range(steps):
        g = grad(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * decay)
            theta[i] = theta[i] - lr * g[i]
        out.append(_copy(theta))
    return out


def momentum(theta, grad, steps, lr, alpha, decay=0.0):
    """Algorithm 8.2: v <- alpha v - eps g; theta <- theta + v."""
    theta, out = _copy(theta), []
    v = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        g = grad(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * decay)
            v[i] = alpha * v[i] - lr * g[i]
            theta[i] = theta[i] + v[i]
        out.append(_copy(theta))
    return out


def nesterov(theta, grad, steps, lr, alpha, decay=0.0):
    """Algorithm 8.3: the gradient at the interim point theta + alpha v."""
    theta, out = _copy(theta), []
    v = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        interim = [theta[i] + alpha * v[i] for i in range(len(theta))]
        g = grad(interim)
        for i in range(len(theta)):
            v[i] = alpha * v[i] - lr * g[i]
            theta[i] = theta[i] * (1 - lr * decay) + v[i]
        out.append(_copy(theta))
    return out


def nesterov_reformulated(phi, grad, steps, lr, alpha, decay=0.0):
    """Sutskever et al.'s rewriting of Alg. 8.3 in phi = theta + alpha v:
    v <- alpha v - eps grad(phi); phi <- phi + alpha v - eps grad(phi)."""
    phi, out = _copy(phi), []
    v = [np.zeros_like(t) for t in phi]
    for _ in range(steps):
        g = grad(phi)
        for i in range(len(phi)):
            phi[i] = phi[i] * (1 - lr * decay)
            v[i] = alpha * v[i] - lr * g[i]
            phi[i] = phi[i] + alpha * v[i] - lr * g[i]
        out.append(_copy(phi))
    return out


def adagrad(theta, grad, steps, lr, delta, decay=0.0):
    """Algorithm 8.4: r <- r + g*g; delta_theta = -eps / (delta + sqrt(r)) * g."""
    theta, out = _copy(theta), []
    r = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        g = grad(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * decay)
            r[i] = r[i] + g[i] * g[i]
            theta[i] = theta[i] - lr / (delta + np.sqrt(r[i])) * g[i]
        out.append(_copy(theta))
    return out


def rmsprop(theta, grad, steps, lr, rho, delta, placement="book", decay=0.0):
    """Algorithm 8.5: r <- rho r + (1 - rho) g*g; delta_theta = -eps / sqrt(delta + r) * g.
    ``placement="torch"``: -eps / (sqrt(r) + delta) * g."""
    theta, out = _copy(theta), []
    r = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        g = grad(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * decay)
            r[i] = rho * r[i] + (1 - rho) * g[i] * g[i]
            denom = np.sqrt(delta + r[i]) if placement == "book" else np.sqrt(r[i]) + delta
            theta[i] = theta[i] - lr / denom * g[i]
        out.append(_copy(theta))
    return out


def rmsprop_nesterov(theta, grad, steps, lr, rho, alpha, delta=0.0, placement="book"):
    """Algorithm 8.6 (delta = 0 is the book's form, which has none)."""
    theta, out = _copy(theta), []
    r = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        interim = [theta[i] + alpha * v[i] for i in range(len(theta))]
        g = grad(interim)
        for i in range(len(theta)):
            r[i] = rho * r[i] + (1 - rho) * g[i] * g[i]
            denom = np.sqrt(delta + r[i]) if placement == "book" else np.sqrt(r[i]) + delta
            v[i] = alpha * v[i] - lr / denom * g[i]
            theta[i] = theta[i] + v[i]
        out.append(_copy(theta))
    return out


def adam(theta, grad, steps, lr, rho1, rho2, delta, placement="book", amsgrad=False, decay=0.0):
    """Algorithm 8.7: delta_theta = -eps s^ / sqrt(r^ + delta).
    ``placement="torch"``: -eps s^ / (sqrt(r^) + delta).
    ``amsgrad``: r replaced by its running maximum before bias correction (Reddi et al.,
    as torch.optim.Adam(amsgrad=True) does it)."""
    theta, out = _copy(theta), []
    s = [np.zeros_like(x) for x in theta]
    r = [np.zeros_like(x) for x in theta]
    r_max = [np.zeros_like(x) for x in theta]
    t = 0
    for _ in range(steps):
        g = grad(theta)
        t = t + 1
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr * decay)
            s[i] = rho1 * s[i] + (1 - rho1) * g[i]
            r[i] = rho2 * r[i] + (1 - rho2) * g[i] * g[i]
            r_max[i] = np.maximum(r_max[i], r[i])
            s_hat = s[i] / (1 - rho1**t)
            r_hat = (r_max[i] if amsgrad else r[i]) / (1 - rho2**t)
            denom = np.sqrt(r_hat + delta) if placement == "book" else np.sqrt(r_hat) + delta
            theta[i] = theta[i] - lr * s_hat / denom
        out.append(_copy(theta))
    return out


def delta_bar_delta(theta, grad, steps, lr0, kappa, phi, smoothing, decay=0.0):
    """Jacobs (1988), element by element, with rates eps_i (not gains):
    eps_i += kappa if bar_delta_i * delta_i > 0; eps_i -= phi eps_i if < 0;
    theta_i -= eps_i delta_i; bar_delta_i = (1 - smoothing) delta_i + smoothing bar_delta_i."""
    theta, out = _copy(theta), []
    rate = [np.full_like(t, lr0) for t in theta]
    bar = [np.zeros_like(t) for t in theta]
    for _ in range(steps):
        delta = grad(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - lr0 * decay)
            for j in np.ndindex(theta[i].shape):
                agreement = bar[i][j] * delta[i][j]
                if agreement > 0:
                    rate[i][j] += kappa
                elif agreement < 0:
                    rate[i][j] -= phi * rate[i][j]
                theta[i][j] -= rate[i][j] * delta[i][j]
                bar[i][j] = (1 - smoothing) * delta[i][j] + smoothing * bar[i][j]
        out.append(_copy(theta))
    return out


def clip_by_global_norm(grads, max_norm):
    """Sec. 8.2.4 / 10.11.1 (Pascanu et al.): if ||g|| > v then g <- g v / ||g||, with the
    norm taken over all parameters together."""
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    if norm > max_norm:
        return [g * max_norm / norm for g in grads], norm
    return [copy.copy(g) for g in grads], norm


def clip_by_value(grads, max_value):
    """Element-wise clipping (Mikolov): g_i <- min(max(g_i, -v), v)."""
    return [np.minimum(np.maximum(g, -max_value), max_value) for g in grads]


def polyak_uniform(trajectory):
    """Sec. 8.7.3: theta_hat^(t) = (1/t) sum_i theta^(i)."""
    return [np.mean([step[i] for step in trajectory], axis=0) for i in range(len(trajectory[0]))]


def polyak_ema(trajectory, alpha):
    """Eq. 8.39: theta_hat^(t) = alpha theta_hat^(t-1) + (1 - alpha) theta^(t), starting from
    theta_hat^(1) = theta^(1)."""
    avg = [t.copy() for t in trajectory[0]]
    for step in trajectory[1:]:
        avg = [alpha * a + (1 - alpha) * t for a, t in zip(avg, step)]
    return avg


def linear_decay(k, eps0, eps_tau, tau):
    """Eq. 8.14: eps_k = (1 - alpha) eps_0 + alpha eps_tau with alpha = k / tau; constant after tau."""
    alpha = min(k / tau, 1.0)
    return (1 - alpha) * eps0 + alpha * eps_tau

"""NumPy transcriptions of the second-order methods' equations (Deep Learning sec. 8.2, 8.6, 8.7.2).

Literal, loop-based, written from the texts and from Nocedal & Wright, "Numerical
Optimization" 2nd ed. (which the book defers to for BFGS), independent of descend's code.
"""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------- Algorithm 8.9
def conjugate_gradient_exact(A, b, x0, iterations, beta="polak-ribiere"):
    """Algorithm 8.9 on J(x) = 1/2 x^T A x - b^T x with the analytic line search.

    Returns the iterates theta_0, theta_1, ... (one per line search).
    """
    theta = np.array(x0, dtype=float)
    rho = np.zeros_like(theta)  # rho_0 = 0
    g_prev = None
    iterates = [theta.copy()]
    for t in range(1, iterations + 1):
        g = A @ theta - b  # gradient of the quadratic
        if g_prev is None:
            beta_t = 0.0
        elif beta == "fletcher-reeves":
            beta_t = (g @ g) / (g_prev @ g_prev)  # eq. 8.30
        else:
            beta_t = ((g - g_prev) @ g) / (g_prev @ g_prev)  # eq. 8.31
        rho = -g + beta_t * rho
        eps = -(g @ rho) / (rho @ A @ rho)  # "analytically solve for eps*"
        theta = theta + eps * rho
        g_prev = g
        iterates.append(theta.copy())
    return iterates


# --------------------------------------------------------------------------- BFGS (sec. 8.6.3)
def bfgs_inverse_update(M, s, y):
    """N&W eq. 6.17: M+ = (I - r s y^T) M (I - r y s^T) + r s s^T, r = 1 / y^T s."""
    n = len(s)
    r = 1.0 / (y @ s)
    I = np.eye(n)
    return (I - r * np.outer(s, y)) @ M @ (I - r * np.outer(y, s)) + r * np.outer(s, s)


def lbfgs_two_loop(g, S, Y):
    """N&W Algorithm 7.4: H g from pairs (s_i, y_i), oldest first, H0 = gamma I (eq. 7.20)."""
    q = np.array(g, dtype=float)
    m = len(S)
    alphas = [0.0] * m
    for i in reversed(range(m)):
        rho = 1.0 / (Y[i] @ S[i])
        alphas[i] = rho * (S[i] @ q)
        q = q - alphas[i] * Y[i]
    gamma = (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
    r = gamma * q
    for i in range(m):
        rho = 1.0 / (Y[i] @ S[i])
        beta = rho * (Y[i] @ r)
        r = r + S[i] * (alphas[i] - beta)
    return r


# --------------------------------------------------------------------------- Newton (sec. 8.6.1, 8.2.3)
def newton_step(H, g, alpha=0.0):
    """Eq. 8.28 (eq. 8.27 for alpha = 0): Delta = -[H + alpha I]^{-1} g."""
    return -np.linalg.solve(H + alpha * np.eye(len(g)), g)


def saddle_free_step(H, g, alpha=0.0):
    """Sec. 8.2.3 (Dauphin et al. 2014): Delta = -|H|^{-1} g with |H| from the eigen-decomposition."""
    lam, Q = np.linalg.eigh(H)
    absH = Q @ np.diag(np.abs(lam) + alpha) @ Q.T
    return -np.linalg.solve(absH, g)


def linear_cg(A, b, iterations):
    """Textbook linear CG for A x = b from x = 0, each iterate kept (N&W Algorithm 5.2)."""
    x = np.zeros_like(b, dtype=float)
    r = A @ x - b
    p = -r
    out = []
    for _ in range(iterations):
        a = (r @ r) / (p @ A @ p)
        x = x + a * p
        r_new = r + a * (A @ p)
        p = -r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        out.append(x.copy())
    return out


# --------------------------------------------------------------------------- SDLM (cs189)
def sdlm_update(theta, g, h, sample, lr, mu, beta, t):
    """h <- beta h + (1 - beta) sample; theta <- theta - lr g / (mu + |h| / (1 - beta^t))."""
    h = beta * h + (1 - beta) * sample
    eta = lr / (mu + np.abs(h) / (1 - beta**t))
    return theta - eta * g, h


# --------------------------------------------------------------------------- sec. 8.2.1
def taylor_change(g, H, eps):
    """Eq. 8.10: 1/2 eps^2 g^T H g - eps g^T g."""
    return 0.5 * eps**2 * (g @ H @ g) - eps * (g @ g)


def strong_wolfe_holds(f0, d0, fa, da, a, c1, c2):
    """Both strong Wolfe conditions for step a (f, derivative along d at 0 and at a)."""
    return fa <= f0 + c1 * a * d0 + 1e-12 * max(1.0, abs(f0)) and abs(da) <= c2 * abs(d0) + 1e-12


# --------------------------------------------------------------------------- sec. 8.7.2
def gauss_seidel(A, b, x0, sweeps):
    """Coordinate descent on 1/2 x^T A x - b^T x: x_i <- (b_i - sum_{j != i} A_ij x_j) / A_ii."""
    x = np.array(x0, dtype=float)
    n = len(x)
    for _ in range(sweeps):
        for i in range(n):
            s = 0.0
            for j in range(n):
                if j != i:
                    s += A[i, j] * x[j]
            x[i] = (b[i] - s) / A[i, i]
    return x


def lasso_ista(X, W, sparsity, iterations):
    """argmin_H sparsity sum|H| + ||X - W^T H||^2 by proximal gradient (ISTA), a different algorithm."""
    H = np.zeros((W.shape[0], X.shape[1]))
    L = 2 * np.linalg.eigvalsh(W @ W.T).max()  # Lipschitz constant of the smooth part's gradient
    for _ in range(iterations):
        grad = -2 * W @ (X - W.T @ H)
        Z = H - grad / L
        H = np.sign(Z) * np.maximum(np.abs(Z) - sparsity / L, 0.0)
    return H


def sparse_coding_objective(X, W, H):
    """Eq. 8.38: sum |H_ij| + sum (X - W^T H)_ij^2."""
    return np.abs(H).sum() + ((X - W.T @ H) ** 2).sum()

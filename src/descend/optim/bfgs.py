"""BFGS and limited-memory BFGS (Deep Learning sec. 8.6.3).

Quasi-Newton methods approximate Newton's update theta* = theta_0 - H^{-1} g (eq. 8.32)
with a matrix M_t ~ H^{-1} refined by low-rank updates from what the line searches see:
the step s_t = theta_{t+1} - theta_t and the gradient change y_t = g_{t+1} - g_t (for a
quadratic, y_t = H s_t). The direction is rho_t = -M_t g_t and the update
theta_{t+1} = theta_t + epsilon* rho_t (eq. 8.33) with epsilon* from a strong-Wolfe line
search, whose curvature condition guarantees s_t.y_t > 0 and so a positive-definite M.

BFGS stores M (O(n^2) memory, "impractical for most modern deep learning models");
L-BFGS stores only the last m pairs (s_i, y_i) and applies M implicitly, beginning each
time from a scaled identity (the book's "no storage" L-BFGS is m = 1), O(mn) per step.

The book defers the formulas to textbooks; they are Nocedal & Wright, "Numerical
Optimization" (2nd ed.): the BFGS inverse update eq. 6.17, the initial scaling eq. 6.20,
L-BFGS's H_k^0 = gamma_k I with gamma_k = s.y / y.y eq. 7.20, and the product H_k g by
the compact representation of Byrd, Nocedal & Schnabel (1994), Theorem 2.2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.errors import ConfigError
from descend.optim._common import check_positive
from descend.optim.line_search import LineSearchOptimizer

__all__ = ["BFGS", "LBFGS", "lbfgs_inverse_hessian_product"]


def _curvature_ok(s: Tensor, y: Tensor) -> bool:
    """s.y > 0 (strictly, relative to |s||y|): the update keeps M positive definite."""
    sy = float(s.dot(y))
    return sy > 1e-10 * float(s.norm()) * float(y.norm())


class BFGS(LineSearchOptimizer):
    r"""BFGS (sec. 8.6.3) with a strong-Wolfe line search, full-batch, as a torch Optimizer.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{initial parameters } \theta_0 \text{; } M_0 = I \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \rho_t \leftarrow -M_t g_t && \text{descent direction} \\
        &\quad \epsilon^* \leftarrow \text{strong Wolfe line search along } \rho_t
            && c_1 = 10^{-4},\ c_2 = 0.9 \text{, first trial } 1 \\
        &\quad s_t \leftarrow \epsilon^* \rho_t,\quad \theta_{t+1} \leftarrow \theta_t + s_t,\quad
            y_t \leftarrow g_{t+1} - g_t && \text{(8.33)} \\
        &\quad \text{before the first update: } M_0 \leftarrow \frac{y_t^\top s_t}{y_t^\top y_t} I
            && \text{N\&W (6.20)} \\
        &\quad M_{t+1} \leftarrow (I - r_t s_t y_t^\top) M_t (I - r_t y_t s_t^\top) + r_t s_t s_t^\top,
            \quad r_t = \frac{1}{y_t^\top s_t} && \text{N\&W (6.17)} \\
        &\textbf{end while}
        \end{aligned}

    The update is applied as three rank-one updates with :math:`M y` (:math:`O(n^2)`, never
    the :math:`O(n^3)` matrix products of the textbook form). A pair with
    :math:`s^\top y \le 0` (possible only when the line search failed) is skipped.

    Args: as ``NonlinearCG`` (lr scales the first trial step; max_iter / max_eval per
    ``step``; tolerance_grad on :math:`\max_i |g_i|`; tolerance_change on loss and step),
    plus ``initial_scaling`` (eq. 6.20; False keeps :math:`M_0 = I` as SciPy does).

    Where SciPy differs: ``minimize(method="BFGS")`` keeps :math:`M_0 = I`, forms the update
    with two :math:`n \times n` matrix products (:math:`O(n^3)`), and its first trial step is
    :math:`\min(1, 1.01 / \lVert g \rVert)`.
    Full-batch; DDP-safe only if the closure all-reduces the loss and gradient.
    """

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, line_search: str = "strong-wolfe",
                 c1: float = 1e-4, c2: float = 0.9, initial_scaling: bool = True) -> None:
        defaults = dict(lr=check_positive("learning rate", lr), initial_scaling=bool(initial_scaling))
        super().__init__(params, defaults, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, line_search=line_search, c1=c1, c2=c2)

    def _direction(self, state: dict, g: Tensor) -> Tensor:
        M = state.get("inverse_hessian")
        return g.neg() if M is None else torch.mv(M, g).neg_()

    def _remember(self, state: dict, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        if not _curvature_ok(s, y):
            return
        M = state.get("inverse_hessian")
        sy = float(s.dot(y))
        if M is None:
            scale = sy / float(y.dot(y)) if self.param_groups[0]["initial_scaling"] else 1.0
            M = torch.diag(torch.full_like(s, scale))
        r = 1.0 / sy
        My = torch.mv(M, y)
        yMy = float(y.dot(My))
        # (I - r s y^T) M (I - r y s^T) + r s s^T  =  M - r (My s^T + s My^T) + (r^2 yMy + r) s s^T
        M.addr_(s, s, alpha=r * r * yMy + r)
        M.addr_(My, s, alpha=-r)
        M.addr_(s, My, alpha=-r)
        state["inverse_hessian"] = M

    def _reset(self, state: dict) -> None:
        state.pop("inverse_hessian", None)


def lbfgs_inverse_hessian_product(g: Tensor, pairs: Tensor) -> Tensor:
    """H_k g for the L-BFGS inverse-Hessian approximation of the stored pairs.

    ``pairs`` is (2, m, n): ``pairs[0]`` = S (rows s_i, oldest first), ``pairs[1]`` = Y (rows y_i).
    Compact representation (Byrd, Nocedal & Schnabel 1994, Theorem 2.2), with H^0 = gamma I,
    gamma = s_k.y_k / y_k.y_k (the newest pair; N&W eq. 7.20):

        H g = gamma g + S^T p - gamma Y^T c,   c = R^{-1} (S g),
        p = R^{-T} ((D + gamma Y Y^T) c - gamma Y g)

    with R the upper triangle of S Y^T (R_ij = s_i.y_j, i <= j) and D its diagonal. The
    same vector as the two-loop recursion (N&W Algorithm 7.4), but as three products with
    the (2m, n) history (its Gram matrix, its product with g, and back) plus m x m algebra,
    so there is no Python loop over the m pairs.
    """
    k = pairs.shape[1]
    P = pairs.reshape(2 * k, -1)  # [S; Y]
    G = P @ P.T  # [[S S^T, S Y^T], [Y S^T, Y Y^T]]
    SY, YY = G[:k, k:], G[k:, k:]
    gamma = SY[-1, -1] / YY[-1, -1]
    R = torch.triu(SY)
    ab = torch.mv(P, g)
    a, b = ab[:k], ab[k:]
    c = torch.linalg.solve_triangular(R, a.unsqueeze(1), upper=True).squeeze(1)
    rhs = torch.diagonal(SY) * c + gamma * (torch.mv(YY, c) - b)
    p = torch.linalg.solve_triangular(R.T, rhs.unsqueeze(1), upper=False).squeeze(1)
    return torch.mv(P.T, torch.cat([p, -gamma * c])).add_(g * gamma)


class LBFGS(LineSearchOptimizer):
    r"""Limited-memory BFGS (sec. 8.6.3) with a bounded memory of m pairs, full-batch.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{initial parameters } \theta_0 \text{, memory } m \ge 1 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \rho_t \leftarrow -H_t g_t
            && H_t \text{ from the last } m \text{ pairs } (s_i, y_i),\ H^0 = \gamma_t I \\
        &\quad \epsilon^* \leftarrow \text{strong Wolfe line search along } \rho_t
            && c_1 = 10^{-4},\ c_2 = 0.9 \text{, first trial } 1 \\
        &\quad s_t \leftarrow \epsilon^* \rho_t,\quad \theta_{t+1} \leftarrow \theta_t + s_t,\quad
            y_t \leftarrow g_{t+1} - g_t \\
        &\quad \text{store } (s_t, y_t) \text{; drop the oldest pair beyond } m \\
        &\textbf{end while}
        \end{aligned}

    with :math:`\gamma_t = s_{t-1}^\top y_{t-1} / y_{t-1}^\top y_{t-1}` (N&W eq. 7.20).
    :math:`H_t g` is computed by ``lbfgs_inverse_hessian_product`` (compact form),
    :math:`O(m^2 n)` per step: a few BLAS calls, no Python loop over the pairs. State:
    ``pairs``, one (2, k, n) tensor, :math:`k \le m`: ``pairs[0]`` holds :math:`s_i`,
    ``pairs[1]`` :math:`y_i`, oldest first.

    Args: as ``BFGS``, with ``history_size`` = m (default 10, SciPy's L-BFGS-B default;
    torch's LBFGS uses 100).

    Where PyTorch differs: ``torch.optim.LBFGS`` runs the two-loop recursion in Python
    (2m small vector operations per step), its first step is
    :math:`\min(1, 1 / \lVert g \rVert_1)` lr and
    without ``line_search_fn="strong_wolfe"`` it takes fixed steps. Where SciPy differs:
    L-BFGS-B (c1 = 1e-3, c2 = 0.9) also handles bounds and stops on a relative decrease
    ``ftol``. Full-batch; DDP-safe only if the closure all-reduces the loss and gradient.
    """

    def __init__(self, params, lr: float = 1.0, history_size: int = 10, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 line_search: str = "strong-wolfe", c1: float = 1e-4, c2: float = 0.9) -> None:
        lr = check_positive("learning rate", lr)
        if not isinstance(history_size, int) or isinstance(history_size, bool) or history_size < 1:
            raise ConfigError(
                f"Invalid history_size: {history_size!r}; the L-BFGS memory m must be an integer >= 1 "
                "(typical: 5-20)"
            )
        super().__init__(params, dict(lr=lr, history_size=history_size), max_iter=max_iter, max_eval=max_eval,
                         tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                         line_search=line_search, c1=c1, c2=c2)

    def _direction(self, state: dict, g: Tensor) -> Tensor:
        if "pairs" not in state:
            return g.neg()
        return lbfgs_inverse_hessian_product(g, state["pairs"]).neg_()

    def _remember(self, state: dict, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        new = torch.stack([s, y])
        sy, yy = torch.mv(new, y).tolist()
        if not sy > 1e-10 * yy:  # curvature condition s.y > 0 (relative), as L-BFGS-B
            return
        new = new.unsqueeze(1)  # (2, 1, n)
        if "pairs" not in state:
            state["pairs"] = new
            return
        old = state["pairs"]
        if old.shape[1] >= self.param_groups[0]["history_size"]:
            old = old[:, 1:]  # bounded memory: forget the oldest pair
        state["pairs"] = torch.cat([old, new], dim=1)

    def _reset(self, state: dict) -> None:
        state.pop("pairs", None)

r"""Nonlinear conjugate gradients (Deep Learning sec. 8.6.2, Algorithm 8.9; cs189 notes).

Steepest descent with exact line searches zig-zags (fig. 8.6): each new gradient is
orthogonal to the previous direction and undoes part of its progress. Conjugate
gradients instead descends along

.. math::

    \rho_t = -g_t + \beta_t \rho_{t-1} \qquad \text{(8.29)}

chosen conjugate to the previous direction (:math:`\rho_t^\top H \rho_{t-1} = 0`), with

.. math::

    \begin{aligned}
    &\text{Fletcher-Reeves:} && \beta_t = \frac{g_t^\top g_t}{g_{t-1}^\top g_{t-1}} && \text{(8.30)} \\
    &\text{Polak-Ribi\`ere:} && \beta_t = \frac{(g_t - g_{t-1})^\top g_t}{g_{t-1}^\top g_{t-1}} && \text{(8.31)} \\
    &\text{PR+:} && \beta_t = \max(0, \beta_t^{\text{PR}})
    \end{aligned}

(PR+: Powell, 1986; a negative :math:`\beta` is a restart), the default, as in SciPy's
``method="CG"``.

On a k-dimensional positive-definite quadratic with exact line searches this takes at
most k line searches (sec. 8.6.2). On a network's loss ("nonlinear conjugate
gradients") the directions drift from conjugacy, so the method restarts
(:math:`\beta_t = 0`): every ``restart_every`` iterations ("for example if t is a multiple
of some constant k", Algorithm 8.9), and when conjugacy is visibly lost, i.e. consecutive
gradients are far from orthogonal: :math:`|g_t^\top g_{t-1}| \ge \nu\, g_t^\top g_t` with
:math:`\nu` = ``restart_threshold`` (Powell's restart, Nocedal & Wright eq. 5.52), or when
:math:`\rho_t` is not a descent direction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.errors import ConfigError
from descend.optim._common import check_positive
from descend.optim.line_search import LineSearchOptimizer

__all__ = ["NonlinearCG", "BETAS"]

BETAS = ("fletcher-reeves", "polak-ribiere", "polak-ribiere+")


class NonlinearCG(LineSearchOptimizer):
    r"""The conjugate gradient method, Algorithm 8.9, full-batch, as a torch Optimizer.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{initial parameters } \theta_0 \text{, training set of } m \text{ examples} \\
        &\rho_0 \leftarrow 0,\ g_0 \leftarrow 0,\ t \leftarrow 1 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad g_t \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta_t), y^{(i)})
            && \text{the closure} \\
        &\quad \beta_t \leftarrow \text{(8.30), (8.31) or PR+; } 0 \text{ on a restart} \\
        &\quad \rho_t \leftarrow -g_t + \beta_t \rho_{t-1} && \text{(8.29)} \\
        &\quad \epsilon^* \leftarrow \operatorname*{arg\,min}_\epsilon \frac{1}{m} \sum_{i=1}^m
            L(f(x^{(i)}; \theta_t + \epsilon \rho_t), y^{(i)})
            && \text{strong Wolfe, } c_2 = 0.1 \text{; or exact} \\
        &\quad \theta_{t+1} \leftarrow \theta_t + \epsilon^* \rho_t \\
        &\quad t \leftarrow t + 1 \\
        &\textbf{end while}
        \end{aligned}

    with the choices of :math:`\beta_t` (``beta``)

    .. math::

        \begin{aligned}
        &\text{Fletcher-Reeves (8.30):} && \beta_t = \frac{g_t^\top g_t}{g_{t-1}^\top g_{t-1}} \\
        &\text{Polak-Ribi\`ere (8.31):} && \beta_t = \frac{(g_t - g_{t-1})^\top g_t}{g_{t-1}^\top g_{t-1}} \\
        &\text{PR+ (Powell, 1986):} && \beta_t = \max\Bigl(0, \frac{(g_t - g_{t-1})^\top g_t}{g_{t-1}^\top g_{t-1}}\Bigr)
        \end{aligned}

    and a restart (:math:`\beta_t = 0`) every ``restart_every`` iterations, when
    :math:`|g_t^\top g_{t-1}| \ge \nu\, g_t^\top g_t` (Powell's test, ``restart_threshold``)
    or when :math:`\rho_t` is not a descent direction.

    Args:
        params: the parameters (one group).
        lr: multiplies the first trial step of every line search.
        beta: "polak-ribiere+" (default), "polak-ribiere" or "fletcher-reeves".
        restart_every: k, restart every k iterations (None: every n = number of parameters,
            the period after which CG on a quadratic has converged).
        restart_threshold: Powell's :math:`\nu` (0.2); None disables the orthogonality test.
        max_iter / max_eval: iterations / closure calls per ``step`` (as torch's LBFGS).
        tolerance_grad: stop when :math:`\max_i |g_i| \le` ``tolerance_grad``.
        tolerance_change: stop when the loss or the step changes by less than this.
        line_search: "strong-wolfe", or "exact", the analytic step of Algorithm 8.9 for a
            quadratic (:math:`\epsilon^* = -g^\top \rho / \rho^\top H \rho`, with
            :math:`H \rho` from the gradient at :math:`\theta + \rho`; two closure calls per
            iteration; wrong for non-quadratics).
        c1, c2: strong Wolfe constants (c2 < 1/2 keeps Fletcher-Reeves directions descent
            directions; N&W sec. 5.2).

    The first trial step of each line search assumes the same first-order decrease as the
    last step (Nocedal & Wright eq. 3.60). Where SciPy differs: ``minimize(method="CG")``
    is PR+ with :math:`c_2 = 0.4`, a first trial
    :math:`\min(1, 2.02 (f_t - f_{t-1}) / g^\top \rho)` and no restarts besides
    :math:`\beta < 0`. Full-batch only ("batch descent only", cs189); DDP-safe only
    if the closure all-reduces the loss and gradient.
    """

    line_searches = ("strong-wolfe", "exact")

    def __init__(self, params, lr: float = 1.0, beta: str = "polak-ribiere+", restart_every: int | None = None,
                 restart_threshold: float | None = 0.2, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, line_search: str = "strong-wolfe",
                 c1: float = 1e-4, c2: float = 0.1) -> None:
        lr = check_positive("learning rate", lr)
        if beta not in BETAS:
            raise ConfigError(f"Invalid beta: {beta!r}; choose one of {', '.join(BETAS)}")
        if restart_every is not None and (not isinstance(restart_every, int) or restart_every < 1):
            raise ConfigError(f"Invalid restart_every: {restart_every!r}; it must be an integer >= 1 or None")
        if restart_threshold is not None and not (0 < restart_threshold <= 1):
            raise ConfigError(f"Invalid restart_threshold: {restart_threshold!r}; it must be in (0, 1] or None")
        defaults = dict(lr=lr, beta=beta, restart_every=restart_every, restart_threshold=restart_threshold)
        super().__init__(params, defaults, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, line_search=line_search, c1=c1, c2=c2)

    def _direction(self, state: dict, g: Tensor) -> Tensor:
        group = self.param_groups[0]
        d_prev, g_prev = state.get("d"), state.get("prev_flat_grad")
        period = group["restart_every"] or g.numel()
        since = state.get("since_restart", 0)
        if d_prev is None or since + 1 >= period:
            state["since_restart"] = 0
            return g.neg()
        gg_prev = float(g_prev.dot(g_prev))
        gg = float(g.dot(g))
        nu = group["restart_threshold"]
        if nu is not None and abs(float(g.dot(g_prev))) >= nu * gg:  # conjugacy lost
            state["since_restart"] = 0
            return g.neg()
        if group["beta"] == "fletcher-reeves":
            beta = gg / gg_prev  # eq. 8.30
        else:
            beta = (gg - float(g_prev.dot(g))) / gg_prev  # eq. 8.31
            if group["beta"] == "polak-ribiere+":
                beta = max(beta, 0.0)
        state["since_restart"] = since + 1 if beta != 0.0 else 0
        return torch.add(g.neg(), d_prev, alpha=beta)

    def _remember(self, state: dict, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        pass  # CG keeps only the last direction and gradient (stored by the loop)

    def _reset(self, state: dict) -> None:
        state.pop("d", None)
        state["since_restart"] = 0

    def _initial_step(self, state: dict, loss: float, derivative: float, g: Tensor) -> float:
        lr = self.param_groups[0]["lr"]
        if state["n_iter"] == 0 or "prev_step" not in state:
            return min(1.0, 1.0 / max(float(g.norm()), 1e-300)) * lr
        # same first-order change as the previous step: a0 = a_prev g_prev.d_prev / g.d  (N&W eq. 3.60)
        return state["prev_step"] * state["prev_derivative"] / derivative * lr

r"""Newton's method, damped (Levenberg-Marquardt), truncated (Newton-CG) and saddle-free.

Deep Learning sec. 8.6.1: Newton's method minimizes the second-order Taylor model
(eq. 8.26) at each step, :math:`\theta^* = \theta_0 - H^{-1} g` (eq. 8.27), iterated as
Algorithm 8.8.
It is attracted to any critical point, saddle points included (sec. 8.2.3), and its
k x k Hessian limits it to small models. Three remedies are here:

* ``Newton``: Algorithm 8.8 with the regularized update of eq. 8.28,
  :math:`\theta^* = \theta_0 - [H + \alpha I]^{-1} g` (Levenberg-Marquardt), and an adaptive
  rule for :math:`\alpha`: the ratio :math:`\rho` = (actual change of J) / (change predicted
  by the model) shrinks :math:`\alpha` when the model is trusted (:math:`\rho > 3/4`) and
  grows it when not (:math:`\rho < 1/4`); a step
  that does not decrease J is rejected and retried with a larger alpha (Marquardt, 1963;
  Nocedal & Wright sec. 10.3). With ``adaptive=False, damping=0`` it is Algorithm 8.8 as
  printed.
* ``NewtonCG``: for large models, the Newton system :math:`(H + \alpha I) p = -g` is solved
  only approximately by linear conjugate gradients on Hessian-vector products (truncated
  at a residual :math:`\min(0.5, \sqrt{\lVert g \rVert})\, \lVert g \rVert` or at negative
  curvature; Nocedal & Wright Algorithm 7.1), :math:`H` never formed, followed by a
  strong-Wolfe line search.
* ``SaddleFreeNewton``: sec. 8.2.3 (Dauphin et al., 2014): with
  :math:`H = Q \operatorname{diag}(\lambda) Q^\top`, step
  :math:`-Q \operatorname{diag}\bigl(1 / (|\lambda| + \alpha)\bigr) Q^\top g`. Along
  negative-curvature directions it moves downhill instead of towards the saddle point.
  Small models (eigen-decomposition).

Exact curvature needs the closure's gradient to carry its graph: call
``loss.backward(create_graph=True)`` (or use ``model_closure(..., create_graph=True)``).
The classes say so with ``needs_create_graph = True``, and descend's Trainer then builds
such closures itself (in a single process). ``NewtonCG`` also works with an
ordinary closure, using finite differences of gradients,
:math:`H v \approx (g(\theta + h v) - g(\theta)) / h`,
one extra closure call per product (as SciPy's Newton-CG without ``hessp``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from descend.errors import ConfigError, Diverged, OptimizationError
from descend.optim._common import check_nonnegative, check_positive
from descend.optim.curvature import HessianOperator
from descend.optim.line_search import (
    ClosureObjective,
    LineSearchOptimizer,
    check_finite,
    check_stopping_rule,
    check_wolfe_constants,
    strong_wolfe,
)

__all__ = ["Newton", "SaddleFreeNewton", "NewtonCG", "truncated_cg"]


def _needs_graph(owner: str) -> OptimizationError:
    return OptimizationError(
        f"{owner} needs second derivatives, but the closure's gradients carry no graph. In the closure call "
        "loss.backward(create_graph=True) (or build it with descend.optim.model_closure(..., create_graph=True))"
    )


class Newton(torch.optim.Optimizer):
    r"""Newton's method, Algorithm 8.8, with Levenberg-Marquardt damping (eq. 8.28), full-batch.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{initial parameter } \theta_0 \text{, training set of } m
            \text{ examples, damping } \alpha \ge 0 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)})
            && \text{the closure} \\
        &\quad H \leftarrow \frac{1}{m} \nabla_\theta^2 \sum_i L(f(x^{(i)}; \theta), y^{(i)})
            && \text{double back-propagation} \\
        &\quad \Delta\theta \leftarrow -[H + \alpha I]^{-1} g
            && \text{(8.28); } \alpha = 0 \text{: (8.27)} \\
        &\quad \textbf{if } \text{adaptive: }
            \rho \leftarrow \frac{J(\theta + \Delta\theta) - J(\theta)}
            {g^\top \Delta\theta + \frac{1}{2} \Delta\theta^\top H \Delta\theta} \\
        &\qquad \rho < \tfrac{1}{4}: \alpha \leftarrow \alpha \cdot \text{factor};\quad
            \rho > \tfrac{3}{4}: \alpha \leftarrow \alpha / \text{factor} \\
        &\qquad \text{accept only if } J \text{ decreased (else retry with the larger } \alpha
            \text{); raise } \alpha \text{ until } H + \alpha I \succ 0 \\
        &\quad \textbf{if } \text{line search: } \theta \leftarrow \theta + \epsilon^* \Delta\theta
            && \text{strong Wolfe, first trial } 1 \\
        &\quad \textbf{else: } \theta \leftarrow \theta + \epsilon\, \Delta\theta
            && \epsilon = \texttt{lr} \\
        &\textbf{end while}
        \end{aligned}

    Args:
        params: the parameters (one group); :math:`k` = their total size, :math:`H` is
            :math:`k \times k`.
        lr: step multiplier :math:`\epsilon` (1: the full Newton step).
        damping: the initial :math:`\alpha` of eq. 8.28.
        adaptive: adapt :math:`\alpha` by the ratio rule above (the default); False applies
            the fixed-:math:`\alpha` update every iteration, accepted unconditionally
            (Algorithm 8.8).
        damping_factor: the factor :math:`\alpha` is multiplied / divided by (> 1).
        line_search: None (the adaptive rule or the plain update) or "strong-wolfe" (modified
            Newton: :math:`\alpha` raised until :math:`H + \alpha I` is positive definite,
            then a line search).
        max_iter, max_eval, tolerance_grad, tolerance_change: as ``LBFGS``.

    Where PyTorch differs: PyTorch has no Newton optimizer; ``torch.autograd.functional.hessian``
    forms H of a pure function. Small models only (:math:`O(k^2)` memory, :math:`O(k^3)` per
    step).
    Full-batch; DDP-safe only if the closure all-reduces loss and gradient (and their graph,
    which DDP does not do: use it single-process).
    """

    needs_closure = True
    needs_create_graph = True

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, adaptive: bool = True,
                 damping_factor: float = 2.0, line_search: str | None = None, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 c1: float = 1e-4, c2: float = 0.9) -> None:
        lr = check_positive("learning rate", lr)  # the Newton step multiplier
        damping = check_nonnegative("damping", damping)  # the alpha of eq. 8.28
        if not (isinstance(damping_factor, (int, float)) and damping_factor > 1):
            raise ConfigError(f"Invalid damping_factor: {damping_factor!r}; it must be > 1 (e.g. 2)")
        if line_search not in (None, "strong-wolfe"):
            raise ConfigError(f"Invalid line_search: {line_search!r}; use None or 'strong-wolfe'")
        max_eval = check_stopping_rule(max_iter, max_eval, tolerance_grad, tolerance_change, spare_evals=5)
        check_wolfe_constants(c1, c2)
        defaults = dict(lr=lr, damping=damping, adaptive=bool(adaptive), damping_factor=damping_factor,
                        line_search=line_search, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, c1=c1, c2=c2)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ConfigError(f"{type(self).__name__} takes one parameter group, got {len(self.param_groups)}")
        self._params = list(self.param_groups[0]["params"])
        self.status = "not started"

    # -- the step of one method: Newton's, or saddle-free Newton's ------------------
    def _solve(self, H: Tensor, g: Tensor, alpha: float, require_pd: bool) -> Tensor | None:
        """Delta = -(H + alpha I)^{-1} g; None if ``require_pd`` and H + alpha I is not positive definite."""
        A = H + alpha * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        if require_pd:
            L, info = torch.linalg.cholesky_ex(A)
            if int(info) != 0:
                return None
            return torch.cholesky_solve(g.neg().unsqueeze(1), L).squeeze(1)
        try:
            return torch.linalg.solve(A, g.neg())
        except RuntimeError:
            raise OptimizationError(
                f"{type(self).__name__}: H + alpha I is singular (alpha = {alpha:g}); use damping > 0 "
                "(eq. 8.28) or adaptive=True"
            ) from None

    def _model(self, H: Tensor, g: Tensor, s: Tensor) -> float:
        """The change of J the quadratic model (eq. 8.26) predicts for the step s."""
        return float(g.dot(s) + 0.5 * s.dot(torch.mv(H, s)))

    def _pd_damping(self, H: Tensor, alpha: float, factor: float) -> float:
        """A larger alpha that makes H + alpha I positive definite."""
        lam_min = float(torch.linalg.eigvalsh(H)[0])
        scale = max(float(H.diagonal().abs().mean()), 1e-12)
        return max(alpha * factor, -lam_min + 1e-6 * scale, 1e-3 * scale)

    # -- the loop ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        owner = type(self).__name__
        obj = ClosureObjective(self._params, closure, owner)
        state = self.state[self._params[0]]
        state.setdefault("n_iter", 0)
        state.setdefault("func_evals", 0)
        state.setdefault("damping", float(group["damping"]))
        alpha = state["damping"]
        lr, factor = group["lr"], group["damping_factor"]

        x = obj.get_x()
        f, g = obj.evaluate()
        check_finite(owner, f, g)
        self.status = "max_iter"
        for _ in range(group["max_iter"]):
            if float(g.abs().max()) <= group["tolerance_grad"]:
                self.status = "converged: gradient"
                break
            if obj.graph_grads is None:
                raise _needs_graph(owner)
            with torch.enable_grad():
                H = HessianOperator.from_grads(obj.graph_grads, self._params).dense()
            f_old = f
            if group["line_search"] == "strong-wolfe":
                delta = self._solve(H, g, alpha, require_pd=True)
                a_pd = alpha
                while delta is None:
                    a_pd = self._pd_damping(H, a_pd, factor)
                    delta = self._solve(H, g, a_pd, require_pd=True)
                ls = strong_wolfe(obj.line(x, delta), f, float(g.dot(delta)), g, lr, c1=group["c1"], c2=group["c2"],
                                  max_evals=25, tolerance_change=group["tolerance_change"],
                                  direction_norm=float(delta.norm()))
                if ls.step == 0.0:
                    obj.set_x(x)
                    self.status = "line search failed"
                    break
                s = delta.mul(ls.step)
                x = torch.add(x, delta, alpha=ls.step)  # the same operation as the line search's trial
                if obj.last_step != ls.step:  # the search evaluated past the accepted point
                    f, g = obj.at(x)
                else:
                    f, g = ls.loss, ls.grad
            elif group["adaptive"]:
                accepted = False
                while obj.evals < group["max_eval"]:
                    delta = self._solve(H, g, alpha, require_pd=True)
                    if delta is None:
                        alpha = self._pd_damping(H, alpha, factor)
                        continue
                    s = delta.mul(lr)
                    predicted = self._model(H, g, s)
                    f_new, g_new = obj.at(x + s)
                    # changes below round-off can not be measured: then trust the model
                    noise = 10 * torch.finfo(g.dtype).eps * max(1.0, abs(f))
                    ok = math.isfinite(f_new) and (f_new < f or (f_new - f <= noise and -predicted <= noise))
                    if not ok:
                        rho = -math.inf
                    elif -predicted <= noise:
                        rho = 1.0
                    else:
                        rho = (f_new - f) / predicted
                    if rho < 0.25:
                        scale = max(float(H.diagonal().abs().mean()), 1e-12)
                        alpha = max(alpha * factor, 1e-3 * scale)
                    elif rho > 0.75:
                        alpha = alpha / factor
                    if ok:
                        accepted = True
                        x, f, g = x + s, f_new, g_new
                        break
                if not accepted:
                    obj.set_x(x)
                    obj.evaluate()  # the graph at the current point again
                    self.status = "max_eval"
                    break
            else:
                delta = self._solve(H, g, alpha, require_pd=False)
                s = delta.mul(lr)
                x = x + s
                f, g = obj.at(x)
                if not math.isfinite(f):
                    raise Diverged(
                        f"{owner}: the undamped step made the loss {f}; use adaptive=True or damping > 0 (eq. 8.28)"
                    )
            state["n_iter"] += 1
            if float(g.abs().max()) <= group["tolerance_grad"]:
                self.status = "converged: gradient"
                break
            if abs(f - f_old) < group["tolerance_change"] or float(s.abs().max()) <= group["tolerance_change"]:
                self.status = "converged: change"
                break
            if obj.evals >= group["max_eval"]:
                self.status = "max_eval"
                break
        state["damping"] = alpha
        state["func_evals"] += obj.evals
        for p, gv in zip(self._params, g.split([p.numel() for p in self._params])):
            if p.grad is not None:
                p.grad.copy_(gv.view_as(p))
        return obj.first_loss


class SaddleFreeNewton(Newton):
    r"""Saddle-free Newton (sec. 8.2.3; Dauphin et al., 2014), full-batch, small models.

    .. math::

        \begin{aligned}
        H &= Q \operatorname{diag}(\lambda) Q^\top && \text{eigen-decomposition} \\
        |H| &= Q \operatorname{diag}(|\lambda|) Q^\top \\
        \Delta\theta &= -[|H| + \alpha I]^{-1} g
            = -Q \operatorname{diag}\Bigl(\frac{1}{|\lambda| + \alpha}\Bigr) Q^\top g
        \end{aligned}

    Newton's step rescales each eigen-direction by :math:`1/\lambda`: where
    :math:`\lambda < 0` it moves uphill, towards the saddle point. Using :math:`|\lambda|`
    keeps Newton's rescaling but always moves downhill. The adaptive rule (as ``Newton``)
    uses the model :math:`g^\top \Delta\theta + \frac{1}{2} \Delta\theta^\top |H| \Delta\theta`;
    directions with :math:`|\lambda| + \alpha = 0` are left out (pseudo-inverse). Arguments as ``Newton``; ``damping`` defaults to 0. Where PyTorch
    differs: PyTorch has no saddle-free Newton. Full-batch, small models, single-process
    (DDP does not all-reduce the second backward pass that forms H).
    """

    def _solve(self, H: Tensor, g: Tensor, alpha: float, require_pd: bool) -> Tensor | None:
        lam, Q = torch.linalg.eigh(H)
        self._abs_hessian = (Q * lam.abs()) @ Q.T
        denom = lam.abs() + alpha
        tiny = torch.finfo(H.dtype).eps * max(float(lam.abs().max()), 1e-300) * H.shape[0]
        inv = torch.where(denom > tiny, 1.0 / denom.clamp_min(tiny), torch.zeros_like(denom))
        return -(Q @ (inv * (Q.T @ g)))

    def _model(self, H: Tensor, g: Tensor, s: Tensor) -> float:
        return float(g.dot(s) + 0.5 * s.dot(torch.mv(self._abs_hessian, s)))


def truncated_cg(
    hvp: Callable[[Tensor], Tensor],
    g: Tensor,
    *,
    damping: float = 0.0,
    tolerance: float | None = None,
    max_iter: int | None = None,
) -> tuple[Tensor, int, bool]:
    r"""Approximately solve :math:`(H + \alpha I) p = -g` (:math:`\alpha` = ``damping``) by
    linear CG from :math:`p = 0` (N&W Algorithm 7.1).

    Algorithm 8.9 with exact line searches, applied to the quadratic model of eq. 8.26:
    stops when the residual :math:`\lVert (H + \alpha I) p + g \rVert` is below ``tolerance``
    (default :math:`\min(0.5, \sqrt{\lVert g \rVert})\, \lVert g \rVert`, which gives
    Newton-CG superlinear convergence), or when a direction of non-positive curvature
    appears (returns the current :math:`p`; if that happens at once,
    :math:`-\bigl(g^\top g / |g^\top H g|\bigr)\, g`, the steepest-descent step sized by the
    magnitude of the curvature along :math:`g`). Returns (p, number of H v products, negative curvature met).
    """
    gnorm = float(g.norm())
    if tolerance is None:
        tolerance = min(0.5, math.sqrt(gnorm)) * gnorm
    if max_iter is None:
        max_iter = 2 * g.numel()
    z = torch.zeros_like(g)
    r = g.clone()  # residual (H + damping I) z + g
    d = g.neg()
    rr = float(r.dot(r))
    for j in range(max_iter):
        Hd = hvp(d)
        if damping:
            Hd = Hd.add(d, alpha=damping)
        dHd = float(d.dot(Hd))
        if dHd <= 0.0 or not math.isfinite(dHd):
            if j > 0:
                return z, j + 1, True
            # at once: steepest descent, scaled as if the curvature along g were |g^T H g|
            scale = rr / abs(dHd) if dHd < 0.0 and math.isfinite(dHd) else 1.0
            return g.mul(-scale), j + 1, True
        a = rr / dHd
        z.add_(d, alpha=a)
        r.add_(Hd, alpha=a)
        rr_new = float(r.dot(r))
        if math.sqrt(rr_new) <= tolerance:
            return z, j + 1, False
        d.mul_(rr_new / rr).sub_(r)
        rr = rr_new
    return z, max_iter, False


class NewtonCG(LineSearchOptimizer):
    r"""Truncated Newton / Newton-CG (sec. 8.6.1-8.6.2 for large models), full-batch.

    .. math::

        \begin{aligned}
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad g \leftarrow \nabla_\theta J(\theta) \\
        &\quad p \approx -(H + \alpha I)^{-1} g
            && \text{truncated linear CG on products } Hv \text{ (} H \text{ never formed)} \\
        &\quad \epsilon^* \leftarrow \text{strong Wolfe line search along } p
            && \text{first trial } \min\bigl(1, 2.02 (J_t - J_{t-1}) / g^\top p\bigr) \\
        &\quad \theta \leftarrow \theta + \epsilon^* p \\
        &\textbf{end while}
        \end{aligned}

    CG stops at a residual :math:`\min(0.5, \sqrt{\lVert g \rVert})\, \lVert g \rVert` or at
    negative curvature (Nocedal & Wright Algorithm 7.1).
    :math:`Hv` is exact (double back-propagation) when the closure back-propagates with
    ``create_graph=True``; otherwise a forward difference of gradients (one closure call
    per product, counted in ``func_evals``). State: ``hvp_evals`` counts the products.

    Args: as ``LBFGS``, plus ``damping`` (:math:`\alpha \ge 0`, eq. 8.28 inside CG) and
    ``cg_max_iter`` (default :math:`2k` for :math:`k` parameters).

    Where SciPy differs: ``minimize(method="Newton-CG")`` measures the CG residual in the
    L1 norm and stops on the L1 size of the step (``xtol``), not on the gradient.
    Full-batch; DDP-safe only if the closure all-reduces loss and gradient (with exact H v,
    single-process only: DDP does not all-reduce the second backward pass).
    """

    needs_create_graph = True

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, cg_max_iter: int | None = None,
                 max_iter: int = 20, max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, line_search: str = "strong-wolfe", c1: float = 1e-4,
                 c2: float = 0.9) -> None:
        lr = check_positive("learning rate", lr)  # the first trial step
        damping = check_nonnegative("damping", damping)  # the alpha of eq. 8.28
        if cg_max_iter is not None and (not isinstance(cg_max_iter, int) or cg_max_iter < 1):
            raise ConfigError(f"Invalid cg_max_iter: {cg_max_iter!r}; it must be an integer >= 1 or None")
        defaults = dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter)
        super().__init__(params, defaults, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, line_search=line_search, c1=c1, c2=c2)

    def _direction(self, state: dict, g: Tensor) -> Tensor:
        obj = self._objective
        group = self.param_groups[0]
        if obj.graph_grads is not None:
            op = HessianOperator.from_grads(obj.graph_grads, self._params)

            def hvp(v: Tensor) -> Tensor:
                with torch.enable_grad():
                    return op(v)
        else:
            x = obj.get_x()
            eps = math.sqrt(torch.finfo(g.dtype).eps)
            xnorm = float(x.norm())

            def hvp(v: Tensor) -> Tensor:  # forward difference of gradients
                h = eps * (1.0 + xnorm) / max(float(v.norm()), 1e-300)
                _, g1 = obj.at(torch.add(x, v, alpha=h))
                return (g1 - g) / h

        p, n_hvp, _ = truncated_cg(hvp, g, damping=group["damping"], max_iter=group["cg_max_iter"])
        if obj.graph_grads is None:
            obj.set_x(x)
        state["hvp_evals"] = state.get("hvp_evals", 0) + n_hvp
        return p

    def _remember(self, state: dict, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        pass  # Newton-CG recomputes its curvature at every point

    def _initial_step(self, state: dict, loss: float, derivative: float, g: Tensor) -> float:
        """1 (the Newton step), unless the last decrease suggests a shorter one: the minimizer of
        the quadratic with the last change of J and this slope, min(1, 2.02 (J_t - J_{t-1}) / g.p)
        (Nocedal & Wright eq. 3.60, as SciPy's line search). Truncated CG's step overshoots
        badly where the model is poor (Rosenbrock's valley); this saves the evaluations."""
        lr = self.param_groups[0]["lr"]
        prev = state.get("prev_loss")
        if state["n_iter"] == 0 or prev is None:
            return lr
        a = 1.01 * 2.0 * (loss - prev) / derivative
        return min(1.0, a) * lr if a > 0 else lr

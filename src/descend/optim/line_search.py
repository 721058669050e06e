r"""Line searches, and the loop that every line-search method shares (Deep Learning sec. 8.6).

Algorithm 8.9 (conjugate gradients) and BFGS (sec. 8.6.3, eq. 8.33) repeat the same
three lines: choose a direction :math:`\rho_t`, perform a line search for
:math:`\epsilon^* = \operatorname*{arg\,min}_\epsilon J(\theta_t + \epsilon \rho_t)`, apply
:math:`\theta_{t+1} = \theta_t + \epsilon^* \rho_t`.
This file holds the pieces they share:

* ``strong_wolfe``: an inexact line search that returns a step satisfying the strong
  Wolfe conditions (Nocedal & Wright, "Numerical Optimization", 2nd ed., Algorithms 3.5
  and 3.6; cubic interpolation eq. 3.59)

  .. math::

      \begin{aligned}
      J(\theta + a d) &\le J(\theta) + c_1 a\, g^\top d && \text{sufficient decrease} \\
      |\nabla_\theta J(\theta + a d)^\top d| &\le c_2 |g^\top d| && \text{curvature}
      \end{aligned}

  with :math:`0 < c_1 < c_2 < 1`. The book: BFGS "can spend less time refining each line search"
  (c2 = 0.9), conjugate gradients needs a more exact one (c2 = 0.1).
* ``exact_quadratic_step``: "On a truly quadratic cost function, analytically solve for
  epsilon*" (Algorithm 8.9): :math:`\epsilon^* = -g^\top d / d^\top H d`.
* ``ClosureObjective``: J(theta) of eq. 8.25 seen through a ``torch.optim`` closure, on one
  flat parameter vector; it validates what the closure returns.
* ``LineSearchOptimizer``: the outer loop (direction, line search, update, stopping
  tests) as a ``torch.optim.Optimizer``; ``NonlinearCG``, ``BFGS`` and ``LBFGS`` only
  say how to choose the direction and what to remember.
* ``model_closure``: the closure a full-batch method needs for an ``nn.Module``.

Where PyTorch differs: ``torch.optim.LBFGS`` has a strong-Wolfe search private to it
(a port of minFunc's); this one is public, shared, handles a non-finite trial loss by
stepping back instead of failing, and reports whether the conditions hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError, Diverged, OptimizationError

__all__ = [
    "LineSearchResult",
    "strong_wolfe",
    "exact_quadratic_step",
    "ClosureObjective",
    "LineSearchOptimizer",
    "model_closure",
]


# ----------------------------------------------------------------------------- the searches


@dataclass
class LineSearchResult:
    """The accepted step a, J(theta + a d), its flat gradient and directional derivative."""

    step: float
    loss: float
    grad: Tensor
    derivative: float
    evals: int
    success: bool  # True: both strong Wolfe conditions hold at ``step``


def check_wolfe_constants(c1: float, c2: float) -> None:
    if not (0.0 < c1 < c2 < 1.0):
        raise ConfigError(
            f"Invalid line-search constants c1={c1}, c2={c2}; the strong Wolfe conditions need "
            "0 < c1 < c2 < 1 (typical: c1=1e-4 with c2=0.9 for (L-)BFGS and Newton, c2=0.1 for CG)"
        )


def check_stopping_rule(max_iter: int, max_eval: int | None, tolerance_grad: float, tolerance_change: float,
                        spare_evals: int = 0) -> int:
    """Validate the stopping rule of the full-batch optimizers and return ``max_eval``
    (default: max(5/4 max_iter, max_iter + spare_evals); 5/4 is torch.optim.LBFGS's)."""
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"Invalid max_iter: {max_iter!r}; max_iter must be an integer >= 1")
    if max_eval is None:
        max_eval = max(max_iter * 5 // 4, max_iter + spare_evals)
    if not isinstance(max_eval, int) or max_eval < 1:
        raise ConfigError(f"Invalid max_eval: {max_eval!r}; max_eval must be an integer >= 1")
    for name, v in (("tolerance_grad", tolerance_grad), ("tolerance_change", tolerance_change)):
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ConfigError(f"Invalid {name}: {v!r}; {name} must be a finite number >= 0")
    return max_eval


def _cubic_minimizer(a: float, fa: float, ga: float, b: float, fb: float, gb: float,
                     lo: float, hi: float) -> float:
    """Minimizer of the cubic through (a, fa, ga), (b, fb, gb), clamped to [lo, hi] (N&W eq. 3.59)."""
    if a == b or not all(math.isfinite(v) for v in (fa, ga, fb, gb)):
        return 0.5 * (lo + hi)
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if disc < 0.0:
        return 0.5 * (lo + hi)
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2.0 * d2
    if denom == 0.0:
        return 0.5 * (lo + hi)
    t = b - (b - a) * (gb + d2 - d1) / denom
    if not math.isfinite(t):
        return 0.5 * (lo + hi)
    return min(max(t, lo), hi)


Phi = Callable[[float], "tuple[float, Tensor, float]"]


def strong_wolfe(
    phi: Phi,
    loss0: float,
    derivative0: float,
    grad0: Tensor,
    step: float = 1.0,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    step_max: float = 1e10,
    tolerance_change: float = 1e-9,
    direction_norm: float = 1.0,
) -> LineSearchResult:
    r"""Find a step :math:`a > 0` that satisfies the strong Wolfe conditions along a direction
    :math:`d` (Nocedal & Wright eq. 3.7), with :math:`g = \nabla_\theta J(\theta)`:

    .. math::

        \begin{aligned}
        J(\theta + a d) &\le J(\theta) + c_1 a\, g^\top d && \text{sufficient decrease} \\
        |\nabla_\theta J(\theta + a d)^\top d| &\le c_2 |g^\top d| && \text{curvature}
        \end{aligned}

    ``phi(a)`` returns (:math:`J(\theta + a d)`, :math:`\nabla_\theta J(\theta + a d)` as a
    flat tensor, its dot with :math:`d`); ``loss0``, ``grad0`` and ``derivative0``
    :math:`= g^\top d < 0` describe :math:`a = 0`; ``step`` is the first trial. Bracketing (N&W Algorithm 3.5): trials grow by cubic extrapolation (at most 10x)
    until one is too long (sufficient decrease fails, or the loss rose, or is not finite)
    or the slope turns non-negative; then zoom (Algorithm 3.6) shrinks the bracket by
    safeguarded cubic interpolation. At most ``max_evals`` calls of ``phi``. If no point
    satisfies both conditions, the best point with sufficient decrease is returned with
    ``success=False`` (step 0 if there is none); the interval search also stops once the
    bracket is shorter than ``tolerance_change`` in parameter space.
    """
    check_wolfe_constants(c1, c2)
    if not derivative0 < 0.0:
        raise OptimizationError(
            f"the line-search direction is not a descent direction (g.d = {derivative0:.3g} >= 0); "
            "reset the direction to -g"
        )
    if not (math.isfinite(step) and step > 0.0):
        step = 1.0
    evals = 0
    best = (0.0, loss0, grad0, derivative0)  # lowest loss with sufficient decrease so far

    def armijo(a: float, f: float) -> bool:
        return f <= loss0 + c1 * a * derivative0

    def curvature(d: float) -> bool:
        return abs(d) <= -c2 * derivative0

    def done(a: float, f: float, g: Tensor, d: float, ok: bool) -> LineSearchResult:
        return LineSearchResult(a, f, g, d, evals, ok)

    def fallback() -> LineSearchResult:
        a, f, g, d = best
        return LineSearchResult(a, f, g, d, evals, False)

    # ---- bracketing phase: (a_prev, a) with a_prev satisfying sufficient decrease
    a_prev, f_prev, g_prev, d_prev = 0.0, loss0, grad0, derivative0
    a = min(step, step_max)
    lo = hi = None
    while evals < max_evals:
        f, g, d = phi(a)
        evals += 1
        finite = math.isfinite(f) and math.isfinite(d)
        if finite and armijo(a, f) and f < best[1]:
            best = (a, f, g, d)
        if not finite or not armijo(a, f) or (a_prev > 0.0 and f >= f_prev):
            lo, hi = (a_prev, f_prev, g_prev, d_prev), (a, f, g, d)
            break
        if curvature(d):
            return done(a, f, g, d, True)
        if d >= 0.0:
            lo, hi = (a, f, g, d), (a_prev, f_prev, g_prev, d_prev)
            break
        if a >= step_max:
            return fallback()
        # extrapolate: the cubic's minimizer, at least a little and at most 10x further
        a_next = _cubic_minimizer(a_prev, f_prev, d_prev, a, f, d, a + 0.01 * (a - a_prev), 10.0 * a)
        a_prev, f_prev, g_prev, d_prev = a, f, g, d
        a = min(a_next, step_max)
    if lo is None:
        return fallback()

    # ---- zoom phase: lo has sufficient decrease and the lowest loss; the minimizer lies between lo and hi
    while evals < max_evals:
        a_lo, f_lo, _, d_lo = lo
        a_hi, f_hi, _, d_hi = hi
        width = abs(a_hi - a_lo)
        if width * direction_norm < tolerance_change:
            break
        left, right = min(a_lo, a_hi), max(a_lo, a_hi)
        if math.isfinite(f_hi) and math.isfinite(d_hi):
            a = _cubic_minimizer(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi, left, right)
        else:  # the far end overflowed: step back hard towards the good end
            a = a_lo + 0.1 * (a_hi - a_lo)
        # safeguard: stay at least 10% of the bracket away from its ends
        margin = 0.1 * width
        a = min(max(a, left + margin), right - margin)
        f, g, d = phi(a)
        evals += 1
        finite = math.isfinite(f) and math.isfinite(d)
        if finite and armijo(a, f) and f < best[1]:
            best = (a, f, g, d)
        if not finite or not armijo(a, f) or f >= f_lo:
            hi = (a, f, g, d)
        else:
            if curvature(d):
                return done(a, f, g, d, True)
            if d * (a_hi - a_lo) >= 0.0:
                hi = lo
            lo = (a, f, g, d)
    return fallback()


def exact_quadratic_step(derivative0: float, curvature: float) -> float:
    r""":math:`\epsilon^* = -g^\top d / d^\top H d`, the exact minimizer along :math:`d` of a
    quadratic (Algorithm 8.9)."""
    if not (curvature > 0.0 and math.isfinite(curvature)):
        raise OptimizationError(
            f"the exact line search needs positive curvature along the direction, got d^T H d = {curvature:.3g}; "
            "the objective is not a positive-definite quadratic: use line_search='strong-wolfe'"
        )
    return -derivative0 / curvature


# ----------------------------------------------------------------------------- the objective


def _max_abs(v: Tensor) -> float:
    return float(torch.linalg.vector_norm(v, math.inf))


def check_finite(owner: str, loss: float, g: Tensor) -> None:
    """Raise ``Diverged`` when the loss or gradient at the current parameters is not finite."""
    if not math.isfinite(loss):
        raise Diverged(
            f"{owner}: the loss at the current parameters is {loss}; the objective is not finite there. "
            "Check the model and data for NaN/inf, or start from smaller parameters"
        )
    if not bool(torch.isfinite(g).all()):
        raise Diverged(
            f"{owner}: the gradient at the current parameters has NaN/inf entries (loss {loss:.6g}); "
            "check the model for operations without a finite derivative there (e.g. sqrt at 0)"
        )


class ClosureObjective:
    """J(theta) (eq. 8.25) through an optimizer closure, on the flat vector theta of ``params``.

    ``evaluate()`` calls the closure (which zeroes the gradients, computes the loss, calls
    backward and returns the loss) and returns (J, flat gradient). It raises
    ``OptimizationError`` when the closure returns no tensor or a non-scalar one. When the
    closure back-propagated with ``create_graph=True``, the gradients that carry the graph
    are kept in ``graph_grads`` (for Hessian-vector products) and ``p.grad`` is detached,
    which breaks the parameter -> gradient -> graph -> parameter reference cycle.
    """

    def __init__(self, params: Sequence[Tensor], closure: Callable[[], Tensor] | None, owner: str):
        if closure is None:
            raise OptimizationError(
                f"{owner} re-evaluates the loss and needs a closure: optimizer.step(closure), where closure() "
                "zeroes the gradients, computes the loss, calls loss.backward() and returns the loss"
            )
        self.params = list(params)
        self.closure = closure
        self.owner = owner
        self.evals = 0
        self.graph_grads: list[Tensor | None] | None = None
        self.first_loss: Tensor | None = None  # what the closure returned first (step() returns it)
        self.last_step: float | None = None  # the step of the last evaluation made through ``line``
        self._numels = [p.numel() for p in self.params]

    def get_x(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_x(self, x: Tensor) -> None:
        views = [c.view_as(p) for c, p in zip(x.split(self._numels), self.params)]
        torch._foreach_copy_([p.data for p in self.params], views)

    def evaluate(self) -> tuple[float, Tensor]:
        with torch.enable_grad():
            loss = self.closure()
        self.evals += 1
        if not isinstance(loss, Tensor):
            raise OptimizationError(
                f"{self.owner}: the closure returned {type(loss).__name__}, not the loss tensor; "
                "it must zero the gradients, compute the loss, call loss.backward() and `return loss`"
            )
        if loss.numel() != 1:
            raise OptimizationError(
                f"{self.owner}: the closure returned a tensor of shape {tuple(loss.shape)}; "
                "the loss must be a scalar (reduce it with .mean())"
            )
        if self.first_loss is None:
            self.first_loss = loss.detach()
        grads = [p.grad for p in self.params]
        if any(g is not None and g.requires_grad for g in grads):
            self.graph_grads = grads
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad.detach()
        else:
            self.graph_grads = None
        flat = torch.cat(
            [(torch.zeros_like(p) if g is None else g.detach()).reshape(-1) for g, p in zip(grads, self.params)]
        )
        return float(loss.detach()), flat

    def at(self, x: Tensor) -> tuple[float, Tensor]:
        self.set_x(x)
        return self.evaluate()

    def line(self, x0: Tensor, d: Tensor) -> Phi:
        """phi(a) = (J(x0 + a d), its gradient, its derivative along d), for ``strong_wolfe``."""

        def phi(a: float) -> tuple[float, Tensor, float]:
            f, g = self.at(torch.add(x0, d, alpha=a))
            self.last_step = a
            return f, g, float(g.dot(d))

        return phi


def model_closure(
    model: torch.nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    create_graph: bool = False,
) -> Callable[[], Tensor]:
    """The closure of a full-batch method: J(theta) on (inputs, targets) and its gradient.

    With ``create_graph=True`` the gradients keep their graph (via ``torch.autograd.grad``,
    which avoids the reference-cycle warning of ``backward(create_graph=True)``), so that
    Newton's method, Newton-CG and SDLM get exact Hessian-vector products.
    Data-parallel: this closure is not all-reduced; under DDP wrap it so that the loss and
    the gradient are averaged over ranks before a full-batch optimizer sees them.
    """
    params = [p for p in model.parameters() if p.requires_grad]

    def closure() -> Tensor:
        loss = loss_fn(model(inputs), targets)
        if create_graph:
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            for p in params:
                p.grad = None
            loss.backward()
        return loss

    return closure


# ----------------------------------------------------------------------------- the outer loop


class LineSearchOptimizer(torch.optim.Optimizer):
    r"""The loop of Algorithm 8.9 / eq. 8.33 on one flat vector :math:`\theta`, as a torch Optimizer.

    .. math::

        \begin{aligned}
        &\textbf{repeat } \text{at most } \texttt{max\_iter} \text{ times per } \texttt{step(closure)}: \\
        &\quad \rho_t \leftarrow \operatorname{direction}(g_t) && \text{subclass: CG, BFGS, L-BFGS} \\
        &\quad \epsilon^* \leftarrow \text{line search along } \rho_t && \text{strong Wolfe, or exact} \\
        &\quad \theta_{t+1} \leftarrow \theta_t + \epsilon^* \rho_t && \text{(8.33)} \\
        &\quad \operatorname{remember}(s_t = \epsilon^* \rho_t,\ y_t = g_{t+1} - g_t) && \text{subclass} \\
        &\quad \textbf{stop if } \lVert g \rVert_\infty \le \texttt{tolerance\_grad}
            \text{, or the loss / the step changed by less than } \texttt{tolerance\_change} \\
        &\qquad \text{or } \texttt{max\_eval} \text{ closure calls were made}
        \end{aligned}

    Full-batch (the texts: "batch descent only"); the closure is called several times per
    step. DDP-safe only if the closure all-reduces the loss and the gradient over ranks.
    One parameter group; the state (tensors and numbers) lives in ``self.state`` of the
    first parameter, so ``state_dict()`` / checkpoints carry it. After each ``step`` the
    reason for stopping is in ``self.status`` and counters in the state: ``n_iter``,
    ``func_evals``.
    """

    needs_closure = True
    line_searches: tuple[str, ...] = ("strong-wolfe",)

    def __init__(
        self,
        params,
        defaults: dict,
        *,
        max_iter: int,
        max_eval: int | None,
        tolerance_grad: float,
        tolerance_change: float,
        line_search: str,
        c1: float,
        c2: float,
    ) -> None:
        max_eval = check_stopping_rule(max_iter, max_eval, tolerance_grad, tolerance_change)
        if line_search not in self.line_searches:
            raise ConfigError(
                f"Invalid line_search: {line_search!r}; {type(self).__name__} supports "
                + ", ".join(repr(s) for s in self.line_searches)
            )
        check_wolfe_constants(c1, c2)
        defaults = dict(defaults, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change, line_search=line_search, c1=c1, c2=c2)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ConfigError(
                f"{type(self).__name__} works on one flat parameter vector and takes one parameter group, "
                f"got {len(self.param_groups)}; pass model.parameters()"
            )
        self._params = [p for p in self.param_groups[0]["params"]]
        if not self._params:
            raise ConfigError(f"{type(self).__name__} got no parameters to optimize")
        self.status = "not started"
        self._objective: ClosureObjective | None = None

    # -- subclasses --------------------------------------------------------------
    def _direction(self, state: dict, g: Tensor) -> Tensor:
        raise NotImplementedError

    def _remember(self, state: dict, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        raise NotImplementedError

    def _reset(self, state: dict) -> None:
        """Forget the curvature information (the direction was not a descent direction)."""

    def _initial_step(self, state: dict, loss: float, derivative: float, g: Tensor) -> float:
        """First trial of the line search: lr (1, the quasi-Newton step), but the very first
        step, without curvature information, is min(1, 1/||g||_1) lr (as torch's LBFGS)."""
        if state["n_iter"] == 0:
            return min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300)) * self.param_groups[0]["lr"]
        return self.param_groups[0]["lr"]

    def _exact_step(self, obj: ClosureObjective, x: Tensor, g: Tensor, d: Tensor, derivative: float):
        """Exact line search for a quadratic: d^T H d from one gradient at x + d (H d = g(x+d) - g(x))."""
        _, g1 = obj.at(x + d)
        a = exact_quadratic_step(derivative, float(d.dot(g1 - g)))
        f, g_new = obj.at(torch.add(x, d, alpha=a))
        return a, f, g_new

    # -- the loop ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        obj = ClosureObjective(self._params, closure, type(self).__name__)
        state = self.state[self._params[0]]
        state.setdefault("n_iter", 0)
        state.setdefault("func_evals", 0)
        self._objective = obj  # for directions that need more than g (Newton-CG's H v products)

        x = obj.get_x()
        loss, g = obj.evaluate()
        check_finite(type(self).__name__, loss, g)
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        self.status = "max_iter"
        if _max_abs(g) <= tol_grad:
            self.status = "converged: gradient"
            state["func_evals"] += obj.evals
            self._objective = None
            return obj.first_loss
        for _ in range(group["max_iter"]):
            d = self._direction(state, g)
            derivative = float(g.dot(d))
            if not derivative < 0.0:  # lost descent (or conjugacy): restart with steepest descent
                self._reset(state)
                d = g.neg()
                derivative = -float(g.dot(g))
            state["d"], state["prev_flat_grad"] = d, g  # what CG's next direction builds on
            if group["line_search"] == "exact":
                a, f_new, g_new = self._exact_step(obj, x, g, d, derivative)
                ok = True
            else:
                a0 = self._initial_step(state, loss, derivative, g)
                ls = strong_wolfe(
                    obj.line(x, d), loss, derivative, g, a0, c1=group["c1"], c2=group["c2"], max_evals=25,
                    tolerance_change=tol_change, direction_norm=float(d.norm()) if tol_change > 0 else 1.0,
                )
                a, f_new, g_new, ok = ls.step, ls.loss, ls.grad, ls.success
                if a == 0.0:  # no decrease found along d
                    obj.set_x(x)
                    if state.get("restarted"):
                        self.status = "line search failed"
                        break
                    self._reset(state)  # try once more from steepest descent
                    state["restarted"] = True
                    continue
            state["restarted"] = False
            if not ok:  # accepted for its decrease, but the curvature condition failed
                state["wolfe_failures"] = state.get("wolfe_failures", 0) + 1
            s = d.mul(a)
            x_new = torch.add(x, d, alpha=a)  # the same operation as the line search's trial point
            if obj.last_step != a or group["line_search"] == "exact":
                obj.set_x(x_new)  # the line search evaluated past the accepted point
                if obj.graph_grads is not None and group["line_search"] != "exact":
                    f_new, g_new = obj.evaluate()  # second-order methods need the graph at the accepted point
            self._remember(state, s, g_new - g, g_new)
            state["n_iter"] += 1
            state["prev_step"] = a
            state["prev_derivative"] = derivative
            prev_loss, loss, x, g = loss, f_new, x_new, g_new
            state["prev_loss"] = prev_loss
            if _max_abs(g) <= tol_grad:
                self.status = "converged: gradient"
                break
            if tol_change > 0 and (abs(loss - prev_loss) < tol_change or _max_abs(s) <= tol_change):
                self.status = "converged: change"
                break
            if obj.evals >= group["max_eval"]:
                self.status = "max_eval"
                break
        # leave the closure's gradient in p.grad consistent with the final parameters
        for p, gv in zip(self._params, g.split(obj._numels)):
            if p.grad is not None:
                p.grad.copy_(gv.view_as(p))
        state["func_evals"] += obj.evals
        self._objective = None
        return obj.first_loss

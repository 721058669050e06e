r"""Stochastic diagonal Levenberg-Marquardt (cs189 notes; LeCun, Bottou, Orr & Mueller 1998).

The cs189 notes list it among the second-order heuristics: "Stochastic Levenberg
Marquardt: approximates a diagonal Hessian." Each parameter gets its own learning rate

.. math::

    \eta_k = \frac{\epsilon}{\mu + |h_{kk}|}

from a running estimate :math:`h_{kk}` of the k-th diagonal entry of the Hessian;
:math:`\mu` (the Levenberg-Marquardt damping of eq. 8.28, per coordinate) keeps the rate
bounded by :math:`\epsilon / \mu` where the curvature is small. It is Newton's method with
the Hessian replaced by its diagonal (eq. 8.27 with :math:`\operatorname{diag}(H) + \mu I`),
on minibatches.

The diagonal is estimated from the current minibatch, every ``update_every`` steps, by
Hutchinson's estimator :math:`\operatorname{diag}(H) \approx z \odot (H z)` with Rademacher
:math:`z` (see ``descend.optim.curvature.hutchinson_diagonal``), and averaged over steps:

.. math::

    h \leftarrow \beta h + (1 - \beta)\, z \odot (H z), \qquad
    \text{used bias-corrected: } h / (1 - \beta^t).

LeCun et al. use the Gauss-Newton diagonal instead (non-negative by construction); pass
it to ``step(closure, diagonal=...)`` (e.g. from ``curvature.gauss_newton_diagonal``) and it
replaces the Hutchinson sample. The absolute value :math:`|h|` keeps the rate positive where
the running estimate is negative (non-convex regions; the saddle-free choice of
sec. 8.2.3).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError, OptimizationError
from descend.optim._common import check_lr

__all__ = ["SDLM", "sdlm"]


class SDLM(torch.optim.Optimizer):
    r"""Stochastic diagonal Levenberg-Marquardt, minibatch, per-parameter learning rates.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{step size } \epsilon \text{, damping } \mu > 0 \text{, }
            \beta \in [0, 1) \text{; } h \leftarrow 0,\ t \leftarrow 0 \\
        &\textbf{for } \text{each minibatch } \textbf{do} \\
        &\quad g \leftarrow \nabla_\theta J(\theta) && \text{the closure} \\
        &\quad \textbf{every } \texttt{update\_every} \text{ steps:} \\
        &\qquad t \leftarrow t + 1 \\
        &\qquad d \leftarrow z \odot (H z),\quad z_i = \pm 1 \text{ (Rademacher)}
            && \text{Hutchinson's estimate of } \operatorname{diag}(H) \\
        &\qquad h \leftarrow \beta h + (1 - \beta) d \\
        &\quad \theta \leftarrow \theta - \frac{\epsilon}{\mu + |h| / (1 - \beta^t)} \odot g
            && \text{element-wise} \\
        &\textbf{end for}
        \end{aligned}

    :math:`Hz` is exact if the closure back-propagated with ``create_graph=True``, else the
    finite difference :math:`(g(\theta + \epsilon' z) - g(\theta)) / \epsilon'` (one more
    closure call). Each parameter's rate :math:`\epsilon / (\mu + |h_{kk}|)` is bounded by
    :math:`\epsilon / \mu` where the curvature is small: Newton's method (eq. 8.27) with the
    Hessian replaced by its damped diagonal (eq. 8.28 per coordinate).

    Args:
        params: parameters or parameter groups.
        lr: the global step size (:math:`\epsilon` in LeCun et al.).
        mu: the damping :math:`\mu` (> 0); the largest rate any parameter gets is
            :math:`\epsilon / \mu`.
        beta: running-average factor :math:`\beta` of the diagonal estimate.
        update_every: re-estimate the diagonal every this many steps.
        seed: seeds the Rademacher vectors (a fresh generator per estimate, seeded by
            (seed, t), so a run resumed from a checkpoint draws the same z).
        foreach: use the ``torch._foreach_*`` multi-tensor path (default: on when all
            tensors are on one device); both paths give identical results.

    ``step(closure, diagonal=None)``: ``diagonal``, a sequence of tensors shaped like the
    parameters (e.g. a Gauss-Newton diagonal), replaces the Hutchinson sample. Without a
    closure, ``step()`` uses ``p.grad``, which must then carry its graph
    (``loss.backward(create_graph=True)``) unless ``diagonal`` is given.

    Where PyTorch differs: PyTorch has no SDLM. DDP: the gradient is all-reduced by DDP,
    but an exact H z (second backward through ``autograd.grad``) is not, so each rank would
    get its own estimate; the finite-difference path (an ordinary closure) goes through
    DDP and, with the same ``seed`` on every rank, is DDP-safe.
    """

    needs_closure = True
    needs_create_graph = True

    def __init__(self, params, lr: float = 0.01, mu: float = 0.1, beta: float = 0.99, update_every: int = 1,
                 seed: int = 0, foreach: bool | None = None) -> None:
        lr = check_lr(lr)
        if not (isinstance(mu, (int, float)) and mu > 0 and math.isfinite(mu)):
            raise ConfigError(f"Invalid mu: {mu!r}; the damping mu must be > 0 (it bounds each rate by lr/mu)")
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ConfigError(f"Invalid beta: {beta!r}; the running-average factor must be in [0, 1)")
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigError(f"Invalid update_every: {update_every!r}; it must be an integer >= 1")
        defaults = dict(lr=lr, mu=mu, beta=beta, update_every=update_every, seed=int(seed), foreach=foreach)
        super().__init__(params, defaults)

    # -- the diagonal estimate ---------------------------------------------------
    def _rademacher(self, params: Sequence[Tensor], t: int, seed: int) -> list[Tensor]:
        gen = torch.Generator(device=params[0].device)
        gen.manual_seed((seed * 1_000_003 + t) % (2**63))
        return [torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype).mul_(2).sub_(1) for p in params]

    def _estimate(self, params: list[Tensor], grads: list[Tensor], graph: list[Tensor] | None,
                  closure: Callable[[], Tensor] | None, t: int, seed: int) -> list[Tensor]:
        z = self._rademacher(params, t, seed)
        if graph is not None:  # exact: H z by double back-propagation
            with torch.enable_grad():
                hz = torch.autograd.grad(graph, params, grad_outputs=z, allow_unused=True)
            hz = [torch.zeros_like(p) if h is None else h for p, h in zip(params, hz)]
        elif closure is not None:  # forward difference of gradients along z
            saved = [p.detach().clone() for p in params]
            scale = max(float(torch.stack([p.detach().abs().max() for p in params]).max()), 1.0)
            eps = math.sqrt(torch.finfo(params[0].dtype).eps) * scale
            torch._foreach_add_([p.data for p in params], z, alpha=eps)
            with torch.enable_grad():
                closure()
            g1 = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
            torch._foreach_copy_([p.data for p in params], saved)
            for p, g in zip(params, grads):
                p.grad = g
            hz = [(a - b) / eps for a, b in zip(g1, grads)]
        else:
            raise OptimizationError(
                "SDLM needs curvature: pass a closure, call loss.backward(create_graph=True) before step(), "
                "or give step(diagonal=...)"
            )
        return [a * b for a, b in zip(z, hz)]

    # -- the step ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, diagonal: Sequence[Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if not isinstance(loss, Tensor):
                raise OptimizationError(
                    f"SDLM: the closure returned {type(loss).__name__}, not the loss tensor; it must zero the "
                    "gradients, compute the loss, call loss.backward() and `return loss`"
                )
        diag_iter = None
        if diagonal is not None:
            diagonal = list(diagonal)
            n = sum(len(g["params"]) for g in self.param_groups)
            if len(diagonal) != n:
                raise OptimizationError(f"SDLM: diagonal has {len(diagonal)} tensors, expected one per parameter ({n})")
            diag_iter = iter(diagonal)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            group_diag = None
            if diag_iter is not None:
                pairs = [(p, next(diag_iter)) for p in group["params"]]
                group_diag = [d for p, d in pairs if p.grad is not None]
            if not params:
                continue
            raw = [p.grad for p in params]
            graph = raw if any(g.requires_grad for g in raw) else None
            grads = [g.detach() for g in raw]
            for p, g in zip(params, grads):
                p.grad = g  # break the parameter -> grad -> graph cycle
            first = self.state[params[0]]
            step = first.get("step", 0)
            updates = first.get("curvature_updates", 0)
            new_diag = None
            if step % group["update_every"] == 0:
                if group_diag is not None:
                    for p, d in zip(params, group_diag):
                        if d.shape != p.shape:
                            raise OptimizationError(
                                f"SDLM: a diagonal tensor has shape {tuple(d.shape)}, its parameter {tuple(p.shape)}"
                            )
                    new_diag = [d.detach().to(p.dtype) for p, d in zip(params, group_diag)]
                else:
                    new_diag = self._estimate(params, grads, graph, closure, updates, group["seed"])
                updates += 1
            hs = []
            for p in params:
                st = self.state[p]
                if "hessian_diagonal" not in st:
                    st["hessian_diagonal"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                hs.append(st["hessian_diagonal"])
            if updates == 0:
                raise OptimizationError("SDLM: no curvature estimate yet; the first step must estimate the diagonal")
            foreach = group["foreach"]
            if foreach is None:
                foreach = len({p.device for p in params}) == 1 and params[0].device.type != "meta"
            fn = _multi_tensor_sdlm if foreach else _single_tensor_sdlm
            fn(params, grads, hs, new_diag, lr=group["lr"], mu=group["mu"], beta=group["beta"],
               bias_correction=1.0 - group["beta"] ** updates)
            for p in params:
                self.state[p]["step"] = step + 1
                self.state[p]["curvature_updates"] = updates
        return loss


def _single_tensor_sdlm(params, grads, hs, new_diag, *, lr, mu, beta, bias_correction):
    for i, p in enumerate(params):
        h = hs[i]
        if new_diag is not None:
            h.mul_(beta).add_(new_diag[i], alpha=1 - beta)
        denom = h.abs().div_(bias_correction).add_(mu)
        p.addcdiv_(grads[i], denom, value=-lr)


def _multi_tensor_sdlm(params, grads, hs, new_diag, *, lr, mu, beta, bias_correction):
    if new_diag is not None:
        torch._foreach_mul_(hs, beta)
        torch._foreach_add_(hs, new_diag, alpha=1 - beta)
    denom = torch._foreach_abs(hs)
    torch._foreach_div_(denom, bias_correction)
    torch._foreach_add_(denom, mu)
    torch._foreach_addcdiv_(params, grads, denom, value=-lr)


def sdlm(params, grads, hs, new_diag, *, lr, mu, beta, bias_correction, foreach=False):
    """Functional form of one SDLM update (the texts' equation, both code paths)."""
    fn = _multi_tensor_sdlm if foreach else _single_tensor_sdlm
    fn(params, grads, hs, new_diag, lr=lr, mu=mu, beta=beta, bias_correction=bias_correction)

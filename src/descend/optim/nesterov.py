"""Nesterov momentum, Deep Learning Algorithm 8.3 (sec. 8.3.3, eqs. 8.21-8.22).

Two classes:

* :class:`NesterovMomentum` is the book's algorithm: the gradient is evaluated at the
  interim point ``theta + alpha v``, so ``step`` must be given a closure that recomputes
  the loss and its gradient there (``needs_closure = True``).
* :class:`NesterovMomentumReformulated` is the closure-free form of Sutskever et al.
  (2013) / Bengio et al. (2013) that ``torch.optim.SGD(nesterov=True)`` implements: the
  stored parameters are the look-ahead point itself.

:func:`evaluate_at_interim_point` is shared with RMSProp + Nesterov (Alg. 8.6).
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.errors import OptimizationError
from descend.optim._common import (
    apply_weight_decay,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_unit_interval,
    evaluate_closure,
    gather,
    grouped,
    use_foreach,
    zeros,
)


def _add_scaled_(params: list[Tensor], others: list[Tensor], alpha: float, foreach: bool) -> None:
    if not params or alpha == 0:
        return
    if foreach:
        for device_params, device_others in grouped([params, others]):
            torch._foreach_add_(device_params, device_others, alpha=alpha)
    else:
        for p, o in zip(params, others):
            p.add_(o, alpha=alpha)


@torch.no_grad()
def evaluate_at_interim_point(optimizer: torch.optim.Optimizer, closure):
    """Run ``closure`` with every parameter moved to ``theta~ = theta + alpha v``.

    The "apply interim update" and "compute gradient (at interim point)" lines of
    Algorithms 8.3 and 8.6. The parameters are left at the interim point for those that
    received a gradient (the caller finishes the step from there); parameters the closure
    gave no gradient (``p.grad is None``: unused, frozen, or dropped by the non-finite
    guard) are moved back to theta. If the closure raises, every parameter is moved back
    before the exception propagates, so a failed step leaves the model as it was.

    Moving back computes ``(theta + alpha v) - alpha v``, which may differ from theta in
    the last bit.
    """
    if closure is None:
        raise OptimizationError(
            f"{type(optimizer).__name__} evaluates the gradient at the interim point "
            "theta + alpha*v (Deep Learning Alg. 8.3/8.6) and needs optimizer.step(closure), "
            "where the closure zeroes the gradients, runs forward and backward and returns the "
            "loss; use NesterovMomentumReformulated ('nesterov-reformulated') for a "
            "closure-free form"
        )
    shifted = []
    for group in optimizer.param_groups:
        params, velocities = [], []
        for p in group["params"]:
            state = optimizer.state.get(p)
            v = state.get("velocity") if state else None
            if v is not None:  # a parameter without velocity yet has v = 0: nothing to move
                params.append(p)
                velocities.append(v)
        alpha = group["momentum"]
        foreach = use_foreach(group["foreach"], params)
        _add_scaled_(params, velocities, alpha, foreach)
        shifted.append((params, velocities, alpha, foreach))
    try:
        loss = evaluate_closure(closure)
    except BaseException:
        for params, velocities, alpha, foreach in shifted:
            _add_scaled_(params, velocities, -alpha, foreach)
        raise
    for params, velocities, alpha, foreach in shifted:
        idle = [i for i, p in enumerate(params) if p.grad is None]
        if idle:
            _add_scaled_([params[i] for i in idle], [velocities[i] for i in idle], -alpha, foreach)
    return loss


class NesterovMomentum(torch.optim.Optimizer):
    r"""SGD with Nesterov momentum in the book's form, Algorithm 8.3.

    .. code-block:: text

        Require: learning rate eps, momentum parameter alpha
        Require: initial parameter theta, initial velocity v (here v = 0)
        while stopping criterion not met:
            theta~ <- theta + alpha v                            # interim update
            g <- (1/m) grad_theta~ sum_i L(f(x_i; theta~), y_i)  # gradient at interim point
            v <- alpha v - eps g                                 # eq. 8.21
            theta <- theta + v                                   # eq. 8.22

    The gradient is taken after the current velocity is applied, a correction factor to
    standard momentum (Sutskever et al., 2013); in the convex batch case the excess error
    falls as O(1/k^2) instead of O(1/k).

    ``step(closure)`` moves the parameters to theta~, calls the closure (which must zero
    the gradients, run forward and backward and return the loss) and finishes the update
    from theta~: ``theta + v_new = theta~ - alpha v_old + alpha v_old - eps g = theta~ - eps g``,
    so no copy of theta is kept. ``needs_closure = True`` tells descend's Trainer to call
    it that way. The loss the closure returns is the loss at theta~.

    Relation to ``torch.optim.SGD(momentum=alpha, nesterov=True)``: torch implements the
    reformulation whose stored parameters are the look-ahead point ``phi = theta + alpha v``
    (see :class:`NesterovMomentumReformulated`, which matches torch at constant lr). Started
    from the same point, the two produce ``phi_k = theta_k + alpha v_k`` and the same
    gradients; only what is stored in the model differs (the book's theta here).

    Weight decay: coupled L2 adds ``weight_decay * theta~`` to g (the penalty is part of the
    cost evaluated at theta~); decoupled decay shrinks theta (not theta~) by
    ``1 - lr * weight_decay``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate eps (>= 0).
        momentum: alpha in [0, 1].
        weight_decay, decoupled_weight_decay: see above.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The closure's forward and backward at the interim point run
    through DDP, which averages that gradient over ranks; the update is element-wise
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    needs_closure = True

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            momentum=check_unit_interval("momentum", momentum, closed=True),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_at_interim_point(self, closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"velocity": zeros(p)})
            nesterov_momentum(
                params,
                grads,
                [s["velocity"] for s in states],
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def nesterov_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Second half of Algorithm 8.3, with ``params`` at theta~ and ``grads`` taken there.

    ``v <- alpha v - eps g`` and ``theta <- theta~ - eps g`` (= theta + v).
    With decoupled decay: ``theta_new = (1 - lr wd) theta + v_new``, written from theta~ as
    ``(1 - lr wd) theta~ + lr wd alpha v_old - eps g``.
    """
    if not params:
        return
    alpha = momentum
    decay = lr * weight_decay if decoupled_weight_decay else 0.0
    if not foreach:
        for p, g, v in zip(params, grads, velocities):
            if decay:
                p.mul_(1 - decay).add_(v, alpha=decay * alpha)
            else:
                (g,) = apply_weight_decay([p], [g], lr=lr, weight_decay=weight_decay, decoupled=False, foreach=False)
            v.mul_(alpha).add_(g, alpha=-lr)
            p.add_(g, alpha=-lr)
        return
    for device_params, device_grads, device_v in grouped([params, grads, velocities]):
        if decay:
            torch._foreach_mul_(device_params, 1 - decay)
            torch._foreach_add_(device_params, device_v, alpha=decay * alpha)
        else:
            device_grads = apply_weight_decay(
                device_params, device_grads, lr=lr, weight_decay=weight_decay, decoupled=False, foreach=True
            )
        torch._foreach_mul_(device_v, alpha)
        torch._foreach_add_(device_v, device_grads, alpha=-lr)
        torch._foreach_add_(device_params, device_grads, alpha=-lr)


class NesterovMomentumReformulated(torch.optim.Optimizer):
    r"""Nesterov momentum without a closure: the reformulation of Algorithm 8.3.

    Store the look-ahead point ``phi = theta + alpha v`` as the parameters instead of theta.
    Substituting into eqs. 8.21-8.22 gives an update that needs only the gradient at the
    stored parameters:

    .. code-block:: text

        g <- (1/m) grad_phi sum_i L(f(x_i; phi), y_i)
        v <- alpha v - eps g
        phi <- phi + alpha v - eps g

    (``phi_new = theta_new + alpha v_new = phi - alpha v_old + (1 + alpha) v_new``, and
    ``v_new - alpha v_old = -eps g``.)

    This is what ``torch.optim.SGD(momentum=alpha, nesterov=True)`` computes: torch keeps
    ``b <- alpha b + g`` and steps ``phi <- phi - lr (g + alpha b)``; with a constant
    learning rate ``v = -lr b`` and the iterates coincide (tested). With a changing rate
    they differ as for :class:`Momentum`. The iterates equal those of the book form
    :class:`NesterovMomentum` shifted by ``alpha v``: ``phi_k = theta_k + alpha v_k``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate eps (>= 0).
        momentum: alpha in [0, 1].
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            momentum=check_unit_interval("momentum", momentum, closed=True),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"velocity": zeros(p)})
            nesterov_momentum_reformulated(
                params,
                grads,
                [s["velocity"] for s in states],
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def nesterov_momentum_reformulated(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """``v <- alpha v - eps g; phi <- phi + alpha v - eps g`` for every tensor."""
    if not params:
        return
    wd = dict(lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    if not foreach:
        for p, g, v in zip(params, grads, velocities):
            (g,) = apply_weight_decay([p], [g], foreach=False, **wd)
            v.mul_(momentum).add_(g, alpha=-lr)
            p.add_(v, alpha=momentum).add_(g, alpha=-lr)
        return
    for device_params, device_grads, device_v in grouped([params, grads, velocities]):
        device_grads = apply_weight_decay(device_params, device_grads, foreach=True, **wd)
        torch._foreach_mul_(device_v, momentum)
        torch._foreach_add_(device_v, device_grads, alpha=-lr)
        torch._foreach_add_(device_params, device_v, alpha=momentum)
        torch._foreach_add_(device_params, device_grads, alpha=-lr)
